"""Pure formatting for the UI: text in, safe markup or table rows out.

Owns: how prompts, messages, figures, the context meter and token tables look, and the rule that
user or model text is never live HTML: every function here escapes what it is given, and marks
Gemma's control tokens as visible, literal text. A visitor's own message is shown as typed, not
even as Markdown (`literal`, and `from_literal` for the text a chat edit sends back).
Does not own: components or events (`ui`, the only package that imports gradio).
"""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from playground.chat_format import CONTROL_TOKEN_TEXTS, END_OF_TURN
from playground.divergence import SIMILARITY_NOTE, gaps
from playground.engines import Reading, StopReason
from playground.models import BUILTIN_MODELS, TUTOR
from playground.renderers import CANONICAL
from playground.sampling import stop_list
from playground.tokens import Token

if TYPE_CHECKING:
    from playground.divergence import Divergence
    from playground.inspection import Inspection
    from playground.renderers import Rendering

STOP_REASONS: dict[StopReason, str] = {
    "eos": "end of sequence",
    "end_of_turn": "end of turn",
    "max_new_tokens": "max new tokens reached",
    "stop_string": "stop string",
    "cancelled": "stopped by you",
    "engine_stopped": "the engine stopped mid-reply and has restarted: send again to go on",
    "server_context": "cut off by the server's context",
}
_CONTROL = re.compile("|".join(re.escape(html.escape(t)) for t in CONTROL_TOKEN_TEXTS))


def escape(text: str) -> str:
    """Text for a Markdown or HTML component, shown literally (`<start_of_turn>` included).
    A Markdown image (`![alt](url)`) stays text too: the `!` as an entity cannot start one, so
    a visitor's or the model's text never makes a browser fetch what it points at."""
    return html.escape(text, quote=True).replace("![", "&#33;[")


# ASCII punctuation that `literal` always encodes: what makes HTML, an entity, emphasis, code, a
# link or image, a table, LaTeX or an e-mail link anywhere in a line. The rest of it means
# something only where `_markup` says (the start of the message, `http://`, `www.`).
_ALWAYS = frozenset("\\`*_{}[]<>&|~$^@")
_AT_START = frozenset("#-+=")  # a heading, a list or a rule
_C1 = range(0x80, 0xA0)  # a numeric reference to one is read as Windows-1252 (`&#133;` is "…")


def literal(text: str) -> str:
    """A visitor's text for the Chatbot, which renders Markdown, HTML and LaTeX: shown exactly as
    typed (spaces and newlines too, with `ui.chat.CSS`'s pre-wrap) and making no element. Every
    whitespace but a lone space between two other characters, and each punctuation mark that
    could start markup (`_markup`), becomes a numeric reference: the Markdown sees one line of
    words, plain punctuation and references, which is one paragraph of text. The chat's edit
    box sends its text back as references too (`chat.LITERAL_EDITS`); `from_literal` undoes
    them. Letters, digits and prose punctuation stay as they are, for the Chatbot's copy button
    and its screen-reader label, which show the message as sent."""
    shown = []
    for i, c in enumerate(text):
        if c.isspace() and ord(c) not in _C1:
            lone = c == " " and 0 < i < len(text) - 1
            keep = lone and not (text[i - 1].isspace() or text[i + 1].isspace())
        else:
            keep = ord(c) > 0x7F or c.isalnum() or not _markup(text, i)
        shown.append(c if keep else f"&#{ord(c)};")
    return "".join(shown)


def _markup(text: str, i: int) -> bool:
    """Whether the ASCII character at `i` could start markup in a line that has no newline."""
    c = text[i]
    if c in _ALWAYS or (i == 0 and c in _AT_START) or not c.isprintable():
        return True
    if c == ":":  # a link's scheme
        return text[i + 1 : i + 2] == "/"
    if c in ".)":  # `1.` or `1)` starts a list; `www.` a link
        return text[:i].isdigit() or (c == "." and text[max(0, i - 3) : i].lower() == "www")
    return False


