"""Throughput of a scan through Redis with 1 and 2 worker processes, against the embedded default.

Builds a corpus of real music in a temporary folder (GTZAN clips of one genre
joined into 3–6 minute MP3 tracks), then, for each mode, on a fresh copy of
the corpus and a fresh results database:

- ``embedded``: ``tagger scan DIR`` with no broker (the local SQLite queue and
  its own worker processes, one per core by default);
- ``redis-1``, ``redis-2``: ``tagger worker --processes N`` started first and
  warmed up (model loaded), then ``tagger scan DIR --wait`` through Redis.

Rates are tracks per second. ``steady`` excludes start-up: it is measured from
the moment the W-th job finished (W worker processes, each of whose first
job loads the model) to the last one, over the jobs finished in between, from
the analyses' timestamps in the database. ``wall`` is the scan command's
whole run (the embedded one includes starting its workers; the Redis ones do
not, since their workers are already running, as in a deployment).

    python bench/bench_workers.py                 # 16 tracks of 3–6 min
    python bench/bench_workers.py --quick         # CI: 3 one-minute tracks, checks it runs
    python bench/bench_workers.py --tracks 24 --corpus /tmp/corpus   # keep the corpus for reruns
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GTZAN = ROOT.parent / "shared" / "datasets" / "gtzan"
CLIP_SECONDS = 30


def build_corpus(out: Path, n_tracks: int, min_clips: int, max_clips: int) -> list[Path]:
    """``n_tracks`` MP3s, each GTZAN clips of one genre joined end to end (min_clips..max_clips of them).

    Genres take turns; within a genre the clips rotate, so tracks differ.
    Existing tracks in ``out`` are reused.
    """
    genres = sorted(p.name for p in GTZAN.iterdir() if p.is_dir() and any(p.glob("*.mp3")))
    clips = {g: sorted((GTZAN / g).glob("*.mp3")) for g in genres}
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n_tracks):
        genre = genres[i % len(genres)]
        pool = clips[genre]
        n = min_clips + (i * 7) % (max_clips - min_clips + 1)
        chosen = [pool[(i // len(genres) * max_clips + k) % len(pool)] for k in range(n)]
        dest = out / f"{i:03d}-{genre}.mp3"
        if not dest.exists():
            listing = out / f".list{i}.txt"
            listing.write_text("".join(f"file '{c}'\n" for c in chosen))
            partial = dest.with_suffix(".partial.mp3")
            subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "concat", "-safe", "0",
                            "-i", str(listing), "-map_metadata", "-1", "-ac", "2", "-ar", "44100",
                            "-c:a", "libmp3lame", "-b:a", "192k", str(partial)], check=True)
            listing.unlink()
            partial.replace(dest)
        paths.append(dest)
    return paths


def env_for(data_dir: Path, broker_url: str = "", model: str = "", workers: int = 0) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAGGER_")}
    env.update({"TAGGER_DATA_DIR": str(data_dir), "TAGGER_CONFIG": os.devnull})
    if broker_url:
        env["TAGGER_BROKER_URL"] = broker_url
    if model:
        env["TAGGER_MODEL"] = model
    if workers:
        env["TAGGER_WORKERS"] = str(workers)
    return env


def tagger(*args: str, env: dict[str, str], timeout: float = 3600,
           workers: subprocess.Popen | None = None) -> tuple[dict, float]:
    """Run ``tagger ARGS --json``; returns (summary, wall seconds). Gives up if ``workers`` exits."""
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "tagger", *args, "--json"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    while proc.poll() is None:
        if workers is not None and workers.poll() is not None or time.monotonic() - started > timeout:
            proc.kill()
            proc.communicate()
            raise RuntimeError(f"tagger {' '.join(args)}: the workers exited or time ran out")
        time.sleep(0.1)
    out, err = proc.communicate()
    wall = time.monotonic() - started
    if proc.returncode != 0:
        raise RuntimeError(f"tagger {' '.join(args)} failed:\n{err[-3000:]}")
    return json.loads(out), wall


def steady_rate(data_dir: Path, scan_id: int, warm: int) -> tuple[float, int]:
    """Tracks/s between the ``warm``-th finished job and the last; returns (rate, jobs counted)."""
    from sqlalchemy import select

    from tagger.db import schema as s
    from tagger.db.engine import session_scope

    with session_scope(f"sqlite:///{data_dir / 'tagger.sqlite3'}") as db:
        ends = sorted(db.scalars(select(s.Analysis.finished_at).where(
            s.Analysis.scan_id == scan_id, s.Analysis.finished_at.is_not(None))).all())
    if len(ends) <= warm:
        return float("nan"), 0
    span = (ends[-1] - ends[warm - 1]).total_seconds()
    counted = len(ends) - warm
    return (counted / span if span > 0 else float("nan")), counted


def fresh(corpus: list[Path], work: Path, name: str) -> tuple[Path, Path]:
    """A copy of the corpus (tags get written) and an empty data folder for one mode."""
    music, data = work / name / "music", work / name / "data"
    music.mkdir(parents=True)
    data.mkdir(parents=True)
    for p in corpus:
        shutil.copyfile(p, music / p.name)
    return music, data


def run_embedded(corpus, work, model, workers) -> dict:
    music, data = fresh(corpus, work, "embedded")
    summary, wall = tagger("scan", str(music), env=env_for(data, model=model, workers=workers))
    n = workers or os.cpu_count() or 1
    rate, counted = steady_rate(data, summary["scan_id"], n)
    return {"mode": "embedded", "processes": n, "tracks": _done(summary),
            "failed": summary["failed"], "wall_s": wall, "wall_rate": len(corpus) / wall,
            "steady_rate": rate, "steady_jobs": counted}


def run_redis(corpus, work, model, redis_url, processes: int, warmup: Path) -> dict:
    import redis

    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    music, data = fresh(corpus, work, f"redis-{processes}")
    env = env_for(data, broker_url=redis_url, model=model)
    # migrate once, before workers and scanner would each try to on the fresh SQLite file
    subprocess.run([sys.executable, "-m", "tagger", "db", "upgrade"], env=env, check=True, capture_output=True)
    log = open(work / f"redis-{processes}.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "tagger", "worker", "--processes", str(processes)], env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        # warm every process up (model loaded) with as many short jobs as processes, twice over
        warm_dir = work / f"redis-{processes}" / "warmup"
        shutil.copytree(warmup, warm_dir)
        tagger("scan", str(warm_dir), "--wait", "--quiet", env=env, workers=proc)
        summary, wall = tagger("scan", str(music), "--wait", "--quiet", env=env, workers=proc)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(120)
        log.close()
        client.flushdb()
    rate, counted = steady_rate(data, summary["scan_id"], processes)
    return {"mode": f"redis-{processes}", "processes": processes,
            "tracks": _done(summary), "failed": summary["failed"],
            "wall_s": wall, "wall_rate": len(corpus) / wall, "steady_rate": rate, "steady_jobs": counted}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="3 one-minute tracks: checks the bench runs")
    ap.add_argument("--tracks", type=int, default=16)
    ap.add_argument("--corpus", type=Path, help="where to build (or reuse) the corpus (default: a temp folder)")
    ap.add_argument("--redis", default=os.environ.get("TAGGER_BENCH_REDIS", "redis://127.0.0.1:6379/13"),
                    help="a Redis database the bench may flush")
    ap.add_argument("--model", default="", help="model or chain (default: the shipped default chain)")
    ap.add_argument("--workers", type=int, default=0, help="embedded workers (default: one per core)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    n_tracks, clips = (3, (2, 2)) if args.quick else (args.tracks, (6, 12))
    with tempfile.TemporaryDirectory(prefix="tagger-bench-workers-") as tmp:
        work = Path(tmp)
        corpus_dir = args.corpus or work / "corpus"
        started = time.monotonic()
        corpus = build_corpus(corpus_dir, n_tracks, *clips)
        minutes = sum(_duration(p) for p in corpus) / 60
        print(f"corpus: {len(corpus)} MP3 tracks, {minutes:.1f} min of music, "
              f"built in {time.monotonic() - started:.0f} s", file=sys.stderr)
        warmup = work / "warmup"
        warmup.mkdir()
        for i, p in enumerate(build_corpus(work / "warmup-src", 4, 1, 1)):
            shutil.copyfile(p, warmup / f"w{i}.mp3")

        results = [run_embedded(corpus, work, args.model, args.workers)]
        for processes in (1, 2):
            results.append(run_redis(corpus, work, args.model, args.redis, processes, warmup))
    base = results[0]
    for r in results:
        r["steady_vs_embedded"] = r["steady_rate"] / base["steady_rate"]
        r["wall_vs_embedded"] = r["wall_rate"] / base["wall_rate"]
    one, two = results[1], results[2]
    doc = {"tracks": len(corpus), "minutes": round(minutes, 1), "cpus": os.cpu_count(), "results": results,
           "redis2_vs_redis1_steady": two["steady_rate"] / one["steady_rate"]}
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(f"{len(corpus)} tracks ({minutes:.1f} min), {os.cpu_count()} CPUs; tracks/s")
        print(f"{'mode':<10} {'procs':>5} {'done':>5} {'steady':>8} {'wall':>8} {'wall s':>8} "
              f"{'steady/emb':>11} {'wall/emb':>9}")
        for r in results:
            print(f"{r['mode']:<10} {r['processes']:>5} {r['tracks']:>5} {r['steady_rate']:>8.3f} "
                  f"{r['wall_rate']:>8.3f} {r['wall_s']:>8.1f} {r['steady_vs_embedded']:>11.2f} "
                  f"{r['wall_vs_embedded']:>9.2f}")
        print(f"redis-2 / redis-1 (steady): {doc['redis2_vs_redis1_steady']:.2f}")
    bad = [r["mode"] for r in results if r["tracks"] + r["failed"] != len(corpus) or r["failed"]]
    if bad:
        print(f"modes that did not tag every track: {bad}", file=sys.stderr)
        return 1
    return 0


def _done(summary: dict) -> int:
    return summary["tagged"] + summary["low_confidence"] + summary["kept_user_genre"]


def _duration(path: Path) -> float:
    from tagger import audio

    return audio.probe(path).duration


if __name__ == "__main__":
    sys.exit(main())
