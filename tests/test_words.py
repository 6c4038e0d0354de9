"""Issue 33, "The first five minutes", its words: the Model tab says what each figure means, the
fold note is one short line (the why on request, said once in the terminal), exported code finds
tiny-tutor wherever it runs, and the command line's help and notes match what it does. What a
visitor sees, at 1280 and 400 px, in test_browser_first_minutes.py."""

import io
import os
import subprocess
import sys

import pytest

from playground import display
from playground.chat_format import FOLD_NOTE, fold_details
from playground.engines import EngineInfo
from playground.export import export_code, model_code, notebook_setup_code
from playground.machine import Cpu
from playground.models import TUTOR_DIR
from playground.sampling import SamplingParams
from playground.session import Playground, exported_model
from playground.settings import load_settings
from playground.terminal import TerminalChat
from tests.conftest import ROOT
from tests.helpers.fakes import RecordingEngine

INFO = EngineInfo("tiny-tutor", "genai", "CPU", "2025.3 <b>", 1.5, True)

# ---- the Model tab ----------------------------------------------------------------------------


def test_every_figure_of_the_model_tab_says_what_it_means():
    cpu = Cpu("Xeon <img src=x>", frozenset({"avx2", "avx512_vnni"}))
    lines = display.model_lines(INFO, 8192, cpu, None, in_process=True)
    labels = [line.split("**")[1].rstrip(":") for line in lines]
    assert labels == ["Model", "Engine", "Device", "OpenVINO", "Load time",
                      "Compiled-model cache", "CPU", "Context size"]  # fmt: skip
    for label, line in zip(labels, lines, strict=True):
        assert line.endswith(f" — {display.MEANINGS[label]}"), line
    context = lines[-1]
    assert "**Context size:** 8,192 tokens — the most the model reads at once" in context
    assert "prompt and its reply together" in context
    shown = "\n".join(lines)  # the engine's and the CPU's text stays text
    assert "2025.3 &lt;b&gt;" in shown and "Xeon &lt;img src=x&gt;" in shown and "<img" not in shown
    # A remote engine runs the model elsewhere: no device, load time or CPU of this machine.
    remote = display.model_lines(INFO, 4096, cpu, None, in_process=False)
    assert [line.split("**")[1] for line in remote] == ["Model:", "Engine:", "Context size:"]


@pytest.mark.slow
def test_the_kv_budget_note_says_what_its_token_count_holds(tutor_engine):
    (budget,) = [note for note in tutor_engine.notes() if note.startswith("KV-cache budget")]
    assert "the model's memory of the text it reads and writes" in budget
    assert f"at most the context size, {tutor_engine.context_size:,} tokens" in budget


# ---- the fold note ----------------------------------------------------------------------------


def make_chat():
    settings = load_settings(model="tiny-tutor")
    out = io.StringIO()
    chat = TerminalChat(Playground(RecordingEngine(TUTOR_DIR), settings), settings.defaults(), out)
    return chat, out, settings


def test_the_terminal_says_the_fold_note_once_and_the_why_on_request():
    chat, out, settings = make_chat()
    for line in ("/system Be brief.", "Hello", "And again?", "Once more?"):
        assert chat.handle(line)
    said = out.getvalue()
    assert said.count(FOLD_NOTE) == 1 and f"note: {FOLD_NOTE} (/fold: why)" in said
    assert "minja" not in said
    assert chat.handle("/fold")
    assert fold_details(settings.fold_separator) in out.getvalue()
    assert chat.handle("/clear") and chat.handle("Hello")  # a new conversation: said again
    assert out.getvalue().count(FOLD_NOTE) == 2
    assert (
        chat.handle("/help") and "/fold   why and how a system prompt is folded" in out.getvalue()
    )


# ---- exported code ----------------------------------------------------------------------------


