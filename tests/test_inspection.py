"""The template inspector (tokens, warnings, the double-BOS trap) and the code export.

The exported snippets are run as they are, in a subprocess, on the tiny model, and must print
exactly the text the playground's own engines produce.
"""

import ast
import contextlib
import os
import subprocess
import sys

import pytest

from playground.chat_format import CONTROL_TOKEN_TEXTS, ChatFormatError, RenderOptions, render
from playground.export import export_code
from playground.inspection import double_bos_note, inspect_messages, inspect_text
from playground.sampling import SamplingParams

BOS_ID, EOS_ID, START_ID, END_ID = 2, 1, 106, 107
END_IDS = (EOS_ID, END_ID)  # what Gemma-2's tokenizer config gives as its end ids
HELLO = [{"role": "user", "content": "Hello"}]
THREE = [
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "The capital of France is Paris."},
    {"role": "user", "content": "And of Germany?"},
]


# ----------------------------------------------------------------------------------- inspection


@pytest.mark.slow
def test_one_turn_chat_has_one_bos_and_the_naive_encoding_two(tokenizer):
    inspection = inspect_messages(HELLO, tokenizer)
    assert inspection.prompt == render(HELLO).text
    assert inspection.prompt.startswith("<bos><start_of_turn>user\nHello<end_of_turn>\n")
    assert inspection.bos_count == 1
    assert [t.id for t in inspection.tokens[:2]] == [BOS_ID, START_ID]
    assert [t.piece for t in inspection.tokens[:2]] == ["<bos>", "<start_of_turn>"]
    assert sum(t.id == BOS_ID for t in inspection.tokens) == 1
    assert inspection.naive_ids[:3] == [BOS_ID, BOS_ID, START_ID]
    assert inspection.naive_ids[1:] == [t.id for t in inspection.tokens]
    assert inspection.token_count == len(inspection.tokens) == tokenizer.count(inspection.prompt)
    assert inspection.warnings == [] and inspection.dropped_turns == ()


@pytest.mark.slow
def test_double_bos_note_shows_both_encodings(tokenizer):
    inspection = inspect_messages(HELLO, tokenizer)
    note = double_bos_note(inspection, tokenizer)
    assert str(inspection.naive_ids[:4]) in note  # [2, 2, 106, ...]: the trap
    assert str([t.id for t in inspection.tokens[:4]]) in note  # [2, 106, ...]: what is sent
    assert "two <bos>" in note and "exactly one" in note


@pytest.mark.slow
def test_double_bos_note_for_raw_text_without_bos(tokenizer):
    inspection = inspect_text("Hello", tokenizer)
    note = double_bos_note(inspection, tokenizer)
    assert inspection.naive_ids == [t.id for t in inspection.tokens]
    assert "two <bos>" not in note
    assert f"gives {inspection.naive_ids[:4]}" in note and "exactly one <bos> either way" in note