def from_literal(shown: str) -> str:
    """The text `literal` (or the chat's edit box) made `shown` from: numeric references undone,
    and only those, so typed `&lt;` stays `&lt;`."""
    return re.sub(
        r"&#(\d{1,7});",
        lambda m: chr(int(m[1])) if int(m[1]) <= 0x10FFFF else m[0],
        shown,
    )


def toast_text(text: str) -> str:
    """A message for gr.Error, which renders HTML: markup escaped, quotes kept, since a toast's
    text is never inside an attribute and API clients read the same message."""
    return html.escape(text, quote=False)


def chat_display(
    turns: Sequence[Mapping[str, Any]], reading: Reading | None = None
) -> list[dict[str, str]]:
    """Chatbot messages: the visitor's shown as typed (`literal`), replies escaped (the Chatbot
    renders their Markdown and hides unknown tags, `<start_of_turn>` among them), with each
    reply's figures under it, and under a last reply that has none yet, how far the engine has
    read the prompt (`reading`)."""
    shown = []
    for i, turn in enumerate(turns):
        user = turn["role"] == "user"
        content = literal(turn["content"]) if user else escape(turn["content"])
        last = reading if i == len(turns) - 1 and turn["role"] == "assistant" else None
        if line := reply_line(turn.get("figures"), last):
            content += f"\n\n<sub>{escape(line)}</sub>"
        shown.append({"role": turn["role"], "content": content})
    return shown


def figures_line(figures: Mapping[str, Any]) -> str:
    """One line of a reply's figures (see `session.figures_of`)."""
    reason = STOP_REASONS.get(figures["stop_reason"], str(figures["stop_reason"]))
    drafts = ""
    if figures.get("accepted_drafts") is not None:
        drafts = f"prompt lookup: {figures['accepted_drafts']} draft tokens accepted · "
    new = figures["new_tokens"]
    return (
        f"{figures['prompt_tokens']} prompt tokens · {new} new token{'' if new == 1 else 's'} · "
        f"first token {figures['ttft_s']:.2f} s · {figures['tokens_per_s']:.1f} tokens/s · "
        f"{drafts}seed {figures['seed']} · {reason}"
    )


def reply_line(figures: Mapping[str, Any] | None, reading: Reading | None) -> str:
    """The line under a reply: its figures once it is done; before its first token, how far the
    engine has read the prompt (on the 9B, the longest wait of a reply); else nothing."""
    if figures:
        return figures_line(figures)
    if reading:
        return f"reading the prompt: {reading.read:,} of {reading.of:,} tokens…"
    return ""


# A continuation that ended with its first token, by what ended it: the model ended its turn,
# which a question sent without Gemma's turns around it often makes it do (issue 33).
_ENDED_AT_ONCE = {
    "end_of_turn": "The model ended its turn at once: its first token was <end_of_turn>",
    "eos": "The model ended at once: its first token was an end-of-sequence token",
}
ENDED_AT_ONCE_HINT = (
    "so there is no continuation. Raw text gets no chat template: to have the model answer a "
    "question, write Gemma's turns around it: <start_of_turn>user, a new line, the question, "
    "<end_of_turn>, a new line, then <start_of_turn>model and a new line."
)


def ended_at_once(text: str, figures: Mapping[str, Any] | None) -> str:
    """Why a finished continuation is empty, when the model ended it with its very first token
    (else nothing): plain text, for a note under the figures."""
    if not figures or text or figures.get("new_tokens", 0) > 1:
        return ""
    said = _ENDED_AT_ONCE.get(figures.get("stop_reason", ""))
    return f"{said}, {ENDED_AT_ONCE_HINT}" if said else ""


def model_label(name: str) -> str:
    """How the page names the served model (`EngineInfo.model`: a built-in name, a Hub repo id
    or a folder): the shipped stand-in as "tiny-tutor (demo model)", anything of the 9B as
    "Gemma-2-9b-it", a random-weight model with its weights named, else the repo's or folder's
    own name. Plain text: escape it for markup."""
    if name == TUTOR:
        return f"{TUTOR} (demo model)"
    if name in BUILTIN_MODELS:
        return f"{name} (random weights)"
    own = name.rstrip("/\\").replace("\\", "/").rsplit("/", 1)[-1]
    if re.search(r"gemma-2-9b-it", own, re.IGNORECASE):
        return "Gemma-2-9b-it"
    return own or "the model"


