"""Issue 33, "The first five minutes": what is served is always said, in plain words, and the
Raw prompt's figures and notes are true. The logic here; what a visitor sees, at 1280 and
400 px, in test_browser_first_minutes.py."""

import json
import math
import subprocess
import sys

import pytest

from playground import display
from playground.engines import NativeFigures
from playground.engines.base import tokens_per_second
from playground.models import fallback_notice
from tests.conftest import ROOT
from tests.helpers.fakes import RecordingEngine
from tests.helpers.offline import WANTED, offline_error, unavailable

# ---- the fallback notice ----------------------------------------------------------------------


def test_the_notice_says_the_cause_in_plain_words_and_names_no_exception():
    notice = fallback_notice(WANTED, "tiny-tutor", offline_error())
    assert "Error" not in notice and "LocalEntryNotFound" not in notice
    assert "could not be had" not in notice
    assert f"{WANTED} is not downloaded on this server" in notice
    assert "the Hugging Face Hub could not be reached" in notice
    assert f"`hf download {WANTED}`" in notice


def test_the_notices_first_line_is_short_and_says_who_answers_and_what_is_missing():
    head, _, details = fallback_notice(WANTED, "tiny-tutor", offline_error()).partition("\n")
    assert (
        head
        == f"You are talking to tiny-tutor, a small demo model: {WANTED} is not available here."
    )
    assert len(head) < 110  # two or three lines on a phone
    assert details and "\n" not in details  # one paragraph, behind the banner's Details


def test_a_hub_that_refuses_the_model_is_told_apart_from_one_unreachable():
    import httpx
    from huggingface_hub.errors import RepositoryNotFoundError

    response = httpx.Response(401, request=httpx.Request("GET", "https://hub.invalid/api"))
    refused = RepositoryNotFoundError("401", response=response)
    notice = fallback_notice(WANTED, "tiny-tutor", unavailable(refused))
    assert "would not give it" in notice and "could not be reached" not in notice
    assert "RepositoryNotFound" not in notice


def test_the_exception_stays_in_the_server_log(caplog):
    with caplog.at_level("WARNING", logger="playground.models"):
        fallback_notice(WANTED, "tiny-tutor", offline_error())
    assert "LocalEntryNotFoundError" in caplog.text and WANTED in caplog.text


# ---- the page's names for the served model ----------------------------------------------------


@pytest.mark.parametrize(
    ("served", "label"),
    [
        ("tiny-tutor", "tiny-tutor (demo model)"),
        ("fakezeta/gemma-2-9b-it-ov-int4", "Gemma-2-9b-it"),
        ("/models/gemma-2-9b-it-int8/", "Gemma-2-9b-it"),
        ("tiny-random", "tiny-random (random weights)"),
        ("/models/my-own-model", "my-own-model"),
    ],
)
def test_the_label_names_the_model_actually_served(served, label):
    assert display.model_label(served) == label


def test_the_banner_shows_the_first_line_and_keeps_the_rest_behind_details():
    html = display.banner_html("Head <b>bold</b>\nWhy: `hf download <x>`")
    summary = '<summary class="banner-head">⚠️ Head &lt;b&gt;bold&lt;/b&gt; '
    assert html.startswith(f'<details class="banner-details">{summary}')
    assert "<p>Why: <code>hf download &lt;x&gt;</code></p>" in html
    assert display.banner_html("One line <img src=x>") == (
        '<div class="banner-head">⚠️ One line &lt;img src=x&gt;</div>'
    )


# ---- tokens/s, at its source: every engine's result figures -----------------------------------


def test_tokens_per_second_is_true_for_none_one_and_more_tokens():
    assert tokens_per_second(0, 0.0, 0.0) == 0.0
    assert tokens_per_second(0, 0.5, 0.0, native=-1000.0) == 0.0
    # One token has no decode time: it is that token over its own wait, never GenAI's -1000.
    assert tokens_per_second(1, 0.05, 0.0, native=-1000.0) == pytest.approx(20.0)
    assert tokens_per_second(1, 0.0, 0.0) == 0.0  # no clock to divide by
    assert tokens_per_second(11, 0.1, 2.0) == pytest.approx(5.0)  # 10 tokens after the first
    assert tokens_per_second(11, 0.1, 2.0, native=4.8) == 4.8  # GenAI's own clock wins
    for wrong in (-1000.0, math.nan, math.inf, 0.0):
        assert tokens_per_second(11, 0.1, 2.0, native=wrong) == pytest.approx(5.0)


