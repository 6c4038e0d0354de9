"""Cross-engine divergence (issue 32, item 3): where two greedy runs of one prompt part, token by
token, both runs' logprobs, and one similarity figure, from the pure module, through `compare`,
the /compare endpoint and `python -m playground compare`, against a real llama.cpp server on
tiny-tutor's GGUF with the real genai engine on tiny-tutor beside it.

Fast tests use hand-made results; the slow ones start llama-cpp-python's server.
"""

import json
import subprocess
import sys
import time
from html.parser import HTMLParser
from types import SimpleNamespace

import pytest

from playground import display
from playground.compare import (
    NO_PEER,
    PEER,
    SERVED,
    Variant,
    compare,
    conversation_inputs,
    parse_variants,
)
from playground.divergence import (
    MAX_MATCHED_TOKENS,
    NEEDS_GREEDY,
    divergence,
    largest_gap,
    parting,
    similarity,
)
from playground.engines import GenerationResult, TokenScore, open_peer
from playground.models import TUTOR_DIR
from playground.sampling import ParamError
from playground.session import Playground
from playground.settings import RemoteSettings
from tests.conftest import ROOT, start_llama_server

HOSTILE = "<img src=x onerror=alert(1)><b>x</b> ![a](http://127.0.0.1:9/x.png)"
# A raw start tiny-tutor continues differently on the two engines (measured: genai in f32
# against the GGUF on llama.cpp's server, greedy, 60 tokens: they part at token 34).
ONCE = "<bos>Once upon a time"
QUESTION = [{"role": "user", "content": "What is 7 plus 5?"}]


def result(ids, logprobs=None):
    scores = tuple(None if lp is None else TokenScore(lp) for lp in (logprobs or []))
    return GenerationResult("", list(ids), "eos", 3, len(ids), 0.1, 10.0, scores)


# ---- the pure module ---------------------------------------------------------------------------


def test_the_first_parting_token_is_found_or_none():
    assert parting([1, 2, 3], [1, 2, 3]) is None
    assert parting([1, 2, 3], [1, 5, 3]) == 1
    assert parting([1, 2, 3], [1, 2]) == 2  # the shorter one ends: they part there
    assert parting([], []) is None
    assert parting([], [7]) == 0


def test_similarity_is_difflibs_ratio_over_token_ids():
    assert similarity([1, 2, 3, 4], [1, 2, 3, 4]) == (1.0, True)
    assert similarity([], []) == (1.0, True)
    assert similarity([1, 2], [3, 4]) == (0.0, True)
    # 2 × 3 matching ÷ 8 tokens: the same ratio difflib gives.
    assert similarity([1, 2, 3, 4], [1, 9, 3, 4]) == (0.75, True)
    import difflib

    a, b = [5, 1, 2, 6, 3, 3, 7], [1, 2, 8, 3, 3, 7, 7, 5]
    ratio = difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()
    assert similarity(a, b) == (pytest.approx(ratio), True)


def test_a_long_differing_middle_is_bounded_and_its_figure_a_floor():
    n = MAX_MATCHED_TOKENS + 1
    a, b = [0] * 10 + [1] * n + [0], [0] * 10 + [2] * n + [0]
    started = time.monotonic()
    ratio, exact = similarity(a, b)
    assert time.monotonic() - started < 1.0
    assert not exact and ratio == pytest.approx(2 * 11 / (len(a) + len(b)))


def test_divergence_of_hand_made_runs():
    ref = result([10, 11, 12, 13], [-0.1, -0.2, -1.5, -0.3])
    other = result([10, 11, 14, 13, 15], [-0.1, -0.25, -0.9, -0.4, None])
    found = divergence(ref, other)
    assert found.parts_at == 2
    assert found.reference_logprobs == (-0.1, -0.2, -1.5, -0.3)
    assert found.logprobs == (-0.1, -0.25, -0.9, -0.4, None)
    assert found.largest_gap == (1, pytest.approx(0.05))  # before the parting only
    assert found.similarity == pytest.approx(2 * 3 / 9) and found.exact
    same = divergence(ref, ref)
    assert same.parts_at is None and same.similarity == 1.0
    assert largest_gap([None, -1.0], [-0.5, None], None) is None  # nothing scored by both
    # An engine that gave fewer scores than tokens: the rest are None, never shifted.
    assert divergence(result([1, 2]), result([1, 2], [-0.5])).logprobs == (-0.5, None)


