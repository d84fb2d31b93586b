"""One function per experiment; ``training/__main__.py`` maps commands onto them.

Every experiment is seeded, splits by track (grouped where the data has
groups), and writes its model, ``card.json`` and plots to one output folder.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from tagger import features
from training import cache, datasets, metrics
from training import ml as mlm

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_NOTE = (
    "GTZAN here is a partial copy: 218 clips, blues 69 and jazz 73, the other eight genres 8-10 clips each "
    "(ids 00000-00009 only). A small sample: treat every figure as a smoke test with wide error bars, "
    "not a GTZAN benchmark."
)
FAULT_NOTE = (
    "Fault-filtered train.txt -> valid.txt on this copy: train has no classical or country, valid has no "
    "hiphop, pop, reggae or rock; macro averages cover only the classes valid contains."
)


def load(dataset: str, root=None, split=None, group_size: int = 5, cache_dir=cache.DEFAULT_DIR, log=print):
    items = datasets.load(dataset, root, split, group_size)
    if not items:
        raise SystemExit(f"no audio found for dataset {dataset!r} split {split!r}")
    kept, feats, errors = cache.get_many(items, cache_dir, log=log)
    for tid, err in errors.items():
        log(f"skipped {tid}: {err}")
    return kept, feats, errors


def grouped_folds(items, n_folds: int, seed: int):
    """StratifiedGroupKFold over tracks: no group on both sides of any fold."""
    from sklearn.model_selection import StratifiedGroupKFold

    y = [it.genre for it in items]
    g = [it.group for it in items]
    cv = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    return [(tr, te) for tr, te in cv.split(np.zeros(len(items)), y, g)]


def _fold_summary(per_fold: list[dict]) -> dict:
    f1 = [f["macro_f1"] for f in per_fold if f["macro_f1"] is not None]
    acc = [f["accuracy"] for f in per_fold]
    return {
        "fold_accuracy": acc,
        "fold_macro_f1": f1,
        "accuracy_mean_std": [round(float(np.mean(acc)), 4), round(float(np.std(acc)), 4)],
        "macro_f1_mean_std": [round(float(np.mean(f1)), 4), round(float(np.std(f1)), 4)],
    }


# ---------------------------------------------------------------- classic ML

def cv_ml(model: str, items, feats, n_folds: int = 5, seed: int = 0) -> dict:
    """Grouped CV; scores pool the out-of-fold predictions of every track."""
    labels = datasets.labels_of(items)
    x = np.stack([feats[it.track_id].stats for it in items])
    pred = [None] * len(items)
    per_fold = []
    for tr, te in grouped_folds(items, n_folds, seed):
        pipe = mlm.fit(model, x[tr], [items[i].genre for i in tr], seed)
        p = mlm.predict_proba(pipe, x[te], labels)
        fold_pred = [labels[k] for k in p.argmax(axis=1)]
        for i, lab in zip(te, fold_pred):
            pred[i] = lab
        per_fold.append(metrics.scores([items[i].genre for i in te], fold_pred, labels))
    result = {"track": metrics.scores([it.genre for it in items], pred, labels), **_fold_summary(per_fold)}
    result["predictions"] = {it.track_id: p for it, p in zip(items, pred)}
    return result


def train_valid_ml(model: str, train_items, valid_items, feats, seed: int = 0) -> dict:
    labels = sorted(set(datasets.labels_of(train_items)) | set(datasets.labels_of(valid_items)))
    x = np.stack([feats[it.track_id].stats for it in train_items])
    pipe = mlm.fit(model, x, [it.genre for it in train_items], seed)
    p = mlm.predict_proba(pipe, np.stack([feats[it.track_id].stats for it in valid_items]), labels)
    return {"track": metrics.scores([it.genre for it in valid_items], [labels[k] for k in p.argmax(1)], labels)}


def _prepare(args, log):
    """What every training command starts from: the output folder, the data, the labels."""
    out = Path(args.out or ROOT / "runs" / args.name)
    out.mkdir(parents=True, exist_ok=True)
    items, feats, errors = load(args.dataset, args.root, None if args.split == "all" else args.split,
                                args.group_size, args.cache_dir, log)
    metric_doc: dict = {"sample_note": SAMPLE_NOTE if args.dataset == "gtzan" else ""}
    return out, items, feats, errors, datasets.labels_of(items), metric_doc


def run_ml(args, log=print) -> dict:
    """Train one ML pipeline on ``args.split``, optionally after a grouped CV; write model + card."""
    import joblib

    out, items, feats, errors, labels, metric_doc = _prepare(args, log)
    if args.cv:
        t0 = time.time()
        res = cv_ml(args.model, items, feats, args.cv, args.seed)
        metrics.write(res["track"], out, "cv_confusion", f"{args.name}: grouped {args.cv}-fold CV, track level")
        metric_doc["grouped_cv"] = _cv_card(res, args, time.time() - t0)
        log(f"grouped {args.cv}-fold CV: accuracy {res['track']['accuracy']} macro-F1 {res['track']['macro_f1']}")
    if args.valid_check:
        tr, _, _ = load(args.dataset, args.root, "train", args.group_size, args.cache_dir, log)
        va, _, _ = load(args.dataset, args.root, "valid", args.group_size, args.cache_dir, log)
        res = train_valid_ml(args.model, tr, va, feats, args.seed)
        metrics.write(res["track"], out, "valid_confusion", f"{args.name}: train.txt -> valid.txt")
        metric_doc["fault_filtered_valid"] = {"note": FAULT_NOTE, **_brief(res["track"])}
        log(f"train -> valid: accuracy {res['track']['accuracy']} macro-F1 {res['track']['macro_f1']}")
    t0 = time.time()
    x = np.stack([feats[it.track_id].stats for it in items])
    pipe = mlm.fit(args.model, x, [it.genre for it in items], args.seed)
    train_time = time.time() - t0
    joblib.dump(pipe, out / "model.joblib", compress=3)
    card = dict(
        name=args.name, version=args.version, kind="sklearn_mfcc", labels=labels, file="model.joblib",
        features=features.MFCC_STATS_PARAMS, metrics=metric_doc,
        model={"logreg": "LogisticRegression(C=10, L2, saga)", "knn": "KNeighbors(5, manhattan, distance)",
               "svm": "SVC(rbf, gamma=scale) calibrated with CalibratedClassifierCV(sigmoid)"}[args.model]
        + " after StandardScaler",
        data=_data_doc(args, items, errors), split=f"trained on {args.split} ({len(items)} tracks)",
        command=_command(), training_time_s=round(train_time, 2), seed=args.seed,
    )
    _finish(out, card, items, log, args.timing_tracks)
    return card


# ---------------------------------------------------------------- deep models

def cv_deep(arch: str, items, feats, n_folds: int, epochs: int, seed: int = 0, log=print) -> dict:
    """Grouped CV of the fixed-epoch recipe; track and patch scores pool out-of-fold predictions."""
    from training import deep

    labels = datasets.labels_of(items)
    y = np.array([labels.index(it.genre) for it in items])
    probs_all, owner_all, per_fold = [], [], []
    for k, (tr, te) in enumerate(grouped_folds(items, n_folds, seed)):
        t0 = time.time()
        model, _ = deep.train(arch, [feats[items[i].track_id].logmel for i in tr],
                              [feats[items[i].track_id].patches for i in tr], y[tr], len(labels),
                              epochs=epochs, seed=seed + k, verbose=0)
        probs, owner = deep.predict_patches(model, [feats[items[i].track_id].patches for i in te])
        probs_all.append(probs)
        owner_all.append(te[owner])
        fold = metrics.track_and_patch(probs, owner, [items[i].track_id for i in te],
                                       {it.track_id: it.genre for it in items}, labels)
        per_fold.append(fold["track"])
        log(f"fold {k + 1}/{n_folds}: track accuracy {fold['track']['accuracy']} macro-F1 "
            f"{fold['track']['macro_f1']} ({time.time() - t0:.0f} s)")
        import keras

        keras.backend.clear_session()
    res = metrics.track_and_patch(np.concatenate(probs_all), np.concatenate(owner_all),
                                  [it.track_id for it in items], {it.track_id: it.genre for it in items}, labels)
    return {**res, **_fold_summary(per_fold)}


def run_deep(args, log=print) -> dict:
    """Train a deep model; write ``model.keras`` (optionally ``model.h5``), card and plots."""
    from training import deep

    out, items, feats, errors, labels, metric_doc = _prepare(args, log)
    if args.cv:
        t0 = time.time()
        res = cv_deep(args.arch, items, feats, args.cv, args.cv_epochs or args.epochs, args.seed, log)
        metrics.write(res["track"], out, "cv_confusion", f"{args.name}: grouped {args.cv}-fold CV, track level")
        metric_doc["grouped_cv"] = _cv_card(res, args, time.time() - t0)
        metric_doc["grouped_cv"]["epochs_per_fold"] = args.cv_epochs or args.epochs
        metric_doc["grouped_cv"]["patch"] = _brief(res["patch"])
        log(f"grouped CV: track accuracy {res['track']['accuracy']} macro-F1 {res['track']['macro_f1']}")

    valid = None
    valid_items: list = []
    if args.split == "train" and args.dataset in ("gtzan", "fma"):
        valid_items, vfeats, _ = load(args.dataset, args.root, "valid", args.group_size, args.cache_dir, log)
        feats.update(vfeats)
        labels = sorted(set(labels) | set(datasets.labels_of(valid_items)))
    y = np.array([labels.index(it.genre) for it in items])
    if valid_items:
        vp = [feats[it.track_id].patches for it in valid_items]
        valid = (np.concatenate(vp), np.repeat([labels.index(it.genre) for it in valid_items], [len(p) for p in vp]))
    t0 = time.time()
    model, history = deep.train(args.arch, [feats[it.track_id].logmel for it in items],
                                [feats[it.track_id].patches for it in items], y, len(labels),
                                epochs=args.epochs, seed=args.seed, valid=valid,
                                checkpoint=out / "checkpoint.keras" if valid else None,
                                augment=not args.no_augment)
    train_time = time.time() - t0
    (out / "checkpoint.keras").unlink(missing_ok=True)  # the best weights are restored into `model`
    deep.save_for_inference(model, out / "model.keras")
    if args.export_h5:
        model.save(out / "model.h5", include_optimizer=False)
    (out / "history.json").write_text(json.dumps(history, indent=1))
    _history_png(history, out / "history.png")
    if valid_items:
        probs, owner = deep.predict_patches(model, [feats[it.track_id].patches for it in valid_items])
        vres = metrics.track_and_patch(probs, owner, [it.track_id for it in valid_items],
                                       {it.track_id: it.genre for it in valid_items}, labels)
        metrics.write(vres["track"], out, "valid_confusion", f"{args.name}: valid, track level")
        metric_doc["fault_filtered_valid" if args.dataset == "gtzan" else "valid"] = {
            "note": FAULT_NOTE if args.dataset == "gtzan" else "",
            "track": _brief(vres["track"]), "patch": _brief(vres["patch"])}
        log(f"valid: track accuracy {vres['track']['accuracy']} macro-F1 {vres['track']['macro_f1']}")
    card = dict(
        name=args.name, version=args.version, kind="keras_patches", labels=labels, file="model.keras",
        features=features.LOGMEL_PARAMS, metrics=metric_doc,
        model={"arch": args.arch, "params": int(model.count_params()), "epochs_run": len(history["loss"]),
               "input": "raw log-mel dB patches (batch, 128, 128, 1); per-mel-band normalisation inside the model",
               "augmentation": "on cached log-mel, not audio: random 128-frame crops (time shift), +-2 mel-band "
                               "shift (approximate pitch shift), white noise in mel power at 10-30 dB SNR"
                               + ("" if not args.no_augment else " (disabled)"),
               "training": "Adam 1e-3, batch 32, balanced class weights, 9 crops per track per epoch; "
                           + ("ReduceLROnPlateau(3, 0.5), EarlyStopping(7, restore best), ModelCheckpoint(best) "
                              "on valid loss" if valid else
                              f"fixed {args.epochs} epochs, ReduceLROnPlateau(3, 0.5) on training loss "
                              "(no tracks left for validation)")},
        data=_data_doc(args, items, errors), split=f"trained on {args.split} ({len(items)} tracks)",
        command=_command(), training_time_s=round(train_time, 1), seed=args.seed,
    )
    _finish(out, card, items, log, args.timing_tracks)
    return card


def run_cv(args, log=print) -> dict:
    """Grouped CV only (no final model): for comparing the five models."""
    out = Path(args.out or ROOT / "runs" / f"cv-{args.dataset}-{args.model}-g{args.group_size}")
    out.mkdir(parents=True, exist_ok=True)
    items, feats, _ = load(args.dataset, args.root, None if args.split == "all" else args.split,
                           args.group_size, args.cache_dir, log)
    t0 = time.time()
    if args.model in mlm.MODELS:
        res = cv_ml(args.model, items, feats, args.folds, args.seed)
    else:
        res = cv_deep(args.model, items, feats, args.folds, args.epochs, args.seed, log)
    res["seconds"] = round(time.time() - t0, 1)
    res["folds"] = args.folds
    res["group_size"] = args.group_size
    res["dataset"] = args.dataset
    if args.model not in mlm.MODELS:
        res["epochs_per_fold"] = args.epochs
    res["command"] = _command()
    (out / "cv.json").write_text(json.dumps(res, indent=1))
    metrics.confusion_png(res["track"], out / "cv_confusion.png",
                          f"{args.model} grouped {args.folds}-fold CV (groups of {args.group_size} ids)")
    log(f"{args.model}: grouped {args.folds}-fold CV, groups of {args.group_size}: track accuracy "
        f"{res['track']['accuracy']} macro-F1 {res['track']['macro_f1']} (fold macro-F1 mean/std "
        f"{res['macro_f1_mean_std']}) in {res['seconds']} s")
    return res


def run_features(args, log=print) -> None:
    items, _, errors = load(args.dataset, args.root, None if args.split == "all" else args.split,
                            args.group_size, args.cache_dir, log)
    log(f"{len(items)} tracks cached in {args.cache_dir}, {len(errors)} unreadable")


def run_attach(args, log=print) -> dict:
    """Put the figures of a ``cv`` run (its ``cv.json``) into a model's card."""
    from training.card import write_card

    res = json.loads(Path(args.cv_json).read_text())
    doc = json.loads((Path(args.model_dir) / "card.json").read_text())
    cv_doc = {
        "folds": res["folds"],
        "grouping": f"StratifiedGroupKFold, groups = runs of {res['group_size']} consecutive ids"
        if res.get("dataset") == "gtzan" else "StratifiedGroupKFold by the loader's groups",
        "track": _brief(res["track"]),
        "fold_macro_f1_mean_std": res["macro_f1_mean_std"],
        "fold_accuracy_mean_std": res["accuracy_mean_std"],
        "seconds": res["seconds"],
        "command": res["command"],
    }
    if "patch" in res:
        cv_doc["patch"] = _brief(res["patch"])
    if "epochs_per_fold" in res:
        cv_doc["epochs_per_fold"] = res["epochs_per_fold"]
    doc["metrics"]["grouped_cv"] = cv_doc
    write_card(args.model_dir, **doc)
    metrics.confusion_png(res["track"], Path(args.model_dir) / "cv_confusion.png",
                          f"{doc['name']}: grouped {res['folds']}-fold CV, track level")
    (Path(args.model_dir) / "cv_confusion.json").write_text(json.dumps(res["track"], indent=1))
    log(f"attached {args.cv_json} to {args.model_dir}/card.json")
    return doc


