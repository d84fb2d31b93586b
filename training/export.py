"""Export a shipped Keras patch model to LiteRT (``.tflite``) and check it against Keras.

    python -m training.export tagger/models/artifacts/gtzan-cnn-bilstm [--int8]

Writes ``model.tflite`` beside the ``.keras`` file and records it in
``card.json`` under ``"runtimes"``, where ``tagger.models.deep`` finds it.

The batch is fixed (``--batch``, default one track's windows): TFLite cannot
convert the BiLSTM with a dynamic batch, and LiteRT's cost per patch hardly
depends on the batch, so a batch that a usual track fills wastes least on
padding. The export is judged on real GTZAN clips decoded and cut exactly as
inference does (``tagger.audio.load_clip`` windows → ``tagger.features.mel_patches``):
track-level probabilities (mean over patches) against Keras's, max absolute
difference and how often the top genre agrees. With ``--int8`` a dynamic-range
int8 export is made as well and shipped only if its top genre agrees with
Keras on at least ``--min-agreement`` of the clips; otherwise the fp32 export
is shipped.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from training.card import write_card


def convert(model, batch: int, int8: bool) -> bytes:
    """A ``.tflite`` flatbuffer of the Keras ``model`` for inputs of a fixed ``batch``.

    ``int8`` applies dynamic-range quantisation (int8 weights, float activations).
    """
    import keras
    import tensorflow as tf

    shape = [batch, *[int(d) for d in model.inputs[0].shape[1:]]]
    with tempfile.TemporaryDirectory() as tmp:
        archive = keras.export.ExportArchive()
        archive.track(model)  # without tracking, the saved graph would hold no variables
        archive.add_endpoint("serve", lambda x: model(x, training=False),
                             input_signature=[tf.TensorSpec(shape, tf.float32)])
        archive.write_out(tmp, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp)
        if int8:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        return converter.convert()


def holds_weights(size: int, params: int, int8: bool) -> bool:
    """Whether a flatbuffer of ``size`` bytes can hold ``params`` weights (1 byte each for int8, else 4).

    A conversion that lost its variables still runs, so size is the cheap first check;
    the probability comparison is the real one.
    """
    return size >= 0.9 * params * (1 if int8 else 4)


def clip_patches(paths: list[Path]) -> list[np.ndarray]:
    """Log-mel patches of each file as inference makes them, each ``(n_i, 128, 128, 1)``."""
    from tagger import audio, features

    out = []
    for p in paths:
        clip = audio.load_clip(p)
        out.append(np.concatenate([features.mel_patches(w, clip.sr) for w in clip.windows])[..., None])
    return out


def track_probs(forward, per_clip: list[np.ndarray]) -> tuple[np.ndarray, float]:
    """Mean patch probabilities per clip, one clip per call as a worker runs them.

    Returns ``(n_clips, n_labels)`` and the seconds spent in ``forward``.
    """
    rows, seconds = [], 0.0
    for x in per_clip:
        t = time.perf_counter()
        probs = np.asarray(forward(x))
        seconds += time.perf_counter() - t
        rows.append(probs.mean(axis=0))
    return np.stack(rows), seconds


def compare(reference: np.ndarray, other: np.ndarray) -> dict:
    """Max absolute difference of track probabilities and the share of equal top genres."""
    same_top = reference.argmax(axis=1) == other.argmax(axis=1)
    return {
        "max_abs_diff": float(np.abs(reference - other).max()),
        "mean_abs_diff": float(np.abs(reference - other).mean()),
        "top_genre_agreement": round(float(same_top.mean()), 4),
        "top_genre_changes": int((~same_top).sum()),
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m training.export", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("artifact", help="model directory holding card.json and the .keras file")
    ap.add_argument("--int8", action="store_true", help="also try dynamic-range int8; ship it if it agrees")
    ap.add_argument("--batch", type=int, default=0, help="fixed batch (default: tagger.audio.DEFAULT_WINDOWS)")
    ap.add_argument("--min-agreement", type=float, default=0.99,
                    help="share of clips whose top genre int8 must keep to be shipped")
    ap.add_argument("--root", default=None, help="GTZAN folder (default ../shared/datasets/gtzan)")
    ap.add_argument("--clips", type=int, default=0, help="check on this many clips only (0: all)")
    ap.add_argument("--out-name", default="model.tflite")
    args = ap.parse_args(argv)

    from tagger import audio
    from tagger.models import litert, runtime

    runtime.set_threads(1)  # timings as a worker runs them: one thread per process
    runtime.configure_tensorflow()
    import keras

    import tagger.models.layers  # noqa: F401  registers the custom layers
    from training import datasets

    art = Path(args.artifact)
    doc = json.loads((art / "card.json").read_text(encoding="utf-8"))
    if doc["kind"] != "keras_patches":
        raise SystemExit(f"{art}: kind {doc['kind']!r}; only keras_patches models export this way")
    model = keras.saving.load_model(art / doc["file"], compile=False)
    params = int(model.count_params())
    batch = args.batch or audio.DEFAULT_WINDOWS

    items = datasets.load("gtzan", args.root)
    if args.clips:
        items = items[:: max(1, len(items) // args.clips)][: args.clips]
    t = time.perf_counter()
    per_clip = clip_patches([it.path for it in items])
    n_patches = sum(len(x) for x in per_clip)
    print(f"{len(items)} clips, {n_patches} patches decoded in {time.perf_counter() - t:.0f} s", flush=True)

    track_probs(model.predict_on_batch, per_clip[:2])  # warm-up (traces the graph)
    keras_probs, keras_s = track_probs(model.predict_on_batch, per_clip)
    keras_ms = 1000 * keras_s / n_patches
    print(f"keras: {keras_ms:.2f} ms/patch", flush=True)

    candidates = []
    for int8 in ([False, True] if args.int8 else [False]):
        flat = convert(model, batch, int8)
        label = "dynamic-range int8" if int8 else "fp32"
        if not holds_weights(len(flat), params, int8):
            raise SystemExit(f"{label} export is {len(flat)} bytes for {params} parameters: weights lost")
        path = art / (f".{label.split()[-1]}.{args.out_name}")
        path.write_bytes(flat)
        try:
            runner = litert.Runner(path, threads=1)
            track_probs(runner, per_clip[:2])
            probs, seconds = track_probs(runner, per_clip)
        finally:
            path.unlink()
        entry = {"quantization": label, "batch": batch, "size_bytes": len(flat),
                 **compare(keras_probs, probs), "ms_per_patch": round(1000 * seconds / n_patches, 3)}
        print(json.dumps(entry), flush=True)
        candidates.append((entry, flat))

    fp32, int8_entry = candidates[0], (candidates[1] if len(candidates) > 1 else None)
    if int8_entry and int8_entry[0]["top_genre_agreement"] >= args.min_agreement:
        chosen, why = int8_entry, (f"int8 keeps Keras's top genre on {int8_entry[0]['top_genre_agreement']:.1%} "
                                   f"of the clips (≥ {args.min_agreement:.0%}) and is faster and 4x smaller")
    elif int8_entry:
        chosen, why = fp32, (f"int8 kept the top genre on only {int8_entry[0]['top_genre_agreement']:.1%} "
                             f"of the clips (< {args.min_agreement:.0%}): fp32 shipped")
    else:
        chosen, why = fp32, "fp32 only (int8 not tried)"
    (art / args.out_name).write_bytes(chosen[1])

    load = os.getloadavg()
    doc["runtimes"] = {
        "litert": {"file": args.out_name, **chosen[0], "chosen": why},
        "keras": {"file": doc["file"], "ms_per_patch": round(keras_ms, 3)},
        "evaluated": [e for e, _ in candidates],
        "check": {
            "clips": len(items), "patches": n_patches,
            "data": "shared GTZAN copy, tagger.audio.load_clip defaults → tagger.features.mel_patches",
            "compared": "track probabilities (mean over the clip's patches) vs Keras predict_on_batch",
            "timing": ("one clip per call, as a worker runs them; one thread (runtime.set_threads(1)); "
                       f"load average {load[0]:.1f} on {os.cpu_count()} cores, so a quiet machine is faster"),
            "runtime": "ai-edge-litert Interpreter (tagger.models.litert.Runner)",
            "command": "python -m training.export " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
        },
    }
    write_card(art, **doc)
    print(f"wrote {art / args.out_name} ({chosen[0]['quantization']}); {why}")
    return doc["runtimes"]


if __name__ == "__main__":
    main()
