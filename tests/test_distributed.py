"""Many workers through real Redis and PostgreSQL: every file done exactly once, whatever happens.

Real `tagger worker` and `dramatiq` processes, real encoded files, the real
Redis on 127.0.0.1 (database 14, flushed around each test; the Redis
restart test runs its own redis-server on another port) and a fresh
PostgreSQL database per test. Workers are killed, stopped, cut off from
their database and their broker; the checks read the database and the
files themselves.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from services import cli_env, run_cli
from sqlalchemy import func, select
from tcp_proxy import Proxy, free_port

from tagger import queue, scan, tags
from tagger.db import schema as s
from tagger.db.engine import session_scope

#: a private database of the shared Redis (services.REDIS_URL uses 15)
REDIS_BASE = os.environ.get("TAGGER_TEST_REDIS_DIST", "redis://127.0.0.1:6379/14")
#: a killed worker's jobs come back after 3 s without a heartbeat; maintenance on
#: half the broker commands so it happens within a second of that
FAST_RECOVERY = "heartbeat_timeout=3000&maintenance_chance=500000"
FORMATS = ("mp3", "flac", "ogg", "m4a")


# ---------------------------------------------------------------- fixtures and helpers
@pytest.fixture
def redis_db() -> str:
    """The broker URL of an empty Redis database (flushed before and after)."""
    import redis

    client = redis.Redis.from_url(REDIS_BASE)
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.fail(f"Redis is not running at {REDIS_BASE} (.ci/run starts it)")
    client.flushdb()
    yield f"{REDIS_BASE}?{FAST_RECOVERY}"
    client.flushdb()


@pytest.fixture
def dist(settings, redis_db, pg_url):
    """Settings for Redis + a migrated PostgreSQL database, the way a user sets them up."""
    dist = replace(settings, broker_url=redis_db, db_url=pg_url)
    done = run_cli(dist, "db", "upgrade")
    assert done.returncode == 0, done.stderr
    return dist


def library(audio_factory, n: int, seconds: float = 12) -> list[Path]:
    """``n`` real files in four formats under one folder."""
    return [audio_factory(FORMATS[i % len(FORMATS)], name=f"lib/{i:02d}.{FORMATS[i % len(FORMATS)]}",
                          seconds=seconds) for i in range(n)]


def fingerprints(paths: list[Path]) -> dict[Path, str]:
    return {p: tags.audio_fingerprint(p, p.suffix[1:]) for p in paths}


class Workers:
    """A `tagger worker` (or `dramatiq`) process with its output in a log file."""

    def __init__(self, settings, log: Path, *args: str, cmd: list[str] | None = None, **env: str):
        self.log = log
        self.out = open(log, "ab")
        cmd = cmd or [sys.executable, "-m", "tagger", "worker", *args]
        self.proc = subprocess.Popen(cmd, env=cli_env(settings, **env), stdout=self.out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=Path(__file__).resolve().parents[1])

    @property
    def pid(self) -> int:
        return self.proc.pid

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"worker did not stop on SIGTERM:\n{self.text()[-3000:]}")
        finally:
            self.out.close()


def queue_scan(settings, root: Path, *args: str) -> dict:
    """`tagger scan ROOT --json`: with Redis it queues and returns."""
    done = run_cli(settings, "scan", str(root), "--json", *args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


class ResultsHeld:
    """Jobs run up to recording their prediction (the tag already written), then wait.

    A deterministic "mid-job" now that a job takes a fraction of a second: an
    exclusive lock on the predictions table (reads still pass) until ``release()``.
    """

    def __init__(self, settings):
        from sqlalchemy import create_engine, text

        self.engine = create_engine(settings.database_url)
        self.conn = self.engine.connect()
        self.trans = self.conn.begin()
        self.conn.execute(text("LOCK TABLE predictions IN EXCLUSIVE MODE"))

    def release(self) -> None:
        if self.trans.is_active:
            self.trans.rollback()
        self.conn.close()
        self.engine.dispose()


def wait_until(predicate, timeout: float, what: str, poll: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def wait_scan(settings, scan_id: int, timeout: float = 90, *workers: Workers) -> scan.Progress:
    def finished():
        for w in workers:
            assert w.proc.poll() is None, f"worker exited with {w.proc.returncode}:\n{w.text()[-3000:]}"
        p = scan.progress(settings, scan_id, time.monotonic())
        return p if p.total and p.done == p.total else None

    return wait_until(finished, timeout, f"scan {scan_id} to finish")


def analyses(settings, scan_id: int) -> list[dict]:
    """One row per analysis with its prediction and tag-change counts."""
    with session_scope(settings.database_url) as db:
        def per_analysis(table):
            return dict(db.execute(select(table.analysis_id, func.count()).group_by(table.analysis_id)).all())

        preds, changes = per_analysis(s.Prediction), per_analysis(s.TagChange)
        rows = db.scalars(select(s.Analysis).where(s.Analysis.scan_id == scan_id).order_by(s.Analysis.id)).all()
        return [{"id": a.id, "path": a.file.path, "status": a.status, "attempts": a.attempts, "worker": a.worker,
                 "error": a.error, "error_kind": a.error_kind, "predictions": preds.get(a.id, 0),
                 "changes": changes.get(a.id, 0)} for a in rows]


def assert_each_done_once(settings, scan_id: int, paths: list[Path], before: dict[Path, str]) -> list[dict]:
    """Every file tagged by exactly one prediction and one tag change, its audio untouched."""
    wanted = {str(p) for p in paths}
    rows = [r for r in analyses(settings, scan_id) if r["path"] in wanted]
    assert sorted(r["path"] for r in rows) == sorted(wanted)
    for r in rows:
        assert (r["status"], r["predictions"], r["changes"]) == (s.TAGGED, 1, 1), r
    with session_scope(settings.database_url) as db:
        assert db.scalar(select(func.count()).select_from(s.Prediction)) == len(paths)
        assert db.scalar(select(func.count()).select_from(s.TagChange)) == len(paths)
        assert db.scalar(select(func.count()).select_from(s.TagChange).where(s.TagChange.state != "done")) == 0
    for p in paths:
        assert tags.read(p, p.suffix[1:])["model"] == ["test-logreg 1"], p
        assert tags.audio_fingerprint(p, p.suffix[1:]) == before[p], f"audio of {p} changed"
    return rows


def queue_depth(settings) -> dict[str, int]:
    return json.loads(run_cli(settings, "status", "--json").stdout)["queue"]


# ---------------------------------------------------------------- the tests
@pytest.mark.slow
def test_two_worker_processes_postgres_every_file_once(dist, audio_factory, tmp_path):
    """Both processes ready before the jobs come (queued first, one process warming up faster
    under load could drain all twelve before the other is up), then every file once, from both.
    The queue's depth and a scan's counts while jobs wait are checked by
    test_sigterm_finishes_the_current_job_and_requeues_the_rest."""
    paths = library(audio_factory, 12)
    before = fingerprints(paths)
    workers = Workers(dist, tmp_path / "workers.log", "--processes", "2")
    try:
        wait_until(lambda: workers.text().count("ready on") >= 2, 90, "both worker processes to start")
        queued = queue_scan(dist, paths[0].parent)
        assert (queued["queued"], queued["pending"], queued["status"]) == (12, 12, "running")
        wait_scan(dist, queued["scan_id"], 120, workers)
        status = json.loads(run_cli(dist, "status", "--json").stdout)
    finally:
        code = workers.stop()
    assert code == 0, workers.text()[-3000:]
    rows = assert_each_done_once(dist, queued["scan_id"], paths, before)
    assert {r["attempts"] for r in rows} == {1}
    assert len({r["worker"] for r in rows}) == 2, "both processes should have taken jobs"
    assert status["queue"] == {"waiting": 0, "in_flight": 0, "dead": 0}
    assert (status["scan"]["tagged"], status["scan"]["pending"]) == (12, 0)
    assert "deadlock" not in workers.text().lower()
    assert workers.text().count("tagged ") == 12  # one log line per job


def enqueue_again(settings, analysis_ids: list[int]) -> None:
    """Send messages for analyses that were already queued: what a redelivery looks like to a worker."""
    from dramatiq import Message

    broker = queue.make_broker(settings)  # not the process-wide broker: this test process is no worker
    try:
        for aid in analysis_ids:
            broker.enqueue(Message(queue_name=queue.QUEUE_NAME, actor_name="analyse_file", args=(aid,),
                                   kwargs={}, options={}))
    finally:
        broker.close()


def file_states(paths: list[Path]) -> dict[Path, tuple[int, int]]:
    return {p: (os.stat(p).st_size, os.stat(p).st_mtime_ns) for p in paths}


@pytest.mark.slow
def test_dramatiq_cli_bad_file_fails_once_and_redelivery_does_nothing(dist, audio_factory, tmp_path):
    """The plain `dramatiq workers.broker` runs the jobs; a text file named .mp3 fails once, for good."""
    import audiofiles

    paths = library(audio_factory, 3)
    bad = audiofiles.text_as_audio(paths[0].parent, "notes.mp3")
    before = fingerprints(paths)
    queued = queue_scan(dist, paths[0].parent)
    assert queued["queued"] == 4
    workers = Workers(dist, tmp_path / "dramatiq.log",
                      cmd=[sys.executable, "-m", "dramatiq", "workers.broker", "--processes", "1", "--threads", "1"])
    try:
        wait_scan(dist, queued["scan_id"], 120, workers)
        rows = {r["path"]: r for r in analyses(dist, queued["scan_id"])}
        failed = rows.pop(str(bad))
        assert (failed["status"], failed["attempts"], failed["predictions"], failed["changes"]) == (s.FAILED, 1, 0, 0)
        assert failed["error_kind"] == "unsupported_format" or "not" in failed["error"], failed
        assert_each_done_once(dist, queued["scan_id"], paths, before)
        states = file_states(paths)

        # every message delivered a second time, the failed one included
        enqueue_again(dist, [r["id"] for r in rows.values()] + [failed["id"]])
        wait_until(lambda: queue_depth(dist) == {"waiting": 0, "in_flight": 0, "dead": 0}, 60,
                   "the redelivered messages to be consumed", poll=0.5)
    finally:
        code = workers.stop()
    assert code == 0, workers.text()[-3000:]
    assert file_states(paths) == states  # no second write
    again = {r["path"]: r for r in analyses(dist, queued["scan_id"])}
    assert again.pop(str(bad)) == failed
    assert again == rows  # same attempts, still one prediction and one tag change each
    with session_scope(dist.database_url) as db:
        errors = db.scalars(select(s.Error).where(s.Error.scan_id == queued["scan_id"])).all()
        assert [(e.path, e.final) for e in errors] == [(str(bad), True)]  # recorded once
    assert "Retrying message" not in workers.text()  # a permanent failure is not retried


@pytest.mark.slow
def test_worker_killed_mid_job_loses_nothing(dist, audio_factory, tmp_path):
    """SIGKILL a worker while it holds jobs: they come back once its heartbeat expires; each file done once."""
    paths = library(audio_factory, 8)
    before = fingerprints(paths)
    victim = Workers(dist, tmp_path / "victim.log", "--processes", "1")
    survivor = Workers(dist, tmp_path / "survivor.log", "--processes", "1")
    try:
        wait_until(lambda: "ready on" in victim.text() and "ready on" in survivor.text(), 60, "workers to start")
        held = ResultsHeld(dist)
        try:
            queued = queue_scan(dist, paths[0].parent)
            # the victim's job stops just before its record: kill it there
            running = wait_until(lambda: [r for r in analyses(dist, queued["scan_id"])
                                          if r["status"] == s.RUNNING and r["worker"].endswith(f":{victim.pid}")],
                                 60, "the victim to start a job", poll=0.02)
            time.sleep(1.0)  # let it reach the wait
            victim.proc.send_signal(signal.SIGKILL)
            victim.proc.wait(10)
        finally:
            held.release()
        killed_at = time.monotonic()
        wait_scan(dist, queued["scan_id"], 90, survivor)
        recovery = time.monotonic() - killed_at
    finally:
        victim.stop()
        code = survivor.stop()
    assert code == 0, survivor.text()[-3000:]
    rows = {r["id"]: r for r in assert_each_done_once(dist, queued["scan_id"], paths, before)}
    for r in running:
        redone = rows[r["id"]]
        assert redone["attempts"] == 2 and redone["worker"].endswith(f":{survivor.pid}"), redone
    assert "tagged " not in victim.text()
    assert recovery < 60
    assert queue_depth(dist) == {"waiting": 0, "in_flight": 0, "dead": 0}


@pytest.mark.slow
def test_sigterm_finishes_the_current_job_and_requeues_the_rest(dist, audio_factory, tmp_path):
    paths = library(audio_factory, 3)
    worker = Workers(dist, tmp_path / "worker.log", "--processes", "1")
    try:
        wait_until(lambda: "ready on" in worker.text(), 60, "the worker to start")
        results = ResultsHeld(dist)
        try:
            queued = queue_scan(dist, paths[0].parent)
            running = wait_until(lambda: [r for r in analyses(dist, queued["scan_id"])
                                          if r["status"] == s.RUNNING], 60, "a job to start", poll=0.02)
            # frozen mid-job, the worker holds its prefetch (two jobs, threads x 2): `tagger status` sees them
            worker.proc.send_signal(signal.SIGSTOP)
            try:
                held = json.loads(run_cli(dist, "status", "--json").stdout)
            finally:
                worker.proc.send_signal(signal.SIGCONT)
            worker.proc.send_signal(signal.SIGTERM)
            time.sleep(1.0)  # the stop is under way while the job still waits
        finally:
            results.release()
        code = worker.proc.wait(60)
    finally:
        worker.stop()
    assert code == 0, worker.text()[-3000:]
    rows = {r["id"]: r for r in analyses(dist, queued["scan_id"])}
    (current,) = running
    assert (rows[current["id"]]["status"], rows[current["id"]]["predictions"]) == (s.TAGGED, 1)
    assert tags.read(current["path"], Path(current["path"]).suffix[1:])["model"] == ["test-logreg 1"]
    rest = [r for i, r in rows.items() if i != current["id"]]
    assert [(r["status"], r["attempts"]) for r in rest] == [(s.QUEUED, 0)] * 2
    # the prefetched message went back to the queue at once, not after a heartbeat timeout
    assert queue_depth(dist) == {"waiting": 2, "in_flight": 0, "dead": 0}
    assert worker.text().count("tagged ") == 1
    assert held["queue"] == {"waiting": 1, "in_flight": 2, "dead": 0}
    assert (held["scan"]["queued"], held["scan"]["pending"], held["scan"]["tagged"]) == (3, 3, 0)


# ---------------------------------------------------------------- outages
class RedisServer:
    """A private redis-server, restartable; append-only file on, as a deployment should run it."""

    def __init__(self, data: Path):
        self.port, self.data = free_port(), data
        data.mkdir(parents=True, exist_ok=True)
        self.proc = None

    def start(self) -> "RedisServer":
        self.proc = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "yes",
             "--appendfsync", "always", "--dir", str(self.data), "--daemonize", "no"],
            stdout=open(self.data / "redis.log", "ab"), stderr=subprocess.STDOUT)
        wait_until(lambda: subprocess.run(["redis-cli", "-p", str(self.port), "ping"], capture_output=True,
                                          text=True).stdout.strip() == "PONG", 20, "redis-server to start")
        return self

    def crash(self) -> None:
        self.proc.kill()  # SIGKILL: no clean shutdown
        self.proc.wait()

    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0?{FAST_RECOVERY}"


@pytest.fixture
def private_redis(tmp_path):
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed (.ci/services uses it)")
    server = RedisServer(tmp_path / "redis").start()
    yield server
    if server.proc.poll() is None:
        server.proc.terminate()
        server.proc.wait(10)


@pytest.mark.slow
def test_redis_crash_and_restart_during_a_scan(settings, pg_url, private_redis, audio_factory, tmp_path):
    dist = replace(settings, broker_url=private_redis.url(), db_url=pg_url)
    assert run_cli(dist, "db", "upgrade").returncode == 0
    paths = library(audio_factory, 10)
    before = fingerprints(paths)
    queued = queue_scan(dist, paths[0].parent)
    worker = Workers(dist, tmp_path / "worker.log", "--processes", "1")
    try:
        wait_until(lambda: scan.progress(dist, queued["scan_id"], 0).done >= 2, 90, "the first jobs")
        private_redis.crash()
        down = scan.progress(dist, queued["scan_id"], 0).done
        time.sleep(2)  # the worker meets a dead broker
        private_redis.start()
        wait_scan(dist, queued["scan_id"], 90, worker)
    finally:
        code = worker.stop()
    assert code == 0, worker.text()[-3000:]
    assert down < len(paths), "the scan was over before Redis went down; nothing was tested"
    assert "connection error" in worker.text()  # it did lose the broker, and came back
    assert_each_done_once(dist, queued["scan_id"], paths, before)


@pytest.mark.slow
def test_database_outage_is_waited_for_by_workers_and_scan(dist, audio_factory, tmp_path):
    """The results database goes away mid-job for longer than the retries would last: the
    worker waits for it (its jobs' retries unspent), `tagger scan --wait` keeps following,
    and when it is back every file is done once."""
    from sqlalchemy.engine import make_url

    url = make_url(dist.database_url)
    proxy = Proxy(url.port or 5432)
    proxy.up()
    # one retry only: without the wait the outage (12 s, two probes) would use it up and fail the jobs
    via_proxy = replace(dist, db_url=url.set(port=proxy.port).render_as_string(hide_password=False),
                        max_retries=1)
    paths = library(audio_factory, 2)
    before = fingerprints(paths)
    worker = Workers(via_proxy, tmp_path / "worker.log", "--processes", "1")
    held = ResultsHeld(dist)  # jobs run up to recording their prediction, then wait there
    out = open(tmp_path / "scan.log", "wb")
    follower = subprocess.Popen([sys.executable, "-m", "tagger", "scan", str(paths[0].parent), "--wait"],
                                env=cli_env(via_proxy), stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: "ready on" in worker.text(), 60, "the worker to start")
        queued = wait_until(lambda: queued_scan(dist), 60, "the scan to queue its files")
        wait_until(lambda: any(r["status"] == s.RUNNING for r in analyses(dist, queued)), 60, "a job to start")
        proxy.down()  # the job in flight loses its connection; the scanner's polls fail
        wait_until(lambda: "results database unreachable" in worker.text(), 30, "the worker to notice")
        time.sleep(12)
        assert follower.poll() is None, (tmp_path / "scan.log").read_text()
        proxy.up()
        held.release()
        assert follower.wait(120) == 0, (tmp_path / "scan.log").read_text()
    finally:
        held.release()
        if follower.poll() is None:
            follower.kill()
        out.close()
        code = worker.stop()
    assert code == 0, worker.text()[-3000:]
    assert "results database unreachable" in (tmp_path / "scan.log").read_text()
    assert "reachable again" in worker.text()
    rows = assert_each_done_once(dist, queued, paths, before)
    assert all(r["error"] is None for r in rows), rows
    with session_scope(dist.database_url) as db:  # the outage was not recorded as the files' failure
        assert db.scalar(select(func.count()).select_from(s.Error)) == 0


def queued_scan(settings) -> int | None:
    """The id of the latest scan once it has queued anything."""
    with session_scope(settings.database_url) as db:
        return db.scalar(select(s.Analysis.scan_id).order_by(s.Analysis.id.desc()).limit(1))


# ---------------------------------------------------------------- docker/
ROOT = Path(__file__).resolve().parents[1]


def _load_yaml(path: Path) -> dict:
    import yaml  # PyYAML is in the dev extra

    return yaml.safe_load(path.read_text())


def test_compose_file_runs_scalable_workers_over_one_music_mount(tmp_path):
    doc = _load_yaml(ROOT / "docker" / "compose.yaml")
    services = doc["services"]
    assert set(services) == {"redis", "postgres", "migrate", "worker", "scan"}
    music = "${MUSIC_DIR:?set MUSIC_DIR to the music folder to tag}:/music"
    for name in ("worker", "scan"):
        svc = services[name]
        assert svc["volumes"] == [music], name  # the same folder, the same path: no path mapping needed
        assert svc["environment"]["TAGGER_BROKER_URL"].startswith("redis://redis:")
        assert "@postgres:" in svc["environment"]["TAGGER_DB_URL"]
        assert svc["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
        assert svc["depends_on"]["redis"] == {"condition": "service_healthy"}
        assert svc["build"] == {"context": "..", "dockerfile": "docker/Dockerfile",
                                "args": {"BASE": "${BASE:-python:3.11-slim}"}}
        assert "TAGGER_MIN_CONFIDENCE" not in svc["environment"]  # the product's default holds
    assert services["scan"]["command"][:2] == ["scan", "/music"] and services["scan"]["restart"] == "no"
    assert services["migrate"]["command"] == ["db", "upgrade"]
    assert services["migrate"]["depends_on"]["postgres"] == {"condition": "service_healthy"}
    worker = services["worker"]
    assert worker["command"][0] == "worker"
    # `--scale worker=N` needs replicas that claim no fixed name or host port
    assert not {"container_name", "ports"} & set(worker)
    assert worker["stop_signal"] == "SIGTERM" and worker["healthcheck"]["test"]
    for name in ("redis", "postgres"):
        assert services[name]["healthcheck"]["test"], name
        # built from Debian's packages on the same base (docker/redis.Dockerfile, postgres.Dockerfile)
        assert services[name]["build"]["dockerfile"] == f"{name}.Dockerfile", name
        assert (ROOT / "docker" / f"{name}.Dockerfile").exists(), name
    assert "--appendonly" in services["redis"]["command"]  # queued jobs survive a Redis restart

    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    # the base is a build argument: python:3.11-slim unless a local Debian image is named
    assert dockerfile.startswith("#") and "\nARG BASE=python:3.11-slim\n" in dockerfile
    assert "\nFROM ${BASE} AS builder\n" in dockerfile and "\nFROM ${BASE}\n" in dockerfile
    assert "\nUSER tagger\n" in dockerfile
    assert "ffmpeg" in dockerfile and 'ENTRYPOINT ["tagger"]' in dockerfile
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    for line in dockerfile.splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            for src in line.split()[1:-1]:
                assert (ROOT / src).exists(), src
                assert src.split("/")[0] not in ignored, src

    compose = shutil.which("docker-compose")
    if compose:  # the real schema check, where the Compose CLI is installed
        env = dict(os.environ, MUSIC_DIR=str(tmp_path))
        checked = subprocess.run([compose, "-f", str(ROOT / "docker" / "compose.yaml"), "config", "-q"],
                                 env=env, capture_output=True, text=True)
        assert checked.returncode == 0, checked.stderr


def test_broker_url_carries_the_recovery_options(settings):
    from tagger.errors import ConfigError

    assert queue.redis_options("redis://h:6379/0") == ("redis://h:6379/0", queue.REDIS_OPTIONS)
    url, options = queue.redis_options("redis://:pw@h:6379/2?heartbeat_timeout=3000&socket_timeout=5")
    assert url == "redis://:pw@h:6379/2?socket_timeout=5"  # redis-py's own options stay for redis-py
    assert options == dict(queue.REDIS_OPTIONS, heartbeat_timeout=3000)
    assert queue.redis_options("unix:///run/redis.sock?db=3&maintenance_chance=1") == (
        "unix:///run/redis.sock?db=3", dict(queue.REDIS_OPTIONS, maintenance_chance=1))
    with pytest.raises(ConfigError):
        queue.redis_options("redis://h/0?heartbeat_timeout=soon")
    broker = queue.make_broker(replace(settings, broker_url=f"{REDIS_BASE}?{FAST_RECOVERY}"))
    try:
        assert (broker.heartbeat_timeout, broker.maintenance_chance) == (3000, 500000)
    finally:
        broker.close()


def _children_of(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                argv = (d / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"--parent" in argv and argv[argv.index(b"--parent") + 1] == str(pid).encode():
                out.append(int(d.name))
    return out


def test_a_supervisor_killed_with_sigkill_takes_its_workers_with_it(dist, tmp_path):
    """`tagger worker -p 2` killed -9: its children notice and stop instead of taking jobs for ever."""
    sup = Workers(dist, tmp_path / "sup.log", "--processes", "2")
    try:
        wait_until(lambda: sup.text().count("ready on") >= 2, 90, "both workers to start")
        children = _children_of(sup.pid)
        assert len(children) == 2
        sup.proc.send_signal(signal.SIGKILL)
        sup.proc.wait(10)
        wait_until(lambda: not _children_of(sup.pid), 30, "the orphaned workers to stop")
        assert "is gone; stopping" in sup.text()
    finally:
        for pid in _children_of(sup.pid):
            os.kill(pid, signal.SIGKILL)
        sup.out.close()


@pytest.mark.slow
def test_the_attempt_recorded_final_is_the_last_one(dist, audio_factory, tmp_path):
    """Retries and the record agree on the last attempt: TAGGER_MAX_RETRIES=1 is one retry, then failed.

    Every attempt fails transiently (the predictions table stays locked, and the worker's
    database connection gives up on a lock after 0.3 s); the analysis must be recorded failed
    on the attempt after which no delivery follows, and the message must end dead-lettered.
    """
    paths = library(audio_factory, 1)
    sep = "&" if "?" in dist.database_url else "?"
    impatient = replace(dist, db_url=f"{dist.database_url}{sep}options=-c%20lock_timeout%3D300", max_retries=1)
    held = ResultsHeld(dist)
    worker = Workers(impatient, tmp_path / "worker.log", "--processes", "1")
    try:
        wait_until(lambda: "ready on" in worker.text(), 60, "the worker to start")
        queued = queue_scan(dist, paths[0].parent)
        wait_until(lambda: analyses(dist, queued["scan_id"])[0]["status"] == s.FAILED, 60, "the analysis to fail")
        wait_until(lambda: queue_depth(dist) == {"waiting": 0, "in_flight": 0, "dead": 1}, 30,
                   f"the message to be dead-lettered (queue: {queue_depth(dist)})")
        time.sleep(3)  # longer than the backoff of a further retry
    finally:
        held.release()
        code = worker.stop()
    assert code == 0, worker.text()[-3000:]
    row = analyses(dist, queued["scan_id"])[0]
    assert (row["status"], row["attempts"], row["error_kind"]) == (s.FAILED, 2, "transient"), row
    with session_scope(dist.database_url) as db:
        finals = list(db.scalars(select(s.Error.final).where(s.Error.analysis_id == row["id"]).order_by(s.Error.id)))
    assert finals == [False, True]
    assert worker.text().count("Retrying message") == 1, worker.text()[-3000:]
    assert queue_depth(dist) == {"waiting": 0, "in_flight": 0, "dead": 1}
