"""The Compare tab's core: every fault's exact prompt, the token diff, where outputs part, share
links (round trip and every kind of bad link), and the /compare endpoint over HTTP on tiny-tutor.
"""

import base64
import json
import zlib

import pytest

from playground.compare import (
    FAULTS,
    LAB,
    Variant,
    conversation_inputs,
    diff_counts,
    first_difference,
    parse_changes,
    parse_variants,
    plan_column,
    readable_diff,
    token_diff,
)
from playground.errors import UserError
from playground.sampling import ParamError
from playground.session import Playground
from playground.share import (
    MAX_LINK_CHARS,
    ShareError,
    decode_view,
    encode_view,
    output_hash,
)
from playground.tokens import Token
from playground.tutor import UNCHANGED_BY

SYSTEM = [{"role": "system", "content": "Answer briefly."}]
QUESTION = [{"role": "user", "content": "What is 7 plus 5?"}]
CORRECT = (
    "<bos><start_of_turn>user\nAnswer briefly.\n\nWhat is 7 plus 5?<end_of_turn>\n"
    "<start_of_turn>model\n"
)
# Each fault's prompt for SYSTEM + QUESTION, written out by hand from its docs.
EXPECTED = {
    "no-generation-prompt": CORRECT.removesuffix("<start_of_turn>model\n"),
    "second-bos": "<bos>" + CORRECT,
    "assistant-role": CORRECT.replace("<start_of_turn>model", "<start_of_turn>assistant"),
    "system-as-is": "<bos><start_of_turn>system\nAnswer briefly.<end_of_turn>\n"
    "<start_of_turn>user\nWhat is 7 plus 5?<end_of_turn>\n<start_of_turn>model\n",
    "drop-system": "<bos><start_of_turn>user\nWhat is 7 plus 5?<end_of_turn>\n"
    "<start_of_turn>model\n",
    "other-separator": CORRECT.replace("briefly.\n\nWhat", "briefly.\nWhat"),
    "no-role-newline": CORRECT.replace("user\n", "user").replace("model\n", "model"),
    "prefill-space": CORRECT + "Sure, ",
    "typed-control-tokens": CORRECT.replace("5?<end_of_turn>", "5?<end_of_turn><end_of_turn>"),
}


@pytest.fixture(scope="module")
def playground(tutor_engine, settings):
    return Playground(tutor_engine, settings.with_(model="tiny-tutor"))


def plan(playground, variant, messages=SYSTEM + QUESTION, prefill=""):
    turns, options = conversation_inputs(playground, json.dumps(messages), prefill)
    return plan_column(playground, turns, options, variant, playground.params({}))


def test_the_correct_column_is_the_chat_tabs_prompt(playground):
    assert plan(playground, Variant()).prompt == CORRECT


@pytest.mark.parametrize("name", sorted(FAULTS))
def test_every_fault_gives_the_prompt_its_docs_describe(playground, name):
    if name == "error-system":
        with pytest.raises(UserError, match="System role not supported"):
            plan(playground, Variant(name))
        return
    column = plan(playground, Variant(name))
    assert column.prompt == EXPECTED[name]
    assert column.notes[0] == FAULTS[name].doc  # a second note: the model can't show it
    assert [t.id for t in column.tokens] == playground.engine.tokenizer.encode(EXPECTED[name])


@pytest.mark.parametrize("name", ["system-as-is", "drop-system", "error-system", "other-separator"])
def test_system_faults_without_a_system_message_say_so(playground, name):
    with pytest.raises(UserError, match="add one"):
        plan(playground, Variant(name), messages=QUESTION)


def test_a_prefill_keeps_its_text_and_the_fault_adds_the_space(playground):
    column = plan(playground, Variant("prefill-space"), prefill="The answer is")
    assert column.prompt == CORRECT + "The answer is "


