"""A prompt explained: rendered text, its tokens, warnings and the double-BOS trap.

Owns: joining `chat_format` (text) with `tokens` (ids) into what the template inspector and the
`render` command show.
Does not own: the template rules (`chat_format`), the tokenizer (`tokens`), the UI, the code
export (`export`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from playground.chat_format import (
    BOS,
    Budget,
    RenderOptions,
    fit_budget,
    prefill_whitespace_warning,
    render,
)
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
    return inspect_budget(budget, tokenizer, options.prefill)


def inspect_budget(budget: Budget, tokenizer: Tokenizer, prefill: str) -> Inspection:
    """A rendered (and fitted) prompt explained: the one route from messages to an inspection,
    for `/render`, the `render` command and the inspector (`session.Playground.inspect`)."""
    # fit_budget's warnings already name the dropped messages: add no second note.
    warnings = list(budget.rendered.warnings)
    if prefill_whitespace_warning(prefill):
        warnings.append(trailing_whitespace_tokens(budget.rendered.text, prefill, tokenizer))
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
    *,
    no_bos: bool = False,
) -> Inspection:
    """The token view of any prompt, as the engine will receive it: exactly one `<bos>`, or
    none at all when `no_bos` (the Raw tab's option)."""
    ids = tokenizer.encode_without_bos(prompt) if no_bos else tokenizer.encode(prompt)
    tokens = tokenizer.describe(ids)
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
