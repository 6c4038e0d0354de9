"""Divergence: where two greedy runs part, token by token, and how alike their outputs are.

Owns: `Divergence` (the first token position where two outputs' ids part, each position's
log-probability on both runs, the largest gap between them before the parting, and one
similarity figure for the whole outputs), `divergence`, which computes it from two
`GenerationResult`s, and its JSON form. The Compare tab, the `/compare` endpoint and `python -m
playground compare` show it for a column run on another engine than column 1's.
Does not own: running either engine (`compare`, `session`), whether a run was greedy (the caller
checks: only greedy runs part for a reason rather than by chance), markup (`display`), or the UI.
Imports no gradio.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from playground.engines import GenerationResult
from playground.tokens import Tokenizer

# The longest differing middle (after the tokens both outputs start and end with) that difflib
# matches token by token: its matcher is cubic on runs of alike tokens (compare.MAX_DIFF_TOKENS
# measured 500 at 0.10 s). Past it the middle counts as unmatched, and the figure is a floor.
MAX_MATCHED_TOKENS = 500
SIMILARITY_NOTE = (
    "difflib's ratio over the token ids, 2 × tokens in matching runs ÷ all tokens of both "
    "outputs (1: the same output)"
)
NEEDS_GREEDY = (
    "Divergence needs greedy runs (temperature 0) in both columns: sampled tokens part by "
    "chance, not because the engines differ."
)


@dataclass(frozen=True)
class Divergence:
    """Two runs of one prompt, token by token: `parts_at` is the first position where their ids
    differ (or where the shorter one ends), None when the outputs are the same; the logprobs
    are each position's on its own run (None where the engine gave none)."""

    parts_at: int | None
    reference_ids: tuple[int, ...]
    ids: tuple[int, ...]
    reference_logprobs: tuple[float | None, ...]
    logprobs: tuple[float | None, ...]
    similarity: float
    exact: bool  # False: the middle was too long to match, and `similarity` is a floor
    largest_gap: tuple[int, float] | None  # (position, |Δ logprob|) before the parting

    def as_json(self, tokenizer: Tokenizer | None = None) -> dict[str, Any]:
        """JSON-ready data; with `tokenizer`, the two tokens where the outputs part, as text."""
        data: dict[str, Any] = {
            "parts_at": self.parts_at,
            "similarity": round(self.similarity, 4),
            "similarity_exact": self.exact,
            "largest_gap": list(self.largest_gap) if self.largest_gap else None,
            "reference_token_ids": list(self.reference_ids),
            "token_ids": list(self.ids),
            "reference_logprobs": list(self.reference_logprobs),
            "logprobs": list(self.logprobs),
        }
        if tokenizer is not None and self.parts_at is not None:
            data["reference_piece"], data["piece"] = self.pieces(tokenizer)
        return data

    def pieces(self, tokenizer: Tokenizer) -> tuple[str | None, str | None]:
        """The token each run has at `parts_at` as text; None where that run has ended."""
        at = self.parts_at
        return tuple(  # type: ignore[return-value]
            tokenizer.describe([ids[at]])[0].piece if at is not None and at < len(ids) else None
            for ids in (self.reference_ids, self.ids)
        )


def logprobs_of(result: GenerationResult) -> tuple[float | None, ...]:
    """Each generated token's logprob on the run that made it (None where it gave none)."""
    scores = list(result.scores) + [None] * (len(result.token_ids) - len(result.scores))
    return tuple(s.logprob if s is not None else None for s in scores[: len(result.token_ids)])


def parting(a: Sequence[int], b: Sequence[int]) -> int | None:
    """The first position where `a` and `b` differ, or where the shorter ends; None if equal."""
    for position, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return position
    return None if len(a) == len(b) else min(len(a), len(b))


def similarity(a: Sequence[int], b: Sequence[int]) -> tuple[float, bool]:
    """difflib's ratio of `a` and `b` (2M / T), and whether it is exact: the common start and
    end count as matched without difflib, and a middle longer than MAX_MATCHED_TOKENS counts
    as unmatched, so the cost is bounded whatever the outputs."""
    if not a and not b:
        return 1.0, True
    start = 0
    while start < min(len(a), len(b)) and a[start] == b[start]:
        start += 1
    end = 0
    while end < min(len(a), len(b)) - start and a[-1 - end] == b[-1 - end]:
        end += 1
    middle_a, middle_b = a[start : len(a) - end], b[start : len(b) - end]
    exact = max(len(middle_a), len(middle_b)) <= MAX_MATCHED_TOKENS
    matched = start + end
    if exact and middle_a and middle_b:
        matcher = difflib.SequenceMatcher(None, middle_a, middle_b, autojunk=False)
        matched += sum(block.size for block in matcher.get_matching_blocks())
    return 2 * matched / (len(a) + len(b)), exact


def gaps(
    a: Sequence[float | None], b: Sequence[float | None], until: int | None
) -> list[tuple[int, float]]:
    """(position, |difference of logprobs|) at each position before `until` that both runs
    scored: there they scored the same token (past the parting, other tokens)."""
    end = min(len(a), len(b)) if until is None else until
    return [(i, abs(x - y)) for i, (x, y) in enumerate(zip(a[:end], b[:end], strict=False))
            if x is not None and y is not None]  # fmt: skip


def largest_gap(
    a: Sequence[float | None], b: Sequence[float | None], until: int | None
) -> tuple[int, float] | None:
    """The position before `until` with the largest difference of logprobs (`gaps`), and that
    difference."""
    found = gaps(a, b, until)
    if not found:
        return None
    position, gap = max(found, key=lambda pair: (pair[1], pair[0]))
    return position, gap


def divergence(reference: GenerationResult, other: GenerationResult) -> Divergence:
    """`other`'s run against `reference`'s (column 1's): where they part, each position's
    logprob on both, and how alike the whole outputs are."""
    a, b = tuple(reference.token_ids), tuple(other.token_ids)
    at = parting(a, b)
    ratio, exact = similarity(a, b)
    lp_a, lp_b = logprobs_of(reference), logprobs_of(other)
    return Divergence(at, a, b, lp_a, lp_b, ratio, exact, largest_gap(lp_a, lp_b, at))
