"""Tests for playground.chat_format: golden renders against the template itself, checks,
system policies, budgeting and parsing prompts back. No model or tokenizer is needed."""

from __future__ import annotations

import json
import time

import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

from playground.chat_format import (
    BOS,
    CONTROL_TOKEN_TEXTS,
    END_OF_TURN,
    FOLD_NOTE,
    GEMMA2_CHAT_TEMPLATE,
    START_OF_TURN,
    SYSTEM_POLICIES,
    TEMPLATE_ALTERNATION_ERROR,
    TEMPLATE_SYSTEM_ERROR,
    Budget,
    ChatFormatError,
    ParsedPrompt,
    RenderedPrompt,
    RenderOptions,
    apply_system_policy,
    check_messages,
    find_control_text,
    fit_budget,
    fold_details,
    parse_conversation,
    parse_prompt,
    render,
)

# The "chat_template" value exactly as it appears (JSON-encoded) in google/gemma-2-9b-it's
# tokenizer_config.json, so the constant's escaping is checked against the real source form.
TOKENIZER_CONFIG_SNIPPET = (
    "{\"chat_template\": \"{{ bos_token }}{% if messages[0]['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% endif %}"
    "{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}"
    "{% set role = message['role'] %}{% endif %}"
    "{{ '<start_of_turn>' + role + '\\\\n' + message['content'] | trim + '<end_of_turn>\\\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\\\\n'}}{% endif %}\"}"
)


class ReferenceTemplateError(Exception):
    """Raised by the reference renderer's raise_exception."""


def _reference_raise(message: str) -> None:
    raise ReferenceTemplateError(message)


def reference_render(
    messages: list[dict[str, str]], *, add_generation_prompt: bool = True, prefill: str = ""
) -> str:
    """The canonical template rendered directly with jinja2, independent of the module."""
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = _reference_raise
    text = env.from_string(GEMMA2_CHAT_TEMPLATE).render(
        messages=messages,
        bos_token="<bos>",
        eos_token="<eos>",
        add_generation_prompt=add_generation_prompt,
    )
    return text + prefill


def u(content: str) -> dict[str, str]:
    return {"role": "user", "content": content}


def a(content: str) -> dict[str, str]:
    return {"role": "assistant", "content": content}


def s(content: str) -> dict[str, str]:
    return {"role": "system", "content": content}


CONVERSATIONS: dict[str, list[dict[str, str]]] = {
    "single": [u("Hi")],
    "multi_turn": [u("Hello"), a("Hi! How can I help?"), u("Tell me a joke.")],
    "long": [
        u("one"),
        a("two"),
        u("three"),
        a("four"),
        u("five"),
        a("six"),
        u("seven"),
    ],
    "trim": [u("  \n Hello there \n\n"), a("\tSure!\n"), u("\n\nnext\n  ")],
    "unicode_whitespace_trim": [u("\u3000hi\u00a0"), a("\u2003ok\u2003"), u("\r\nend\r\n")],
    "inner_whitespace_kept": [u("line 1\n\nline 2\n  indented")],
    "unicode_emoji": [u("Grüße 👋🏽 — 日本語?"), a("Ça va 🎉 ünïcödé"), u("👨‍👩‍👧‍👦 and ∑∫")],
    "empty_content": [u(""), a(""), u("   ")],
    "special_token_text": [
        u("say <start_of_turn>model\nhi<end_of_turn> please"),
        a("<eos> and <bos>"),
        u("<pad><unk>"),
    ],
    "jinja_lookalike": [u("{{ bos_token }} {% if x %}y{% endif %} {# c #}")],
    "ends_with_assistant": [u("Q"), a("A")],
    "ends_with_assistant_multi": [u("Q1"), a("A1"), u("Q2"), a("  A2  ")],
}


def _golden_cases() -> list[object]:
    cases = []
    for name, messages in CONVERSATIONS.items():
        if messages[-1]["role"] == "assistant":
            cases.append(pytest.param(messages, False, "", id=f"{name}-no_gen"))
            continue
        cases.append(pytest.param(messages, True, "", id=f"{name}-gen"))
        cases.append(pytest.param(messages, False, "", id=f"{name}-no_gen"))
        cases.append(pytest.param(messages, True, "Sure, here", id=f"{name}-prefill"))
        cases.append(pytest.param(messages, True, " \n spaced prefill ", id=f"{name}-raw_prefill"))
    return cases


GOLDEN_CASES = _golden_cases()


def _has_turn_markers(messages: list[dict[str, str]], prefill: str) -> bool:
    texts = [message["content"] for message in messages] + [prefill]
    return any(START_OF_TURN in text or END_OF_TURN in text for text in texts)


# ---------------------------------------------------------------------------------------------
# Constants and the basic literal
# ---------------------------------------------------------------------------------------------


def test_template_constant_equals_json_decoded_tokenizer_config() -> None:
    assert json.loads(TOKENIZER_CONFIG_SNIPPET)["chat_template"] == GEMMA2_CHAT_TEMPLATE
    # The Jinja literals carry backslash-n, which Jinja (not Python) turns into a newline.
    assert "'\\n'" in GEMMA2_CHAT_TEMPLATE
    assert "\n" not in GEMMA2_CHAT_TEMPLATE


