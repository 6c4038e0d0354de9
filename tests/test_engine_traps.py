"""The fault lab's engine traps, run for real on tiny-tutor: each column's text and ids come from
the library it names, checked here against that library called directly (OpenVINO GenAI's
`LLMPipeline` and `Tokenizer`, Hugging Face `tokenizers`), and its output is what that library's
own generation gives.
"""

import json

import numpy as np
import openvino as ov
import openvino_genai
import pytest

from playground.compare import TRAPS, Variant, compare, conversation_inputs, plan_column
from playground.engines import AS_SENT, Delivery
from playground.session import Playground
from playground.tutor import TUTOR_DIR
from tests.conftest import F32

QUESTION = [{"role": "user", "content": "What is 7 plus 5?"}]
CORRECT = "<bos><start_of_turn>user\nWhat is 7 plus 5?<end_of_turn>\n<start_of_turn>model\n"
NEW_TOKENS = 60


@pytest.fixture(scope="module")
def playground(tutor_engine, settings):
    return Playground(tutor_engine, settings.with_(model="tiny-tutor"))


@pytest.fixture(scope="module")
def greedy(playground):
    return playground.params({"temperature": 0, "max_new_tokens": NEW_TOKENS})


@pytest.fixture(scope="module")
def pipeline():
    """GenAI's own LLMPipeline on tiny-tutor, at the compute precision of the tests' engine."""
    return openvino_genai.LLMPipeline(str(TUTOR_DIR), "CPU", **F32)


def plan(playground, greedy, name, messages=QUESTION, prefill=""):
    turns, options = conversation_inputs(playground, json.dumps(messages), prefill)
    return plan_column(playground, turns, options, Variant(name), greedy)


def run(playground, column):
    *_, last = playground.complete(column.prompt, column.params, delivery=column.delivery)
    return last.result


def ids_of(encoded) -> list[int]:
    return [int(i) for i in encoded.input_ids.data[0]]


def test_templated_twice_is_what_genai_string_api_builds_and_says(playground, greedy, pipeline):
    column = plan(playground, greedy, "templated-twice")
    direct = pipeline.generate([CORRECT], max_new_tokens=NEW_TOKENS, do_sample=False)
    # GenAI's string API wrapped the rendered prompt in a second template: its own count.
    assert len(column.tokens) == direct.perf_metrics.get_num_input_tokens()
    assert column.prompt.count("<start_of_turn>user") == 2
    assert run(playground, column).text == direct.texts[0]
    assert direct.texts[0] != run(playground, plan(playground, greedy, "correct")).text


def test_no_bos_sends_no_bos_at_all(playground, greedy):
    column = plan(playground, greedy, "no-bos")
    tokenizer = openvino_genai.Tokenizer(str(TUTOR_DIR))
    assert column.prompt == CORRECT.removeprefix("<bos>")
    assert [t.id for t in column.tokens] == ids_of(
        tokenizer.encode(column.prompt, add_special_tokens=False)
    )
    assert 2 not in [t.id for t in column.tokens]
    result = run(playground, column)
    assert result.prompt_tokens == len(column.tokens)


def test_prefill_by_add_generation_prompt_false_closes_the_turn(playground, greedy):
    column = plan(playground, greedy, "prefill-closed", prefill="The answer is")
    tokenizer = openvino_genai.Tokenizer(str(TUTOR_DIR))
    direct = tokenizer.apply_chat_template(
        [*QUESTION, {"role": "assistant", "content": "The answer is"}],
        add_generation_prompt=False,
    )
    assert column.prompt == direct
    assert column.prompt.endswith("<start_of_turn>model\nThe answer is<end_of_turn>\n")
    assert column.delivery == AS_SENT  # the mistake is in the text alone


