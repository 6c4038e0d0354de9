"""The Compare tab and share links in real Chromium: a teacher's three columns with their token
differences, every column's prompt, diff and fault shown before any run (four side by side at
1280 px), an edited column that starts from column 1's prompt, four columns streaming at once
and stopping alone at a real click, every fault's prompt as shown,
hostile text in a message, an edited prompt and a link, and links that restore and replay.

Screenshots go to the git-ignored `artifacts/` folder.
"""

import json
import time

import pytest

from playground.compare import (
    FAULTS,
    TRAPS,
    Variant,
    conversation_inputs,
    plan_column,
)
from playground.session import Playground
from playground.share import encode_view
from tests.helpers.browser import (
    ARTIFACTS,
    choose,
    open_compare,
    open_page,
    run_all,
    screenshot,
    send,
    set_conversation,
    set_number,
    wait_text,
)
from tests.helpers.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.browser]
QUESTION = [{"role": "user", "content": "What is 7 plus 5?"}]
CORRECT_PROMPT = "<bos><start_of_turn>user\nWhat is 7 plus 5?<end_of_turn>\n<start_of_turn>model\n"


@pytest.mark.parametrize("width", [1280, 400])
def test_a_teacher_runs_the_correct_prompt_beside_two_faults(browser, tutor_app_url, request,
                                                             width):  # fmt: skip
    page = open_compare(browser, tutor_app_url, width)
    set_number(page, "slider-temperature", 0)
    # The tab opens on three: correct, 'assistant' as the role name, no generation prompt.
    run_all(page, 3)
    assert "12" in page.input_value("#compare-output-1 textarea")
    # The role name marked whole (tiny-tutor's tokens are characters: issue 33's confetti).
    assert page.inner_text("#compare-prompt-2 ins.diff-added") == "assistant"
    assert page.inner_text("#compare-prompt-2 del.diff-removed") == "model"
    removed = page.locator("#compare-prompt-3 del.diff-removed")
    assert "<start_of_turn>model" in removed.inner_text()
    assert "+0 / −" in page.inner_text("#compare-info-3")
    assert "P(<end_of_turn>)" in page.inner_text("#compare-probs-1")
    # The default fault shows on the demo model (a second <bos>, the old default, did not).
    assert "Parts from column 1 at character 0" in page.inner_text("#compare-parts-2")
    assert page.input_value("#compare-output-2 textarea") != page.input_value(
        "#compare-output-1 textarea"
    )
    assert "Parts from column 1 at character 0" in page.inner_text("#compare-parts-3")
    screenshot(page, request)


@pytest.mark.parametrize("width", [1280, 400])
def test_every_column_shows_its_prompt_diff_and_fault_before_any_run(
    browser, tutor_app_url, request, width
):
    # Issue 33: the columns stayed empty until Run all, so the diff the intro promises could
    # not be shown before spending a run.
    page = open_compare(browser, tutor_app_url, width)
    for n in (1, 2, 3):
        wait_text(page, f"#compare-info-{n}", "tokens")
        assert "<start_of_turn>user" in page.inner_text(f"#compare-prompt-{n}")
    assert "against column 1: +0 / −" in page.inner_text("#compare-info-3")
    assert "<start_of_turn>model" in page.inner_text("#compare-prompt-3 del.diff-removed")
    assert FAULTS["no-generation-prompt"].doc in page.inner_text("#compare-info-3")
    # A fault picked: its column follows, with the note that tiny-tutor doesn't show it.
    choose(page, 2, "second-bos")
    wait_text(page, "#compare-info-2", "+1 / −0")
    added = page.locator("#compare-prompt-2 ins.diff-added")
    assert added.count() == 1 and added.inner_text() == "<bos>"
    assert "leaves the reply as it is (measured)" in page.inner_text("#compare-info-2")
    # A fourth column: rendered too, and beside the other three at 1280 px.
    page.locator("#compare-count label:has-text('4')").click()
    wait_text(page, "#compare-info-4", "tokens")
    boxes = [page.locator(f"#compare-col-{n}").bounding_box() for n in (1, 2, 3, 4)]
    tops = [round(box["y"]) for box in boxes]
    if width == 1280:
        assert len(set(tops)) == 1, tops
        assert boxes[3]["x"] + boxes[3]["width"] <= 1280
    else:
        assert tops == sorted(set(tops)), tops  # one under the other on a phone
    for n in (1, 2, 3, 4):  # all of it before any run
        assert page.input_value(f"#compare-output-{n} textarea") == ""
        assert page.inner_text(f"#compare-figures-{n}").strip() == ""
    screenshot(page, request)


