"""A student front end distilled from musicnn (#20): first experiment.

    python -m training.distill embed gtzan                    # teacher rows of the shared GTZAN clips
    python -m training.distill embed DIR --name debian        # ... of unlabeled music (Debian soundtracks)
    python -m training.distill train [--epochs 30]            # fit the student, measure it, write runs/distill/

The teacher is what the open-set default reads off every window: musicnn-msd's
penultimate layer (200) and tags (50) and musicnn-mtt's tags (50), the 300
numbers of ``OpenSetModel.window_rows``. The student is a small network of
depthwise-separable convolutions on the same ``(187, 96)`` log-mel patch that
regresses those 300 numbers (the penultimate standardised, mean squared error;
the tags, cross-entropy against the teacher's activations). No labels are used:
any recording can teach it. More windows per track are cut than a scan hears
(20 per GTZAN clip, 30 per soundtrack piece), so windows overlap: that is the
augmentation by time shift.

The split is by track: one of the five grouped GTZAN folds (``training.openset``:
runs of consecutive ids kept together) and every fifth soundtrack piece are held
out; the student never sees their audio. On held-out tracks the shipped decider
is heard progressively (as a scan hears) on the teacher's rows and on the
student's, and the written genre compared: same genre and same written-or-not
is agreement. FLOPs are counted from the layers; speed is the student's LiteRT
export on this machine.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "cache" / "distill"
RUNS = ROOT / "runs" / "distill"
SEED = 2026
PEN, TAGS = 200, 100


def collection_path(name: str) -> Path:
    return CACHE / f"{name}.npz"


def embed(items: list[tuple[str, str, Path]], n_windows: int, log=print) -> dict[str, np.ndarray]:
    """Each track's patches (float16) and the teacher's float32 rows for them."""
    from tagger.models import registry
    from tagger.models.transfer import MusicnnFrontEnd
    from training.openset_embed import track_windows

    msd = MusicnnFrontEnd(registry.find("musicnn-msd"), ("penultimate", "tags"), bfloat16_verified=False)
    mtt = MusicnnFrontEnd(registry.find("musicnn-mtt"), ("tags",), bfloat16_verified=False)
    patches, rows, track, ids, genres = [], [], [], [], []
    t0 = time.time()
    for i, (tid, genre, path) in enumerate(items):
        try:
            x = track_windows(path, n_windows=n_windows)
        except Exception as exc:  # noqa: BLE001 - report and go on
            log(f"skipped {path}: {exc}")
            continue
        a, b = msd.patch_embeddings(x), mtt.patch_embeddings(x)
        rows.append(np.concatenate([a["penultimate"], a["tags"], b["tags"]], axis=1).astype(np.float32))
        patches.append(x.astype(np.float16))
        track.append(np.full(len(x), len(ids), np.int32))
        ids.append(tid)
        genres.append(genre)
        if (i + 1) % 25 == 0:
            log(f"{i + 1}/{len(items)} tracks, {sum(map(len, patches))} patches ({time.time() - t0:.0f} s)")
    return {"patches": np.concatenate(patches), "rows": np.concatenate(rows), "track": np.concatenate(track),
            "ids": np.array(ids), "genres": np.array(genres)}


def load(name: str) -> dict[str, np.ndarray]:
    from training.openset_embed import read

    return read(collection_path(name), "python -m training.distill embed")


def student(n_frames: int = 187, n_mels: int = 96, width: float = 1.0):
    """Depthwise-separable convolutions, batch norm, ReLU; global mean and max; two outputs."""
    import keras
    from keras import layers

    def sep(x, ch, stride):
        x = layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
        x = layers.Conv2D(ch, 1, use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        return layers.ReLU()(x)

    w = lambda c: int(round(c * width))  # noqa: E731
    inp = keras.Input((n_frames, n_mels), name="patches")
    x = layers.Reshape((n_frames, n_mels, 1))(inp)
    x = layers.BatchNormalization()(x)  # the log-mel's own scale, learnt
    x = layers.Conv2D(w(24), 3, strides=2, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    for ch, stride in ((48, 2), (96, 1), (96, 2), (160, 1), (160, 2), (256, 1), (256, 2)):
        x = sep(x, w(ch), stride)
    x = layers.Concatenate()([layers.GlobalAveragePooling2D()(x), layers.GlobalMaxPooling2D()(x)])
    x = layers.Dense(384, activation="relu")(x)
    x = layers.Dropout(0.1)(x)
    pen = layers.Dense(PEN, name="pen")(x)  # standardised penultimate
    tags = layers.Dense(TAGS, activation="sigmoid", name="tags")(x)
    return keras.Model(inp, [pen, tags], name="musicnn-student")


def flops(model) -> int:
    """Multiply-adds × 2 of the convolutions and dense layers, for one patch."""
    total = 0
    for layer in model.layers:
        kind = type(layer).__name__
        if kind not in ("Conv2D", "DepthwiseConv2D", "Dense"):
            continue
        out = layer.output.shape
        if kind == "Dense":
            total += 2 * layer.input.shape[-1] * out[-1]
        elif kind == "Conv2D":
            kh, kw = layer.kernel_size
            total += 2 * out[1] * out[2] * kh * kw * layer.input.shape[-1] * out[-1]
        else:
            kh, kw = layer.kernel_size
            total += 2 * out[1] * out[2] * kh * kw * out[-1]
    return int(total)


def split(data: dict, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Track indices (train, held out): GTZAN by one grouped fold, others every fifth track."""
    n = len(data["ids"])
    if kind == "gtzan":
        from training import datasets
        from training.openset import folds_for

        y = [str(g) for g in data["genres"]]
        groups = [datasets.gtzan_group(str(i)) for i in data["ids"]]
        tr, te = folds_for(y, groups)[0]
        return np.asarray(tr), np.asarray(te)
    idx = np.arange(n)
    return idx[idx % 5 != 0], idx[idx % 5 == 0]


