"""Code export: a prompt and its sampling values as runnable code outside the playground.

Owns: the inspector's snippets (`export_code`: OpenVINO GenAI and optimum-intel Python), the
remote engine's request as curl and OpenAI-client Python (`remote_code`), and a lesson
notebook's code cells (`notebook_setup_code`, `notebook_run_code`), and how each finds its model
(`model_code`: tiny-tutor wherever the code runs, Colab included). Every snippet maps the
sampling values with `sampling.genai_options` / `sampling.transformers_options`, the very
mappings the engines use, and stops at the model's end ids as its tokenizer's config gives them.
Does not own: the prompt (`chat_format`, `inspection`), the notebook format (`notebook`).
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from playground.chat_format import BOS
from playground.models import TUTOR, looks_like_repo_id
from playground.sampling import SamplingParams, genai_options, transformers_options


def export_code(
    prompt: str,
    params: SamplingParams,
    model: str,
    ov_config: Mapping[str, str] | None = None,
    *,
    end_ids: Collection[int],
    from_hub: bool = False,
) -> dict[str, str]:
    """Python that reproduces `prompt` with `params`: one snippet per library, runnable as is.

    Each snippet prints what the playground shows: the new text with special tokens kept (as the
    engine decodes them), without the end token that stopped it, cut before the first stop
    string. `model` is a local folder, tiny-tutor (found where the code runs: `model_code`), or
    with `from_hub` a Hugging Face repo id that the snippet downloads first. `ov_config` holds
    the engine's OpenVINO properties (e.g. an f32 precision hint): without them the CPU's
    defaults (bf16, a u8 KV cache) can sample other tokens.
    `end_ids` are the model's end tokens, from its tokenizer's config.
    """
    if not prompt.startswith(BOS):
        prompt = BOS + prompt  # what the engine sends for raw text
    ids = ", ".join(str(i) for i in sorted(end_ids))
    ov_config = {str(k): str(v) for k, v in (ov_config or {}).items()}
    stop_strings = f"stop_strings = {list(params.stop)!r}\n" if params.stop else ""
    ov_config_line = f"ov_config = {ov_config!r}  # the playground's OpenVINO properties\n"
    # After each snippet's imports: the model, the prompt, the stop strings, the properties.
    inputs = (
        f"\n{model_code(model, from_hub)}\nprompt = {prompt!r}\n"
        f"{stop_strings}{ov_config_line if ov_config else ''}\n"
    )
    # After generation: the new ids, less the end token, as text cut at the first stop string.
    cut = (
        "for stop in stop_strings:  # the playground ends the text before the first one found\n"
        "    if stop in text:\n"
        "        text = text[: text.index(stop)]\n"
        "        break\n"
        if params.stop
        else ""
    )
    output = f"""if new and new[-1] in [{ids}]:  # the end token that stopped generation is not text
    new.pop()
text = tokenizer.decode(new, skip_special_tokens=False)
{cut}print(text)
"""
    return {
        "openvino_genai": _genai_snippet(params, ids, bool(ov_config), inputs, output),
        "optimum": _optimum_snippet(params, ids, bool(ov_config), inputs, output),
    }


def _genai_snippet(
    params: SamplingParams, ids: str, with_ov_config: bool, inputs: str, output: str
) -> str:
    config = "".join(f"config.{k} = {v!r}\n" for k, v in genai_options(params).items())
    stop = (
        "config.stop_strings = set(stop_strings)\n"
        "config.include_stop_str_in_output = True  # cut below, as the playground does\n"
        if params.stop
        else ""
    )
    return f"""import openvino_genai as ov_genai
{inputs}pipe = ov_genai.LLMPipeline(model_dir, "CPU"{", **ov_config" if with_ov_config else ""})
config = ov_genai.GenerationConfig()
config.stop_token_ids = {{{ids}}}  # the model's end tokens
{config}{stop}# The prompt already starts with <bos>: add no second one.
tokenizer = pipe.get_tokenizer()
inputs = tokenizer.encode(prompt, add_special_tokens=False)
result = pipe.generate(inputs.input_ids, config)
new = list(result.tokens[0])
{output}"""


def _optimum_snippet(
    params: SamplingParams, ids: str, with_ov_config: bool, inputs: str, output: str
) -> str:
    sampling = ", ".join(f"{k}={v!r}" for k, v in transformers_options(params).items())
    stop = "    stop_strings=stop_strings,\n    tokenizer=tokenizer,\n" if params.stop else ""
    seed = "" if params.greedy else f"torch.manual_seed({params.seed})\n"
    ov_config = ", ov_config=ov_config" if with_ov_config else ""
    return f"""import torch
from optimum.intel import OVModelForCausalLM
from transformers import AutoTokenizer
{inputs}tokenizer = AutoTokenizer.from_pretrained(model_dir)
model = OVModelForCausalLM.from_pretrained(model_dir{ov_config})
# The prompt already starts with <bos>: add no second one.
inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
{seed}output = model.generate(
    **inputs,
    max_new_tokens={params.max_new_tokens},
    repetition_penalty={params.repetition_penalty},
    eos_token_id=[{ids}],  # the model's end tokens
{stop}    {sampling},
)
new = output[0, inputs["input_ids"].shape[1] :].tolist()
{output}"""


# Where exported code for the remote engine names the server: the page never shows its address.
SERVER_PLACEHOLDER = "http://YOUR-SERVER:8080/v1"


def remote_code(request: Mapping[str, Any], base_url: str, api_key_env: str = "") -> dict[str, str]:
    """The remote engine's streamed completions request, as curl and as OpenAI-client Python.
    The API key is named by its environment variable, never written out."""
    extra = dict(request.get("extra_body") or {})
    body = {k: v for k, v in request.items() if k != "extra_body"} | extra
    key = f"${api_key_env}" if api_key_env else "none"
    header = f" \\\n  -H {shlex.quote(f'Authorization: Bearer {key}')}" if api_key_env else ""
    curl = (
        f"curl -N {shlex.quote(base_url + '/completions')} \\\n"
        f"  -H 'Content-Type: application/json'{header} \\\n"
        f"  -d {shlex.quote(json.dumps(body, ensure_ascii=False))}\n"
    )
    fields = {k: v for k, v in request.items() if k not in ("extra_body", "stream")}
    args = "".join(f"    {k}={v!r},\n" for k, v in fields.items())
    python = f"""import os