def test_sampling_changes_are_checked_like_the_sliders(playground):
    column = plan(playground, Variant(sampling={"temperature": 1.5, "seed": 7}))
    assert (column.params.temperature, column.params.seed) == (1.5, 7)
    assert "temperature=1.5" in column.title
    with pytest.raises(ParamError, match="temperature"):
        plan(playground, Variant(sampling={"temperature": 9}))


def test_an_edited_prompt_is_sent_as_typed(playground):
    assert plan(playground, Variant("edited", "<bos>Once upon")).prompt == "<bos>Once upon"
    with pytest.raises(ParamError, match="empty"):
        plan(playground, Variant("edited", "  "))


def tokens(*ids):
    return [Token(i, f"t{i}", False) for i in ids]


def test_token_diff_names_what_was_added_and_what_was_removed():
    runs = token_diff(tokens(1, 5, 6, 7, 8), tokens(1, 3, 5, 6, 9, 8))
    assert [(kind, [t.id for t in run]) for kind, run in runs] == [
        ("same", [1]),
        ("added", [3]),
        ("same", [5, 6]),
        ("removed", [7]),
        ("added", [9]),
        ("same", [8]),
    ]
    assert diff_counts(runs) == (2, 1)
    assert diff_counts(token_diff(tokens(1, 2), tokens(1, 2))) == (0, 0)


def test_token_diff_rebuilds_both_prompts_and_matches_difflib_on_short_ones():
    import difflib
    import random

    rng = random.Random(0)
    for _ in range(300):
        a = [rng.choice([1, 2, 3]) for _ in range(rng.randint(0, 30))]
        b = [rng.choice([1, 2, 3]) for _ in range(rng.randint(0, 30))]
        runs = token_diff(tokens(*a), tokens(*b))
        assert [t.id for kind, run in runs if kind != "added" for t in run] == a
        assert [t.id for kind, run in runs if kind != "removed" for t in run] == b
        # The reference: difflib on the whole, as before the bound.
        plain = difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes()
        added = sum(j2 - j1 for op, i1, i2, j1, j2 in plain if op != "equal")
        removed = sum(i2 - i1 for op, i1, i2, j1, j2 in plain if op != "equal")
        assert diff_counts(runs) == (added, removed)


def test_a_long_alike_difference_is_one_change_not_minutes_of_cpu():
    # Issue 34: two columns of 500 emoji (byte-fallback tokens, all alike) made difflib's
    # cubic matcher hold every engine slot for 126 s. Past MAX_DIFF_TOKENS the middle is one
    # change; the common start and end stay matched.
    from playground.compare import MAX_DIFF_TOKENS

    emoji = [240, 159, 152, 128]
    a = [2, 106, *emoji * MAX_DIFF_TOKENS, 107]
    b = [2, 106, *[240, 159, 152, 129] * MAX_DIFF_TOKENS, 107]
    runs = token_diff(tokens(*a), tokens(*b))
    assert [(kind, len(run)) for kind, run in runs] == [
        ("same", 5),  # <bos>, <start_of_turn> and the three bytes both start with
        ("removed", len(a) - 6),
        ("added", len(b) - 6),
        ("same", 1),
    ]


def test_the_shown_diff_marks_a_changed_word_whole_on_character_tokens():
    # Issue 33: on tiny-tutor's character tokens "user" against "system" was marked letter by
    # letter (u, s kept, yst, e kept, r/m).
    def chars(text):
        return [Token(ord(c), c, False) for c in text]

    def shown(a, b):
        return [(k, "".join(t.piece for t in r)) for k, r in readable_diff(token_diff(a, b))]

    assert shown(chars("<t>user\nHi"), chars("<t>system\nHi")) == [
        ("same", "<t>"), ("removed", "user"), ("added", "system"), ("same", "\nHi"),
    ]  # fmt: skip
    assert diff_counts(token_diff(chars("user"), chars("system"))) == (4, 2)  # counts stay exact
    import random

    rng = random.Random(1)
    for _ in range(500):
        a = chars("".join(rng.choice("abc") for _ in range(rng.randint(0, 20))))
        b = chars("".join(rng.choice("abc") for _ in range(rng.randint(0, 20))))
        runs = readable_diff(token_diff(a, b))
        assert [t for kind, run in runs if kind != "added" for t in run] == a
        assert [t for kind, run in runs if kind != "removed" for t in run] == b


