"""The engines on the real OpenVINO runtime and the tiny int4 Gemma-2 (no fake engine here)."""

import json
import os
import re
import shutil
import subprocess
import sys
import threading

import pytest

from playground.chat_format import render
from playground.engines import ContextOverflowError, get_engine, load_engine
from playground.sampling import SamplingParams

pytestmark = pytest.mark.slow

PROMPTS = ["Hello", "The quick brown fox", "def add(a, b):", "Größe 😀 ✨", "  two  spaces  "]
GREEDY = SamplingParams(max_new_tokens=24, temperature=0, repetition_penalty=1.0)


@pytest.mark.parametrize("prompt", PROMPTS)
def test_greedy_ids_match_between_engines(genai_engine, optimum_engine, prompt):
    a = genai_engine.generate(prompt, GREEDY).run()
    b = optimum_engine.generate(prompt, GREEDY).run()
    assert a.token_ids == b.token_ids
    assert a.text == b.text
    assert a.prompt_tokens == b.prompt_tokens


@pytest.mark.parametrize("kind", ["genai", "optimum"])
def test_same_seed_same_text_other_seed_differs(request, kind):
    engine = request.getfixturevalue(f"{kind}_engine")
    params = SamplingParams(max_new_tokens=32, temperature=1.0, top_p=0.95, top_k=0, seed=7)
    first = engine.generate("Hello", params).run()
    again = engine.generate("Hello", params).run()
    other = engine.generate("Hello", params.with_(seed=8)).run()
    assert first.token_ids == again.token_ids
    assert first.text == again.text
    assert other.token_ids != first.token_ids


@pytest.mark.parametrize("kind", ["genai", "optimum"])
@pytest.mark.parametrize("n", [1, 7, 33])
def test_max_new_tokens_is_exact(request, kind, n):
    engine = request.getfixturevalue(f"{kind}_engine")
    result = engine.generate("Hello", GREEDY.with_(max_new_tokens=n)).run()
    assert result.stop_reason == "max_new_tokens"
    assert result.new_tokens == len(result.token_ids) == n


@pytest.mark.parametrize("kind", ["genai", "optimum"])
def test_stop_string_ends_generation(request, kind):
    engine = request.getfixturevalue(f"{kind}_engine")
    full = engine.generate("Hello", GREEDY.with_(max_new_tokens=40)).run()
    stop = full.text[10:13]  # a string the greedy continuation is known to reach
    assert len(stop) == 3
    streamed = []
    generation = engine.generate("Hello", GREEDY.with_(max_new_tokens=40, stop=(stop,)))
    streamed.extend(generation)
    result = generation.result
    assert result.stop_reason == "stop_string"
    assert result.text == full.text[: full.text.find(stop)]
    assert "".join(streamed) == result.text  # no part of the stop string was ever shown
    assert result.new_tokens < full.new_tokens


@pytest.mark.parametrize("kind", ["genai", "optimum"])
def test_cancel_returns_promptly_and_next_request_works(request, kind):
    engine = request.getfixturevalue(f"{kind}_engine")
    cancel = threading.Event()
    generation = engine.generate("Hello", GREEDY.with_(max_new_tokens=4000), cancel)
    for count, _ in enumerate(generation):
        if count == 3:
            cancel.set()
    result = generation.result
    assert result.stop_reason == "cancelled"
    assert result.new_tokens < 100  # stopped within a few tokens of the cancel, not at 4000
    assert engine.active == 0
    assert engine.generate("Hello", GREEDY.with_(max_new_tokens=5)).run().new_tokens == 5


@pytest.mark.parametrize("kind", ["genai", "optimum"])
def test_leaving_the_stream_cancels_and_frees_the_engine(request, kind):
    engine = request.getfixturevalue(f"{kind}_engine")
    generation = engine.generate("Hello", GREEDY.with_(max_new_tokens=4000))
    stream = iter(generation)
    next(stream)
    stream.close()  # what Gradio does when a visitor closes the page
    assert generation.cancel_event.is_set()
    assert engine.generate("Hi", GREEDY.with_(max_new_tokens=3)).run().new_tokens == 3
    assert engine.active == 0


