"""A prompt explained: rendered text, its tokens, warnings, the double-BOS trap and code export.

Owns: joining `chat_format` (text) with `tokens` (ids) into what the template inspector and the
`render` command show, and the export of a prompt plus sampling values as runnable Python (and,
on the remote engine, as the same completions request in curl and in OpenAI-client Python).
Does not own: the template rules (`chat_format`), the tokenizer (`tokens`), the UI.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from playground.chat_format import (
    BOS,
    Budget,
    RenderOptions,
    fit_budget,
    prefill_whitespace_warning,
    render,
)
from playground.sampling import SamplingParams
from playground.tokens import Token, Tokenizer


@dataclass(frozen=True)
class Inspection:
    prompt: str
    tokens: list[Token]
    bos_count: int
    warnings: list[str]
    dropped_turns: tuple[int, ...]
    naive_ids: list[int]  # the ids of tokenizing with special tokens added: the double-BOS trap
    notes: list[str] = field(default_factory=list)  # facts, not problems (a folded system)

    @property
    def token_count(self) -> int:
        return len(self.tokens)

    def as_json(self) -> dict:
        return {
            "prompt": self.prompt,
            "tokens": [{"id": t.id, "piece": t.piece, "special": t.special} for t in self.tokens],
            "token_count": self.token_count,
            "bos_count": self.bos_count,
            "warnings": self.warnings,
            "dropped_turns": list(self.dropped_turns),
            "notes": self.notes,
        }


def inspect_messages(
    messages: Sequence[Mapping[str, str]],
    tokenizer: Tokenizer,
    options: RenderOptions | None = None,
    *,
    context_size: int | None = None,
    max_new_tokens: int = 0,
) -> Inspection:
    """Render with the model's template (fitting the context when `context_size` is given)."""
    options = options or RenderOptions()
    template = tokenizer.chat_template
    if context_size is None:
        rendered = render(messages, options, template=template)
        budget = Budget(rendered, 0, (), 0)
    else:
        budget = fit_budget(
            messages,
            count_tokens=tokenizer.count,
            context_size=context_size,
            max_new_tokens=max_new_tokens,
            options=options,
            template=template,
        )
    # fit_budget's warnings already name the dropped messages: add no second note.
    warnings = list(budget.rendered.warnings)
    if prefill_whitespace_warning(options.prefill):
        prompt = budget.rendered.text
        warnings.append(trailing_whitespace_tokens(prompt, options.prefill, tokenizer))
    inspection = inspect_text(budget.rendered.text, tokenizer, warnings, budget.dropped_turns)
    inspection.notes.extend(budget.rendered.notes)
    return inspection


def trailing_whitespace_tokens(prompt: str, prefill: str, tokenizer: Tokenizer) -> str:
    """The prompt's last tokens with the prefill's trailing whitespace and without it."""
    trimmed = prompt[: len(prompt) - len(prefill) + len(prefill.rstrip())]
    with_ids, without_ids = tokenizer.encode(prompt), tokenizer.encode(trimmed)
    same = 0
    while same < min(len(with_ids), len(without_ids)) and with_ids[same] == without_ids[same]:
        same += 1
    start = max(0, same - 1)  # one shared token for context

    def shown(ids: list[int]) -> str:
        return ", ".join(f"{t.piece!r} ({t.id})" for t in tokenizer.describe(ids[start:]))

    return (
        f"the prefill's trailing whitespace in tokens: the prompt ends with {shown(with_ids)}; "
        f"without it, with {shown(without_ids)}."
    )


def inspect_text(
    prompt: str,
    tokenizer: Tokenizer,
    warnings: list[str] | None = None,
    dropped_turns: tuple[int, ...] = (),
) -> Inspection:
    """The token view of any prompt, as the engine will receive it (exactly one `<bos>`)."""
    tokens = tokenizer.tokens(prompt)
    bos_count = next((i for i, t in enumerate(tokens) if t.id != tokenizer.bos_id), len(tokens))
    return Inspection(
        prompt, tokens, bos_count, warnings or [], dropped_turns, tokenizer.encode_naively(prompt)
    )


def double_bos_note(inspection: Inspection, tokenizer: Tokenizer) -> str:
    """One paragraph on the double-BOS trap for this prompt."""
    naive = inspection.naive_ids
    doubled = naive[:2] == [tokenizer.bos_id, tokenizer.bos_id]
    if doubled:
        return (
            f"The rendered text already starts with {BOS}. Tokenizing it with special tokens added "
            f"(the default of most tokenizers) gives {naive[:4]}…: two {BOS} tokens, which "
            f"degrades Gemma's answers. The playground tokenizes without adding them, so the "
            f"model gets {[t.id for t in inspection.tokens[:4]]}…: exactly one."
        )
    return (
        f"Tokenizing this text with special tokens added gives {naive[:4]}…; the playground "
        f"sends {[t.id for t in inspection.tokens[:4]]}…: exactly one {BOS} either way."
    )