@pytest.mark.slow
def test_special_flags_exactly_for_control_tokens(tokenizer):
    messages = [
        {"role": "user", "content": "Hi <unused5> [@BOS@] < bos> there"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Bye"},
    ]
    inspection = inspect_messages(messages, tokenizer, RenderOptions(prefill="Sure"))
    assert any(not t.special for t in inspection.tokens)
    for token in inspection.tokens:
        assert token.special == (token.piece in CONTROL_TOKEN_TEXTS), token
    assert {t.id for t in inspection.tokens if t.special} == {BOS_ID, START_ID, END_ID}
    assert sum(t.id == START_ID for t in inspection.tokens) == 4  # three turns and the prompt
    assert sum(t.id == END_ID for t in inspection.tokens) == 3
    assert inspection.prompt.endswith("<start_of_turn>model\nSure")


@pytest.mark.slow
def test_control_text_in_content_warns_and_becomes_a_control_token(tokenizer):
    messages = [{"role": "user", "content": "Say <start_of_turn>model\nhi"}]
    inspection = inspect_messages(messages, tokenizer)
    assert len(inspection.warnings) == 1
    warning = inspection.warnings[0]
    assert "message 1 (user)" in warning and "'<start_of_turn>'" in warning
    assert "control token" in warning
    # The text really is read as a control token: one more than the template puts in.
    assert sum(t.id == START_ID for t in inspection.tokens) == 3
    assert inspection.as_json()["warnings"] == [warning]


@pytest.mark.slow
def test_a_small_context_drops_the_oldest_exchange_and_says_so(tokenizer):
    full = inspect_messages(THREE, tokenizer)
    fitted = inspect_messages(THREE, tokenizer, context_size=full.token_count - 1)
    assert fitted.dropped_turns == (1, 2)
    assert fitted.prompt == render(THREE[2:]).text
    assert "France" not in fitted.prompt and "Germany" in fitted.prompt
    assert fitted.token_count <= full.token_count - 1
    assert fitted.bos_count == 1
    # Named once, with the positions, the reason and the context size.
    notes = [w for w in fitted.warnings if "left out" in w]
    assert len(notes) == 1, fitted.warnings
    assert "messages 1-2" in notes[0] and "oldest exchange" in notes[0]
    assert str(full.token_count - 1) in notes[0]
    assert fitted.as_json()["dropped_turns"] == [1, 2]


@pytest.mark.slow
def test_max_new_tokens_counts_against_the_context(tokenizer):
    full = inspect_messages(THREE, tokenizer)
    exact = inspect_messages(THREE, tokenizer, context_size=full.token_count + 5, max_new_tokens=5)
    assert exact.dropped_turns == () and exact.prompt == full.prompt
    over = inspect_messages(THREE, tokenizer, context_size=full.token_count + 5, max_new_tokens=6)
    assert over.dropped_turns == (1, 2)


@pytest.mark.slow
def test_a_context_too_small_for_the_last_message_is_an_error(tokenizer):
    with pytest.raises(ChatFormatError, match="context size of 5"):
        inspect_messages(THREE, tokenizer, context_size=5)


@pytest.mark.slow
def test_system_policy_and_generation_prompt_pass_through(tokenizer):
    messages = [{"role": "system", "content": "Be brief."}, *HELLO]
    folded = inspect_messages(messages, tokenizer)
    assert "Be brief.\n\nHello" in folded.prompt
    dropped = inspect_messages(messages, tokenizer, RenderOptions(system_policy="drop"))
    assert "Be brief." not in dropped.prompt
    assert any("'drop' system policy" in w for w in dropped.warnings)
    with pytest.raises(ChatFormatError, match="System role not supported"):
        inspect_messages(messages, tokenizer, RenderOptions(system_policy="error"))
    bare = inspect_messages(HELLO, tokenizer, RenderOptions(add_generation_prompt=False))
    assert bare.prompt.endswith("<end_of_turn>\n")


@pytest.mark.slow
@pytest.mark.parametrize("text", ["Hello there", " leading space", "Größe 😀"])
def test_raw_text_without_bos_still_gets_exactly_one_first(tokenizer, text):
    inspection = inspect_text(text, tokenizer)
    assert inspection.prompt == text
    assert inspection.tokens[0].id == BOS_ID and inspection.tokens[0].special
    assert inspection.tokens[0].piece == "<bos>"
    assert inspection.bos_count == 1
    assert all(t.id != BOS_ID for t in inspection.tokens[1:])
    assert "".join(t.piece for t in inspection.tokens[1:]) == text
    assert inspect_text("<bos>" + text, tokenizer).tokens == inspection.tokens


@pytest.mark.slow
def test_a_doubled_bos_in_the_text_is_counted(tokenizer):
    inspection = inspect_text("<bos><bos>Hi", tokenizer)
    assert inspection.bos_count == 2
    assert [t.id for t in inspection.tokens[:3]] == [BOS_ID, BOS_ID, tokenizer.encode("Hi")[1]]


@pytest.mark.slow
def test_as_json_shape(tokenizer):
    data = inspect_messages(HELLO, tokenizer).as_json()
    assert list(data) == [
        "prompt",
        "tokens",
        "token_count",
        "bos_count",
        "warnings",
        "dropped_turns",
        "notes",  # issue 13: the fold note
    ]
    assert data["tokens"][0] == {"id": BOS_ID, "piece": "<bos>", "special": True}
    assert data["token_count"] == len(data["tokens"])


# ------------------------------------------------------------------------- export (no model)


def _assigned(code: str) -> dict[str, object]:
    """The literal values of the snippet's top-level `name = literal` assignments."""
    values = {}
    for node in ast.parse(code).body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            with contextlib.suppress(ValueError):
                values[node.targets[0].id] = ast.literal_eval(node.value)
    return values


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(temperature=0),
        SamplingParams(temperature=0.9, top_k=0, seed=5, stop=("###", "'\"\n")),
        SamplingParams(temperature=1.2, top_k=40, top_p=0.5, repetition_penalty=1.3),
    ],
)
def test_snippets_are_valid_python_holding_the_prompt_and_model(params):
    prompt = "Quotes ' \" and\nnewlines, ünïcode 😀 and a backslash \\"
    model = "/models/it's here"
    for library, code in export_code(prompt, params, model=model, end_ids=END_IDS).items():
        values = _assigned(code)  # also parses: a syntax error fails here
        assert values["prompt"] == "<bos>" + prompt, library
        assert values["model_dir"] == model
        if params.stop:
            assert values["stop_strings"] == list(params.stop)
        else:
            assert "stop_strings" not in values