def test_the_json_names_the_two_tokens_where_they_part():
    tokenizer = SimpleNamespace(describe=lambda ids: [SimpleNamespace(piece=f"<{ids[0]}>")])
    data = divergence(result([1, 2, 3]), result([1, 2])).as_json(tokenizer)
    assert data["parts_at"] == 2 and data["reference_piece"] == "<3>" and data["piece"] is None
    json.dumps(data)  # JSON-ready


def test_the_view_keeps_model_text_literal_and_draws_both_lines():
    ref = result([1, 2, 3], [-0.1, -0.2, -2.0])
    other = result([1, 2, 4], [-0.1, -0.3, -0.5])
    found = divergence(ref, other)
    shown = display.divergence_view(found, (HOSTILE, "<script>x</script>"), (HOSTILE, "remote"))
    tags = _tags(shown)
    assert not {"img", "b", "script"} & set(tags)
    assert tags.count("polyline") == 2 and "polygon" in tags and "line" in tags  # gap, parting
    assert "Parts from column 1 at token 2" in shown
    assert "&lt;img src=x onerror=alert(1)&gt;" in shown and "&#33;[a]" in shown
    one_line = display.divergence_line({"greedy": True, **found.as_json()})
    assert one_line.startswith("Parts from column 1 at token 2") and "Similarity 0.667" in one_line
    assert display.divergence_line({"greedy": False, "note": NEEDS_GREEDY}) == NEEDS_GREEDY
    # No logprobs at all: said in words, no empty plot.
    assert "nothing to plot" in display.divergence_view(
        divergence(result([1]), result([2])), (None, None), ("a", "b")
    )


def _tags(markup: str) -> list[str]:
    found: list[str] = []
    parser = HTMLParser()
    parser.handle_starttag = lambda tag, attrs: found.append(tag)
    parser.feed(markup)
    return found


def test_a_column_names_its_engine_in_json_and_on_the_command_line():
    variants = parse_variants(["correct", "second-bos@peer", {"prompt": "correct", "engine": PEER}])
    assert [v.engine for v in variants] == [SERVED, PEER, PEER]
    assert variants[1] == Variant("second-bos", engine=PEER)
    for bad in (["correct", "correct@gpu"], ["correct", {"prompt": "correct", "engine": "x"}]):
        with pytest.raises(ParamError, match="engine must be one of served, peer"):
            parse_variants(bad)


def test_without_a_peer_a_peer_column_says_how_to_configure_one():
    fake = SimpleNamespace(settings=None)  # never reached: the column is refused first
    from playground.compare import playground_of

    with pytest.raises(ParamError, match="none is configured"):
        playground_of(PEER, fake, None)
    assert playground_of(SERVED, fake, None) is fake
    assert "--base-url" in NO_PEER


def test_no_peer_without_a_server_or_on_the_remote_engine(settings):
    served = SimpleNamespace(kind="genai", folder=TUTOR_DIR, context_size=8192, info=None)
    assert open_peer(settings, served) == (None, None)
    configured = settings.with_(remote=RemoteSettings(base_url="http://127.0.0.1:9/v1"))
    remote = SimpleNamespace(**{**vars(served), "kind": "remote"})
    assert open_peer(configured, remote) == (None, None)


def test_a_peer_that_is_down_fails_fast_with_one_line_and_no_address(settings):
    served = SimpleNamespace(kind="genai", folder=TUTOR_DIR, context_size=8192, info=None)
    down = settings.with_(remote=RemoteSettings(base_url="http://127.0.0.1:9/v1"))
    started = time.monotonic()
    peer, reason = open_peer(down, served)
    assert time.monotonic() - started < 10
    assert peer is None and "\n" not in reason and "could not be used at start" in reason
    assert "127.0.0.1:9" not in reason  # the address is the operator's (it is in the log)


# ---- against llama.cpp's server on tiny-tutor's GGUF ------------------------------------------


@pytest.fixture(scope="module")
def base_url():
    process, url = start_llama_server()
    yield url
    process.terminate()
    process.wait(30)


@pytest.fixture(scope="module")
def tutor_settings(settings, base_url):
    return settings.with_(model="tiny-tutor", remote=RemoteSettings(base_url=base_url))


@pytest.fixture(scope="module")
def peer(tutor_settings, tutor_engine):
    engine, reason = open_peer(tutor_settings, tutor_engine)
    assert reason is None and engine.kind == "remote"
    return engine


