"""Gemma-2 chat prompts as text: rendering, checking, parsing and budgeting.

This module owns everything between a list of chat messages and the exact prompt string that
Gemma-2-9b-it sees:

* parsing a conversation from JSON or Python data (``parse_conversation``), OpenAI-style
  text content parts included,
* checking it against the rules of Gemma-2's chat template (``check_messages``), quoting the
  official template's own words where it would raise too,
* handling a system message, which Gemma-2 does not support (``apply_system_policy``), folded
  with a separator the caller chooses,
* rendering it with the model's own Jinja chat template (``render``),
* warning about control-token text inside messages (``find_control_text``) and about a prefill
  that ends in whitespace (``prefill_whitespace_warning``),
* dropping the oldest exchanges until the prompt fits the context (``fit_budget``),
* parsing a rendered prompt back into messages (``parse_prompt``).

It deliberately does not own a tokenizer, gradio or openvino: it imports none of them, so it
stays fast to test without a model. Where tokens must be counted, the caller injects a
``count_tokens(text) -> int`` callable.

Messages are plain ``{"role": str, "content": str}`` dicts everywhere. Every failure a user can
cause is raised as ``ChatFormatError`` with a one-line message meant to be shown as is.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import NoReturn

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from playground.errors import UserError

__all__ = [
    "BOS",
    "CONTROL_TOKEN_TEXTS",
    "DEFAULT_FOLD_SEPARATOR",
    "DEFAULT_SYSTEM_POLICY",
    "END_OF_TURN",
    "EOS",
    "GEMMA2_CHAT_TEMPLATE",
    "MAX_MESSAGES",
    "ROLES",
    "START_OF_TURN",
    "SYSTEM_POLICIES",
    "TEMPLATE_ALTERNATION_ERROR",
    "TEMPLATE_SYSTEM_ERROR",
    "Budget",
    "ChatFormatError",
    "ParsedPrompt",
    "RenderOptions",
    "RenderedPrompt",
    "apply_system_policy",
    "check_messages",
    "check_unicode",
    "find_control_text",
    "fit_budget",
    "parse_conversation",
    "parse_prompt",
    "prefill_whitespace_warning",
    "render",
]

# The chat_template of google/gemma-2-9b-it's tokenizer_config.json, verbatim. Raw strings keep
# the Jinja string literals' "\n" as backslash-n, exactly as in the JSON-decoded template.
GEMMA2_CHAT_TEMPLATE: str = (
    r"{{ bos_token }}{% if messages[0]['role'] == 'system' %}"
    r"{{ raise_exception('System role not supported') }}{% endif %}"
    r"{% for message in messages %}"
    r"{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    r"{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    r"{% endif %}"
    r"{% if (message['role'] == 'assistant') %}{% set role = 'model' %}"
    r"{% else %}{% set role = message['role'] %}{% endif %}"
    r"{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}"
    r"{% endfor %}"
    r"{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}"
)

BOS = "<bos>"
EOS = "<eos>"
START_OF_TURN = "<start_of_turn>"
END_OF_TURN = "<end_of_turn>"
CONTROL_TOKEN_TEXTS: tuple[str, ...] = (
    "<bos>",
    "<eos>",
    "<pad>",
    "<unk>",
    "<start_of_turn>",
    "<end_of_turn>",
)

ROLES: tuple[str, ...] = ("system", "user", "assistant")
SYSTEM_POLICIES: tuple[str, ...] = ("fold", "error", "drop")
# What to do with a system message unless told otherwise: fold it into the first user message.
DEFAULT_SYSTEM_POLICY = "fold"

# What the official template raises, word for word (both strings are in GEMMA2_CHAT_TEMPLATE):
# the errors quote them so users recognise what transformers and vLLM show for the same input.
TEMPLATE_SYSTEM_ERROR = "System role not supported"
TEMPLATE_ALTERNATION_ERROR = "Conversation roles must alternate user/assistant/user/assistant/..."

# Gemma 3's official template joins the system text and the first user text with a blank line.
DEFAULT_FOLD_SEPARATOR = "\n\n"

# The most messages a conversation may have: twice what Gemma-2's context of 8,192 tokens can
# hold at 4 tokens per message (an empty turn is <start_of_turn>, its role, "\n" and
# <end_of_turn>), so no conversation that could fit is refused, and a 20,000-turn one is refused
# before anything is rendered.
MAX_MESSAGES = 4096

# Gemma calls the assistant "model" inside the prompt.
_PROMPT_ROLES = {"user": "user", "model": "assistant"}
_GENERATION_PROMPT = f"{START_OF_TURN}model\n"

Message = dict[str, str]


class ChatFormatError(UserError, ValueError):
    """A conversation or prompt that cannot be used; str() is a one-line, user-facing message."""

    def __init__(self, message: str) -> None:
        # The message goes straight into the UI, so it must stay on one line whatever the
        # source (a Jinja message, a JSON decoder message) put into it.
        super().__init__(" ".join(part.strip() for part in str(message).splitlines()).strip())


@dataclass(frozen=True)
class RenderOptions:
    """How a conversation becomes a prompt, besides the template: what to do with a system
    message (``system_policy``, see ``apply_system_policy``), whether the prompt ends with the
    generation prompt, the text the reply starts with (``prefill``) and what joins a folded
    system message to the first user message (``fold_separator``). The policy is checked here,
    once."""

    system_policy: str = DEFAULT_SYSTEM_POLICY
    add_generation_prompt: bool = True
    prefill: str = ""
    fold_separator: str = DEFAULT_FOLD_SEPARATOR

    def __post_init__(self) -> None:
        _check_policy(self.system_policy)


@dataclass(frozen=True)
class RenderedPrompt:
    """A rendered prompt, the messages it was rendered from and what the user should know."""

    text: str
    # The messages after the system policy, i.e. what the template actually saw.
    messages: tuple[dict[str, str], ...]
    warnings: tuple[str, ...]
    # Facts worth knowing that are not problems (how a system message was folded).
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Budget:
    """A prompt that fits the context window, and what had to go to make it fit."""

    rendered: RenderedPrompt
    prompt_tokens: int
    # 1-based positions in the messages given to fit_budget, not in the rendered messages.
    dropped_turns: tuple[int, ...]
    remaining_tokens: int


@dataclass(frozen=True)
class ParsedPrompt:
    """A Gemma prompt read back into messages."""

    messages: list[dict[str, str]]
    add_generation_prompt: bool
    prefill: str


# ---------------------------------------------------------------------------------------------
# Parsing and shape checks
# ---------------------------------------------------------------------------------------------


def _json_type_name(value: object) -> str:
    # Users write JSON, so errors name JSON types rather than Python ones.
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list | tuple):
        return "an array"
    return type(value).__name__


def _text_of_parts(position: int, parts: Sequence[object]) -> str:
    """OpenAI-style content parts as one text: the text parts joined with "\\n", as llama.cpp
    (common/chat.cpp, for templates without typed content) and vLLM (chat_utils) do."""
    texts = []
    for number, part in enumerate(parts, 1):
        where = f"message {position}: content part {number}"
        if not isinstance(part, Mapping):
            raise ChatFormatError(
                f'{where} must be an object like {{"type": "text", "text": ...}}, '
                f"got {_json_type_name(part)}"
            )
        kind = part.get("type")
        if kind != "text":
            shown = repr(kind) if isinstance(kind, str) else _json_type_name(kind)
            raise ChatFormatError(
                f"{where} has type {shown}: Gemma-2 reads text only, so only "
                "'text' parts can be sent"
            )
        text = part.get("text")
        if not isinstance(text, str):
            raise ChatFormatError(f"{where}: 'text' must be a string, got {_json_type_name(text)}")
        texts.append(text)
    return "\n".join(texts)


def _normalize_message(position: int, item: object) -> Message:
    if not isinstance(item, Mapping):
        raise ChatFormatError(
            f"message {position}: expected an object with 'role' and 'content', "
            f"got {_json_type_name(item)}"
        )
    normalized: Message = {}
    for key in ("role", "content"):
        if key not in item:
            raise ChatFormatError(f"message {position}: missing {key!r}")
        value = item[key]
        if key == "content" and isinstance(value, list | tuple):
            value = _text_of_parts(position, value)
        if not isinstance(value, str):
            allowed = "a string or a list of text parts" if key == "content" else "a string"
            raise ChatFormatError(
                f"message {position}: {key!r} must be {allowed}, got {_json_type_name(value)}"
            )
        normalized[key] = check_unicode(value, f"message {position}: {key!r}")
    return normalized


def _normalize_messages(messages: Iterable[object]) -> list[Message]:
    messages = list(messages)
    if len(messages) > MAX_MESSAGES:
        raise ChatFormatError(
            f"the conversation has {len(messages)} messages; the limit is {MAX_MESSAGES} "
            "(more than Gemma-2's context can hold): keep the newest ones"
        )
    return [_normalize_message(position, item) for position, item in enumerate(messages, 1)]


def check_unicode(text: str, what: str) -> str:
    """`text`, unless it holds a lone surrogate (such as "\\ud800" in JSON): that is not a
    character, so no tokenizer, file or event stream can carry it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        code = ord(text[error.start])
        raise ChatFormatError(
            f"{what} holds a lone surrogate (U+{code:04X}) at character {error.start + 1}, "
            "which is not text: remove it"
        ) from None
    return text


