"""GGUF files for llama.cpp: a Gemma-2 checkpoint or OpenVINO IR in, an f16 (or quantized) GGUF out.

Owns: the SentencePiece `tokenizer.model` written from a `tokenizer.json` (llama.cpp's converter
reads Gemma-2's vocabulary only from one), the unmodified `convert_hf_to_gguf.py` of the
llama-cpp-python source distribution (fetched once with `pip download`), its run at f16,
`llama_model_quantize`, and the way back from an int4/int8 OpenVINO IR to a Hugging Face
checkpoint (the IR's weights, dequantized), so that llama.cpp serves exactly the weights the
`genai` engine runs.
Does not own: the benchmark beside llama.cpp (`peers`), the synthetic models' recipe (`models`),
or serving a GGUF (llama.cpp's own server; the app reaches it through `engines.remote`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from playground.errors import UserError

LLAMA_CPP_PYTHON = "0.3.36"  # the version requirements pin; its sdist has the converter
CONVERTER = "vendor/llama.cpp/convert_hf_to_gguf.py"
NO_CAP = 1e6  # an attention-logit cap that caps nothing: tanh(x / 1e6) * 1e6 == x in float32
QUANTS = {"Q4_0": 2, "Q4_K_M": 15}  # llama_ftype values (LLAMA_FTYPE_MOSTLY_*)
# Files of an IR folder that a Hugging Face checkpoint of it needs besides the weights.
CHECKPOINT_FILES = ("config.json", "generation_config.json", "tokenizer.json",
                    "tokenizer_config.json", "chat_template.jinja")  # fmt: skip


class GGUFError(UserError, RuntimeError):
    """A GGUF that could not be made; the message is for people."""


# --- the SentencePiece model ---------------------------------------------------------------


def sentencepiece_pieces(tokenizer_json: Path) -> list[tuple[str, float, str]]:
    """(piece, score, type) for every id of a Gemma-like BPE `tokenizer.json`, in id order.

    Types as Gemma's own tokenizer.model has them: the unknown token UNKNOWN, the other special
    added tokens CONTROL, non-special added tokens USER_DEFINED, `<0xNN>` BYTE (byte fallback),
    the rest NORMAL. Scores: SentencePiece's BPE merges the pair whose merged piece scores
    highest, so a piece made by the merge of rank r scores -r, as HF's BPE applies merges by
    rank; pieces no merge makes score 0.
    """
    data = json.loads(Path(tokenizer_json).read_text(encoding="utf-8"))
    model = data["model"]
    if model.get("type") != "BPE":
        raise GGUFError(f"{tokenizer_json}: a {model.get('type')} model, not BPE")
    vocab: dict[str, int] = dict(model["vocab"])
    added = {token["content"]: token for token in data.get("added_tokens", [])}
    for content, token in added.items():
        vocab.setdefault(content, token["id"])
    by_id = sorted(vocab.items(), key=lambda item: item[1])
    if [i for _, i in by_id] != list(range(len(by_id))):
        raise GGUFError(f"{tokenizer_json}: the ids are not 0..{len(by_id) - 1} without gaps")
    rank: dict[str, int] = {}
    for r, merge in enumerate(model.get("merges", [])):
        left, right = merge.split(" ", 1) if isinstance(merge, str) else merge
        rank.setdefault(left + right, r)
    unk = model.get("unk_token")
    byte_fallback = model.get("byte_fallback", False)
    pieces = []
    for piece, _ in by_id:
        if piece in added:
            kind = "UNKNOWN" if piece == unk else "CONTROL" if added[piece]["special"] else ""
            kind = kind or "USER_DEFINED"
        elif piece == unk:
            kind = "UNKNOWN"
        elif byte_fallback and len(piece) == 6 and piece.startswith("<0x") and piece[-1] == ">":
            kind = "BYTE"
        else:
            kind = "NORMAL"
        score = 0.0 if kind != "NORMAL" else -float(rank.get(piece, 0))
        pieces.append((piece, score, kind))
    return pieces


def write_sentencepiece_model(tokenizer_json: Path, out: Path) -> Path:
    """Write a SentencePiece `tokenizer.model` (its protobuf ModelProto) with the same pieces at
    the same ids as `tokenizer_json`, for llama.cpp's converter; return `out`."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    pieces = sentencepiece_pieces(tokenizer_json)
    ids = {piece: i for i, (piece, _, _) in enumerate(pieces)}
    proto = pb.ModelProto()
    spec = proto.trainer_spec
    spec.model_type = pb.TrainerSpec.BPE
    spec.vocab_size = len(pieces)
    spec.byte_fallback = any(kind == "BYTE" for _, _, kind in pieces)
    spec.unk_id = ids.get("<unk>", 0)
    spec.bos_id = ids.get("<bos>", -1)
    spec.eos_id = ids.get("<eos>", -1)
    spec.pad_id = ids.get("<pad>", -1)
    spec.unk_piece, spec.bos_piece, spec.eos_piece, spec.pad_piece = (
        "<unk>", "<bos>", "<eos>", "<pad>",
    )  # fmt: skip
    # As the tokenizer.json's normalizer: spaces become '▁', nothing else changes, no prefix.
    norm = proto.normalizer_spec
    norm.name = "identity"
    norm.add_dummy_prefix = False
    norm.remove_extra_whitespaces = False
    norm.escape_whitespaces = True
    for piece, score, kind in pieces:
        entry = proto.pieces.add()
        entry.piece, entry.score = piece, score
        entry.type = pb.ModelProto.SentencePiece.Type.Value(kind)
    out = Path(out)
    out.write_bytes(proto.SerializeToString())
    return out


