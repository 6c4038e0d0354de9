"""A broken or hostile OpenAI-compatible completions server: the remote engine's peer in the
tests of its bounds (issue 34, item 10). Stdlib only, so it starts in a blink, and in a process
of its own, so the app's CPU and memory are measured alone.

`python -m tests.hostile_server MODE PROBE_TOKENS` prints its port, then serves until killed.
It lists one model, answers the engine's start-up probe with PROBE_TOKENS prompt tokens, and
streams every other completion as MODE says, after the three tokens of GOOD_START:

- `huge-chunk`: one chunk of 64 MB of text (without a newline in it), then the end;
- `long-line`: one line of 64 MB with no newline, then it hangs up;
- `alternatives`: tokens of one character, each with 20,000 alternatives;
- `wordy`: chunks of 200,000 characters of text each, without end;
- `endless`: chunks with no text, without end (a server that ignores max_tokens);
- `context`: the end, with finish_reason "length", as a server at its context size.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODEL = "hostile"
SERVE_S = 120  # a stream's longest life: no test waits this long, and none leaves it running
GOOD_START = "Hi!"


def event(data: dict[str, Any]) -> bytes:
    # llama-cpp-python's server (sse-starlette) ends its lines with CRLF.
    return b"data: " + json.dumps(data).encode() + b"\r\n\r\n"


def chunk(text: str, logprobs: dict[str, Any] | None = None, finish: str | None = None) -> bytes:
    choice = {"text": text, "index": 0, "logprobs": logprobs, "finish_reason": finish}
    return event({"id": "c", "object": "text_completion", "model": MODEL, "choices": [choice]})


HUGE = 64 * 2**20
GOOD = b"".join(chunk(c) for c in GOOD_START)
END = chunk("", finish="length") + b"data: [DONE]\r\n\r\n"
ALTERNATIVES = {f"t{i}": -float(i) for i in range(20_000)}
ONE_TOKEN = {"tokens": ["a"], "token_logprobs": [-0.1], "top_logprobs": [ALTERNATIVES]}
ENDLESS = {
    "alternatives": chunk("a", ONE_TOKEN),
    "wordy": chunk("w" * 200_000),
    "endless": chunk(""),
}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    mode = "endless"
    probe_tokens = 1

    def log_message(self, *args: Any) -> None:  # quiet: the test's output stays readable
        pass

    def reply(self, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self.reply({"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "me"}]})

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if not request.get("stream"):
            choice = {"text": "a", "index": 0, "logprobs": None, "finish_reason": "length"}
            usage = {"prompt_tokens": self.probe_tokens, "completion_tokens": 1,
                     "total_tokens": self.probe_tokens + 1}  # fmt: skip
            self.reply({"id": "p", "object": "text_completion", "model": MODEL,
                        "choices": [choice], "usage": usage})  # fmt: skip
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        with contextlib.suppress(OSError):  # the client hung up: what a bounded client does
            self.wfile.write(GOOD)
            self.stream()

    def stream(self) -> None:
        if self.mode == "context":
            self.wfile.write(END)
        elif self.mode in ("huge-chunk", "long-line"):
            self.wfile.write(b'data: {"choices": [{"index": 0, "text": "')
            for _ in range(HUGE // 2**20):
                self.wfile.write(b"x" * 2**20)
            if self.mode == "huge-chunk":
                self.wfile.write(b'"}]}\r\n\r\n' + END)
        else:
            deadline = time.monotonic() + SERVE_S
            while time.monotonic() < deadline:
                self.wfile.write(ENDLESS[self.mode])


def main() -> None:
    Handler.mode, Handler.probe_tokens = sys.argv[1], int(sys.argv[2])
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
