"""`python -m playground convert`: the weight choices and their refusals, the fast failures
(missing packages, no network, a bad SOURCE or OUT), and real conversions of the project's own
tiny random Gemma-2 checkpoint that the genai engine then serves (marked slow: they export)."""

import collections
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from playground.cli import main
from playground.conversion import ConversionError, WeightChoice, check_group_size
from playground.models import HUB_TIMEOUT_S
from tests.conftest import ROOT

# Gemma-2-9b's widths: hidden 3584, MLP 14336, 16 heads of 256.
GEMMA2_9B = {"hidden_size": 3584, "intermediate_size": 14336, "num_attention_heads": 16,
             "head_dim": 256}  # fmt: skip


def run(*args, **env) -> subprocess.CompletedProcess:
    """`python -m playground ARGS` from the repo, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "playground", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **env},
    )


def one_line_error(capsys, *args) -> str:
    assert main(["convert", *map(str, args)]) == 2
    out = capsys.readouterr()
    assert out.out == "" and out.err.count("\n") == 1 and out.err.startswith("error: ")
    return out.err


# ---- choices ------------------------------------------------------------------------------


def test_defaults_are_optimum_clis_int4_and_int8_is_per_channel():
    assert WeightChoice().checked() == WeightChoice("int4", 128, False, 1.0, False)
    assert WeightChoice("int8").checked() == WeightChoice("int8", None, False, None, False)
    assert WeightChoice("int8", sym=True).checked().sym is True
    assert WeightChoice("fp16").checked() == WeightChoice("fp16", None, None, None, False)
    assert WeightChoice("int4", -1, True, 0.8, True).checked() == WeightChoice(
        "int4", -1, True, 0.8, True
    )


@pytest.mark.parametrize(
    ("choice", "said"),
    [
        (WeightChoice("int8", group_size=64), "--group-size applies to int4 only"),
        (
            WeightChoice("fp16", ratio=0.5, all_layers=True),
            "--ratio and --all-layers apply to int4 only",
        ),
        (WeightChoice("fp16", sym=False), "--sym and --asym apply to int4 and int8"),
        (WeightChoice("int4", group_size=0), "--group-size must be -1 (per channel) or at least"),
        (WeightChoice("int4", ratio=1.5), "--ratio is the share of layers in int4"),
        (WeightChoice("int4", ratio=0.0), "--ratio is the share of layers in int4"),
        (WeightChoice("int2"), "--weights is one of int4, int8, fp16"),
    ],
)
def test_options_that_do_not_apply_are_refused(choice, said):
    with pytest.raises(ConversionError, match=re.escape(said)):
        choice.checked()


def test_a_group_size_must_divide_every_layers_input_width(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(GEMMA2_9B))
    for fits in (-1, 32, 128, 256):
        check_group_size(tmp_path, fits)
    with pytest.raises(ConversionError, match=r"--group-size 96 does not divide .* \(3584, "
                       r"4096, 14336\): use a divisor of 512 such as 128"):  # fmt: skip
        check_group_size(tmp_path, 96)


# ---- fast failures ------------------------------------------------------------------------


def test_without_the_optimum_packages_one_message_says_what_to_install(
    capsys, monkeypatch, tmp_path
):
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text(json.dumps(GEMMA2_9B))
    monkeypatch.setitem(sys.modules, "torch", None)  # as if not installed: not found
    monkeypatch.setitem(sys.modules, "nncf", None)
    err = one_line_error(capsys, tmp_path / "hf", tmp_path / "out")
    assert err == (
        "error: convert needs torch, nncf, which are not installed: "
        "pip install -r requirements-optimum.txt\n"
    )
    assert not (tmp_path / "out").exists()


def test_sources_and_outputs_that_cannot_be_converted(capsys, tmp_path):
    ir, empty, full = tmp_path / "ir", tmp_path / "empty", tmp_path / "full"
    for folder in (ir, empty, full):
        folder.mkdir()
    (ir / "openvino_model.xml").write_text("<net/>")
    (full / "a.txt").write_text("kept")
    assert "is neither a folder nor a Hugging Face id" in one_line_error(
        capsys, "nope", full.parent / "o"
    )
    assert "is already an OpenVINO IR: serve it with --model" in one_line_error(
        capsys, ir, tmp_path / "o"
    )
    assert "holds no config.json" in one_line_error(capsys, empty, tmp_path / "o")
    assert "exists and is not an empty folder" in one_line_error(capsys, empty, full)
    assert (full / "a.txt").read_text() == "kept"
    assert "--group-size applies to int4 only" in one_line_error(
        capsys, empty, tmp_path / "o", "--weights", "int8", "--group-size", "32"
    )


@pytest.fixture
def silent_hub():
    """A Hub address that accepts connections and never answers (the kernel completes the
    handshake into the listen backlog; nothing reads or replies)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        yield f"http://127.0.0.1:{server.getsockname()[1]}"


