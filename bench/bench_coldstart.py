"""Cold start of a worker process with the default chain (or another): its exports vs Keras.

Each run is a fresh ``python -c`` that imports the pipeline, loads the default
chain and predicts one real file (as a worker's first job does, without the
database), then reports its wall time, the time to the first prediction
inside the process, and its peak RSS. The Keras runs use a copy of the
artifact without its ``.tflite`` (found first through ``TAGGER_MODEL_DIRS``),
which is exactly what an install without the export runs. For the open-set
default (whose export the ``runtime`` setting chooses) the runs (onnx, litert, keras) differ in
``TAGGER_RUNTIME`` only.

    python bench/bench_coldstart.py [--repeats 3] [--file some.mp3] [--chain A,B]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GTZAN = ROOT.parent / "shared" / "datasets" / "gtzan"

CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
from tagger import config, pipeline
from tagger.models import runtime
runtime.set_threads(1)
t_import = time.perf_counter() - t0
settings = config.load()
runtime.set_precision(settings.precision)  # as a worker does (tagger.workers.processes)
runtime.set_runtime(settings.runtime)
prediction, _ = pipeline.predict_path(sys.argv[1], settings)
t_first = time.perf_counter() - t0
model = pipeline.predictor_for(settings.model, settings.model_dirs).primary()
print(json.dumps({"import_s": t_import, "first_prediction_s": t_first, "genre": prediction.genre,
                  "model": model.card.name, "runtime": getattr(model, "runtime", type(model).__name__),
                  "tensorflow_imported": "tensorflow" in sys.modules,
                  "sklearn_imported": "sklearn" in sys.modules, "librosa_imported": "librosa" in sys.modules,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run_once(path: Path, env: dict) -> dict:
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", CHILD, str(path)], env=env, capture_output=True, text=True,
                         cwd=ROOT)
    wall = time.perf_counter() - t
    if out.returncode:
        raise SystemExit(out.stderr[-3000:])
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    doc["process_wall_s"] = wall  # includes interpreter start and exit (TensorFlow's exit is slow)
    return doc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--file", default=str(GTZAN / "rock" / "rock.00003.mp3"))
    ap.add_argument("--chain", default="",
                    help="model chain a worker loads (default: the shipped default chain); its first must be "
                         "the open-set default or a keras_patches model with an export")
    args = ap.parse_args()

    from tagger.models import registry

    chain = args.chain or ",".join(registry.default_chain())
    name = chain.split(",")[0]
    base = {k: v for k, v in os.environ.items() if not k.startswith("TAGGER_")}
    base.update(TAGGER_MODEL=chain, TAGGER_CONFIG=os.devnull)
    with tempfile.TemporaryDirectory() as tmp:
        if registry.find(name).kind == "musicnn_openset":
            setups = {kind: {**base, "TAGGER_RUNTIME": kind} for kind in ("onnx", "litert", "keras")}
        else:
            keras_dir = Path(tmp) / "keras-only"
            shutil.copytree(registry.ARTIFACTS / name, keras_dir / name, ignore=shutil.ignore_patterns("*.tflite"))
            setups = {"litert": base, "keras": {**base, "TAGGER_MODEL_DIRS": str(keras_dir)}}
        results: dict[str, list[dict]] = {k: [] for k in setups}
        for _ in range(args.repeats):  # alternate, so both see the same machine load
            for label, env in setups.items():
                results[label].append(run_once(Path(args.file), env))
    print(f"model {name}, file {Path(args.file).name}, {args.repeats} runs each, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    for label, runs in results.items():
        med = lambda key: statistics.median(r[key] for r in runs)  # noqa: E731
        r0 = runs[0]
        print(f"{label:7s} runtime={r0['runtime']:7s} imported: tensorflow {r0['tensorflow_imported']!s:5s} "
              f"sklearn {r0['sklearn_imported']!s:5s} librosa {r0['librosa_imported']!s:5s} "
              f"import {med('import_s'):.2f} s, first prediction {med('first_prediction_s'):.2f} s, "
              f"process {med('process_wall_s'):.2f} s, peak RSS {med('peak_rss_mb'):.0f} MB, "
              f"genre {r0['genre']}")


if __name__ == "__main__":
    main()