def converter_script(cache_dir: Path) -> Path:
    """`convert_hf_to_gguf.py` (with its `conversion/` and `gguf-py/`) from llama-cpp-python's
    sdist in `cache_dir/llama.cpp`, fetched once with `pip download` when it is not there."""
    home = cache_dir / "llama.cpp"
    root = home / f"llama_cpp_python-{LLAMA_CPP_PYTHON}"
    script = root / CONVERTER
    if script.is_file():
        return script
    home.mkdir(parents=True, exist_ok=True)
    sdist = home / f"llama_cpp_python-{LLAMA_CPP_PYTHON}.tar.gz"
    if not sdist.is_file():
        print(f"fetching llama-cpp-python {LLAMA_CPP_PYTHON}'s sdist into {home}", file=sys.stderr)
        done = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
             "-d", str(home), f"llama-cpp-python=={LLAMA_CPP_PYTHON}"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if done.returncode != 0 or not sdist.is_file():
            raise GGUFError(
                f"Could not fetch llama-cpp-python {LLAMA_CPP_PYTHON}'s sdist with pip "
                f"download ({done.stderr.strip()[-300:]}); put {sdist.name} in {home}."
            )
    wanted = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/")
    prefix = f"{root.name}/vendor/llama.cpp/"
    with tempfile.TemporaryDirectory(dir=home) as tmp, tarfile.open(sdist) as archive:
        members = [
            m for m in archive.getmembers()
            if m.name.startswith(prefix) and m.name[len(prefix):].startswith(wanted)
        ]  # fmt: skip
        archive.extractall(tmp, members=members, filter="data")
        shutil.rmtree(root, ignore_errors=True)
        os.replace(Path(tmp) / root.name, root)
    return script


def quantize(f16: Path, out: Path, quant: str, threads: int = 2) -> Path:
    """`llama_cpp.llama_model_quantize` of `f16` to `quant` (a key of QUANTS); return `out`."""
    import ctypes

    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = QUANTS[quant]
    params.nthread = threads
    partial = out.with_suffix(".partial")
    # llama.cpp logs every tensor on the C level's stdout and stderr: keep it for errors only.
    with tempfile.TemporaryFile() as log:
        sys.stdout.flush()
        sys.stderr.flush()
        saved = os.dup(1), os.dup(2)
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            code = llama_cpp.llama_model_quantize(
                str(f16).encode(), str(partial).encode(), ctypes.byref(params)
            )
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
        log.seek(0)
        tail = log.read().decode(errors="replace")[-2000:]
    if code != 0:
        raise GGUFError(f"llama_model_quantize to {quant} failed ({code}):\n{tail}")
    os.replace(partial, out)
    return out