def test_end_token_stops_with_its_reason(genai_engine, optimum_engine, tokenizer):
    # Find a prompt whose greedy continuation ends with an end id, then check both engines agree.
    for token_id in range(108, tokenizer.vocab_size):
        prompt = tokenizer.decode([tokenizer.bos_id, token_id])
        result = genai_engine.generate(prompt, GREEDY.with_(max_new_tokens=40)).run()
        if result.stop_reason in ("eos", "end_of_turn"):
            break
    else:
        pytest.fail("no prompt of one token made the tiny model emit an end token")
    end_id = result.token_ids[-1]
    assert end_id in tokenizer.eos_ids
    assert result.stop_reason == ("end_of_turn" if end_id == tokenizer.end_of_turn_id else "eos")
    assert result.text == tokenizer.decode(result.token_ids[:-1])  # the end token is not text
    reference = optimum_engine.generate(prompt, GREEDY.with_(max_new_tokens=40)).run()
    assert (reference.token_ids, reference.stop_reason, reference.text) == (
        result.token_ids,
        result.stop_reason,
        result.text,
    )


def test_exactly_one_bos(genai_engine, tokenizer):
    import openvino_genai

    ov_tokenizer = openvino_genai.Tokenizer(str(genai_engine.folder))
    raw = tokenizer.encode("Hello there")
    assert raw[0] == tokenizer.bos_id and raw[1] != tokenizer.bos_id
    # The same ids as OpenVINO's tokenizer with its special tokens added.
    assert raw == list(ov_tokenizer.encode("Hello there").input_ids.data[0])
    assert tokenizer.encode("<bos>Hello there") == raw
    chat = render([{"role": "user", "content": "Hello"}]).text
    ids = tokenizer.encode(chat)
    assert chat.startswith("<bos>") and ids[:2] == [tokenizer.bos_id, 106]
    assert tokenizer.encode_naively(chat)[:2] == [tokenizer.bos_id, tokenizer.bos_id]
    result = genai_engine.generate(chat, GREEDY.with_(max_new_tokens=2)).run()
    assert result.prompt_tokens == len(ids)


def test_context_overflow_is_refused_with_both_numbers(genai_engine):
    n = genai_engine.tokenizer.count("Hello")
    limit = genai_engine.context_size
    with pytest.raises(ContextOverflowError, match=rf"{n} tokens.*{limit - n + 1}.*{limit}"):
        genai_engine.generate("Hello", GREEDY.with_(max_new_tokens=limit - n + 1))
    genai_engine.check_fits(n, limit - n)  # exactly at the limit is accepted