def parse_conversation(data: object) -> list[dict[str, str]]:
    """Read a conversation from a list of messages, ``{"messages": [...]}``, or their JSON text.

    Only ``role`` and ``content`` are kept from each message; other keys (such as ``name``) are
    ignored because the Gemma-2 template has no use for them.
    """
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except json.JSONDecodeError as exc:
            raise ChatFormatError(
                f"the conversation is not valid JSON: {exc.msg} "
                f"(line {exc.lineno}, column {exc.colno})"
            ) from exc
        except RecursionError:
            raise ChatFormatError(
                "the conversation is nested too deeply: it must be a list of messages, "
                "each an object with 'role' and 'content'"
            ) from None
    if isinstance(data, Mapping):
        if "messages" not in data:
            raise ChatFormatError(
                "expected a list of messages or an object with a 'messages' list, "
                "got an object without 'messages'"
            )
        data = data["messages"]
        if not isinstance(data, list | tuple):
            raise ChatFormatError(f"'messages' must be an array, got {_json_type_name(data)}")
    elif not isinstance(data, list | tuple):
        raise ChatFormatError(
            "expected a list of messages or an object with a 'messages' list, "
            f"got {_json_type_name(data)}"
        )
    return _normalize_messages(data)


def check_messages(
    messages: Sequence[Mapping[str, str]],
    *,
    add_generation_prompt: bool = True,
    prefill: str = "",
) -> None:
    """Raise ``ChatFormatError`` unless the conversation can be rendered for Gemma-2.

    A system message is accepted as the first message only; what happens to it is the system
    policy's business (see ``apply_system_policy``).
    """
    checked = _normalize_messages(messages)
    if not checked:
        raise ChatFormatError("the conversation is empty: add at least one user message")

    def refuse(explanation: str) -> NoReturn:
        if _official_template_alternation_fails(checked):
            explanation += f'. Gemma-2\'s template says: "{TEMPLATE_ALTERNATION_ERROR}"'
        raise ChatFormatError(explanation)

    expected = "user"
    previous: str | None = None
    for position, message in enumerate(checked, 1):
        role = message["role"]
        if role not in ROLES:
            allowed = ", ".join(repr(name) for name in ROLES)
            refuse(f"message {position}: unknown role {role!r} (allowed: {allowed})")
        if role == "system":
            if position != 1:
                refuse(
                    f"message {position}: got 'system' after {previous!r}; "
                    "a system message is only allowed as the first message"
                )
            previous = role
            continue
        if role != expected:
            if previous is None:
                refuse(f"message {position}: expected 'user' as the first message, got {role!r}")
            refuse(f"message {position}: expected {expected!r} after {previous!r}, got {role!r}")
        previous = role
        expected = "assistant" if role == "user" else "user"

    last_role = checked[-1]["role"]
    if last_role == "system":
        raise ChatFormatError(
            "the conversation has only a system message: add a user message after it"
        )
    if prefill and not add_generation_prompt:
        raise ChatFormatError(
            "a prefill continues the generation prompt: turn the generation prompt on, "
            "or clear the prefill"
        )
    if last_role == "assistant":
        if prefill:
            raise ChatFormatError(
                "the conversation ends with an assistant message and a prefill is given; "
                "the prefill starts a new model turn: remove the last assistant message, "
                "or clear the prefill"
            )
        if add_generation_prompt:
            raise ChatFormatError(
                "the conversation ends with an assistant message; the generation prompt would "
                "open a second model turn in a row: remove it, or use prefill (move its text "
                "there) / turn off the generation prompt"
            )


