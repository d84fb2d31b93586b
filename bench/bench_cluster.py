"""Throughput of tagger's container deployment (docker/cluster.sh) with 2, then 4 worker containers.

    bench/bench_cluster.py --library DIR [--cluster tagger] [--workers 2 4]

Needs a deployment that is up (``docker/cluster.sh up DIR``). For each worker count: the
workers are started afresh (their start-up timed: from ``podman run`` to the worker's "ready"
line), the whole library is scanned again (``scan --force``), and tracks/s is the files over the
time from the first job's start to the last one's end, as the database recorded them. Prints
the image sizes too. Each container is limited to WORKER_CPUS (1) CPU: on a host with fewer
cores than containers, more containers share the same cores.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PODMAN = ["podman", "--runtime", "runc", "--cgroup-manager=cgroupfs"]


def run(cmd: list[str], env: dict | None = None, timeout: float = 1800) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if done.returncode != 0:
        sys.exit(f"bench_cluster: {' '.join(cmd[:3])} failed: {(done.stderr or done.stdout).strip()[-500:]}")
    return done.stdout


def sql(cluster: str, query: str) -> list[list[str]]:
    out = run([*PODMAN, "exec", f"{cluster}-postgres", "psql", "-U", "tagger", "-d", "tagger", "-tA", "-F", "|",
               "-c", query])
    return [line.split("|") for line in out.splitlines() if line]


def start_up(cluster: str, env: dict, n: int) -> list[float]:
    """Scale to 0, then to ``n`` worker containers; seconds until each says it is ready."""
    script = str(ROOT / "docker" / "cluster.sh")
    run([script, "scale", "0"], env)
    started = time.monotonic()
    run([script, "scale", str(n)], env)
    ready: dict[int, float] = {}
    while len(ready) < n:
        if time.monotonic() - started > 600:
            sys.exit("bench_cluster: workers not ready after 600 s")
        for i in range(1, n + 1):
            if i not in ready:
                logs = subprocess.run([*PODMAN, "logs", f"{cluster}-worker-{i}"], capture_output=True, text=True)
                if "ready on" in logs.stdout + logs.stderr:
                    ready[i] = time.monotonic() - started
        time.sleep(0.2)
    return sorted(ready.values())


def image_sizes(cluster: str) -> list[str]:
    out = run([*PODMAN, "images", "--format", "{{.Repository}}:{{.Tag}} {{.Size}}"])
    return [line for line in out.splitlines() if line.split(":")[0].startswith("localhost/tagger")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--library", required=True, help="the library folder the deployment was started with")
    parser.add_argument("--cluster", default="tagger", help="the deployment's name prefix (CLUSTER)")
    parser.add_argument("--workers", type=int, nargs="+", default=[2, 4], help="worker container counts")
    args = parser.parse_args()
    if not Path(args.library).is_dir():
        parser.error(f"{args.library}: no such folder")
    env = dict(os.environ, CLUSTER=args.cluster)
    for line in image_sizes(args.cluster):
        print(f"image {line}")
    print(f"host: {os.cpu_count()} CPUs, {os.environ.get('WORKER_CPUS', '1')} CPU per worker container")
    for n in args.workers:
        times = start_up(args.cluster, env, n)
        print(f"worker start-up in a container ({n} at once): median {statistics.median(times):.1f} s "
              f"(each: {', '.join(f'{t:.1f}' for t in times)})")
        run([str(ROOT / "docker" / "cluster.sh"), "scan", "--force"], env)
        scan_id = sql(args.cluster, "select max(id) from scans")[0][0]
        files, seconds = sql(args.cluster, "select count(*), extract(epoch from max(finished_at) - min(started_at)) "
                                           f"from analyses where scan_id = {scan_id}")[0]
        print(f"{float(files) / float(seconds):.2f} tracks/s with {n} worker containers "
              f"({files} files in {float(seconds):.1f} s, scan {scan_id})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
