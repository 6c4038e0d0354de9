"""llama.cpp side by side (playground/bench/peers.py): the SentencePiece model written for
llama.cpp's converter, the conversion, quantization and a generation in llama.cpp (only where
llama-cpp-python is installed: requirements-bench.txt, not CI), and `bench --peer llama.cpp`'s
message when it is not."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from playground import gguf
from playground.bench import peers

ROOT = Path(__file__).resolve().parent.parent
TEXTS = [
    "Write a story about a lighthouse keeper who finds a message in a bottle.",
    "  two  spaces, a tab\tand a newline\n",
    "日本語 😀 Größe — €",
    "The quick brown fox jumps over the lazy dog.",
]


def _expected_types(tokenizer_json: dict) -> dict[int, str]:
    """Each id's SentencePiece type, read straight from tokenizer.json."""
    model = tokenizer_json["model"]
    types = {}
    for piece, i in model["vocab"].items():
        is_byte = len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">")
        types[i] = "BYTE" if is_byte else "NORMAL"
    for token in tokenizer_json["added_tokens"]:
        if token["content"] == model["unk_token"]:
            types[token["id"]] = "UNKNOWN"
        else:
            types[token["id"]] = "CONTROL" if token["special"] else "USER_DEFINED"
    return types


def test_sentencepiece_model_has_every_piece_and_type_of_tokenizer_json(tiny_folder, tmp_path):
    spm = pytest.importorskip("sentencepiece", reason="sentencepiece is in requirements-dev.txt")
    from sentencepiece import sentencepiece_model_pb2 as pb

    data = json.loads((tiny_folder / "tokenizer.json").read_text(encoding="utf-8"))
    written = gguf.write_sentencepiece_model(
        tiny_folder / "tokenizer.json", tmp_path / "tokenizer.model"
    )
    processor = spm.SentencePieceProcessor(model_file=str(written))
    proto = pb.ModelProto.FromString(processor.serialized_model_proto())
    pieces = {piece: i for piece, i in data["model"]["vocab"].items()}
    pieces.update({token["content"]: token["id"] for token in data["added_tokens"]})
    types = _expected_types(data)

    assert processor.vocab_size() == len(pieces) == 1024
    for piece, i in pieces.items():
        assert processor.id_to_piece(i) == piece
        assert pb.ModelProto.SentencePiece.Type.Name(proto.pieces[i].type) == types[i], piece
        assert processor.is_control(i) == (types[i] == "CONTROL")
        assert processor.is_unknown(i) == (types[i] == "UNKNOWN")
        assert processor.is_byte(i) == (types[i] == "BYTE")
    assert (processor.unk_id(), processor.bos_id(), processor.eos_id()) == (3, 2, 1)
    assert sum(t == "BYTE" for t in types.values()) == 256
    assert {processor.id_to_piece(i) for i in range(1024) if processor.is_control(i)} == {
        "<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>",
    }  # fmt: skip


def test_sentencepiece_model_tokenizes_as_tokenizer_json(tiny_folder, tmp_path):
    """Scores from the merge ranks: SentencePiece's BPE splits text as the HF tokenizer does."""
    spm = pytest.importorskip("sentencepiece", reason="sentencepiece is in requirements-dev.txt")
    from tokenizers import Tokenizer

    written = gguf.write_sentencepiece_model(
        tiny_folder / "tokenizer.json", tmp_path / "tokenizer.model"
    )
    processor = spm.SentencePieceProcessor(model_file=str(written))
    hf = Tokenizer.from_file(str(tiny_folder / "tokenizer.json"))
    for text in TEXTS:
        assert processor.encode(text) == hf.encode(text, add_special_tokens=False).ids, text


