"""How many windows must the default head hear? Grouped CV of progressive hearing.

``python -m training.progressive [--head lr-pen-probs] [--first 2,3,4] [--stop 0.5,...]``

For every track, the head (fitted on the other folds' tracks, as
``training.transfer cv`` fits it) gives per-patch probabilities; one patch per
3 s window. Progressive hearing takes the mean over the ``first`` windows
``tagger.models.progressive.first_indices`` picks, stops there when its top
probability reaches ``stop``, and otherwise takes the mean over all windows,
which is what ``tagger.models.progressive.hear`` does at tagging time. Prints
track-level accuracy, macro-F1 and the mean number of windows heard, beside
hearing every window and hearing only the first ones.

The same folds choose and score ``stop``: treat the chosen value as a
reasonable setting, not as a tuned result.
"""
from __future__ import annotations

import argparse
import json

import numpy as np

from tagger.models.progressive import first_indices
from tagger.models.transfer import head_probs
from training import datasets, metrics, transfer
from training.experiments import grouped_folds


def out_of_fold_patch_probs(spec, items, emb, n_folds: int = 5, seed: int = 0) -> tuple[list[np.ndarray], np.ndarray, list[str]]:
    labels = datasets.labels_of(items)
    y = np.array([labels.index(it.genre) for it in items])
    per_track = [emb[it.track_id][spec.tap] for it in items]
    out: list[np.ndarray] = [np.empty(0)] * len(items)
    for k, (tr, te) in enumerate(grouped_folds(items, n_folds, seed)):
        head = transfer.fit_head(spec, [per_track[i] for i in tr], y[tr], len(labels), seed + k)
        for i in te:
            out[i] = head_probs(head, spec.head_type, per_track[i], len(labels))
    return out, y, labels


def progressive_scores(patch_probs, y, labels, first: int, stop: float) -> dict:
    pred, heard = [], []
    for p in patch_probs:
        idx = first_indices(len(p), first) if first < len(p) else list(range(len(p)))
        early = p[idx].mean(axis=0)
        if early.max() >= stop:
            pred.append(int(early.argmax()))
            heard.append(len(idx))
        else:
            pred.append(int(p.mean(axis=0).argmax()))
            heard.append(len(p))
    s = metrics.scores([labels[v] for v in y], [labels[v] for v in pred], labels)
    return {"first": first, "stop": stop, "accuracy": s["accuracy"], "macro_f1": s["macro_f1"],
            "mean_windows": round(float(np.mean(heard)), 2),
            "stopped_early": round(float(np.mean([h < len(p) for h, p in zip(heard, patch_probs)])), 3)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.progressive", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="gtzan", choices=["gtzan", "fma", "folder", "csv"])
    ap.add_argument("--root", default=None)
    ap.add_argument("--split", default="all")
    ap.add_argument("--group-size", type=int, default=5)
    ap.add_argument("--cache-dir", default=str(transfer.CACHE_DIR))
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--head", default="lr-pen-probs", choices=[n for n, h in transfer.HEADS.items() if h.pool == "probs"])
    ap.add_argument("--first", default="2,3,4")
    ap.add_argument("--stop", default="0.5,0.6,0.7,0.8,0.9,0.95")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    spec = transfer.HEADS[args.head]
    items, emb, _, _ = transfer._load(args, taps=(spec.tap,), log=None)
    probs, y, labels = out_of_fold_patch_probs(spec, items, emb, args.folds)
    rows = [progressive_scores(probs, y, labels, 10 ** 6, 0.0) | {"first": "all", "stop": "-"}]
    for first in (int(v) for v in args.first.split(",")):
        rows.append(progressive_scores(probs, y, labels, first, 0.0) | {"stop": "always"})
        rows += [progressive_scores(probs, y, labels, first, float(t)) for t in args.stop.split(",")]
    if args.json:
        print(json.dumps({"head": args.head, "tracks": len(items), "folds": args.folds, "rows": rows}, indent=1))
        return 0
    print(f"{args.head}: {len(items)} tracks, grouped {args.folds}-fold CV (track level)")
    print(f"{'first':>5} {'stop':>6} {'accuracy':>9} {'macro-F1':>9} {'windows':>8} {'early':>6}")
    for r in rows:
        print(f"{r['first']!s:>5} {r['stop']!s:>6} {r['accuracy']:>9.3f} {r['macro_f1']:>9.3f} "
              f"{r['mean_windows']:>8.2f} {r['stopped_early']:>6.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
