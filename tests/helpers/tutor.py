"""A tiny training run of the tutor recipe, which a test runs in a process of its own."""

from pathlib import Path


def train_small(folder: str) -> None:
    from playground.tutor.train import Schedule, Shape, train

    shape = Shape(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                  num_attention_heads=2, num_key_value_heads=1, head_dim=16)  # fmt: skip
    train(Path(folder), shape, Schedule(steps=4, batch=4, bucket=2, warmup=2), log_every=0)