@pytest.mark.slow
def test_llama_cpp_converts_quantizes_and_generates(tiny_folder, settings, tmp_path):
    # Not skipped: requirements-dev.txt installs llama-cpp-python, and CI runs this.
    from playground.tokens import Tokenizer

    files = peers.gguf_files("tiny-random", tiny_folder, settings.cache_dir)
    assert set(files) == {"f16", "Q4_0", "Q4_K_M"}
    for path in files.values():
        assert path.read_bytes()[:4] == b"GGUF"
    assert files["Q4_0"].stat().st_size < files["f16"].stat().st_size

    ours = Tokenizer(tiny_folder)
    # Q4_0 crashes in decode on CPUs with AMX unless llama.cpp's extra buffers are off.
    llm = peers.load_llama(str(files["Q4_0"]), n_ctx=256, n_threads=1, verbose=False)
    prompt = "<bos><start_of_turn>user\n" + TEXTS[0] + "<end_of_turn>\n<start_of_turn>model\n"
    # The same ids in both engines, control tokens included.
    assert llm.tokenize(prompt.encode(), add_bos=False, special=True) == ours.encode(prompt)
    out = llm.create_completion(ours.encode(prompt), max_tokens=8, temperature=0)
    assert out["usage"]["prompt_tokens"] == len(ours.encode(prompt))
    assert out["usage"]["completion_tokens"] >= 1


BLOCKED_RUN = """
import runpy, sys

class NoLlamaCpp:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "llama_cpp":
            raise ModuleNotFoundError("No module named 'llama_cpp'", name=name)
        return None

sys.meta_path.insert(0, NoLlamaCpp())
sys.argv = ["playground.bench", "--peer", "llama.cpp"]
runpy.run_module("playground.bench", run_name="__main__", alter_sys=True)
"""


def test_bench_peer_without_llama_cpp_says_how_to_install_it():
    """As if llama-cpp-python were not installed (an import blocker), whether it is or not."""
    done = subprocess.run(
        [sys.executable, "-c", BLOCKED_RUN],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "llama-cpp-python" in done.stderr
    assert "pip install -r requirements-bench.txt" in done.stderr
    assert done.stdout == ""


@pytest.mark.slow
def test_llama_loads_without_extra_buffers_on_an_amx_cpu(tiny_folder, settings, monkeypatch):
    """The AMX path, on any CPU: the Q4_0 GGUF loads and generates with the extra buffers off,
    and llama-cpp-python's default parameters are left as they were."""
    import llama_cpp.llama_cpp as native

    seen = []
    default = native.llama_model_default_params

    def recording() -> object:
        params = default()
        seen.append(params)
        return params

    monkeypatch.setattr(native, "llama_model_default_params", recording)
    monkeypatch.setattr(peers, "has_amx", lambda: True)
    files = peers.gguf_files("tiny-random", tiny_folder, settings.cache_dir)
    llm = peers.load_llama(str(files["Q4_0"]), n_ctx=256, n_threads=1, verbose=False)
    assert seen and not seen[0].use_extra_bufts
    assert native.llama_model_default_params is recording  # put back after loading
    assert llm.create_completion([2, 106], max_tokens=4, temperature=0)["usage"][
        "completion_tokens"
    ]


@pytest.mark.slow
def test_tiny_tutors_gguf_is_its_ir_and_rebuilds_byte_for_byte(settings, tmp_path):
    """The shipped GGUF is what `gguf.gguf_from_ir` makes of the shipped IR, and it is the same
    model: llama.cpp's greedy reply to a sum is the genai engine's."""
    from playground.models import TUTOR_DIR
    from playground.tutor import GGUF

    rebuilt = gguf.gguf_from_ir(TUTOR_DIR, tmp_path / "tutor.gguf", settings.cache_dir)
    assert rebuilt.read_bytes() == GGUF.read_bytes()

    from playground.engines import open_engine
    from playground.sampling import SamplingParams
    from playground.tokens import Tokenizer

    prompt = "<bos><start_of_turn>user\nWhat is 7 plus 5?<end_of_turn>\n<start_of_turn>model\n"
    ids = Tokenizer(TUTOR_DIR).encode(prompt)
    llm = peers.load_llama(str(GGUF), n_ctx=512, n_threads=1, verbose=False)
    theirs = llm.create_completion(ids, max_tokens=60, temperature=0)["choices"][0]["text"]
    engine, _ = open_engine(settings.with_(model="tiny-tutor"))
    greedy = SamplingParams(max_new_tokens=60, temperature=0, repetition_penalty=1.0)
    ours = engine.generate(prompt, greedy).run().text
    assert theirs == ours and "So 7 plus 5 is 12." in ours
