"""The probability view and its data, without a server: `session.token_probabilities` against
the tokenizer, and `display.probability_view` with hostile token text (fast)."""

import math

from playground import display
from playground.engines import GenerationResult, TokenScore
from playground.notebook import PromptCell
from playground.notebook_doc import CellOutput, output_html
from playground.session import token_probabilities
from playground.tokens import Tokenizer

HOSTILE = ["<script>", "alert(1)", "</script>", '" onmouseover="x', "<img src=x>", "<end_of_turn>"]


def tokens_of(pieces, logprobs, top=None):
    return [
        {"id": i, "token": piece, "logprob": lp, **({"top_logprobs": top} if top else {})}
        for i, (piece, lp) in enumerate(zip(pieces, logprobs, strict=True))
    ]


def test_token_probabilities_pair_each_id_with_its_piece_and_score(tiny_folder):
    tokenizer = Tokenizer(tiny_folder)
    ids = [*tokenizer.encode("Hello world")[1:], tokenizer.end_of_turn_id]
    scores = (TokenScore(-0.5), None, *[TokenScore(-1.0, ((ids[0], -0.1),))] * (len(ids) - 2))
    result = GenerationResult("", ids, "end_of_turn", 3, len(ids), 0.1, 10.0, scores)
    entries = token_probabilities(result, tokenizer)
    assert [e["id"] for e in entries] == ids
    assert "".join(e["token"] for e in entries) == tokenizer.decode(ids)
    assert entries[0]["logprob"] == -0.5 and "top_logprobs" not in entries[0]
    assert entries[1]["logprob"] is None
    assert entries[-1]["top_logprobs"] == [
        {"id": ids[0], "token": entries[0]["token"], "logprob": -0.1}
    ]


def test_hostile_token_text_is_escaped_in_text_and_tooltips():
    top = [{"id": 9, "token": "<b onclick=x>", "logprob": -0.2}]
    html = display.probability_view(tokens_of(HOSTILE, [-0.1] * 6, top), "<i>a note</i>")
    assert "<script>" not in html and "<img" not in html and "<b onclick" not in html
    assert "&lt;i&gt;a note&lt;/i&gt;" in html
    assert "&lt;script&gt;" in html and "&quot; onmouseover=&quot;x" in html
    assert 'data-tip="p = 90.5% · likeliest: “&lt;b·onclick=x&gt;” 81.9%"' in html


def test_the_tint_grows_as_the_probability_falls():
    html = display.probability_view(tokens_of(["a", "b"], [0.0, math.log(0.25)]))
    assert "rgba(239, 68, 68, 0.00)" in html and "rgba(239, 68, 68, 0.45)" in html


def test_the_end_of_turn_line_says_what_the_engine_knows():
    ended = tokens_of(["Hi", "<end_of_turn>"], [-0.1, math.log(0.98)])
    assert display.end_of_turn_line(ended) == (
        "P(<end_of_turn>) at the last step: 98.0%: the model chose to end its turn."
    )
    cut = tokens_of(
        ["Hi"], [-0.1], top=[{"id": 1, "token": "<end_of_turn>", "logprob": math.log(0.03)}]
    )
    assert "3.0%: the model had not finished its turn" in display.end_of_turn_line(cut)
    assert "not among the 5 likeliest" in display.end_of_turn_line(
        tokens_of(["Hi"], [-0.1], top=[{"id": 2, "token": "x", "logprob": -0.1}])
    )
    assert "not known" in display.end_of_turn_line(tokens_of(["Hi"], [-0.1]))
    assert display.probability_view([]) == ""


def test_a_notebook_output_folds_its_probabilities_under_it():
    view = display.probability_view(tokens_of(["<i>x</i>"], [-0.1]))
    html = output_html(PromptCell("raw", "Hi"), CellOutput("<i>x</i>", None, probabilities=view))
    assert '<details class="nb-probs"><summary>Probabilities</summary>' in html
    assert "<i>" not in html
    # The view itself comes when the visitor opens it (issue 34: it made the page 25 times
    # the text).
    assert view not in html
    output = CellOutput("<i>x</i>", None, probabilities=view)
    opened = output_html(PromptCell("raw", "Hi"), output, probabilities=True)
    assert '<details class="nb-probs" open>' in opened and view in opened
