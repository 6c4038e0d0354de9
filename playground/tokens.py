"""Tokenization of prompts: ids, pieces, the one-`<bos>` rule and streaming detokenization.

Owns: the model's Hugging Face tokenizer (`tokenizer.json`, read with the `tokenizers` library),
the rule that every prompt sent to the model starts with exactly one `<bos>`, the token view that
the template inspector shows, and the incremental decoder that never yields half a character.
Both engines and the inspector use this one tokenizer, so what the inspector shows is what is sent.
Does not own: chat templates (`chat_format`), running the model (`engines`).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer as HFTokenizer

from playground.chat_format import BOS, END_OF_TURN, GEMMA2_CHAT_TEMPLATE


@dataclass(frozen=True)
class Token:
    id: int
    piece: str
    special: bool


class Tokenizer:
    """The model folder's tokenizer plus its chat template and end-of-generation ids."""

    def __init__(self, folder: Path) -> None:
        path = folder / "tokenizer.json"
        if not path.is_file():
            raise FileNotFoundError(f"{folder} has no tokenizer.json; the playground needs one.")
        self._tokenizer = HFTokenizer.from_file(str(path))
        decoder = self._tokenizer.get_added_tokens_decoder()
        self.special_ids = frozenset(i for i, t in decoder.items() if t.special)
        self.bos_id = self._tokenizer.token_to_id(BOS)
        self.end_of_turn_id = self._tokenizer.token_to_id(END_OF_TURN)
        self.eos_ids = _read_eos_ids(folder, self._tokenizer)
        self.chat_template = _read_chat_template(folder)
        self.vocab_size = self._tokenizer.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        """Ids to send for `text`: exactly one `<bos>` first, whether or not the text has one."""
        ids = self.encode_as_is(text)
        return ids if ids[:1] == [self.bos_id] else [self.bos_id, *ids]

    def encode_without_bos(self, text: str) -> list[int]:
        """Ids of `text` with no `<bos>` at all, its own leading ones removed: what an engine that
        adds none sends (the fault lab's "no <bos>" trap and the Raw tab's option). Never the
        default: Gemma-2-9b without it scored 0.266 on lambada (lm-evaluation-harness PR 2049)."""
        ids = self.encode_as_is(text)
        while ids[:1] == [self.bos_id]:
            ids = ids[1:]
        return ids

    def encode_as_is(self, text: str) -> list[int]:
        """Ids of `text` exactly as written: no special token added, none kept out, so a text
        without `<bos>` gets none and one with two keeps both (`renderers` compares texts so)."""
        return self._tokenizer.encode(text, add_special_tokens=False).ids

    def encode_naively(self, text: str) -> list[int]:
        """Ids with the tokenizer's own special tokens added: doubles `<bos>` on a rendered chat
        prompt. Kept to demonstrate the mistake, never used to generate."""
        return self._tokenizer.encode(text, add_special_tokens=True).ids

    def id_of(self, piece: str) -> int:
        """The id of one token that a server sent as text (llama.cpp and OpenAI's logprobs give
        pieces, not ids): its vocabulary entry, spaces written as SentencePiece's '▁'; else the
        first id of the text, the nearest this tokenizer has."""
        found = self._tokenizer.token_to_id(piece.replace(" ", "\u2581"))
        if found is not None:
            return found
        ids = self._tokenizer.encode(piece, add_special_tokens=False).ids
        return ids[0] if ids else self.bos_id

    def count(self, text: str) -> int:
        return len(self.encode(text))

    def tokens(self, text: str) -> list[Token]:
        return self.describe(self.encode(text))

    def describe(self, ids: list[int]) -> list[Token]:
        return [
            Token(i, self._tokenizer.decode([i], skip_special_tokens=False), i in self.special_ids)
            for i in ids
        ]

    def decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=False)

    def decoder(self) -> IncrementalDecoder:
        return IncrementalDecoder(self)


class IncrementalDecoder:
    """Turns a stream of ids into text deltas, holding back bytes of an unfinished character.

    The prefix/read offsets window (as in Hugging Face TGI) keeps decoding cost per token
    constant and lets the tokenizer see enough context to place spaces right.
    """

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tokenizer = tokenizer
        self.ids: list[int] = []
        self._prefix = 0
        self._read = 0

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        prefix_text = self._tokenizer.decode(self.ids[self._prefix : self._read])
        text = self._tokenizer.decode(self.ids[self._prefix :])
        if len(text) > len(prefix_text) and not text.endswith("\ufffd"):
            self._prefix, self._read = self._read, len(self.ids)
            return text[len(prefix_text) :]
        return ""

    def flush(self) -> str:
        """The text still held back, even if it ends in an incomplete character."""
        prefix_text = self._tokenizer.decode(self.ids[self._prefix : self._read])
        text = self._tokenizer.decode(self.ids[self._prefix :])
        self._prefix = self._read = len(self.ids)
        return text[len(prefix_text) :]


@functools.cache
def genai_tokenizer(folder: Path) -> Any:
    """OpenVINO GenAI's own tokenizer of a model folder (openvino_tokenizer.xml and its chat
    template), for what GenAI itself builds from a prompt: the fault lab's engine traps show
    GenAI's tokens, never an imitation of them. One per folder, loaded on first use."""
    from playground.errors import UserError

    if not (folder / "openvino_tokenizer.xml").is_file():
        raise UserError(
            f"{folder.name} has no openvino_tokenizer.xml, so GenAI's own tokenizer can't run "
            "here; convert the tokenizer with openvino-tokenizers (the app does so on load)."
        )
    import openvino_genai

    return openvino_genai.Tokenizer(str(folder))


def genai_ids(encoded: Any) -> list[int]:
    """The ids of one text from GenAI's `Tokenizer.encode` (a batch of one)."""
    return [int(i) for i in encoded.input_ids.data[0]]


def _read_eos_ids(folder: Path, tokenizer: HFTokenizer) -> frozenset[int]:
    """End ids from generation_config.json (Gemma-2-it: <eos> and <end_of_turn>)."""
    ids: set[int] = set()
    config = folder / "generation_config.json"
    if config.is_file():
        eos = json.loads(config.read_text()).get("eos_token_id")
        ids.update(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    for text in ("<eos>", "<end_of_turn>"):
        if (token_id := tokenizer.token_to_id(text)) is not None:
            ids.add(token_id)
    return frozenset(ids)


def _read_chat_template(folder: Path) -> str:
    """The model's own template: chat_template.jinja (transformers 5) or tokenizer_config.json;
    the canonical Gemma-2 template when the folder has neither."""
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text()
    config = folder / "tokenizer_config.json"
    if config.is_file():
        template = json.loads(config.read_text()).get("chat_template")
        if isinstance(template, str):
            return template
    return GEMMA2_CHAT_TEMPLATE