@pytest.mark.parametrize(
    "env",
    [
        {"HF_HUB_OFFLINE": "1"},
        # No network, as on this machine: a Hub that refuses the connection.
        {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9"},
        # A network that swallows requests: waited for HUB_TIMEOUT_S, not forever.
        {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "silent"},
    ],
    ids=["offline", "unreachable", "silent"],
)
def test_a_hub_id_without_network_fails_fast_and_says_what_to_do(tmp_path, env, silent_hub):
    if env.get("HF_ENDPOINT") == "silent":
        env = {**env, "HF_ENDPOINT": silent_hub}
    started = time.monotonic()
    result = run("convert", "google/gemma-2-2b-it", tmp_path / "out",
                 HF_HOME=str(tmp_path / "hf-home"), **env)  # fmt: skip
    elapsed = time.monotonic() - started
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("error: Could not get the model 'google/gemma-2-2b-it'")
    assert "or pass the checkpoint's local folder as SOURCE." in result.stderr
    assert elapsed < 10 + HUB_TIMEOUT_S, elapsed
    assert not (tmp_path / "out").exists()


# ---- real conversions ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """tiny-random's Hugging Face checkpoint, as models.py builds it (seeded, offline)."""
    from playground.models import SYNTHETIC_MODELS, save_synthetic_checkpoint

    folder = tmp_path_factory.mktemp("checkpoint") / "tiny-random"
    save_synthetic_checkpoint(SYNTHETIC_MODELS["tiny-random"], folder)
    return folder


def weight_types(folder: Path) -> collections.Counter:
    """Element types of the IR's weight constants (rank 2 and up), e.g. {'u4': 28, ...}."""
    import openvino as ov

    model = ov.Core().read_model(folder / "openvino_model.xml")
    return collections.Counter(
        op.get_element_type().get_type_name()
        for op in model.get_ops()
        if op.get_type_name() == "Constant" and len(op.get_output_partial_shape(0)) >= 2
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("flags", "present", "absent"),
    [
        # tiny-random is 64 wide: group size 32. Its tied embedding stays int8 (nncf's default).
        (["--weights", "int4", "--group-size", "32"], {"u4", "u8"}, set()),
        (["--weights", "int8"], {"u8"}, {"u4"}),
        (["--weights", "fp16"], {"f16"}, {"u4", "u8"}),
    ],
    ids=["int4", "int8", "fp16"],
)
def test_a_conversion_is_served_by_the_genai_engine(checkpoint, tmp_path, flags, present, absent):
    from playground.engines import load_engine
    from playground.sampling import SamplingParams

    out = tmp_path / "ir"
    result = run("convert", checkpoint, out, *flags)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout == f"{out}\n"  # NNCF's tables went to stderr
    types = weight_types(out)
    assert present <= set(types) and not absent & set(types), types
    for name in ("openvino_tokenizer.xml", "openvino_detokenizer.xml", "chat_template.jinja"):
        assert (out / name).is_file(), name
    card = json.loads((out / "convert.json").read_text())
    assert card["weights"] == flags[1] and card["source"] == str(checkpoint)
    assert card["command"] == " ".join(["python", "-m", "playground", "convert",
                                        str(checkpoint), str(out), *flags])  # fmt: skip
    assert card["model_bytes"] == (out / "openvino_model.bin").stat().st_size
    assert card["packages"]["nncf"] and card["packages"]["optimum-intel"]
    engine = load_engine(out, "genai", cache_dir=tmp_path / "cache")
    greedy = SamplingParams(max_new_tokens=8, temperature=0.0)
    generated = engine.generate("<start_of_turn>user\nHello<end_of_turn>\n", greedy).run()
    assert generated.new_tokens > 0 and generated.token_ids


@pytest.mark.slow
def test_all_layers_puts_the_embedding_in_int4_too(checkpoint, tmp_path):
    out = tmp_path / "ir"
    result = run("convert", checkpoint, out, "--group-size", "32", "--sym", "--all-layers")
    assert result.returncode == 0, result.stderr[-2000:]
    types = weight_types(out)
    # Symmetric: no zero points; all layers: no int8 embedding left.
    assert "u8" not in types and "i8" not in types and ({"u4", "i4"} & set(types)), types
    card = json.loads((out / "convert.json").read_text())
    assert (card["sym"], card["all_layers"], card["group_size"]) == (True, True, 32)