@pytest.mark.parametrize("name", ["end-of-turn-not-stop", "stop-string-with-bos"])
def test_without_end_of_turn_as_a_stop_the_reply_runs_past_it(playground, greedy, pipeline, name):
    column = plan(playground, greedy, name)
    assert column.delivery.end_ids == {1}
    result = run(playground, column)
    # GenAI itself, told to stop on <eos> only, gives these very ids.
    config = openvino_genai.GenerationConfig()
    config.max_new_tokens, config.stop_token_ids, config.eos_token_id = NEW_TOKENS, {1}, 1
    prompt_ids = playground.engine.tokenizer.encode(CORRECT)
    direct = pipeline.generate(ov.Tensor(np.array([prompt_ids], dtype=np.int64)), config)
    assert result.token_ids == list(direct.tokens[0])
    assert "<end_of_turn>" in result.text and result.stop_reason == "max_new_tokens"


def test_a_stop_string_encoded_with_bos_is_genais_encoding(playground, greedy):
    column = plan(playground, greedy, "stop-string-with-bos")
    tokenizer = openvino_genai.Tokenizer(str(TUTOR_DIR))
    assert column.delivery.stop_ids == (tuple(ids_of(tokenizer.encode("<end_of_turn>"))),)
    assert column.delivery.stop_ids == ((2, 107),)
    assert any("[2, 107]" in note for note in column.notes)


def test_a_stop_sequence_that_does_occur_ends_the_reply_and_is_cut(playground, greedy):
    # The same machinery with a sequence the model does write: the engine stops on it.
    column = plan(playground, greedy, "end-of-turn-not-stop")
    full = run(playground, column)
    ids = tuple(full.token_ids[3:5])
    cut = playground.engine.generate(
        column.prompt, greedy, delivery=Delivery(stop_ids=(ids,))
    ).run()
    assert cut.stop_reason == "stop_string" and cut.token_ids == full.token_ids[:5]
    assert full.text.startswith(cut.text) and len(cut.text) < len(full.text)


def test_every_trap_runs_in_the_compare_endpoint_data(playground, greedy):
    turns, options = conversation_inputs(playground, json.dumps(QUESTION), "")
    results = compare(playground, turns, options, [Variant(), *map(Variant, TRAPS)][:4], greedy)
    results += compare(playground, turns, options, [Variant(), *map(Variant, TRAPS)][4:], greedy)
    assert all("output" in r for r in results), results


def test_the_remote_engine_refuses_a_trap_that_needs_other_ids(playground, greedy, monkeypatch):
    monkeypatch.setattr(playground.engine, "takes_deliveries", False)
    with pytest.raises(Exception, match="sends text, which its server tokenizes"):
        plan(playground, greedy, "no-bos")
    assert plan(playground, greedy, "prefill-closed").prompt  # text only: runs anywhere


def test_lesson_10_sends_each_trap_as_the_compare_tab_makes_it(playground, greedy):
    from playground.notebook import PromptCell, list_lessons, parse_lesson

    lesson = list_lessons()["10. What engines do to your prompt"]
    cells = [c for c in parse_lesson(lesson.read_text()) if isinstance(c, PromptCell)]
    for cell in cells:
        column = plan(playground, greedy, cell.option("trap") or "correct",
                      prefill=cell.option("prefill"))  # fmt: skip
        assert playground.cell_send(cell) == (column.prompt, column.delivery), cell.options
    assert [c.option("trap") for c in cells] == ["", *TRAPS]  # each trap once, in the lab's order


def test_a_trap_on_a_raw_cell_is_refused_in_one_line(playground):
    from playground.errors import UserError
    from playground.notebook import PromptCell

    with pytest.raises(UserError, match="trap= goes with chat cells"):
        playground.cell_send(PromptCell("raw", "<bos>Hi", (("trap", "no-bos"),)))


def test_genais_own_refusal_is_one_line_in_its_own_words(playground):
    from playground import traps
    from playground.errors import UserError

    engine = playground.engine
    two_users = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    case = traps.Case("<bos>x", two_users, "", "\n\n", engine.folder, engine.tokenizer)
    with pytest.raises(UserError) as caught:
        traps.apply(traps.TRAPS["prefill-closed"], case)
    message = str(caught.value)
    assert message == (
        "OpenVINO GenAI's template refused this conversation: Conversation roles must "
        "alternate user/assistant/user/assistant/..."
    )
