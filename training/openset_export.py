"""The open-set default's two musicnn networks as one LiteRT model, checked against Keras.

    python -m training.openset_export [--int8] [--batch N]

The default chain reads three taps of two networks on every patch: musicnn-msd's
penultimate layer and tags and musicnn-mtt's tags (``OpenSetModel.window_rows``,
300 numbers). This writes them as one ``.tflite`` (input ``(batch, 187, 96)``,
output ``(batch, 300)``) into the default model's folder and records it in its
card under ``runtimes.litert`` with the digests of both weight files: a worker
then runs it with LiteRT and never imports TensorFlow (``tagger.models.openset``).

The check is the product's own: every track of the cached collections
(``training.openset_embed``: the shared GTZAN clips and, when cached, the Debian
soundtracks) decoded and cut as a scan does, run through the export, and the
shipped decider heard progressively on those rows and on the cached float32
Keras rows: same genre, same written-or-not, largest confidence change. int8
(dynamic range) is tried with ``--int8`` and shipped only if it keeps every
written-or-not decision and the genre of every written track and is faster.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
ART = ROOT / "tagger" / "models" / "artifacts" / "gtzan-musicnn-openset"
OUT_NAME = "frontend.tflite"
#: musicnn-msd alone, for the windows heard after the card's ``mtt_windows`` (``--later``)
LATER_NAME = "frontend-msd.tflite"
#: each network alone for ONNX Runtime (``--onnx``): msd's first 250 numbers of a row, mtt's last 50
ONNX_NAMES = {"msd": "musicnn-msd.onnx", "mtt": "musicnn-mtt.onnx"}


def combined_model(bfloat16: bool = False):
    """One Keras model: patches ``(n, 187, 96)`` → ``(n, 300)`` rows as ``OpenSetModel.window_rows``
    (``bfloat16``: in the precision a worker computes in where the CPU has it, ``runtime.compute_dtype``)."""
    import keras

    from tagger.models import registry
    from tagger.models.pretrained import MusicnnModel

    msd = MusicnnModel(registry.find("musicnn-msd"), bfloat16_verified=bfloat16).network
    mtt = MusicnnModel(registry.find("musicnn-mtt"), bfloat16_verified=bfloat16).network
    inp = keras.Input(shape=msd.input.shape[1:], name="patches")
    a = keras.Model(msd.input, [msd.get_layer("penultimate").output, msd.get_layer("tags").output])(inp)
    b = keras.Model(mtt.input, mtt.get_layer("tags").output)(inp)
    out = keras.layers.Concatenate(axis=-1, name="rows")([a[0], a[1], b])
    return keras.Model(inp, out, name="openset-frontend")


def msd_model(bfloat16: bool = False):
    """musicnn-msd alone: patches ``(n, 187, 96)`` → ``(n, 250)``, the first 250 numbers of a row
    (penultimate, tags): what ``OpenSetModel.later_window_probs`` needs past ``mtt_windows``."""
    import keras

    from tagger.models import registry
    from tagger.models.pretrained import MusicnnModel

    msd = MusicnnModel(registry.find("musicnn-msd"), bfloat16_verified=bfloat16).network
    inp = keras.Input(shape=msd.input.shape[1:], name="patches")
    a = keras.Model(msd.input, [msd.get_layer("penultimate").output, msd.get_layer("tags").output])(inp)
    out = keras.layers.Concatenate(axis=-1, name="rows")([a[0], a[1]])
    return keras.Model(inp, out, name="openset-frontend-msd")


def mtt_model():
    """musicnn-mtt's tags alone: patches ``(n, 187, 96)`` → ``(n, 50)``, the last 50 numbers of a row."""
    import keras

    from tagger.models import registry
    from tagger.models.pretrained import MusicnnModel

    mtt = MusicnnModel(registry.find("musicnn-mtt"), bfloat16_verified=False).network
    inp = keras.Input(shape=mtt.input.shape[1:], name="patches")
    out = keras.Model(mtt.input, mtt.get_layer("tags").output)(inp)
    return keras.Model(inp, out, name="openset-frontend-mtt")


