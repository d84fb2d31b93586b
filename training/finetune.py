"""musicnn-msd as the front end of the Conv1D+BiLSTM+attention head: frozen, then fine-tuned.

``python -m training.finetune cv [--folds 5] [--epochs 4] [--lr 1e-5]``  grouped CV
    (the folds of ``training.experiments.grouped_folds``), both stages on the same
    folds; writes ``runs/finetune/cv.json``

Per fold:

stage 1, frozen      the ``seq-midend-probs`` head of ``training.transfer`` fitted on the
                     mid-end embeddings of the training tracks' patches (computed here
                     from the same patches, not read from ``cache/musicnn``; the musicnn
                     weights are not touched)
stage 2, fine-tuned  musicnn up to its ``midend`` layer → AveragePooling1D(4) → that
                     head, one Keras model on log-mel patches; every musicnn layer
                     but batch norm trainable (batch norm frozen and in inference
                     mode), Adam at a low rate, balanced sample weights, a few epochs

Both stages are scored through the same model on the held-out tracks' patches;
a track's probabilities are the mean over its patches, as at inference.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from tagger import features
from training import cache, datasets, metrics, transfer

ROOT = Path(__file__).resolve().parent.parent
PATCH_DIR = ROOT / "cache" / "musicnn_patches"
RUNS = ROOT / "runs" / "finetune"
HEAD = "seq-midend-probs"
#: layers whose relative weight change is reported (one front-end and one mid-end convolution)
WATCHED = ("timbral_38", "midend_1")


def cached_patches(path: str | Path, patch_dir: Path = PATCH_DIR) -> np.ndarray:
    """``transfer.track_patches(path)`` ``(n, 187, 96)`` float32, cached as ``.npy`` under ``patch_dir``."""
    ident = json.dumps([cache.cache_key(path), features.MUSICNN_PARAMS["version"], "patches"])
    key = hashlib.sha1(ident.encode()).hexdigest()
    f = Path(patch_dir) / key[:2] / f"{key}.npy"
    if f.is_file():
        return np.load(f)
    x = transfer.track_patches(path).astype(np.float32)
    f.parent.mkdir(parents=True, exist_ok=True)
    tmp = f.with_suffix(".tmp.npy")
    np.save(tmp, x)
    tmp.replace(f)
    return x


def build(base, head):
    """``(model, midend)``: a fresh musicnn-msd (pretrained weights) up to ``midend``, pooled by
    ``transfer.MIDEND_POOL``, feeding ``head``; ``midend`` is the musicnn part, frozen."""
    import keras
    from keras import layers

    from tagger.models.pretrained import MusicnnModel

    net = MusicnnModel(base).network  # built from the card, weights loaded, as MusicnnFrontEnd does
    midend = keras.Model(net.input, net.get_layer("midend").output, name="musicnn_midend")
    midend.trainable = False
    inp = keras.Input(shape=midend.input.shape[1:], name="logc_mel")
    h = midend(inp, training=False)  # batch norm always uses its stored statistics
    h = layers.AveragePooling1D(transfer.MIDEND_POOL, name="midend_pool")(h)
    return keras.Model(inp, head(h), name="musicnn_seq"), midend


def unfreeze(midend) -> None:
    """Every musicnn layer trainable except batch norm (frozen, so it also stays in inference mode)."""
    from keras import layers

    midend.trainable = True
    for layer in midend.layers:
        if isinstance(layer, layers.BatchNormalization):
            layer.trainable = False


def kernels(midend) -> dict[str, np.ndarray]:
    return {n: np.array(midend.get_layer(n).kernel.numpy()) for n in WATCHED}


def change(before: dict[str, np.ndarray], midend) -> dict[str, float]:
    """Relative change ``|W - W0| / |W0|`` of each watched kernel."""
    return {n: float(np.linalg.norm(w - before[n]) / np.linalg.norm(before[n])) for n, w in kernels(midend).items()}


def predict_tracks(model, per_track: list[np.ndarray]) -> np.ndarray:
    """Track probabilities: the mean of the model's patch probabilities over each track's patches."""
    probs = model.predict(np.concatenate(per_track), batch_size=64, verbose=0)
    bounds = np.cumsum([0] + [len(p) for p in per_track])
    return np.stack([probs[a:b].mean(axis=0) for a, b in zip(bounds[:-1], bounds[1:])]).astype(np.float64)


def run_fold(base, patches_tr, emb_tr, y_tr, patches_te, n_classes: int, epochs: int, lr: float,
             head_epochs: int | None = None, seed: int = 0, log=print) -> dict:
    """Both stages on one split; returns the held-out tracks' probabilities of each stage
    (``frozen``, ``finetuned``), the watched kernels' relative change after each and the seconds taken."""
    import keras

    spec = transfer.HEADS[HEAD]
    if head_epochs is not None:
        spec = replace(spec, epochs=head_epochs)
    t0 = time.time()
    head = transfer.fit_head(spec, emb_tr, y_tr, n_classes, seed)
    model, midend = build(base, head)
    w0 = kernels(midend)
    out = {"frozen": predict_tracks(model, patches_te), "change_frozen": change(w0, midend),
           "seconds_frozen": round(time.time() - t0, 1)}
    log(f"  frozen: head fitted, held-out tracks scored ({out['seconds_frozen']} s)")

    t1 = time.time()
    unfreeze(midend)
    x = np.concatenate(patches_tr)
    y = np.repeat(y_tr, [len(p) for p in patches_tr])
    w = transfer.class_weights(y, n_classes)[y].astype(np.float32)
    keras.utils.set_random_seed(seed)
    model.compile(optimizer=keras.optimizers.Adam(lr), loss="sparse_categorical_crossentropy")
    progress = keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: log(
        f"  fine-tune epoch {e + 1}/{epochs}: loss {logs['loss']:.4f} ({time.time() - t1:.0f} s)"))
    model.fit(x, y, sample_weight=w, epochs=epochs, batch_size=32, shuffle=True, verbose=0, callbacks=[progress])
    out.update(finetuned=predict_tracks(model, patches_te), change_finetuned=change(w0, midend),
               seconds_finetuned=round(time.time() - t1, 1), trainable_weights=len(model.trainable_weights))
    keras.backend.clear_session()
    return out


