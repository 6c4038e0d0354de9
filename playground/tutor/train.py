"""Training tiny-tutor with torch on the CPU, deterministically for a seed.

Owns: the model's shape, the encoding of a conversation into ids and loss labels, and the
training loop (AdamW, warm-up then cosine decay, float32, 2 threads). The loss covers what
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
    steps: int = 3000
    # 16, not 32 (recipe 3): the same steps in half the time, so training fits 30 minutes on
    # this project's 2-core AVX2 machines (recipe 3's 3000 x 32 took 84 to 99 min on them).
    batch: int = 16
    bucket: int = 8  # batches drawn at once and grouped by length, to pad less
    lr: float = 3e-3
    warmup: int = 150
    weight_decay: float = 0.1
    max_tokens: int = 512  # longer examples are cut (the corpus has none near this)
    seed: int = 0
    # torch.compile (inductor, C++ kernels built with the machine's compiler): 1.5x the eager
    # speed here (1.03 against 1.59 s per step of 32), paid for with about a minute of building.
    compiled: bool = True
    corpus_version: int = CORPUS_VERSION
    skills: tuple[tuple[str, int], ...] = tuple(SKILLS.items())


# Recipe 4: recipe 3's model (the int4 IR shipped until then, dequantized), trained on corpus 8
# with its four new skills drawn more often: twice, and the sums with symbols four times (at
# twice, 800 steps left them at 70%, their counting off on held-out pairs). From scratch, 3000
# steps of 16 took 33 min here and reached 87.8% (the long-range skills 72%).
BOOST = {"greeting-casual": 2, "thanks-goodbye": 2, "format-tokens": 2,
         "arithmetic-symbols": 4}  # fmt: skip
FINE_TUNE = Schedule(
    steps=1000, lr=1e-3, warmup=50,
    skills=tuple((name, n * BOOST.get(name, 1)) for name, n in SKILLS.items()),
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
    # No attention-logit softcapping (Gemma-2 caps at 50): transformers computes the cap only in
    # eager attention, and SDPA trained this model 1.5x faster. The final-logit cap stays.
    return new_gemma2(vocab_size=VOCAB_SIZE, **asdict(shape), sliding_window=512,
                      attn_logit_softcapping=None, attn_implementation="sdpa")  # fmt: skip


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


def train(out_dir: Path, shape: Shape = Shape(), schedule: Schedule = Schedule(),
          log_every: int = 100, init: Path | None = None) -> list[float]:  # fmt: skip
    """Train a fresh model (or, from `init`, an IR folder's: its weights dequantized) on
    `schedule`, save the checkpoint, the tokenizer and the record of the run (`tutor.json`) in
    `out_dir`, and return the losses."""
    # OpenMP threads that spin while they wait made training 20x slower on a busy machine.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    torch.set_num_threads(2)
    # Compiled kernels sum in an order that varied between runs (weights 2e-8 apart after 4
    # steps); deterministic algorithms made two runs byte for byte the same.
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(schedule.seed)
    model = make_model(shape)
    if init is not None:
        _load_ir_weights(model, init)
    tokenizer = build_tokenizer()
    start = time.perf_counter()
    # Lengths vary by batch: dynamic shapes build the kernels once, not once per length.
    step = torch.compile(model, dynamic=True) if schedule.compiled else model
    losses = _train_loop(step.train(), tokenizer, schedule, log_every)
    minutes = (time.perf_counter() - start) / 60
    out_dir.mkdir(parents=True, exist_ok=True)
    model.eval().save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    record = {"recipe": RECIPE, "corpus_version": CORPUS_VERSION, "shape": asdict(shape),
              "schedule": asdict(schedule), "parameters": model.num_parameters(),
              "init": _init_record(init),
              "train_minutes": round(minutes, 1),
              "final_loss": round(sum(losses[-100:]) / len(losses[-100:]), 4)}  # fmt: skip
    (out_dir / "tutor.json").write_text(json.dumps(record, indent=2) + "\n")
    return losses


def _load_ir_weights(model, ir: Path) -> None:
    """Start `model` from the weights of the IR in `ir`, as OpenVINO dequantizes them."""
    import tempfile

    from safetensors.torch import load_file

    from playground.gguf import checkpoint_from_ir

    with tempfile.TemporaryDirectory() as tmp:
        weights = load_file(checkpoint_from_ir(ir, Path(tmp)) / "model.safetensors")
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if unexpected or set(missing) - {"lm_head.weight"}:  # the head is the tied embedding
        raise ValueError(f"{ir} does not fit tiny-tutor's shape: {missing or unexpected}")
    model.tie_weights()


def _init_record(init: Path | None) -> dict | None:
    """What the run started from: the recipe recorded beside the IR's weights."""
    if init is None:
        return None
    record = init / "tutor.json"
    recipe = json.loads(record.read_text())["recipe"] if record.is_file() else None
    return {"ir": str(init), "recipe": recipe}


def _train_loop(model, tokenizer, schedule: Schedule, log_every: int) -> list[float]:
    """AdamW, warm-up then cosine decay to a tenth, over the schedule's corpus mixture."""
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
            print(f"step {step + 1}/{schedule.steps} "
                  f"loss {mean:.4f} {tokens / elapsed:.0f} tokens/s {elapsed / 60:.1f} min",
                  flush=True)  # fmt: skip
    return losses
