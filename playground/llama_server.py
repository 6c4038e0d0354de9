"""llama.cpp's server, started here: the remote engine's peer in the tests and the benchmark.

Owns: starting llama-cpp-python's OpenAI-compatible server (`python -m llama_cpp.server`) on a
GGUF (tiny-tutor's by default) at a free loopback port, and waiting until it lists its model.
Does not own: talking to it (`engines.remote`), or making a GGUF (`gguf`). Only loopback: the
server never listens on another address.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

START_TIMEOUT_S = 120


def start(gguf: Path | None = None, threads: int = 1, n_ctx: int = 8192) -> tuple[Any, str]:
    """Start the server; return (its process, its base URL ending in /v1). It serves one request
    at a time: `--interrupt_requests False` queues a second request instead of cutting off the
    one streaming (its default would end one visitor's reply when another sends)."""
    from playground.tutor import GGUF

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # A pipe nobody reads would fill and stall the server: its log goes to a file.
    log = tempfile.TemporaryFile("w+")  # noqa: SIM115 (open as long as the server runs)
    gguf = gguf or GGUF
    process = subprocess.Popen(
        # The alias is the model's name in the API; by default it is the file's server path.
        [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", gguf.stem,
         "--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(n_ctx),
         "--n_threads", str(threads), "--interrupt_requests", "False"],
        stdout=subprocess.DEVNULL, stderr=log, text=True,
    )  # fmt: skip
    base_url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"llama_cpp.server exited: {log.read()[-2000:]}")
        try:
            with urllib.request.urlopen(base_url + "/models", timeout=5):
                return process, base_url
        except OSError:
            time.sleep(0.5)
    process.kill()
    raise RuntimeError(f"llama_cpp.server did not start within {START_TIMEOUT_S} s")
