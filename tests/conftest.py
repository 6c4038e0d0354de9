"""Shared fixtures: the tiny random Gemma-2 built offline, and engines on it.

The model cache lives in the repo's git-ignored `.cache/` unless PLAYGROUND_CACHE says otherwise,
so a fresh clone builds the tiny model once (seconds) and every test reuses it.
"""

import os
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("PLAYGROUND_CACHE", str(ROOT / ".cache"))
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

# Debian's Chromium, driven by Playwright; no browser is ever downloaded.
CHROMIUM = "/usr/bin/chromium"
# Without the background-networking flags Chromium keeps trying to reach the (closed) network.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
]  # fmt: skip

# Greedy ids of the two engines match only in f32 (this CPU defaults to bf16 and a u8 KV cache).
F32 = {"INFERENCE_PRECISION_HINT": "f32", "KV_CACHE_PRECISION": "f32"}


@pytest.fixture(scope="session")
def settings():
    from playground.settings import load_settings

    # Prompt lookup on: space.yaml turns it off for the Space's memory, the tests exercise it.
    return load_settings(model="tiny-random", ov_config=F32, prompt_lookup=True)


@pytest.fixture(scope="session")
def tiny_folder(settings) -> Path:
    from playground.models import resolve_model

    return resolve_model("tiny-random", settings.cache_dir)


@pytest.fixture(scope="session")
def tokenizer(tiny_folder):
    from playground.tokens import Tokenizer

    return Tokenizer(tiny_folder)


def _engine(settings, kind):
    from playground.engines import open_engine

    engine, notice = open_engine(settings.with_(engine=kind))
    assert notice is None
    return engine


@pytest.fixture(scope="session")
def genai_engine(settings, tiny_folder):
    return _engine(settings, "genai")


@pytest.fixture(scope="session")
def optimum_engine(settings, tiny_folder):
    return _engine(settings, "optimum")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_page(url, server, seconds=240):
    """The /config page of a starting app server (a Popen with stdout piped)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"app.py exited: {server.stdout.read()}")
        try:
            with urllib.request.urlopen(url + "config", timeout=5) as response:
                return response.read().decode()
        except OSError:
            time.sleep(1)
    pytest.fail("app.py did not start")


def serve(demo, settings):
    """Launch `demo` on 127.0.0.1 (a real Gradio server, in this process); return its URL."""
    from playground.ui import launch

    port = free_port()
    launch(
        demo,
        settings,
        server_name="127.0.0.1",
        server_port=port,
        prevent_thread_lock=True,
        quiet=True,
    )
    return f"http://127.0.0.1:{port}/"


def app_server(engine: str, doc: str, model: str | None = None):
    """A session fixture: the real app on the engine fixture named `engine` (serving `model`
    where given), over HTTP for gradio_client and the browser; yields its URL."""

    @pytest.fixture(scope="session")
    def url(request, settings):
        from playground.ui import build_demo

        served = settings.with_(model=model) if model else settings
        demo = build_demo(request.getfixturevalue(engine), served)
        yield serve(demo, settings)
        demo.close()

    url.__doc__ = doc
    return url


app_url = app_server("genai_engine", "The real app on the tiny model.")


def page_on(url: str, open_with=None, widths=None):
    """A fixture: a Chromium page of the app at the URL fixture named `url`, opened with
    `open_with` (`helpers.browser.open_page` by default; at each of `widths`, when given), and
    a screenshot of it into artifacts/ after the test."""

    def page(browser, request):
        from tests.helpers.browser import open_page, screenshot

        at = request.getfixturevalue(url)
        opener = open_with or open_page
        width = getattr(request, "param", None)
        page = opener(browser, at) if width is None else opener(browser, at, width)
        yield page
        screenshot(page, request)

    if widths:
        return pytest.fixture(params=widths, ids=[f"{w}px" for w in widths])(page)
    return pytest.fixture(page)


@pytest.fixture(scope="session")
def client(app_url):
    from gradio_client import Client

    return Client(app_url, verbose=False)


def pace(engine, seconds_per_token: float):
    """Slow the real engine to a real 9B model's pace on a CPU, so a person (or a test) has
    time to press Stop: each step of its continuous-batching pipeline, one token for every
    running request, waits first (a hook in the engine's process)."""
    engine.process.set_hooks(delay_s=seconds_per_token)
    return engine


def paced_tiny_engine(settings, tiny_folder, slots: int):
    """A real engine on the tiny model (not the cached one) with `slots` generations at once,
    paced at about 50 tokens/s."""
    from playground.engines import load_engine

    engine = load_engine(
        tiny_folder,
        "genai",
        cache_dir=settings.cache_dir,
        ov_config=dict(settings.ov_config),
        max_concurrent=slots,
    )
    return pace(engine, 0.02)


@pytest.fixture(scope="session")
def paced_engine(settings, tiny_folder):
    """One slot: a second visitor waits in Gradio's queue, which the queue tests need."""
    return paced_tiny_engine(settings, tiny_folder, slots=1)


@pytest.fixture(scope="session")
def batched_engine(settings, tiny_folder):
    """Four slots: visitors who arrive together decode together."""
    return paced_tiny_engine(settings, tiny_folder, slots=4)


batched_app_url = app_server("batched_engine", "The app on the paced engine with four slots.")
paced_app_url = app_server("paced_engine", "The app on the paced engine with one slot.")


@pytest.fixture(scope="session")
def tutor_engine(settings):
    """The real engine on the shipped tiny-tutor, for tests of what the model does."""
    return _engine(settings.with_(model="tiny-tutor"), "genai")


tutor_app_url = app_server("tutor_engine", "The real app serving tiny-tutor.", "tiny-tutor")


@pytest.fixture(scope="session")
def tutor_client(tutor_app_url):
    """gradio_client on the real app serving tiny-tutor."""
    from gradio_client import Client

    return Client(tutor_app_url, verbose=False)


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium for one test module."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


# A raw prompt (no template) that tiny-tutor continues on llama.cpp's server, greedily, with one
# character to any limit, and how that reply starts: the tests that stop or kill a reply
# mid-stream need one that never ends. Recipe 4's model ends "Hello" after 13 tokens there;
# "Hi" gives "cccc…" (checked with /completions, temperature 0, 80 tokens: finish "length").
ENDLESS_RAW, ENDLESS_START = "Hi", "ccc"


def start_llama_server(threads: int = 1):
    """llama-cpp-python's server on tiny-tutor's GGUF (`playground.llama_server`)."""
    from playground import llama_server

    return llama_server.start(threads=threads)


@pytest.fixture(scope="module")
def fallback_url(settings, tutor_engine):
    """The app as `python app.py` starts it when the default model can't be had."""
    from playground.models import fallback_notice
    from playground.settings import Settings
    from playground.ui import build_demo
    from tests.helpers.offline import offline_error

    notice = fallback_notice(Settings().model, "tiny-tutor", offline_error())
    tutor_engine.warm_up()  # as app.py does: the Model tab shows the speed it measured
    demo = build_demo(tutor_engine, settings.with_(model="tiny-tutor"), notice)
    yield serve(demo, settings)
    demo.close()


@pytest.fixture
def open_at(browser, fallback_url, request):
    """A page of the fallback app at a given width; screenshotted when the test ends."""
    from tests.helpers.browser import TIMEOUT_MS, screenshot

    pages = []

    def open_at(width):
        page = browser.new_page(viewport={"width": width, "height": 900})
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(fallback_url)
        page.wait_for_selector("#message textarea", state="attached")
        pages.append(page)
        return page

    yield open_at
    for page in pages:
        screenshot(page, request)
