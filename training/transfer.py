"""Genre heads on musicnn-msd's frozen embeddings: cache, grouped CV, ship.

``python -m training.transfer embed``  every track of a dataset → its musicnn
    patch embeddings at every tap, cached as one ``.npz`` per track under
    ``cache/musicnn/`` (decoded through ``tagger.audio``, cut with
    ``features.split_windows`` at 22050 Hz as inference cuts a 30 s clip, then
    ``features.musicnn_window_patches``: one 187-frame patch per window)
``python -m training.transfer cv [--heads A,B]``  grouped CV of each head
    config (the folds of ``training.experiments.grouped_folds``, the ones every
    other model of ``training`` is scored on); writes ``runs/transfer/cv.json``
``python -m training.transfer train --head NAME --out DIR``  fits one head on
    every track and writes the artifact (head file + ``card.json``; the musicnn
    weights stay in their own artifact)

Heads (``HEADS``): logistic regression on a tap's mean embedding or on each
patch (track = mean of patch probabilities), a small Keras MLP on patches, and
a Conv1D+BiLSTM+attention head over the mid end's frame sequence of each patch.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import dataclass, asdict
from pathlib import Path

import numpy as np

from tagger import features
from tagger.models.transfer import TAPS, MusicnnFrontEnd, track_probs
from training import cache, datasets, metrics

ROOT = Path(__file__).resolve().parent.parent
CACHE_DIR = ROOT / "cache" / "musicnn"
RUNS = ROOT / "runs" / "transfer"
BASE = "musicnn-msd"
MIDEND_POOL = 4
EMBED_VERSION = 1


@dataclass(frozen=True)
class HeadSpec:
    """One head configuration: what it reads, how it pools, what it is."""

    tap: str
    pool: str  # "embedding" (track = mean embedding) or "probs" (track = mean of patch probabilities)
    model: str  # "logreg", "mlp" or "seq"
    c: float = 1.0  # logreg inverse regularisation
    balanced: bool = True  # class weights n / (k * count): blues and jazz are 2/3 of the data
    epochs: int = 30  # Keras heads: fixed epochs (no tracks to spare for early stopping)

    @property
    def head_type(self) -> str:
        return "sklearn" if self.model == "logreg" else "keras"


HEADS = {
    "lr-pen-emb": HeadSpec("penultimate", "embedding", "logreg", 1.0),
    "lr-pen-emb-c0.1": HeadSpec("penultimate", "embedding", "logreg", 0.1),
    "lr-pen-emb-c10": HeadSpec("penultimate", "embedding", "logreg", 10.0),
    "lr-pen-emb-unbal": HeadSpec("penultimate", "embedding", "logreg", 1.0, balanced=False),
    "lr-pen-probs": HeadSpec("penultimate", "probs", "logreg", 1.0),
    "lr-pooled-emb": HeadSpec("pooled", "embedding", "logreg", 1.0),
    "lr-pooled-emb-c0.1": HeadSpec("pooled", "embedding", "logreg", 0.1),
    "lr-pooled-probs": HeadSpec("pooled", "probs", "logreg", 1.0),
    "lr-tags-emb": HeadSpec("tags", "embedding", "logreg", 1.0),
    "mlp-pen-probs": HeadSpec("penultimate", "probs", "mlp", epochs=30),
    "mlp-pooled-probs": HeadSpec("pooled", "probs", "mlp", epochs=30),
    "seq-midend-probs": HeadSpec("midend", "probs", "seq", epochs=15),
}


# ---------------------------------------------------------------- embeddings

def embed_key(path: str | Path, base_version: str) -> str:
    ident = json.dumps([cache.cache_key(path), BASE, base_version, MIDEND_POOL, EMBED_VERSION,
                        features.MUSICNN_PARAMS["version"]])
    return hashlib.sha1(ident.encode()).hexdigest()


def track_patches(path: str | Path) -> np.ndarray:
    """A whole track's musicnn patches ``(n_windows, 187, 96)``: the 22050 Hz
    ``split_windows`` windows inference decodes from a 30 s clip, one patch each."""
    y = cache.decode_track(path, features.SR)
    windows = features.split_windows(y)
    if not windows:
        raise ValueError("track shorter than one window")
    return np.concatenate([features.musicnn_window_patches(w, features.SR) for w in windows])


def embed_items(items, front: MusicnnFrontEnd, cache_dir: Path = CACHE_DIR, log=print) -> dict[str, dict[str, np.ndarray]]:
    """``{track_id: {tap: (n_patches, ...)}}`` for every item, from the cache or computed and stored.

    ``midend`` is stored as float16 (it is 46 × 753 per patch); the other taps as float32.
    A cached file that lacks one of ``front.taps`` is computed again.
    """
    out = {}
    t0 = time.time()
    for i, it in enumerate(items):
        key = embed_key(it.path, front.base.version)
        f = Path(cache_dir) / key[:2] / f"{key}.npz"
        cached = None
        if f.is_file():
            with np.load(f) as z:
                cached = {t: z[t] for t in z.files}
        if cached is not None and set(front.taps) <= set(cached):
            out[it.track_id] = cached
        else:
            emb = front.patch_embeddings(track_patches(it.path))
            if "midend" in emb:
                emb["midend"] = emb["midend"].astype(np.float16)
            f.parent.mkdir(parents=True, exist_ok=True)
            tmp = f.with_suffix(".tmp.npz")
            np.savez(tmp, **emb)
            tmp.replace(f)  # atomic: a killed run never leaves half a file
            out[it.track_id] = emb
        if log and (i + 1) % 20 == 0:
            log(f"embeddings: {i + 1}/{len(items)} ({time.time() - t0:.0f} s)")
    return out


# ---------------------------------------------------------------- heads

def class_weights(y: np.ndarray, n_classes: int) -> np.ndarray:
    """Balanced weights ``n / (k * count)`` per class; classes absent from ``y`` get 0."""
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    w = np.zeros(n_classes)
    present = counts > 0
    w[present] = len(y) / (present.sum() * counts[present])
    return w


def _inputs(spec: HeadSpec, per_track: list[np.ndarray], y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Training rows: one per track (mean embedding) or one per patch (the track's label)."""
    if spec.pool == "embedding":
        return np.stack([e.mean(axis=0) for e in per_track]).astype(np.float32), y
    return (np.concatenate(per_track).astype(np.float32),
            np.repeat(y, [len(e) for e in per_track]))