class OneTokenGenAI(RecordingEngine):
    """A native loop that ends its turn at once and reports GenAI's figures for it."""

    def run_native(self, prompt, params, on_token):
        super().run_native(prompt, params, on_token)
        return NativeFigures(ttft_s=0.04, tokens_per_s=-1000.0)


def test_an_engine_reports_a_true_rate_for_a_single_token(tiny_folder):
    engine = OneTokenGenAI(tiny_folder, reply="")  # its only token: <end_of_turn>
    generation = engine.generate("What is 7 plus 5?", _params())
    assert "".join(generation) == ""
    result = generation.result
    assert result.new_tokens == 1 and result.stop_reason == "end_of_turn"
    assert result.tokens_per_s == pytest.approx(25.0)  # 1 / 0.04 s


def _params():
    from playground.sampling import SamplingParams

    return SamplingParams(max_new_tokens=8, temperature=0.0)


# ---- the figures and the note of a continuation that ended at once ---------------------------


FIGURES = {"prompt_tokens": 18, "new_tokens": 1, "ttft_s": 0.05, "tokens_per_s": 20.0,
           "seed": 42, "stop_reason": "end_of_turn"}  # fmt: skip


def test_one_new_token_is_singular():
    assert "· 1 new token ·" in display.figures_line(FIGURES)
    assert "· 2 new tokens ·" in display.figures_line({**FIGURES, "new_tokens": 2})


def test_an_empty_continuation_says_the_model_ended_its_turn_at_once():
    note = display.ended_at_once("", FIGURES)
    assert note.startswith("The model ended its turn at once: its first token was <end_of_turn>")
    assert "<start_of_turn>user" in note and "<start_of_turn>model" in note
    eos = display.ended_at_once("", {**FIGURES, "stop_reason": "eos"})
    assert "first token was an end-of-sequence token" in eos


@pytest.mark.parametrize(
    ("text", "changes"),
    [
        ("Hello", {}),  # it wrote something
        ("", {"stop_reason": "max_new_tokens"}),  # cut by the limit, not ended
        ("", {"stop_reason": "cancelled"}),
        ("", {"new_tokens": 3}),  # not its first token
    ],
)
def test_no_note_when_the_model_did_not_end_at_once(text, changes):
    assert display.ended_at_once(text, {**FIGURES, **changes}) == ""
    assert display.ended_at_once("", None) == ""  # still streaming


# ---- the stop-strings note --------------------------------------------------------------------


def test_the_stop_note_quotes_every_stop_string_literally():
    note = display.stop_note("###\n\n<b>User:</b>\n  ")
    assert "apply to every tab" in note
    assert "&quot;###&quot;, &quot;&lt;b&gt;User:&lt;/b&gt;&quot;, &quot;  &quot;" in note
    assert "<b>" not in note
    assert display.stop_note("") == display.stop_note(None) == display.stop_note("\n") == ""


# ---- the command line -------------------------------------------------------------------------


def generate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "playground", "generate", "--model", "tiny-tutor", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("limit", ["1", "2"])
def test_cli_json_rate_is_positive_for_one_and_two_tokens(limit):
    done = generate("--prompt", "Hello", "--max-new-tokens", limit, "--temperature", "0", "--json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["new_tokens"] == int(limit) and out["stop_reason"] == "max_new_tokens"
    assert out["tokens_per_s"] > 0
    if limit == "1":  # its one token over its own wait, to the figures' rounding
        assert out["tokens_per_s"] == pytest.approx(1 / out["ttft_s"], rel=0.05)


@pytest.mark.slow
def test_cli_says_why_a_continuation_is_empty():
    done = generate("--prompt", "What is 7 plus 5?", "--temperature", "0")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "\n"
    assert "note: The model ended its turn at once" in done.stderr