def student_rows(model, patches: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    pen, tags = model.predict(patches.astype(np.float32), batch_size=128, verbose=0)
    return np.concatenate([pen * std + mean, tags], axis=1).astype(np.float32)


def agreement(decider, stop: float, threshold: float, teacher: list[np.ndarray],
              pupil: list[np.ndarray]) -> dict:
    """Progressive hearing of each track on both rows: same written genre (or both silent)."""
    from training.openset import heard

    labels = decider.labels
    same = same_written = written_t = written_s = 0
    heard_t = heard_s = 0
    for rt, rs in zip(teacher, pupil):
        pt, it = heard(decider, rt, stop)
        ps, is_ = heard(decider, rs, stop)
        gt = labels[int(pt.argmax())] if pt.max() >= threshold else None
        gs = labels[int(ps.argmax())] if ps.max() >= threshold else None
        same += gt == gs
        same_written += gt is not None and gt == gs
        written_t += gt is not None
        written_s += gs is not None
        heard_t += len(it)
        heard_s += len(is_)
    n = len(teacher)
    return {"tracks": n, "same_decision": same, "agreement": round(same / n, 4) if n else None,
            "written_by_teacher": written_t, "written_by_student": written_s,
            "written_same_genre": same_written,
            "windows_heard_teacher": round(heard_t / n, 2) if n else None,
            "windows_heard_student": round(heard_s / n, 2) if n else None}


def cmd_embed(args) -> int:
    from training.openset_embed import save, source_items

    items, name = source_items(args.source, args.name)
    data = embed(items, args.windows or (20 if args.source == "gtzan" else 30))
    f = save(collection_path(name), data)
    print(f"{f}: {len(data['ids'])} tracks, {len(data['patches'])} patches")
    return 0


def cmd_train(args) -> int:
    import keras

    from tagger.models import registry
    from tagger.models.openset import OpenSetModel

    keras.utils.set_random_seed(SEED)
    names = args.collections.split(",")
    parts = {"train": [], "held": []}
    held_tracks = {}  # name -> list of (teacher rows, patches) per held-out track
    for name in names:
        data = load(name)
        tr, te = split(data, name)
        for key, idx in (("train", tr), ("held", te)):
            m = np.isin(data["track"], idx)
            parts[key].append((data["patches"][m], data["rows"][m]))
        held_tracks[name] = [(data["rows"][data["track"] == t], data["patches"][data["track"] == t]) for t in te]
        print(f"{name}: {len(tr)} tracks to learn from, {len(te)} held out", flush=True)
    x_tr = np.concatenate([p for p, _ in parts["train"]])
    r_tr = np.concatenate([r for _, r in parts["train"]])
    x_va = np.concatenate([p for p, _ in parts["held"]])
    r_va = np.concatenate([r for _, r in parts["held"]])
    mean, std = r_tr[:, :PEN].mean(axis=0), r_tr[:, :PEN].std(axis=0) + 1e-6

    def targets(r):
        return [(r[:, :PEN] - mean) / std, np.clip(r[:, PEN:], 0, 1)]

    model = student(width=args.width)
    f = flops(model)
    print(f"student: {model.count_params()} parameters, {f / 1e6:.1f} MFLOP per patch", flush=True)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss={"pen": "mse", "tags": "binary_crossentropy"},
                  loss_weights={"pen": 1.0, "tags": 4.0})
    RUNS.mkdir(parents=True, exist_ok=True)
    # the held-out tracks decide when to stop: report their agreement as a first estimate, not a test
    cb = [keras.callbacks.ReduceLROnPlateau(patience=3, factor=0.5),
          keras.callbacks.EarlyStopping(patience=7, restore_best_weights=True),
          keras.callbacks.ModelCheckpoint(str(RUNS / "student.keras"), save_best_only=True)]
    t0 = time.time()
    hist = model.fit(x_tr.astype(np.float32), targets(r_tr), validation_data=(x_va.astype(np.float32), targets(r_va)),
                     epochs=args.epochs, batch_size=32, callbacks=cb, verbose=2)
    train_s = time.time() - t0

    default = OpenSetModel(registry.find("gtzan-musicnn-openset"))
    dec = default.decider
    card = json.loads((default.card.directory / "card.json").read_text())
    threshold, stop = float(dec.threshold), float(card.get("early_stop", 0.95))
    report = {"flops_per_patch": f, "parameters": int(model.count_params()), "epochs_run": len(hist.history["loss"]),
              "train_seconds": round(train_s), "patches_learnt": int(len(x_tr)), "threshold": threshold, "stop": stop,
              "collections": {}}
    for name, tracks in held_tracks.items():
        teacher = [r for r, _ in tracks]
        pupil = [student_rows(model, p, mean, std) for _, p in tracks]
        cos = np.concatenate([np.sum(a[:, :PEN] * b[:, :PEN], 1) / (np.linalg.norm(a[:, :PEN], axis=1)
                                                                     * np.linalg.norm(b[:, :PEN], axis=1) + 1e-9)
                              for a, b in zip(teacher, pupil)])
        tag_err = float(np.mean(np.concatenate([np.abs(a[:, PEN:] - b[:, PEN:]).ravel() for a, b in zip(teacher, pupil)])))
        report["collections"][name] = {**agreement(dec, stop, threshold, teacher, pupil),
                                       "penultimate_cosine_median": round(float(np.median(cos)), 4),
                                       "tag_abs_error_mean": round(tag_err, 4)}
        print(name, report["collections"][name], flush=True)
    report["speed"] = litert_speed(model)
    np.savez(RUNS / "standardise.npz", mean=mean, std=std)
    (RUNS / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))
    return 0