def keras_head(spec: HeadSpec, x: np.ndarray, n_classes: int):
    """An unfitted Keras head on inputs shaped like ``x[0]``; it normalises its own input
    (feature means and variances of ``x``)."""
    import keras
    from keras import layers

    from tagger.models.layers import AttentionPooling

    inp = keras.Input(shape=x.shape[1:], name=spec.tap)
    norm = layers.Normalization(axis=-1, name="normalise")
    norm.adapt(x.reshape(-1, x.shape[-1]))
    h = norm(inp)
    if spec.model == "mlp":
        h = layers.Dropout(0.2)(h)
        h = layers.Dense(128, activation="relu")(h)
        h = layers.Dropout(0.5)(h)
    elif spec.model == "seq":
        # the CNN+BiLSTM+attention, on the frozen mid end's frame features
        h = layers.Dropout(0.2)(h)
        h = layers.Conv1D(128, 3, padding="same", use_bias=False)(h)
        h = layers.BatchNormalization()(h)
        h = layers.Activation("relu")(h)
        h = layers.MaxPooling1D(2)(h)
        h = layers.Bidirectional(layers.LSTM(64, return_sequences=True), name="bilstm")(h)
        h = AttentionPooling(64, name="attention")(h)
        h = layers.Dropout(0.5)(h)
    else:
        raise ValueError(f"unknown Keras head {spec.model!r}")
    out = layers.Dense(n_classes, activation="softmax", name="genre")(h)
    return keras.Model(inp, out, name=f"{spec.model}_{spec.tap}")


