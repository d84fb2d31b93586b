"""``python -m training <experiment> [options]``: one command per experiment.

  features  decode and cache features of a dataset
  ml        train logreg / knn / svm on MFCC statistics (optionally grouped CV first)
  deep      train cnn / cnn_bilstm on log-mel patches (optionally grouped CV first)
  cv        grouped cross-validation of any of the five models, no final model
  attach-cv copy a cv run's figures into a model's card.json
  check     score a written model with tagger.evaluate on a split, recorded in its card
  timing    re-measure a model's inference time per track (on a quiet CPU) into its card
"""
from __future__ import annotations

import argparse
import os
import sys

from training import cache


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="gtzan", choices=["gtzan", "fma", "folder", "csv"])
    p.add_argument("--root", default=None, help="dataset folder (or CSV for --dataset csv)")
    p.add_argument("--split", default="all", help="all, train (evaluated on valid), valid")
    p.add_argument("--group-size", type=int, default=5, help="GTZAN: ids per group (runs of one artist)")
    p.add_argument("--cache-dir", default=str(cache.DEFAULT_DIR))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="output folder (default runs/<name>)")
    p.add_argument("--timing-tracks", type=int, default=10, help="tracks timed for the card's inference ms")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m training", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("features", help="cache features")
    _common(p)

    p = sub.add_parser("ml", help="train a classic model on MFCC statistics")
    _common(p)
    p.add_argument("--model", required=True, choices=["logreg", "knn", "svm"])
    p.add_argument("--name", default=None)
    p.add_argument("--version", default="1")
    p.add_argument("--cv", type=int, default=0, help="grouped CV folds to run first (0: none)")
    p.add_argument("--valid-check", action="store_true", help="also score train.txt -> valid.txt")

    p = sub.add_parser("deep", help="train cnn or cnn_bilstm on log-mel patches")
    _common(p)
    p.add_argument("--arch", required=True, choices=["cnn", "cnn_bilstm"])
    p.add_argument("--name", default=None)
    p.add_argument("--version", default="1")
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--cv", type=int, default=0, help="grouped CV folds to run first (0: none)")
    p.add_argument("--cv-epochs", type=int, default=0, help="epochs per CV fold (default --epochs)")
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--export-h5", action="store_true", help="also save model.h5")

    p = sub.add_parser("cv", help="grouped cross-validation only")
    _common(p)
    p.add_argument("--model", required=True, choices=["logreg", "knn", "svm", "cnn", "cnn_bilstm"])
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--epochs", type=int, default=15, help="deep models: fixed epochs per fold")
    p = sub.add_parser("attach-cv", help="copy a cv run's figures (cv.json) into a model's card")
    p.add_argument("model_dir")
    p.add_argument("cv_json")

    p = sub.add_parser("check", help="score a written model with tagger.evaluate and record it in its card")
    _common(p)
    p.add_argument("model_dir")
    p.add_argument("--note", default="")

    p = sub.add_parser("timing", help="re-measure a model's inference time and update its card")
    _common(p)
    p.add_argument("model_dir")
    p.add_argument("--tracks", type=int, default=11)
    return ap


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = parser().parse_args(argv)
    from training import experiments

    if getattr(args, "name", "x") is None:  # default name: <dataset>-<model>
        kind = getattr(args, "model", None) or getattr(args, "arch", "")
        args.name = f"{args.dataset}-{kind.replace('_', '-')}"

    def log(msg: str) -> None:
        print(msg, flush=True)

    run = {"features": experiments.run_features, "ml": experiments.run_ml,
           "deep": experiments.run_deep, "cv": experiments.run_cv,
           "timing": experiments.run_timing, "attach-cv": experiments.run_attach,
           "check": experiments.run_check}[args.command]
    run(args, log=log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