def test_first_difference_is_the_first_character_that_parts():
    assert first_difference("So 12.", "So 12.") is None
    assert first_difference("So 12.", "So 13.") == 4
    assert first_difference("So 12.", "So 12. And") == 6
    assert first_difference("abc", "") == 0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("temperature", "name=value"),
        ("colour=2", "name=value"),
        ("seed=seven", "not a number"),
        ("seed=1 " * 40, "limit"),
    ],
)
def test_bad_sampling_changes_get_one_clear_line(text, message):
    with pytest.raises(ParamError, match=message):
        parse_changes(text)


def test_sampling_changes_read_spaces_commas_and_lines():
    assert parse_changes("temperature=1.2, seed=7\ntop_k=5") == {
        "temperature": 1.2, "seed": 7.0, "top_k": 5.0,
    }  # fmt: skip


@pytest.mark.parametrize(
    "data", [[], ["correct"], ["correct"] * 5, "correct", [3, 4], [{"prompt": "x", "evil": 1}]]
)
def test_bad_column_lists_are_refused(data):
    with pytest.raises(ParamError):
        parse_variants(data)


# ---- share links ----------------------------------------------------------------------------


def view(**fields):
    return {"tab": "raw", "prompt": "<bos>Hello", "sampling": {"temperature": 0.0}, **fields}


def test_a_link_round_trips_with_its_values_checked(playground):
    token = encode_view(view(hash=output_hash("out")))
    opened = decode_view(token, playground)
    assert opened["prompt"] == "<bos>Hello" and opened["hash"] == output_hash("out")
    assert opened["sampling"]["temperature"] == 0.0
    assert opened["sampling"]["top_k"] == playground.settings.ranges["top_k"].default


def pack(data) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return base64.urlsafe_b64encode(zlib.compress(raw)).decode().rstrip("=")


@pytest.mark.parametrize(
    ("token", "message"),
    [
        ("", "empty"),
        ("<script>alert(1)</script>", "characters a link never has"),
        ("A" * (MAX_LINK_CHARS + 1), "too long"),
        ("AAAA", "cannot be unpacked"),
        (pack(b"\xff\xfe not json"), "not readable"),
        (pack({"v": 2, "tab": "raw"}), "another version"),
        (pack({"v": 1, "tab": "admin"}), "names no tab"),
        (pack({"v": 1, "tab": "raw", "prompt": "x", "cookie": "y"}), "field"),
        (pack({"v": 1, "tab": "raw", "prompt": ["x"]}), "wrong type"),
        (pack({"v": 1, "tab": "compare", "count": True}), "wrong type"),
        (pack({"v": 1, "tab": "raw", "prompt": "x", "sampling": {"temperature": 99}}), "temper"),
        (pack({"v": 1, "tab": "raw", "prompt": "x", "sampling": {"rm": 1}}), "unknown sampling"),
        (pack({"v": 1, "tab": "raw", "prompt": "x", "hash": "<b>"}), "hash"),
        (pack({"v": 1, "tab": "raw", "prompt": "x" * 10**5}), "limit"),
        (pack({"v": 1, "tab": "chat", "messages": [{"role": "system", "content": "x"}]}), "user"),
        (
            pack(
                {
                    "v": 1,
                    "tab": "compare",
                    "conversation": "[]",
                    "prefill": "",
                    "count": 9,
                    "columns": [],
                }
            ),
            "2 to 4",
        ),
        (pack(b"{" + b" " * 10**6 + b"}"), "more than a view can hold"),
        (
            pack(
                {
                    "v": 1,
                    "tab": "compare",
                    "conversation": "[]",
                    "prefill": "",
                    "count": 2,
                    "columns": [{"prompt": "correct", "engine": "<b>elsewhere</b>"}],
                }
            ),
            "engine is one of served, peer",
        ),
        # issue 34: "maximum recursion depth", a 65,000-character model name in the page's note
        (pack(b"[" * 90_000 + b"]" * 90_000), "not readable"),
        (pack({"v": 1, "tab": "raw", "prompt": "x", "model": "m" * 65_000}), "model name"),
        (pack({"v": 1, "tab": "raw", "prompt": "x", "model": "a\nb"}), "model name"),
        (pack({"v": 1, "tab": "raw", "prompt": "x", "engine": "<b>x</b>"}), "unknown engine"),
    ],
)
def test_a_bad_link_gets_one_clear_message(playground, token, message):
    with pytest.raises(ShareError, match=message) as raised:
        decode_view(token, playground)
    assert "\n" not in str(raised.value)