@pytest.mark.parametrize("width", [1280, 400])
def test_an_edited_column_starts_from_column_1s_prompt(browser, tutor_app_url, request, width):
    # Issue 33: it started empty, so Run all said "The edited prompt is empty."
    page = open_compare(browser, tutor_app_url, width)
    set_number(page, "slider-temperature", 0)
    choose(page, 3, "edited")
    page.wait_for_function(
        "document.querySelector('#compare-edited-3 textarea').value.startsWith('<bos>')"
    )
    assert page.input_value("#compare-edited-3 textarea") == CORRECT_PROMPT
    wait_text(page, "#compare-info-3", "against column 1: +0 / −0")
    run_all(page, 3)
    wait_text(page, "#compare-parts-3", "Same output as column 1")
    assert page.locator(".toast-body").count() == 0
    screenshot(page, request)


@pytest.mark.parametrize("width", [1280, 400])
def test_four_columns_stream_at_once_and_each_stops_alone(
    browser, batched_app_url, batched_engine, request, width
):
    page = open_compare(browser, batched_app_url, width)
    page.locator("#compare-count label:has-text('4')").click()
    # The tiny model's greedy reply to the chat's prompt for this runs to max_new_tokens (see
    # test_browser.start_long_reply); a fault's prompt may end it early.
    set_conversation(page, [{"role": "user", "content": "Tell me a long story"}])
    for column in (2, 3, 4):
        choose(page, column, "correct")
    set_number(page, "slider-max_new_tokens", 2000)  # 40 s at the paced speed
    set_number(page, "slider-temperature", 0)
    page.click("#compare-run")
    # The engine is the witness of "at once": a loaded 2-core machine's page can show the
    # text seconds after it was made (test_browser_batching's note).
    wait_until(lambda: batched_engine.active == 4, seconds=30)
    page.wait_for_function(
        "document.querySelector('#compare-output-2 textarea').value.length > 30", polling=250
    )
    # Issue 33: during a long output the page froze (a trivial evaluate took 6-13 s) and a
    # click on Stop landed 12-24 s late. A real click now, and the page must answer at once.
    started = time.monotonic()
    page.evaluate("1")
    assert time.monotonic() - started < 2.0
    page.click("#compare-stop-2")
    wait_until(lambda: batched_engine.active == 3, seconds=5, what="column 2 to stop")
    time.sleep(1.0)
    assert batched_engine.active == 3  # the other three go on
    for n in (1, 3, 4):
        # Each of the others streams on: its text grows on the page.
        page.wait_for_function(
            f"document.querySelector('#compare-output-{n} textarea').value.length > 30",
            polling=250,
        )
    # Polled in the page, like the waits above: in CI a wait_for_selector that had found this
    # text visible hung for 60 s handing the element back (Playwright's adopt step).
    page.wait_for_function(
        "document.querySelector('#compare-figures-2').innerText.includes('stopped by you')",
        polling=250,
    )
    assert "2000 new tokens" not in page.inner_text("#compare-figures-2")  # not to its limit
    for n in (1, 3, 4):
        assert "stopped by you" not in page.inner_text(f"#compare-figures-{n}")
        page.click(f"#compare-stop-{n}")
    wait_until(lambda: batched_engine.active == 0)
    for n in (1, 3, 4):  # each ends with its figures (stopped, or ended just before the click)
        page.wait_for_function(
            f"document.querySelector('#compare-figures-{n}').innerText.includes('seed')",
            polling=250,
        )
    screenshot(page, request)


