"""Where a scan's time goes between jobs: per-job work vs waiting, per worker process.

Builds the same corpus as bench_throughput.py (GTZAN clips joined into longer
tracks, four formats), runs one ``tagger scan --dry-run`` with N workers and
keeps its database, then reads the analyses back:

- per job: the time inside ``pipeline.analyse`` (``analyses.seconds``) and
  from its start to the next job's start on the same worker (the gap is the
  broker's poll and the job's database round trips before ``_run``);
- per worker: busy share between its first start and its last finish;
- the scan's wall time split into start-up (scan start → first job) and jobs.

    python bench/bench_jobs.py [--tracks 16] [--workers 2] [--model NAME]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_throughput import build_corpus  # noqa: E402


def _t(v) -> datetime:
    return v if isinstance(v, datetime) else datetime.fromisoformat(str(v))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tracks", type=int, default=16)
    ap.add_argument("--clips-per-track", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--model", default="")
    args = ap.parse_args()

    from sqlalchemy import create_engine, text

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = build_corpus(tmp / "music", args.tracks, args.clips_per_track)
        data = tmp / "data"
        env = {k: v for k, v in os.environ.items() if not k.startswith("TAGGER_")}
        db_url = f"sqlite:///{data / 'tagger.sqlite3'}"
        env.update({"TAGGER_DATA_DIR": str(data), "TAGGER_WORKERS": str(args.workers), "TAGGER_DB_URL": db_url,
                    "TAGGER_MIN_CONFIDENCE": "0", "TAGGER_CONFIG": os.devnull})
        if args.model:
            env["TAGGER_MODEL"] = args.model
        load0 = os.getloadavg()[0]
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "tagger", "scan", str(tmp / "music"), "--dry-run", "--quiet"],
                       env=env, check=True, capture_output=True)
        wall = time.perf_counter() - t0
        with create_engine(db_url).connect() as conn:
            rows = conn.execute(text("SELECT worker, started_at, finished_at, seconds FROM analyses "
                                     "WHERE started_at IS NOT NULL AND finished_at IS NOT NULL")).all()
            scan_start = _t(conn.execute(text("SELECT min(started_at) FROM scans")).scalar())
            outcomes = conn.execute(text(
                "SELECT a.status, p.model, p.decided_by, a.error, count(*) FROM analyses a "
                "LEFT JOIN predictions p ON p.analysis_id = a.id GROUP BY 1, 2, 3, 4")).all()
        for status, model, decided_by, error, n in outcomes:
            print(f"  {n} × {status} {model or ''} {decided_by or ''} {error or ''}")
        by_worker = defaultdict(list)
        for w, s, f, sec in rows:
            by_worker[w].append((_t(s), _t(f), float(sec or 0)))
        print(f"{len(rows)} of {len(paths)} tracks ({args.clips_per_track * 0.5:.0f} min each), "
              f"{args.workers} workers, scan wall {wall:.1f} s, load average {load0:.1f} → "
              f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        first = min(s for jobs in by_worker.values() for s, _, _ in jobs)
        last = max(f for jobs in by_worker.values() for _, f, _ in jobs)
        print(f"scan start → first job {(first - scan_start).total_seconds():.1f} s (worker start-up, model load); "
              f"first job → last finish {(last - first).total_seconds():.1f} s")
        inside, outside = [], []
        for w, jobs in sorted(by_worker.items()):
            jobs.sort()
            span = (jobs[-1][1] - jobs[0][0]).total_seconds()
            busy = sum(sec for _, _, sec in jobs)
            inside += [sec for _, _, sec in jobs[1:]]  # the first job pays the model load
            outside += [(b[0] - a[0]).total_seconds() - a[2] for a, b in zip(jobs, jobs[1:])]
            print(f"  worker {w}: {len(jobs)} jobs, first job {jobs[0][2]:.2f} s, busy {busy:.1f} of {span:.1f} s")
        if inside and outside:
            print(f"per job after the first: analyse() {statistics.median(inside) * 1000:.0f} ms median, "
                  f"outside analyse() before the next start {statistics.median(outside) * 1000:.0f} ms median")


if __name__ == "__main__":
    main()