def litert_speed(model) -> dict:
    """ms per patch of the student as a LiteRT float32 model, batch 1 and 10, one thread."""
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    blob = conv.convert()
    (RUNS / "student.tflite").write_bytes(blob)
    out = {"tflite_bytes": len(blob)}
    for n in (1, 10):
        it = Interpreter(model_content=blob, num_threads=1)
        inp = it.get_input_details()[0]
        it.resize_tensor_input(inp["index"], (n, 187, 96))
        it.allocate_tensors()
        x = np.random.default_rng(0).normal(0, 1, (n, 187, 96)).astype(np.float32)
        it.set_tensor(inp["index"], x)
        it.invoke()
        t = time.perf_counter()
        for _ in range(20):
            it.set_tensor(inp["index"], x)
            it.invoke()
        out[f"ms_per_patch_batch{n}"] = round((time.perf_counter() - t) / 20 / n * 1000, 2)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.distill", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("embed", help="cut patches and record the teacher's rows for a collection")
    e.add_argument("source", help="'gtzan' or a folder of audio files")
    e.add_argument("--name", help="collection name for a folder (default: its name)")
    e.add_argument("--windows", type=int, help="windows per track (default 20 for GTZAN, 30 otherwise)")
    t = sub.add_parser("train", help="fit the student and measure it against the teacher on held-out tracks")
    t.add_argument("--collections", default="gtzan,debian", help="comma-separated (default gtzan,debian)")
    t.add_argument("--epochs", type=int, default=30)
    t.add_argument("--width", type=float, default=1.0, help="channel multiplier")
    args = ap.parse_args(argv)
    return {"embed": cmd_embed, "train": cmd_train}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