def gtzan_sample(clips: int) -> list:
    """The first ``clips`` shared GTZAN clips of each genre."""
    from training import datasets

    per_genre: dict[str, int] = {}
    items = []
    for it in datasets.gtzan(ROOT.parent / "shared" / "datasets" / "gtzan"):
        if per_genre.get(it.genre, 0) < clips:
            per_genre[it.genre] = per_genre.get(it.genre, 0) + 1
            items.append(it)
    return items


def onnx_export(art: Path, clips: int, argv: list[str]) -> dict:
    """Write each network as ONNX (``ONNX_NAMES``; tf2onnx, opset 17, any batch) and check the pair
    against the LiteRT export on the windows a scan hears of the first ``clips`` GTZAN clips of each
    genre: the largest difference of the 300 numbers, and the shipped decider heard as a scan hears
    on both: the same tag written or withheld. Timed against LiteRT, interleaved, one thread."""
    try:
        import onnxruntime  # noqa: F401
        import tf2onnx
    except ImportError:
        raise SystemExit("needs tf2onnx and onnxruntime: pip install tf2onnx onnxruntime")
    import tensorflow as tf

    from tagger.models import litert, onnx
    from training.card import write_card
    from training.export import file_sha256
    from training.openset import heard, shipped_decider
    from training.openset_embed import track_windows

    doc = json.loads((art / "card.json").read_text(encoding="utf-8"))
    spec = (tf.TensorSpec((None, 187, 96), tf.float32, name="patches"),)
    for part, build in (("msd", msd_model), ("mtt", mtt_model)):
        tf2onnx.convert.from_keras(build(), input_signature=spec, opset=17, output_path=str(art / ONNX_NAMES[part]))
    ort_rows = onnx.Frontend(art / ONNX_NAMES["msd"], art / ONNX_NAMES["mtt"], threads=1)
    lite = litert.Runner(art / doc["runtimes"]["litert"]["file"], threads=1)
    dec = shipped_decider(art, doc)
    t, stop, give_up = float(doc["threshold"]), float(doc["early_stop"]), float(doc.get("give_up", 0.0))
    items = gtzan_sample(clips)
    worst, same, seconds, n = 0.0, 0, {"onnx": 0.0, "litert": 0.0}, 0
    for i, it in enumerate(items):
        x = track_windows(Path(it.path))
        rows = {}
        for k in (("onnx", "litert") if i % 2 == 0 else ("litert", "onnx")):
            t0 = time.perf_counter()
            rows[k] = np.concatenate([ort_rows.rows(x[s:s + 3]) if k == "onnx" else lite(x[s:s + 3])
                                      for s in range(0, len(x), 3)])
            seconds[k] += time.perf_counter() - t0
        worst = max(worst, float(np.abs(rows["onnx"] - rows["litert"]).max()))
        pa, pb = heard(dec, rows["litert"], stop, give_up)[0], heard(dec, rows["onnx"], stop, give_up)[0]
        wa, wb = pa.max() >= t, pb.max() >= t
        same += (wa == wb) and (not wa or int(pa.argmax()) == int(pb.argmax()))
        n += len(x)
    entry = {"files": dict(ONNX_NAMES), "opset": 17, "converter": f"tf2onnx {tf2onnx.__version__}",
             "sources": {name: {"file": doc["runtimes"]["litert"]["sources"][name]["file"],
                                "sha256": doc["runtimes"]["litert"]["sources"][name]["sha256"]}
                         for name in ("musicnn-msd", "musicnn-mtt")},
             "size_bytes": {k: (art / f).stat().st_size for k, f in ONNX_NAMES.items()},
             "sha256": {k: file_sha256(art / f) for k, f in ONNX_NAMES.items()},
             "check": {"clips": len(items), "patches": n, "same_tag_written_or_withheld_as_litert": int(same),
                       "max_abs_diff_from_litert": round(worst, 7),
                       "ms_per_patch_both_networks": round(1000 * seconds["onnx"] / n, 1),
                       "litert_ms_per_patch_both_networks": round(1000 * seconds["litert"] / n, 1),
                       "timing": f"batches of 3, one thread, interleaved per clip, load average {os.getloadavg()[0]:.1f}",
                       "command": "python -m training.openset_export " + " ".join(shlex.quote(a) for a in argv)}}
    if worst > 1e-3 or same != len(items):
        for f in ONNX_NAMES.values():
            (art / f).unlink()
        raise SystemExit(f"the ONNX export differs from LiteRT's ({worst}, {same} of {len(items)}): not shipped")
    doc["runtimes"]["onnx"] = entry
    write_card(art, **doc)
    print(json.dumps(entry, indent=1))
    return entry


