"""What keeps one client from wiping, blocking or starving the others, around Gradio.

Owns:
* `BodyLimit`, a plain ASGI middleware that answers 413 to a request whose Content-Length is over
  the limit, and to one whose streamed (chunked) body grows past it, without reading the rest:
  Gradio stores each input in the session's copy of the config before the app's own character
  checks run, so a refused 100 MB string would otherwise stay in memory;
* `FairAdmission`, the gate in front of Gradio's queue: events that do not generate are never
  refused for a queue full of generations, and one client (by IP address) has at most its share
  of the generation places, running or waiting;
* `VisitorsFirst`, Gradio's session LRU, which keeps few sessions that hold no work (API calls,
  pages never used) and, when full, evicts from the client holding the most sessions.
Gradio's queue and session holder are its internals (6.31): `install` names every use of them.
Does not own: the limits themselves (`settings`), or the checks of each value (`session`).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, MutableMapping
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs

from gradio.exceptions import Error
from gradio.server_messages import ProcessCompletedMessage
from gradio.state_holder import SessionState, StateHolder
from gradio.utils import error_payload

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class BodyLimit:
    """Refuse request bodies over `limit` bytes with 413 and one clear message."""

    def __init__(self, app: Callable, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.limit:
            await self.refuse(send, declared)
            return
        await self.counted(scope, receive, send)

    async def counted(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on, counting its body as it streams in: past the limit, the app
        is told the client has gone and the client gets the 413."""
        seen, over, started = 0, False, False

        async def limited_receive() -> Message:
            nonlocal seen, over
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    over = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if over:
                return  # the app's answer to a body it never got whole
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not over:
                raise
        if over and not started:
            await self.refuse(send, seen)

    async def refuse(self, send: Send, size: int) -> None:
        message = (
            f"The request body is over {self.limit} bytes (at least {size} were sent); "
            "the limit keeps one request from holding the server's memory."
        )
        body = json.dumps({"error": message}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class Readers:
    """The result streams being read now: by session (`/queue/data`, the page's and
    gradio_client's) and by event (`/call/NAME/ID`, raw HTTP's)."""

    def __init__(self) -> None:
        self.sessions: Counter[str] = Counter()
        self.events: Counter[str] = Counter()

    def reading(self, session: str, event_id: str = "") -> bool:
        """Whether a stream of the session's, or of the event's, is open (a /call's session
        is its event id when the caller gave none)."""
        return self.sessions[session] > 0 or self.events[event_id or session] > 0


CALL_STREAM = re.compile(r"/call/(?:v2/)?[^/]+/([^/]+)/?$")


class ReaderCount:
    """ASGI middleware counting, in `readers`, the result streams open now."""

    def __init__(self, app: Callable, readers: Readers) -> None:
        self.app, self.readers = app, readers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        counter, key = self.stream_of(scope)
        if counter is None:
            await self.app(scope, receive, send)
            return
        counter[key] += 1
        try:
            await self.app(scope, receive, send)
        finally:
            counter[key] -= 1
            if counter[key] <= 0:
                del counter[key]

    def stream_of(self, scope: Scope) -> tuple[Counter[str] | None, str]:
        if scope["type"] != "http" or scope.get("method") != "GET":
            return None, ""
        path = scope.get("path", "")
        if path.endswith("/queue/data"):
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            return self.readers.sessions, (query.get("session_hash") or [""])[0]
        call = CALL_STREAM.search(path)
        return (self.readers.events, call.group(1)) if call else (None, "")


class FairAdmission:
    """Admits events to Gradio's queue (wrapping `Queue.push`).

    Generations: up to `places` in all, running or waiting. One client (IP address) may take
    free slots as it likes (a class behind one address, four tabs of one visitor), but once
    every one of the engine's `slots` is in use it may hold at most `per_client`: past that its
    new ones are refused, so a visitor who arrives behind a greedy client gets the next slot
    that frees. Any other event is admitted up to `other` waiting, apart from the generations,
    so a page still loads when every generation place is taken; once half of those are taken,
    one client may have at most `other_per_client` of them running or waiting, so its flood of
    renders cannot fill them (72 queued /render calls refused new visitors' page loads for 20 s:
    issue 34), while a class behind one address loads its pages as before on a quiet server."""

    def __init__(
        self,
        queue: Any,
        group: str,
        *,
        slots: int,
        places: int,
        per_client: int,
        other: int,
        proxy_hops: int = 0,
    ) -> None:
        self.queue, self.group, self.proxy_hops = queue, group, proxy_hops
        self.slots, self.places, self.per_client, self.other = slots, places, per_client, other
        self.other_per_client = max(4, other // 8)
        self.owners: dict[str, str] = {}  # session -> client, for `VisitorsFirst`
        # client -> its events' ids, generating ones (True) and the others (False)
        self.held: dict[bool, dict[str, set[str]]] = {True: {}, False: {}}
        self.readers = Readers()  # `ReaderCount` fills it
        self.watching: asyncio.Task | None = None
        self.unread_results: dict[str, float] = {}  # session -> since when nobody reads them
        self.admitted = 0  # events taken in so far, for `housekeeping`
        self.original = queue.push
        queue.push = self.push
        self.original_get_events = queue.get_events
        queue.get_events = self.get_events

    async def push(self, body: Any, request: Any, username: str | None) -> tuple:
        if self.watching is None:
            self.watching = asyncio.get_running_loop().create_task(self.end_unread())
        generating, client = self.generates(body), client_of(request, self.proxy_hops)
        refusal = self.refusal(generating, client)
        if refusal:
            return False, refusal, "queue_full"
        admitted, event_id, state = await self.original(body, request, username)
        if admitted:
            self.admitted += 1
            self.held[generating].setdefault(client, set()).add(event_id)
            if body.session_hash:
                self.owners[body.session_hash] = client
        return admitted, event_id, state

    def get_events(self) -> Any:
        """Gradio's next events to run, the engine's group first put in turn order: a free
        slot goes to the waiting generation whose client has the fewest running, then the
        longest waiting (Gradio's own order is arrival). A visitor who arrived behind a greedy
        client's queued replies no longer waits for them (issue 34's soak)."""
        line = self.queue.event_queue_per_concurrency_id.get(self.group)
        limit = line.concurrency_limit if line is not None else None
        if (
            line is not None
            and len(line.queue) > 1
            and (limit is None or line.current_concurrency < limit)
        ):
            line.queue.sort(key=self.turn_order())  # stable: arrival order within a rank
        return self.original_get_events()

    def turn_order(self) -> Callable[[Any], int]:
        """An event's rank: how many generations its client has running now."""
        client_of_event = {e: c for c, ids in self.held[True].items() for e in ids}
        running = Counter(client_of_event.get(e._id) for e in self.running_generations())
        return lambda event: running[client_of_event.get(event._id)]

    def live(self) -> set[str]:
        """The events Gradio is running (for a client still there) or holding in line. Not its
        `event_ids_to_events`, which can keep a cancelled event for good: in the soak, a page's
        event stayed there 27 s after the page's /cancel and close, with no thread running it,
        and counted against its client, who was then refused ("Queue is full")."""
        return {e._id for e in self.live_events()}

    def live_events(self) -> list[Any]:
        lines = list(self.queue.event_queue_per_concurrency_id.values())
        return self.running_events() + [e for line in lines for e in list(line.queue)]

    def running_events(self) -> list[Any]:
        return [e for job in list(self.queue.active_jobs) if job for e in job if e.alive]

    def sessions_in_use(self) -> set[str]:
        """The sessions with an event running or waiting (`VisitorsFirst` keeps them)."""
        return {e.session_hash for e in self.live_events()}

    async def end_unread(self) -> None:
        """End generations that nobody reads: a /call client that posted and went away held
        its slot to the end of a 6,000-token reply (issue 34, item 2). One unread for
        `UNREAD_GRACE_S` is dropped as a disconnect is (Gradio's `clean_events`): the reply
        ends at its next step and its slot and KV reservation are freed. Results nobody came
        for in `UNREAD_KEEP_S` are dropped too (Gradio keeps them for up to 2,000 sessions)."""
        unread_since: dict[str, float] = {}
        while True:
            await asyncio.sleep(UNREAD_CHECK_S)
            now, running = time.monotonic(), self.running_generations()
            for event in running:
                since = unread_since.setdefault(event._id, now)
                if self.readers.reading(event.session_hash, event._id):
                    unread_since[event._id] = now
                elif now - since > UNREAD_GRACE_S:
                    await self.queue.clean_events(event_id=event._id)
                    self.tell_a_late_reader(event)
            for gone in set(unread_since) - {e._id for e in running}:
                del unread_since[gone]
            self.drop_unread_results(now)

    def tell_a_late_reader(self, event: Any) -> None:
        """The one message a reader who comes after all gets for an ended unread event (else
        its stream would wait forever for a completion that never comes)."""
        why = (f"This reply was ended: nobody read its results within {UNREAD_GRACE_S:g} s of "
               "its start. Read a call's results as soon as you post it.")  # fmt: skip
        message = ProcessCompletedMessage(
            output=error_payload(Error(why), True), success=False, event_id=event._id
        )
        messages = self.queue.pending_messages_per_session.get(event.session_hash)
        if messages is not None:
            messages.put_nowait(message)

    def drop_unread_results(self, now: float) -> None:
        """Forget the results of sessions with no event live and nobody reading them since
        `UNREAD_KEEP_S` ago: a /call's reader comes right after its post, if ever (the soak's
        unread calls grew the app by 100 MB before)."""
        queue, live = self.queue, self.sessions_in_use()
        waiting = self.unread_results
        for session in list(queue.pending_messages_per_session.keys()):
            if session in live or self.readers.reading(session):
                waiting.pop(session, None)
            elif now - waiting.setdefault(session, now) > UNREAD_KEEP_S:
                queue.pending_messages_per_session.pop(session, None)
                queue.pending_event_ids_session.pop(session, None)
                del waiting[session]
        for gone in set(waiting) - set(queue.pending_messages_per_session.keys()):
            del waiting[gone]

    def running_generations(self) -> list[Any]:
        return [e for e in self.running_events() if e.fn.concurrency_id == self.group]

    def generates(self, body: Any) -> bool:
        fn = self.queue.blocks.fns.get(body.fn_index) if body.fn_index is not None else None
        return fn is not None and fn.concurrency_id == self.group

    def refusal(self, generating: bool, client: str) -> str:
        live = self.live()
        for held in self.held.values():
            for key in list(held):
                held[key] &= live
                if not held[key]:
                    del held[key]
        held = self.held[generating]
        mine = len(held.get(client, ()))
        if not generating:
            queues = self.queue.event_queue_per_concurrency_id.items()
            waiting = sum(len(q.queue) for group, q in queues if group != self.group)
            if waiting >= self.other // 2 and mine >= self.other_per_client:
                return (
                    f"You already have {mine} requests running or waiting and the server is "
                    "busy; please wait for them before sending more."
                )
            return (
                "The server is busy; please try again in a moment." if waiting >= self.other else ""
            )
        taken = sum(map(len, held.values()))
        if mine >= self.per_client and taken >= self.slots:
            return (
                f"You already have {mine} replies running or waiting and every slot is in use: "
                f"then one client may have at most {self.per_client}, so that every visitor "
                "gets a turn. Wait for one to end, or stop it."
            )
        if taken >= self.places:
            return (
                f"The queue is full: all {self.places} places for replies are taken, and each "
                "lasts up to a few minutes. Please try again shortly."
            )
        return ""


# How long a running generation may go with nobody reading its results: a page or client
# opens its stream one round trip after sending (milliseconds here, a few hundred on a phone),
# and stays on it while the reply streams. Checked every UNREAD_CHECK_S.
UNREAD_GRACE_S = 1.5
UNREAD_CHECK_S = 0.25
UNREAD_KEEP_S = 30.0


def client_of(request: Any, proxy_hops: int) -> str:
    """Who a request is from: its IP address (an API client can invent a session each call).

    Behind `proxy_hops` reverse proxies (1 on a Hugging Face Space) every request comes from
    the nearest, so the address the outermost saw counts: X-Forwarded-For's entry that many
    from the end, of all its header lines in order (each proxy appends one). Entries before it
    are whatever the client sent, so they are never trusted; with no proxy (0) the header is
    ignored, since any client could write it and become many clients."""
    client = getattr(request, "client", None)
    peer = client.host if client else ""
    if not proxy_hops:
        return peer
    headers = getattr(request, "headers", None) or {}
    lines = headers.getlist("x-forwarded-for") if hasattr(headers, "getlist") else [
        headers.get("x-forwarded-for", "")]  # fmt: skip
    forwarded = [a.strip() for line in lines for a in str(line).split(",") if a.strip()]
    return forwarded[-proxy_hops] if len(forwarded) >= proxy_hops else peer


class VisitorsFirst(StateHolder):
    """Gradio's session holder, evicting so that no other client's calls cost a visitor work.

    A session holds work when one of its gr.State values differs from its start (a
    conversation, a running reply's Control). When a new session comes in:
    * sessions holding none (every API call makes one, and Gradio keeps its inputs: 1,200
      refused 1 MB /render calls grew the app from 632 to 1,994 MB, issue 34) are kept only
      `IDLE_SESSIONS` at a time, the least recently used going first;
    * past `capacity`, those go first; then the least recently used of the client holding the
      most sessions: 1,200 calls to a stateful handler (Stop, each from a fresh session) evicted
      a visitor's chat before, since each of them held state too.
    A session with an event running or waiting (`in_use`) is never evicted: a page's session
    is new, and holds no work, while its first handler runs, and the soak's flood of API calls
    evicted it there (the reply then found "the conversation is empty").
    `owners` names each session's client; `FairAdmission` fills it as events come in."""

    IDLE_SESSIONS = 4

    def __init__(self, owners: dict[str, str], in_use: Callable[[], set[str]]) -> None:
        super().__init__()
        self.owners, self.in_use = owners, in_use

    def __getitem__(self, session_id: str) -> SessionState:
        if session_id not in self.session_data:
            self.session_data[session_id] = LightSession(self.blocks)
        return super().__getitem__(session_id)

    def update(self, session_id: str) -> None:
        with self.lock:
            sessions: OrderedDict = self.session_data
            if session_id in sessions:
                sessions.move_to_end(session_id)
            if session_id in self.time_last_used:
                return  # a known session: nothing new to make room for
            if len(self.owners) > 2 * self.capacity:  # events whose session never came
                for gone in [k for k in self.owners if k not in sessions]:
                    del self.owners[gone]  # in place: FairAdmission writes to this dict
            kept = self.in_use() | {session_id}
            idle = [k for k, s in sessions.items() if k not in kept and not holds_work(s)]
            # Past IDLE_SESSIONS, or past capacity: idle sessions go before any with work.
            excess = max(len(idle) - self.IDLE_SESSIONS, len(sessions) - self.capacity)
            for evicted in idle[: max(0, excess)]:
                self.evict(evicted)
            while len(sessions) > self.capacity:
                self.evict(self.crowded(kept))

    def crowded(self, kept: set[str]) -> str:
        """The least recently used session of the client holding the most, not one of `kept`
        (unless every session is kept: then the least recently used, as Gradio's)."""
        others = [k for k in self.session_data if k not in kept] or list(self.session_data)
        counts = Counter(self.owners.get(k, "") for k in others)
        most = max(counts, key=counts.__getitem__)
        return next(k for k in others if self.owners.get(k, "") == most)

    def evict(self, session_id: str) -> None:
        del self.session_data[session_id]
        self.time_last_used.pop(session_id, None)
        self.owners.pop(session_id, None)


class LightSession(SessionState):
    """Gradio's session state, less its copy of every component's config, which only deep
    links read (a route closed here: `close_unused_routes`); Gradio fills in a component's
    config when an event first updates it. Building the copy for the app's 319 blocks took
    23 ms, holding the GIL, for each new session, and every API call makes one: under issue
    34's soak that was two thirds of the app's GIL time (py-spy), and every page event
    waited on it."""

    def __init__(self, blocks: Any) -> None:
        # Gradio's own set-up, with the config copied for no block.
        super().__init__(SimpleNamespace(default_config=blocks.default_config, blocks={}))


def holds_work(session: Any) -> bool:
    """Whether a Gradio session holds anything a visitor would lose: a gr.State value that is
    no longer its component's start value."""
    blocks = session.blocks_config.blocks
    return any(
        key in blocks and value != getattr(blocks[key], "value", None)
        for key, value in session.state_data.items()
    )


# Gradio routes this app does not use, closed. The deep-link route writes any session's whole
# component state to disk on request, and nothing prunes it: one client made and deep-linked
# 100 sessions in 9 s and grew the upload folder from 1 to 117 MB (issue 34, item 12).
UNUSED_ROUTES = ("/gradio_api/deep_link",)


def close_unused_routes(app: Any) -> None:
    """Take `UNUSED_ROUTES` off a launched app (they answer 404)."""
    app.router.routes[:] = [
        r for r in app.router.routes if getattr(r, "path", "") not in UNUSED_ROUTES
    ]


def keep_visitors(app: Any, blocks: Any, admission: FairAdmission) -> None:
    """Give a launched app the `VisitorsFirst` session holder, keeping any sessions it has;
    `admission` tells it whose each session is."""
    holder = VisitorsFirst(admission.owners, admission.sessions_in_use)
    holder.session_data.update(app.state_holder.session_data)
    holder.set_blocks(blocks)
    app.state_holder = holder
