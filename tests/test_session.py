"""What a turn does, in-process: `session` with the recording fake and with the real engine."""

import json
import threading
import time

import pytest

from playground import session
from playground.chat_format import FOLD_NOTE, ChatFormatError, RenderOptions, render
from playground.errors import UserError
from playground.sampling import ParamError, SamplingParams
from playground.session import Control, Playground, conversation
from tests.helpers.fakes import RecordingEngine

GREEDY = dict(temperature=0.0, top_p=1.0, top_k=0, repetition_penalty=1.0, seed=1)
HI = [{"role": "user", "content": "Hi"}]


@pytest.fixture(scope="module")
def fake(tiny_folder, settings):
    engine = RecordingEngine(tiny_folder)
    return engine, Playground(engine, settings)


@pytest.fixture(scope="module")
def real(genai_engine, settings):
    return Playground(genai_engine, settings)


def last(replies):
    *_, reply = replies
    return reply


def test_submit_appends_and_replaces_a_message_whose_reply_failed():
    turns = session.submit([], "first")
    assert turns == [{"role": "user", "content": "first"}]
    assert session.submit(turns, "again") == [{"role": "user", "content": "again"}]
    for empty in ("", "  \n", None):
        with pytest.raises(ParamError, match="Type a message first"):
            session.submit(turns, empty)


def test_regenerate_and_undo_take_back_the_reply():
    turns = [*HI, {"role": "assistant", "content": "Hello", "figures": {"seed": 1}}]
    assert session.regenerate(turns) == HI
    with pytest.raises(ParamError, match="Nothing to regenerate"):
        session.regenerate([])
    assert session.undo(turns) == ("Hi", [])
    assert session.undo([]) == ("", [])


def test_edit_replaces_a_message_and_forgets_what_followed():
    turns = [*HI, {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "More"}]
    assert session.edit(turns, 0, "Bonjour") == [{"role": "user", "content": "Bonjour"}]
    assert session.needs_reply(session.edit(turns, 2, "Less"))
    with pytest.raises(ParamError, match="no message 9"):
        session.edit(turns, 8, "x")
    with pytest.raises(ParamError, match="cannot be empty"):
        session.edit(turns, 0, " ")


def test_an_example_fills_system_message_box_and_history(fake):
    _, playground = fake
    example = playground.examples["A system prompt (Gemma-2 has no system role)"]
    system, text, turns = session.apply_example(example)
    assert system == example[0]["content"] and text == example[-1]["content"]
    assert turns == example[1:-1]


def test_a_conversation_file_round_trips_with_its_figures():
    figures = {"stop_reason": "eos", "prompt_tokens": 9, "new_tokens": 2, "ttft_s": 0.1,
               "tokens_per_s": 5.0, "seed": 7}  # fmt: skip
    turns = [*HI, {"role": "assistant", "content": "<b>x</b>", "figures": figures}]
    text = session.conversation_json(turns, "Be brief.")
    assert json.loads(text)["messages"][0] == {"role": "system", "content": "Be brief."}
    assert session.load_conversation(text) == ("Be brief.", turns)
    with pytest.raises(ChatFormatError, match="not valid JSON"):
        session.load_conversation("{")


def test_chat_and_inspector_send_the_same_prompt(fake):
    engine, playground = fake
    options = RenderOptions(system_policy="fold", prefill="Sure,")
    turns = [*HI, {"role": "assistant", "content": "Hello", "figures": {"seed": 1}},
             {"role": "user", "content": "And you?"}]  # fmt: skip
    params = SamplingParams(max_new_tokens=8, **GREEDY)
    reply = last(playground.reply(turns, options, params, system="Be brief."))
    messages = conversation("Be brief.", turns)
    inspection = playground.inspect(messages, options, params.max_new_tokens)
    assert engine.calls[-1]["prompt"] == inspection.prompt
    assert inspection.prompt == render(messages, RenderOptions(prefill="Sure,")).text
    assert reply.text == "Sure,Fine, thanks."


def test_figures_carry_the_seed_and_regenerate_draws_a_new_one(real):
    values = dict(max_new_tokens=30, temperature=1.0, top_p=1.0, top_k=0, repetition_penalty=1.0)
    fixed = real.params({**values, "seed": 5})
    first = last(real.reply(HI, RenderOptions(), fixed))
    assert first.figures["seed"] == 5 and first.figures["new_tokens"] > 0
    seeds, texts = set(), set()
    for _ in range(3):
        fresh = real.params({**values, "seed": 5}, new_seed=True)
        reply = last(real.reply(HI, RenderOptions(), fresh))
        seeds.add(reply.figures["seed"])
        texts.add(reply.text)
    assert 5 not in seeds or len(seeds) == 3
    assert len(texts) >= 2  # three regenerations are not byte-identical


def test_the_empty_prompt_rule_is_one_for_every_caller(fake):
    engine, playground = fake
    calls = len(engine.calls)
    for empty in ("", "   \n"):
        with pytest.raises(ParamError, match="The prompt is empty"):
            list(playground.complete(empty, SamplingParams()))
    assert len(engine.calls) == calls