def _official_template_alternation_fails(messages: Sequence[Mapping[str, str]]) -> bool:
    """Whether Gemma-2's own template raises its alternation error on these messages, once a
    leading system message is out of the way: it checks only that users are at the even
    places, so it lets some orders through (a 'system' second) that the project refuses."""
    rest = messages[1:] if messages and messages[0]["role"] == "system" else messages
    return any(
        (message["role"] == "user") != (index % 2 == 0) for index, message in enumerate(rest)
    )


# ---------------------------------------------------------------------------------------------
# System policy
# ---------------------------------------------------------------------------------------------


def _check_policy(policy: str) -> None:
    if policy not in SYSTEM_POLICIES:
        allowed = ", ".join(repr(name) for name in SYSTEM_POLICIES)
        raise ChatFormatError(f"unknown system policy {policy!r} (allowed: {allowed})")


# The note a fold leaves, shown beside every prompt it shapes: one short line (issue 33), the
# why and the peers' choices a request away (`fold_details`).
FOLD_NOTE = "The system message was folded into the first user message: Gemma-2 has no system turn."


def fold_details(separator: str) -> str:
    """What a fold does and how other runtimes fold, for whoever asks (the inspector's "Why
    fold?" and the terminal's /fold)."""
    # minja's system-role polyfill (chat-template.hpp: pending_system + "\n" + content), which
    # llama.cpp's Jinja path runs; GenAI's and Ollama's as found by their tests (issue 13).
    peers = (
        "OpenVINO GenAI's own template polyfill, llama.cpp's Jinja path, minja and Ollama's "
        "Gemma template join with a single '\\n'"
    )
    return (
        "Gemma-2 was trained without a system turn, so the system message goes at the start of "
        f"the first user message: both trimmed and joined with {separator!r} (the "
        "fold_separator setting). "
        + (f"{peers} too." if separator == "\n" else f"{peers}, so their prompt differs here.")
    )


