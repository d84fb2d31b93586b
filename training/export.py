"""Export a shipped Keras model to LiteRT (``.tflite``) and check it against Keras.

    python -m training.export tagger/models/artifacts/gtzan-cnn-bilstm [--int8]
    python -m training.export tagger/models/artifacts/musicnn-msd --tap penultimate [--int8]

Writes ``model.tflite`` beside a ``keras_patches`` model's ``.keras`` file (or
``TAP.tflite``, the musicnn network up to the layer its heads read) and
records it in ``card.json`` under ``"runtimes"``, where ``tagger.models.deep``
finds it.

The batch is fixed (``--batch``, default one track's windows): TFLite cannot
convert the BiLSTM with a dynamic batch, and LiteRT's cost per patch hardly
depends on the batch, so a batch that a usual track fills wastes least on
padding. The export is judged on real GTZAN clips decoded and cut exactly as
inference does (``tagger.audio.load_clip`` windows → ``tagger.features.mel_patches``):
track-level probabilities (mean over patches; for a musicnn front end, those
of every installed sklearn head reading the tap) against Keras's, max absolute
difference and how often the top genre agrees. With ``--int8`` a dynamic-range
int8 export is made as well and shipped only if its top genre agrees with
Keras on at least ``--min-agreement`` of the clips and is no slower than fp32;
otherwise the fp32 export is shipped.
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


def file_sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def clip_patches(paths: list[Path], window_patches) -> list[np.ndarray]:
    """Each file's patches as inference makes them: ``tagger.audio.load_clip`` windows
    → ``window_patches(window, sr)``, concatenated per file."""
    from tagger import audio

    out = []
    for p in paths:
        clip = audio.load_clip(p)
        out.append(np.concatenate([window_patches(w, clip.sr) for w in clip.windows]))
    return out


def run_clips(forward, per_clip: list[np.ndarray]) -> tuple[list[np.ndarray], float]:
    """``forward`` on each clip's patches, one clip per call as a worker runs them.

    Returns the per-clip outputs and the seconds spent in ``forward``.
    """
    outs, seconds = [], 0.0
    for x in per_clip:
        t = time.perf_counter()
        outs.append(np.asarray(forward(x)))
        seconds += time.perf_counter() - t
    return outs, seconds


def compare(reference: np.ndarray, other: np.ndarray) -> dict:
    """Max absolute difference of track probabilities and the share of equal top genres."""
    same_top = reference.argmax(axis=1) == other.argmax(axis=1)
    return {
        "max_abs_diff": float(np.abs(reference - other).max()),
        "mean_abs_diff": float(np.abs(reference - other).mean()),
        "top_genre_agreement": round(float(same_top.mean()), 4),
        "top_genre_changes": int((~same_top).sum()),
    }


class Subject:
    """What is exported and how its outputs become track probabilities to compare.

    ``model`` is the Keras model converted; ``window_patches`` makes its input
    from one analysis window; ``judge(per_clip_outputs)`` returns
    ``{name: (n_clips, n_labels) probabilities}``: for a patch classifier its
    own track probabilities, for a musicnn front end those of every installed
    head that reads this tap (the outputs themselves are embeddings).
    """

    def __init__(self, doc: dict, art: Path, tap: str):
        from tagger import features
        from tagger.models.base import Card

        card = Card.read(art)
        self.tap = None
        if doc["kind"] == "keras_patches":
            import keras

            import tagger.models.layers  # noqa: F401  registers the custom layers

            self.model = keras.saving.load_model(art / doc["file"], compile=False)
            self.window_patches = lambda w, sr: features.mel_patches(w, sr)[..., None]
            self.judge = lambda outs: {card.name: np.stack([o.mean(axis=0) for o in outs])}
            self.out_name = "model.tflite"
        elif doc["kind"] == "musicnn":
            import keras

            from tagger.models.pretrained import MusicnnModel

            net = MusicnnModel(card).network
            self.tap = tap
            self.model = keras.Model(net.input, net.get_layer(tap).output, name=f"{card.name}-{tap}")
            self.window_patches = features.musicnn_window_patches
            self.heads = _heads_reading(card.name, tap)
            self.judge = lambda outs: {name: head(outs) for name, head in self.heads.items()}
            self.out_name = f"{tap}.tflite"
        else:
            raise SystemExit(f"{art}: kind {doc['kind']!r} does not export (keras_patches, musicnn)")


def _heads_reading(frontend: str, tap: str) -> dict:
    """Installed ``musicnn_head`` models on ``frontend``'s ``tap``: name → f(per-clip embeddings) → probs."""
    import joblib

    from tagger.models import registry, transfer

    heads = {}
    for card in registry.cards():
        front = card.extra.get("frontend") or {}
        spec = card.extra.get("head") or {}
        if card.kind != "musicnn_head" or front.get("model") != frontend or front.get("tap") != tap:
            continue
        if spec.get("type") != "sklearn" or tap == "midend":
            continue  # a Keras head or pooled mid-end frames: not judged here
        head = joblib.load(card.path)
        heads[card.name] = (lambda h, s, n: lambda outs: transfer.track_probs(h, "sklearn", s["pool"], outs, n))(
            head, spec, len(card.labels))
    return heads


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
    ap.add_argument("--tap", default="penultimate", help="musicnn models: the layer exported (as the heads read it)")
    ap.add_argument("--out-name", default="", help="file written (default model.tflite, or TAP.tflite for musicnn)")
    args = ap.parse_args(argv)

    from tagger import audio
    from tagger.models import litert, runtime

    runtime.set_threads(1)  # timings as a worker runs them: one thread per process
    runtime.configure_tensorflow()
    from training import datasets

    art = Path(args.artifact)
    doc = json.loads((art / "card.json").read_text(encoding="utf-8"))
    subject = Subject(doc, art, args.tap)
    out_name = args.out_name or subject.out_name
    model = subject.model
    params = int(model.count_params())
    batch = args.batch or audio.DEFAULT_WINDOWS

    items = datasets.load("gtzan", args.root)
    if args.clips:
        items = items[:: max(1, len(items) // args.clips)][: args.clips]
    t = time.perf_counter()
    per_clip = clip_patches([it.path for it in items], subject.window_patches)
    n_patches = sum(len(x) for x in per_clip)
    print(f"{len(items)} clips, {n_patches} patches decoded in {time.perf_counter() - t:.0f} s", flush=True)

    run_clips(model.predict_on_batch, per_clip[:2])  # warm-up (traces the graph)
    keras_outs, keras_s = run_clips(model.predict_on_batch, per_clip)
    keras_ms = 1000 * keras_s / n_patches
    reference = subject.judge(keras_outs)
    print(f"keras: {keras_ms:.2f} ms/patch; judged by {', '.join(reference) or 'nothing'}", flush=True)

    candidates = []
    for int8 in ([False, True] if args.int8 else [False]):
        flat = convert(model, batch, int8)
        label = "dynamic-range int8" if int8 else "fp32"
        if not holds_weights(len(flat), params, int8):
            raise SystemExit(f"{label} export is {len(flat)} bytes for {params} parameters: weights lost")
        path = art / f".{label.split()[-1]}.{out_name}"
        path.write_bytes(flat)
        try:
            runner = litert.Runner(path, threads=1)
            run_clips(runner, per_clip[:2])
            outs, seconds = run_clips(runner, per_clip)
        finally:
            path.unlink()
        raw = max(float(np.abs(a - b).max()) for a, b in zip(keras_outs, outs))
        judged = {name: compare(reference[name], probs) for name, probs in subject.judge(outs).items()}
        entry = {"quantization": label, "batch": batch, "size_bytes": len(flat), "max_abs_diff_outputs": raw}
        if subject.tap is None:
            entry.update(judged[next(iter(judged))])
        else:
            entry["tap"] = subject.tap
            entry["heads"] = judged
            entry["top_genre_agreement"] = min((j["top_genre_agreement"] for j in judged.values()), default=None)
        entry["ms_per_patch"] = round(1000 * seconds / n_patches, 3)
        print(json.dumps(entry), flush=True)
        candidates.append((entry, flat))

    fp32, int8_entry = candidates[0], (candidates[1] if len(candidates) > 1 else None)
    agreement = int8_entry[0]["top_genre_agreement"] if int8_entry else None
    if int8_entry and agreement is not None and agreement >= args.min_agreement \
            and int8_entry[0]["ms_per_patch"] <= fp32[0]["ms_per_patch"]:
        chosen, why = int8_entry, (f"int8 keeps Keras's top genre on {agreement:.1%} "
                                   f"of the clips (≥ {args.min_agreement:.0%}), is faster and 4x smaller")
    elif int8_entry and agreement is not None and agreement >= args.min_agreement:
        chosen, why = fp32, "int8 agrees but was not faster than fp32 here: fp32 shipped"
    elif int8_entry and agreement is None:
        chosen, why = fp32, "no installed head to judge int8 by: fp32 shipped"
    elif int8_entry:
        chosen, why = fp32, (f"int8 kept the top genre on only {agreement:.1%} "
                             f"of the clips (< {args.min_agreement:.0%}): fp32 shipped")
    else:
        chosen, why = fp32, "fp32 only (int8 not tried)"
    (art / out_name).write_bytes(chosen[1])
    if chosen[0]["ms_per_patch"] > keras_ms:
        # start-up still favours LiteRT (no TensorFlow import), steady state does not: say so
        why += f"; slower than Keras per patch here ({chosen[0]['ms_per_patch']:.1f} vs {keras_ms:.1f} ms)"

    load = os.getloadavg()
    doc["runtimes"] = {
        "litert": {"file": out_name, **chosen[0], "chosen": why,
                   # inference ignores an export whose source file changed since (a retrained model)
                   "source": {"file": doc["file"], "sha256": file_sha256(art / doc["file"])}},
        "keras": {"file": doc["file"], "ms_per_patch": round(keras_ms, 3)},
        "evaluated": [e for e, _ in candidates],
        "check": {
            "clips": len(items), "patches": n_patches,
            "data": "shared GTZAN copy, tagger.audio.load_clip defaults, patches as inference cuts them",
            "compared": "track probabilities (mean over the clip's patches, or the heads' on this tap) vs Keras",
            "timing": ("one clip per call, as a worker runs them; one thread (runtime.set_threads(1)); "
                       f"load average {load[0]:.1f} on {os.cpu_count()} cores, so a quiet machine is faster"),
            "runtime": "ai-edge-litert Interpreter (tagger.models.litert.Runner)",
            "command": "python -m training.export " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
        },
    }
    write_card(art, **doc)
    print(f"wrote {art / out_name} ({chosen[0]['quantization']}); {why}")
    return doc["runtimes"]


if __name__ == "__main__":
    main()