def later_export(art: Path, batch: int, clips: int, argv: list[str]) -> dict:
    """Write ``LATER_NAME`` beside the combined export and check it against it on the windows a
    scan hears of the first ``clips`` shared GTZAN clips of each genre: the same 250 numbers
    (the same subgraph, so to float rounding), and the time of each per patch, interleaved."""
    from tagger.models import litert
    from training.card import write_card
    from training.export import convert, holds_weights
    from training.openset_embed import track_windows

    doc = json.loads((art / "card.json").read_text(encoding="utf-8"))
    export = doc["runtimes"]["litert"]
    if int(export.get("batch", 1)) != batch:
        raise SystemExit(f"the combined export takes batches of {export.get('batch')}, not {batch}")
    model = msd_model()
    flat = convert(model, batch, False)
    if not holds_weights(len(flat), int(model.count_params()), False):
        raise SystemExit(f"musicnn-msd export is {len(flat)} bytes: weights lost")
    (art / LATER_NAME).write_bytes(flat)
    both, msd = litert.Runner(art / export["file"], threads=1), litert.Runner(art / LATER_NAME, threads=1)
    items = gtzan_sample(clips)
    worst, t_both, t_msd, n = 0.0, 0.0, 0.0, 0
    for it in items:
        x = track_windows(Path(it.path))
        t = time.perf_counter()
        a = both(x)
        t_both += time.perf_counter() - t
        t = time.perf_counter()
        b = msd(x)
        t_msd += time.perf_counter() - t
        worst = max(worst, float(np.abs(a[:, :250] - b).max()))
        n += len(x)
    entry = {"file": LATER_NAME, "size_bytes": len(flat), "outputs": "the first 250 of a row: musicnn-msd's "
             "penultimate layer and tags", "used": "on the windows heard after the card's mtt_windows",
             "check": {"clips": len(items), "patches": n, "max_abs_diff_from_the_combined_export": round(worst, 7),
                       "ms_per_patch": round(1000 * t_msd / n, 2),
                       "combined_export_ms_per_patch": round(1000 * t_both / n, 2),
                       "timing": f"one thread, interleaved per clip, load average {os.getloadavg()[0]:.1f}",
                       "command": "python -m training.openset_export " + " ".join(shlex.quote(a) for a in argv)}}
    if worst > 1e-3:
        (art / LATER_NAME).unlink()
        raise SystemExit(f"the musicnn-msd export differs from the combined one by {worst}: not shipped")
    export["later"] = entry
    write_card(art, **doc)
    print(json.dumps(entry, indent=1))
    return entry


