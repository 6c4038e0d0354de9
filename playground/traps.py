"""Engine traps: what a library or engine does to a correct Gemma prompt on its way to the model.

Owns: the five traps (`TRAPS`), each with what it does and where it was reported, the text it
sends (from the correct prompt and the conversation, a `Case`) and how that text reaches the
model (a `Delivery`: the ids the library built, the ids that end a reply, a stop sequence), and
the words for a delivery (`delivery_notes`). Each runs for real: texts and ids come from the
library named (OpenVINO GenAI's own tokenizer and template, `tokens.genai_tokenizer`; the
model's tokenizer), never from an imitation of it.
Does not own: the correct prompt (`session.Playground`), running it (`engines`), the fault lab's
columns (`compare`), a lesson cell's options (`notebook`), markup or the UI.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from playground.chat_format import BOS, END_OF_TURN, apply_system_policy
from playground.engines.base import AS_SENT, Delivery
from playground.errors import UserError, reason_of
from playground.tokens import Tokenizer, genai_ids, genai_tokenizer


@dataclass(frozen=True)
class Case:
    """What every trap starts from: the correct prompt (as the Chat tab sends it), the
    conversation it was rendered from, its prefill and fold separator, and the served model's
    folder and tokenizer."""

    prompt: str
    messages: Sequence[Mapping[str, str]]
    prefill: str
    fold_separator: str
    folder: Path
    tokenizer: Tokenizer

    def genai(self) -> Any:
        return genai_tokenizer(self.folder)

    def eos_only(self) -> frozenset[int]:
        return frozenset(self.tokenizer.eos_ids - {self.tokenizer.end_of_turn_id})


@dataclass(frozen=True)
class Trap:
    """One thing an engine does to a prompt: `text` is what it sends, `deliver` how."""

    title: str
    doc: str
    text: Callable[[Case], str]
    deliver: Callable[[Case, str], Delivery]


def apply(trap: Trap, case: Case) -> tuple[str, Delivery]:
    """The trap's text and delivery for `case`."""
    text = trap.text(case)
    return text, trap.deliver(case, text)


def _genai_template(case: Case, messages: list[dict[str, str]], generation_prompt: bool) -> str:
    """GenAI's own rendering of `messages`; its refusal (a C++ exception) in one line."""
    try:
        return case.genai().apply_chat_template(messages, add_generation_prompt=generation_prompt)
    except RuntimeError as error:
        why = reason_of(error)
        raise UserError(f"OpenVINO GenAI's template refused this conversation: {why}") from None


def _templated_twice(case: Case) -> str:
    """GenAI's `LLMPipeline.generate(str)` applies the chat template by default
    (`apply_chat_template = true`, GenAI PR 1533): the rendered prompt becomes a user message."""
    return _genai_template(case, [{"role": "user", "content": case.prompt}], True)


def _genai_ids(case: Case, text: str) -> Delivery:
    # What LLMPipeline then encodes: the templated text, special tokens not added again.
    return Delivery(ids=tuple(genai_ids(case.genai().encode(text, add_special_tokens=False))))


def _no_bos(case: Case, text: str) -> Delivery:
    return Delivery(ids=tuple(case.tokenizer.encode_without_bos(text)))


def _prefill_closed(case: Case) -> str:
    """The prefill as a last model message rendered with add_generation_prompt=False, by GenAI's
    own renderer (as OVMS offers it for prefill, model_server PR 4331)."""
    messages, _ = apply_system_policy(case.messages, "fold", fold_separator=case.fold_separator)
    messages.append({"role": "assistant", "content": case.prefill or "Sure,"})
    return _genai_template(case, messages, False)


def _stop_with_bos(case: Case, text: str) -> Delivery:
    # GenAI's Tokenizer.encode adds special tokens by default: [2, 107], not [107].
    ids = tuple(genai_ids(case.genai().encode(END_OF_TURN)))
    return Delivery(end_ids=case.eos_only(), stop_ids=(ids,))


TRAPS: dict[str, Trap] = {
    "templated-twice": Trap(
        "Templated twice",
        "The rendered prompt handed to OpenVINO GenAI's string API as a plain string: "
        "LLMPipeline.generate(str) applies the chat template by default "
        "(apply_chat_template=true since GenAI PR 1533; Ollama's /v1/completions templates "
        "too), so the whole prompt becomes one user message inside a second template. The "
        "tokens shown are the ones GenAI's own tokenizer builds.",
        _templated_twice,
        _genai_ids,
    ),
    "no-bos": Trap(
        "No <bos> at all",
        "Sent without any <bos>, as an engine that adds no special tokens does with a prompt "
        "that lacks one. Gemma-2-9b without BOS scored 0.266 on lambada, with perplexity 2,645 "
        "(lm-evaluation-harness PR 2049).",
        lambda case: case.prompt.removeprefix(BOS),
        _no_bos,
    ),
    "prefill-closed": Trap(
        "Prefill by add_generation_prompt=False",
        "The prefill sent as a last model message rendered with add_generation_prompt=False "
        "(GenAI's own renderer; OVMS offers this for prefill, model_server PR 4331). Gemma's "
        "template ends every message with <end_of_turn>, so the 'prefilled' reply is a closed "
        "turn: the model is not continuing it. transformers' continue_final_message is the "
        "way that works.",
        _prefill_closed,
        lambda case, text: AS_SENT,
    ),
    "end-of-turn-not-stop": Trap(
        "<end_of_turn> not a stop token",
        "The engine stops only on <eos>, although Gemma-2's generation_config says [1, 107]: "
        "the model ends its turn and writes on into turns it invents, up to max_new_tokens "
        "(LocalAI's transformers backend, mlx-vlm 244, tunix 842).",
        lambda case: case.prompt,
        lambda case, text: Delivery(end_ids=case.eos_only()),
    ),
    "stop-string-with-bos": Trap(
        "A stop string encoded with <bos>",
        "<end_of_turn> given as a stop string and encoded with the tokenizer's defaults, which "
        "add <bos>: the stop sequence becomes [<bos>, <end_of_turn>], which never occurs, so "
        "nothing stops the reply but <eos> or the limit (apple/coreai-models 25).",
        lambda case: case.prompt,
        _stop_with_bos,
    ),
}


def delivery_notes(delivery: Delivery, tokenizer: Tokenizer) -> list[str]:
    """What a trap sends besides its text, in words: where its ids come from and what ends its
    reply, against what the playground sends."""
    notes = []
    if delivery.ids is not None:
        first = [t.piece for t in tokenizer.describe(list(delivery.ids[:2]))]
        notes.append(f"Sent as the {len(delivery.ids)} ids the library built; they start {first}.")
    if delivery.end_ids is not None:
        notes.append(
            f"The reply ends only on ids {sorted(delivery.end_ids)}; the playground ends it on "
            f"{sorted(tokenizer.eos_ids)} (<eos> and <end_of_turn>)."
        )
    for ids in delivery.stop_ids:
        notes.append(
            f"Stop sequence as ids: {list(ids)}; <end_of_turn> alone is "
            f"[{tokenizer.end_of_turn_id}]."
        )
    return notes