@pytest.mark.parametrize("width", [1280, 400])
def test_every_fault_shows_the_prompt_its_docs_describe(browser, tutor_app_url, tutor_engine,
                                                        settings, request, width):  # fmt: skip
    messages = [{"role": "system", "content": "Answer briefly."}, *QUESTION]
    playground = Playground(tutor_engine, settings.with_(model="tiny-tutor"))
    turns, options = conversation_inputs(playground, json.dumps(messages), "")
    page = open_compare(browser, tutor_app_url, width)
    set_conversation(page, messages)
    page.locator("#compare-count label:has-text('2')").click()
    set_number(page, "slider-max_new_tokens", 1)
    for name in FAULTS:
        choose(page, 2, name)
        page.click("#compare-run")
        if name == "error-system":
            page.wait_for_selector("#compare-info-2 >> text=System role not supported")
            continue
        # The plan's info and cleared figures arrive together; then the one-token run ends.
        page.wait_for_selector(f"#compare-info-2 >> text={FAULTS[name].title}")
        page.wait_for_selector("#compare-figures-2 >> text=tokens/s")
        expected = plan_column(playground, turns, options, Variant(name), playground.params({}))
        assert shown_prompt(page, 2) == expected.prompt, name
    screenshot(page, request)


def shown_prompt(page, column):
    """A column's prompt as the page shows it, without the tokens it lacks (struck through)."""
    return page.evaluate(
        f"""(() => {{
        const pre = document.querySelector('#compare-prompt-{column} pre').cloneNode(true);
        pre.querySelectorAll('del').forEach((d) => d.remove());
        return pre.textContent.replaceAll('↵', '');
        }})()"""
    )


HOSTILE = "<img src=x onerror=alert(1)><script>alert(2)</script>**bold** ![i](http://x/i.png)"


@pytest.mark.parametrize("width", [1280, 400])
def test_hostile_text_in_a_message_an_edited_prompt_and_a_link_stays_text(
    browser, tutor_app_url, request, width
):
    page = open_compare(browser, tutor_app_url, width)
    set_conversation(page, [{"role": "user", "content": HOSTILE}])
    choose(page, 3, "edited")
    # It starts from column 1's prompt: wait for that, or it lands over the text typed here.
    page.wait_for_function(
        "document.querySelector('#compare-edited-3 textarea').value.startsWith('<bos>')"
    )
    page.fill("#compare-edited-3 textarea", "<bos>" + HOSTILE)
    set_number(page, "slider-max_new_tokens", 4)
    run_all(page, 3)
    assert HOSTILE in page.inner_text("#compare-prompt-1")
    assert HOSTILE in page.inner_text("#compare-prompt-3")
    assert shown_prompt(page, 1).count(HOSTILE) == 1 and HOSTILE in shown_prompt(page, 3)
    assert page.locator("#compare-prompt-1 strong, #compare-prompt-3 strong").count() == 0
    page.click("#compare-share")
    page.wait_for_function(
        "document.querySelector('#compare-link textarea').value.startsWith('http')"
    )
    link = page.input_value("#compare-link textarea")
    shared = open_page(browser, link, width)
    shared.wait_for_selector("#share-note >> text=Opened a shared compare view")
    assert HOSTILE in shared.inner_text("#compare-conversation")
    assert shared.input_value("#compare-edited-3 textarea") == "<bos>" + HOSTILE
    # A hostile link: text in its fields (a model's name is one short line, shown in the
    # note), or a damaged value with markup in it.
    odd_model = "<img/src=x/onerror=alert(1)><b>m</b>"
    view = {"tab": "raw", "prompt": HOSTILE, "sampling": {}, "model": odd_model,
            "engine": "optimum"}  # fmt: skip
    bad = open_page(browser, tutor_app_url + "?share=" + encode_view(view), width)
    bad.wait_for_selector("#share-note >> text=Opened a shared raw view")
    assert odd_model in bad.inner_text("#share-note")
    assert bad.input_value("#raw-prompt textarea") == HOSTILE
    long_model = open_page(  # issue 34: any text, 65,000 characters of it, went into the note
        browser, tutor_app_url + "?share=" + encode_view({**view, "model": HOSTILE}), width
    )
    long_model.wait_for_selector("#share-note >> text=model name is damaged")
    assert HOSTILE not in long_model.inner_text("#share-note")
    damaged = open_page(
        browser, tutor_app_url + "?share=%3Cimg%20src%3Dx%20onerror%3Dalert(3)%3E", width
    )
    damaged.wait_for_selector("#share-note >> text=The page opened empty instead")
    for p in (page, shared, bad, damaged, long_model):
        assert p.dialogs == []
        assert p.locator("img[src='x'], img[src='http://x/i.png']").count() == 0
    assert damaged.input_value("#message textarea") == ""  # the page opened as if new
    for p in (shared, bad, long_model):
        p.close()
    screenshot(damaged, request)