def test_stop_cancels_the_engine_directly(real):
    control = Control()
    control.begin()
    params = SamplingParams(max_new_tokens=4000, **GREEDY)
    replies = real.complete("Tell me a long story", params, control)
    next(replies)
    threading.Thread(target=control.press_stop).start()
    reply = last(replies)
    assert reply.figures["stop_reason"] == "cancelled"
    assert reply.figures["new_tokens"] < 4000
    control.end()
    assert not control.busy and control.generation is None


def test_a_stop_that_arrives_as_the_engine_finishes_still_wins(fake):
    engine, playground = fake
    control = Control()
    control.begin()
    replies = playground.complete("Hello", SamplingParams(max_new_tokens=50), control)
    next(replies)
    deadline = time.monotonic() + 10
    while engine.active and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)  # the native loop has emitted every token: the engine is done
    control.press_stop()  # ...but the visitor has not seen the end yet
    reply = last(replies)
    assert reply.text == "Fine, thanks."
    assert reply.figures["stop_reason"] == "cancelled"


def test_one_reply_at_a_time_per_visitor():
    control = Control()
    control.begin()
    with pytest.raises(ParamError, match="press Stop first"):
        control.begin()


def test_export_names_the_model_not_the_servers_folders(fake, settings):
    engine, playground = fake
    code = playground.export("<bos>Hi", SamplingParams())
    for snippet in code.values():
        assert str(engine.folder) not in snippet and str(settings.cache_dir) not in snippet
    assert session.exported_model("fakezeta/gemma-2-9b-it-ov-int4") == (
        "fakezeta/gemma-2-9b-it-ov-int4",
        True,
    )
    assert session.exported_model("/srv/models/gemma") == ("path/to/gemma", False)


def test_the_token_table_says_when_the_tokens_are_not_gemmas(fake):
    _, playground = fake
    assert "not Gemma-2's tokens" in playground.token_note()


def test_every_user_facing_error_shares_one_base():
    from playground.engines import EngineError
    from playground.models import ModelUnavailableError
    from playground.settings import SettingsError

    for error in (ChatFormatError, ParamError, EngineError, SettingsError, ModelUnavailableError):
        assert issubclass(error, UserError)


def test_14_the_fold_policy_says_what_it_did(fake):
    _, playground = fake
    budget = playground.fit(HI, RenderOptions(system_policy="fold"), 8, system="Be brief.")
    assert budget.rendered.warnings[0] == FOLD_NOTE  # one short line; the why is on request
    assert not playground.fit(HI, RenderOptions(), 8).rendered.warnings


def test_1_a_reply_begun_before_a_clear_is_outdated():
    control = Control()
    control.begin()
    assert not control.outdated()
    control.clear()
    assert control.outdated() and control.stop and not control.busy
    control.begin()
    assert not control.outdated()


# ---- issue 23 P7: one clear message, naming the field, for each odd input --------------------


def test_odd_api_values_get_a_message_naming_the_field(fake):
    _, playground = fake
    with pytest.raises(UserError, match="The prompt holds a lone surrogate"):
        playground.check_text("a\ud800", "The prompt")
    with pytest.raises(ParamError, match=r"stop must be text .* got 123"):
        playground.request_params({}, 123)
    with pytest.raises(ParamError, match=r"stop must be text .* got \{'a': 1\}"):
        playground.request_params({}, {"a": 1})
    for name in ("temperature", "top_p", "repetition_penalty"):
        with pytest.raises(ParamError, match=f"{name} .* 0 in the engine's float32"):
            playground.request_params({name: 1e-300})
    params, _ = playground.request_params({"temperature": 1e-3, "top_p": 1e-30})
    assert params.temperature == 1e-3


def test_a_loaded_conversation_with_odd_figures_is_refused_naming_them():
    base = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    for figures, field in [({"seed": 7}, "stop_reason"), ("x", "must be an object"),
                           ({**FIGURES, "ttft_s": "fast"}, "ttft_s"),
                           # issue 34: a 400-digit count gave "Something went wrong" in the page
                           ({**FIGURES, "prompt_tokens": 10**400}, "prompt_tokens"),
                           ({**FIGURES, "ttft_s": -1.0}, "ttft_s")]:  # fmt: skip
        text = json.dumps([base[0], {**base[1], "figures": figures}])
        with pytest.raises(UserError, match=f"message 2: 'figures'.*{field}"):
            session.load_conversation(text)
    surrogate = json.dumps([base[0], {**base[1], "content": "a\ud800"}])
    with pytest.raises(UserError, match="message 2: 'content' holds a lone surrogate"):
        session.load_conversation(surrogate)


FIGURES = {"stop_reason": "eos", "prompt_tokens": 9, "new_tokens": 2, "ttft_s": 0.1,
           "tokens_per_s": 5.0, "seed": 7}  # fmt: skip