def test_tiny_tutor_is_exported_by_name_and_found_where_the_code_runs():
    assert exported_model("tiny-tutor") == ("tiny-tutor", False)
    code = export_code("Hi", SamplingParams(), "tiny-tutor", end_ids=[1])
    for snippet in code.values():
        assert "model_dir = find_tiny_tutor()" in snippet
        assert "'playground/tutor/tiny-tutor'" not in snippet and str(ROOT) not in snippet
        compile(snippet, "snippet", "exec")
    assert "model_dir = find_tiny_tutor()" in notebook_setup_code("tiny-tutor", {}, [1])
    # Without a Space, a plain refusal; from a Space, a download of its own files.
    assert "raise SystemExit" in model_code("tiny-tutor", False, space_id="")
    spaced = model_code("tiny-tutor", False, space_id="someone/playground")
    assert "snapshot_download(\n        'someone/playground', repo_type=\"space\"" in spaced
    assert "raise SystemExit" not in spaced
    assert model_code("/srv/m", False) == "model_dir = '/srv/m'  # a local OpenVINO IR folder\n"


def run_outside(code, tmp_path, **env):
    """`code` as a file in `tmp_path`, run there, with no way to this repository but `env`."""
    (tmp_path / "snippet.py").write_text(code, encoding="utf-8")
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TINY_TUTOR")}
    return subprocess.run(
        [sys.executable, "snippet.py"], cwd=tmp_path, capture_output=True, text=True,
        env={**clean, "HF_HUB_OFFLINE": "1", **env}, timeout=300,
    )  # fmt: skip


@pytest.mark.slow
def test_the_exported_code_runs_outside_the_repository_against_tiny_tutor(
    tmp_path, settings, tutor_engine
):
    params = SamplingParams(max_new_tokens=8, temperature=0, repetition_penalty=1.0)
    prompt = "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n"
    expected = tutor_engine.generate(prompt, params).run().text
    code = export_code(prompt, params, "tiny-tutor", end_ids=tutor_engine.tokenizer.eos_ids,
                       ov_config=settings.ov_config)["openvino_genai"]  # fmt: skip
    # Nothing to find: a plain message, not a traceback.
    lost = run_outside(code, tmp_path)
    assert lost.returncode == 1 and "tiny-tutor not found" in lost.stderr
    assert "Traceback" not in lost.stderr
    # The installed playground (here: importable), $TINY_TUTOR, or the folder uploaded here.
    installed = run_outside(code, tmp_path, PYTHONPATH=str(ROOT))
    assert installed.returncode == 0, installed.stderr[-2000:]
    assert installed.stdout == expected + "\n"
    named = run_outside(code, tmp_path, TINY_TUTOR=str(TUTOR_DIR))
    assert named.returncode == 0 and named.stdout == expected + "\n", named.stderr[-2000:]
    (tmp_path / "tiny-tutor").symlink_to(TUTOR_DIR, target_is_directory=True)
    uploaded = run_outside(code, tmp_path)
    assert uploaded.returncode == 0 and uploaded.stdout == expected + "\n", uploaded.stderr[-2000:]


# ---- the command line -------------------------------------------------------------------------


def test_a_doubled_bos_is_noted_as_the_raw_tab_notes_it(tiny_folder, settings):
    playground = Playground(RecordingEngine(tiny_folder), settings)
    doubled, controls = playground.raw_notes("<bos><bos>Hello")
    assert doubled.startswith("The text starts with 2 <bos> tokens")
    assert controls == "Read as control tokens, not text: <bos> ×2."
    shown = playground.raw_checks("<bos><bos>Hello")  # the Raw tab's, escaped
    assert all(display.escape(note) in shown for note in (doubled, controls))
    assert not any("starts with" in note for note in playground.raw_notes("<bos>Hello"))


@pytest.mark.slow
def test_generate_warns_about_a_doubled_bos():
    done = subprocess.run(
        [sys.executable, "-m", "playground", "generate", "--model", "tiny-tutor", "--prompt",
         "<bos><bos>Hello", "--max-new-tokens", "2", "--temperature", "0"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "note: The text starts with 2 <bos> tokens" in done.stderr
    assert "tiny-tutor (demo model) replies the same with more (measured)" in done.stderr