@pytest.mark.parametrize("width", [1280, 400])
def test_engine_traps_run_for_real_and_hostile_text_stays_text(
    browser, tutor_app_url, tutor_engine, settings, request, width
):
    messages = [{"role": "user", "content": HOSTILE + " What is 7 plus 5?"}]
    playground = Playground(tutor_engine, settings.with_(model="tiny-tutor"))
    greedy = playground.params({"temperature": 0, "max_new_tokens": 100})
    turns, options = conversation_inputs(playground, json.dumps(messages), "")
    traps = ["templated-twice", "end-of-turn-not-stop", "no-bos"]
    page = open_compare(browser, tutor_app_url, width)
    set_conversation(page, messages)
    page.locator("#compare-count label:has-text('4')").click()
    set_number(page, "slider-temperature", 0)
    set_number(page, "slider-max_new_tokens", 100)
    for n, name in enumerate(traps, 2):
        choose(page, n, name)
        wait_text(page, f"#compare-info-{n}", TRAPS[name].title)
    assert "Sent as the 131 ids the library built" in page.inner_text("#compare-info-2")
    assert "ends only on ids [1]" in page.inner_text("#compare-info-3")
    assert "+0 / −1" in page.inner_text("#compare-info-4")  # the <bos>, struck through
    run_all(page, 4)
    for n, name in enumerate(["correct", *traps], 1):
        column = plan_column(playground, turns, options, Variant(name), greedy)
        assert shown_prompt(page, n) == column.prompt, name
        *_, direct = playground.complete(column.prompt, greedy, delivery=column.delivery)
        assert page.input_value(f"#compare-output-{n} textarea") == direct.text, name
    # The invented turns show as text: the engine did not stop at <end_of_turn>.
    assert "<end_of_turn>" in page.input_value("#compare-output-3 textarea")
    assert page.dialogs == []
    assert (
        page.locator("img[src='x'], img[src='http://x/i.png'], [id^=compare-prompt] strong").count()
        == 0
    )
    page.screenshot(path=str(ARTIFACTS / f"engine_traps_compare_{width}.png"), full_page=True)
    # The Raw tab's option: the same trap, its checks and its tokens.
    page.click("button[role=tab]:has-text('Raw prompt')")
    page.fill("#raw-prompt textarea", HOSTILE)
    page.locator("#raw-no-bos input").check()
    wait_text(page, "#raw-checks", "Sent with no <bos> at all")
    tokens = len(tutor_engine.tokenizer.encode_without_bos(HOSTILE))
    assert f"{tokens} tokens" in page.inner_text("#raw-checks")
    page.click("#raw-generate")
    page.wait_for_selector("#raw-figures >> text=tokens/s")
    assert page.locator("img[src='x'], img[src='http://x/i.png']").count() == 0
    screenshot(page, request)


