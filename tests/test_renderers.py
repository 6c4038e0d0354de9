"""Renderers side by side (`playground.renderers`): each renderer's text is its library's own,
and each difference from the canonical rendering is named.

The classifier's tests are fast (two strings in, named differences out). The tests marked slow
run the libraries on the shipped tiny-tutor (transformers, OpenVINO GenAI, llama-cpp-python and
the gguf package) and call each library directly to check the text.
"""

import ctypes
import json
import shutil
import subprocess
import sys

import pytest

from playground.chat_format import RenderOptions, render
from playground.renderers import CANONICAL, KINDS, Difference, compare_renderers, name_differences
from playground.tokens import Tokenizer
from playground.tutor import GGUF, TUTOR_DIR
from tests.conftest import ROOT

HI = [{"role": "user", "content": "Hi"}]
SYSTEM = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is 7 plus 5?"},
]
PREFILL = RenderOptions(prefill="The answer is ")
CHAT = [
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "What is 7 plus 5?"},
]
EDGES = [{"role": "user", "content": "  Hi there \n"}]
EMPTY = [
    {"role": "user", "content": ""},
    {"role": "assistant", "content": ""},
    {"role": "user", "content": "go"},
]


def kinds(differences) -> list[str]:
    return [d.kind for d in differences]


# ---- the classifier, on strings ---------------------------------------------------------------


def test_equal_texts_have_no_difference():
    text = render(HI).text
    assert name_differences(text, text, HI) == []


def test_a_missing_bos_is_named():
    text = render(HI).text
    (found,) = name_differences(text, text.removeprefix("<bos>"), HI)
    assert found.kind == "<bos>" and "0 <bos>, the canonical with 1" in found.explanation
    assert kinds(name_differences(text, "<bos>" + text, HI)) == ["<bos>"]


def test_the_fold_separator_is_named_and_the_kept_whitespace_too():
    canonical = render(SYSTEM).text
    joined = canonical.replace("Be brief.\n\n", "Be brief.\n")
    (found,) = name_differences(canonical, joined, SYSTEM)
    assert found.kind == "separator" and "'\\n', the canonical with '\\n\\n'" in found.explanation
    spaced = canonical.replace("Be brief.\n\n", "Be brief.  \n ")
    assert kinds(name_differences(canonical, spaced, SYSTEM)) == ["separator", "trim"]


def test_whitespace_at_a_messages_edge_is_a_trim():
    canonical = render(HI, PREFILL).text
    (found,) = name_differences(canonical, canonical.rstrip(" "), HI, PREFILL)
    assert found.kind == "trim" and found.explanation.startswith("the prefill (turn 2)")
    assert "at its end is '' here, ' ' in the canonical" in found.explanation


def test_a_newline_after_the_role_or_the_end_of_turn_is_named():
    canonical = render(CHAT).text
    no_role_newline = canonical.replace("<start_of_turn>model\nHello", "<start_of_turn>modelHello")
    (found,) = name_differences(canonical, no_role_newline, CHAT)
    assert found.kind == "newline" and "turn 2 (model): no newline after the role 'model'" in (
        found.explanation
    )
    doubled = canonical.replace("Hello!<end_of_turn>\n", "Hello!<end_of_turn>\n\n")
    (found,) = name_differences(canonical, doubled, CHAT)
    assert found.kind == "newline" and "after turn 2 (model)'s <end_of_turn>" in found.explanation


def test_a_closed_prefill_and_a_system_turn_are_other_and_say_where():
    canonical = render(HI, PREFILL).text
    closed = canonical.rstrip() + "<end_of_turn>\n"
    assert kinds(name_differences(canonical, closed, HI, PREFILL)) == ["trim", "other"]
    own_turn = "<bos><start_of_turn>system\nBe brief.<end_of_turn>\n" + render(HI).text[5:]
    (found,) = name_differences(render(SYSTEM).text, own_turn, SYSTEM)
    assert found.kind == "other" and "a turn of its own" in found.explanation
    changed = render(CHAT).text.replace("Hello!", "Howdy!")
    (found,) = name_differences(render(CHAT).text, changed, CHAT)
    assert found == Difference(
        "other", "turn 2 (model): from character 1, 'owdy!' here, 'ello!' in the canonical."
    )
    assert set(KINDS) >= {"<bos>", "trim", "separator", "newline", "refusal", "other"}