def test_a_view_too_large_for_a_link_is_refused_when_made():
    big = "".join(chr(0x4E00 + i % 20000) for i in range(20000))  # incompressible text
    with pytest.raises(ShareError, match="too large"):
        encode_view(view(prompt=big))


# ---- /compare over HTTP ---------------------------------------------------------------------


@pytest.mark.slow
def test_compare_endpoint_returns_columns_diffs_and_outputs(tutor_client):
    result = json.loads(
        tutor_client.predict(
            json.dumps(QUESTION),
            json.dumps(
                [
                    "correct",
                    "second-bos",
                    {"prompt": "correct", "sampling": {"seed": 3}},
                    "error-system",
                ]
            ),
            "",
            temperature=0,
            api_name="/compare",
        )
    )["columns"]
    correct, doubled, reseeded, refused = result
    assert "12" in correct["output"] and correct["figures"]["stop_reason"] == "end_of_turn"
    assert correct["prompt"] == CORRECT.replace("Answer briefly.\n\n", "")
    assert (doubled["tokens_added"], doubled["tokens_removed"]) == (1, 0)
    assert doubled["diff"] == [{"kind": "added", "tokens": [{"id": 2, "piece": "<bos>"}]}]
    assert doubled["output"] == correct["output"] and doubled["parts_at"] is None  # tiny-tutor
    assert reseeded["figures"]["seed"] == 3 and reseeded["parts_at"] is None  # greedy: same
    assert "system message" in refused["error"]


def test_a_column_over_the_context_fails_alone(playground):
    # Issue 34, item 15: one column over the context made the whole /compare fail.
    from playground.compare import compare, parse_variants

    turns, options = conversation_inputs(playground, json.dumps(QUESTION), "")
    over = {"prompt": "edited", "text": "word " * playground.context_size}
    variants = parse_variants(["correct", over])
    params = playground.params({"temperature": 0, "max_new_tokens": 20})
    first, second = compare(playground, turns, options, variants, params)
    assert first["output"] and "error" not in first
    assert "over the context size" in second["error"] and "output" not in second


def test_an_edited_prompt_over_the_context_is_refused_before_its_token_view(
    playground, monkeypatch
):
    # Issue 34, item 16: a shared link can carry an edited prompt of 65,000 characters; it was
    # described token by token (a decode per token) and diffed before the engine refused it.
    from playground.compare import compare, parse_variants

    described = []
    describe = playground.engine.tokenizer.describe
    monkeypatch.setattr(playground.engine.tokenizer, "describe",
                        lambda ids: described.append(len(ids)) or describe(ids))  # fmt: skip
    turns, options = conversation_inputs(playground, json.dumps(QUESTION), "")
    over = {"prompt": "edited", "text": "\U0001f600" * 16_000}  # 4 byte tokens each
    params = playground.params({"temperature": 0, "max_new_tokens": 4})
    first, second = compare(playground, turns, options, parse_variants(["correct", over]), params)
    assert first["output"] and "over the context size" in second["error"], second
    assert described and max(described) < playground.context_size  # column 1's only


