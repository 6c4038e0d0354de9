"""What every tab shares: the engine's concurrency group, error translation and CSS.

Owns: `engine_events` (the concurrency of every generating event), `probabilities` (the
probability view when asked for), `user_errors` (expected errors become an escaped gr.Error and
one log line; anything else a short message, with the traceback in the server log only),
`refuse` (a refusal that stops an event chain without marking any component as failed),
`write_download` (the files visitors download, pruned after an hour), `PRIVATE` (the event
option that keeps a handler out of the API), `run_with_stop`/`wire_stop` (a run that a Stop
button can end, as the raw tab and the notebook wire it), and the page's CSS.
Does not own: any component or handler of a tab.
"""

from __future__ import annotations

import inspect
import logging
import tempfile
import time
from collections.abc import Callable, Iterator
from functools import wraps
from pathlib import Path
from typing import Any

import gradio as gr

from playground import display
from playground.display import toast_text
from playground.errors import UserError
from playground.session import Control, Playground

log = logging.getLogger("playground.ui")

PRIVATE = {"api_visibility": "private"}  # a UI event, not an API endpoint

# On a phone Gradio's sidebar covers the whole page: start with it closed there.
CLOSE_SIDEBAR_ON_PHONES = """() => {
  if (window.innerWidth <= 768) {
    document.querySelector('.sidebar.open .toggle-button')?.click();
  }
}"""
ENGINE_GROUP = "engine"  # every event that generates shares the engine's slots, app-wide
DOWNLOADS = Path(tempfile.gettempdir()) / "gemma2-playground"
# Gradio copies a returned file into its own cache at once; the original is only kept this long,
# and Gradio's copy as long (`delete_cache` in build_demo), so a Space running for weeks does not
# fill its disk one conversation at a time.
DOWNLOAD_AGE_S = 3600
# The folder is walked at most this often: every chat turn writes a download, and a busy Space's
# hour of them is thousands of files.
PRUNE_EVERY_S = 300
_next_prune = 0.0  # the app's own housekeeping clock, the same for every visitor


def write_download(relative: str, text: str) -> Path:
    """Write a file for a visitor to download at `DOWNLOADS / relative`, first removing the files
    there older than `DOWNLOAD_AGE_S` (at most every `PRUNE_EVERY_S`); return its path."""
    global _next_prune
    now = time.time()
    if now >= _next_prune:
        _next_prune = now + PRUNE_EVERY_S
        _prune(now - DOWNLOAD_AGE_S)
    path = DOWNLOADS / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _prune(cutoff: float) -> None:
    for old in DOWNLOADS.glob("*/*"):
        try:
            if old.stat().st_mtime < cutoff:
                old.unlink()
                old.parent.rmdir()  # each download has a folder; fails while it holds another
        except OSError:
            pass  # another visitor's request removed it first, or the folder is not empty


def probabilities(playground: Playground, tokens: list, show: bool) -> str:
    """The probability view of a reply's tokens (`session.token_probabilities`), when the
    visitor asked for it, with the note of the engine that made them."""
    return display.probability_view(tokens if show else [], playground.engine.probability_note)


def engine_events(playground: Playground) -> dict[str, Any]:
    """Event options of everything that generates: one concurrency group, as wide as the
    engine's slots (genai decodes that many together), so the rest wait in Gradio's queue,
    where the page shows their position."""
    return {"concurrency_id": ENGINE_GROUP, "concurrency_limit": playground.engine.max_concurrent}


