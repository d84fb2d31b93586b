"""The deployment in docker/, run for real: Redis, PostgreSQL, worker containers and a scan
container on one podman network, each standing in for a machine (``make test-cluster``).

Skipped unless podman is installed and TAGGER_TEST_CLUSTER=1: it builds images and takes
minutes. Through one scan of a real mixed-format library it kills a worker container, restarts
Redis's container and stops PostgreSQL's for 30 s; then every file must be analysed once,
written at most once (what the database says was written), its audio intact. Then
bench/bench_cluster.py measures 2 and 4 worker containers on the same deployment.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from audiofiles import FORMATS, SUFFIX, _FFMPEG_CODEC, _muxer

from tagger import tags

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = "tagger-test"
GTZAN = Path(os.environ.get("TAGGER_GTZAN", ROOT.parent / "shared" / "datasets" / "gtzan"))
PODMAN = ["podman", "--runtime", "runc", "--cgroup-manager=cgroupfs"]
#: files in the library: enough that the scan outlasts the three faults
FILES = int(os.environ.get("TAGGER_CLUSTER_FILES", "140"))

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.environ.get("TAGGER_TEST_CLUSTER") != "1" or not shutil.which("podman"),
                       reason="the container deployment: make test-cluster (podman, TAGGER_TEST_CLUSTER=1)"),
]


def cluster(*args: str, check: bool = True, timeout: float = 1800) -> subprocess.CompletedProcess:
    env = dict(os.environ, CLUSTER=CLUSTER)
    done = subprocess.run([str(ROOT / "docker" / "cluster.sh"), *args], env=env, capture_output=True,
                          text=True, timeout=timeout)
    if check:
        assert done.returncode == 0, f"cluster.sh {' '.join(args)}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def podman(*args: str, check: bool = True) -> str:
    done = subprocess.run([*PODMAN, *args], capture_output=True, text=True, timeout=300)
    assert not check or done.returncode == 0, done.stderr
    return done.stdout


def sql(query: str) -> list[list[str]]:
    """Rows of a query run in PostgreSQL's container (the host does not reach its network)."""
    out = podman("exec", f"{CLUSTER}-postgres", "psql", "-U", "tagger", "-d", "tagger", "-tA", "-F", "|",
                 "-c", query)
    return [line.split("|") for line in out.splitlines() if line]


def make_library(root: Path, n: int) -> list[Path]:
    """``n`` GTZAN clips (10 s each) re-encoded by ffmpeg into every format tagger reads."""
    clips = sorted(GTZAN.glob("*/*.mp3"))
    assert clips, f"no GTZAN clips under {GTZAN}"
    jobs = []
    for i in range(n):
        fmt, clip = FORMATS[i % len(FORMATS)], clips[(i * 7) % len(clips)]
        path = root / fmt / f"{i:03d} {clip.stem}{SUFFIX[fmt]}"
        path.parent.mkdir(parents=True, exist_ok=True)
        jobs.append(["ffmpeg", "-v", "error", "-y", "-i", str(clip), "-t", "10", "-map_metadata", "-1",
                     *_FFMPEG_CODEC[fmt], "-f", _muxer(fmt), str(path)])
    with ThreadPoolExecutor(2) as pool:
        for done in pool.map(lambda cmd: subprocess.run(cmd, capture_output=True, text=True), jobs):
            assert done.returncode == 0, done.stderr
    # the workers run as the image's user (uid 1000) and write tags into the files
    subprocess.run(["chown", "-R", "1000:1000", str(root)], check=True)
    return sorted(p for p in root.rglob("*") if p.is_file())


def done_count(scan_id: int) -> int:
    rows = sql(f"select count(*) from analyses where scan_id = {scan_id} and status not in ('queued', 'running')")
    return int(rows[0][0])


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    local = subprocess.run([*PODMAN, "image", "exists", "localhost/debian:bookworm"]).returncode == 0
    if os.environ.get("BASE") is None and local:
        os.environ["BASE"] = "localhost/debian:bookworm"  # made by docker/base-image.sh: no registry here
    cluster("build", timeout=3600)
    cluster("down", "--volumes", check=False)
    library = tmp_path_factory.mktemp("cluster") / "music"
    paths = make_library(library, FILES)
    cluster("up", str(library), "2", timeout=600)
    yield library, paths
    for name in ("worker-1", "worker-2", "postgres", "redis"):
        log = cluster("logs", name, check=False)
        (library.parent / f"{name}.log").write_text(log.stdout + log.stderr)
    cluster("down", "--volumes", check=False)