def test_a_link_carrying_the_costliest_columns_runs_briefly_and_each_stops(
    browser, tutor_app_url, tutor_engine, request
):
    # Issue 34, item 16: a 394-character ?share= link carried item 1's columns (edited
    # prompts of 500 emoji, byte tokens all alike: a cubic diff), so one click on Run all
    # started minutes of CPU that Stop could not end; an edited prompt over the context was
    # described and diffed before the engine refused it.
    emoji = "<bos>" + "\U0001f600" * 500
    columns = [{"prompt": "correct"}, {"prompt": "edited", "text": emoji},
               {"prompt": "edited", "text": emoji + "!"},
               {"prompt": "edited", "text": "<bos>" + "\U0001f600" * 9_000}]  # fmt: skip
    sampling = {"max_new_tokens": 4096, "temperature": 0.0}
    view = {"tab": "compare", "conversation": json.dumps(QUESTION), "prefill": "", "count": 4,
            "columns": columns, "sampling": sampling}  # fmt: skip
    link = tutor_app_url + "?share=" + encode_view(view)
    assert len(link) < 800
    page = open_page(browser, link)
    page.wait_for_selector("#share-note >> text=Opened a shared compare view")
    wait_text(page, "#compare-info-4", "over the context size")  # refused before any run
    started = time.monotonic()
    page.click("#compare-run")
    wait_until(lambda: tutor_engine.active >= 1, seconds=10, what="a column to start")
    page.evaluate("1")
    assert time.monotonic() - started < 5  # planned and diffed within a bounded cost
    for n in (1, 2, 3):  # a column that has ended has its Stop disabled: a click does nothing
        page.evaluate("n => document.querySelector('#compare-stop-' + n).click()", n)
    wait_until(lambda: tutor_engine.active == 0, seconds=5, what="every column to stop")
    for n in (1, 2, 3):
        wait_text(page, f"#compare-figures-{n}", "seed")
    assert "over the context size" in page.inner_text("#compare-info-4")
    screenshot(page, request)


def copy_link(page, tab):
    page.click(f"#{tab}-share")
    page.wait_for_function(f"document.querySelector('#{tab}-link textarea').value.startsWith('h')")
    return page.input_value(f"#{tab}-link textarea")


@pytest.mark.parametrize("width", [1280, 400])
def test_a_shared_link_restores_the_view_and_replays_to_the_same_hash(browser, tutor_app_url,
                                                                      request, width):  # fmt: skip
    page = open_compare(browser, tutor_app_url, width)
    set_number(page, "slider-temperature", 1.0)
    set_number(page, "seed", 1234)
    page.fill("#compare-changes-2 input", "seed=99")
    run_all(page, 3)
    outputs = [page.input_value(f"#compare-output-{n} textarea") for n in (1, 2, 3)]
    link = copy_link(page, "compare")
    page.close()

    fresh = open_page(browser, link, width)
    fresh.wait_for_selector("#share-note >> text=Opened a shared compare view")
    assert fresh.input_value("#compare-changes-2 input") == "seed=99"
    assert fresh.input_value("#seed input[type=number]") == "1234"
    run_all(fresh, 3)
    fresh.wait_for_selector("#share-note >> text=The replay matched")
    assert [fresh.input_value(f"#compare-output-{n} textarea") for n in (1, 2, 3)] == outputs

    # Chat and Raw prompt carry their own views; the inspector its conversation.
    fresh.click("button[role=tab]:has-text('Chat')")
    send(fresh, "What is 2 plus 2?")
    fresh.wait_for_selector("#chatbot >> text=tokens/s")
    chat_link = copy_link(fresh, "chat")
    fresh.click("button[role=tab]:has-text('Raw prompt')")
    fresh.fill("#raw-prompt textarea", "<bos>Once upon a time")
    fresh.click("#raw-generate")
    fresh.wait_for_selector("#raw-figures >> text=tokens/s")
    raw_link = copy_link(fresh, "raw")
    screenshot(fresh, request)

    chat = open_page(browser, chat_link, width)
    chat.wait_for_selector("#share-note >> text=press Send to replay")
    # The last question waits in the box, its reply taken off: Send replays it.
    assert chat.input_value("#message textarea") == "What is 2 plus 2?"
    chat.click("#send")
    chat.wait_for_selector("#share-note >> text=The replay matched")
    raw = open_page(browser, raw_link, width)
    raw.wait_for_selector("#share-note >> text=Opened a shared raw view")
    assert raw.input_value("#raw-prompt textarea") == "<bos>Once upon a time"
    raw.click("#raw-generate")
    raw.wait_for_selector("#share-note >> text=The replay matched")
    chat.close()
    raw.close()
