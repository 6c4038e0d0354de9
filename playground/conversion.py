"""Conversion of a Hugging Face checkpoint to an OpenVINO IR folder: `python -m playground convert`.

Owns: the weight choices a user makes (int4, int8 or fp16; the group size, symmetry and ratio of
int4, whether its output layer is compressed too) and their checks, finding the checkpoint (a
local folder, or a Hub id fetched through `models`), the card `convert.json` written beside the
IR, and the one message when requirements-optimum.txt's packages are missing.
Does not own: the export itself (`models.export_ir`, which also builds the project's own models),
or serving the result: any IR folder is a `--model`.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from playground.errors import UserError
from playground.models import MODEL_XML, download_snapshot, export_ir, looks_like_repo_id

WEIGHTS = {"int4": 4, "int8": 8, "fp16": 16}  # the choice, and export_ir's bits for it
DEFAULT_GROUP_SIZE = 128  # optimum-cli's for int4
CARD = "convert.json"
# What the export imports, by the name a user installs it under.
NEEDED = {"torch": "torch", "optimum.intel": "optimum-intel", "nncf": "nncf",
          "openvino_tokenizers": "openvino-tokenizers"}  # fmt: skip
RECORDED = ("optimum-intel", "nncf", "openvino", "openvino-tokenizers", "transformers", "torch")
INSTEAD = "or pass the checkpoint's local folder as SOURCE"


class ConversionError(UserError, ValueError):
    """A conversion that cannot be done as asked; the message says why and what to do."""


@dataclass(frozen=True)
class WeightChoice:
    """How the weights are stored: int4 (its group size, ratio and output layer), int8 (per
    channel) or fp16 (uncompressed). None means "not given": the default, where it applies."""

    weights: str = "int4"
    group_size: int | None = None
    sym: bool | None = None
    ratio: float | None = None
    all_layers: bool = False

    def checked(self) -> WeightChoice:
        """The choice with its defaults filled in; an option that does not apply is refused."""
        if self.weights not in WEIGHTS:
            raise ConversionError(
                f"--weights is one of {', '.join(WEIGHTS)}, got {self.weights!r}."
            )
        int4_only = {"--group-size": self.group_size is not None, "--ratio": self.ratio is not None,
                     "--all-layers": self.all_layers}  # fmt: skip
        given = [flag for flag, on in int4_only.items() if on]
        if self.weights != "int4" and given:
            raise ConversionError(
                f"{' and '.join(given)} {'apply' if len(given) > 1 else 'applies'} to int4 only: "
                "int8 is per channel and compresses every layer, fp16 compresses none."
            )
        if self.weights == "fp16" and self.sym is not None:
            raise ConversionError(
                "--sym and --asym apply to int4 and int8; fp16 has no zero points."
            )
        if self.weights != "int4":
            return replace(self, sym=bool(self.sym) if self.weights == "int8" else None)
        group_size = DEFAULT_GROUP_SIZE if self.group_size is None else self.group_size
        if group_size != -1 and group_size < 1:
            raise ConversionError(
                f"--group-size must be -1 (per channel) or at least 1, got {group_size}."
            )
        ratio = 1.0 if self.ratio is None else self.ratio
        if not 0 < ratio <= 1:
            raise ConversionError(
                f"--ratio is the share of layers in int4, above 0 and at most 1, got {ratio}."
            )
        return replace(self, group_size=group_size, sym=bool(self.sym), ratio=ratio)


def require_optimum() -> None:
    """Refuse, in one message, when the export's packages are not installed. Looked up, not
    imported: torch and nncf take seconds to import, and a bad SOURCE must fail fast."""
    missing = [package for module, package in NEEDED.items() if not _installed(module)]
    if missing:
        raise ConversionError(
            f"convert needs {', '.join(missing)}, which are not installed: "
            "pip install -r requirements-optimum.txt"
        )


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:  # "optimum.intel" without "optimum"
        return False


def checkpoint_folder(source: str) -> Path:
    """The local folder of the Hugging Face checkpoint `source` (a folder or a Hub id)."""
    path = Path(source).expanduser()
    if path.is_dir():
        folder = path
    elif looks_like_repo_id(source):
        folder = download_snapshot(source, INSTEAD)  # fails fast offline: no hang
    else:
        raise ConversionError(f"{source!r} is neither a folder nor a Hugging Face id (owner/name).")
    if (folder / MODEL_XML).is_file():
        raise ConversionError(
            f"{source} is already an OpenVINO IR: serve it with --model {source}."
        )
    if not (folder / "config.json").is_file():
        raise ConversionError(
            f"{source} holds no config.json: it is not a Hugging Face checkpoint."
        )
    return folder


def check_group_size(folder: Path, group_size: int) -> None:
    """Refuse, before the export, a group size that does not divide every layer's input width
    (nncf would stop halfway with InvalidGroupSizeError)."""
    if group_size == -1:
        return
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    config = config.get("text_config", config)
    heads, head_dim = config.get("num_attention_heads"), config.get("head_dim")
    widths = [config.get("hidden_size"), config.get("intermediate_size")]
    widths += [heads * head_dim] if heads and head_dim else []
    widths = [w for w in widths if isinstance(w, int) and w > 0]
    if widths and any(w % group_size for w in widths):
        common = math.gcd(*widths)
        fits = 1 << ((common & -common).bit_length() - 1)  # its largest power-of-two divisor
        raise ConversionError(
            f"--group-size {group_size} does not divide the layers' input widths "
            f"({', '.join(map(str, sorted(set(widths))))}): use a divisor of {common} "
            f"such as {min(fits, DEFAULT_GROUP_SIZE)}, or -1 (per channel)."
        )


def convert(source: str, out: Path, choice: WeightChoice, command: str) -> Path:
    """Export `source` to the IR folder `out` (new or empty) with `choice`; return `out`."""
    choice = choice.checked()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConversionError(f"{out} exists and is not an empty folder: choose a new one.")
    require_optimum()
    folder = checkpoint_folder(source)
    if choice.weights == "int4":
        check_group_size(folder, choice.group_size)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Export beside `out` and rename, so an interrupted run never leaves half an IR there.
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}-") as tmp:
        work = Path(tmp) / "ir"
        export_ir(folder, work, bits=WEIGHTS[choice.weights], group_size=choice.group_size or -1,
                  sym=bool(choice.sym), ratio=choice.ratio or 1.0,
                  all_layers=choice.all_layers or None)  # fmt: skip
        write_card(work, source, choice, command)
        if out.exists():
            out.rmdir()
        os.replace(work, out)
    return out


def write_card(folder: Path, source: str, choice: WeightChoice, command: str) -> dict:
    """`convert.json`: what was converted, how, by which command and package versions, and
    the size it came to."""
    from playground.bench.measure import package_versions

    card = {
        "source": source,
        **asdict(choice),
        "command": command,
        "model_bytes": (folder / "openvino_model.bin").stat().st_size,
        "folder_bytes": sum(p.stat().st_size for p in folder.iterdir() if p.is_file()),
        "packages": package_versions(RECORDED),
    }
    (folder / CARD).write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    return card