def apply_system_policy(
    messages: Sequence[Mapping[str, str]],
    policy: str,
    *,
    fold_separator: str = DEFAULT_FOLD_SEPARATOR,
) -> tuple[list[dict[str, str]], list[str]]:
    """Deal with a leading system message, which the Gemma-2 template refuses.

    ``fold`` trims the system text and the first user text, as the template trims every
    message, and joins them with ``fold_separator``; ``error`` refuses it; ``drop`` leaves it
    out with a warning. Returns new message dicts and the warnings; the input is not modified.
    """
    _check_policy(policy)
    result = [dict(message) for message in messages]
    if not result or result[0].get("role") != "system":
        return result, []

    system = result.pop(0)
    if policy == "error":
        raise ChatFormatError(
            "Gemma-2 was trained without a system turn: choose the 'fold' system policy or put "
            "the instructions in the first user message. Its template says: "
            f'"{TEMPLATE_SYSTEM_ERROR}"'
        )
    if policy == "drop":
        warning = (
            "message 1 (system) was left out by the 'drop' system policy: "
            "the model does not see those instructions."
        )
        return result, [warning]
    if not result or result[0].get("role") != "user":
        raise ChatFormatError(
            "message 1: the system message has no user message right after it to fold into"
        )
    result[0]["content"] = system["content"].strip() + fold_separator + result[0]["content"].strip()
    return result, []


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------