def collections() -> dict[str, tuple[list[np.ndarray], list[np.ndarray]]]:
    """Each cached collection's tracks: their patches, decoded and cut as a scan does, and
    their cached Keras float32 rows (``training.openset_embed``)."""
    from training.openset import track_rows
    from training.openset_embed import load, track_windows

    out = {}
    for name in ("gtzan", "debian"):
        try:
            data = load(name)
        except SystemExit:
            continue
        out[name] = ([track_windows(Path(str(p))) for p in data["paths"]], track_rows(data))
        print(f"{name}: {len(out[name][0])} tracks decoded", flush=True)
    return out


def check(forward, decider, stop: float, threshold: float, tracks: dict) -> tuple[dict, float, int]:
    """Every collection's tracks through ``forward``: the decisions against the cached Keras
    float32 rows. Returns ``(per collection figures, seconds in forward, patches)``."""
    from training.openset import heard

    out, seconds, patches = {}, 0.0, 0
    for name, (xs, ref_rows) in tracks.items():
        same = written_same = written_genre_same = 0
        diffs, raw = [], 0.0
        for x, ref in zip(xs, ref_rows):
            t = time.perf_counter()
            rows = np.asarray(forward(x), dtype=np.float32)
            seconds += time.perf_counter() - t
            patches += len(x)
            raw = max(raw, float(np.abs(rows - ref).max()))
            pa, pb = heard(decider, ref, stop)[0], heard(decider, rows, stop)[0]
            ga, gb = int(np.argmax(pa)), int(np.argmax(pb))
            wa, wb = pa.max() >= threshold, pb.max() >= threshold
            same += ga == gb
            written_same += wa == wb
            written_genre_same += (wa == wb) and (not wa or ga == gb)
            diffs.append(abs(float(pa.max()) - float(pb.max())))
        same, written_same, written_genre_same = int(same), int(written_same), int(written_genre_same)
        out[name] = {"tracks": len(ref_rows), "same_genre": same, "same_written_or_not": written_same,
                     "same_tag_written": written_genre_same,
                     "max_abs_diff_rows": round(raw, 6),
                     "max_confidence_difference": round(max(diffs), 4),
                     "median_confidence_difference": round(float(np.median(diffs)), 6)}
    return out, seconds, patches


