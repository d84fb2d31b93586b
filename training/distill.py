"""A student front end distilled from musicnn (#20), and the command that ships it.

    python -m training.distill embed gtzan                    # teacher rows of the shared GTZAN clips
    python -m training.distill embed DIR --name debian        # ... of unlabeled music (Debian soundtracks)
    python -m training.distill train [--epochs 30]            # fit the student, measure it, write runs/distill/
    # the second run (training/README): windows per minute, shifted extras, wall-clock cosine, refit
    python -m training.distill embed DIR --name debian --windows 10 --per-minute 20 --cap 120
    python -m training.distill train --minutes 42 --width 1.5 --batch 64 --lr 2e-3 --shift 8 --gain-db 1.5 --refit --out w15
    python -m training.distill measure --out w15 --windows 10 --refit
    # the third run: the teacher in bfloat16, a loss on the shipped head's logits, width 2.0
    python -m training.distill embed DIR --name more --windows 10 --per-minute 20 --cap 120 --precision bfloat16
    python -m training.distill train --collections gtzan,debian,more --minutes 55 --width 2.0 --batch 64 \
        --lr 2e-3 --shift 8 --gain-db 1.5 --head-weight 1 --refit --out w20h

    # the fifth run, shipped behind the student setting (training/README): extra never learnt from
    python -m training.distill train --collections gtzan,debian,more --minutes 50 --width 2.0 --batch 64 \
        --lr 2e-3 --shift 8 --gain-db 1.5 --head-weight 1 --out w20s
    python -m training.distill ship --out w20s --collections gtzan,debian,more --unseen extra

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
#: the shipped student's folder, beside the default model's (``tagger.models.student``)
STUDENT_DIR = "gtzan-musicnn-openset-student"


def collection_path(name: str) -> Path:
    return CACHE / f"{name}.npz"


def window_plan(duration: float, window_s: float, n: int) -> tuple[list[float], list[int]]:
    """Start times of ``n`` windows and whether each is an extra (1) or one a scan-like plan places (0).

    Up to the number that fit back to back, the windows are placed as a scan places them
    (``audio.window_starts``: spread evenly). Beyond that, extra windows start half a window
    after the back-to-back ones (time-shift augmentation with the teacher's own targets); held-out
    tracks are heard on the scan-like windows only."""
    from tagger import audio

    base = audio.window_starts(duration, window_s, n)
    fit = len(base)
    extra = [window_s / 2 + i * window_s for i in range(fit) if window_s / 2 + (i + 1) * window_s <= duration]
    extra = extra[:max(0, n - fit)]
    return base + extra, [0] * len(base) + [1] * len(extra)


def windows_for(duration: float, n_windows: int, per_minute: float | None, cap: int | None) -> int:
    """Windows to cut from a track: ``n_windows``, or ``per_minute`` of its length (at least
    ``n_windows``, at most ``cap``)."""
    if not per_minute:
        return n_windows
    n = max(n_windows, int(round(per_minute * duration / 60)))
    return min(n, cap) if cap else n


def cut(path: Path, n_windows: int, per_minute: float | None = None,
        cap: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A track's musicnn patches ``(n, 187, 96)`` and each one's extra flag (see ``window_plan``)."""
    from tagger import audio, features, formats

    fmt = formats.confirm(str(path))
    info, _ = audio.plan(path, fmt, n_windows=1)
    window_s = features.PATCH_SAMPLES / features.SR
    starts, extra = window_plan(info.duration, window_s, windows_for(info.duration, n_windows, per_minute, cap))
    order = np.argsort(starts, kind="stable")
    with audio.Reader(path, info) as reader:
        clip = reader.read([starts[i] for i in order])
    if len(clip.windows) != len(starts):  # a reader that dropped a window: keep the scan-like plan only
        base = [t for t, e in zip(starts, extra) if not e]
        with audio.Reader(path, info) as reader:
            clip = reader.read(base)
        x = np.concatenate([features.musicnn_window_patches(w, clip.sr) for w in clip.windows])
        return x, np.zeros(len(x), np.int8)
    inv = np.empty_like(order)
    inv[order] = np.arange(len(order))
    wins = [clip.windows[inv[i]] for i in range(len(starts))]  # back in plan order: scan-like first
    parts = [features.musicnn_window_patches(w, clip.sr) for w in wins]
    flags = np.concatenate([np.full(len(p), e, np.int8) for p, e in zip(parts, extra)])
    return np.concatenate(parts), flags


def embed(items: list[tuple[str, str, Path]], n_windows: int, per_minute: float | None = None,
          cap: int | None = None, log=print, precision: str = "float32") -> dict[str, np.ndarray]:
    """Each track's patches (float16) and the teacher's float32 rows for them, and which are extras.
    ``precision`` "bfloat16": the teacher as a worker runs it on a CPU with AVX512-BF16 (the card's
    ``bfloat16`` check), 2.3 times as fast there as float32."""
    from tagger.models import registry, runtime
    from tagger.models.transfer import MusicnnFrontEnd

    runtime.set_precision(precision)
    bf16 = precision == "bfloat16"
    msd = MusicnnFrontEnd(registry.find("musicnn-msd"), ("penultimate", "tags"), bfloat16_verified=bf16)
    mtt = MusicnnFrontEnd(registry.find("musicnn-mtt"), ("tags",), bfloat16_verified=bf16)
    patches, rows, track, extras, ids, genres = [], [], [], [], [], []
    t0 = time.time()
    for i, (tid, genre, path) in enumerate(items):
        try:
            x, flags = cut(path, n_windows, per_minute, cap)
        except Exception as exc:  # noqa: BLE001 - report and go on
            log(f"skipped {path}: {exc}")
            continue
        a, b = msd.patch_embeddings(x), mtt.patch_embeddings(x)
        rows.append(np.concatenate([a["penultimate"], a["tags"], b["tags"]], axis=1).astype(np.float32))
        patches.append(x.astype(np.float16))
        track.append(np.full(len(x), len(ids), np.int32))
        extras.append(flags)
        ids.append(tid)
        genres.append(genre)
        if (i + 1) % 25 == 0:
            log(f"{i + 1}/{len(items)} tracks, {sum(map(len, patches))} patches ({time.time() - t0:.0f} s)", flush=True)
    return {"patches": np.concatenate(patches), "rows": np.concatenate(rows), "track": np.concatenate(track),
            "extra": np.concatenate(extras), "ids": np.array(ids), "genres": np.array(genres)}


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
    pen, tags = model.predict(patches.astype(np.float32), batch_size=128, verbose=0)[:2]  # not the head's logits
    return np.concatenate([pen * std + mean, tags], axis=1).astype(np.float32)


def answers(decider, student_decider, stop: float, threshold: float, teacher: list[np.ndarray],
            pupil: list[np.ndarray], give_up: float = 0.0, student_give_up: float | None = None) -> list[tuple]:
    """Progressive hearing of each track by the teacher chain (``decider`` on the teacher's rows)
    and the student chain (``student_decider`` on the student's rows): per track (teacher's genre,
    student's genre (None: silent), the student's top chance, windows the teacher heard, windows
    the student heard)."""
    from training.openset import heard

    out = []
    for rt, rs in zip(teacher, pupil):
        pt, it = heard(decider, rt, stop, give_up)
        ps, is_ = heard(student_decider, rs, stop, give_up if student_give_up is None else student_give_up)
        gt = decider.labels[int(pt.argmax())] if pt.max() >= threshold else None
        gs = student_decider.labels[int(ps.argmax())] if ps.max() >= threshold else None
        out.append((gt, gs, float(ps.max()), len(it), len(is_)))
    return out


def agreement(decider, student_decider, stop: float, threshold: float, teacher: list[np.ndarray],
              pupil: list[np.ndarray], give_up: float = 0.0) -> dict:
    """The teacher chain against the student chain (``answers``): same written genre (or both silent)."""
    got = answers(decider, student_decider, stop, threshold, teacher, pupil, give_up)
    n, same = len(got), sum(gt == gs for gt, gs, *_ in got)
    return {"tracks": n, "same_decision": same, "agreement": round(same / n, 4) if n else None,
            "written_by_teacher": sum(gt is not None for gt, *_ in got),
            "written_by_student": sum(gs is not None for _, gs, *_ in got),
            "written_same_genre": sum(gt is not None and gt == gs for gt, gs, *_ in got),
            "windows_heard_teacher": round(sum(a[3] for a in got) / n, 2) if n else None,
            "windows_heard_student": round(sum(a[4] for a in got) / n, 2) if n else None}


def cmd_embed(args) -> int:
    from tagger.models import runtime
    from training.openset_embed import save, source_items

    if args.threads:
        runtime.set_threads(args.threads)
        runtime.configure_tensorflow()
    items, name = source_items(args.source, args.name)
    data = embed(items, args.windows or (20 if args.source == "gtzan" else 30), args.per_minute, args.cap,
                 precision=args.precision)
    if args.source.lower().endswith(".csv"):  # a labels CSV (training.tagged): its groups (artists) too
        from training.openset_embed import csv_groups

        groups = csv_groups(Path(args.source))
        data["groups"] = np.array([groups.get(str(i), "") for i in data["ids"]])
    f = save(collection_path(name), data)
    print(f"{f}: {len(data['ids'])} tracks, {len(data['patches'])} patches")
    return 0


def augmenter(x: np.ndarray, targets: list[np.ndarray], batch: int, shift: int, gain_db: float, seed: int = SEED):
    """Batches of the student's input, augmented (the teacher's targets unchanged): each patch
    moved by up to ``shift`` frames (edge frames repeated) and its mel power scaled by up to
    ``gain_db`` dB (on musicnn's log10(1 + 10000 mel) scale). Nothing that mixes patches: the
    targets are per patch."""
    import keras

    class Batches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__()
            self.rng = np.random.default_rng(seed)
            self.order = self.rng.permutation(len(x))

        def __len__(self):
            return int(np.ceil(len(x) / batch))

        def on_epoch_end(self):
            self.order = self.rng.permutation(len(x))

        def __getitem__(self, i):
            idx = np.sort(self.order[i * batch:(i + 1) * batch])
            xb = x[idx].astype(np.float32)
            n, frames = xb.shape[:2]
            if shift:
                d = self.rng.integers(-shift, shift + 1, n)
                t = np.clip(np.arange(frames)[None, :] + d[:, None], 0, frames - 1)
                xb = np.take_along_axis(xb, t[:, :, None], axis=1)
            if gain_db:
                g = 10 ** (self.rng.uniform(-gain_db, gain_db, n) / 10)
                xb = np.log10(1 + (np.power(10.0, xb) - 1) * g[:, None, None]).astype(np.float32)
            return xb, tuple(tg[idx] for tg in targets)

    return Batches()


def wall_clock_schedule(minutes: float, lr: float, warmup: float = 0.03):
    """A callback: learning rate on a cosine over ``minutes`` of wall time (linear warm-up over
    the first ``warmup`` of it), training stopped at the end of an epoch once the time is spent."""
    import keras

    class Clock(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.t0 = time.time()

        def on_train_batch_begin(self, batch, logs=None):
            f = min(1.0, (time.time() - self.t0) / (minutes * 60))
            rate = lr * f / warmup if f < warmup else lr * 0.5 * (1 + np.cos(np.pi * (f - warmup) / (1 - warmup)))
            self.model.optimizer.learning_rate.assign(max(rate, lr * 1e-3))

        def on_epoch_end(self, epoch, logs=None):
            if logs is not None:
                logs["lr"] = float(self.model.optimizer.learning_rate.numpy())
            if time.time() - self.t0 >= minutes * 60:
                self.model.stop_training = True

    return Clock()


#: the bands of the cascade measured (``cascade``): how near the threshold a student answer must be
#: for the teacher to hear the track again
CASCADE_BANDS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6)
#: the student's own give-ups tried by ``ship`` (the teacher's is the card's ``give_up``)
STUDENT_GIVE_UPS = (0.1, 0.2, 0.3, 0.4)


def cascade(decider, student_decider, stop: float, threshold: float, teacher: list[np.ndarray],
            pupil: list[np.ndarray], give_up: float = 0.0, bands=CASCADE_BANDS,
            student_give_up: float | None = None) -> list[dict]:
    """The student chain with the teacher behind it, as a worker runs it (``Student.hands_on``): a
    track whose student answer (the refitted chain's calibrated chance for its top genre, as
    progressive hearing leaves it) is at least ``threshold - band`` is heard again by the teacher
    chain, whose answer is then written; below, the track stays untagged on the student's word.
    Every written tag is the teacher's. (Until 2026-12-08 the band was two-sided, ``|p - threshold|
    < band``, and the student wrote alone above the band.) Per band: the tracks the teacher hears
    again, the same decision as the teacher chain alone, and the windows the teacher heard per
    track against its windows alone. ``student_give_up``: the student's own give-up (default: the
    teacher's)."""
    got = answers(decider, student_decider, stop, threshold, teacher, pupil, give_up, student_give_up)
    n = len(got)
    out = []
    for band in bands:
        again = [p >= threshold - band for _, _, p, _, _ in got]
        same = sum(gt is None if not a else True for (gt, *_), a in zip(got, again))
        out.append({"band": band, "tracks": n, "teacher_hears_again": sum(again), "same_decision": same,
                    "agreement": round(same / n, 4) if n else None,
                    "written_by_teacher": sum(gt is not None for gt, *_ in got),
                    "withheld": sum(gt is not None and not a for (gt, *_), a in zip(got, again)),
                    "teacher_windows_per_track": round(sum(g[3] for g, a in zip(got, again) if a) / n, 2)
                    if n else None,
                    "teacher_windows_alone": round(sum(g[3] for g in got) / n, 2) if n else None,
                    "student_windows": round(sum(g[4] for g in got) / n, 2) if n else None})
    return out


def spread(n: int, most: int | None) -> np.ndarray:
    """Indices of at most ``most`` of ``n`` windows spread evenly (a scan's plan, roughly)."""
    return np.arange(n) if not most or n <= most else np.unique(np.linspace(0, n - 1, most).round().astype(int))


def scan_windows(data: dict, tracks, most: int | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each track's scan-like windows (no shifted extras), at most ``most`` of them spread evenly:
    (teacher rows, patches) per track."""
    extra = data.get("extra", np.zeros(len(data["track"]), np.int8))
    out = []
    for t in tracks:
        m = (data["track"] == t) & (extra == 0)
        k = spread(int(m.sum()), most)
        out.append((data["rows"][m][k], data["patches"][m][k]))
    return out


def held_out(names: list[str], most: int | None = None) -> tuple[dict, dict]:
    """Per collection: training arrays and the held-out tracks (their scan-like windows only; with
    ``most``, at most that many of them, spread evenly, as a scan of ``most`` windows hears)."""
    parts, held_tracks = {}, {}
    for name in names:
        data = load(name)
        extra = data.get("extra", np.zeros(len(data["track"]), np.int8))
        tr, te = split(data, name)
        m = np.isin(data["track"], tr)
        parts[name] = (data["patches"][m], data["rows"][m])
        held_tracks[name] = scan_windows(data, te, most)
        print(f"{name}: {len(tr)} tracks to learn from ({int(m.sum())} patches, {int((extra[m] == 1).sum())} "
              f"of them shifted extras), {len(te)} held out", flush=True)
    return parts, held_tracks


def cmd_train(args) -> int:
    import keras

    keras.utils.set_random_seed(SEED)
    out = RUNS / args.out if args.out else RUNS
    out.mkdir(parents=True, exist_ok=True)
    names = args.collections.split(",")
    parts, held_tracks = held_out(names)
    x_tr = np.concatenate([p for p, _ in parts.values()])
    r_tr = np.concatenate([r for _, r in parts.values()])
    x_va = np.concatenate([p for t in held_tracks.values() for _, p in t])
    r_va = np.concatenate([r for t in held_tracks.values() for r, _ in t])
    mean, std = r_tr[:, :PEN].mean(axis=0), r_tr[:, :PEN].std(axis=0) + 1e-6
    np.savez(out / "standardise.npz", mean=mean, std=std)

    more_targets = []  # functions of the rows, one per output past the two

    def targets(r):
        return [((r[:, :PEN] - mean) / std).astype(np.float32), np.clip(r[:, PEN:], 0, 1).astype(np.float32),
                *(f(r) for f in more_targets)]

    model = student(width=args.width)
    f = flops(model)
    print(f"student: {model.count_params()} parameters, {f / 1e6:.1f} MFLOP per patch, "
          f"{len(x_tr)} patches to learn from", flush=True)
    losses, weights = {"pen": "mse", "tags": "binary_crossentropy"}, {"pen": 1.0, "tags": 4.0}
    if args.head_weight:
        model, head_target = with_head_logits(model, mean, std, r_tr)
        more_targets.append(head_target)
        losses["head"], weights["head"] = "mse", args.head_weight
    model.compile(optimizer=keras.optimizers.Adam(args.lr), loss=losses, loss_weights=weights)
    # the held-out tracks choose the epoch (best validation loss): their agreement is a first estimate, not a test
    cb = [keras.callbacks.ModelCheckpoint(str(out / "student.keras"), save_best_only=True),
          keras.callbacks.CSVLogger(str(out / "history.csv"))]
    if args.minutes:
        cb.append(wall_clock_schedule(args.minutes, args.lr))
        epochs = 1000
    else:
        cb += [keras.callbacks.ReduceLROnPlateau(patience=3, factor=0.5),
               keras.callbacks.EarlyStopping(patience=7, restore_best_weights=True)]
        epochs = args.epochs
    t0 = time.time()
    if args.shift or args.gain_db:
        hist = model.fit(augmenter(x_tr, targets(r_tr), args.batch, args.shift, args.gain_db),
                         validation_data=(x_va.astype(np.float32), tuple(targets(r_va))),
                         epochs=epochs, callbacks=cb, verbose=2)
    else:
        hist = model.fit(x_tr.astype(np.float32), targets(r_tr), validation_data=(x_va.astype(np.float32), targets(r_va)),
                         epochs=epochs, batch_size=args.batch, callbacks=cb, verbose=2)
    train_s = time.time() - t0
    best = int(np.argmin(hist.history["val_loss"])) + 1
    meta = {"flops_per_patch": f, "parameters": int(model.count_params()), "width": args.width,
            "epochs_run": len(hist.history["loss"]), "epoch_chosen": best, "train_seconds": round(train_s),
            "patches_learnt": int(len(x_tr)), "batch": args.batch, "lr": args.lr, "minutes": args.minutes,
            "shift_frames": args.shift, "gain_db": args.gain_db, "collections": names,
            "val_loss": [round(float(v), 4) for v in hist.history["val_loss"]]}
    (out / "train.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(json.dumps(meta), flush=True)
    return measure(out, names, refit=args.refit)


def with_head_logits(model, mean: np.ndarray, std: np.ndarray, rows: np.ndarray):
    """The student with a third output: the shipped genre head's logits, a fixed (not trained)
    linear map of its standardised penultimate output, centred over the genres and divided by
    their spread over the teacher's ``rows`` (the training rows); and the function that gives the
    teacher's same numbers for a batch of rows. A loss on it puts the penultimate's errors where
    they do not move the head (the decider reads the head's probabilities, not the 200 numbers alike)."""
    import keras

    from tagger.models import registry
    from tagger.models.openset import load_decider

    head = load_decider(registry.find("gtzan-musicnn-openset")).head  # tagger.models.linear.Linear
    coef = np.asarray(head.coef, np.float64)
    coef = coef - coef.mean(axis=0, keepdims=True)  # centred logits: softmax reads only their differences
    intercept = np.asarray(head.intercept, np.float64) - float(np.mean(head.intercept))
    hmean, hscale = np.asarray(head.mean, np.float64), np.asarray(head.scale, np.float64)

    def logits(r: np.ndarray) -> np.ndarray:
        return ((r[:, :PEN].astype(np.float64) - hmean) / hscale) @ coef.T + intercept

    spread = float(logits(rows).std())
    # on the student's standardised output s (pen = s * std + mean): s @ a + c
    a = (std[:, None] / hscale[:, None]) * coef.T
    c = ((mean - hmean) / hscale) @ coef.T + intercept
    layer = keras.layers.Dense(len(intercept), name="head", trainable=False)
    out = layer(model.outputs[0])
    layer.set_weights([(a / spread).astype(np.float32), (c / spread).astype(np.float32)])
    wrapped = keras.Model(model.input, [*model.outputs, out], name=model.name)
    return wrapped, lambda r: (logits(r) / spread).astype(np.float32)


def gtzan_student_rows(model, mean, std) -> tuple[list[np.ndarray], list[str], list[str]]:
    """The student's rows for every GTZAN clip's scan-like windows (for refitting the decider)."""
    from training import datasets

    data = load("gtzan")
    rows = [student_rows(model, p, mean, std) for _, p in scan_windows(data, range(len(data["ids"])))]
    y = [str(g) for g in data["genres"]]
    groups = [datasets.gtzan_group(str(i)) for i in data["ids"]]
    return rows, y, groups


def trained(out: Path):
    """A run's student and the standardisation of its penultimate: (model, mean, std)."""
    import keras

    z = np.load(out / "standardise.npz")
    return keras.models.load_model(out / "student.keras"), z["mean"], z["std"]


def shipped_chain():
    """The shipped default's decider as a worker runs it, and how it hears: (decider, threshold,
    early stop, give-up). The networks are not loaded: the rows are the teacher's, cached."""
    from tagger.models import registry
    from tagger.models.openset import load_decider

    card = registry.find("gtzan-musicnn-openset")
    dec = load_decider(card)
    dec.mtt_windows = int(card.extra.get("mtt_windows", 0))
    # the give-up is the shipped chain's; the first run heard without it
    return (dec, float(dec.threshold), float(card.extra.get("early_stop", 0.95)),
            float(card.extra.get("give_up", 0.0)))


def tagged_student_data(model, mean, std, name: str = "tagged") -> dict | None:
    """The artist-tagged collection (``embed LABELS.csv --name tagged``) with the student's rows in
    place of the teacher's, in ``training.openset.load``'s form (for ``tagged_episodes``); None
    where it was not embedded."""
    try:
        data = load(name)
    except SystemExit:
        return None
    extra = data.get("extra", np.zeros(len(data["track"]), np.int8))
    keep = extra == 0
    rows = student_rows(model, data["patches"][keep], mean, std)
    groups = [str(g) for g in data["groups"]] if "groups" in data else [str(i).split("__")[0] for i in data["ids"]]
    return {"msd_pen": rows[:, :PEN], "msd_tags": rows[:, PEN:PEN + 50], "mtt_tags": rows[:, PEN + 50:],
            "track": data["track"][keep], "ids": data["ids"], "genres": data["genres"],
            "groups": np.array(groups)}


def refitted_decider(model, mean, std, threshold: float):
    """The decider refitted on the student's rows of every GTZAN clip (and of the artist-tagged
    files, where they were embedded), at the shipped threshold."""
    from training.openset import final_decider, folds_for

    rows, y, groups = gtzan_student_rows(model, mean, std)
    sdec = final_decider(rows, y, groups, folds_for(y, groups), tagged=tagged_student_data(model, mean, std))
    sdec.threshold = threshold
    return sdec


def measure(out: Path, names: list[str], refit: bool = False, most: int | None = None) -> int:
    """Held-out agreement of the student chain with the teacher chain, FLOPs and LiteRT speed."""
    model, mean, std = trained(out)
    _, held_tracks = held_out(names, most)
    dec, threshold, stop, give_up = shipped_chain()
    train = json.loads((out / "train.json").read_text()) if (out / "train.json").is_file() else {}
    report = {**train, "threshold": threshold, "stop": stop, "give_up": give_up, "collections": {}}
    deciders = {"shipped decider": dec}
    if refit:
        t0 = time.time()
        deciders["decider refitted on the student's rows"] = refitted_decider(model, mean, std, threshold)
        report["refit_seconds"] = round(time.time() - t0)
    for name, tracks in held_tracks.items():
        teacher = [r for r, _ in tracks]
        pupil = [student_rows(model, p, mean, std) for _, p in tracks]
        cos = np.concatenate([np.sum(a[:, :PEN] * b[:, :PEN], 1) / (np.linalg.norm(a[:, :PEN], axis=1)
                                                                     * np.linalg.norm(b[:, :PEN], axis=1) + 1e-9)
                              for a, b in zip(teacher, pupil)])
        tag_err = float(np.mean(np.concatenate([np.abs(a[:, PEN:] - b[:, PEN:]).ravel() for a, b in zip(teacher, pupil)])))
        res = {"patches": int(sum(map(len, teacher))), "penultimate_cosine_median": round(float(np.median(cos)), 4),
               "tag_abs_error_mean": round(tag_err, 4)}
        for label, d in deciders.items():
            res[label] = agreement(dec, d, stop, threshold, teacher, pupil)
            if give_up:
                res[f"{label}, give_up {give_up}"] = agreement(dec, d, stop, threshold, teacher, pupil, give_up)
        last = list(deciders.values())[-1]  # the refitted decider where there is one
        res["cascade"] = cascade(dec, last, stop, threshold, teacher, pupil, give_up)
        report["collections"][name] = res
        print(name, json.dumps(res), flush=True)
    report["speed"] = litert_speed(model, out)
    report["windows_at_most"] = most
    (out / (f"report-{most}windows.json" if most else "report.json")).write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))
    return 0


def cmd_bands(args) -> int:
    """The cascade's bands on the tracks the student learnt from (the refitted decider), to choose
    a band on them and read its agreement on the held-out tracks in ``measure``'s report."""
    out = RUNS / args.out if args.out else RUNS
    model, mean, std = trained(out)
    dec, threshold, stop, give_up = shipped_chain()
    sdec = refitted_decider(model, mean, std, threshold)
    report = {}
    for name in args.collections.split(","):
        data = load(name)
        tr, _ = split(data, name)
        tracks = scan_windows(data, tr, args.windows)
        teacher = [r for r, _ in tracks]
        pupil = [student_rows(model, p, mean, std) for _, p in tracks]
        report[name] = cascade(dec, sdec, stop, threshold, teacher, pupil, give_up)
        print(name, len(tr), json.dumps([[b["band"], b["teacher_hears_again"], b["same_decision"]]
                                         for b in report[name]]), flush=True)
    (out / "bands-training-tracks.json").write_text(json.dumps(report, indent=1) + "\n")
    return 0


def cmd_measure(args) -> int:
    return measure(RUNS / args.out if args.out else RUNS, args.collections.split(","), refit=args.refit,
                   most=args.windows)


def litert_speed(model, out: Path = RUNS) -> dict:
    """ms per patch of the student as a LiteRT float32 model, batch 1 and 10, one thread."""
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    import keras

    if len(model.outputs) > 2:  # a worker would run the two outputs of the rows, not the head's logits
        model = keras.Model(model.input, model.outputs[:2])
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    blob = conv.convert()
    (out / "student.tflite").write_bytes(blob)
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


def rows_network(model, mean: np.ndarray, std: np.ndarray):
    """The student as a worker runs it: patches ``(n, 187, 96)`` → rows ``(n, 300)`` (the penultimate
    de-standardised, folded into its last layer's weights, then the 100 tags): the teacher's layout."""
    import keras

    net = keras.Model(model.input, model.outputs[:2])  # not the head's logits
    copy = keras.models.clone_model(net)
    copy.set_weights(net.get_weights())
    w, b = copy.get_layer("pen").get_weights()
    copy.get_layer("pen").set_weights([(w * std[None, :]).astype(np.float32), (b * std + mean).astype(np.float32)])
    rows = keras.layers.Concatenate(axis=-1, name="rows")(copy.outputs)
    return keras.Model(copy.input, rows, name="musicnn-student-rows")


def onnx_speed(student_path: Path, teacher: tuple[Path, Path], patches: np.ndarray, batch: int = 3) -> dict:
    """ms per patch, one thread, batches of ``batch`` as hearing brings them: the student's ONNX
    file and the teacher's two (both networks), interleaved batch by batch."""
    from tagger.models import onnx

    stu = onnx.Session(student_path, threads=1)
    front = onnx.Frontend(*teacher, threads=1)
    for f in (stu, front.rows):  # kernels prepared once per shape
        f(patches[:batch].astype(np.float32))
    t = {"student": 0.0, "teacher": 0.0}
    n = 0
    for s in range(0, len(patches) - batch + 1, batch):
        x = patches[s:s + batch].astype(np.float32)
        for k, f in (("student", stu), ("teacher", front.rows)):
            t0 = time.perf_counter()
            f(x)
            t[k] += time.perf_counter() - t0
        n += batch
    return {"patches": n, "batch": batch, "student_ms_per_patch": round(1000 * t["student"] / n, 2),
            "teacher_ms_per_patch_both_networks": round(1000 * t["teacher"] / n, 2),
            "timing": "ONNX Runtime, one thread, interleaved batch by batch"}


def window_overhead_ms(clips: int = 12, windows: int = 10) -> float:
    """ms to decode a window and compute its patch, one thread: the shared GTZAN copy's first clips
    of each genre, heard as a scan plans them (what each window the student hears costs besides
    the student itself)."""
    from tagger import audio, features, formats
    from training import datasets

    items = datasets.gtzan(ROOT.parent / "shared" / "datasets" / "gtzan")
    paths = [it.path for it in items][:: max(1, len(items) // clips)][:clips]
    spent, n = 0.0, 0
    for p in paths:
        fmt = formats.confirm(str(p))
        info, starts = audio.plan(p, fmt, n_windows=windows)
        t0 = time.perf_counter()
        with audio.Reader(p, info) as reader:
            clip = reader.read(starts)
        for w in clip.windows:
            features.musicnn_window_patches(w, clip.sr)
        spent += time.perf_counter() - t0
        n += len(clip.windows)
    return 1000 * spent / max(1, n)


def choose_band(per_collection: dict[str, list[dict]], goal: float) -> tuple[float, dict]:
    """The smallest band whose pooled agreement over ``per_collection`` (``cascade``'s lists) reaches
    ``goal``, else the widest; and the pooled figures per band."""
    pooled = {}
    for rows in per_collection.values():
        for r in rows:
            p = pooled.setdefault(r["band"], {"tracks": 0, "same_decision": 0, "teacher_hears_again": 0})
            p["tracks"] += r["tracks"]
            p["same_decision"] += r["same_decision"]
            p["teacher_hears_again"] += r["teacher_hears_again"]
    for p in pooled.values():
        p["agreement"] = round(p["same_decision"] / p["tracks"], 4) if p["tracks"] else None
    bands = sorted(pooled)
    chosen = next((b for b in bands if (pooled[b]["agreement"] or 0) >= goal), bands[-1])
    return chosen, pooled


def cmd_ship(args) -> int:
    """Ship a trained student with the default model (``tagger.models.student``): its ONNX export,
    the decider refitted on its rows, and the band chosen on the tracks it learnt from."""
    import joblib
    import tensorflow as tf
    import tf2onnx

    from tagger.models import onnx, registry
    from tagger.models.openset import save_plain
    from training.card import write_card

    out = RUNS / args.out if args.out else RUNS
    card = registry.find("gtzan-musicnn-openset")
    art = Path(args.model) if args.model else card.directory
    doc = json.loads((art / "card.json").read_text(encoding="utf-8"))
    # the student's files sit in a folder of their own beside the default's (each model folder
    # stays under 20 MB); the default's card holds the student's card (``student``)
    home = art.parent / STUDENT_DIR
    home.mkdir(exist_ok=True)
    model, mean, std = trained(out)
    names = args.collections.split(",")
    # 1. the network, as ONNX, checked against Keras on held-out patches
    net = rows_network(model, mean, std)
    spec = (tf.TensorSpec((None, 187, 96), tf.float32, name="patches"),)
    onnx_path = home / "student.onnx"
    tf2onnx.convert.from_keras(net, input_signature=spec, opset=17, output_path=str(onnx_path))
    sess = onnx.Session(onnx_path, threads=1)
    _, held = held_out(names, args.windows)
    probe = np.concatenate([p for _, p in held["gtzan"]])[:256].astype(np.float32)
    diff = float(np.abs(sess(probe) - student_rows(model, probe, mean, std)).max())
    print(f"{onnx_path}: {onnx_path.stat().st_size} bytes, max difference from Keras {diff:.2e}", flush=True)
    # 2. the decider, refitted on the student's rows, at the shipped threshold
    dec, threshold, stop, give_up = shipped_chain()
    sdec = refitted_decider(model, mean, std, threshold)
    joblib.dump(sdec, home / "student-decider.joblib")
    save_plain(sdec, home / "student-decider.joblib", home / "student-decider.npz")
    # 3. the band: on the tracks the student learnt from; then the held-out tracks' figures at it
    def rows_of(patches):
        return sess(patches.astype(np.float32))

    teacher = tuple(art / doc["runtimes"]["onnx"]["files"][k] for k in ("msd", "mtt"))
    speed = onnx_speed(onnx_path, teacher, probe)
    speed["decode_and_features_ms_per_window"] = round(window_overhead_ms(), 2)
    student_ms = speed["student_ms_per_patch"] + speed["decode_and_features_ms_per_window"]
    teacher_ms = speed["teacher_ms_per_patch_both_networks"]
    learnt_tracks = {}
    for name in names:
        data = load(name)
        tr, _ = split(data, name)
        tracks = scan_windows(data, tr, args.windows)
        learnt_tracks[name] = ([r for r, _ in tracks], [rows_of(p) for _, p in tracks])
    # the student's own give-up and the band, together: for each give-up the smallest band that reaches
    # the goal on the tracks it learnt from, then the pair that costs least there (its windows at the
    # student's cost with decoding and features, the teacher's at the teacher's)
    grid = {}
    for sgu in STUDENT_GIVE_UPS:
        learnt = {name: cascade(dec, sdec, stop, threshold, t, p, give_up, student_give_up=sgu)
                  for name, (t, p) in learnt_tracks.items()}
        b, pooled = choose_band(learnt, args.goal)
        n = sum(len(t) for t, _ in learnt_tracks.values())
        at_b = {name: next(r for r in rows if r["band"] == b) for name, rows in learnt.items()}
        sw = sum(at_b[k]["student_windows"] * len(learnt_tracks[k][0]) for k in at_b) / n
        tw = sum(at_b[k]["teacher_windows_per_track"] * len(learnt_tracks[k][0]) for k in at_b) / n
        grid[sgu] = {"band": b, "agreement": pooled[b]["agreement"], "student_windows": round(sw, 2),
                     "teacher_windows": round(tw, 2), "ms_per_track": round(sw * student_ms + tw * teacher_ms, 1),
                     "learnt": learnt, "pooled": pooled}
        print(f"student give-up {sgu}: band {b}, agreement {pooled[b]['agreement']}, student windows {sw:.2f}, "
              f"teacher windows {tw:.2f}, ≈ {grid[sgu]['ms_per_track']} ms per track", flush=True)
    reach = ([g for g in grid if (grid[g]["agreement"] or 0) >= args.goal]
             or [max(grid, key=lambda g: grid[g]["agreement"] or 0)])  # none reaches it: the closest
    student_give_up = min(reach, key=lambda g: grid[g]["ms_per_track"])
    band, learnt, pooled_learnt = (grid[student_give_up][k] for k in ("band", "learnt", "pooled"))
    kept = {name: cascade(dec, sdec, stop, threshold, [r for r, _ in held[name]], [rows_of(p) for _, p in held[name]],
                          give_up, student_give_up=student_give_up) for name in names}
    for name in names:
        print(name, json.dumps([[b["band"], b["teacher_hears_again"], b["same_decision"]] for b in learnt[name]]),
              json.dumps([[b["band"], b["teacher_hears_again"], b["same_decision"]] for b in kept[name]]), flush=True)
    unseen = {}  # collections the student never learnt from, whole (no track of them chose anything)
    for name in filter(None, (args.unseen or "").split(",")):
        data = load(name)
        tracks = scan_windows(data, range(len(data["ids"])), args.windows)
        unseen[name] = cascade(dec, sdec, stop, threshold, [r for r, _ in tracks], [rows_of(p) for _, p in tracks],
                               give_up, student_give_up=student_give_up)
        print(name, "(unseen)", json.dumps([[b["band"], b["teacher_hears_again"], b["same_decision"]]
                                            for b in unseen[name]]), flush=True)
    _, pooled_kept = choose_band(kept, args.goal)
    train = json.loads((out / "train.json").read_text()) if (out / "train.json").is_file() else {}
    at = lambda rows: next(r for r in rows if r["band"] == band)  # noqa: E731
    judged = {**{k: at(v) for k, v in kept.items()}, **{k: at(v) for k, v in unseen.items()}}
    written, withheld = (sum(r[k] for r in judged.values()) for k in ("written_by_teacher", "withheld"))
    doc["student"] = {
        "default": False,
        "why_not_default": f"on the {sum(r['tracks'] for r in judged.values())} "
                           f"tracks that chose nothing ({', '.join(judged)}) it withheld {withheld} of the "
                           f"{written} tags the teacher writes there: tags on unheard music are what the "
                           "default lacks (issue #16); the student setting (TAGGER_STUDENT=on) asks for it",
        "directory": STUDENT_DIR, "file": onnx_path.name, "decider": "student-decider.npz",
        "decider_source": "student-decider.joblib",
        "band": band,
        "give_up": student_give_up,
        "give_up_and_band": {str(g): {k: v for k, v in grid[g].items() if k not in ("learnt", "pooled")}
                             for g in grid},
        "how": "the student (depthwise-separable convolutions, training.distill.student) hears a track first, "
               "progressively, and its decider (the default's recipe refitted on the student's rows of the "
               "218 GTZAN clips and the artist-tagged files) judges it; where its chance for its top genre "
               f"is below threshold - band ({threshold} - {band}) the track stays untagged on its word, "
               "otherwise the teacher hears it again on the windows already decoded and writes its answer: "
               "every written tag is the teacher's",
        "why": "on music the default cannot name, most tracks end with the student, at a fraction of the "
               "teacher's cost; for each of the student's own give-ups the band was the smallest whose "
               f"decisions equal the teacher chain's on at least {args.goal} of the tracks the student learnt "
               "from, and the pair chosen is the one that costs least there (give_up_and_band; the student's "
               "windows at its cost with decoding and features, the teacher's at the teacher's)",
        "training": {k: train.get(k) for k in ("collections", "patches_learnt", "width", "parameters",
                                               "flops_per_patch", "epochs_run", "epoch_chosen", "minutes",
                                               "train_seconds")},
        "split": "by track: GTZAN's first grouped fold and every fifth piece of each other collection held "
                 "out (never learnt from); the held-out tracks chose the epoch, so their figures are a "
                 "first estimate, not a test",
        "onnx": {"bytes": onnx_path.stat().st_size, "opset": 17, "converter": f"tf2onnx {tf2onnx.__version__}",
                 "max_abs_diff_from_keras": float(f"{diff:.3g}")},
        "speed": speed,
        "windows_at_most": args.windows,
        "bands_on_learnt_tracks": {"pooled": {str(b): v for b, v in pooled_learnt.items()},
                                   "per_collection": learnt},
        "held_out": {"pooled": {str(b): v for b, v in pooled_kept.items()}, "per_collection": kept,
                     "at_band": {name: at(rows) for name, rows in kept.items()}},
        "unseen": {"what": "whole collections no track of which the student learnt from or chose anything with",
                   "per_collection": unseen, "at_band": {name: at(rows) for name, rows in unseen.items()}},
        "command": f"python -m training.distill ship --out {args.out} --collections {args.collections}"
                   + (f" --unseen {args.unseen}" if args.unseen else ""),
    }
    write_card(art, **doc)
    print(json.dumps({"band": band, "learnt": pooled_learnt[band], "held_out": pooled_kept[band], "speed": speed}))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.distill", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("embed", help="cut patches and record the teacher's rows for a collection")
    e.add_argument("source", help="'gtzan' or a folder of audio files")
    e.add_argument("--name", help="collection name for a folder (default: its name)")
    e.add_argument("--windows", type=int, help="windows per track (default 20 for GTZAN, 30 otherwise); with"
                   " --per-minute, the least")
    e.add_argument("--per-minute", type=float, help="windows per minute of the track (long tracks get more)")
    e.add_argument("--cap", type=int, help="the most windows per track with --per-minute")
    e.add_argument("--precision", choices=("float32", "bfloat16"), default="float32",
                   help="the teacher's arithmetic (bfloat16: as workers run it on a CPU with AVX512-BF16)")
    e.add_argument("--threads", type=int, default=0, help="threads for the teacher (default: TensorFlow's)")
    t = sub.add_parser("train", help="fit the student and measure it against the teacher on held-out tracks")
    t.add_argument("--collections", default="gtzan,debian", help="comma-separated (default gtzan,debian)")
    t.add_argument("--epochs", type=int, default=30, help="most epochs (plateau schedule; ignored with --minutes)")
    t.add_argument("--minutes", type=float, help="train this long: cosine learning rate over the wall time")
    t.add_argument("--width", type=float, default=1.0, help="channel multiplier")
    t.add_argument("--batch", type=int, default=32)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--shift", type=int, default=0, help="augment: move each patch up to this many frames")
    t.add_argument("--gain-db", type=float, default=0.0, help="augment: scale each patch's power up to this many dB")
    t.add_argument("--refit", action="store_true", help="also refit the decider on the student's GTZAN rows")
    t.add_argument("--head-weight", type=float, default=0.0, help="also learn the shipped genre head's logits"
                   " (a fixed map of the penultimate; mean squared error, their spread 1) with this weight")
    t.add_argument("--out", help="run folder under runs/distill/ (default: runs/distill itself)")
    m = sub.add_parser("measure", help="measure a trained student again (e.g. with --refit)")
    m.add_argument("--collections", default="gtzan,debian")
    m.add_argument("--refit", action="store_true")
    m.add_argument("--windows", type=int, help="hear at most this many of each held-out track's windows, spread"
                   " evenly (a scan plans 10; default: all of them)")
    m.add_argument("--out")
    b = sub.add_parser("bands", help="the cascade's bands on the tracks the student learnt from (to choose one)")
    b.add_argument("--collections", default="gtzan,debian")
    b.add_argument("--windows", type=int, default=10, help="hear at most this many of each track's windows")
    b.add_argument("--out")
    h = sub.add_parser("ship", help="ship a trained student with the default model: ONNX export, its "
                       "refitted decider, the band chosen on the tracks it learnt from (card: student)")
    h.add_argument("--out", help="run folder under runs/distill/")
    h.add_argument("--collections", default="gtzan,debian,more,extra")
    h.add_argument("--windows", type=int, default=10, help="hear at most this many of each track's windows")
    h.add_argument("--unseen", help="comma-separated collections the student did not learn from: their "
                   "agreement at every band, whole")
    h.add_argument("--goal", type=float, default=0.97, help="agreement with the teacher chain the band must reach")
    h.add_argument("--model", help="the default model's folder (default: the installed one)")
    args = ap.parse_args(argv)
    return {"embed": cmd_embed, "train": cmd_train, "measure": cmd_measure, "bands": cmd_bands,
            "ship": cmd_ship}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