def _raise_exception(message: str) -> NoReturn:
    raise ChatFormatError(message)


# The same environment settings transformers' apply_chat_template uses, so a template renders
# here exactly as it would there. Immutable and sandboxed because templates are user input.
_ENVIRONMENT = ImmutableSandboxedEnvironment(
    trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
)
_ENVIRONMENT.globals["raise_exception"] = _raise_exception


@functools.lru_cache(maxsize=16)
def _compile(template: str) -> jinja2.Template:
    try:
        return _ENVIRONMENT.from_string(template)
    except jinja2.TemplateSyntaxError as exc:
        raise ChatFormatError(
            f"the chat template has a syntax error on line {exc.lineno}: {exc.message}"
        ) from exc


def _render_template(
    template: str, messages: list[Message], *, bos_token: str, add_generation_prompt: bool
) -> str:
    compiled = _compile(template)
    try:
        return compiled.render(
            messages=messages,
            bos_token=bos_token,
            eos_token=EOS,
            add_generation_prompt=add_generation_prompt,
        )
    except ChatFormatError:
        raise
    except jinja2.TemplateError as exc:
        raise ChatFormatError(
            f"the chat template failed: {exc.message or type(exc).__name__}"
        ) from exc
    except Exception as exc:
        # A custom template can fail in plain Python (e.g. adding a string to a number); the
        # user still gets one line instead of a traceback.
        raise ChatFormatError(f"the chat template failed: {type(exc).__name__}: {exc}") from exc


def _control_texts_in(content: str) -> list[str]:
    return [token for token in CONTROL_TOKEN_TEXTS if token in content]


def _control_warning(subject: str, found: list[str]) -> str:
    listed = " and ".join(repr(token) for token in found)
    if len(found) == 1:
        return (
            f"{subject} contains {listed}: the tokenizer reads it as a control token, not as "
            "text, so it can fake a turn boundary."
        )
    return (
        f"{subject} contains {listed}: the tokenizer reads them as control tokens, not as "
        "text, so they can fake a turn boundary."
    )


def _control_warnings(positioned: Iterable[tuple[int, Mapping[str, str]]]) -> list[str]:
    warnings = []
    for position, message in positioned:
        found = _control_texts_in(message["content"])
        if found:
            warnings.append(_control_warning(f"message {position} ({message['role']})", found))
    return warnings


def find_control_text(messages: Sequence[Mapping[str, str]]) -> list[str]:
    """One warning per message whose content contains text of a Gemma control token."""
    return _control_warnings(enumerate(messages, 1))


def prefill_whitespace_warning(prefill: str) -> str | None:
    """A warning for a prefill that ends in whitespace, or None.

    Gemma's SentencePiece vocabulary puts a word's leading space inside the word's token
    ("▁Paris"), so a prompt ending in a space token asks for a word without its space, a split
    the model rarely saw in training. transformers' apply_chat_template with
    continue_final_message trims that space for this reason (the "trailing spacing that was
    trimmed" branch in tokenization_utils_base).
    """
    if not prefill or prefill == prefill.rstrip():
        return None
    return (
        f"the prefill ends in whitespace ({prefill[len(prefill.rstrip()) :]!r}): Gemma's "
        "tokenizer attaches a space to the word that follows it, so the model must now start "
        "with a word without its space, which it rarely saw in training. transformers' "
        "continue_final_message trims that space; remove it to get the same prompt."
    )