def fit_head(spec: HeadSpec, per_track: list[np.ndarray], y: np.ndarray, n_classes: int, seed: int = 0):
    """Fit a head on tracks' patch embeddings (``per_track[i]`` ``(n_patches, ...)``, label ``y[i]``)."""
    x, yy = _inputs(spec, per_track, y)
    if spec.model == "logreg":
        import warnings

        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import StandardScaler

        lr = LogisticRegression(C=spec.c, class_weight="balanced" if spec.balanced else None,
                                max_iter=3000, random_state=seed)
        pipe = Pipeline([("scale", StandardScaler()), ("model", lr)])
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*max_iter.*")
            pipe.fit(x.reshape(len(x), -1), yy)
        return pipe
    import keras

    keras.utils.set_random_seed(seed)
    model = keras_head(spec, x, n_classes)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    w = class_weights(yy, n_classes) if spec.balanced else np.ones(n_classes)
    model.fit(x, yy, sample_weight=w[yy].astype(np.float32), epochs=spec.epochs, batch_size=32,
              shuffle=True, verbose=0)
    return model


def predict_tracks(spec: HeadSpec, head, per_track: list[np.ndarray], n_classes: int) -> np.ndarray:
    """Track probabilities ``(len(per_track), n_classes)``: the inference code path
    (``tagger.models.transfer.track_probs``)."""
    per_track = [e.astype(np.float32) for e in per_track]
    if spec.head_type == "sklearn" and per_track and per_track[0].ndim > 2:
        per_track = [e.reshape(len(e), -1) for e in per_track]
    return track_probs(head, spec.head_type, spec.pool, per_track, n_classes)


def cross_validate(spec: HeadSpec, items, emb, n_folds: int = 5, seed: int = 0, log=print) -> dict:
    """Grouped CV with the training package's folds; scores pool the out-of-fold tracks."""
    from training.experiments import _fold_summary, grouped_folds

    labels = datasets.labels_of(items)
    y = np.array([labels.index(it.genre) for it in items])
    per_track = [emb[it.track_id][spec.tap] for it in items]
    probs = np.zeros((len(items), len(labels)))
    per_fold = []
    t0 = time.time()
    for k, (tr, te) in enumerate(grouped_folds(items, n_folds, seed)):
        head = fit_head(spec, [per_track[i] for i in tr], y[tr], len(labels), seed + k)
        probs[te] = predict_tracks(spec, head, [per_track[i] for i in te], len(labels))
        per_fold.append(metrics.scores([labels[v] for v in y[te]], [labels[v] for v in probs[te].argmax(1)], labels))
        if spec.head_type == "keras":
            import keras

            keras.backend.clear_session()
    pred = [labels[v] for v in probs.argmax(1)]
    res = {"track": metrics.scores([it.genre for it in items], pred, labels), **_fold_summary(per_fold),
           "seconds": round(time.time() - t0, 1), "spec": asdict(spec),
           "predictions": {it.track_id: p for it, p in zip(items, pred)}}
    log(f"{spec}: accuracy {res['track']['accuracy']} macro-F1 {res['track']['macro_f1']} "
        f"({res['seconds']} s)")
    return res


# ---------------------------------------------------------------- commands

def _load(args, taps=TAPS, log=print):
    """The dataset's items and their embeddings. ``taps`` are the layers the caller reads;
    the cache always gets every tap (one forward pass gives them all), so that a later
    run reading other taps finds them."""
    from tagger.models import registry

    items = datasets.load(args.dataset, args.root, None if args.split == "all" else args.split, args.group_size)
    if args.limit:
        items = items[: args.limit]
    base = registry.find(BASE)
    front = MusicnnFrontEnd(base, tuple(dict.fromkeys((*taps, *TAPS))), MIDEND_POOL)
    from tagger.errors import TaggerError

    kept, emb = [], {}
    t0 = time.time()
    for it in items:
        try:
            emb.update(embed_items([it], front, Path(args.cache_dir), log=None))
            kept.append(it)
        except (TaggerError, ValueError, OSError) as exc:
            log(f"skipped {it.track_id}: {exc}")
        if log and len(kept) % 20 == 0:
            log(f"embeddings: {len(kept)}/{len(items)} ({time.time() - t0:.0f} s)")
    return kept, emb, base, front


