"""Keras, LiteRT and ONNX Runtime running the default model's front end on this CPU.

For musicnn-msd alone and for both networks (the 300 numbers per window the open-set default reads),
ms per 3 s patch in the batches progressive hearing asks for (3 windows, then 2 at a time), one
thread, the runtimes interleaved clip by clip on the windows a scan hears of one GTZAN clip per
genre; the largest difference of each from Keras float32. Keras runs in float32 and, where the CPU
does bfloat16 in hardware (AVX512-BF16, AMX), also in bfloat16, as a worker runs it there. LiteRT
and ONNX Runtime run the files the default model's card ships (``runtimes.litert``,
``runtimes.onnx``), as a worker does. Then, for each light runtime, a fresh process that imports it,
loads both networks and runs one patch: seconds and peak RSS (the runtime alone, not tagger's
start-up; ``bench_coldstart.py`` measures that).

    python bench/bench_runtimes.py [--clips-per-genre 1]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
ART = ROOT / "tagger" / "models" / "artifacts" / "gtzan-musicnn-openset"
STAGES = (3, 2, 2, 2)

COLD = """
import json, sys, time
t = time.perf_counter()
import numpy as np
kind, paths = sys.argv[1], sys.argv[2:]
x = np.zeros((3, 187, 96), np.float32)
if kind == "litert":
    from ai_edge_litert.interpreter import Interpreter
    for p in paths:
        it = Interpreter(model_path=p, num_threads=1)
        it.allocate_tensors()
        i = it.get_input_details()[0]
        for k in range(3):
            it.set_tensor(i["index"], x[k:k + 1]); it.invoke()
else:
    import onnxruntime as ort
    so = ort.SessionOptions(); so.intra_op_num_threads = 1; so.inter_op_num_threads = 1
    for p in paths:
        s = ort.InferenceSession(p, so, providers=["CPUExecutionProvider"])
        s.run(None, {s.get_inputs()[0].name: x})
# VmHWM, not ru_maxrss: the latter keeps the forking parent's peak across exec
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(json.dumps({"seconds": round(time.perf_counter() - t, 2), "peak_rss_mb": round(hwm / 1024)}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips-per-genre", type=int, default=1)
    args = ap.parse_args()
    import onnxruntime as ort

    from tagger.models import litert, onnx, runtime
    from training.openset_embed import track_windows
    from training.openset_export import combined_model, msd_model

    runtime.set_threads(1)
    runtime.configure_tensorflow()
    import tensorflow as tf

    card = json.loads((ART / "card.json").read_text())
    lite_files = {"both": ART / card["runtimes"]["litert"]["file"],
                  "msd": ART / card["runtimes"]["litert"]["later"]["file"]}
    gt = ROOT.parent / "shared" / "datasets" / "gtzan"
    files = [f for g in sorted(os.listdir(gt)) if (gt / g).is_dir()
             for f in sorted((gt / g).glob("*.mp3"))[:args.clips_per_genre]]
    xs = [track_windows(f) for f in files]
    n_patches = sum(len(x) for x in xs)
    print(f"{len(files)} GTZAN clips, {n_patches} patches; onnxruntime {ort.__version__}, "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    onnx_files = {"both": [ART / card["runtimes"]["onnx"]["files"][k] for k in ("msd", "mtt")],
                  "msd": [ART / card["runtimes"]["onnx"]["files"]["msd"]]}
    kerases = {"keras float32": False}
    if runtime.cpu_has_bfloat16():
        kerases["keras bfloat16"] = True
    for part, build in (("both", combined_model), ("msd", msd_model)):
        spec = (tf.TensorSpec((None, 187, 96), tf.float32, name="patches"),)
        run = {}
        for label, bf16 in kerases.items():
            fwd = tf.function(lambda x, m=build(bf16): m(x, training=False), input_signature=list(spec),
                              autograph=False)
            run[label] = lambda b, f=fwd: np.asarray(f(b), np.float32)
        run["litert"] = litert.Runner(lite_files[part], threads=1)
        sessions = [onnx.Session(p, threads=1) for p in onnx_files[part]]
        run["onnxruntime"] = lambda b, ss=sessions: np.concatenate([s(b) for s in ss], axis=1)
        for b in (3, 2):  # warm every batch size up
            for f in run.values():
                f(xs[0][:b])
        seconds = dict.fromkeys(run, 0.0)
        worst = dict.fromkeys(run, 0.0)
        for i, x in enumerate(xs):
            ref = run["keras float32"](x)
            order = list(run) if i % 2 == 0 else list(run)[::-1]
            for k in order:
                t = time.perf_counter()
                out, s = [], 0
                for b in STAGES:
                    if s < len(x):
                        out.append(run[k](x[s:s + b]))
                    s += b
                seconds[k] += time.perf_counter() - t
                out = np.concatenate(out)
                worst[k] = max(worst[k], float(np.abs(out - ref[:len(out)]).max()))
        used = sum(min(len(x), sum(STAGES)) for x in xs)
        what = "musicnn-msd alone" if part == "msd" else "both networks (300 numbers)"
        for k in run:
            print(f"{what:>28}  {k:>14}: {1000 * seconds[k] / used:6.1f} ms per patch, "
                  f"largest difference from Keras float32 {worst[k]:.2g}", flush=True)
    for kind, paths in (("litert", [lite_files["both"], lite_files["msd"]]), ("onnxruntime", onnx_files["both"])):
        out = subprocess.run([sys.executable, "-c", COLD, kind, *map(str, paths)], capture_output=True,
                             text=True, timeout=300)
        line = out.stdout.strip().splitlines()[-1] if out.returncode == 0 else out.stderr[-300:]
        print(f"{'cold start, shipped files':>28}  {kind:>14}: {line}", flush=True)

if __name__ == "__main__":
    main()
