"""Issue 33, "The first five minutes", the Chat tab's first use: the preset is named by its
values, a turn is refused before it is accepted, a loaded conversation is checked as it loads,
and the Examples say which the served model answers. What a visitor sees, at 1280 and 400 px,
in test_browser_chat_first_use.py."""

import json
import re
from dataclasses import replace

import pytest

from playground import session
from playground.chat_format import ChatFormatError, RenderOptions
from playground.errors import UserError
from playground.models import TUTOR
from playground.session import NEEDS_9B, Playground
from playground.settings import load_settings
from playground.ui.controls import CUSTOM, preset_name
from tests.helpers.fakes import RecordingEngine

HI = {"role": "user", "content": "Hi"}
HELLO = {"role": "assistant", "content": "Hello"}
AGAIN = {"role": "user", "content": "Again"}


# ---- the preset -------------------------------------------------------------------------------


def test_the_preset_is_named_by_the_values_it_matches():
    settings = load_settings(env={})
    defaults = settings.defaults()
    assert preset_name(settings, defaults) == "Gemma Space defaults"  # was "Custom"
    assert preset_name(settings, {**defaults, "temperature": 0.7}) == CUSTOM
    assert preset_name(settings, {**defaults, "temperature": 0.6 + 1e-12}) == "Gemma Space defaults"
    assert preset_name(settings, {**defaults, "temperature": None}) == CUSTOM  # a cleared box
    # A preset names only some values: the others are the visitor's, whatever they are.
    deterministic = {**defaults, **settings.presets["Deterministic"], "max_new_tokens": 77}
    assert preset_name(settings, deterministic) == "Deterministic"


# ---- a turn is refused before it is accepted --------------------------------------------------


@pytest.fixture
def fake(tiny_folder, settings):
    engine = RecordingEngine(tiny_folder, context_size=64)
    return engine, Playground(engine, settings)


def test_a_turn_the_reply_would_refuse_is_refused_by_its_check_with_the_same_words(fake):
    engine, playground = fake
    params = playground.params({**playground.settings.defaults(), "max_new_tokens": 16})
    fold, error = RenderOptions("fold"), RenderOptions("error")
    long = session.submit([], "word " * 200)
    for turns, options, system, words in [
        (long, fold, "", "more than the context size of 64"),
        ([HI], error, "Be brief.", "Gemma-2 was trained without a system turn"),
        ([HI], RenderOptions("fold", prefill="x" * 10**6), "", "The prefill has"),
    ]:
        with pytest.raises(UserError) as checked:
            playground.check_turn(turns, options, params, system)
        assert words in str(checked.value)
        with pytest.raises(type(checked.value), match=re.escape(str(checked.value))):
            next(playground.reply(turns, options, params, system=system))
    assert engine.calls == []  # nothing reached the engine
    budget = playground.check_turn([HI], fold, params, "Be brief.")
    assert "Be brief." in budget.rendered.text


# ---- a loaded conversation is checked as it loads ---------------------------------------------


@pytest.mark.parametrize(
    "messages, refusal",
    [
        ([HI, AGAIN], "message 2: expected 'assistant' after 'user'"),
        ([HELLO, HI], "message 1: expected 'user' as the first message, got 'assistant'"),
        ([HI, HELLO, HELLO], "message 3: expected 'user' after 'assistant'"),
        ([{"role": "system", "content": "x"}, HI, {"role": "system", "content": "y"}],
         "message 3: got 'system' after 'user'"),
    ],
)  # fmt: skip
def test_a_conversation_out_of_order_is_refused_as_it_loads(messages, refusal):
    # Before issue 33 these loaded silently, and only the next Send failed.
    with pytest.raises(ChatFormatError, match=re.escape(refusal)):
        session.load_conversation(json.dumps({"messages": messages}))


def test_a_conversation_loads_ending_either_way_or_with_a_system_prompt_alone():
    system = {"role": "system", "content": "Be brief."}
    assert session.load_conversation(json.dumps([HI])) == ("", [HI])
    assert session.load_conversation(json.dumps([system, HI, HELLO])) == ("Be brief.", [HI, HELLO])
    assert session.load_conversation(json.dumps([system])) == ("Be brief.", [])
    assert session.load_conversation(json.dumps([])) == ("", [])
    # An empty system prompt is still the system prompt, not a turn of the conversation.
    empty = {"role": "system", "content": ""}
    assert session.load_conversation(json.dumps([empty, HI])) == ("", [HI])


# ---- the Examples -----------------------------------------------------------------------------


def serving(tiny_folder, settings, model: str) -> Playground:
    engine = RecordingEngine(tiny_folder)
    engine.info = replace(engine.info, model=model)
    return Playground(engine, settings)


def test_served_by_tiny_tutor_the_examples_it_answers_come_first_and_the_rest_are_marked(
    tiny_folder, settings
):
    playground = serving(tiny_folder, settings, TUTOR)
    choices = playground.example_choices()
    assert sorted(title for _, title in choices) == sorted(playground.examples)
    answered = [label for label, title in choices if title in playground.tutor_examples]
    assert len(answered) >= 4 and "tiny-tutor: a sum, counted step by step" in answered
    assert [label for label, _ in choices[: len(answered)]] == answered  # first
    for label, title in choices[len(answered) :]:
        assert label == f"{title} · {NEEDS_9B}"
    assert "Write code · needs Gemma-2-9B" in [label for label, _ in choices]


def test_served_by_another_model_the_examples_are_listed_as_they_are(tiny_folder, settings):
    playground = serving(tiny_folder, settings, "fakezeta/gemma-2-9b-it-ov-int4")
    assert playground.example_choices() == [(title, title) for title in playground.examples]


@pytest.mark.slow
def test_tiny_tutor_answers_the_examples_marked_for_it_and_refuses_the_rest(tutor_engine, settings):
    """The marks are measured: greedy tiny-tutor on every example, as the Chat tab sends it."""
    playground = Playground(tutor_engine, settings.with_(model=TUTOR))
    params = playground.params({**settings.defaults(), "temperature": 0, "max_new_tokens": 120})
    replies = {}
    for title, messages in playground.examples.items():
        system, last, turns = session.apply_example(messages)
        turns = session.submit(turns, last)
        *_, reply = playground.reply(turns, RenderOptions("fold"), params, system=system)
        replies[title] = reply.text
    refused = {t for t, text in replies.items() if "can't answer that" in text.casefold()}
    assert refused == set(playground.examples) - playground.tutor_examples, replies
    assert len(refused) >= 3  # the real model's examples are still listed, and marked
