"""How many windows must the default head hear? Grouped CV of progressive hearing.

``python -m training.progressive [--head lr-pen-probs] [--first 2,3,4] [--step 0,2] [--stop 0.5,...]``

For every track, the head (fitted on the other folds' tracks, as
``training.transfer cv`` fits it) gives per-patch probabilities; one patch per
3 s window. Progressive hearing goes through the stages
``tagger.models.progressive.stages`` gives (``first`` windows, then ``step`` at a
time) and stops after the first stage whose mean top probability reaches
``stop``, which is what ``tagger.models.progressive.hear`` does at tagging
time. Prints track-level accuracy, macro-F1 and the mean number of windows
heard, beside hearing every window and hearing only the first ones.

``--unlabelled DIR`` runs the shipped head on every audio file under DIR
(music no model here has heard; no labels) and prints, for the same settings,
how often the progressive answer equals the answer after hearing every window,
and the windows heard.

The same folds choose and score ``stop``: treat the chosen value as a
reasonable setting, not as a tuned result.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from tagger.models.progressive import stages
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


def heard_answer(p: np.ndarray, first: int, step: int, stop: float) -> tuple[int, int]:
    """(answer, windows heard) for one track's per-window probabilities ``p``, as tagging hears it."""
    seen: list[int] = []
    for k, stage in enumerate(order := stages(len(p), first, step)):
        seen += stage
        mean = p[seen].mean(axis=0)
        if mean.max() >= stop or k == len(order) - 1:
            return int(mean.argmax()), len(seen)
    raise ValueError("a track with no windows")


def progressive_scores(patch_probs, y, labels, first: int, stop: float, step: int = 0) -> dict:
    res = [heard_answer(p, first, step, stop) for p in patch_probs]
    pred, heard = [r[0] for r in res], [r[1] for r in res]
    s = metrics.scores([labels[v] for v in y], [labels[v] for v in pred], labels)
    return {"first": first, "step": step, "stop": stop, "accuracy": s["accuracy"], "macro_f1": s["macro_f1"],
            "mean_windows": round(float(np.mean(heard)), 2),
            "stopped_early": round(float(np.mean([h < len(p) for h, p in zip(heard, patch_probs)])), 3)}


def agreement(patch_probs, first: int, stop: float, step: int = 0) -> dict:
    """How often hearing progressively answers as hearing everything does (no labels needed)."""
    res = [heard_answer(p, first, step, stop) for p in patch_probs]
    full = [int(p.mean(axis=0).argmax()) for p in patch_probs]
    return {"first": first, "step": step, "stop": stop,
            "agreement": round(float(np.mean([a == b for (a, _), b in zip(res, full)])), 3),
            "mean_windows": round(float(np.mean([h for _, h in res])), 2),
            "stopped_early": round(float(np.mean([h < len(p) for (_, h), p in zip(res, patch_probs)])), 3)}


def unlabelled_window_probs(root: Path, model_name: str, windows: int) -> tuple[list[str], list[np.ndarray]]:
    """Every window's probabilities for each readable audio file under ``root``."""
    from tagger import audio, formats
    from tagger.errors import TaggerError
    from tagger.models import registry, runtime

    runtime.set_threads(1)
    model = registry.load(model_name)
    names, out = [], []
    for path in sorted(q for q in root.rglob("*") if q.is_file()):
        try:
            fmt = formats.confirm(path)
            info, starts = audio.plan(path, fmt, n_windows=windows)
            clip = audio.read_windows(path, info, starts)
        except (TaggerError, OSError):
            continue  # not audio, too short, unreadable
        if not audio.is_silent(clip.windows):
            names.append(str(path))
            out.append(model.window_probs(clip))
    return names, out


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
    ap.add_argument("--step", default="0,2", help="windows heard at a time after the first (0: the rest at once)")
    ap.add_argument("--stop", default="0.5,0.6,0.7,0.8,0.9,0.95")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--unlabelled", type=Path, default=None, metavar="DIR",
                    help="agreement with hearing everything on the audio under DIR (the shipped head)")
    ap.add_argument("--model", default="gtzan-musicnn-logreg", help="with --unlabelled: the model to run")
    ap.add_argument("--windows", type=int, default=10, help="with --unlabelled: windows planned per track")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    settings = [(int(f), int(st), float(t)) for f in args.first.split(",") for st in args.step.split(",")
                for t in args.stop.split(",")]
    if args.unlabelled:
        names, probs = unlabelled_window_probs(args.unlabelled, args.model, args.windows)
        rows = [agreement(probs, f, t, st) for f, st, t in settings]
        if args.json:
            print(json.dumps({"model": args.model, "root": str(args.unlabelled), "tracks": len(names),
                              "rows": rows}, indent=1))
            return 0
        print(f"{args.model} on {len(names)} files under {args.unlabelled}: "
              f"{np.mean([len(p) for p in probs]):.2f} windows each")
        print(f"{'first':>5} {'step':>4} {'stop':>5} {'agree':>6} {'windows':>8} {'early':>6}")
        for r in rows:
            print(f"{r['first']:>5} {r['step']:>4} {r['stop']:>5} {r['agreement']:>6.3f} "
                  f"{r['mean_windows']:>8.2f} {r['stopped_early']:>6.2f}")
        return 0
    spec = transfer.HEADS[args.head]
    items, emb, _, _ = transfer._load(args, taps=(spec.tap,), log=None)
    probs, y, labels = out_of_fold_patch_probs(spec, items, emb, args.folds)
    rows = [progressive_scores(probs, y, labels, 10 ** 6, 0.0) | {"first": "all", "step": "-", "stop": "-"}]
    for first in sorted({f for f, _, _ in settings}):
        rows.append(progressive_scores(probs, y, labels, first, 0.0) | {"step": "-", "stop": "always"})
    rows += [progressive_scores(probs, y, labels, f, t, st) for f, st, t in settings]
    if args.json:
        print(json.dumps({"head": args.head, "tracks": len(items), "folds": args.folds, "rows": rows}, indent=1))
        return 0
    print(f"{args.head}: {len(items)} tracks, grouped {args.folds}-fold CV (track level)")
    print(f"{'first':>5} {'step':>4} {'stop':>6} {'accuracy':>9} {'macro-F1':>9} {'windows':>8} {'early':>6}")
    for r in rows:
        print(f"{r['first']!s:>5} {r['step']!s:>4} {r['stop']!s:>6} {r['accuracy']:>9.3f} {r['macro_f1']:>9.3f} "
              f"{r['mean_windows']:>8.2f} {r['stopped_early']:>6.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
