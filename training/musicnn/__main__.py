"""``python -m training.musicnn {convert,verify,evaluate}``: see the package docstring."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT_OUT = Path(__file__).resolve().parents[2] / "tagger" / "models" / "artifacts"
DEFAULT_GTZAN = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "gtzan"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.musicnn")
    sub = p.add_subparsers(dest="cmd", required=True)

    c = sub.add_parser("convert", help="checkpoints in the musicnn wheel → Keras artifacts")
    c.add_argument("--wheel", type=Path, required=True, help="musicnn-0.1.0-py3-none-any.whl")
    c.add_argument("--out", type=Path, default=DEFAULT_OUT)
    c.add_argument("--model", action="append", choices=["musicnn-msd", "musicnn-mtt"])

    v = sub.add_parser("verify", help="original tf.compat.v1 graph vs the Keras port on real audio")
    v.add_argument("--wheel", type=Path, required=True)
    v.add_argument("--out", type=Path, default=DEFAULT_OUT)
    v.add_argument("--gtzan", type=Path, default=DEFAULT_GTZAN)
    v.add_argument("--per-genre", type=int, default=2, help="clips per GTZAN genre")
    v.add_argument("--tf-keras", type=Path, default=None,
                   help="folder holding tf_keras (pip install --target DIR 'tf_keras==2.21.*'), if not installed")

    e = sub.add_parser("evaluate", help="genre head on every GTZAN clip; figures into the card")
    e.add_argument("--out", type=Path, default=DEFAULT_OUT)
    e.add_argument("--gtzan", type=Path, default=DEFAULT_GTZAN)
    e.add_argument("--model", default="musicnn-msd")

    args = p.parse_args(argv)
    if args.cmd == "convert":
        from training.musicnn.convert import convert

        for path in convert(args.wheel, args.out, args.model):
            print(f"wrote {path}")
    elif args.cmd == "verify":
        from training.musicnn.verify import verify

        verify(args.wheel, args.out, args.gtzan, args.per_genre, args.tf_keras)
    else:
        from training.musicnn.evaluate import evaluate

        evaluate(args.model, args.out, args.gtzan)
    return 0


if __name__ == "__main__":
    sys.exit(main())