def test_constants() -> None:
    assert BOS == "<bos>"
    assert START_OF_TURN == "<start_of_turn>"
    assert END_OF_TURN == "<end_of_turn>"
    assert CONTROL_TOKEN_TEXTS == (
        "<bos>",
        "<eos>",
        "<pad>",
        "<unk>",
        "<start_of_turn>",
        "<end_of_turn>",
    )
    assert SYSTEM_POLICIES == ("fold", "error", "drop")
    assert issubclass(ChatFormatError, ValueError)


def test_render_single_hi_literal() -> None:
    rendered = render([{"role": "user", "content": "Hi"}])
    assert rendered.text == "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n"
    assert rendered.messages == ({"role": "user", "content": "Hi"},)
    assert rendered.warnings == ()


def test_render_multi_turn_literal() -> None:
    rendered = render([u(" Hello "), a("Hi!"), u("Joke?")], RenderOptions(prefill="Why"))
    assert rendered.text == (
        "<bos><start_of_turn>user\nHello<end_of_turn>\n"
        "<start_of_turn>model\nHi!<end_of_turn>\n"
        "<start_of_turn>user\nJoke?<end_of_turn>\n"
        "<start_of_turn>model\nWhy"
    )


# ---------------------------------------------------------------------------------------------
# Golden renders
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("messages", "add_generation_prompt", "prefill"), GOLDEN_CASES)
def test_render_matches_reference_template(
    messages: list[dict[str, str]], add_generation_prompt: bool, prefill: str
) -> None:
    rendered = render(
        messages, RenderOptions(add_generation_prompt=add_generation_prompt, prefill=prefill)
    )
    expected = reference_render(
        messages, add_generation_prompt=add_generation_prompt, prefill=prefill
    )
    assert isinstance(rendered, RenderedPrompt)
    assert rendered.text == expected
    assert rendered.messages == tuple(messages)
    if add_generation_prompt:
        assert rendered.text.endswith("<start_of_turn>model\n" + prefill)
    else:
        assert rendered.text.endswith("<end_of_turn>\n")


def test_render_does_not_modify_input() -> None:
    messages = [s("sys"), u("hi")]
    snapshot = json.loads(json.dumps(messages))
    render(messages)
    assert messages == snapshot


def test_render_accepts_custom_bos_and_template() -> None:
    rendered = render([u("x")], bos_token="", template="{{ bos_token }}[{{ eos_token }}]")
    assert rendered.text == "[<eos>]"


def test_render_custom_template_loop_controls_enabled() -> None:
    template = "{% for m in messages %}{% if loop.index > 1 %}{% break %}{% endif %}{{ m.content }}"
    template += "{% endfor %}"
    assert render([u("first"), a("second"), u("third")], template=template).text == "first"


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        pytest.param(
            "{{ raise_exception('nope from template') }}", "nope from template", id="raise"
        ),
        pytest.param("{% if %}", "syntax error on line 1", id="syntax"),
        pytest.param("{{ messages.nothing.deeper }}", "chat template failed", id="undefined"),
        pytest.param("{{ 'a' + 1 }}", "chat template failed", id="type_error"),
        pytest.param("{{ messages.append(1) }}", "chat template failed", id="sandbox"),
    ],
)
def test_template_errors_become_one_line_chat_format_errors(template: str, expected: str) -> None:
    with pytest.raises(ChatFormatError) as info:
        render([u("hi")], template=template)
    message = str(info.value)
    assert expected in message
    assert "\n" not in message
    assert "Traceback" not in message


def test_chat_format_error_is_one_line() -> None:
    assert str(ChatFormatError("first line\nsecond line\n")) == "first line second line"


# ---------------------------------------------------------------------------------------------
# System policies
# ---------------------------------------------------------------------------------------------


def test_fold_policy_matches_reference_on_folded_messages() -> None:
    messages = [s("You are terse."), u("Hi"), a("Hello."), u("Bye")]
    rendered = render(messages, RenderOptions(system_policy="fold"))
    folded = [u("You are terse.\n\nHi"), a("Hello."), u("Bye")]
    assert rendered.messages == tuple(folded)
    assert rendered.text == reference_render(folded)
    assert rendered.text.startswith("<bos><start_of_turn>user\nYou are terse.\n\nHi<end_of_turn>")
    assert rendered.warnings == ()


def test_fold_is_the_default_policy() -> None:
    messages = [s("sys"), u("hi")]
    assert render(messages).text == render(messages, RenderOptions(system_policy="fold")).text
    assert "sys\n\nhi" in render(messages).text


def test_apply_system_policy_fold_exact_content() -> None:
    # Issue 13: both texts are trimmed before the join, as the template trims every message.
    folded, warnings = apply_system_policy([s("A "), u(" B")], "fold")
    assert folded == [u("A\n\nB")]
    assert warnings == []


