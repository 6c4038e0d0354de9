"""KV-cache memory: what a model's key-value cache costs, and the budget that bounds it.

Owns: the bytes one KV-cache block takes for a model's shapes and KV precision in OpenVINO's
CPU plugin (checked against GenAI's own metric in tests/test_memory.py), the budget in blocks
and tokens that the `kv_cache_gb` setting gives, and the memory table of a model (weights, KV
per token, the visitors x context that fit in a Space's RAM).
Does not own: the setting (`settings`), the scheduler it configures (`engines.genai`), or the
admission of requests into the budget (`engines.base`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from playground.errors import UserError

# The CPU plugin's paged-attention block: 10 f16 blocks of tiny-random held exactly 320 tokens.
BLOCK_TOKENS = 32
# GenAI's KV precision on CPU when ov_config does not set one, and the KV_CACHE_PRECISION values
# whose sizes tests/test_memory.py checked against GenAI here (bf16 failed to compile on this
# CPU; u4 runs but has a layout of its own).
DEFAULT_KV_PRECISION = "u8"
ELEMENT_BYTES = {"u8": 1, "f16": 2, "f32": 4}
# u8 blocks also hold a scale and a zero point (f32 each): keys per channel, values per token.
QUANT_PARAM_BYTES = 8
# Properties that change the layout this module computes; with them the budget can't be sized.
LAYOUT_PROPERTIES = ("KEY_CACHE_PRECISION", "VALUE_CACHE_PRECISION", "KEY_CACHE_GROUP_SIZE",
                     "VALUE_CACHE_GROUP_SIZE")  # fmt: skip
GB = 10**9
# Beside weights and KV: Python, Gradio, the tokenizers and OpenVINO's runtime. The app on
# tiny-tutor (0.6 MB of weights) measured 295 MB RSS idle and 314 MB after 8 chats; 1 GiB leaves
# room for the 9B's tokenizer and working buffers.
RUNTIME_BYTES = 1 * 2**30

# google/gemma-2-9b-it's config.json shapes (the int4 IR keeps them), for the memory table.
GEMMA2_9B_CONFIG = {
    "hidden_size": 3584, "intermediate_size": 14336, "num_hidden_layers": 42,
    "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 256, "vocab_size": 256000,
}  # fmt: skip


class BudgetError(UserError, ValueError):
    """A KV budget that can't be sized or can't hold one request; the message says why."""


@dataclass(frozen=True)
class KvShape:
    """The shapes that size a model's KV cache."""

    layers: int
    kv_heads: int
    head_dim: int

    @classmethod
    def of(cls, config: Mapping[str, Any]) -> KvShape:
        """From a Hugging Face config.json's values."""
        head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
        kv_heads = config.get("num_key_value_heads") or config["num_attention_heads"]
        return cls(config["num_hidden_layers"], kv_heads, head_dim)

    @classmethod
    def read(cls, folder: Path) -> KvShape:
        return cls.of(json.loads((Path(folder) / "config.json").read_text()))


def kv_precision(ov_config: Mapping[str, str]) -> str:
    """The KV precision an engine with `ov_config` runs with, if this module can size it."""
    if given := [key for key in LAYOUT_PROPERTIES if key in ov_config]:
        raise BudgetError(
            f"kv_cache_gb can't size a cache with {given[0]} set; set KV_CACHE_PRECISION alone "
            "(u8, f16 or f32), or kv_cache_gb: 0 for no budget."
        )
    precision = str(ov_config.get("KV_CACHE_PRECISION", DEFAULT_KV_PRECISION)).lower()
    if precision not in ELEMENT_BYTES:
        raise BudgetError(
            f"kv_cache_gb can't size a {precision} KV cache: KV_CACHE_PRECISION must be one of "
            f"{', '.join(ELEMENT_BYTES)} with a budget, or kv_cache_gb: 0 for none."
        )
    return precision


def block_bytes(shape: KvShape, precision: str) -> int:
    """Bytes of one block (BLOCK_TOKENS tokens) of keys and values in every layer."""
    per_head = 2 * BLOCK_TOKENS * shape.head_dim * ELEMENT_BYTES[precision]
    if precision == "u8":
        per_head += QUANT_PARAM_BYTES * (shape.head_dim + BLOCK_TOKENS)
    return per_head * shape.layers * shape.kv_heads


@dataclass(frozen=True)
class KvBudget:
    """A KV cache of `blocks` blocks; requests may reserve `tokens` of it together (each
    generation's last block is partly empty, so one block per slot is kept aside)."""

    blocks: int
    tokens: int
    bytes: int
    precision: str

    def describe(self) -> str:
        return f"{self.bytes / 2**20:,.0f} MiB of {self.precision} KV, {self.tokens:,} tokens"


def kv_budget(gb: float, shape: KvShape, precision: str, slots: int, context: int) -> KvBudget:
    """The budget of `gb` gigabytes (10^9 bytes) for `slots` generations at once; it must hold
    one request of the whole `context`, or no request could be sure to run."""
    size = block_bytes(shape, precision)
    blocks = int(gb * GB) // size
    tokens = (blocks - slots) * BLOCK_TOKENS
    if tokens < context:
        need = (-(-context // BLOCK_TOKENS) + slots) * size
        raise BudgetError(
            f"kv_cache_gb {gb:g} holds {max(tokens, 0):,} tokens of this model's {precision} KV "
            f"cache, less than one request of the context size ({context:,}): it needs at "
            f"least {need / GB:.3f}."
        )
    return KvBudget(blocks, tokens, blocks * size, precision)


def int4_weight_bytes(config: Mapping[str, Any], group_size: int = 128) -> int:
    """An int4 IR's weights as optimum-intel's default export makes them: the layers' matrices
    in 4 bits with an f16 scale and a 4-bit zero point per group, the embedding (tied to the
    output layer, one tensor) in 8 bits with an f16 scale and an 8-bit zero point per row."""
    hidden, mlp = config["hidden_size"], config["intermediate_size"]
    shape = KvShape.of(config)
    attention = hidden * config["num_attention_heads"] * shape.head_dim * 2  # q and o
    attention += hidden * shape.kv_heads * shape.head_dim * 2  # k and v
    layers = (attention + 3 * hidden * mlp) * shape.layers
    embedding = config["vocab_size"] * hidden
    int4 = layers * (4 + (16 + 4) / group_size) / 8
    int8 = embedding + config["vocab_size"] * 3
    return int(int4 + int8)


def memory_table(config: Mapping[str, Any], weight_bytes: int, context: int) -> list[str]:
    """Markdown rows: per KV precision, KV bytes a token and how many visitors at the full
    `context` fit beside `weight_bytes` of weights and the runtime in 16 and 32 GiB."""
    shape = KvShape.of(config)
    rows = [
        "| KV precision | KV per token | one visitor at "
        f"{context:,} tokens | visitors in 16 GiB | visitors in 32 GiB |",
        "|---|---|---|---|---|",
    ]
    for precision in ("u8", "f16"):
        per_token = block_bytes(shape, precision) / BLOCK_TOKENS
        visitor = per_token * context
        fits = [int(max(0, ram * 2**30 - weight_bytes - RUNTIME_BYTES) // visitor)
                for ram in (16, 32)]  # fmt: skip
        rows.append(
            f"| {precision} | {per_token / 1024:,.0f} KiB | {visitor / 2**30:.2f} GiB | "
            f"{fits[0]} | {fits[1]} |"
        )
    return rows