@pytest.mark.slow
def test_the_divergence_shown_is_what_the_two_engines_return(tutor_engine, peer, tutor_settings):
    playground, remote = Playground(tutor_engine, tutor_settings), Playground(peer, tutor_settings)
    greedy = playground.params({"temperature": 0, "repetition_penalty": 1.0, "max_new_tokens": 60})
    messages, options = conversation_inputs(playground, json.dumps(QUESTION), "")
    variants = [Variant("edited", ONCE), Variant("edited", ONCE, engine=PEER),
                Variant(), Variant(engine=PEER)]  # fmt: skip
    first, second = compare(playground, messages, options, variants[:2], greedy, remote)
    _, fourth = compare(playground, messages, options, variants[2:], greedy, remote)
    assert "divergence" not in first and second["engine"] == PEER
    # Each engine called directly, as the columns were.
    ours = tutor_engine.generate(ONCE, greedy).run()
    theirs = peer.generate(ONCE, greedy).run()
    assert second["output"] == theirs.text and first["output"] == ours.text
    shown = second["divergence"]
    pairs = zip(ours.token_ids, theirs.token_ids, strict=False)
    expected = next(i for i, (a, b) in enumerate(pairs) if a != b)
    # They part (34 here, the engines' numbers differing a little); where is the CPU's to say.
    assert shown["parts_at"] == expected
    assert close(shown["reference_logprobs"], ours.scores)
    assert close(shown["logprobs"], theirs.scores)  # None where the server gave none (its end)
    assert 0.5 < shown["similarity"] < 1
    pieces = tutor_engine.tokenizer.describe([ours.token_ids[expected], theirs.token_ids[expected]])
    assert (shown["reference_piece"], shown["piece"]) == (pieces[0].piece, pieces[1].piece)
    # The chat's own prompt: the same tokens on both, their logprobs a hair apart.
    chat = fourth["divergence"]
    assert chat["parts_at"] is None and chat["similarity"] == 1.0
    assert chat["largest_gap"][1] < 1e-3
    # Sampled runs: no claim, a note instead.
    sampled = playground.params({"temperature": 1.0, "seed": 3, "max_new_tokens": 8})
    _, fifth = compare(playground, messages, options, variants[2:], sampled, remote)
    assert fifth["divergence"] == {"greedy": False, "note": NEEDS_GREEDY}


def close(shown, scores, tolerance=1e-6):
    """Whether logprobs shown match an engine's scores, position by position."""
    wanted = [None if score is None else score.logprob for score in scores]
    return len(shown) == len(wanted) and all(
        (a is None and b is None) or (None not in (a, b) and abs(a - b) <= tolerance)
        for a, b in zip(shown, wanted, strict=True)
    )


@pytest.mark.slow
def test_a_trap_that_needs_its_own_ids_is_refused_on_the_peer(tutor_engine, peer, tutor_settings):
    playground, remote = Playground(tutor_engine, tutor_settings), Playground(peer, tutor_settings)
    messages, options = conversation_inputs(playground, json.dumps(QUESTION), "")
    params = playground.params({"temperature": 0, "max_new_tokens": 4})
    results = compare(playground, messages, options, parse_variants(["correct", "no-bos@peer"]),
                      params, remote)  # fmt: skip
    assert "server tokenizes itself" in results[1]["error"]


@pytest.mark.slow
def test_the_command_line_runs_a_column_at_peer(base_url, tmp_path):
    conversation = tmp_path / "q.json"
    conversation.write_text(json.dumps(QUESTION))
    command = [sys.executable, "-m", "playground", "compare", str(conversation), "correct",
               "correct@peer", "--model", "tiny-tutor", "--base-url", base_url,
               "--temperature", "0", "--max-new-tokens", "20"]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "== column 2 (peer)" in done.stdout and "divergence: " in done.stdout
    as_json = subprocess.run([*command, "--json"], cwd=ROOT, capture_output=True, text=True,
                             timeout=300)  # fmt: skip
    columns = json.loads(as_json.stdout)
    assert columns[1]["divergence"]["greedy"] and "divergence" not in columns[0]
    # A peer column with no server named: refused before loading anything.
    unnamed = [sys.executable, "-m", "playground", "compare", str(conversation), "correct",
               "correct@peer", "--model", "tiny-tutor"]  # fmt: skip
    refused = subprocess.run(unnamed, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "--base-url" in refused.stderr