def run_embed(args, log=print) -> None:
    t0 = time.time()
    items, _, _, _ = _load(args, log=log)
    log(f"{len(items)} tracks embedded into {args.cache_dir} in {time.time() - t0:.0f} s")


def run_cv(args, log=print) -> dict:
    items, emb, _, _ = _load(args, log=log)
    out = Path(args.out or RUNS)
    out.mkdir(parents=True, exist_ok=True)
    doc_path = out / "cv.json"
    doc = json.loads(doc_path.read_text()) if doc_path.is_file() else {}
    names = args.heads.split(",") if args.heads else list(HEADS)
    for name in names:
        res = cross_validate(HEADS[name], items, emb, args.folds, args.seed, log)
        res.update(folds=args.folds, group_size=args.group_size, dataset=args.dataset,
                   command="python -m training.transfer " + " ".join(sys.argv[1:]))
        doc[name] = res
        doc_path.write_text(json.dumps(doc, indent=1))
    log("\n" + summary_table(doc))
    return doc


def summary_table(doc: dict) -> str:
    rows = ["| head | tap | pooling | accuracy | macro-F1 | fold macro-F1 mean ± std |", "|---|---|---|---|---|---|"]
    for name, r in sorted(doc.items(), key=lambda kv: -kv[1]["track"]["macro_f1"]):
        s = r["spec"]
        m, sd = r["macro_f1_mean_std"]
        rows.append(f"| {name} | {s['tap']} | {s['pool']} | {r['track']['accuracy']:.3f} | "
                    f"{r['track']['macro_f1']:.3f} | {m:.3f} ± {sd:.3f} |")
    return "\n".join(rows)


def run_train(args, log=print) -> dict:
    """Fit ``args.head`` on every track and write the artifact: head file + card."""
    import joblib

    from training.card import command_line, inference_ms_per_track, write_card
    from training.experiments import SAMPLE_NOTE, _brief

    spec = HEADS[args.head]
    items, emb, base, _ = _load(args, log=log)
    labels = datasets.labels_of(items)
    y = np.array([labels.index(it.genre) for it in items])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    head = fit_head(spec, [emb[it.track_id][spec.tap] for it in items], y, len(labels), args.seed)
    train_time = time.time() - t0
    if spec.head_type == "sklearn":
        file = "head.joblib"
        joblib.dump(head, out / file, compress=3)
    else:
        file = "head.keras"
        head.save(out / file)
    metric_doc: dict = {"sample_note": SAMPLE_NOTE if args.dataset == "gtzan" else ""}
    cv_path = Path(args.cv_json) if args.cv_json else None
    if cv_path and cv_path.is_file():
        cv = json.loads(cv_path.read_text())
        if args.head in cv:
            r = cv[args.head]
            metric_doc["grouped_cv"] = {
                "folds": r["folds"], "grouping": f"StratifiedGroupKFold, groups = runs of {r['group_size']} "
                "consecutive ids (training.experiments.grouped_folds, seed 0: the folds of every other model)",
                "track": _brief(r["track"]), "fold_macro_f1_mean_std": r["macro_f1_mean_std"],
                "fold_accuracy_mean_std": r["accuracy_mean_std"], "seconds": r["seconds"], "command": r["command"],
                "selection_note": f"chosen by pooled macro-F1 among {len(cv)} head configurations scored on "
                                  "these same folds, so this figure is mildly optimistic",
            }
            metric_doc["heads_compared"] = {
                n: {"accuracy": v["track"]["accuracy"], "macro_f1": v["track"]["macro_f1"], **v["spec"]}
                for n, v in cv.items()}
            metrics.write(r["track"], out, "cv_confusion", f"{args.name}: grouped {r['folds']}-fold CV, track level")
    metric_doc["baselines_same_folds"] = {
        "gtzan-logreg (MFCC stats)": {"accuracy": 0.7385, "macro_f1": 0.5672},
        "musicnn-msd fixed genre head (never trained on GTZAN)": {"accuracy": 0.628, "macro_f1": 0.374},
    }
    card = dict(
        name=args.name, version=args.version, kind="musicnn_head", labels=labels, file=file,
        features=base.features, metrics=metric_doc,
        frontend={"model": base.name, "version": base.version, "tap": spec.tap, "midend_pool": MIDEND_POOL,
                  "frozen": True, "note": "weights read from the musicnn-msd artifact through "
                                          "tagger.models.registry.find, not copied here"},
        head={"type": spec.head_type, "pool": spec.pool, **asdict(spec),
              "description": _describe(spec)},
        data=_data_doc(args, items), split=f"trained on {args.split} ({len(items)} tracks)",
        command=command_line().replace("python -m training ", "python -m training.transfer "),
        training_time_s=round(train_time, 2), seed=args.seed,
        licence="the head: this project's; the front end: musicnn-msd's ISC licence (its artifact's LICENSE)",
    )
    write_card(out, **card)
    try:
        card["inference_ms_per_track"] = inference_ms_per_track(args.name, out, [it.path for it in items[:11]])
    except Exception as exc:  # noqa: BLE001  timing is informative; the model is already saved
        card["inference_ms_per_track"] = {"error": str(exc)}
    write_card(out, **card)
    log(f"wrote {out}: {json.dumps(card['inference_ms_per_track'])}")
    return card