def test_one_scan_through_a_killed_worker_a_redis_restart_and_a_database_outage(deployment):
    library, paths = deployment
    before = {p: tags.audio_fingerprint(p, p.suffix[1:]) for p in paths}
    scan_log = open(library.parent / "scan.log", "w")
    env = dict(os.environ, CLUSTER=CLUSTER)
    scanner = subprocess.Popen([str(ROOT / "docker" / "cluster.sh"), "scan"], env=env, stdout=scan_log,
                               stderr=subprocess.STDOUT)
    try:
        scan_id = wait_for(lambda: (sql("select max(scan_id) from analyses") or [[""]])[0][0], 120, "the scan")
        scan_id = int(scan_id)
        wait_for(lambda: done_count(scan_id) >= 5, 300, "the first files")
        podman("kill", f"{CLUSTER}-worker-1")  # a machine lost mid-scan: its jobs go back to the queue
        killed_at = done_count(scan_id)
        wait_for(lambda: done_count(scan_id) >= killed_at + 10, 300, "worker-2 to go on alone")
        podman("start", f"{CLUSTER}-worker-1")
        podman("restart", f"{CLUSTER}-redis")  # the queue is in the append-only file
        restarted_at = done_count(scan_id)
        wait_for(lambda: done_count(scan_id) >= restarted_at + 10, 300, "jobs after Redis's restart")
        podman("stop", f"{CLUSTER}-postgres")
        stopped_at = time.monotonic()
        time.sleep(30)
        assert scanner.poll() is None, "the scan gave up while PostgreSQL was down"
        podman("start", f"{CLUSTER}-postgres")
        wait_for(lambda: podman("exec", f"{CLUSTER}-postgres", "pg_isready", "-h", "127.0.0.1", check=False),
                 60, "PostgreSQL back")
        outage = time.monotonic() - stopped_at
        assert done_count(scan_id) < len(paths), "the scan ended before PostgreSQL stopped: nothing tested"
        assert scanner.wait(900) == 0, (library.parent / "scan.log").read_text()[-3000:]
    finally:
        if scanner.poll() is None:
            scanner.kill()
        scan_log.close()
    assert outage >= 30

    rows = sql(f"select f.path, a.status, a.attempts, "
               f"(select count(*) from predictions p where p.analysis_id = a.id), "
               f"(select count(*) from tag_changes c where c.analysis_id = a.id and c.state = 'done'), "
               f"(select p.genre from predictions p where p.analysis_id = a.id limit 1) "
               f"from analyses a join files f on f.id = a.file_id where a.scan_id = {scan_id}")
    by_path = {r[0]: r for r in rows}
    # the scanner saw the library at /library; the workers at /music (TAGGER_PATH_MAP)
    assert sorted(by_path) == sorted(f"/library/{p.relative_to(library)}" for p in paths)
    written = 0
    for p in paths:
        _, status, attempts, predictions, changes, genre = by_path[f"/library/{p.relative_to(library)}"]
        assert status in ("tagged", "low_confidence"), (p, status)
        assert int(predictions) == 1, (p, predictions)  # analysed once
        assert int(changes) == (status == "tagged"), (p, changes)  # written once, when confident
        assert tags.audio_fingerprint(p, p.suffix[1:]) == before[p], f"audio of {p} changed"
        found = tags.read(p, p.suffix[1:])
        if status == "tagged":
            written += 1
            assert len(found["genre"]) >= 1 and found["model"], (p, found)
        else:
            assert not found.get("genre"), (p, found)
    assert written > len(paths) // 2, f"only {written} of {len(paths)} files tagged"
    assert sql(f"select count(*) from errors where scan_id = {scan_id} and final")[0][0] == "0"
    logs = ""
    for i in (1, 2):  # kept beside the library: the benchmark replaces these containers
        done = cluster("logs", f"worker-{i}", check=False)
        (library.parent / f"scan-worker-{i}.log").write_text(done.stdout + done.stderr)
        logs += done.stdout + done.stderr
    assert "results database unreachable" in logs and "reachable again" in logs  # they waited, then went on


def test_throughput_with_2_and_4_worker_containers(deployment):
    library, _ = deployment
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_cluster.py"), "--cluster", CLUSTER,
                           "--library", str(library), "--workers", "2", "4"],
                          capture_output=True, text=True, timeout=1800)
    print(done.stdout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "tracks/s with 2 worker containers" in done.stdout and "with 4 worker containers" in done.stdout
