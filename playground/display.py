"""Pure formatting for the UI: text in, safe markup or table rows out.

Owns: how prompts, messages, figures, the context meter and token tables look, and the rule that
user or model text is never live HTML: every function here escapes what it is given, and marks
Gemma's control tokens as visible, literal text.
Does not own: components or events (`ui`, the only package that imports gradio).
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence
from typing import Any

from playground.chat_format import CONTROL_TOKEN_TEXTS
from playground.engine import StopReason
from playground.tokens import Token

STOP_REASONS: dict[StopReason, str] = {
    "eos": "end of sequence",
    "end_of_turn": "end of turn",
    "max_new_tokens": "max new tokens reached",
    "stop_string": "stop string",
    "cancelled": "stopped by you",
}
_CONTROL = re.compile("|".join(re.escape(html.escape(t)) for t in CONTROL_TOKEN_TEXTS))


def escape(text: str) -> str:
    """Text for a Markdown or HTML component, shown literally (`<start_of_turn>` included)."""
    return html.escape(text, quote=True)


def toast_text(text: str) -> str:
    """A message for gr.Error, which renders HTML: markup escaped, quotes kept, since a toast's
    text is never inside an attribute and API clients read the same message."""
    return html.escape(text, quote=False)


def chat_display(turns: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """Chatbot messages: contents escaped (the Chatbot renders Markdown and hides unknown tags,
    `<start_of_turn>` among them), with each reply's figures under it."""
    shown = []
    for turn in turns:
        content = escape(turn["content"])
        if turn.get("figures"):
            content += f"\n\n<sub>{escape(figures_line(turn['figures']))}</sub>"
        shown.append({"role": turn["role"], "content": content})
    return shown


def figures_line(figures: Mapping[str, Any]) -> str:
    """One line of a reply's figures (see `session.figures_of`)."""
    reason = STOP_REASONS.get(figures["stop_reason"], str(figures["stop_reason"]))
    return (
        f"{figures['prompt_tokens']} prompt tokens · {figures['new_tokens']} new tokens · "
        f"first token {figures['ttft_s']:.2f} s · {figures['tokens_per_s']:.1f} tokens/s · "
        f"seed {figures['seed']} · {reason}"
    )


def context_meter(prompt_tokens: int, reserved: int, context_size: int) -> str:
    """An HTML meter of the context budget: the prompt plus the tokens reserved for the reply,
    out of the context size. Numbers only, nothing from the visitor."""
    used = max(0, min(prompt_tokens + reserved, context_size))
    percent = 100 * used / context_size
    return (
        f'<div class="meter"><progress value="{used}" max="{context_size}"></progress> '
        f"Context: {used} of {context_size} tokens ({percent:.1f}%): {prompt_tokens} in the "
        f"prompt + {reserved} reserved for the reply</div>"
    )


def marked_prompt(prompt: str) -> str:
    """The prompt as escaped HTML, control tokens highlighted and newlines shown as ↵."""
    body = _CONTROL.sub(lambda m: f'<span class="ctl">{m.group(0)}</span>', escape(prompt))
    body = body.replace("\n", '<span class="nl">↵</span>\n')
    return f'<pre class="prompt">{body}</pre>'


def visible_piece(piece: str) -> str:
    """A token's text with whitespace made visible, for the token table."""
    return piece.replace(" ", "·").replace("\n", "↵").replace("\t", "⇥")


def token_rows(tokens: Sequence[Token]) -> list[list[object]]:
    return [
        [i, t.id, visible_piece(t.piece), "yes" if t.special else ""] for i, t in enumerate(tokens)
    ]


def notes_markdown(
    errors: Sequence[str], warnings: Sequence[str], empty: str = "No problems found."
) -> str:
    lines = [f"**Error:** {escape(e)}" for e in errors]
    lines += [f"**Note:** {escape(w)}" for w in warnings]
    return "\n\n".join(lines) or empty


TOKEN_LEGEND = "`·` is a space, `↵` a newline and `⇥` a tab inside a token."