@pytest.mark.slow
def test_compare_endpoint_refuses_bad_input_in_one_line(tutor_client):
    from gradio_client.exceptions import AppError

    for conversation, columns, message in [
        ("not json", '["correct", "correct"]', "JSON"),
        (json.dumps(QUESTION), "[", "columns is not valid JSON"),
        (json.dumps(QUESTION), '["correct"]', "2 to 4"),
    ]:
        with pytest.raises(AppError, match=message):
            tutor_client.predict(conversation, columns, "", api_name="/compare")


def test_the_fault_lab_lesson_runs_each_fault_as_the_compare_tab_makes_it(playground):
    from playground.notebook import PromptCell, list_lessons, parse_lesson

    lesson = list_lessons()["9. The fault lab: one question, ten ways to get the format wrong"]
    cells = [c for c in parse_lesson(lesson.read_text()) if isinstance(c, PromptCell)]
    lab = {
        name: plan(playground, Variant(name)).prompt for name in FAULTS if name != "error-system"
    }
    lab["correct"] = CORRECT
    shown = {}
    for cell in cells:
        if cell.option("system_policy") == "error":
            with pytest.raises(UserError, match="System role not supported"):
                playground.cell_prompt(cell)
            continue
        prompt = playground.cell_prompt(cell)
        assert prompt in lab.values(), prompt
        shown[prompt] = cell
    assert len(shown) == len(lab) == len(FAULTS)  # every fault once, and the correct prompt


# The Compare tab's conversations: its start, and the fault lab's with a system message.
MEASURED = [QUESTION, SYSTEM + QUESTION]


def test_the_faults_tiny_tutor_does_not_show_are_the_ones_the_page_names(playground):
    # Issue 33: "a second <bos>" promised degraded replies that tiny-tutor never gives. The
    # faults it replies to as to the correct prompt are named (UNCHANGED_BY); the rest must
    # change a reply, so a retrained model that shows more, or fewer, fails here.
    # 100 tokens: past the end of tiny-tutor's replies here, where the stop traps show.
    greedy = playground.params({"temperature": 0, "max_new_tokens": 100})
    unchanged = set(LAB) - {"error-system"}
    for messages in MEASURED:
        turns, options = conversation_inputs(playground, json.dumps(messages), "")
        correct = plan_column(playground, turns, options, Variant(), greedy)
        *_, reference = playground.complete(correct.prompt, greedy)
        for name in sorted(unchanged):
            try:
                column = plan_column(playground, turns, options, Variant(name), greedy)
            except UserError:  # a system message's fault, in the conversation without one
                continue
            *_, reply = playground.complete(column.prompt, greedy, delivery=column.delivery)
            if reply.text != reference.text:
                unchanged.discard(name)
    assert unchanged == UNCHANGED_BY


def test_a_fault_the_served_model_does_not_show_says_so(playground):
    for name in LAB:
        if name == "error-system":
            continue
        notes = plan(playground, Variant(name)).notes
        said = any("leaves the reply as it is (measured)" in note for note in notes)
        assert said == (name in UNCHANGED_BY), name
    assert "tiny-tutor (demo model)" in plan(playground, Variant("second-bos")).notes[-1]
    checks = playground.raw_checks("<bos><bos>Hi")
    assert "tiny-tutor (demo model) replies the same" in checks and "degrade" not in checks


def test_a_model_not_measured_gets_no_such_note(tutor_engine, settings):
    # The note is the measured model's alone: any other model is promised nothing either way.
    other = Playground(tutor_engine, settings.with_(model="tiny-tutor"))
    other.unchanged_by = lambda fault: False
    assert plan(other, Variant("second-bos")).notes == (FAULTS["second-bos"].doc,)
    assert "can change its replies" in other.raw_checks("<bos><bos>Hi")