def _describe(spec: HeadSpec) -> str:
    what = {"logreg": f"StandardScaler + LogisticRegression(C={spec.c}, lbfgs, "
                      f"class_weight={'balanced' if spec.balanced else None})",
            "mlp": f"Normalization, Dropout 0.2, Dense 128 ReLU, Dropout 0.5, softmax; Adam 1e-3, batch 32, "
                   f"{spec.epochs} epochs, balanced class weights",
            "seq": f"Normalization, Conv1D 128x3 + BN + ReLU + pool 2, BiLSTM 64, attention pooling, Dropout 0.5, "
                   f"softmax; Adam 1e-3, batch 32, {spec.epochs} epochs, balanced class weights"}[spec.model]
    pool = ("on the mean of the track's patch embeddings" if spec.pool == "embedding"
            else "on every patch, track probabilities = mean over its patches")
    return f"{what}, {pool}, tap {spec.tap}"


def _data_doc(args, items) -> dict:
    counts: dict[str, int] = {}
    for it in items:
        counts[it.genre] = counts.get(it.genre, 0) + 1
    return {"dataset": args.dataset, "root": str(args.root or "default"), "tracks": len(items),
            "per_genre": counts, "group_size": args.group_size}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.transfer", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("embed", "cv", "train"):
        p = sub.add_parser(name)
        p.add_argument("--dataset", default="gtzan", choices=["gtzan", "fma", "folder", "csv"])
        p.add_argument("--root", default=None)
        p.add_argument("--split", default="all")
        p.add_argument("--group-size", type=int, default=5)
        p.add_argument("--cache-dir", default=str(CACHE_DIR))
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--limit", type=int, default=0, help="first N tracks only (smoke runs)")
        p.add_argument("--out", default=None)
        if name == "cv":
            p.add_argument("--heads", default="", help=f"comma-separated, of: {', '.join(HEADS)}")
            p.add_argument("--folds", type=int, default=5)
        if name == "train":
            p.add_argument("--head", required=True, choices=list(HEADS))
            p.add_argument("--name", required=True)
            p.add_argument("--version", default="1")
            p.add_argument("--cv-json", default=str(RUNS / "cv.json"))
    args = ap.parse_args(argv)
    {"embed": run_embed, "cv": run_cv, "train": run_train}[args.cmd](args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
