"""Fair sharing over raw HTTP (issue 23): one client must not wipe, block or starve the others.

Each test reproduces one problem of the issue against a real server in this process, on
loopback only: a client at 127.0.0.2 is "another machine" to the server at 127.0.0.1.
"""

import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import psutil
import pytest

from tests.conftest import serve
from tests.helpers.browser import clock_first_tokens, press_waits
from tests.helpers.waiting import wait_until

pytestmark = pytest.mark.slow

GREEDY = {"temperature": 0.0, "top_p": 1.0, "top_k": 0, "repetition_penalty": 1.0, "seed": 1}
MB = 2**20


def http(source="127.0.0.1", timeout=120.0):
    return httpx.Client(transport=httpx.HTTPTransport(local_address=source), timeout=timeout)


def call(url, name, data, source="127.0.0.1"):
    """A raw /gradio_api/call/NAME: (HTTP status, the event id or the refusal)."""
    with http(source) as client:
        # json.dumps escapes non-ASCII, so a lone surrogate travels as "\ud800", as in the issue.
        response = client.post(
            f"{url}gradio_api/call/{name}",
            content=json.dumps({"data": data}),
            headers={"content-type": "application/json"},
        )
    body = response.json()
    return response.status_code, body.get("event_id") or body.get("detail") or body


def result(url, name, event_id, source="127.0.0.1"):
    """The last SSE event of a call: ("complete", data) or ("error", message)."""
    with http(source, timeout=600) as client:
        text = client.get(f"{url}gradio_api/call/{name}/{event_id}").text
    kind, data = None, None
    for line in text.splitlines():
        if line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("data: "):
            data = json.loads(line[6:])
    return kind, data


def call_and_read(pool, url, name, data, source="127.0.0.1"):
    """`call`, its results read at once in `pool` (an unread reply is ended: `guard`): the
    HTTP status and the refusal, or a future of `result`."""
    status, event_id = call(url, name, data, source)
    return status, pool.submit(result, url, name, event_id, source) if status == 200 else event_id


def complete(url, prompt, max_new_tokens, source="127.0.0.1"):
    data = [prompt, max_new_tokens, *GREEDY.values()]
    status, event_id = call(url, "complete", data, source)
    assert status == 200, event_id
    return result(url, "complete", event_id, source)


@pytest.fixture(scope="module")
def server(settings, genai_engine):
    from playground.ui import build_demo

    demo = build_demo(genai_engine, settings)
    url = serve(demo, settings)
    yield url, demo
    demo.close()


def test_a_new_session_copies_no_components_config_and_still_keeps_state(server):
    # Issue 34's soak: building Gradio's copy of every component's config for each new session
    # (every API call makes one) took two thirds of the app's GIL time under the floods, and
    # the page's events each waited up to 2 s to start. Only deep links (closed) read it.
    from gradio.state_holder import SessionState

    from playground.ui.guard import LightSession

    url, demo = server
    light, gradios = LightSession(demo), SessionState(demo)
    assert light.config_values == {} and len(gradios.config_values) > 100
    assert set(vars(light)) == set(vars(gradios))  # Gradio's own set-up otherwise
    _, event_id = call(url, "complete", ["Hi", 2, *GREEDY.values()], "127.0.0.77")
    assert result(url, "complete", event_id, "127.0.0.77")[0] == "complete"
    holder = demo.server_app.state_holder
    assert holder.session_data and all(
        isinstance(session, LightSession) for session in holder.session_data.values()
    )


def test_a_free_slot_goes_to_the_client_with_the_fewest_running():
    # Gradio runs a group's events in arrival order: a visitor who came after a greedy
    # client's queued replies waited for all of them (issue 34's soak).
    from types import SimpleNamespace

    from playground.ui.guard import FairAdmission

    engine = SimpleNamespace(concurrency_id="engine")

    def event(name):
        return SimpleNamespace(_id=name, fn=engine, alive=True, session_hash=name)

    running = [event("greedy-1"), event("greedy-2")]
    waiting = [event("greedy-3"), event("greedy-4"), event("visitor-1")]
    line = SimpleNamespace(queue=list(waiting), concurrency_limit=4, current_concurrency=2)
    picked = []
    queue = SimpleNamespace(
        push=None, event_queue_per_concurrency_id={"engine": line},
        active_jobs=[[e] for e in running] + [None, None],
        get_events=lambda: picked.append(line.queue.pop(0)),
    )  # fmt: skip
    admission = FairAdmission(queue, "engine", slots=4, places=8, per_client=2, other=16)
    admission.held[True] = {"greedy": {"greedy-1", "greedy-2", "greedy-3", "greedy-4"},
                            "visitor": {"visitor-1"}}  # fmt: skip
    queue.get_events()
    assert [e._id for e in picked] == ["visitor-1"]
    queue.get_events()  # then the greedy client's, in the order they came
    assert [e._id for e in picked] == ["visitor-1", "greedy-3"]