def export_code(
    prompt: str,
    params: SamplingParams,
    model: str,
    ov_config: Mapping[str, str] | None = None,
    end_ids: Sequence[int] = (1, 107),  # Gemma-2's <eos> and <end_of_turn>
    from_hub: bool = False,
) -> dict[str, str]:
    """Python that reproduces `prompt` with `params`: one snippet per library, runnable as is.

    Each snippet prints what the playground shows: the new text with special tokens kept (as the
    engine decodes them), without the end token that stopped it, cut before the first stop
    string. `model` is a local folder, or with `from_hub` a Hugging Face repo id that the
    snippet downloads first. `ov_config` holds the engine's OpenVINO properties (e.g. an f32
    precision hint): without them the CPU's defaults (bf16, a u8 KV cache) can sample other tokens.
    """
    if not prompt.startswith(BOS):
        prompt = BOS + prompt  # what the engine sends for raw text
    ids = ", ".join(str(i) for i in sorted(end_ids))
    ov_config = {str(k): str(v) for k, v in (ov_config or {}).items()}
    sampling = (
        "do_sample=False"
        if params.greedy
        else (
            f"do_sample=True, temperature={params.temperature}, top_p={params.top_p}, "
            f"top_k={params.top_k or 'None'}"
        )
    )
    genai_sampling = (
        ""
        if params.greedy
        else (
            f"config.do_sample = True\nconfig.temperature = {params.temperature}\n"
            f"config.top_p = {params.top_p}\nconfig.rng_seed = {params.seed}\n"
            + (f"config.top_k = {params.top_k}\n" if params.top_k else "")
        )
    )
    stop_strings = f"stop_strings = {list(params.stop)!r}\n" if params.stop else ""
    genai_stop = (
        "config.stop_strings = set(stop_strings)\n"
        "config.include_stop_str_in_output = True  # cut below, as the playground does\n"
        if params.stop
        else ""
    )
    optimum_stop = (
        "    stop_strings=stop_strings,\n    tokenizer=tokenizer,\n" if params.stop else ""
    )
    cut = (
        "for stop in stop_strings:  # the playground ends the text before the first one found\n"
        "    if stop in text:\n"
        "        text = text[: text.index(stop)]\n"
        "        break\n"
        if params.stop
        else ""
    )
    ov_config_line = f"ov_config = {ov_config!r}  # the playground's OpenVINO properties\n"
    model_line = (
        f"model_dir = snapshot_download({model!r})  # the OpenVINO IR folder, from the Hub"
        if from_hub
        else f"model_dir = {model!r}  # a local OpenVINO IR folder"
    )
    hub_import = "from huggingface_hub import snapshot_download\n" if from_hub else ""
    genai = f"""import openvino_genai as ov_genai
{hub_import}
{model_line}
prompt = {prompt!r}
{stop_strings}{ov_config_line if ov_config else ""}
pipe = ov_genai.LLMPipeline(model_dir, "CPU"{", **ov_config" if ov_config else ""})
config = ov_genai.GenerationConfig()
config.max_new_tokens = {params.max_new_tokens}
config.repetition_penalty = {params.repetition_penalty}
config.stop_token_ids = {{{ids}}}  # the model's end tokens
{genai_sampling}{genai_stop}# The prompt already starts with <bos>: add no second one.
tokenizer = pipe.get_tokenizer()
inputs = tokenizer.encode(prompt, add_special_tokens=False)
result = pipe.generate(inputs.input_ids, config)
new = list(result.tokens[0])
if new and new[-1] in [{ids}]:  # the end token that stopped generation is not text
    new.pop()
text = tokenizer.decode(new, skip_special_tokens=False)
{cut}print(text)
"""
    seed = "" if params.greedy else f"torch.manual_seed({params.seed})\n"
    optimum = f"""import torch
from optimum.intel import OVModelForCausalLM
from transformers import AutoTokenizer
{hub_import}
{model_line}
prompt = {prompt!r}
{stop_strings}{ov_config_line if ov_config else ""}
tokenizer = AutoTokenizer.from_pretrained(model_dir)
model = OVModelForCausalLM.from_pretrained(model_dir{", ov_config=ov_config" if ov_config else ""})
# The prompt already starts with <bos>: add no second one.
inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
{seed}output = model.generate(
    **inputs,
    max_new_tokens={params.max_new_tokens},
    repetition_penalty={params.repetition_penalty},
    eos_token_id=[{ids}],  # the model's end tokens
{optimum_stop}    {sampling},
)
new = output[0, inputs["input_ids"].shape[1] :].tolist()
if new and new[-1] in [{ids}]:  # the end token that stopped generation is not text
    new.pop()
text = tokenizer.decode(new, skip_special_tokens=False)
{cut}print(text)
"""
    return {"openvino_genai": genai, "optimum": optimum}


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
