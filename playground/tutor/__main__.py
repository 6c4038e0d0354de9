"""`python -m playground.tutor train|export|eval`: rebuild and measure tiny-tutor.

Owns the command line of the recipe only; each command is one call into the package.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from playground.tutor import TUTOR_DIR

WORK_DIR = Path("artifacts/tutor")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m playground.tutor",
        description="Rebuild tiny-tutor: train (torch; about 12 min on 2 cores from recipe 3's "
        "IR), export to OpenVINO, evaluate on the held-out set. Needs requirements-optimum.txt.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train the checkpoint, deterministic for a seed")
    train.add_argument("--out", type=Path, default=WORK_DIR / "hf",
                       help="where the checkpoint goes (default: %(default)s)")  # fmt: skip
    train.add_argument("--init", type=Path,
                       help="start from this IR folder's weights (recipe 4 starts from recipe "
                       "3's model) and train on the FINE_TUNE schedule")  # fmt: skip
    export = commands.add_parser("export", help="export a checkpoint to an OpenVINO IR folder")
    export.add_argument("--checkpoint", type=Path, default=WORK_DIR / "hf",
                        help="trained checkpoint (default: %(default)s)")  # fmt: skip
    export.add_argument("--out", type=Path, default=TUTOR_DIR,
                        help="IR folder to write (default: the shipped model)")  # fmt: skip
    export.add_argument("--weights", choices=("int4", "int8"), default="int4",
                        help="weight format (default: %(default)s)")  # fmt: skip
    evaluate = commands.add_parser("eval", help="per-skill accuracy on the held-out set")
    evaluate.add_argument("--model", type=Path, default=TUTOR_DIR,
                          help="IR folder (default: the shipped model)")  # fmt: skip
    evaluate.add_argument("--per-skill", type=int, default=40,
                          help="held-out examples per skill (default: %(default)s)")  # fmt: skip
    evaluate.add_argument("--json", type=Path, help="also write the results here as JSON")
    args = parser.parse_args(argv)

    if args.command == "train":
        from playground.tutor.train import FINE_TUNE, Schedule, train

        train(args.out, schedule=FINE_TUNE if args.init else Schedule(), init=args.init)
    elif args.command == "export":
        from playground.settings import load_settings
        from playground.tutor.export import export

        export(args.checkpoint, args.out, load_settings().cache_dir, args.weights)
    else:
        from playground.tutor.evaluate import evaluate, report

        results = evaluate(args.model, args.per_skill)
        print(report(results))
        if args.json:
            args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