def cross_validate(items, midend, patches, base, n_folds: int = 5, epochs: int = 4, lr: float = 1e-5,
                   head_epochs: int | None = None, seed: int = 0, log=print, on_fold=None) -> dict:
    """Grouped CV of both stages on the same folds; scores pool the out-of-fold tracks."""
    from training.experiments import grouped_folds

    labels = datasets.labels_of(items)
    y = np.array([labels.index(it.genre) for it in items])
    mid = [midend[it.track_id] for it in items]
    pats = [patches[it.track_id] for it in items]
    stages = ("frozen", "finetuned")
    probs = {s: np.zeros((len(items), len(labels))) for s in stages}
    per_fold: dict[str, list] = {s: [] for s in stages}
    folds, done = grouped_folds(items, n_folds, seed), []
    t0 = time.time()
    for k, (tr, te) in enumerate(folds):
        log(f"fold {k + 1}/{n_folds}: {len(tr)} training tracks ({sum(len(pats[i]) for i in tr)} patches), "
            f"{len(te)} held out")
        r = run_fold(base, [pats[i] for i in tr], [mid[i] for i in tr], y[tr], [pats[i] for i in te],
                     len(labels), epochs, lr, head_epochs, seed + k, log)
        for s in stages:
            probs[s][te] = r[s]
            per_fold[s].append(metrics.scores([labels[v] for v in y[te]], [labels[v] for v in r[s].argmax(1)], labels))
            log(f"  fold {k + 1} {s}: accuracy {per_fold[s][-1]['accuracy']} macro-F1 {per_fold[s][-1]['macro_f1']}")
        done.append({"fold": k, "n_test": len(te), **{n: r[n] for n in r if n not in stages}})
        if on_fold:
            on_fold(_result(items, labels, probs, per_fold, done, te_all=np.concatenate([f[1] for f in folds[: k + 1]])))
    res = _result(items, labels, probs, per_fold, done)
    res["seconds"] = round(time.time() - t0, 1)
    return res


def _result(items, labels, probs, per_fold, done, te_all=None) -> dict:
    """Pooled scores over the tracks scored so far (all of them once every fold is done)."""
    from training.experiments import _fold_summary

    idx = np.arange(len(items)) if te_all is None else np.sort(te_all)
    res: dict = {"folds_done": done, "n_tracks_scored": len(idx)}
    for s, p in probs.items():
        pred = [labels[v] for v in p[idx].argmax(1)]
        res[s] = {"track": metrics.scores([items[i].genre for i in idx], pred, labels), **_fold_summary(per_fold[s]),
                  "predictions": {items[i].track_id: q for i, q in zip(idx, pred)}}
    return res