def chat_json_data(message, history, max_new_tokens):
    return [message, history, "", "fold", "", max_new_tokens, *GREEDY.values(), "", 0, False]


def test_p1_a_long_empty_history_costs_little_cpu(server, genai_engine, monkeypatch):
    # "Hi" after 2,000 empty alternating turns: 10.3 s of CPU before the engine started
    # (fit_budget re-rendered and re-counted the whole conversation per dropped exchange).
    url, _ = server
    turns = [{"role": "user" if i % 2 == 0 else "assistant", "content": ""} for i in range(2000)]
    history = json.dumps(turns, separators=(",", ":"))
    assert len(history) < 65_536  # under the input limit, as in the issue
    reached = []
    generate = genai_engine.generate

    def timed_generate(*args, **kwargs):
        reached.append(time.process_time())  # the request's cost before the engine ends here
        return generate(*args, **kwargs)

    _, warm_up = call(url, "chat_json", chat_json_data("Hi", "[]", 2))
    assert result(url, "chat_json", warm_up)[0] == "complete"  # the server's first call, untimed
    monkeypatch.setattr(genai_engine, "generate", timed_generate)
    began = time.process_time()
    _, event_id = call(url, "chat_json", chat_json_data("Hi", history, 20))
    kind, out = result(url, "chat_json", event_id)
    spent = reached[0] - began
    print(f"P1: /chat_json, 2,000 empty turns + Hi: {spent:.3f} s CPU before the engine")
    assert kind == "complete", out
    assert json.loads(out[0])["figures"]["new_tokens"] > 0
    # The issue's goal is 0.5 s (0.34 s measured with this test alone); process_time counts
    # every thread of this test process, so inside the full suite other work can add to it
    # (0.55 s seen once). The quadratic fit it replaced took 10.3 s.
    assert spent < 2.0


def test_p1_a_20000_turn_history_is_refused_at_once(server):
    url, _ = server
    turns = [{"role": "user" if i % 2 == 0 else "assistant", "content": ""} for i in range(20000)]
    history = json.dumps(turns, separators=(",", ":"))
    began = time.monotonic()
    _, event_id = call(url, "chat_json", chat_json_data("Hi", history, 20))
    kind, out = result(url, "chat_json", event_id)
    assert kind == "error"
    assert "characters; the limit is" in str(out) or "messages; the limit is" in str(out)
    assert time.monotonic() - began < 2


def test_render_costs_what_the_context_holds_not_what_was_sent(server):
    # Issue 34, item 8: /render of one 65,000-emoji message took 1.2-1.8 s of CPU and answered
    # 260,016 token rows; it rendered whatever it was sent. It fits the context as the
    # inspector does now: the message is refused at its count, a long history cut.
    url, _ = server
    emoji = json.dumps([{"role": "user", "content": "\U0001f600" * 65_000}], ensure_ascii=False)
    began = time.process_time()
    kind, out = result(url, "render", call(url, "render", [emoji, "fold", True])[1])
    spent = time.process_time() - began
    assert kind == "error" and "more than the context size" in out["error"], out
    turns = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i}"}
             for i in range(1001)]  # fmt: skip
    kind, out = result(url, "render", call(url, "render", [json.dumps(turns), "fold", True])[1])
    assert kind == "complete", out
    details = json.loads(out[0][1])
    assert details["dropped_turns"][:2] == [1, 2]
    assert "were left out to fit the context" in " ".join(details["warnings"])
    print(f"item 8: /render of 65,000 emoji refused after {spent:.2f} s of CPU")
    assert spent < 1.0  # process_time counts every thread here; the refusal alone is ~0.15 s