def _render_positioned(
    messages: Sequence[Mapping[str, str]],
    positions: Sequence[int],
    options: RenderOptions,
    template: str,
    bos_token: str,
) -> RenderedPrompt:
    # positions[i] is the 1-based position of messages[i] as the user knows it, so warnings
    # still point at the right message after fit_budget has dropped some.
    prefill = options.prefill
    check_messages(messages, add_generation_prompt=options.add_generation_prompt, prefill=prefill)
    messages = _normalize_messages(messages)  # content parts become text
    folded, warnings = apply_system_policy(
        messages, options.system_policy, fold_separator=options.fold_separator
    )
    notes = []
    if options.system_policy == "fold" and messages[0]["role"] == "system":
        notes.append(FOLD_NOTE)
    text = _render_template(
        template, folded, bos_token=bos_token, add_generation_prompt=options.add_generation_prompt
    )
    text += prefill
    warnings.extend(_control_warnings(zip(positions, messages, strict=True)))
    found = _control_texts_in(prefill)
    if found:
        warnings.append(_control_warning("the prefill", found))
    if warning := prefill_whitespace_warning(prefill):
        warnings.append(warning)
    return RenderedPrompt(
        text=text, messages=tuple(folded), warnings=tuple(warnings), notes=tuple(notes)
    )


def render(
    messages: Sequence[Mapping[str, str]],
    options: RenderOptions = RenderOptions(),
    *,
    template: str = GEMMA2_CHAT_TEMPLATE,
    bos_token: str = BOS,
) -> RenderedPrompt:
    """Check the conversation, apply the system policy and render it with the chat template.

    A non-empty ``options.prefill`` is appended after the generation prompt with no
    ``<end_of_turn>``, so the model continues it as the start of its own reply.
    ``options.fold_separator`` joins a folded system message to the first user message.
    """
    return _render_positioned(messages, range(1, len(messages) + 1), options, template, bos_token)


# ---------------------------------------------------------------------------------------------
# Budgeting
# ---------------------------------------------------------------------------------------------


def _describe_positions(positions: Sequence[int]) -> str:
    if len(positions) == 1:
        return f"message {positions[0]}"
    if list(positions) == list(range(positions[0], positions[-1] + 1)):
        return f"messages {positions[0]}-{positions[-1]}"
    return "messages " + ", ".join(str(position) for position in positions)


def fit_budget(
    messages: Sequence[Mapping[str, str]],
    *,
    count_tokens: Callable[[str], int],
    context_size: int,
    max_new_tokens: int,
    options: RenderOptions = RenderOptions(),
    template: str = GEMMA2_CHAT_TEMPLATE,
    bos_token: str = BOS,
) -> Budget:
    """Render the conversation, dropping the oldest exchanges until it fits the context.

    ``count_tokens`` gets the whole rendered text, ``<bos>`` included, so with a Hugging Face
    tokenizer it should encode without adding special tokens again. A prompt fits when
    ``prompt_tokens + max_new_tokens <= context_size``. Only whole user/assistant exchanges
    before the newest user message are dropped, oldest first; a leading system message is kept,
    so under ``fold`` its text moves to the first remaining user message.

    The cost is linear in the conversation: each exchange's tokens are counted once, on its own,
    which says how many to drop; two renders of the whole prompt then confirm it (a template or
    tokenizer whose pieces do not add up is corrected by bisection, a few renders more).
    """
    if context_size <= 0:
        raise ChatFormatError(f"the context size must be positive, got {context_size}")
    if max_new_tokens < 0:
        raise ChatFormatError(f"max_new_tokens must not be negative, got {max_new_tokens}")
    original = _normalize_messages(messages)
    limit = context_size - max_new_tokens
    rendered = _render_positioned(
        original, range(1, len(original) + 1), options, template, bos_token
    )
    tried = {0: (rendered, count_tokens(rendered.text))}
    # render() has checked the order, so after an optional system message the roles alternate
    # user/assistant and every index pair (i, i + 1) before the newest user message is an
    # exchange.
    start = 1 if original[0]["role"] == "system" else 0
    newest_user = max(i for i, message in enumerate(original) if message["role"] == "user")
    exchanges = [(i, i + 1) for i in range(start, newest_user, 2)]

    def without(count: int) -> tuple[RenderedPrompt, int]:
        """The prompt with the `count` oldest exchanges dropped, and its tokens."""
        if count not in tried:
            keep = [i for i in range(len(original)) if i < start or i >= start + 2 * count]
            shown = _render_positioned(
                [original[i] for i in keep], [i + 1 for i in keep], options, template, bos_token
            )
            tried[count] = (shown, count_tokens(shown.text))
        return tried[count]

    count = 0
    if tried[0][1] > limit:
        costs = _exchange_tokens(original, exchanges, count_tokens, template, bos_token)
        guess = _drops_for(tried[0][1] - limit, costs, len(exchanges))
        count = _fewest(guess, len(exchanges), lambda n: without(n)[1] <= limit)
    rendered, prompt_tokens = without(count)
    if prompt_tokens > limit:
        _refuse_long(
            original,
            start,
            newest_user,
            prompt_tokens,
            context_size,
            max_new_tokens,
            options.prefill,
        )
    dropped = [position for pair in exchanges[:count] for position in (pair[0] + 1, pair[1] + 1)]
    if dropped:
        exchanges_text = "the oldest exchange" if count == 1 else f"the {count} oldest exchanges"
        note = (
            f"{_describe_positions(dropped)} ({exchanges_text}) were left out to fit the "
            f"context of {context_size} tokens."
        )
        rendered = replace(rendered, warnings=(*rendered.warnings, note))
    return Budget(
        rendered=rendered,
        prompt_tokens=prompt_tokens,
        dropped_turns=tuple(dropped),
        remaining_tokens=context_size - prompt_tokens - max_new_tokens,
    )