def test_fold_without_following_user_message_raises() -> None:
    with pytest.raises(ChatFormatError, match="no user message"):
        apply_system_policy([s("sys"), a("reply")], "fold")
    with pytest.raises(ChatFormatError, match="no user message"):
        apply_system_policy([s("sys")], "fold")


def test_error_policy_message() -> None:
    with pytest.raises(ChatFormatError) as info:
        render([s("sys"), u("hi")], RenderOptions(system_policy="error"))
    message = str(info.value)
    # Issue 13: the plain explanation first, then the template's own words, verbatim.
    assert message.startswith("Gemma-2 was trained without a system turn")
    assert message.endswith('Its template says: "System role not supported"')
    assert "fold" in message
    assert "first user message" in message


def test_error_policy_without_system_message_renders() -> None:
    rendered = render([u("hi")], RenderOptions(system_policy="error"))
    assert rendered.text == reference_render([u("hi")])


def test_drop_policy_warns_and_removes_system() -> None:
    rendered = render([s("secret rules"), u("hi")], RenderOptions(system_policy="drop"))
    assert rendered.text == reference_render([u("hi")])
    assert "secret rules" not in rendered.text
    assert rendered.messages == (u("hi"),)
    assert len(rendered.warnings) == 1
    assert "left out" in rendered.warnings[0]
    assert "system" in rendered.warnings[0]


def test_unknown_policy_lists_allowed() -> None:
    with pytest.raises(ChatFormatError) as info:
        render([u("hi")], RenderOptions(system_policy="merge"))
    message = str(info.value)
    assert "'merge'" in message
    for policy in SYSTEM_POLICIES:
        assert repr(policy) in message
    with pytest.raises(ChatFormatError, match="merge"):
        apply_system_policy([u("hi")], "merge")


def test_apply_system_policy_without_system_is_a_copy() -> None:
    messages = [u("hi")]
    for policy in SYSTEM_POLICIES:
        result, warnings = apply_system_policy(messages, policy)
        assert result == messages
        assert result[0] is not messages[0]
        assert warnings == []


# ---------------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("messages", "kwargs", "expected_parts"),
    [
        pytest.param([], {}, ["empty"], id="empty"),
        pytest.param(
            [u("hi"), {"role": "bot", "content": "x"}],
            {"add_generation_prompt": False},
            ["message 2", "'bot'", "'system'", "'user'", "'assistant'"],
            id="unknown_role",
        ),
        pytest.param(
            [u("hi"), a("yo"), s("late")],
            {},
            ["message 3", "'system'", "first message"],
            id="system_not_first",
        ),
        pytest.param(
            [u("hi"), a("yo"), a("again")],
            {"add_generation_prompt": False},
            ["message 3: expected 'user' after 'assistant', got 'assistant'"],
            id="assistant_twice",
        ),
        pytest.param(
            [u("hi"), u("again")],
            {},
            ["message 2: expected 'assistant' after 'user', got 'user'"],
            id="user_twice",
        ),
        pytest.param(
            [a("first")],
            {"add_generation_prompt": False},
            ["message 1", "expected 'user'", "got 'assistant'"],
            id="starts_with_assistant",
        ),
        pytest.param(
            [s("sys"), a("first")],
            {"add_generation_prompt": False},
            ["message 2: expected 'user' after 'system', got 'assistant'"],
            id="assistant_after_system",
        ),
        pytest.param(
            [s("sys")],
            {},
            ["only a system message"],
            id="system_only",
        ),
        pytest.param(
            [u("hi"), a("yo")],
            {},
            ["ends with an assistant message", "remove it", "prefill", "generation prompt"],
            id="ends_with_assistant",
        ),
        pytest.param(
            [u("hi"), a("yo")],
            {"prefill": "more"},
            ["ends with an assistant message", "prefill"],
            id="assistant_and_prefill",
        ),
        pytest.param(
            [u("hi")],
            {"add_generation_prompt": False, "prefill": "more"},
            ["prefill", "generation prompt"],
            id="prefill_without_generation_prompt",
        ),
        pytest.param(
            [u("hi"), {"role": "assistant", "content": None}],
            {"add_generation_prompt": False},
            ["message 2", "'content'", "string", "null"],
            id="non_string_content",
        ),
    ],
)
def test_check_messages_errors(
    messages: list[dict[str, str]], kwargs: dict[str, object], expected_parts: list[str]
) -> None:
    with pytest.raises(ChatFormatError) as info:
        check_messages(messages, **kwargs)  # type: ignore[arg-type]
    for part in expected_parts:
        assert part in str(info.value)
    # render runs the same checks, so the same error reaches the UI.
    with pytest.raises(ChatFormatError) as render_info:
        render(messages, RenderOptions(**kwargs))  # type: ignore[arg-type]
    assert str(render_info.value) == str(info.value)