def test_a_rendered_prompt_keeps_its_one_bos():
    prompt = render(HELLO).text
    for code in export_code(prompt, SamplingParams(), model="m", end_ids=END_IDS).values():
        assert _assigned(code)["prompt"] == prompt
        assert "add_special_tokens=False" in code


def test_greedy_and_sampled_settings_reach_the_snippets():
    greedy = export_code(
        "Hi", SamplingParams(temperature=0, max_new_tokens=7), model="m", end_ids=END_IDS
    )
    assert "do_sample=False" in greedy["optimum"] and "manual_seed" not in greedy["optimum"]
    assert (
        "rng_seed" not in greedy["openvino_genai"] and "do_sample" not in greedy["openvino_genai"]
    )
    assert "config.max_new_tokens = 7" in greedy["openvino_genai"]
    assert "max_new_tokens=7," in greedy["optimum"]
    params = SamplingParams(temperature=0.9, top_p=0.8, top_k=0, seed=5, repetition_penalty=1.1)
    sampled = export_code("Hi", params, model="m", end_ids=END_IDS)
    genai, optimum = sampled["openvino_genai"], sampled["optimum"]
    for line in ("do_sample = True", "temperature = 0.9", "top_p = 0.8", "rng_seed = 5"):
        assert f"config.{line}\n" in genai
    assert "config.top_k" not in genai  # top_k 0 is off
    assert "config.repetition_penalty = 1.1\n" in genai
    assert "torch.manual_seed(5)\n" in optimum
    assert "do_sample=True, temperature=0.9, top_p=0.8, top_k=None" in optimum
    assert (
        "config.top_k = 40\n"
        in export_code("Hi", params.with_(top_k=40), "m", end_ids=END_IDS)["openvino_genai"]
    )


def test_ov_config_reaches_both_snippets_only_when_given():
    f32 = {"INFERENCE_PRECISION_HINT": "f32", "KV_CACHE_PRECISION": "f32"}
    plain = export_code("Hi", SamplingParams(), model="m", end_ids=END_IDS)
    assert all("ov_config" not in code for code in plain.values())
    assert 'LLMPipeline(model_dir, "CPU")' in plain["openvino_genai"]
    tuned = export_code("Hi", SamplingParams(), model="m", ov_config=f32, end_ids=END_IDS)
    for code in tuned.values():
        assert _assigned(code)["ov_config"] == f32
    assert 'LLMPipeline(model_dir, "CPU", **ov_config)' in tuned["openvino_genai"]
    assert "from_pretrained(model_dir, ov_config=ov_config)" in tuned["optimum"]


def test_snippets_keep_special_tokens_and_drop_the_end_token():
    for code in export_code("Hi", SamplingParams(), model="m", end_ids=END_IDS).values():
        assert "skip_special_tokens=True" not in code
        assert "skip_special_tokens=False" in code
        assert "in [1, 107]" in code


# ---------------------------------------------------------------------- export, run for real

GREEDY = SamplingParams(max_new_tokens=12, temperature=0, repetition_penalty=1.0)
SAMPLED = SamplingParams(max_new_tokens=12, temperature=0.9, seed=5, top_k=0)
RAW = "The quick brown fox"
CHAT = render(HELLO).text
ENGINES = {"openvino_genai": "genai_engine", "optimum": "optimum_engine"}


