"""Training tiny-tutor with torch on the CPU, deterministically for a seed.

Owns: the model's shape, the encoding of a conversation into ids and loss labels, and the
training loop (AdamW, warm-up then cosine decay, bf16 autocast, 2 threads). The loss covers what
the model must write: each `<start_of_turn>model\\n` that follows a user turn (so that, without
the generation prompt, it opens its own turn), each reply and its `<end_of_turn>`; never the
user's text. Does not own: the corpus (`corpus`), the tokenizer (`vocab`), the export.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from playground.chat_format import BOS, END_OF_TURN, START_OF_TURN
from playground.models import PAD_ID, new_gemma2
from playground.tutor import RECIPE
from playground.tutor.corpus import CORPUS_VERSION, SKILLS, Example, training_stream
from playground.tutor.vocab import VOCAB_SIZE, build_tokenizer

IGNORE = -100


@dataclass(frozen=True)
class Shape:
    hidden_size: int = 128
    intermediate_size: int = 512
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    head_dim: int = 32


@dataclass(frozen=True)
class Schedule:
    steps: int = 2400
    batch: int = 32
    bucket: int = 8  # batches drawn at once and grouped by length, to pad less
    lr: float = 3e-3
    warmup: int = 200
    weight_decay: float = 0.1
    max_tokens: int = 512  # longer examples are cut (the corpus has none near this)
    seed: int = 0
    corpus_version: int = CORPUS_VERSION
    skills: tuple[tuple[str, int], ...] = tuple(SKILLS.items())


# The curriculum: every skill first, then more of the skills a longer first stage still got
# wrong (copying from far back, held-out phrasings, counted brief sums), at a lower rate; then,
# at a lower rate still, version 3's paraphrases, English-shaped names and words, and recall of
# first messages of any form.
STAGES = (
    Schedule(corpus_version=1),
    Schedule(steps=800, lr=1e-3, warmup=50, seed=1, corpus_version=2, skills=(
        ("greeting", 10), ("arithmetic", 12), ("repeat", 5), ("reverse", 8), ("uppercase", 4),
        ("format-faq", 10), ("refusal", 6), ("system-upper", 4), ("system-brief", 8),
        ("system-pirate", 4), ("system-ok", 3), ("multi-arithmetic", 8), ("multi-first", 14),
        ("multi-name", 12),
    )),
    Schedule(steps=1000, lr=6e-4, warmup=50, seed=2, corpus_version=3, skills=(
        ("greeting", 10), ("arithmetic", 10), ("repeat", 5), ("reverse", 7), ("uppercase", 5),
        ("format-faq", 10), ("refusal", 6), ("system-upper", 4), ("system-brief", 6),
        ("system-pirate", 5), ("system-ok", 5), ("multi-arithmetic", 8), ("multi-first", 16),
        ("multi-name", 14),
    )),
    Schedule(steps=1200, lr=5e-4, warmup=50, seed=3, corpus_version=4, skills=(
        ("greeting", 8), ("arithmetic", 10), ("repeat", 5), ("reverse", 6), ("uppercase", 5),
        ("format-faq", 8), ("refusal", 6), ("system-upper", 6), ("system-brief", 6),
        ("system-pirate", 6), ("system-ok", 6), ("multi-arithmetic", 8), ("multi-first", 18),
        ("multi-name", 14),
    )),
    Schedule(steps=1000, lr=4e-4, warmup=50, seed=4, corpus_version=5, skills=(
        ("greeting", 6), ("arithmetic", 10), ("repeat", 4), ("reverse", 5), ("uppercase", 4),
        ("format-faq", 8), ("refusal", 10), ("system-upper", 6), ("system-brief", 5),
        ("system-pirate", 5), ("system-ok", 6), ("multi-arithmetic", 8), ("multi-first", 12),
        ("multi-name", 18),
    )),
    Schedule(steps=800, lr=3e-4, warmup=50, seed=5, corpus_version=6, skills=(
        ("greeting", 6), ("arithmetic", 12), ("repeat", 4), ("reverse", 5), ("uppercase", 4),
        ("format-faq", 8), ("refusal", 8), ("system-upper", 6), ("system-brief", 5),
        ("system-pirate", 5), ("system-ok", 6), ("multi-arithmetic", 10), ("multi-first", 10),
        ("multi-name", 20),
    )),
)  # fmt: skip


def segments(example: Example) -> list[tuple[str, bool]]:
    """The rendered conversation as (text, trained?) pieces; joined, they are exactly what
    `chat_format.render(..., add_generation_prompt=False)` gives for the folded messages."""
    messages = [dict(m) for m in example.messages]
    if messages[0]["role"] == "system":
        system = messages.pop(0)
        messages[0]["content"] = system["content"] + example.separator + messages[0]["content"]
    messages.append({"role": "assistant", "content": example.reply})
    pieces: list[tuple[str, bool]] = [(BOS, False)]
    for message in messages:
        content = message["content"].strip()  # the template trims every message
        if message["role"] == "user":
            pieces.append((f"{START_OF_TURN}user\n{content}{END_OF_TURN}\n", False))
        else:
            pieces += [(f"{START_OF_TURN}model\n{content}{END_OF_TURN}", True), ("\n", False)]
    return pieces


def encode(example: Example, tokenizer) -> tuple[list[int], list[int]]:
    """Ids and labels (IGNORE where no loss is taken). Characters are tokens and special tokens
    are whole, so encoding the pieces one by one gives the ids of the whole text."""
    ids: list[int] = []
    labels: list[int] = []
    for text, trained in segments(example):
        piece = tokenizer(text, add_special_tokens=False).input_ids
        ids += piece
        labels += piece if trained else [IGNORE] * len(piece)
    return ids, labels


def make_model(shape: Shape):
    # Eager attention: Gemma-2's attention softcapping needs it.
    return new_gemma2(
        vocab_size=VOCAB_SIZE, **asdict(shape), sliding_window=512, attn_implementation="eager"
    )


def _batch(encoded: list[tuple[list[int], list[int]]], max_tokens: int):
    import torch

    length = min(max_tokens, max(len(ids) for ids, _ in encoded))
    # Right padding needs no attention mask: causal attention never looks at later positions.
    ids = [(i + [PAD_ID] * length)[:length] for i, _ in encoded]
    labels = [(lab + [IGNORE] * length)[:length] for _, lab in encoded]
    return torch.tensor(ids), torch.tensor(labels)


def _length_bucketed(next_example, tokenizer, schedule: Schedule):
    """Endless (ids, labels) batches: `bucket` batches' worth of examples sorted by length."""
    import random

    rng = random.Random(f"tutor-buckets-{schedule.seed}")
    while True:
        pool = [encode(next_example(), tokenizer) for _ in range(schedule.batch * schedule.bucket)]
        pool.sort(key=lambda pair: len(pair[0]))
        groups = [pool[i : i + schedule.batch] for i in range(0, len(pool), schedule.batch)]
        rng.shuffle(groups)
        for group in groups:
            yield _batch(group, schedule.max_tokens)