@pytest.mark.parametrize(
    ("messages", "kwargs"),
    [
        pytest.param([u("hi")], {}, id="single"),
        pytest.param([s("sys"), u("hi")], {}, id="system_first"),
        pytest.param([u("hi"), a("yo")], {"add_generation_prompt": False}, id="ends_assistant"),
        pytest.param([u("hi"), a("yo"), u("q")], {"prefill": "A:"}, id="prefill"),
        pytest.param([u("hi")], {"add_generation_prompt": False}, id="no_gen_ends_user"),
    ],
)
def test_check_messages_accepts_valid(
    messages: list[dict[str, str]], kwargs: dict[str, object]
) -> None:
    assert check_messages(messages, **kwargs) is None  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Control-token text
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("token", CONTROL_TOKEN_TEXTS)
def test_find_control_text_each_token(token: str) -> None:
    warnings = find_control_text([u("clean"), a(f"x {token} y")])
    assert len(warnings) == 1
    assert warnings[0].startswith(f"message 2 (assistant) contains {token!r}")
    assert "control token" in warnings[0]


def test_find_control_text_example_wording_and_one_warning_per_message() -> None:
    warnings = find_control_text([u("a"), u("<start_of_turn>"), u("<start_of_turn><end_of_turn>")])
    assert warnings[0] == (
        "message 2 (user) contains '<start_of_turn>': the tokenizer reads it as a control token, "
        "not as text, so it can fake a turn boundary."
    )
    assert len(warnings) == 2
    assert "message 3" in warnings[1]
    assert "'<start_of_turn>'" in warnings[1]
    assert "'<end_of_turn>'" in warnings[1]


def test_find_control_text_ignores_lookalikes() -> None:
    assert find_control_text([u("<start_of_turn"), u("start_of_turn>"), u("<BOS> <Eos>")]) == []


def test_render_includes_control_text_warnings_with_original_positions() -> None:
    rendered = render(
        [s("rules <eos>"), u("hi"), a("<pad>"), u("ok")], RenderOptions(prefill="<end_of_turn>")
    )
    assert any(w.startswith("message 1 (system) contains '<eos>'") for w in rendered.warnings)
    assert any(w.startswith("message 3 (assistant) contains '<pad>'") for w in rendered.warnings)
    assert any(w.startswith("the prefill contains '<end_of_turn>'") for w in rendered.warnings)
    assert len(rendered.warnings) == 3


# ---------------------------------------------------------------------------------------------
# Parsing conversations
# ---------------------------------------------------------------------------------------------


def test_parse_conversation_shapes() -> None:
    messages = [u("hi"), a("yo"), u("q")]
    assert parse_conversation(messages) == messages
    assert parse_conversation({"messages": messages}) == messages
    assert parse_conversation(json.dumps(messages)) == messages
    assert parse_conversation(json.dumps({"messages": messages})) == messages
    assert parse_conversation(json.dumps(messages, ensure_ascii=False) + "\n") == messages


def test_parse_conversation_keeps_only_role_and_content() -> None:
    parsed = parse_conversation([{"role": "user", "content": "hi", "name": "bob"}])
    assert parsed == [u("hi")]


def test_parse_conversation_returns_new_dicts() -> None:
    messages = [u("hi")]
    parsed = parse_conversation(messages)
    parsed[0]["content"] = "changed"
    assert messages[0]["content"] == "hi"


@pytest.mark.parametrize(
    ("data", "expected_parts"),
    [
        pytest.param('[{"role": "user", "content": "hi"', ["not valid JSON", "line 1"], id="json"),
        pytest.param("", ["not valid JSON"], id="empty_string"),
        pytest.param("42", ["expected a list of messages", "number"], id="number"),
        pytest.param({"msgs": []}, ["without 'messages'"], id="no_messages_key"),
        pytest.param({"messages": "hi"}, ["'messages' must be an array", "string"], id="bad_list"),
        pytest.param(
            [u("hi"), a("yo"), "text"], ["message 3", "expected an object", "string"], id="item"
        ),
        pytest.param([u("hi"), {"content": "x"}], ["message 2", "missing 'role'"], id="no_role"),
        pytest.param([{"role": "user"}], ["message 1", "missing 'content'"], id="no_content"),
        pytest.param(
            '[{"role": "user", "content": "a"}, {"role": 7, "content": "b"}]',
            ["message 2", "'role' must be a string", "number"],
            id="role_number",
        ),
        pytest.param(
            [u("a"), a("b"), {"role": "user", "content": ["x"]}],
            # Issue 13: a list is now read as content parts, and "x" is not a part.
            ["message 3", "content part 1 must be an object", "string"],
            id="content_list",
        ),
    ],
)
def test_parse_conversation_errors(data: object, expected_parts: list[str]) -> None:
    with pytest.raises(ChatFormatError) as info:
        parse_conversation(data)
    message = str(info.value)
    for part in expected_parts:
        assert part in message
    assert "\n" not in message


# ---------------------------------------------------------------------------------------------
# Budget
# ---------------------------------------------------------------------------------------------

EXCHANGES = [u("first question"), a("first answer"), u("second q"), a("second a"), u("newest")]


