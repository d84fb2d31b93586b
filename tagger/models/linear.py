"""The open-set decider without scikit-learn: its fitted numbers in a plain ``.npz``.

Every fitted part of ``OpenSetDecider`` is a standardisation followed by a
logistic regression (the genre head, softmax over ten genres; each kind's
calibrator, one sigmoid) plus the familiarity arrays. Unpickling the
``decider.joblib`` that training writes imports scikit-learn, about 1 s of a
worker's start (``bench/bench_coldstart.py``), and runs whatever code a pickle
names. ``decider.npz`` holds the same numbers as arrays, read with
``allow_pickle=False``, and records the digest of the ``decider.joblib`` it was
made from: a stale one is not used (``OpenSetModel`` then unpickles the joblib).

    python -m tagger.models.linear DIR    # DIR/decider.joblib -> DIR/decider.npz
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

PLAIN_NAME = "decider.npz"


class Linear:
    """``predict_proba`` of a fitted ``Pipeline([StandardScaler, LogisticRegression])``, in numpy."""

    def __init__(self, mean, scale, coef, intercept, classes):
        # each in the precision it was fitted in (a head fitted on float32 rows has float32
        # coefficients): the same arithmetic as scikit-learn's, to the last bit or nearly
        self.mean, self.scale = np.asarray(mean), np.asarray(scale)
        self.coef, self.intercept = np.asarray(coef), np.asarray(intercept)
        self.classes_ = np.asarray(classes)

    @classmethod
    def from_pipeline(cls, pipe) -> "Linear":
        scaler, model = pipe.steps[0][1], pipe.steps[-1][1]
        if len(pipe.steps) != 2 or type(scaler).__name__ != "StandardScaler" \
                or type(model).__name__ != "LogisticRegression":
            raise ValueError(f"not a StandardScaler + LogisticRegression pipeline: {pipe}")
        n = model.coef_.shape[1]
        mean = scaler.mean_ if scaler.mean_ is not None else np.zeros(n)
        scale = scaler.scale_ if scaler.scale_ is not None else np.ones(n)
        return cls(mean, scale, model.coef_, model.intercept_, model.classes_)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if x.dtype not in (np.float32, np.float64):
            x = x.astype(np.float64)
        # standardised in the input's own precision, as StandardScaler does
        z = ((x - self.mean.astype(x.dtype)) / self.scale.astype(x.dtype)) @ self.coef.T + self.intercept
        if self.coef.shape[0] == 1:  # two classes: one decision function, P(classes_[1]) = sigmoid
            p = 1.0 / (1.0 + np.exp(-z[:, 0]))
            return np.stack([1.0 - p, p], axis=1)
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def arrays(self, prefix: str) -> dict[str, np.ndarray]:
        return {f"{prefix}.{k}": getattr(self, a) for k, a in
                (("mean", "mean"), ("scale", "scale"), ("coef", "coef"), ("intercept", "intercept"),
                 ("classes", "classes_"))}

    @classmethod
    def from_arrays(cls, data, prefix: str) -> "Linear":
        return cls(*(data[f"{prefix}.{k}"] for k in ("mean", "scale", "coef", "intercept", "classes")))


def digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def save_plain(decider, source: Path, out: Path) -> Path:
    """Write ``decider`` (fitted, as unpickled from ``source``) as plain arrays to ``out``."""
    fam = decider.familiarity
    arrays = dict(Linear.from_pipeline(decider.head).arrays("head"))
    for kind, pipe in decider.calibrator.items():
        arrays.update(Linear.from_pipeline(pipe).arrays(f"calibrator.{kind}"))
    arrays.update({"familiarity.mean": fam.mean, "familiarity.scale": fam.scale,
                   "familiarity.points": fam.points})
    if fam.point_labels is not None:
        arrays["familiarity.point_labels"] = np.asarray(fam.point_labels)
        arrays["familiarity.genre_references"] = np.asarray(fam.genre_references)
    meta = {"head_labels": list(decider.head_labels), "calibrator": sorted(decider.calibrator),
            "tag_head": decider.tag_head, "threshold": float(decider.threshold),
            "reference": float(fam.reference), "source_sha256": digest(source)}
    arrays["meta"] = np.array(json.dumps(meta))
    with open(out, "wb") as f:
        np.savez_compressed(f, **arrays)
    return out


def load_plain(path: Path, source: Path):
    """The decider from ``path``, or None when it was made from another ``source`` than this one."""
    from tagger.models.openset import Familiarity, OpenSetDecider

    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(str(data["meta"]))
        if meta["source_sha256"] != digest(source):
            return None
        labels = data["familiarity.point_labels"] if "familiarity.point_labels" in data else None
        refs = data["familiarity.genre_references"] if "familiarity.genre_references" in data else None
        fam = Familiarity(data["familiarity.mean"], data["familiarity.scale"], data["familiarity.points"],
                          meta["reference"], labels, refs)
        return OpenSetDecider(head=Linear.from_arrays(data, "head"), head_labels=tuple(meta["head_labels"]),
                              familiarity=fam,
                              calibrator={k: Linear.from_arrays(data, f"calibrator.{k}") for k in meta["calibrator"]},
                              tag_head=meta["tag_head"], threshold=meta["threshold"])


def main(argv: list[str] | None = None) -> None:
    import argparse

    import joblib

    ap = argparse.ArgumentParser(prog="python -m tagger.models.linear", description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", type=Path, help="a model folder holding decider.joblib")
    args = ap.parse_args(argv)
    source = args.folder / "decider.joblib"
    if not source.is_file():
        sys.exit(f"{source}: no such file")
    out = save_plain(joblib.load(source), source, args.folder / PLAIN_NAME)
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
