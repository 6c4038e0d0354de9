"""Export a trained tiny-tutor checkpoint to the OpenVINO IR folder the app serves.

Owns: the choice of weight format and group size for the tutor, and what the shipped folder
holds besides the IR (the recipe record `tutor.json`, and the GGUF of the IR's own weights that
llama.cpp serves). Does not own: the export itself
(`models.export_ir`, shared with the random models) or the model card, which is written from a
measured `eval` run.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from playground.gguf import gguf_from_ir
from playground.models import export_ir
from playground.tutor import GGUF

# The hidden size (128) is a multiple of 32: one int4 scale per 32 weights.
GROUP_SIZE = 32
KEEP = ("README.md", "eval.json")  # written from measurements, kept across re-exports


def export(checkpoint: Path, out: Path, cache_dir: Path, weights: str = "int4") -> Path:
    """Write the IR of `checkpoint` to `out` (replacing its model files), and the f16 GGUF of
    that IR beside it; return `out`. `cache_dir` keeps llama.cpp's converter."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "ir"
        export_ir(checkpoint, folder, bits=4 if weights == "int4" else 8, group_size=GROUP_SIZE)
        shutil.copy(checkpoint / "tutor.json", folder / "tutor.json")
        out.mkdir(parents=True, exist_ok=True)
        for old in out.iterdir():
            if old.name not in KEEP:
                old.unlink()
        for new in folder.iterdir():
            shutil.copy(new, out / new.name)
    gguf_from_ir(out, out / GGUF.name, cache_dir)
    return out