def test_engine_is_created_once(settings, genai_engine):
    engines = []

    def get():
        engines.append(
            get_engine(
                genai_engine.folder,
                "genai",
                "CPU",
                cache_dir=settings.cache_dir,
                context_size=settings.context_size,
                ov_config=dict(settings.ov_config),
                kv_cache_gb=settings.kv_cache_gb,
            )
        )

    threads = [threading.Thread(target=get) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(engines) == 4 and all(engine is genai_engine for engine in engines)
    other = get_engine(
        genai_engine.folder, "genai", "CPU", cache_dir=settings.cache_dir, context_size=2048
    )
    assert other is not genai_engine and other.context_size == 2048


def test_compiled_model_cache_is_filled_then_used(tiny_folder, tmp_path):
    first = load_engine(tiny_folder, "genai", cache_dir=tmp_path)
    compiled = tmp_path / "ov_cache" / tiny_folder.name
    assert first.info.cache_used is False
    assert any(compiled.iterdir())
    second = load_engine(tiny_folder, "genai", cache_dir=tmp_path)
    assert second.info.cache_used is True


def test_tiny_model_holds_int4_weights(tiny_folder):
    xml = (tiny_folder / "openvino_model.xml").read_text()
    assert len(re.findall(r'element_type="u4"', xml)) >= 14  # every linear layer


def test_hub_id_offline_fails_fast_with_a_clear_message(tmp_path):
    code = (
        "from pathlib import Path; from playground.models import resolve_model;"
        "resolve_model('fakezeta/gemma-2-9b-it-ov-int4', Path('.'))"
    )
    for offline in ("1", ""):
        env = {**os.environ, "HF_HOME": str(tmp_path), "HF_HUB_OFFLINE": offline}
        done = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode != 0
        last = done.stderr.strip().splitlines()[-1]
        assert "ModelUnavailableError" in last
        assert (
            "fakezeta/gemma-2-9b-it-ov-int4" in last
            and "hf download" in last
            and "tiny-tutor" in last
        )


@pytest.mark.parametrize("kind", ["genai", "optimum"])
def test_cli_generate_json(kind):
    done = subprocess.run(
        [sys.executable, "-m", "playground", "generate", "--model", "tiny-random",
         "--engine", kind, "--prompt", "Hello", "--max-new-tokens", "16", "--json"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["engine"] == kind and out["model"] == "tiny-random"
    assert out["new_tokens"] == len(out["token_ids"]) == 16
    assert out["stop_reason"] == "max_new_tokens" and out["prompt_tokens"] == 2
    assert set(out) >= {"text", "ttft_s", "tokens_per_s"}


def test_cli_messages_streams_text(tmp_path):
    conversation = tmp_path / "c.json"
    conversation.write_text(json.dumps([{"role": "user", "content": "Hi"}]))
    done = subprocess.run(
        [sys.executable, "-m", "playground", "generate", "--model", "tiny-random",
         "--messages", str(conversation), "--max-new-tokens", "8", "--temperature", "0"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--prompt", "hi", "--temperature", "nan"], "temperature must be"),
        # Issue 13: the command line takes what the engine takes, top_p in (0, 1].
        (["--prompt", "hi", "--top-p", "3"], "top_p must be a number above 0 and at most 1"),
        (["--prompt", "hi", "--max-new-tokens", "0"], "max_new_tokens must be"),
        (["--prompt", "hi", "--engine", "torch"], "invalid choice"),
        (["--messages", "/nonexistent.json"], "No such file"),
        ([], "one of the arguments --prompt --messages is required"),
        (["--prompt", ""], "The prompt is empty"),  # issue 10 #5: the UI's and API's rule
        (["--prompt", " \n"], "The prompt is empty"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(args, message):
    done = subprocess.run(
        [sys.executable, "-m", "playground", "generate", "--model", "tiny-random", *args],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]


def test_cli_bad_conversation_exits_2(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('[{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]')
    for command in (
        ["generate", "--model", "tiny-random", "--messages", str(bad)],
        ["render", str(bad)],
    ):
        done = subprocess.run(
            [sys.executable, "-m", "playground", *command], capture_output=True, text=True
        )
        assert done.returncode == 2
        assert "message 2" in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_hf_and_openvino_tokenizers_agree(tiny_folder, tokenizer):
    import openvino_genai

    ov_tokenizer = openvino_genai.Tokenizer(str(tiny_folder))
    mismatches = []
    for text in _varied_strings():
        ours = tokenizer.encode(text)
        theirs = [
            tokenizer.bos_id,
            *ov_tokenizer.encode(text, add_special_tokens=False).input_ids.data[0],
        ]
        if text.startswith("<bos>"):
            theirs = theirs[1:]
        if ours != [int(i) for i in theirs] or ov_tokenizer.decode(
            ours[1:], skip_special_tokens=False
        ) != tokenizer.decode(ours[1:]):
            mismatches.append(text)
    assert mismatches == []


def _varied_strings() -> list[str]:
    import random

    rng = random.Random(0)
    pieces = [
        "Hello", "world", " ", "  ", "   ", "\n", "\t", "😀", "🚀✨", "Größe", "日本語", "한국어",
        "def f(x):\n    return x", "{\"a\": [1, 2]}", "<start_of_turn>", "<end_of_turn>", "<bos>",
        "<eos>", "é", "ü", "→", "the", "The quick brown fox", "12345", "3.14", "naïve café",
        "<b>bold</b>", "a\u200bb", "\u00a0", "x" * 30, "ok!", "?", "…",
    ]  # fmt: skip
    strings = list(pieces)
    for _ in range(300):
        strings.append("".join(rng.choice(pieces) for _ in range(rng.randint(1, 6))))
    return strings


def test_a_folder_without_openvino_tokenizers_gets_them_once(tiny_folder, tmp_path, settings):
    from playground.models import OV_TOKENIZER_FILES, resolve_model

    folder = tmp_path / "older-export"
    shutil.copytree(tiny_folder, folder)
    for name in OV_TOKENIZER_FILES:
        (folder / name).unlink()
        (folder / name).with_suffix(".bin").unlink()
    assert resolve_model(str(folder), settings.cache_dir) == folder
    assert all((folder / name).is_file() for name in OV_TOKENIZER_FILES)
    engine = load_engine(folder, "genai", cache_dir=tmp_path / "cache")
    assert engine.generate("Hello", GREEDY.with_(max_new_tokens=3)).run().new_tokens == 3


def test_a_hub_id_resolves_from_the_local_cache_offline(tiny_folder, tmp_path):
    """The hub path for real: a repo id found in HF_HOME's cache, with HF_HUB_OFFLINE=1."""
    snapshot = tmp_path / "hub" / "models--someone--gemma-ov" / "snapshots" / ("0" * 40)
    shutil.copytree(tiny_folder, snapshot)
    (tmp_path / "hub" / "models--someone--gemma-ov" / "refs").mkdir()
    (tmp_path / "hub" / "models--someone--gemma-ov" / "refs" / "main").write_text("0" * 40)
    code = (
        "from pathlib import Path; from playground.models import resolve_model;"
        "print(resolve_model('someone/gemma-ov', Path('.')))"
    )
    env = {**os.environ, "HF_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == str(snapshot)