def run_check(args, log=print) -> dict:
    """Score a written model with ``tagger.evaluate`` (the code path of ``tagger evaluate``)
    on a dataset split and record the figures in its card under ``evaluate_<split>``."""
    from tagger.evaluate import evaluate, render_text
    from training.card import write_card

    model_dir = Path(args.model_dir)
    doc = json.loads((model_dir / "card.json").read_text())
    items = datasets.load(args.dataset, args.root, None if args.split == "all" else args.split, args.group_size)
    t0 = time.time()
    res = evaluate([(it.path, it.genre) for it in items], doc["name"], model_dirs=[str(model_dir.parent)])
    log(render_text(res))
    entry = {**_brief(res), "errors": len(res["errors"]), "seconds": round(time.time() - t0, 1),
             "command": _command(), "note": args.note or ""}
    doc["metrics"][f"evaluate_{args.dataset}_{args.split}"] = entry
    write_card(model_dir, **doc)
    return entry


def run_timing(args, log=print) -> dict:
    from training.card import retime

    items = datasets.load(args.dataset, args.root, None if args.split == "all" else args.split, args.group_size)
    rng = np.random.default_rng(args.seed)
    picked = [items[i].path for i in rng.choice(len(items), size=min(args.tracks, len(items)), replace=False)]
    timing = retime(args.model_dir, picked)
    log(json.dumps(timing))
    return timing


