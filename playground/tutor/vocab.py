"""The tutor's tokenizer: Gemma-2's special tokens and byte fallback, then single characters.

Owns: the character set and the tokenizer built from it. Letters are single tokens with no
merges, so that copying, reversing and uppercasing a word it never saw is a per-character map a
~1M-parameter model can learn; digits are single tokens too, as in Gemma, so arithmetic can
generalise. Does not own: the tokenizer's form (`models.gemma_like_tokenizer`, shared with the
random models), or any text it encodes.
"""

from __future__ import annotations

import string

from playground.models import gemma_like_tokenizer

VOCAB_SIZE = 512
# '▁' stands for a space, as in Gemma; "\n" and "×" are whole tokens; the rest falls back to bytes.
CHARACTERS = ["▁", "\n", "×", *(c for c in string.printable if c.isprintable() and c != " ")]


def build_tokenizer():
    """The tutor's tokenizer (a transformers PreTrainedTokenizerFast)."""
    return gemma_like_tokenizer(CHARACTERS, [], VOCAB_SIZE)