# ---- the renderers on tiny-tutor, against their libraries called directly ---------------------


@pytest.fixture(scope="module")
def tutor_tokenizer():
    return Tokenizer(TUTOR_DIR)


@pytest.fixture(scope="module")
def compare(tutor_tokenizer):
    def compare(messages, options=None, folder=TUTOR_DIR, gguf=None):
        options = options or RenderOptions()
        found = compare_renderers(messages, options, folder, tutor_tokenizer, gguf)
        return {r.name: r for r in found}

    return compare


def library_texts(messages, options):
    """Each library's own text for the conversation, called here without the module."""
    import openvino_genai
    from llama_cpp import llama_chat_apply_template, llama_chat_message
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter
    from transformers import AutoTokenizer

    gguf = pytest.importorskip("gguf")
    chat = list(messages)
    if options.prefill:
        chat.append({"role": "assistant", "content": options.prefill})
    add = options.add_generation_prompt and not options.prefill
    texts = {}
    try:
        texts["hf-jinja"] = AutoTokenizer.from_pretrained(TUTOR_DIR).apply_chat_template(
            chat,
            tokenize=False,
            add_generation_prompt=add,
            continue_final_message=bool(options.prefill),
        )
    except Exception as error:
        texts["hf-jinja"] = error
    texts["genai"] = openvino_genai.Tokenizer(str(TUTOR_DIR)).apply_chat_template(chat, add)
    template = gguf.GGUFReader(str(GGUF)).fields["tokenizer.chat_template"].contents()
    formatter = Jinja2ChatFormatter(template=template, eos_token="<eos>", bos_token="<bos>")
    try:
        texts["gguf"] = formatter(messages=chat).prompt
    except Exception as error:
        texts["gguf"] = error
    array = (llama_chat_message * len(chat))(
        *(llama_chat_message(m["role"].encode(), m["content"].encode()) for m in chat)
    )
    buffer = ctypes.create_string_buffer(4096)
    length = llama_chat_apply_template(template.encode(), array, len(chat), add, buffer, 4096)
    texts["llama.cpp built-in"] = buffer.raw[:length].decode()
    return texts


CASES = [
    (HI, RenderOptions()),
    (CHAT, RenderOptions()),
    (CHAT, RenderOptions(add_generation_prompt=False, system_policy="fold")),
    (SYSTEM, RenderOptions()),
    (SYSTEM, PREFILL),
    (EDGES, RenderOptions(prefill=" Paris ")),
    (EMPTY, RenderOptions()),
]


@pytest.mark.slow
@pytest.mark.parametrize("messages, options", CASES)
def test_each_text_is_its_librarys_own_with_its_ids(compare, tutor_tokenizer, messages, options):
    found = compare(messages, options)
    assert list(found) == [CANONICAL, "hf-jinja", "genai", "gguf", "llama.cpp built-in"]
    assert found[CANONICAL].text == render(messages, options).text
    for name, expected in library_texts(messages, options).items():
        rendering = found[name]
        assert rendering.unavailable is None
        if isinstance(expected, Exception):
            assert rendering.text is None and kinds(rendering.differences) == ["refusal"]
            assert str(expected) in rendering.differences[0].explanation
        else:
            assert rendering.text == expected
            assert list(rendering.ids) == tutor_tokenizer.encode_as_is(expected)


@pytest.mark.slow
def test_a_system_turn(compare):
    found = compare(SYSTEM)
    for name in ("hf-jinja", "gguf"):  # Gemma-2's own template raises
        (refusal,) = found[name].differences
        assert refusal.kind == "refusal" and "System role not supported" in refusal.explanation
    # GenAI folds with a single newline; llama.cpp folds as the playground does, with no <bos>.
    assert kinds(found["genai"].differences) == ["separator"]
    assert found["genai"].text.startswith("<bos><start_of_turn>user\nBe brief.\nWhat is")
    assert kinds(found["llama.cpp built-in"].differences) == ["<bos>"]
    assert found["llama.cpp built-in"].ids[0] != Tokenizer(TUTOR_DIR).bos_id
    edges = [{"role": "system", "content": " Be brief.  "}, {"role": "user", "content": "  Hi"}]
    assert kinds(compare(edges)["genai"].differences) == ["separator", "trim"]