# ---------------------------------------------------------------- helpers

def _brief(s: dict) -> dict:
    return {k: s[k] for k in ("n", "accuracy", "macro_precision", "macro_recall", "macro_f1", "per_class")}


def _cv_card(res: dict, args, seconds: float) -> dict:
    return {
        "folds": args.cv,
        "grouping": f"StratifiedGroupKFold, groups = runs of {args.group_size} consecutive ids"
        if args.dataset == "gtzan" else "StratifiedGroupKFold by the loader's groups",
        "track": _brief(res["track"]),
        "fold_macro_f1_mean_std": res["macro_f1_mean_std"],
        "fold_accuracy_mean_std": res["accuracy_mean_std"],
        "seconds": round(seconds, 1),
    }


def _data_doc(args, items, errors) -> dict:
    counts: dict[str, int] = {}
    for it in items:
        counts[it.genre] = counts.get(it.genre, 0) + 1
    return {"dataset": args.dataset, "root": str(args.root or "default"), "tracks": len(items),
            "per_genre": counts, "unreadable": len(errors), "group_size": args.group_size}


def _command() -> str:
    from training.card import command_line

    return command_line()


def _finish(out: Path, card: dict, items, log, timing_tracks: int = 10) -> None:
    from training.card import inference_ms_per_track, write_card

    write_card(out, **card)
    try:
        timing = inference_ms_per_track(card["name"], out, [it.path for it in items[: timing_tracks + 1]])
        card["inference_ms_per_track"] = timing
    except Exception as exc:  # timing is informative; the model is already saved
        card["inference_ms_per_track"] = {"error": str(exc)}
    write_card(out, **card)
    size = sum(f.stat().st_size for f in out.iterdir() if f.is_file()) / 1e6
    log(f"wrote {out} ({size:.1f} MB): {json.dumps(card['inference_ms_per_track'])}")


def _history_png(history: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(8, 3))
    for key in history:
        if "loss" in key and key != "learning_rate":
            ax[0].plot(history[key], label=key)
        elif "acc" in key:
            ax[1].plot(history[key], label=key)
    for a, t in zip(ax, ("loss", "accuracy")):
        a.set_title(t)
        a.set_xlabel("epoch")
        a.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