def body_of(size):
    """A /complete body of about `size` bytes, streamed in 1 MiB pieces (no big buffer here)."""
    yield b'{"data": ["'
    piece = b"a" * MB
    for _ in range(size // MB):
        yield piece
    yield b'", 5, 0, 1, 0, 1, 1]}'


def test_p2_oversized_bodies_are_refused_before_they_are_read(server):
    url, _ = server
    me = psutil.Process()
    complete(url, "warm up", 2)
    before = me.memory_info().rss
    size = 100 * MB
    for _ in range(4):
        with http() as client:
            # Declared: refused on the headers. Chunked (no Content-Length): refused once the
            # streamed bytes pass the limit.
            for headers, content in [
                ({"content-length": str(size + 32)}, body_of(size)),
                ({}, body_of(size)),
            ]:
                try:
                    response = client.post(
                        f"{url}gradio_api/call/complete",
                        headers={"content-type": "application/json", **headers},
                        content=content,
                    )
                except httpx.TransportError:
                    continue  # the server closed the connection while we still sent: refused
                assert response.status_code == 413
                assert "limit" in response.json()["error"]
    after = me.memory_info().rss
    print(f"P2: RSS {before / MB:.0f} MiB before 8 calls of 100 MiB, {after / MB:.0f} after")
    assert after < before * 1.05
    assert complete(url, "still", 2)[0] == "complete"  # the server still serves


def test_p2_a_normal_call_is_not_refused(server, settings):
    url, _ = server
    # The longest text, all non-ASCII: the body passes, and the app's own checks answer.
    prompt = "é" * settings.max_input_chars
    kind, out = complete(url, prompt, 1)
    assert kind == "error" and "over the context size" in out["error"], out


@pytest.fixture(scope="module")
def batched_server(settings, batched_engine):
    """Four slots, paced like a real model: a reply of 300 tokens takes about 6 s."""
    from playground.ui import build_demo

    demo = build_demo(batched_engine, settings)
    url = serve(demo, settings)
    yield url
    demo.close()


def test_p4_one_client_gets_its_share_and_others_are_served(batched_server, settings):
    # 24 long /complete calls from one client filled the 16 places for minutes: a new visitor's
    # page showed "This application is currently busy" and their sends were refused.
    url = batched_server
    greedy = "127.0.0.2"
    long_reply = ["Once", 300, *GREEDY.values()]  # about 6 s at the paced speed
    pool = ThreadPoolExecutor(8)
    answers = [call_and_read(pool, url, "complete", long_reply, greedy) for _ in range(24)]
    admitted = [reading for status, reading in answers if status == 200]
    refused = [detail for status, detail in answers if status != 200]
    assert len(admitted) == 4  # the free slots, and no queue places beyond them
    assert all("one client may have at most 2" in detail for detail in refused), refused[:1]
    began = time.monotonic()
    status, event_id = call(url, "status", [])  # another client: not behind the generations
    assert status == 200 and result(url, "status", event_id)[0] == "complete"
    status_s = time.monotonic() - began
    status, visitor = call(url, "complete", ["Hello", 5, *GREEDY.values()])
    assert status == 200, visitor  # admitted at once, to wait for the next free slot
    again, detail = call(url, "complete", long_reply, greedy)
    assert again != 200 and "one client may have at most 2" in detail  # it cannot jump ahead
    kind, out = result(url, "complete", visitor)
    waited = time.monotonic() - began
    print(f"P4: the other client's status took {status_s:.2f} s, its reply {waited:.2f} s")
    assert kind == "complete", out
    assert status_s < 2  # a generation here takes about 6 s
    assert waited < 20  # one of the greedy client's replies (about 6 s), not all of them
    for reading in admitted:  # the greedy client's own replies still complete
        assert reading.result()[0] == "complete"
    pool.shutdown()


def test_a_generation_nobody_reads_ends_and_one_being_read_goes_on(batched_server,
                                                                  batched_engine):  # fmt: skip
    # Issue 34, item 2: a client that posted a /call and never read its results held a slot
    # until its reply's end (6,000 tokens, 18 s and more); /cancel-free, fire and forget.
    from playground.ui.guard import UNREAD_GRACE_S

    url = batched_server
    wait_until(lambda: batched_engine.active == 0, seconds=60, what="an idle engine")
    long_reply = ["Once", 2000, *GREEDY.values()]  # 40 s at the paced speed
    status, unread = call(url, "complete", long_reply, "127.0.0.3")  # and not read
    assert status == 200
    wait_until(lambda: batched_engine.active == 1, seconds=10, what="the reply to start")
    began = time.monotonic()
    wait_until(lambda: batched_engine.active == 0, seconds=UNREAD_GRACE_S + 3,
               what="the unread reply to end")  # fmt: skip
    print(f"unread reply ended {time.monotonic() - began:.1f} s after it started")
    kind, out = result(url, "complete", unread, "127.0.0.3")  # a late reader is told why
    assert kind == "error" and "nobody read its results" in out["error"], out
    # One that is read runs past the grace to its end.
    read = ["Once", 400, *GREEDY.values(), "", 0, False]  # 8 s
    status, event_id = call(url, "complete_json", read, "127.0.0.4")
    kind, out = result(url, "complete_json", event_id, "127.0.0.4")
    assert kind == "complete" and json.loads(out[0])["figures"]["new_tokens"] == 400, out


def test_p4_page_events_are_not_refused_when_generations_fill_every_place(batched_server):
    url = batched_server
    # Many clients (127.0.0.10 to .35), each within its share: every place is taken.
    sources = [f"127.0.0.{10 + i}" for i in range(26)]
    pool = ThreadPoolExecutor(26)
    data = ["Once", 200, *GREEDY.values()]
    answers = [call_and_read(pool, url, "complete", data, source) for source in sources]
    held = [reading for status, reading in answers if status == 200]
    full = [detail for status, detail in answers if status != 200]
    status, event_id = call(url, "status", [])  # a non-generating event is still admitted
    assert status == 200, event_id
    assert result(url, "status", event_id)[0] == "complete"
    assert full and all("queue is full: all 20 places" in detail for detail in full)
    for reading in held:
        assert reading.result()[0] == "complete"
    pool.shutdown()


# ---- the abusive soak ---------------------------------------------------------------------------

SOAK_SECONDS = 60  # the abuse runs this long at most; each abuser also has a count


@pytest.fixture(scope="module")
def soak_app():
    """The app as a Space runs it, in a process of its own (the attackers here must not share
    its GIL), on tiny-tutor, keeping only 20 sessions so the floods below are big for it."""
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT, free_port, wait_for_page

    port = free_port()
    env = {**os.environ, "PLAYGROUND_SESSION_CAPACITY": "20"}
    server = subprocess.Popen(
        [sys.executable, "app.py", "--model", "tiny-tutor", "--port", str(port)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_for_page(url, server)
        yield url, psutil.Process(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=30)


def engine_idle(url) -> bool:
    _, event_id = call(url, "status", [], "127.0.0.99")
    _, out = result(url, "status", event_id, "127.0.0.99")
    now = json.loads(out[0])
    return now["active"] == now["waiting"] == 0


def abusers(url, stop):
    """Oversized bodies, long histories, status floods and one greedy client, each from its
    own loopback address, until `stop` is set or its count is done. Returns their tallies."""
    import threading

    tally = {"oversized": 0, "refused_413": 0, "long_history": 0, "status": 0, "greedy": 0,
             "greedy_refused": 0}  # fmt: skip

    def oversized():
        for _ in range(20):
            if stop.is_set():
                return
            try:
                with http("127.0.0.3") as client:
                    response = client.post(
                        f"{url}gradio_api/call/complete",
                        headers={"content-type": "application/json"},
                        content=body_of(20 * MB),
                    )
                tally["refused_413"] += response.status_code == 413
            except httpx.TransportError:
                tally["refused_413"] += 1  # closed on us mid-body: refused too
            tally["oversized"] += 1

    def long_history():
        turns = [{"role": "assistant" if i % 2 else "user", "content": ""} for i in range(2000)]
        history = json.dumps(turns, separators=(",", ":"))
        for _ in range(10):
            if stop.is_set():
                return
            status, event_id = call(url, "chat_json", chat_json_data("Hi", history, 4), "127.0.0.4")
            if status == 200:
                result(url, "chat_json", event_id, "127.0.0.4")
            tally["long_history"] += 1

    def status_flood():
        for _ in range(300):
            if stop.is_set():
                return
            status, event_id = call(url, "status", [], "127.0.0.5")
            if status == 200:
                result(url, "status", event_id, "127.0.0.5")
            tally["status"] += 1

    def greedy():
        while not stop.is_set() and tally["greedy"] < 200:
            status, _ = call(url, "complete", ["Once", 300, *GREEDY.values()], "127.0.0.2")
            tally["greedy"] += 1
            tally["greedy_refused"] += status != 200
            time.sleep(0.05)

    attacks = [oversized, long_history, status_flood, greedy, *issue34_attacks(url, stop, tally)]
    threads = [threading.Thread(target=fn, daemon=True) for fn in attacks]
    for thread in threads:
        thread.start()
    return threads, tally


def issue34_attacks(url, stop, tally):
    """Issue 34's cheap requests, each from its own address until `stop` or its count."""
    from tests.helpers.browser import fn_index_of

    emoji = "<bos>" + "\U0001f600" * 500
    edited = [{"prompt": "edited", "text": emoji}, {"prompt": "edited", "text": emoji + "!"}]
    columns = json.dumps(["correct", *edited])
    stop_fn = fn_index_of(url, "stop")
    turns = [{"role": "user" if i % 2 == 0 else "assistant", "content": chr(97 + i % 26)}
             for i in range(2000)]  # fmt: skip
    distinct = json.dumps(turns)
    question = json.dumps([*turns, {"role": "user", "content": "q"}])

    def read(name, source, data):
        status, event_id = call(url, name, data, source)
        if status == 200:
            result(url, name, event_id, source)

    def compare_emoji(source):  # item 1: two columns of 500 alike byte tokens
        read("compare", source, [json.dumps(QUESTION_34), columns, "", 8, *GREEDY.values()])

    def fire_and_forget(source):  # item 2: posted, never read
        call(url, "complete", ["Once", 2000, *GREEDY.values()], source)
        time.sleep(0.5)

    def stateful_stop(source):  # item 5: a session with state each time
        session = f"{source}-{time.monotonic_ns()}"
        body = {"data": [None], "fn_index": stop_fn, "session_hash": session}
        with http(source) as client:
            if client.post(f"{url}gradio_api/queue/join", json=body).status_code == 200:
                client.get(f"{url}gradio_api/queue/data", params={"session_hash": session})

    def refused_render(source):  # item 6: 1 MB, refused by the length check
        read("render", source, ["x" * 1_000_000, "fold", True])

    def render_flood(source):  # item 7, with item 8's distinct turns
        read("render", source, [question, "fold", True])

    def distinct_history(source):  # item 8
        read("chat_json", source, chat_json_data("Hi", distinct, 4))

    def closed_routes(source):  # items 9 and 12
        with http(source) as client:
            for path in ("gradio_api/run/compare", "gradio_api/deep_link?session_hash=x"):
                answer = client.post(f"{url}{path}", json={"data": []})
                tally["closed_404"] = tally.get("closed_404", 0) + (answer.status_code == 404)
        time.sleep(0.2)

    def repeat(once, times, source):
        def attack():
            for _ in range(times):
                if stop.is_set():
                    return
                once(source)
                tally[once.__name__] = tally.get(once.__name__, 0) + 1

        return attack

    return [
        repeat(compare_emoji, 10, "127.0.0.6"),
        repeat(fire_and_forget, 40, "127.0.0.7"),
        repeat(stateful_stop, 300, "127.0.0.8"),
        repeat(refused_render, 200, "127.0.0.9"),
        *[repeat(render_flood, 40, "127.0.0.10") for _ in range(8)],
        repeat(distinct_history, 10, "127.0.0.11"),
        repeat(closed_routes, 50, "127.0.0.12"),
    ]


QUESTION_34 = [{"role": "user", "content": "What is 7 plus 5?"}]


def api_visitor(url, source, turns_wanted, errors, waits):
    """A normal API visitor: a conversation of `turns_wanted` short turns, its history kept;
    each turn's wait from its send to its first token goes to `waits`."""
    history = []
    for n in range(turns_wanted):
        message = f"Visitor {source} turn {n}"
        data = chat_json_data(message, json.dumps(history), 6)
        sent = time.time()
        status, event_id = call(url, "chat_json", data, source)
        if status != 200:
            errors.append(f"{source}: {event_id}")
            return history
        kind, out = result(url, "chat_json", event_id, source)
        if kind != "complete":
            errors.append(f"{source}: {out}")
            return history
        reply = json.loads(out[0])
        waits.append(reply["timeline"]["first_token"] - sent)
        history += [{"role": "user", "content": message},
                    {"role": "assistant", "content": reply["text"]}]  # fmt: skip
    return history


def test_soak_abuse_beside_normal_visitors(soak_app, browser, tmp_path):
    # Issue 34's soak: the attacks together for up to 60 s beside 4 normal visitors (3 API
    # clients and a page), each a 3-turn chat.
    import threading

    url, app = soak_app
    complete(url, "warm up", 4)  # the app's first-call allocations, before its RSS is read
    rss_before = app.memory_info().rss
    stop = threading.Event()
    threads, tally = abusers(url, stop)
    began = time.monotonic()
    try:
        time.sleep(2)  # the abuse is under way
        errors, histories, waits, page_waits = [], {}, [], []

        def visit(source):
            histories[source] = api_visitor(url, source, 3, errors, waits)

        visitors = [threading.Thread(target=visit, args=(f"127.0.0.{50 + i}",)) for i in range(3)]
        for thread in visitors:
            thread.start()
        page = browser.new_page()
        page.set_default_timeout(90_000)
        page.goto(url)
        page.wait_for_selector("#message textarea")
        clock_first_tokens(page)
        box = page.locator("#slider-max_new_tokens input[type=number]")
        box.fill("6")
        box.press("Enter")
        for n in range(3):
            page.fill("#message textarea", f"Browser turn {n}")
            sent = time.monotonic()
            page.click("#send")
            page.wait_for_selector(f"#chatbot >> text=prompt tokens >> nth={n}")
            page_waits.append(time.monotonic() - sent)  # the whole reply, page events included
        page_firsts = press_waits(page)
        path = tmp_path / "chat.json"
        deadline = time.monotonic() + 30
        while True:  # the file is rewritten just after the last reply ends: wait for it
            with page.expect_download() as download:
                page.click("#download")
            download.value.save_as(path)
            if len(json.loads(path.read_text())["messages"]) == 6 or time.monotonic() > deadline:
                break
            page.wait_for_timeout(300)
        page.close()
        for thread in visitors:
            thread.join(timeout=120)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=120)
    took = time.monotonic() - began
    attack_over = time.monotonic()
    wait_until(lambda: engine_idle(url), seconds=10, what="the engine idle after the attack")
    idle_after = time.monotonic() - attack_over
    rss_idle = app.memory_info().rss
    time.sleep(3)  # the app gives back what the floods freed once it is quiet (housekeeping)
    rss_after = app.memory_info().rss
    replies = ", ".join(f"{w:.1f}" for w in page_waits)
    firsts = ", ".join(f"{w:.2f}" for w in page_firsts)
    print(f"soak: {took:.0f} s, abuse {tally}; API first tokens within {max(waits):.2f} s, "
          f"the page's first tokens {firsts} s (its whole replies {replies} s, with "
          f"Playwright's); engine idle {idle_after:.1f} s after; app RSS "
          f"{rss_before / MB:.0f} -> {rss_idle / MB:.0f} as the engine idled -> "
          f"{rss_after / MB:.0f} MiB 3 s later")  # fmt: skip
    assert not errors, errors
    # Every visitor is served and keeps its turns (below). The issue's figures are benchmarks,
    # measured, not asserted (a loaded machine moves them); BENCHMARKS.md has them. Run
    # alone here: the API visitors' first tokens came within 3.1-5.2 s of their sends (goal
    # 5 s; 3.4-4.9 s before new sessions stopped copying every component's config, renders
    # ran one at a time and a free slot went to the client with the fewest running); the
    # page's first tokens within 2.5-8.6 s, in the page's clock, Chromium sharing the 2 cores
    # (9.6-21.1 s before); the engine was idle 0.7-1.7 s after (goal 2 s); the app's RSS
    # ended 18-21% up, 3 s after the engine idled (198 -> 235-242 MiB; 48% before
    # housekeeping; goal 10%). These bounds catch starvation and a leak.
    assert len(waits) == 9 and max(waits) < 30, waits
    assert len(page_waits) == 3 and max(page_waits) < 90, page_waits
    assert len(page_firsts) == 3 and max(page_firsts) < max(page_waits), page_firsts
    assert rss_after < rss_before * 2
    assert all(len(history) == 6 for history in histories.values()), histories
    saved = json.loads(path.read_text())["messages"]
    assert [m["content"] for m in saved if m["role"] == "user"] == [
        f"Browser turn {n}" for n in range(3)
    ]
    assert len(saved) == 6
    assert tally["oversized"] and tally["refused_413"] == tally["oversized"]
    assert tally["status"] > 20 and tally["long_history"] and tally["greedy_refused"]
    assert took < SOAK_SECONDS + 120


@pytest.mark.parametrize(
    "name, data, said",
    [
        ("complete", ["a\ud800", 5, *GREEDY.values()], "The prompt holds a lone surrogate"),
        ("chat", ["a\ud800", "[]", "", "fold", "", 5, *GREEDY.values()], "The message holds"),
        ("render", ['[{"role": "user", "content": "\\ud800"}]', "fold", True],
         "message 1: &#x27;content&#x27; holds a lone surrogate|message 1: 'content' holds"),
        ("complete_json", ["Hi", 5, *GREEDY.values(), 123, 0, False], "stop must be text"),
        ("complete_json", ["Hi", 5, *GREEDY.values(), {"a": 1}, 0, False], "stop must be text"),
        ("chat", ["Hi", "[" * 30_000 + "]" * 30_000, "", "fold", "", 5, *GREEDY.values()],
         "nested too deeply"),
        ("complete", ["Hi", 5, 1e-300, 1.0, 0, 1.0, 1], "temperature .* float32"),
        ("complete", ["Hi", 5, 0.5, 1e-300, 0, 1.0, 1], "top_p .* float32"),
        ("complete", ["Hi", 5, 0.5, 1.0, 0, 1e-300, 1], "repetition_penalty .* float32"),
    ],
)  # fmt: skip
def test_p7_each_odd_input_gets_one_clear_message_naming_it(server, name, data, said):
    # Before: "Something went wrong" for most, "Generation failed inside the engine" for 1e-300,
    # and stop={"a": 1} was taken as the stop string "a".
    import re

    url, _ = server
    status, event_id = call(url, name, data)
    assert status == 200, event_id
    kind, out = result(url, name, event_id)
    assert kind == "error"
    assert re.search(said, out["error"]), out["error"]


def test_p4_behind_a_proxy_each_visitor_is_their_own_client():
    """On a Space every request comes from the proxy: the address it appended to
    X-Forwarded-For tells visitors apart, and what a client wrote there before is ignored. With
    no proxy in front (issue 34, item 3) the header is ignored: one client wrote twenty
    addresses there and filled the queue."""
    from types import SimpleNamespace

    from starlette.datastructures import Headers

    from playground.ui.guard import client_of

    def request(host, *forwarded):
        headers = Headers(raw=[(b"x-forwarded-for", f.encode()) for f in forwarded])
        return SimpleNamespace(client=SimpleNamespace(host=host), headers=headers)

    on_a_space = 1
    assert client_of(request("10.0.0.5"), on_a_space) == "10.0.0.5"  # no header: the peer
    assert client_of(request("10.0.0.5", "203.0.113.7"), on_a_space) == "203.0.113.7"
    assert client_of(request("10.0.0.5", "198.51.100.1"), on_a_space) != client_of(
        request("10.0.0.5", "203.0.113.7"), on_a_space
    )
    # A forged first entry does not make one client many: the proxy's entry is last...
    assert client_of(request("10.0.0.5", "1.2.3.4, 203.0.113.7"), on_a_space) == "203.0.113.7"
    # ...also when the client sent a header line of its own before the proxy's.
    assert client_of(request("10.0.0.5", "1.2.3.4", "203.0.113.7"), on_a_space) == "203.0.113.7"
    assert client_of(request("10.0.0.5", ""), on_a_space) == "10.0.0.5"
    # Two proxies: the outer one's entry, the second from the end.
    assert client_of(request("10.0.0.5", "1.2.3.4, 203.0.113.7, 10.0.0.9"), 2) == "203.0.113.7"
    # No proxy: whatever the header says, the peer's address.
    for forged in ("203.0.113.7", "1.2.3.4, 203.0.113.7"):
        assert client_of(request("10.0.0.5", forged), 0) == "10.0.0.5"


def test_routes_around_the_queue_and_the_deep_link_route_are_closed(server):
    # Issue 34, items 9 and 12: off a Space Gradio ran /run/ calls without the queue (eight
    # /run/compare calls from one client ran at once), and /gradio_api/deep_link wrote any
    # session's state to disk (117 MB from one client in 9 s).
    url, _ = server
    with http() as client:
        for path in ("gradio_api/run/complete", "gradio_api/api/complete"):
            response = client.post(f"{url}{path}", json={"data": ["Hi", 5, *GREEDY.values()]})
            assert response.status_code == 404, (path, response.text[:200])
        status, event_id = call(url, "status", [])  # the queued way still works
        assert status == 200 and result(url, "status", event_id)[0] == "complete"
        deep = client.get(f"{url}gradio_api/deep_link", params={"session_hash": "x"})
        assert deep.status_code == 404


def test_one_clients_flood_of_renders_leaves_room_for_other_visitors(settings, genai_engine):
    # Issue 34, item 7: 72 queued /render calls from one client refused new visitors' page
    # loads ("The server is busy") for about 20 s. Once the queue is half full, one client may
    # have only its share of the non-generating places.
    from concurrent.futures import ThreadPoolExecutor

    from playground.ui import build_demo

    demo = build_demo(genai_engine, settings.with_(queue_size=8))  # 32 places for the others
    url = serve(demo, settings)
    try:
        # Distinct turns: a render that takes a while, so the flood stays queued.
        turns = [{"role": "user" if i % 2 == 0 else "assistant", "content": chr(97 + i % 26)}
                 for i in range(2000)]  # fmt: skip
        body = [json.dumps(turns), "fold", True]
        with ThreadPoolExecutor(16) as pool:
            flood = [pool.submit(call, url, "render", body, "127.0.0.2") for _ in range(120)]

            def refused():
                return [f.result()[1] for f in flood if f.done() and f.result()[0] != 200]

            wait_until(refused, what="the flood to fill what it may")
            status, event_id = call(url, "status", [], "127.0.0.3")  # another visitor's page
            assert status == 200, event_id  # while the flood is queued
            assert "You already have" in str(refused()[0])
        assert result(url, "status", event_id, "127.0.0.3")[0] == "complete"
    finally:
        demo.close()


def test_p2_refused_inputs_are_not_kept(tmp_path):
    # Issue 34, item 6: Gradio keeps each session's last inputs, and every API call makes a
    # session; 1,200 /render calls of 1.0 MB, refused by the app's own length check, grew the
    # app from 632 to 1,994 MB for good (here 300 grew it from 207 to 644 MB, +210%). Sessions
    # that hold no work are now few (`guard.VisitorsFirst`).
    import subprocess
    import sys

    from tests.conftest import ROOT, free_port, wait_for_page

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "app.py", "--model", "tiny-random", "--port", str(port)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_for_page(url, server)
        app = psutil.Process(server.pid)
        refused = ["x" * 1_000_000, "fold", True]

        def render() -> None:
            status, event_id = call(url, "render", refused)
            kind, out = result(url, "render", event_id)
            assert (status, kind) == (200, "error") and "the limit is 65536" in out["error"]

        for _ in range(3):  # Gradio's and the app's first-call allocations
            render()
        start = app.memory_info().rss
        for _ in range(300):
            render()
        ended = time.monotonic()
        # Kept or only freed? Freed memory goes back once the app is quiet (`housekeeping`):
        # right after the calls RSS stood at +17%, a second later at 0%.
        wait_until(lambda: app.memory_info().rss < 1.1 * start, seconds=15, what="RSS back")
        grown = app.memory_info().rss / start - 1
        print(f"P2: 300 refused 1 MB /render calls: RSS {start / MB:.0f} MB, then {grown:+.1%} "
              f"{time.monotonic() - ended:.1f} s after the last")  # fmt: skip
    finally:
        server.terminate()
        server.wait(timeout=30)