def test_budget_exactly_at_limit_fits_without_drops() -> None:
    full = render(EXCHANGES).text
    budget = fit_budget(EXCHANGES, count_tokens=len, context_size=len(full) + 10, max_new_tokens=10)
    assert isinstance(budget, Budget)
    assert budget.dropped_turns == ()
    assert budget.prompt_tokens == len(full)
    assert budget.remaining_tokens == 0
    assert budget.rendered.text == full


def test_budget_one_over_drops_oldest_exchange() -> None:
    full = render(EXCHANGES).text
    budget = fit_budget(
        EXCHANGES, count_tokens=len, context_size=len(full) + 10 - 1, max_new_tokens=10
    )
    assert budget.dropped_turns == (1, 2)
    expected = render(EXCHANGES[2:]).text
    assert budget.rendered.text == expected
    assert budget.prompt_tokens == len(expected)
    assert budget.remaining_tokens == len(full) - 1 - len(expected)
    assert "first question" not in budget.rendered.text
    assert any("messages 1-2" in warning for warning in budget.rendered.warnings)


def test_budget_drops_several_exchanges_oldest_first() -> None:
    newest_only = render(EXCHANGES[4:]).text
    budget = fit_budget(
        EXCHANGES, count_tokens=len, context_size=len(newest_only), max_new_tokens=0
    )
    assert budget.dropped_turns == (1, 2, 3, 4)
    assert budget.rendered.text == newest_only
    assert budget.remaining_tokens == 0


def test_budget_with_word_count() -> None:
    def words(text: str) -> int:
        return len(text.split())

    long_history = [u("a " * 50), a("b " * 50), u("c"), a("d"), u("e")]
    full_words = words(render(long_history).text)
    budget = fit_budget(long_history, count_tokens=words, context_size=full_words, max_new_tokens=1)
    assert budget.dropped_turns == (1, 2)
    assert budget.prompt_tokens == words(render(long_history[2:]).text)
    assert budget.prompt_tokens + 1 <= full_words


def test_budget_folded_system_text_survives_drops() -> None:
    messages = [s("SYSTEM RULES"), u("old q"), a("old a"), u("new q")]
    target = render([s("SYSTEM RULES"), u("new q")]).text
    budget = fit_budget(messages, count_tokens=len, context_size=len(target), max_new_tokens=0)
    assert budget.dropped_turns == (2, 3)
    assert budget.rendered.text == target
    assert budget.rendered.text.startswith("<bos><start_of_turn>user\nSYSTEM RULES\n\nnew q")
    assert budget.rendered.messages == (u("SYSTEM RULES\n\nnew q"),)


def test_budget_never_drops_half_an_exchange() -> None:
    full = render(EXCHANGES).text
    for context_size in range(len(render(EXCHANGES[4:]).text), len(full) + 1):
        budget = fit_budget(
            EXCHANGES, count_tokens=len, context_size=context_size, max_new_tokens=0
        )
        assert len(budget.dropped_turns) % 2 == 0
        assert budget.rendered.messages[0]["role"] == "user"
        assert budget.rendered.messages[-1] == u("newest")
        assert budget.prompt_tokens <= context_size


def test_budget_keeps_last_exchange_without_generation_prompt() -> None:
    messages = [u("q1"), a("a1"), u("q2"), a("a2")]
    target = render(messages[2:], RenderOptions(add_generation_prompt=False)).text
    budget = fit_budget(
        messages,
        count_tokens=len,
        context_size=len(target),
        max_new_tokens=0,
        options=RenderOptions(add_generation_prompt=False),
    )
    assert budget.dropped_turns == (1, 2)
    assert budget.rendered.text == target


def test_budget_forwards_render_options() -> None:
    messages = [s("sys"), u("q1"), a("a1"), u("q2")]
    budget = fit_budget(
        messages,
        count_tokens=len,
        context_size=10_000,
        max_new_tokens=0,
        options=RenderOptions(system_policy="drop", prefill="Answer:"),
    )
    assert budget.rendered.text == reference_render(messages[1:], prefill="Answer:")
    assert any("left out" in warning for warning in budget.rendered.warnings)


def test_budget_counts_the_rendered_text() -> None:
    seen: list[str] = []

    def counting(text: str) -> int:
        seen.append(text)
        return 5

    budget = fit_budget([u("hi")], count_tokens=counting, context_size=8, max_new_tokens=3)
    assert seen == [render([u("hi")]).text]
    assert budget.prompt_tokens == 5
    assert budget.remaining_tokens == 0


def test_budget_warning_positions_refer_to_original_messages() -> None:
    messages = [u("old"), a("old"), u("x <eos>")]
    target = render(messages[2:]).text
    budget = fit_budget(messages, count_tokens=len, context_size=len(target), max_new_tokens=0)
    assert any(w.startswith("message 3 (user) contains '<eos>'") for w in budget.rendered.warnings)


def test_budget_newest_message_too_long_raises_with_numbers() -> None:
    messages = [u("old"), a("old"), u("x" * 500)]
    prompt_tokens = len(render(messages[2:]).text)
    with pytest.raises(ChatFormatError) as info:
        fit_budget(messages, count_tokens=len, context_size=300, max_new_tokens=64)
    message = str(info.value)
    assert str(prompt_tokens) in message
    assert "64" in message
    assert "300" in message
    assert "max_new_tokens" in message