from openai import OpenAI

client = OpenAI(base_url={base_url!r}, api_key={
        f"os.environ[{api_key_env!r}]" if api_key_env else repr("none")
    })
stream = client.completions.create(
{args}    stream=True,
    extra_body={extra!r},  # fields of the server's own, beyond OpenAI's
)
for chunk in stream:
    print(chunk.choices[0].text if chunk.choices else "", end="", flush=True)
print()
"""
    return {"curl": curl, "openai": python}


def model_code(model: str, from_hub: bool, space_id: str | None = None) -> str:
    """The lines of exported code that set `model_dir`: a Hub id downloaded; tiny-tutor found
    wherever the code runs (`TUTOR_FINDER`), or else, for code from a Space (`space_id`, by
    default $SPACE_ID, which Hugging Face sets), downloaded from the Space's own files, or else a
    plain refusal that says what to do; else the folder as given."""
    if from_hub:
        return (
            "from huggingface_hub import snapshot_download\n\n"
            f"model_dir = snapshot_download({model!r})  # the OpenVINO IR folder, from the Hub\n"
        )
    if model != TUTOR:
        return f"model_dir = {model!r}  # a local OpenVINO IR folder\n"
    space_id = os.environ.get("SPACE_ID", "") if space_id is None else space_id
    fallback = _SPACE_DOWNLOAD.replace("SPACE", repr(space_id)) if space_id else _NOT_FOUND
    return TUTOR_FINDER.replace("    FALLBACK\n", fallback)


# tiny-tutor ships inside the playground's repository, not on the Hub as a model: code exported
# for it must find it outside a clone (issue 33: a path relative to the repository broke in
# Colab), and say plainly what to do when it can't.
TUTOR_FINDER = '''from pathlib import Path


def find_tiny_tutor():
    """tiny-tutor, the playground's 1 MB demo model: the folder $TINY_TUTOR names, the
    installed playground's copy, or a tiny-tutor folder (or a clone of the playground) here or
    in a folder above: in Colab, upload the folder to the files pane."""
    import os

    candidates = [Path(os.environ["TINY_TUTOR"])] if os.environ.get("TINY_TUTOR") else []
    try:
        from playground.tutor import TUTOR_DIR

        candidates.append(TUTOR_DIR)
    except ImportError:
        pass
    for folder in [Path.cwd(), *Path.cwd().parents]:
        candidates += [folder / "tiny-tutor", folder / "playground" / "tutor" / "tiny-tutor"]
    for candidate in candidates:
        if (candidate / "openvino_model.xml").is_file():
            return str(candidate)
    FALLBACK


model_dir = find_tiny_tutor()  # the OpenVINO IR folder of tiny-tutor
'''
_NOT_FOUND = """    raise SystemExit(
        "tiny-tutor not found: copy the folder playground/tutor/tiny-tutor of the Gemma-2 "
        "OpenVINO Playground here (in Colab, upload it to /content), or set TINY_TUTOR to it."
    )
"""
_SPACE_DOWNLOAD = """    from huggingface_hub import snapshot_download

    space = snapshot_download(
        SPACE, repo_type="space", allow_patterns=["playground/tutor/tiny-tutor/*"]
    )  # the playground's Space on the Hub, which ships it
    return str(Path(space) / "playground" / "tutor" / "tiny-tutor")
"""


def notebook_setup_code(model: str, ov_config: Mapping[str, str], end_ids: Collection[int]) -> str:
    """A notebook's first cell: the pipeline on `model` (a Hub id it downloads, tiny-tutor or
    a folder) and `run(prompt, **options)`, which generates as the playground does."""
    fetch = model_code(model, looks_like_repo_id(model) and not Path(model).expanduser().is_dir())
    config = f", **{dict(ov_config)!r}" if ov_config else ""
    ends = set(end_ids)
    return f'''import openvino_genai as ov_genai

{fetch}
pipe = ov_genai.LLMPipeline(model_dir, "CPU"{config})
tokenizer = pipe.get_tokenizer()


def run(prompt, **options):
    """Generate as the playground does: the prompt has its one <bos> already, generation ends
    at the model's end tokens, and special tokens stay in the text."""
    config = ov_genai.GenerationConfig(**options)
    config.stop_token_ids = {ends!r}
    ids = tokenizer.encode(prompt, add_special_tokens=False).input_ids
    new = list(pipe.generate(ids, config).tokens[0])
    if new and new[-1] in {ends!r}:
        new.pop()
    print(tokenizer.decode(new, skip_special_tokens=False))
'''


def notebook_run_code(prompt: str, params: SamplingParams) -> str:
    """A prompt cell's code: `run` (from `notebook_setup_code`) on the prompt with `params`."""
    if not prompt.startswith(BOS):
        prompt = BOS + prompt  # what the engine sends for raw text
    args = ",\n".join(f"    {k}={v!r}" for k, v in genai_options(params).items())
    return f"run(\n    {prompt!r},\n{args},\n)"