def _exchange_tokens(
    messages: Sequence[Message],
    exchanges: Sequence[tuple[int, int]],
    count_tokens: Callable[[str], int],
    template: str,
    bos_token: str,
) -> list[int]:
    """Each exchange's tokens, counted once (and equal exchanges once in all): the pair rendered
    on its own, less its `<bos>`. Exact for Gemma-2's template, whose turns start with a
    control token (no token spans two turns); for another template a guess that `fit_budget`
    checks. Empty if the template will not render a pair alone."""
    overhead = count_tokens(bos_token)
    counted: dict[tuple[str, str], int] = {}
    costs = []
    for user, reply in exchanges:
        pair = (messages[user]["content"], messages[reply]["content"])
        if pair not in counted:
            text = _exchange_text(template, bos_token, pair)
            if text is None:
                return []
            counted[pair] = count_tokens(text) - overhead
        costs.append(counted[pair])
    return costs


def _exchange_text(template: str, bos_token: str, pair: tuple[str, str]) -> str | None:
    """One exchange as the template renders it after `bos_token`; None if it will not."""
    if template == GEMMA2_CHAT_TEMPLATE:  # what Jinja gives, without Jinja's cost per call
        user, reply = (text.strip() for text in pair)
        return (
            f"{bos_token}{START_OF_TURN}user\n{user}{END_OF_TURN}\n"
            f"{START_OF_TURN}model\n{reply}{END_OF_TURN}\n"
        )
    messages = [{"role": "user", "content": pair[0]}, {"role": "assistant", "content": pair[1]}]
    try:
        return _render_template(
            template, messages, bos_token=bos_token, add_generation_prompt=False
        )
    except ChatFormatError:
        return None


def _drops_for(excess: int, costs: Sequence[int], most: int) -> int:
    """How many of the oldest exchanges, of `costs` tokens each, free `excess` tokens."""
    for count, cost in enumerate(costs):
        if excess <= 0:
            return count
        excess -= cost
    return most


def _fewest(guess: int, most: int, fits: Callable[[int], bool]) -> int:
    """The fewest drops in 0..`most` that fit (dropping more never adds tokens), starting from
    `guess`: confirmed with two checks when it is right; else by bisection. `most` when
    nothing fits; 0 is known not to fit."""
    if fits(guess):
        if guess == 0 or not fits(guess - 1):
            return guess
        low, high = 1, guess - 1
    else:
        if guess >= most or not fits(most):
            return most
        low, high = guess + 1, most
    while low < high:  # fits(high) holds
        middle = (low + high) // 2
        if fits(middle):
            high = middle
        else:
            low = middle + 1
    return high