def _load(args, log=print):
    """``(items, patches, midend, base)``: every track's musicnn patches (cached; the first
    ``--patches-per-track`` when set) and their pooled mid-end embeddings, computed here from
    those same patches by the network stage 2 starts from."""
    from tagger.errors import TaggerError
    from tagger.models import registry
    from tagger.models.transfer import MusicnnFrontEnd

    items = datasets.load(args.dataset, args.root, None if args.split == "all" else args.split, args.group_size)
    if args.limit:
        items = items[: args.limit]
    if not items:
        raise SystemExit(f"no audio found for dataset {args.dataset!r}")
    base = registry.find(transfer.BASE)
    front = MusicnnFrontEnd(base, ("midend",), transfer.MIDEND_POOL)
    kept, patches, midend, t0 = [], {}, {}, time.time()
    for it in items:
        try:
            p = cached_patches(it.path, Path(args.patch_dir))
        except (TaggerError, ValueError, OSError) as exc:
            log(f"skipped {it.track_id}: {exc}")
            continue
        patches[it.track_id] = p[: args.patches_per_track] if args.patches_per_track else p
        midend[it.track_id] = front.patch_embeddings(patches[it.track_id])["midend"]
        kept.append(it)
        if len(kept) % 50 == 0:
            log(f"patches and mid-end embeddings: {len(kept)}/{len(items)} ({time.time() - t0:.0f} s)")
    return kept, patches, midend, base


def run_cv(args, log=print) -> dict:
    items, patches, midend, base = _load(args, log)
    out = Path(args.out or RUNS)
    out.mkdir(parents=True, exist_ok=True)
    spec = transfer.HEADS[HEAD]
    settings = {"dataset": args.dataset, "folds": args.folds, "group_size": args.group_size, "seed": args.seed,
                "epochs": args.epochs, "lr": args.lr, "batch_size": 32, "threads": args.threads,
                "head": HEAD, "head_spec": asdict(replace(spec, epochs=args.head_epochs or spec.epochs)),
                "patches_per_track": args.patches_per_track or "all", "tracks": len(items),
                "command": args.command_line}

    def save(doc: dict) -> None:
        (out / "cv.json").write_text(json.dumps({**settings, **doc}, indent=1))

    res = cross_validate(items, midend, patches, base, args.folds, args.epochs, args.lr, args.head_epochs or None,
                         args.seed, log, on_fold=save)
    save(res)
    for s in ("frozen", "finetuned"):
        t = res[s]["track"]
        log(f"{s}: accuracy {t['accuracy']} macro-F1 {t['macro_f1']} "
            f"per class {json.dumps({c: v['f1'] for c, v in t['per_class'].items()})}")
    log(f"wrote {out / 'cv.json'} ({res['seconds']} s)")
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.finetune", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("cv", help="grouped CV of the frozen and the fine-tuned stage")
    p.add_argument("--dataset", default="gtzan", choices=["gtzan", "fma", "folder", "csv"])
    p.add_argument("--root", default=None)
    p.add_argument("--split", default="all")
    p.add_argument("--group-size", type=int, default=5)
    p.add_argument("--patch-dir", default=str(PATCH_DIR), help="cached log-mel patches")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=0, help="first N tracks only (smoke runs)")
    p.add_argument("--patches-per-track", type=int, default=0, help="first N patches of each track (0: all)")
    p.add_argument("--out", default=None)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--epochs", type=int, default=4, help="fine-tuning epochs per fold")
    p.add_argument("--head-epochs", type=int, default=0, help=f"stage-1 epochs (0: {HEAD}'s own)")
    p.add_argument("--lr", type=float, default=1e-5, help="Adam rate of the fine-tuning stage (whole model)")
    p.add_argument("--threads", type=int, default=1, help="TensorFlow/BLAS threads (0: their defaults)")
    args = ap.parse_args(argv)
    args.command_line = "python -m training.finetune " + " ".join(sys.argv[1:] if argv is None else argv)
    from tagger.models import runtime

    runtime.set_threads(args.threads)
    run_cv(args, log=lambda m: print(m, flush=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
