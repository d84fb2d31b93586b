"""Latency of ``POST /v1/predict`` on a 3-minute MP3, cold and warm, as a client sees it.

    .venv/bin/python bench/bench_serve.py [--model NAME] [--warm 30] [--cold 3] [--concurrent 4]

The MP3 is six GTZAN clips joined and re-encoded by ffmpeg (192 kb/s, 44.1 kHz
stereo) in a temp folder. Each cold run starts a fresh ``tagger serve`` process
(the server loads the model and runs one warm-up prediction before it reports
ready) and times its first request; warm runs reuse the last server. Latency is
wall time around the HTTP request (upload included), over loopback.
"""
from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
GTZAN = ROOT.parent / "shared" / "datasets" / "gtzan"


def make_mp3(out: Path, seconds: int = 180) -> Path:
    clips = [sorted((GTZAN / g).glob("*.mp3"))[0] for g in ("blues", "classical", "jazz", "metal", "pop", "rock")]
    listing = out / "clips.txt"
    listing.write_text("".join(f"file '{c}'\n" for c in clips))
    mp3 = out / "three-minutes.mp3"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "concat", "-safe", "0", "-i", str(listing),
                    "-t", str(seconds), "-ac", "2", "-ar", "44100", "-c:a", "libmp3lame", "-b:a", "192k", str(mp3)],
                   check=True)
    return mp3


def start(tmp: Path, model: str) -> tuple[subprocess.Popen, str, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAGGER_")}
    env.update({"TAGGER_DATA_DIR": str(tmp / "data"), "TAGGER_CONFIG": os.devnull,
                "TAGGER_LIBRARY_ROOTS": str(tmp)})
    if model:
        env["TAGGER_MODEL"] = model
    log = tmp / f"serve-{time.monotonic_ns()}.log"
    t0 = time.perf_counter()
    with open(log, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "tagger", "serve", "--port", "0"], env=env,
                                stdout=subprocess.DEVNULL, stderr=err)
    while True:
        if proc.poll() is not None:
            sys.exit(f"tagger serve exited:\n{log.read_text()}")
        m = re.search(r"listening on (http://\S+)", log.read_text(errors="replace"))
        if m:
            try:
                health = requests.get(m.group(1) + "/v1/health", timeout=5).json()
                if health["status"] == "degraded":
                    sys.exit(f"the model did not load:\n{log.read_text()}")
                if health["model_ready"]:
                    return proc, m.group(1), time.perf_counter() - t0
            except requests.ConnectionError:
                pass
        time.sleep(0.1)


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)


def predict(url: str, data: bytes) -> tuple[float, dict]:
    t0 = time.perf_counter()
    r = requests.post(url + "/v1/predict", data=data, timeout=300)
    elapsed = (time.perf_counter() - t0) * 1000
    r.raise_for_status()
    return elapsed, r.json()


def p95(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(0.95 * (len(xs) - 1))))]


def line(name: str, xs: list[float]) -> str:
    return f"{name:<34} median {statistics.median(xs):7.1f} ms   p95 {p95(xs):7.1f} ms   (n={len(xs)})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="", help="model or chain (default: the shipped default chain)")
    ap.add_argument("--cold", type=int, default=3, help="fresh server processes, first request of each")
    ap.add_argument("--warm", type=int, default=30, help="requests on a warm server")
    ap.add_argument("--concurrent", type=int, default=4, help="clients sending at once (0: skip)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-serve-") as d:
        tmp = Path(d)
        mp3 = make_mp3(tmp)
        data = mp3.read_bytes()
        print(f"input: {mp3.name}, {len(data) / 1e6:.2f} MB, 180 s, 192 kb/s; {os.cpu_count()} CPUs, "
              f"load average {os.getloadavg()[0]:.1f}")

        starts, cold, proc, url = [], [], None, ""
        for _ in range(args.cold):
            if proc is not None:
                stop(proc)
            proc, url, ready = start(tmp, args.model)
            starts.append(ready * 1000)
            ms, doc = predict(url, data)
            cold.append(ms)
        try:
            warm, decode, model_ms = [], [], []
            for _ in range(args.warm):
                ms, doc = predict(url, data)
                warm.append(ms)
                decode.append(doc["timings_ms"]["decode"])
                model_ms.append(doc["timings_ms"]["predict"])
            print(f"model: {doc['model']} {doc['version']} (decided_by {doc['decided_by']}), "
                  f"{doc['windows']} windows, genre {doc['genre']} {doc['confidence']:.2f}")
            print(line("server start → ready", starts))
            print(line("cold: first request", cold))
            print(line("warm: request (client wall time)", warm))
            print(line("  of which decode (server)", decode))
            print(line("  of which predict (server)", model_ms))
            if args.concurrent:
                lat: list[float] = []
                lock = threading.Lock()

                def client() -> None:
                    for _ in range(5):
                        ms, _ = predict(url, data)
                        with lock:
                            lat.append(ms)

                t0 = time.perf_counter()
                threads = [threading.Thread(target=client) for _ in range(args.concurrent)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                wall = time.perf_counter() - t0
                print(line(f"{args.concurrent} clients at once: request", lat))
                print(f"{'  throughput':<34} {len(lat) / wall:.2f} requests/s")
        finally:
            stop(proc)


if __name__ == "__main__":
    main()