def banner_html(notice: str) -> str:
    """The fallback banner: the notice's first line always shown, whole; the rest behind a
    "Details" toggle (a tap on a phone). Escaped; `code` spans become <code>."""
    head, _, details = (_code(escape(part.strip())) for part in notice.partition("\n"))
    if not details:
        return f'<div class="banner-head">⚠️ {head}</div>'
    return (
        f'<details class="banner-details"><summary class="banner-head">⚠️ {head} '
        f'<span class="banner-more">Details</span></summary><p>{details}</p></details>'
    )


def _code(escaped: str) -> str:
    # Safe on escaped text only: it holds no markup the spans could close or open.
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)


def stop_note(stop: str | None) -> str:
    """The note each generating tab shows while the sidebar holds stop strings: they end every
    run of every tab, a Chat reply included, not only the run they were set for (issue 33).
    Each string quoted as JSON, so spaces and tabs show; escaped. Nothing when there are none."""
    stops = [s for s in stop_list(stop or "") if s]
    if not stops:
        return ""
    quoted = ", ".join(escape(json.dumps(s, ensure_ascii=False)) for s in stops)
    return (
        f'<p class="stop-note">✂️ Stop strings are on (set in the sidebar; they apply to every '
        f"tab): a reply or continuation ends where one appears: {quoted}</p>"
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
    return f'<pre class="prompt">{_marked(prompt)}</pre>'


def _marked(text: str) -> str:
    body = _CONTROL.sub(lambda m: f'<span class="ctl">{m.group(0)}</span>', escape(text))
    return body.replace("\n", '<span class="nl">↵</span>\n')


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


def raw_checks(inspection: Inspection, prompt: str, notes: Sequence[str]) -> str:
    """A raw prompt's checks: its token count, then its notes (`raw_notes`), as Markdown."""
    counts = f"**{inspection.token_count} tokens** as sent ({len(prompt)} characters)."
    return "\n\n".join([counts, notes_markdown([], raw_notes(inspection, notes), empty="")]).strip()


def raw_notes(inspection: Inspection, notes: Sequence[str]) -> list[str]:
    """A raw prompt's notes, plain text (the Raw tab's and the command line's): the
    inspection's warnings, then `notes` (`bos_notes`, control-token texts)."""
    return [*inspection.warnings, *notes]


def bos_notes(inspection: Inspection, doubled_unchanged: str, missing_unchanged: str) -> list[str]:
    """What a raw prompt's `<bos>` count means: more than one, or none (the Raw tab's "no <bos>"
    option). `*_unchanged` name the served model when it was measured to reply the same
    (`Playground.unchanged_by`)."""
    if inspection.bos_count > 1:
        effect = (
            f"{doubled_unchanged} replies the same with more (measured), a larger model may not"
            if doubled_unchanged
            else "more are input it never saw, which can change its replies"
        )
        return [
            f"The text starts with {inspection.bos_count} <bos> tokens: the model gets them all. "
            f"Gemma was trained with exactly one; {effect}. Remove the extra ones."
        ]
    if inspection.bos_count == 0:
        effect = (
            f"{missing_unchanged} replies the same without it (measured), a larger model may not"
            if missing_unchanged
            else "Gemma-2-9b without it scored 0.266 on lambada, with perplexity 2,645 "
            "(lm-evaluation-harness PR 2049)"
        )
        return [f"Sent with no <bos> at all: Gemma was trained with exactly one first; {effect}."]
    return []


# What each figure of the Model tab means, in a line a newcomer can read (issue 33: "6,249,856
# tokens" beside "Context size: 8192" said nothing).
MEANINGS = {
    "Model": "the weights that write the replies",
    "Engine": "the code that runs them",
    "Device": "the hardware it runs on",
    "OpenVINO": "the version of Intel's library that runs the model",
    "Load time": "reading the model and compiling it for this CPU when the app started",
    "Compiled-model cache": "the model compiled for this CPU, kept on disk so a restart is quicker",
    "CPU": "the processor; VNNI and AMX are what make 4-bit (int4) weights fast",
    "Context size": "the most the model reads at once: the prompt and its reply together (a "
    "token is a word, a piece of one or a character); past it, the oldest turns are left out",
}


def figure(label: str, value: str) -> str:
    """One line of the Model tab: a figure (`value`, already escaped) and what it means."""
    return f"- **{label}:** {value} — {MEANINGS[label]}"


def model_lines(
    info: Any, context_size: int, cpu: Any, warm_up: Any | None, in_process: bool
) -> list[str]:
    """The Model tab's lines on what is served (`EngineInfo`), each with its plain meaning:
    the model and engine, and for a model run in this process (`in_process`) its device,
    OpenVINO, load time, cache and this machine (`machine_lines`); then the context size."""
    lines = [figure("Model", f"`{escape(info.model)}`"), figure("Engine", escape(info.kind))]
    if in_process:
        cache = "used" if info.cache_used else "empty at start (now filled)"
        lines += [
            figure("Device", escape(info.device)),
            figure("OpenVINO", escape(info.openvino_version)),
            figure("Load time", f"{info.load_s:.2f} s"),
            figure("Compiled-model cache", cache),
            *machine_lines(cpu, warm_up),
        ]
    return [*lines, figure("Context size", f"{context_size:,} tokens")]


def machine_lines(cpu: Any, warm_up: Any | None) -> list[str]:
    """The Model tab's lines on this machine: the CPU and the flags that decide int4 speed
    (`machine.Cpu`), the decode speed the warm-up measured (a `GenerationResult`), and, on a
    CPU without VNNI, where a faster int4 engine is."""
    lines = [figure("CPU", escape(cpu.describe()))]
    if warm_up is not None and warm_up.new_tokens > 1:
        lines.append(
            f"- **Measured at start:** {warm_up.tokens_per_s:.1f} tokens/s decoding one reply "
            f"alone ({warm_up.new_tokens} tokens, the warm-up); visitors at once share it"
        )
    if not cpu.has_vnni:
        lines.append(
            "- **On this CPU:** llama.cpp's server behind the remote engine decoded int4 "
            "1.5 to 2.1× faster than OpenVINO on a CPU without VNNI (measured, BENCHMARKS.md); "
            "see docs/serving.md in the playground's repository"
        )
    return lines


def probability_view(
    tokens: Sequence[Mapping[str, Any]], note: str = "the model's probabilities."
) -> str:
    """A reply's tokens, each tinted by how likely the model thought it (the unsure ones
    red), with its probability and any alternatives on hover or tap; then the line on
    P(`end_of_turn`) at the reply's end. `note` says what the probabilities are on the engine
    that made them (`Engine.probability_note`). Every token's text is escaped."""
    if not tokens:
        return ""
    spans = "".join(_token_span(t) for t in tokens)
    return (
        '<div class="probs">'
        f'<p class="probs-note">The less likely a token, the redder: {escape(note)} '
        "Hover or tap a token for its probability.</p>"
        f'<div class="probs-text">{spans}</div>'
        f'<p class="probs-eot">{escape(end_of_turn_line(tokens))}</p></div>'
    )


def _token_span(token: Mapping[str, Any]) -> str:
    logprob = token.get("logprob")
    if logprob is None:
        return f'<span class="tok">{escape(token["token"])}</span>'
    p = math.exp(logprob)
    tip = f"p = {_percent(p)}"
    if token.get("top_logprobs"):
        tip += " · likeliest: " + ", ".join(
            f"{_quoted(t['token'])} {_percent(math.exp(t['logprob']))}"
            for t in token["top_logprobs"]
        )
    # Sure tokens stay clear; the less likely, the redder.
    tint = f"background: rgba(239, 68, 68, {0.6 * (1 - p):.2f})"
    return (
        f'<span class="tok" tabindex="0" style="{tint}" data-tip="{escape(tip)}">'
        f"{escape(token['token'])}</span>"
    )


def end_of_turn_line(tokens: Sequence[Mapping[str, Any]], end_of_turn: str = END_OF_TURN) -> str:
    """How likely `end_of_turn` was at the reply's last step: the teaching number of the
    chat format, since a model that has learned it ends its turns surely."""
    last = tokens[-1]
    if last["token"] == end_of_turn and last.get("logprob") is not None:
        return (
            f"P({end_of_turn}) at the last step: {_percent(math.exp(last['logprob']))}: "
            "the model chose to end its turn."
        )
    among = [t for t in last.get("top_logprobs", []) if t["token"] == end_of_turn]
    if among:
        p = _percent(math.exp(among[0]["logprob"]))
        return f"P({end_of_turn}) at the last step: {p}: the model had not finished its turn."
    if last.get("top_logprobs"):
        return f"{end_of_turn} was not among the 5 likeliest tokens at the last step."
    return (
        f"The reply did not end with {end_of_turn}; this engine gives only the chosen "
        "token's probability, so its chance at the last step is not known."
    )


def _percent(p: float) -> str:
    return f"{100 * p:.1f}%" if p >= 0.001 else f"{p:.1e}"


def _quoted(piece: str) -> str:
    return f"“{visible_piece(piece)}”"


TOKEN_LEGEND = "`·` is a space, `↵` a newline and `⇥` a tab inside a token."


def diff_prompt(runs: Sequence[tuple[str, Sequence[Token]]]) -> str:
    """A prompt's tokens against the reference column's (`compare.token_diff`): tokens it adds
    marked as inserted, tokens it lacks struck through, control tokens highlighted as in
    `marked_prompt`; every piece escaped."""
    spans = []
    for kind, tokens in runs:
        body = _marked("".join(t.piece for t in tokens))
        if kind == "same":
            spans.append(body)
        else:
            tag = "ins" if kind == "added" else "del"
            spans.append(f'<{tag} class="diff-{kind}">{body}</{tag}>')
    return f'<pre class="prompt">{"".join(spans)}</pre>'


def unchanged_note(model: str) -> str:
    """The note beside a fault that the served model (`EngineInfo.model`) was measured to reply
    to as it does to the correct prompt: plain text."""
    return (
        f"On {model_label(model)}, this fault leaves the reply as it is (measured): here the "
        "marked prompt is all it changes. A larger model may reply otherwise."
    )


def difference_line(position: int | None, text: str, column: int) -> str:
    """Where a column's output parts from column 1's (`compare.first_difference`)."""
    if column == 1:
        return "The reference column: the others are compared with it."
    if position is None:
        return "Same output as column 1."
    shown = visible_piece(text[position : position + 24]) or "(its output ends here)"
    return f"Parts from column 1 at character {position}: “{shown}…”"


# The divergence plot's drawing box (its viewBox): the two logprob lines PLOT_H high, then a strip
# GAP_H high of the gap at each token, scaled to the largest (two engines' logprobs of the same
# token differ by 1e-4 to 0.05 on tiny-tutor: invisible on the lines' scale). The page stretches
# it to the column's width and PLOT_HEIGHT_PX high, and the strokes keep their width
# (non-scaling-stroke). Its words are HTML beside it, so they stay readable however narrow the
# column (400 px: a phone).
PLOT_W, PLOT_H, GAP_H, PLOT_HEIGHT_PX = 400, 100, 30, 160
REFERENCE_COLOUR, OTHER_COLOUR, GAP_COLOUR = "#2563eb", "#d97706", "#ef4444"


def divergence_lines(
    parts_at: int | None,
    pieces: tuple[str | None, str | None],
    similarity: float,
    exact: bool,
    gap: Sequence[float] | None,
    same_prompt: bool = True,
) -> list[str]:
    """A divergence in plain sentences (`divergence.Divergence`, or its JSON): where the outputs
    part and the two tokens there (`pieces`: column 1's, this column's), the similarity, and
    the largest logprob gap (position, size) before the parting."""
    if parts_at is None:
        head = "Same tokens as column 1, all the way."
    else:
        ours = _quoted(pieces[1]) if pieces[1] is not None else "its output ends"
        theirs = _quoted(pieces[0]) if pieces[0] is not None else "column 1's ends"
        head = f"Parts from column 1 at token {parts_at} ({ours} here, {theirs} in column 1)."
    figure_ = f"{similarity:.3f}" + ("" if exact else " at least")
    lines = [head, f"Similarity {figure_}: {SIMILARITY_NOTE}."]
    if gap:
        where = "before that" if parts_at is not None else "anywhere"
        lines.append(f"Largest logprob gap {where}: {gap[1]:.4f}, at token {int(gap[0])}.")
    if not same_prompt:
        lines.append("The prompts differ too: this mixes the engines' difference with theirs.")
    return lines


def divergence_line(data: Mapping[str, Any]) -> str:
    """`compare.divergence_data` as one line of plain text (the command line's)."""
    if not data.get("greedy"):
        return str(data.get("note", ""))
    pieces = (data.get("reference_piece"), data.get("piece"))
    return " ".join(divergence_lines(data["parts_at"], pieces, data["similarity"],
                                     data["similarity_exact"], data["largest_gap"]))  # fmt: skip


def divergence_view(
    divergence: Divergence,
    pieces: tuple[str | None, str | None],
    labels: tuple[str, str],
    same_prompt: bool = True,
) -> str:
    """A column's greedy run against column 1's on another engine (`divergence.divergence`):
    `divergence_lines` and `divergence_plot`; `labels` name the two engines. Everything from
    the model or a visitor is escaped."""
    d = divergence
    lines = divergence_lines(d.parts_at, pieces, d.similarity, d.exact, d.largest_gap, same_prompt)
    body = "".join(f"<p>{escape(line)}</p>" for line in lines)
    return f'<div class="divergence">{body}{divergence_plot(divergence, labels)}</div>'


def divergence_plot(divergence: Divergence, labels: tuple[str, str]) -> str:
    """Each position's logprob on both runs as two lines (the gap between them shaded, the
    parting dashed, what lies past it greyed: there the tokens differ), under them the gap at
    each token before the parting as bars, and its legend."""
    series = (divergence.reference_logprobs, divergence.logprobs)
    known = [v for s in series for v in s if v is not None]
    if not known:
        return "<p>Neither engine gave logprobs: nothing to plot.</p>"
    low = min(min(known), -0.1)  # the top is 0 (probability 1); all-certain runs still show
    count = max(map(len, series))
    at = divergence.parts_at

    def x(i: int) -> float:
        return i * PLOT_W / (count - 1) if count > 1 else 0.0

    shapes = _line_shapes(series, x, lambda v: v / low * PLOT_H, at)
    bars, largest = _gap_bars(series, x, at)
    height = PLOT_H + 6 + GAP_H
    said = f"logprob per token on both engines, 0 at the top to {low:.2f} at the bottom"
    svg = (f'<svg class="divergence-plot" role="img" aria-label="{escape(said)}" '
           f'viewBox="0 0 {PLOT_W} {height}" preserveAspectRatio="none" width="100%" '
           f'height="{PLOT_HEIGHT_PX}">{"".join(shapes + bars)}</svg>')  # fmt: skip
    parted = "; dashed: where they part, grey past it (other tokens)" if at is not None else ""
    gap = f"; red bars: the gap at each token, up to {largest:.4f}" if largest else ""
    legend = (
        f'<span style="color:{REFERENCE_COLOUR}">━ column 1: {escape(labels[0])}</span> · '
        f'<span style="color:{OTHER_COLOUR}">━ this column: {escape(labels[1])}</span><br>'
        f"{escape(said.capitalize())}, token 0 to {count - 1}{parted}{gap}."
    )
    return f'{svg}<p class="divergence-legend">{legend}</p>'


def _line_shapes(
    series: tuple[Sequence[float | None], ...],
    x: Callable[[int], float],
    y: Callable[[float], float],
    at: int | None,
) -> list[str]:
    """The plot's lines: grey past the parting `at`, the gap shaded, both runs, the parting."""
    shapes = []
    if at is not None:
        shapes.append(f'<rect x="{x(at):.1f}" y="0" width="{PLOT_W - x(at):.1f}" '
                      f'height="{PLOT_H}" fill="#e5e7eb"/>')  # fmt: skip
    both = [(i, a, b) for i, (a, b) in enumerate(zip(*series, strict=False))
            if a is not None and b is not None]  # fmt: skip
    if both:
        edge = [f"{x(i):.1f},{y(a):.2f}" for i, a, _ in both]
        edge += [f"{x(i):.1f},{y(b):.2f}" for i, _, b in reversed(both)]
        shapes.append(f'<polygon points="{" ".join(edge)}" fill="{GAP_COLOUR}" '
                      'fill-opacity="0.35" stroke="none"/>')  # fmt: skip
    for values, colour in zip(series, (REFERENCE_COLOUR, OTHER_COLOUR), strict=True):
        for run in _runs(values):
            points = " ".join(f"{x(i):.1f},{y(v):.2f}" for i, v in run)
            shapes.append(f'<polyline points="{points}" fill="none" stroke="{colour}" '
                          'stroke-width="2" vector-effect="non-scaling-stroke"/>')  # fmt: skip
    if at is not None:
        shapes.append(f'<line x1="{x(at):.1f}" x2="{x(at):.1f}" y1="0" y2="{PLOT_H + 6 + GAP_H}" '
                      'stroke="#111827" stroke-dasharray="4 3" '
                      'vector-effect="non-scaling-stroke"/>')  # fmt: skip
    return shapes


def _gap_bars(
    series: tuple[Sequence[float | None], ...], x: Callable[[int], float], at: int | None
) -> tuple[list[str], float]:
    """The strip under the lines: |Δ logprob| at each token both runs scored before the
    parting (after it they scored other tokens), scaled to the largest; and that largest."""
    a, b = series
    found = gaps(a, b, at)
    largest = max((g for _, g in found), default=0.0)
    top = PLOT_H + 6
    bars = [f'<rect x="0" y="{top}" width="{PLOT_W}" height="{GAP_H}" fill="#fef2f2"/>']
    if largest > 0:
        width = max(PLOT_W / max(len(a), len(b), 1) * 0.6, 1.0)
        for i, gap in found:
            h = gap / largest * GAP_H
            bars.append(f'<rect x="{x(i) - width / 2:.1f}" y="{top + GAP_H - h:.2f}" '
                        f'width="{width:.1f}" height="{h:.2f}" fill="{GAP_COLOUR}"/>')  # fmt: skip
    return bars, largest


def _runs(values: Sequence[float | None]) -> list[list[tuple[int, float]]]:
    """(position, value) runs of `values` between the positions that have none."""
    runs: list[list[tuple[int, float]]] = [[]]
    for i, value in enumerate(values):
        if value is None:
            runs.append([])
        else:
            runs[-1].append((i, value))
    return [run for run in runs if run]


def renderers_view(renderings: Sequence[Rendering]) -> str:
    """The renderers side by side (`renderers.compare_renderers`): each one's label and name,
    its text with control tokens marked (`marked_prompt`), its token count with the ids a click
    away, and its named differences from the canonical rendering, or in one line why it can't
    run here. Every text, the visitor's included, is escaped."""
    sections = []
    for r in renderings:
        parts = [f"<h4>{escape(r.label)} <code>{escape(r.name)}</code></h4>"]
        if r.unavailable:
            parts.append(f"<p>Unavailable here: {escape(r.unavailable)}</p>")
        if r.text is not None and r.ids is not None:
            ids = ", ".join(map(str, r.ids))
            parts.append(marked_prompt(r.text))
            parts.append(
                f"<details><summary>{len(r.ids)} tokens</summary>"
                f'<pre class="prompt">{ids}</pre></details>'
            )
        if r.name == CANONICAL:
            parts.append("<p>The reference: each renderer below is compared with it.</p>")
        elif r.differences:
            items = "".join(
                f"<li><strong>{escape(d.kind)}</strong>: {escape(d.explanation)}</li>"
                for d in r.differences
            )
            parts.append(f"<ul>{items}</ul>")
        elif not r.unavailable:
            parts.append("<p>The same text as the canonical rendering.</p>")
        sections.append(f'<section class="renderer">{"".join(parts)}</section>')
    return f'<div class="renderers">{"".join(sections)}</div>'
