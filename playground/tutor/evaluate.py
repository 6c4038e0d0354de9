"""Held-out evaluation of an exported tiny-tutor through the app's own `genai` engine.

Owns: running the held-out set greedily (each prompt rendered by `chat_format`, the system
prompt folded as the app folds it), grading, and the per-skill table. Does not own: what a
correct reply is (`corpus`) or the engine (`engines`).
"""

from __future__ import annotations

import tempfile
from collections import defaultdict
from pathlib import Path

from playground.chat_format import render
from playground.engines import load_engine
from playground.sampling import SamplingParams
from playground.tutor.corpus import held_out_set

GREEDY = SamplingParams(temperature=0.0, top_k=0, top_p=1.0, repetition_penalty=1.0,
                        max_new_tokens=256)  # fmt: skip


def evaluate(folder: Path, per_skill: int = 40) -> dict:
    """Per-skill accuracy and the share of replies that end with <end_of_turn>."""
    with tempfile.TemporaryDirectory() as cache:
        engine = load_engine(folder, "genai", cache_dir=Path(cache))
        rows: dict[str, list[tuple[bool, bool]]] = defaultdict(list)
        failures = []
        for example in held_out_set(per_skill):
            prompt = render(example.messages).text  # the default policy: fold
            result = engine.generate(prompt, GREEDY).run()
            correct = example.grade(result.text)
            ended = result.stop_reason == "end_of_turn"
            rows[example.skill].append((correct, ended))
            if "op" in example.meta and example.skill.startswith("arithmetic"):
                rows[f"{example.skill}: {example.meta['op']}"].append((correct, ended))
            if not correct and len(failures) < 60:
                failures.append({"skill": example.skill, "prompt": example.messages[-1]["content"],
                                 "expected": example.reply, "got": result.text})  # fmt: skip
    skills = {
        name: {"n": len(r), "correct": sum(c for c, _ in r) / len(r),
               "ended": sum(e for _, e in r) / len(r)}
        for name, r in rows.items()
    }  # fmt: skip
    graded = [pair for name, r in rows.items() if ":" not in name for pair in r]
    return {
        "model": str(folder),
        "overall": sum(c for c, _ in graded) / len(graded),
        "ended_with_end_of_turn": sum(e for _, e in graded) / len(graded),
        "n": len(graded),
        "skills": skills,
        "failures": failures,
    }


def report(results: dict) -> str:
    """The results as a markdown table."""
    lines = ["| skill | n | correct | ends with <end_of_turn> |", "|---|---|---|---|"]
    for name, s in sorted(results["skills"].items()):
        lines.append(f"| {name} | {s['n']} | {s['correct']:.0%} | {s['ended']:.0%} |")
    lines.append(f"| **overall** | {results['n']} | **{results['overall']:.1%}** | "
                 f"**{results['ended_with_end_of_turn']:.1%}** |")  # fmt: skip
    return "\n".join(lines)