def test_budget_max_new_tokens_alone_too_large_raises() -> None:
    with pytest.raises(ChatFormatError) as info:
        fit_budget([s("sys"), u("hi")], count_tokens=len, context_size=100, max_new_tokens=100)
    message = str(info.value)
    assert "100" in message
    assert str(len(render([s("sys"), u("hi")]).text)) in message
    assert "system message" in message


def test_budget_rejects_bad_sizes_and_bad_conversations() -> None:
    with pytest.raises(ChatFormatError, match="context size"):
        fit_budget([u("hi")], count_tokens=len, context_size=0, max_new_tokens=1)
    with pytest.raises(ChatFormatError, match="max_new_tokens"):
        fit_budget([u("hi")], count_tokens=len, context_size=10, max_new_tokens=-1)
    with pytest.raises(ChatFormatError, match="message 2"):
        fit_budget([u("hi"), u("again")], count_tokens=len, context_size=999, max_new_tokens=1)


# ---------------------------------------------------------------------------------------------
# Parsing prompts back
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("messages", "add_generation_prompt", "prefill"), GOLDEN_CASES)
def test_parse_prompt_round_trip(
    messages: list[dict[str, str]], add_generation_prompt: bool, prefill: str
) -> None:
    if _has_turn_markers(messages, prefill):
        # Turn-marker text inside a message is exactly what the prompt format cannot tell
        # apart from a real turn boundary; find_control_text warns about it instead.
        assert find_control_text(messages)
        return
    text = render(
        messages, RenderOptions(add_generation_prompt=add_generation_prompt, prefill=prefill)
    ).text
    parsed = parse_prompt(text)
    assert isinstance(parsed, ParsedPrompt)
    assert parsed.add_generation_prompt is add_generation_prompt
    assert parsed.prefill == prefill
    assert [m["role"] for m in parsed.messages] == [m["role"] for m in messages]
    assert [m["content"] for m in parsed.messages] == [m["content"].strip() for m in messages]
    again = render(
        parsed.messages,
        RenderOptions(
            system_policy="fold",
            add_generation_prompt=parsed.add_generation_prompt,
            prefill=parsed.prefill,
        ),
    )
    assert again.text == text


def test_parse_prompt_round_trip_with_folded_system() -> None:
    text = render([s("Rules."), u("Hi"), a("Hey"), u("Go")], RenderOptions(prefill="Ok")).text
    parsed = parse_prompt(text)
    assert parsed.messages == [u("Rules.\n\nHi"), a("Hey"), u("Go")]
    assert render(parsed.messages, RenderOptions(prefill=parsed.prefill)).text == text


def test_parse_prompt_without_bos_and_empty_generation_prompt() -> None:
    parsed = parse_prompt("<start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n")
    assert parsed == ParsedPrompt(messages=[u("hi")], add_generation_prompt=True, prefill="")


def test_parse_prompt_keeps_content_untrimmed() -> None:
    parsed = parse_prompt("<bos><start_of_turn>user\n  spaced \n<end_of_turn>\n")
    assert parsed.messages == [u("  spaced \n")]
    assert parsed.add_generation_prompt is False


@pytest.mark.parametrize(
    ("text", "expected_parts"),
    [
        pytest.param("", ["no turns"], id="empty"),
        pytest.param("<bos>", ["no turns"], id="bos_only"),
        pytest.param("hello", ["outside any turn", "character 0", "'hello'"], id="plain_text"),
        pytest.param(
            "<bos><start_of_turn>user\nhi<end_of_turn>\nstray",
            ["outside any turn", "character 41", "'stray'"],
            id="trailing_text",
        ),
        pytest.param(
            "<bos><bos><start_of_turn>user\nhi<end_of_turn>\n",
            ["outside any turn", "character 5"],
            id="double_bos",
        ),
        pytest.param(
            "<bos><start_of_turn>system\nrules<end_of_turn>\n",
            ["turn 1", "character 5", "unknown role 'system'"],
            id="system_role",
        ),
        pytest.param(
            "<bos><start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>assistant\nyo<end_of_turn>\n",
            ["turn 2", "character 41", "unknown role 'assistant'"],
            id="assistant_role",
        ),
        pytest.param(
            "<bos><start_of_turn>user\nhi",
            ["turn 1", "user", "missing <end_of_turn>"],
            id="open_user_turn",
        ),
        pytest.param(
            "<bos><start_of_turn>user\nhi\n<start_of_turn>model\n",
            ["turn 1", "not closed", "character 28"],
            id="open_non_final_turn",
        ),
        pytest.param(
            "<bos><start_of_turn>model\nhi<start_of_turn>user\nq<end_of_turn>\n",
            ["turn 1", "not closed"],
            id="open_model_turn_not_final",
        ),
        pytest.param(
            "<bos><start_of_turn>user\nhi<end_of_turn>",
            ["turn 1", "newline after <end_of_turn>", "end of the prompt"],
            id="missing_final_newline",
        ),
        pytest.param(
            "<bos><start_of_turn>user\nhi<end_of_turn><start_of_turn>model\n",
            ["turn 1", "newline after <end_of_turn>", "character 40"],
            id="missing_newline_between_turns",
        ),
        pytest.param("<bos><start_of_turn>user", ["turn 1", "newline"], id="role_without_newline"),
    ],
)
def test_parse_prompt_errors(text: str, expected_parts: list[str]) -> None:
    with pytest.raises(ChatFormatError) as info:
        parse_prompt(text)
    message = str(info.value)
    for part in expected_parts:
        assert part in message
    assert "\n" not in message