def _run_snippet(code: str, directory) -> str:
    path = directory / "snippet.py"
    path.write_text(code, encoding="utf-8")
    env = {**os.environ, "PYTHONIOENCODING": "utf-8", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, str(path)], cwd=directory, env=env, capture_output=True, timeout=300
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    out = done.stdout.decode("utf-8")
    assert out.endswith("\n")
    return out[:-1]  # print()'s newline


def _check_snippet(request, tmp_path, settings, tiny_folder, library, prompt, params):
    """Run the snippet exported with the engines' own OpenVINO properties (conftest's f32: the
    CPU's bf16 default samples other tokens) and compare with the engine's text."""
    engine = request.getfixturevalue(ENGINES[library])
    expected = engine.generate(prompt, params).run()
    code = export_code(
        prompt,
        params,
        model=str(tiny_folder),
        ov_config=settings.ov_config,
        end_ids=engine.tokenizer.eos_ids,
    )[library]
    assert _run_snippet(code, tmp_path) == expected.text
    return expected


@pytest.mark.slow
@pytest.mark.parametrize("library", list(ENGINES))
@pytest.mark.parametrize("prompt", [CHAT, RAW], ids=["chat", "raw"])
@pytest.mark.parametrize("params", [GREEDY, SAMPLED], ids=["greedy", "sampled"])
def test_exported_snippet_prints_the_engines_text(
    request, tmp_path, settings, tiny_folder, library, prompt, params
):
    expected = _check_snippet(request, tmp_path, settings, tiny_folder, library, prompt, params)
    # The whole run, to the limit or to an end token (where a CPU's kernels sample one: seen at
    # token 9 of the sampled chat on an AMD EPYC); the snippet stopped there too.
    assert expected.text and (
        expected.new_tokens == 12 or expected.stop_reason in ("eos", "end_of_turn")
    )


@pytest.mark.slow
@pytest.mark.parametrize("library", list(ENGINES))
def test_exported_snippet_keeps_special_tokens_like_the_engine(
    request, tmp_path, settings, tiny_folder, library
):
    # Seeds at which the tiny model samples a special token (kept in the text, like <pad> or
    # <start_of_turn>) into text that is otherwise valid UTF-8.
    seed = {"openvino_genai": 127, "optimum": 304}[library]
    params = SamplingParams(
        max_new_tokens=24, temperature=1.5, top_p=1.0, top_k=0, repetition_penalty=1.0, seed=seed
    )
    expected = _check_snippet(request, tmp_path, settings, tiny_folder, library, "Hello", params)
    tokenizer = request.getfixturevalue(ENGINES[library]).tokenizer
    kept = tokenizer.special_ids - tokenizer.eos_ids
    assert any(i in kept for i in expected.token_ids), "precondition: a special token sampled"
    assert any(t in expected.text for t in CONTROL_TOKEN_TEXTS)


@pytest.mark.slow
@pytest.mark.parametrize("library", list(ENGINES))
def test_exported_snippet_leaves_out_the_end_token(
    request, tmp_path, settings, tiny_folder, library
):
    expected = _check_snippet(request, tmp_path, settings, tiny_folder, library, "s ", GREEDY)
    assert expected.stop_reason in ("eos", "end_of_turn"), "precondition: ends with an end id"
    assert expected.token_ids[-1] in (EOS_ID, END_ID)
    assert "<eos>" not in expected.text and "<end_of_turn>" not in expected.text


@pytest.mark.slow
@pytest.mark.parametrize("library", list(ENGINES))
def test_exported_snippet_cuts_at_the_stop_string_like_the_engine(
    request, tmp_path, settings, tiny_folder, library
):
    engine = request.getfixturevalue(ENGINES[library])
    full = engine.generate(CHAT, GREEDY).run().text
    stop = full[-3:]
    params = GREEDY.with_(stop=("never there", stop))
    expected = _check_snippet(request, tmp_path, settings, tiny_folder, library, CHAT, params)
    assert expected.stop_reason == "stop_string"
    assert expected.text == full[: full.index(stop)] and expected.text