def convert_to_gguf(hf_dir: Path, out: Path, cache_dir: Path) -> Path:
    """The unmodified converter, at f16, in its own process; return `out`."""
    script = converter_script(cache_dir)
    partial = out.with_suffix(".partial")
    done = subprocess.run(
        [sys.executable, str(script), str(hf_dir), "--outtype", "f16", "--outfile", str(partial)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise GGUFError(f"convert_hf_to_gguf.py failed:\n{done.stderr[-3000:]}")
    os.replace(partial, out)
    return out


# --- from an OpenVINO IR back to a checkpoint ----------------------------------------------


def _weight_outputs(model) -> dict[str, object]:
    """The IR's weights by their Hugging Face names, as graph outputs: each compressed constant
    followed through its decompression (Convert, Subtract zero point, Multiply scale, Reshape)
    to the MatMul or Gather that uses it; each RMSNorm's constant, which the export folded to
    `1 + weight` (Gemma's norm scales by 1 + w)."""
    outputs: dict[str, object] = {}
    for op in model.get_ordered_ops():
        name = op.get_friendly_name()
        kind = op.get_type_name()
        if kind == "Constant" and name.startswith("self.") and name.endswith(".weight"):
            node = op
            # The tied embedding's decompressed value feeds both a Gather and the output MatMul.
            while len(users := list(node.output(0).get_target_inputs())) == 1:
                if users[0].get_node().get_type_name() in ("MatMul", "Gather"):
                    break
                node = users[0].get_node()
            outputs[name.removeprefix("self.")] = node.output(0)
        elif kind == "Multiply" and name.endswith("norm/aten::mul/Multiply_1"):
            module = name.removeprefix("__module.").split("/")[0]
            for port in op.inputs():
                source = port.get_source_output()
                if source.get_node().get_type_name() == "Constant":
                    outputs[f"{module}.weight"] = source
    return outputs


def checkpoint_from_ir(ir: Path, out: Path) -> Path:
    """A float32 Hugging Face checkpoint of the Gemma-2 IR in `ir`: its weights dequantized by
    OpenVINO itself, its config and tokenizer files, and a SentencePiece tokenizer.model."""
    import numpy as np
    import openvino as ov
    from safetensors.numpy import save_file

    model = ov.Core().read_model(ir / "openvino_model.xml")
    names, outputs = zip(*_weight_outputs(model).items(), strict=True)
    values = ov.Core().compile_model(ov.Model(list(outputs), []), "CPU")({}).to_tuple()
    tensors = {}
    for name, value in zip(names, values, strict=True):
        value = np.asarray(value, dtype=np.float32)
        value = value.reshape(-1) - 1.0 if name.endswith("norm.weight") else value
        tensors[name] = np.ascontiguousarray(value)
    config = json.loads((ir / "config.json").read_text())
    if config.get("tie_word_embeddings", True):
        tensors.pop("lm_head.weight", None)
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / "model.safetensors"))
    for file in CHECKPOINT_FILES:
        if (ir / file).is_file():
            shutil.copy(ir / file, out / file)
    write_sentencepiece_model(ir / "tokenizer.json", out / "tokenizer.model")
    return out


def gguf_from_ir(ir: Path, out: Path, cache_dir: Path) -> Path:
    """An f16 GGUF of the IR in `ir` at `out`: what llama.cpp serves of the same model."""
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = checkpoint_from_ir(ir, Path(tmp) / "hf")
        config = json.loads((checkpoint / "config.json").read_text())
        if config.get("attn_logit_softcapping") is None:
            # llama.cpp's Gemma-2 graph always caps attention logits (its converter requires
            # a value); a model trained without the cap gets one far beyond any logit.
            config["attn_logit_softcapping"] = NO_CAP
            (checkpoint / "config.json").write_text(json.dumps(config, indent=2))
        return convert_to_gguf(checkpoint, out, cache_dir)