# ---------------------------------------------------------------------------------------------
# Side by side with the peers (issue 13)
# ---------------------------------------------------------------------------------------------


def test_fold_trims_both_texts_then_joins_with_a_blank_line() -> None:
    rendered = render([s("You are brief.\n"), u("  Hi")])
    assert rendered.text == "<bos><start_of_turn>user\nYou are brief.\n\nHi<end_of_turn>\n" + (
        "<start_of_turn>model\n"
    )
    assert rendered.messages == (u("You are brief.\n\nHi"),)


@pytest.mark.parametrize("separator", ["\n", "\n\n", " "])
def test_fold_separator_is_an_option(separator: str) -> None:
    rendered = render([s(" rules "), u("\tgo\n")], RenderOptions(fold_separator=separator))
    assert rendered.messages == (u("rules" + separator + "go"),)
    assert rendered.text == reference_render([u("rules" + separator + "go")])


def test_fold_note_is_one_short_line_and_the_details_name_the_separator_and_peers() -> None:
    # Issue 33: the note is shown on every send, so it is short; the peers are on request.
    rendered = render([s("rules"), u("go")], RenderOptions(fold_separator="\n"))
    assert rendered.warnings == ()
    assert rendered.notes == (FOLD_NOTE,)
    assert len(FOLD_NOTE) < 100 and "\n" not in FOLD_NOTE
    assert not any(peer in FOLD_NOTE for peer in ("minja", "llama.cpp", "Ollama"))
    details = fold_details("\n")
    assert "joined with '\\n'" in details and details.endswith("too.")
    for peer in ("OpenVINO GenAI", "llama.cpp", "minja", "Ollama"):
        assert peer in details
    assert "'\\n\\n'" in fold_details("\n\n") and "differs" in fold_details("\n\n")
    assert render([u("go")]).notes == ()
    assert render([s("rules"), u("go")], RenderOptions(system_policy="drop")).notes == ()


def test_budget_forwards_the_fold_separator() -> None:
    budget = fit_budget(
        [s("R"), u("q1"), a("a1"), u("q2")],
        count_tokens=len,
        context_size=10_000,
        max_new_tokens=1,
        options=RenderOptions(fold_separator="\n"),
    )
    assert budget.rendered.messages[0] == u("R\nq1")


def test_template_words_are_the_official_templates() -> None:
    assert f"raise_exception('{TEMPLATE_SYSTEM_ERROR}')" in GEMMA2_CHAT_TEMPLATE
    assert f"raise_exception('{TEMPLATE_ALTERNATION_ERROR}')" in GEMMA2_CHAT_TEMPLATE


@pytest.mark.parametrize(
    ("messages", "explanation"),
    [
        pytest.param([u("a"), u("b")], "message 2: expected 'assistant' after 'user'", id="uu"),
        pytest.param([a("a")], "message 1: expected 'user' as the first message", id="a_first"),
        pytest.param([s("x"), a("a")], "message 2: expected 'user' after 'system'", id="sa"),
        pytest.param(
            [{"role": "tool", "content": "x"}], "message 1: unknown role 'tool'", id="tool"
        ),
    ],
)
def test_order_errors_quote_the_templates_words_after_the_explanation(
    messages: list[dict[str, str]], explanation: str
) -> None:
    with pytest.raises(ChatFormatError) as info:
        render(messages)
    message = str(info.value)
    assert message.startswith(explanation)
    assert message.endswith(f'Gemma-2\'s template says: "{TEMPLATE_ALTERNATION_ERROR}"')
    with pytest.raises(ReferenceTemplateError, match="alternate"):
        reference_render(messages[1:] if messages[0]["role"] == "system" else messages)


def test_an_order_the_official_template_lets_through_is_refused_without_its_words() -> None:
    # The official template checks only that users sit at even places: [user, system] passes.
    messages = [u("a"), s("x")]
    assert reference_render(messages, add_generation_prompt=False)
    with pytest.raises(ChatFormatError) as info:
        render(messages)
    assert "only allowed as the first message" in str(info.value)
    assert TEMPLATE_ALTERNATION_ERROR not in str(info.value)


def test_text_content_parts_are_joined_with_a_newline() -> None:
    parts = [{"type": "text", "text": "first"}, {"type": "text", "text": "second"}]
    messages = parse_conversation([{"role": "user", "content": parts}])
    assert messages == [u("first\nsecond")]
    assert render([{"role": "user", "content": parts}]).text == render([u("first\nsecond")]).text
    assert parse_conversation([{"role": "user", "content": []}]) == [u("")]