@pytest.mark.slow
def test_a_prefill(compare):
    found = compare(SYSTEM[1:], PREFILL)
    # transformers continues the prefill but trims its space; the others close its turn.
    assert found["hf-jinja"].text.endswith("<start_of_turn>model\nThe answer is")
    assert kinds(found["hf-jinja"].differences) == ["trim"]
    assert kinds(found["genai"].differences) == ["trim", "other"]
    assert "closed with <end_of_turn>" in found["genai"].differences[1].explanation
    # llama-cpp-python always adds the generation prompt: a second model turn follows.
    assert kinds(found["gguf"].differences) == ["trim", "other", "other"]
    assert found["gguf"].text.endswith("The answer is<end_of_turn>\n<start_of_turn>model\n")
    assert "always adds one" in found["gguf"].differences[2].explanation
    assert kinds(found["llama.cpp built-in"].differences) == ["<bos>", "trim", "other"]
    # A prefill of whitespace only: transformers loses the newline after the role too.
    assert kinds(compare(HI, RenderOptions(prefill=" "))["hf-jinja"].differences) == [
        "newline",
        "trim",
    ]


@pytest.mark.slow
def test_whitespace_at_the_edges_and_an_empty_message(compare):
    # Gemma-2's template trims every message, and so does each renderer: only the <bos> differs.
    for messages in (EDGES, EMPTY):
        found = compare(messages)
        for name in ("hf-jinja", "genai", "gguf"):
            assert found[name].differences == (), name
        assert kinds(found["llama.cpp built-in"].differences) == ["<bos>"]
    # The prefill is the one message the canonical keeps as typed: its edges are a trim.
    found = compare(EDGES, RenderOptions(prefill=" Paris "))
    (trim,) = found["hf-jinja"].differences
    assert trim.kind == "trim" and "at its start is '' here, ' ' in the canonical" in (
        trim.explanation
    )


@pytest.mark.slow
def test_what_cannot_run_here_says_why(compare, tmp_path, monkeypatch):
    folder = tmp_path / "bare"
    folder.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(TUTOR_DIR / name, folder / name)
    found = compare(HI, folder=folder)
    assert "openvino_tokenizer.xml" in found["genai"].unavailable
    assert found["gguf"].unavailable.startswith("no GGUF")
    assert found["genai"].text is None and found["gguf"].ids is None
    assert kinds(found["llama.cpp built-in"].differences) == ["<bos>"]  # the name "gemma"
    missing = compare(HI, gguf=tmp_path / "missing.gguf")
    assert "can't be read" in missing["gguf"].unavailable
    from playground import renderers

    renderers._read_gguf_chat.cache_clear()
    monkeypatch.setitem(sys.modules, "gguf", None)
    assert "gguf package is not installed" in compare(HI)["gguf"].unavailable
    monkeypatch.setitem(sys.modules, "llama_cpp", None)
    found = compare(HI, gguf=GGUF)
    for name in ("gguf", "llama.cpp built-in"):
        assert found[name].unavailable, name
    renderers._read_gguf_chat.cache_clear()


@pytest.mark.slow
def test_the_command_prints_every_renderer_as_json(tmp_path):
    path = tmp_path / "conversation.json"
    path.write_text(json.dumps(SYSTEM))
    args = ["render", path, "--all-renderers", "--json", "--prefill", "The answer is "]
    done = subprocess.run(
        [sys.executable, "-m", "playground", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    found = {r["name"]: r for r in json.loads(done.stdout)["renderers"]}
    assert list(found) == [CANONICAL, "hf-jinja", "genai", "gguf", "llama.cpp built-in"]
    assert found[CANONICAL]["token_count"] == len(found[CANONICAL]["ids"])
    assert [d["kind"] for d in found["hf-jinja"]["differences"]] == ["refusal"]
    assert [d["kind"] for d in found["genai"]["differences"]] == ["separator", "trim", "other"]
    assert [d["kind"] for d in found["llama.cpp built-in"]["differences"]] == [
        "<bos>",
        "trim",
        "other",
    ]
    text = subprocess.run(
        [sys.executable, "-m", "playground", *map(str, args[:3])],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert "hf-jinja: transformers" in text.stdout and "  refusal: " in text.stdout
    assert "  text: '<start_of_turn>user\\nBe brief.\\n\\nWhat" in text.stdout