def _refuse_long(
    messages: Sequence[Message],
    start: int,
    newest_user: int,
    prompt_tokens: int,
    context_size: int,
    max_new_tokens: int,
    prefill: str | None,
) -> NoReturn:
    kept = ["the system message"] if start else []
    kept.append("the newest user message")
    if newest_user < len(messages) - 1:
        kept.append("the reply after it")
    if prefill:
        kept.append("the prefill")
    left = kept[0] if len(kept) == 1 else ", ".join(kept[:-1]) + " and " + kept[-1]
    raise ChatFormatError(
        f"the prompt needs {prompt_tokens} tokens and max_new_tokens is "
        f"{max_new_tokens}: together more than the context size of {context_size}, "
        f"even with only {left} left; shorten it or lower max_new_tokens"
    )


# ---------------------------------------------------------------------------------------------
# Reading a prompt back
# ---------------------------------------------------------------------------------------------


def _snippet(text: str, start: int, length: int = 24) -> str:
    piece = text[start : start + length]
    return repr(piece + "...") if len(text) > start + length else repr(piece)


def parse_prompt(text: str) -> ParsedPrompt:
    """Read a Gemma prompt back into messages: the reverse of ``render``.

    Accepts an optional leading ``<bos>``, then ``<start_of_turn>ROLE\\n...<end_of_turn>\\n``
    turns with ROLE ``user`` or ``model``, then optionally an open ``<start_of_turn>model\\n``
    whose remaining text is the prefill. Contents are kept as written, not trimmed. The order of
    roles is not checked here; ``check_messages`` does that. Errors give the 1-based turn number
    and the 0-based character offset.
    """
    messages: list[Message] = []
    position = len(BOS) if text.startswith(BOS) else 0
    turn = 0
    while position < len(text):
        if not text.startswith(START_OF_TURN, position):
            raise ChatFormatError(
                f"text outside any turn at character {position}: {_snippet(text, position)} "
                f"(expected {START_OF_TURN})"
            )
        turn += 1
        turn_start = position
        role_start = position + len(START_OF_TURN)
        role_end = text.find("\n", role_start)
        if role_end == -1:
            raise ChatFormatError(
                f"turn {turn} at character {turn_start}: the role is not followed by a newline"
            )
        role = text[role_start:role_end]
        if role not in _PROMPT_ROLES:
            raise ChatFormatError(
                f"turn {turn} at character {turn_start}: unknown role {role!r} "
                "(expected 'user' or 'model')"
            )
        content_start = role_end + 1
        end = text.find(END_OF_TURN, content_start)
        next_start = text.find(START_OF_TURN, content_start)
        if next_start != -1 and (end == -1 or next_start < end):
            raise ChatFormatError(
                f"turn {turn} at character {turn_start} is not closed: a new {START_OF_TURN} "
                f"at character {next_start} comes before its {END_OF_TURN}"
            )
        if end == -1:
            if role != "model":
                raise ChatFormatError(
                    f"turn {turn} ({role}) at character {turn_start} is missing {END_OF_TURN}: "
                    "only a model turn may stay open at the end, as the generation prompt"
                )
            return ParsedPrompt(
                messages=messages, add_generation_prompt=True, prefill=text[content_start:]
            )
        messages.append({"role": _PROMPT_ROLES[role], "content": text[content_start:end]})
        position = end + len(END_OF_TURN)
        if not text.startswith("\n", position):
            found = "the end of the prompt" if position >= len(text) else _snippet(text, position)
            raise ChatFormatError(
                f"turn {turn}: expected a newline after {END_OF_TURN} at character {position}, "
                f"found {found}"
            )
        position += 1
    if not messages:
        raise ChatFormatError("the prompt contains no turns")
    return ParsedPrompt(messages=messages, add_generation_prompt=False, prefill="")