@pytest.mark.parametrize(
    ("part", "expected"),
    [
        pytest.param(
            {"type": "image_url", "image_url": {"url": "x"}},
            "message 2: content part 2 has type 'image_url'",
            id="image",
        ),
        pytest.param({"text": "x"}, "message 2: content part 2 has type null", id="no_type"),
        pytest.param(
            {"type": "text", "text": 5},
            "message 2: content part 2: 'text' must be a string, got a number",
            id="text_number",
        ),
        pytest.param("x", "message 2: content part 2 must be an object", id="string"),
    ],
)
def test_other_content_parts_are_refused_by_position_and_type(part: object, expected: str) -> None:
    content = [{"type": "text", "text": "ok"}, part]
    with pytest.raises(ChatFormatError) as info:
        parse_conversation([u("hi"), {"role": "assistant", "content": content}])
    assert str(info.value).startswith(expected)


def test_prefill_ending_in_whitespace_warns() -> None:
    rendered = render([u("Capital of France?")], RenderOptions(prefill="The capital is "))
    (warning,) = rendered.warnings
    assert warning.startswith("the prefill ends in whitespace (' ')")
    assert "attaches a space to the word that follows" in warning
    assert "continue_final_message" in warning
    assert render([u("q")], RenderOptions(prefill="The capital is")).warnings == ()
    assert (
        render([u("q")], RenderOptions(prefill="Line\n"))
        .warnings[0]
        .startswith("the prefill ends in whitespace ('\\n')")
    )


# ---------------------------------------------------------------------------------------------
# Issue 23: bounded cost, and one clear message per bad input
# ---------------------------------------------------------------------------------------------


def quadratic_fit(messages, count_tokens, context_size, max_new_tokens):
    """The old fit, kept as the reference: drop one exchange, render and count it all again."""
    start = 1 if messages[0]["role"] == "system" else 0
    for count in range(0, len(messages)):
        kept = messages[:start] + messages[start + 2 * count :]
        if kept[start]["role"] != "user":
            break
        tokens = count_tokens(render(kept).text)
        if tokens + max_new_tokens <= context_size:
            return tuple(range(start + 1, start + 2 * count + 1)), tokens
    return None


def words(text: str) -> int:
    return len(text.split())


@pytest.mark.parametrize("count_tokens", [len, words], ids=["chars", "words"])
def test_linear_fit_drops_exactly_what_the_old_fit_dropped(count_tokens) -> None:
    messages = [s("rules here")]
    for n in range(12):
        messages += [u(f"question {n} " + "x " * n), a(f"answer {n}")]
    messages.append(u("newest question"))
    full = count_tokens(render(messages).text)
    newest = count_tokens(render([messages[0], messages[-1]]).text)
    for context_size in range(newest, full + 2, 3):
        expected = quadratic_fit(messages, count_tokens, context_size, 0)
        budget = fit_budget(
            messages, count_tokens=count_tokens, context_size=context_size, max_new_tokens=0
        )
        assert (budget.dropped_turns, budget.prompt_tokens) == expected, context_size


def test_fitting_counts_each_turn_about_once() -> None:
    # Issue 23 P1: "Hi" after 2,000 empty alternating turns cost 10 s of CPU, because every
    # dropped exchange re-rendered and re-counted the whole conversation.
    messages = [u("") if i % 2 == 0 else a("") for i in range(2000)] + [u("Hi")]
    counted: list[int] = []

    def counting(text: str) -> int:
        counted.append(len(text))
        return len(text)

    full = len(render(messages).text)
    budget = fit_budget(messages, count_tokens=counting, context_size=full // 2, max_new_tokens=0)
    assert len(budget.dropped_turns) > 900
    # The whole text a few times (first try, the guess and its neighbour), each turn once more.
    assert sum(counted) < 5 * full, (len(counted), sum(counted), full)
    assert budget.prompt_tokens <= full // 2


def test_a_20000_turn_history_is_refused_at_once() -> None:
    messages = [u("") if i % 2 == 0 else a("") for i in range(20_000)] + [u("Hi")]
    began = time.process_time()
    with pytest.raises(ChatFormatError, match="20001 messages; the limit is 4096"):
        fit_budget(messages, count_tokens=len, context_size=8192, max_new_tokens=20)
    with pytest.raises(ChatFormatError, match="20001 messages"):
        parse_conversation(json.dumps(messages))
    assert time.process_time() - began < 0.5


def test_a_deeply_nested_conversation_gets_a_clear_message() -> None:
    with pytest.raises(ChatFormatError, match="nested too deeply"):
        parse_conversation("[" * 30_000 + "]" * 30_000)


def test_a_lone_surrogate_is_refused_naming_the_message() -> None:
    with pytest.raises(ChatFormatError, match=r"message 2: 'content' holds a lone surrogate"):
        parse_conversation(
            '[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "a\\ud800"}]'
        )
    with pytest.raises(ChatFormatError, match=r"message 1: 'content'.*U\+D800"):
        render([u("x\ud800")])