def _lr_at(step: int, schedule: Schedule) -> float:
    if step < schedule.warmup:
        return schedule.lr * (step + 1) / schedule.warmup
    progress = (step - schedule.warmup) / max(1, schedule.steps - schedule.warmup)
    return schedule.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def train(out_dir: Path, shape: Shape = Shape(), stages: tuple[Schedule, ...] = STAGES,
          init: Path | None = None, log_every: int = 100) -> list[float]:  # fmt: skip
    """Train through `stages` (from a fresh model, or from the checkpoint `init` that earlier
    stages wrote), save the checkpoint and tokenizer in `out_dir`, return the losses."""
    # OpenMP threads that spin while they wait made training 20x slower on a busy machine.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch
    from transformers import Gemma2ForCausalLM

    torch.set_num_threads(2)
    tokenizer = build_tokenizer()
    done: list[dict] = []
    minutes: list[float | None] = []
    if init is None:
        torch.manual_seed(stages[0].seed)
        model = make_model(shape)
    else:
        model = Gemma2ForCausalLM.from_pretrained(init, attn_implementation="eager")
        earlier = json.loads((init / "tutor.json").read_text())
        done = earlier.get("stages") or [earlier["schedule"]]
        # A record from before stage_minutes holds only its last run's time.
        minutes = earlier.get("stage_minutes") or (
            [None] * (len(done) - 1) + [earlier.get("train_minutes")]
        )
    start = time.perf_counter()
    losses: list[float] = []
    for schedule in stages:
        stage_start = time.perf_counter()
        losses += _train_stage(model.train(), tokenizer, schedule, log_every)
        done.append(asdict(schedule))
        minutes.append(round((time.perf_counter() - stage_start) / 60, 1))
    out_dir.mkdir(parents=True, exist_ok=True)
    model.eval().save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    record = {"recipe": RECIPE, "corpus_version": CORPUS_VERSION, "shape": asdict(shape),
              "stages": done, "parameters": model.num_parameters(),
              "train_minutes": round((time.perf_counter() - start) / 60, 1),
              "stage_minutes": minutes,
              "final_loss": round(sum(losses[-100:]) / len(losses[-100:]), 4)}  # fmt: skip
    (out_dir / "tutor.json").write_text(json.dumps(record, indent=2) + "\n")
    return losses


def _train_stage(model, tokenizer, schedule: Schedule, log_every: int) -> list[float]:
    """One stage: a fresh AdamW, warm-up then cosine decay, over the stage's corpus mixture."""
    import torch

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": schedule.weight_decay},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=schedule.lr, betas=(0.9, 0.95),
    )  # fmt: skip
    stream = training_stream(schedule.seed, schedule.corpus_version, dict(schedule.skills))
    batches = _length_bucketed(stream, tokenizer, schedule)
    losses: list[float] = []
    start, tokens = time.perf_counter(), 0
    for step in range(schedule.steps):
        for group in optimizer.param_groups:
            group["lr"] = _lr_at(step, schedule)
        ids, labels = next(batches)
        # float32: on this CPU it ran faster than bf16 autocast for a model this small.
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        tokens += ids.numel()
        if log_every and (step + 1) % log_every == 0:
            elapsed = time.perf_counter() - start
            mean = sum(losses[-log_every:]) / log_every
            print(f"stage v{schedule.corpus_version} step {step + 1}/{schedule.steps} "
                  f"loss {mean:.4f} {tokens / elapsed:.0f} tokens/s {elapsed / 60:.1f} min",
                  flush=True)  # fmt: skip
    return losses