def keeps_every_tag(figures: dict) -> bool:
    return all(f["same_tag_written"] == f["tracks"] for f in figures.values())


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m training.openset_export", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--int8", action="store_true", help="also try dynamic-range int8; ship it if it keeps every tag")
    ap.add_argument("--batch", type=int, default=1,
                    help="the export's fixed batch (default 1: progressive hearing asks 3, then 2 patches)")
    ap.add_argument("--model", default=str(ART), help="the open-set model's folder")
    ap.add_argument("--later", action="store_true",
                    help=f"only write {LATER_NAME} (musicnn-msd alone, for windows past the card's mtt_windows) "
                         "and check it against the combined export")
    ap.add_argument("--onnx", action="store_true",
                    help="only write each network as ONNX for ONNX Runtime and check the pair against the LiteRT "
                         "export (needs tf2onnx)")
    ap.add_argument("--clips", type=int, default=10, help="GTZAN clips per genre for --later's and --onnx's check")
    args = ap.parse_args(argv)
    argv_ = list(argv if argv is not None else sys.argv[1:])
    if args.onnx:
        from tagger.models import runtime

        runtime.set_threads(1)
        return onnx_export(Path(args.model), args.clips, argv_)
    if args.later:
        from tagger.models import runtime

        runtime.set_threads(1)
        return later_export(Path(args.model), args.batch, args.clips, argv_)

    import joblib

    from tagger.models import litert, registry, runtime
    from training.card import write_card
    from training.export import convert, file_sha256, holds_weights

    runtime.set_threads(1)  # as a worker runs it: one thread per process
    runtime.configure_tensorflow()
    art = Path(args.model)
    doc = json.loads((art / "card.json").read_text(encoding="utf-8"))
    decider = joblib.load(art / doc["file"])
    stop, threshold = float(doc["early_stop"]), float(doc["threshold"])
    model = combined_model()
    params = int(model.count_params())

    import tensorflow as tf

    spec = tf.TensorSpec([None, *model.inputs[0].shape[1:]], tf.float32)
    keras_fwd = tf.function(lambda x: model(x, training=False), input_signature=[spec], autograph=False)
    keras_fwd(np.zeros((3, *model.inputs[0].shape[1:]), np.float32))
    tracks = collections()
    # the reference rows are the cached Keras ones; Keras is only timed, on the first 20 clips
    sample = {"gtzan": tuple(v[:20] for v in tracks["gtzan"])}
    _, keras_s, n = check(lambda x: keras_fwd(x).numpy(), decider, stop, threshold, sample)
    keras_ms = 1000 * keras_s / max(n, 1)
    print(f"keras float32: {keras_ms:.2f} ms/patch", flush=True)

    tried = []
    for int8 in ([False, True] if args.int8 else [False]):
        label = "dynamic-range int8" if int8 else "fp32"
        flat = convert(model, args.batch, int8)
        if not holds_weights(len(flat), params, int8):
            raise SystemExit(f"{label} export is {len(flat)} bytes for {params} parameters: weights lost")
        path = art / f".{label.split()[-1]}.{OUT_NAME}"
        path.write_bytes(flat)
        try:
            runner = litert.Runner(path, threads=1)
            runner(np.zeros((3, *model.inputs[0].shape[1:]), np.float32))
            figures, seconds, n = check(runner, decider, stop, threshold, tracks)
        finally:
            path.unlink()
        entry = {"quantization": label, "batch": args.batch, "size_bytes": len(flat),
                 "ms_per_patch": round(1000 * seconds / max(n, 1), 3), "check": figures}
        print(json.dumps(entry), flush=True)
        tried.append((entry, flat))

    fp32 = tried[0]
    if not keeps_every_tag(fp32[0]["check"]):
        raise SystemExit("the fp32 export changes a written tag: not shipped")
    chosen, why = fp32, "fp32 (int8 not tried)"
    if len(tried) > 1:
        q = tried[1]
        if keeps_every_tag(q[0]["check"]) and q[0]["ms_per_patch"] < fp32[0]["ms_per_patch"]:
            chosen, why = q, "int8 keeps every tag written or withheld and is faster"
        elif keeps_every_tag(q[0]["check"]):
            why = "int8 keeps every tag but is not faster here: fp32 shipped"
        else:
            why = "int8 changes a tag written or withheld: fp32 shipped"
    (art / OUT_NAME).write_bytes(chosen[1])
    load = os.getloadavg()
    sources = {name: {"file": registry.find(name).file, "sha256": file_sha256(registry.find(name).path)}
               for name in ("musicnn-msd", "musicnn-mtt")}
    doc["runtimes"] = {
        "litert": {"file": OUT_NAME, **{k: v for k, v in chosen[0].items() if k != "check"}, "chosen": why,
                   # inference ignores an export made from other weights than those installed
                   "sources": sources},
        "keras": {"ms_per_patch": round(keras_ms, 3), "note": "float32, tf.function, one thread"},
        "evaluated": [e for e, _ in tried],
        "check": {
            "compared": "the shipped decider heard progressively on the export's rows vs the cached Keras "
                        "float32 rows (training.openset_embed): genre, written or not, confidence",
            "timing": ("every track's patches in one call, one thread (runtime.set_threads(1)); "
                       f"load average {load[0]:.1f} on {os.cpu_count()} cores"),
            "runtime": "ai-edge-litert Interpreter (tagger.models.litert.Runner)",
            "command": "python -m training.openset_export " + " ".join(shlex.quote(a) for a in
                                                                         (argv if argv is not None else sys.argv[1:])),
        },
    }
    write_card(art, **doc)
    print(f"wrote {art / OUT_NAME} ({chosen[0]['quantization']}); {why}")
    return doc["runtimes"]


if __name__ == "__main__":
    main()