CSS = """
.prompt { white-space: pre-wrap; word-break: break-word; font-size: 0.9em; }
.prompt .ctl { background: #fde68a; color: #7c2d12; border-radius: 3px; padding: 0 2px; }
.prompt .nl { color: #9ca3af; }
.meter progress { width: 12em; vertical-align: middle; }
#banner { background: #fffbeb; border: 1px solid #f59e0b; border-radius: 8px; padding: 4px 8px;
  flex-wrap: nowrap; }
#banner-text { font-size: 15px; line-height: 1.4; min-width: 0; }
#banner-text .banner-head { font-weight: 600; cursor: pointer; }
#banner-text .banner-more { font-weight: 400; text-decoration: underline; color: #92400e;
  white-space: nowrap; }
#banner-text details[open] .banner-more { display: none; }
#banner-text details p { margin: 6px 0 2px; }
#banner-close { max-width: 2.5em; min-width: 2.5em; align-self: flex-start; }
.stop-note { margin: 0; padding: 4px 8px; border-left: 3px solid #f59e0b; background: #fffbeb;
  font-size: 14px; overflow-wrap: anywhere; }
#input-note:empty { display: none; }
#input-note { color: #b91c1c; }
.probs-note, .probs-eot { font-size: 0.85em; color: #4b5563; margin: 4px 0; }
.probs-eot { font-weight: 600; }
.probs-text { white-space: pre-wrap; word-break: break-word; line-height: 1.9; }
.probs .tok { position: relative; border-radius: 3px; cursor: help;
  box-shadow: inset -1px 0 0 rgba(255, 255, 255, 0.9); }
.probs .tok:hover::after, .probs .tok:focus::after {
  content: attr(data-tip); position: absolute; left: 0; top: 1.7em; z-index: 20;
  width: max-content; max-width: 18em; white-space: normal; font-size: 0.8em;
  background: #111827; color: #fff; padding: 2px 6px; border-radius: 4px;
}
.prompt ins.diff-added { background: #bbf7d0; text-decoration: underline #15803d; }
/* Compare's divergence view (display.divergence_view): its sentences, then the plot's legend. */
.divergence p { margin: 2px 0; }
.divergence .divergence-legend { font-size: 0.85em; color: #4b5563; }
.divergence-plot { display: block; border: 1px solid #d1d5db; border-radius: 4px; }
.prompt del.diff-removed { background: #fecaca; text-decoration: line-through #b91c1c; }
@media (max-width: 640px) {
  /* The banner's text is never shrunk nor clipped on a phone (issue 33): it wraps, and the
     details stay closed until tapped. */
  #banner-text { font-size: 14px; }
  #message-row { flex-wrap: wrap; }
  #message-row > * { min-width: 100% !important; }
}
"""


def user_error(error: Exception) -> gr.Error:
    """A gr.Error whose message shows as literal text (Gradio renders it as HTML)."""
    return gr.Error(toast_text(str(error)), print_exception=False)


def _translate(error: Exception, where: str) -> gr.Error:
    if isinstance(error, gr.Error):
        return error
    if isinstance(error, UserError):
        log.info("refused in %s: %s", where, error)  # expected: one line, no traceback
        return user_error(error)
    log.exception("unexpected error in %s", where)
    return gr.Error("Something went wrong on the server; please try again.", print_exception=False)


def user_errors(fn: Callable) -> Callable:
    """Expected errors become gr.Error with their message (escaped); anything else a short
    message (the traceback goes to the server log, never to the visitor)."""
    if inspect.isgeneratorfunction(fn):

        @wraps(fn)
        def stream(*args: Any, **kwargs: Any) -> Iterator[Any]:
            try:
                yield from fn(*args, **kwargs)
            except Exception as error:
                raise _translate(error, fn.__name__) from None

        return stream

    @wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as error:
            raise _translate(error, fn.__name__) from None

    return call


def refuse(error: UserError, where: str) -> gr.Error:
    """An invisible error: it stops a `.success` chain and marks no component as failed; the
    caller shows the message itself (beside the input), via `.failure`."""
    log.info("refused in %s: %s", where, error)
    return gr.Error(toast_text(str(error)), visible=False, print_exception=False)


def run_with_stop(
    trigger: Callable,
    fn: Callable,
    inputs: Any,
    outputs: Any,
    playground: Playground,
    control: gr.State,
    stop: gr.Button,
    **options: Any,
) -> Any:
    """`trigger` (a listener such as `button.click`, or a dependency's `.success`) queues
    `control` and enables `stop`, then runs `fn` in the engine's group, then disables `stop`.
    Returns the last dependency, for more `.then`s."""

    # A function of this call's own: Gradio groups events by their function (one at a time
    # unless told otherwise), so each tab keeps a group of its own, as before.
    def on_queue(control: Control) -> dict:
        # Before queueing, so a Stop pressed while queued still counts.
        control.queue()
        return gr.update(interactive=True)

    queued = trigger(on_queue, control, stop, **PRIVATE)
    ran = queued.success(fn, inputs, outputs, **engine_events(playground), **options, **PRIVATE)
    return ran.then(lambda: gr.update(interactive=False), None, stop, **PRIVATE)


def wire_stop(stop: gr.Button, control: gr.State) -> None:
    """Stop ends the run of `control` (`run_with_stop`), queued or streaming."""

    def on_stop(control: Control) -> None:  # this tab's own concurrency group, as above
        control.press_stop()

    stop.click(on_stop, control, None, **PRIVATE)
