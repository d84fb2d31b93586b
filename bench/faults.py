"""Fault-injection suite (#21): real faults against real tagger processes on a real mixed library.

Each round copies a small pristine library (MP3, FLAC, Ogg Vorbis, Opus, M4A, WAV, AIFF, some in
a sub-folder with a space in its name; user tags, covers, user genres, and tags an older tagger
model wrote), runs real ``tagger`` processes on it, injects one fault at a random moment (seeded),
then recovers as a user would and checks what survived:

recovery  a final clean ``tagger scan`` to completion (Redis kinds: with a ``tagger worker``);
          after a killed undo, the files it did not reach are undone with ``tagger undo --file``.
checks    on every file: it decodes (``ffmpeg -v error``, as clean as the pristine copy); its
          audio payload hash (``tagger.tags.audio_fingerprint``) is unchanged; tagger's fields
          (genre, confidence, model) are all the old values or all new ones, and new ones where
          the file has no user genre; every other tag and the cover are unchanged (plain mutagen,
          ``tests/audiofiles.all_tags``); no ``.tagger-*.tmp`` copy is left beside it (a copy a
          kill left is aged past ``tags.STALE_TEMP_AGE_S`` and must go with the next scan: it is
          counted, not lost); the database agrees (the latest done TagChange's ``after`` is what
          the file holds, no scan of the round still "running", no analysis queued or running);
          then ``tagger undo --scan N`` of every scan of the round, newest first (those an undo
          of the round already reverted excepted), must give back the pristine tags exactly
          (tagger's fields and every tag as mutagen reads them) and the same payload.

A *loss* is any broken check. A *surprise* is a fault that tagger should have absorbed and did
not (an unexpected exit code, a traceback, failed files under a fault designed to be waited out,
a scan that hung): the files may be fine, the behaviour is reported. Exit code 1 when anything
was lost.

The model is a small logistic regression on MFCC statistics of 40 GTZAN clips (as the tests'
``test_model_dir``), trained once per run into the work folder, so a round costs seconds.
Each round has its own ``TAGGER_DATA_DIR`` (embedded kinds) and ``TAGGER_CONFIG`` names an
empty config file. Redis kinds use Redis database 3 of the local server (flushed before each round)
or, for ``redis-restart``, a private ``redis-server`` the suite starts on another port (the
shared one is never restarted), and a PostgreSQL database the suite creates and drops.

    python bench/faults.py                         # 240 rounds over every kind
    python bench/faults.py --rounds 24 --seed 7    # 2 rounds per kind
    python bench/faults.py --kinds scan-kill9,disk-full --rounds 10 --json
    python bench/faults.py --list                  # the kinds, one line each

Measured 2026-12-03 (2 cores, shared with other test runs; the tree changing under it): 204 rounds,
17 per kind, 1624 file checks, 36 min (10.6 s a round: 6-8 s for the embedded kinds, 11-16 s for
the Redis ones, whose rounds start a `tagger worker`). Losses in group-kill9 (2 of 17 rounds) and
pg-outage (6 of 17): a write whose file was replaced but whose TagChange never became `done`
(kill -9, or the database cut at that moment) is forgotten, the next scan records the new values as
`before`, and undo cannot bring the original back. disk-full lost in 5 of 17 since a7d3164: a tag
write failed on the full disk counts as the file's own fault, so a plain rescan never retries it.
"""
from __future__ import annotations

import argparse
import atexit
import json
import os
import random
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # audiofiles: real files, read back with plain mutagen
sys.path.insert(0, str(ROOT))

import audiofiles  # noqa: E402
from tcp_proxy import Proxy, free_port  # noqa: E402

GTZAN = ROOT.parent / "shared" / "datasets" / "gtzan"
MODEL = "faults-logreg"
MODEL_VALUE = f"{MODEL} 1"  # what tagger writes into the model field
OLD_TRIPLE = {"genre": ["rock"], "tagger_confidence": ["0.500"], "tagger_model": [f"{MODEL} 0"]}
REDIS_URL = "redis://127.0.0.1:6379/3"
PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
#: a killed Redis worker's jobs come back after 3 s without a heartbeat (as tests/test_distributed)
FAST_RECOVERY = "heartbeat_timeout=3000&maintenance_chance=500000"
PY = sys.executable

KINDS: dict[str, str] = {
    "scan-kill9": "kill -9 of `tagger scan` (embedded) mid-scan, then a rescan",
    "worker-kill9": "kill -9 of one worker child of an embedded scan mid-scan; the scan must finish by itself",
    "group-kill9": "kill -9 of the scan and all its workers at once (OOM, power cut), often just after a tag "
                   "write's rename",
    "scan-sigterm": "SIGTERM of `tagger scan` mid-scan (exit 143, files given back), then a rescan",
    "disk-full": "the library's filesystem (a small tmpfs) fills up during tag writes; sometimes the data "
                 "folder's too",
    "db-locked": "another process holds a write transaction on the SQLite results (or queue) database for "
                 "1-8 s mid-scan",
    "two-scans": "two `tagger scan` of one folder at once",
    "scan-during-undo": "`tagger undo --scan N` and a new `tagger scan` of the same folder at once",
    "undo-kill9": "kill -9 of `tagger undo --scan N` mid-undo, then the rest undone file by file",
    "supervisor-kill9": "Redis + PostgreSQL: kill -9 of the `tagger worker -p 2` supervisor (sometimes with its "
                        "children) mid-scan, then a new worker",
    "redis-restart": "Redis + PostgreSQL: a private redis-server crashed (SIGKILL) mid-scan and restarted, with "
                     "or without persistence (without: `tagger requeue --running`)",
    "pg-outage": "Redis + PostgreSQL: the results database reached through a TCP proxy cut for 1-6 s mid-scan",
}
REDIS_KINDS = {"supervisor-kill9", "redis-restart", "pg-outage"}


# ---------------------------------------------------------------- small helpers
def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def one_line(text: str, limit: int = 220) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _norm(genre: str) -> str:
    """A genre as the model's label and as written in tags compare (Hip-Hop, hiphop, HIPHOP)."""
    return re.sub(r"[^a-z0-9]", "", genre.lower())


def fmt_of(path: Path) -> str:
    return path.suffix[1:].lower()


def children_of(pid: int) -> list[int]:
    """Worker processes started by ``pid`` (tagger gives them ``--parent PID``)."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            argv = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"--parent" in argv:
            i = argv.index(b"--parent")
            if i + 1 < len(argv) and argv[i + 1] == str(pid).encode():
                out.append(int(d.name))
    return out


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def kill(pid: int, sig: int = signal.SIGKILL) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


class Proc:
    """A real process the suite started, its stdout and stderr in files of the round's folder."""

    def __init__(self, argv: list[str], env: dict, folder: Path, name: str):
        self.name = name
        self.out_path, self.err_path = folder / f"{name}.out", folder / f"{name}.err"
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.p = subprocess.Popen(argv, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=ROOT)
        self.started = time.monotonic()

    @property
    def pid(self) -> int:
        return self.p.pid

    def running(self) -> bool:
        return self.p.poll() is None

    def wait(self, timeout: float) -> Optional[int]:
        try:
            return self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def signal(self, sig: int) -> None:
        if self.p.poll() is None:
            kill(self.p.pid, sig)

    def stop(self, timeout: float = 60) -> Optional[int]:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit code (None: had to kill)."""
        self.signal(signal.SIGTERM)
        rc = self.wait(timeout)
        if rc is None:
            self.signal(signal.SIGKILL)
            self.p.wait()
        return rc

    def out(self) -> str:
        return self.out_path.read_text(errors="replace")

    def err(self) -> str:
        return self.err_path.read_text(errors="replace")

    def json(self):
        try:
            return json.loads(self.out())
        except ValueError:
            return None

    def traceback(self) -> Optional[str]:
        err = self.err()
        if "Traceback (most recent call last)" in err:
            return self.error_line() or "traceback"
        return None

    def error_line(self) -> str:
        """The line of stderr that names the error (not SQLAlchemy's closing 'Background' link)."""
        lines = [ln.strip() for ln in self.err().splitlines() if ln.strip()]
        named = [ln for ln in lines if re.match(r"^([\w.]+(Error|Exception|Interrupt)\b|Error:)", ln)]
        return (named or lines or [""])[-1]


# ---------------------------------------------------------------- the library and its snapshot
@dataclass(frozen=True)
class Spec:
    name: str
    fmt: str
    seconds: float
    kind: str
    tags: dict
    cover: bool

    @property
    def user_genre(self) -> bool:
        return "genre" in self.tags and "tagger_model" not in self.tags


def library_specs() -> list[Spec]:
    """Eight files, every format: user tags, covers, two user genres (kept), two older tagger
    triples (overwritten, and undo must bring them back), one file without any tag."""
    t = lambda i, **more: {"artist": [f"Artist {i}", "Zoë Ünal"], "title": [f"Été {i} ♫"], **more}  # noqa: E731
    return [
        Spec("01 intro.mp3", "mp3", 10, "music", t(1, album=["日本の歌"]), True),
        Spec("02.flac", "flac", 11, "music", t(2, genre=["Chanson"]), True),
        Spec("03.ogg", "ogg", 12, "hum", t(3, **OLD_TRIPLE), False),
        Spec("04.opus", "opus", 10, "music", t(4), True),
        Spec("Album A/05.m4a", "m4a", 13, "music", t(5, **OLD_TRIPLE), True),
        Spec("Album A/06.wav", "wav", 10, "hum", t(6), False),
        Spec("Album A/07.aiff", "aiff", 11, "music", {"title": ["Seven"], "genre": ["Field recording"]}, False),
        Spec("08 bare.mp3", "mp3", 12, "hum", {}, False),
    ]


@dataclass
class FileState:
    fields: dict  # tagger.tags.read
    payload: str  # tagger.tags.audio_fingerprint
    everything: dict  # audiofiles.all_tags: every tag as plain mutagen reads it
    others: dict  # the same without tagger's three fields
    cover: Optional[bytes]
    decode: str  # ffmpeg -v error's complaints on the pristine file ("" when it decodes cleanly)


def our_keys(fmt: str) -> set[str]:
    from tagger import tags

    family = audiofiles.FAMILY[fmt]  # the tests' own map of format -> tag family
    keys = {tags.FIELD_TABLE[f][family] for f in tags.FIELDS}
    return {k.upper() for k in keys} if family == "vorbis" else keys


def decode_errors(path: Path) -> str:
    done = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-f", "null", "-"],
                          capture_output=True, text=True, errors="replace")
    return done.stderr.strip() if done.returncode == 0 else f"exit {done.returncode}: {done.stderr.strip()}"


def state_of(path: Path, decode: bool = True) -> FileState:
    from tagger import tags

    fmt = fmt_of(path)
    everything = audiofiles.all_tags(path, fmt)
    ours = our_keys(fmt)
    return FileState(fields=tags.read(path, fmt), payload=tags.audio_fingerprint(path, fmt), everything=everything,
                     others={k: v for k, v in everything.items() if k not in ours},
                     cover=audiofiles.cover_of(path, fmt), decode=decode_errors(path) if decode else "")


def temp_copies(folder: Path) -> list[Path]:
    from tagger import tags

    found = []
    for dirpath, _dirs, files in os.walk(folder):
        found += [Path(dirpath) / f for f in files if tags.TEMP_MARK in f and f.endswith(".tmp")]
    return found


def train_model(root: Path) -> Path:
    """The tests' small real model (tests/services.py test_model_dir), once per run."""
    import joblib
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from tagger import audio, features

    x, y = [], []
    for genre in ("blues", "classical", "jazz", "metal", "pop"):
        for clip in sorted((GTZAN / genre).glob("*.mp3"))[:8]:
            x.append(features.mfcc_stats(audio.load_clip(clip, n_windows=4).windows))
            y.append(genre)
    model = make_pipeline(StandardScaler(), LogisticRegression(C=10, max_iter=3000)).fit(np.array(x), y)
    d = root / MODEL
    d.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, d / "model.joblib")
    (d / "card.json").write_text(json.dumps({
        "name": MODEL, "version": "1", "kind": "sklearn_mfcc", "labels": sorted(set(y)), "file": "model.joblib",
        "features": features.MFCC_STATS_PARAMS, "metrics": {"note": "bench/faults.py: 40 GTZAN clips"}}))
    return root


# ---------------------------------------------------------------- outside services
class RedisServer:
    """A private redis-server for the restart fault (the shared one on 6379 is never restarted)."""

    def __init__(self, folder: Path, persist: bool):
        self.folder, self.persist = folder, persist
        folder.mkdir(parents=True, exist_ok=True)
        self.port = 6390 if port_free(6390) else free_port()
        self.proc: Optional[subprocess.Popen] = None

    def start(self) -> "RedisServer":
        args = ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
                "--appendonly", "yes" if self.persist else "no", "--appendfsync", "always",
                "--dir", str(self.folder), "--daemonize", "no"]
        with open(self.folder / "redis.log", "ab") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(64).startswith(b"+PONG"):
                        return self
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"redis-server on port {self.port} did not start")

    def crash(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0?{FAST_RECOVERY}"


# ---------------------------------------------------------------- a round
@dataclass
class Round:
    index: int
    kind: str
    seed: int
    rng: random.Random
    dir: Path
    lib: Path
    data: Path
    env: dict
    db_url: str
    redis: bool
    scan_floor: int = 0  # scans of earlier rounds in a shared (PostgreSQL) database have ids up to this
    procs: list = field(default_factory=list)
    tried: list = field(default_factory=list)  # what was done, in words
    losses: list = field(default_factory=list)
    surprises: list = field(default_factory=list)
    notes: list = field(default_factory=list)  # counted events that are neither (a temp copy a kill left)
    undone: set = field(default_factory=set)  # scans an undo of this round reverted already
    must_tag: bool = True  # after recovery every file without a user genre holds new values
    hit: bool = False  # the fault landed while its target was at work
    files: int = 0
    seconds: float = 0.0
    extra_dirs: list = field(default_factory=list)  # removed with the round (the tmpfs part of disk-full)
    proxy: Optional[Proxy] = None
    phases: dict = field(default_factory=dict)  # seconds per phase: fault, recovery, checks, undo

    def loss(self, msg: str) -> None:
        self.losses.append(one_line(msg))

    def surprise(self, msg: str) -> None:
        self.surprises.append(one_line(msg))


class Suite:
    def __init__(self, args):
        self.args = args
        self.work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="tagger-faults-"))
        self.work.mkdir(parents=True, exist_ok=True)
        self.own_work = not args.workdir
        self.pristine = self.work / "pristine"
        self.specs = library_specs()
        self.snapshot: dict[str, FileState] = {}
        self.models: Optional[Path] = None
        # no user config: an empty file (a TAGGER_CONFIG naming a file that is absent is refused
        # by newer tagger, and read as "no config" by older)
        self.config = self.work / "empty-config.toml"
        self.config.write_text("# bench/faults.py: no settings from a config file\n")
        self.pg_url: Optional[str] = None
        self.pg_name: Optional[str] = None
        self.tmpfs: Optional[Path] = None
        self.tmpfs_error: Optional[str] = None
        self.live: list[Proc] = []  # every process started, for the cleanup
        self.redis_servers: list[RedisServer] = []
        self.proxies: list[Proxy] = []
        self.kept: list[Path] = []
        self.kinds: list[str] = []

    # ---------------------------------------------------------- set-up and clean-up
    def setup(self, kinds: list[str]) -> None:
        started = time.monotonic()
        self.kinds = kinds
        if not GTZAN.is_dir():
            raise SystemExit(f"the shared GTZAN copy is expected at {GTZAN}")
        self.models = train_model(self.work / "models")
        png = audiofiles.make_png(16, 16, seed=3)
        for spec in self.specs:
            dest = self.pristine / spec.name
            audiofiles.make_audio(dest.parent, spec.fmt, dest.name, seconds=spec.seconds, tags=spec.tags or None,
                                  cover=png if spec.cover else None, kind=spec.kind)
        for spec in self.specs:
            self.snapshot[spec.name] = state_of(self.pristine / spec.name)
        if "disk-full" in kinds:
            self._mount_tmpfs()
        if REDIS_KINDS & set(kinds):
            self._create_pg()
        log(f"set-up: model, {len(self.specs)} files ({self.lib_bytes() // 1024} KiB) in "
            f"{time.monotonic() - started:.1f} s; work folder {self.work}")

    def lib_bytes(self) -> int:
        return sum((self.pristine / s.name).stat().st_size for s in self.specs)

    def _mount_tmpfs(self) -> None:
        mnt = self.work / "tmpfs"
        mnt.mkdir(exist_ok=True)
        size_kb = self.lib_bytes() // 1024 + 4096  # the library, the data folder, a little room
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(mnt)],
                              capture_output=True, text=True)
        if done.returncode:
            self.tmpfs_error = f"cannot mount a tmpfs ({one_line(done.stderr) or 'not root?'})"
            log(f"disk-full: skipped, {self.tmpfs_error}")
        else:
            self.tmpfs = mnt

    def _create_pg(self) -> None:
        from sqlalchemy import create_engine, text

        self.pg_name = f"tagger_faults_{uuid.uuid4().hex[:10]}"
        admin = create_engine(self.args.pg, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{self.pg_name}"'))
        admin.dispose()
        self.pg_url = self.args.pg.rsplit("/", 1)[0] + "/" + self.pg_name
        env = self.tagger_env(self.work / "pg-setup", db=self.pg_url, broker=self.args.redis)
        done = subprocess.run([PY, "-m", "tagger", "db", "upgrade"], env=env, capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"tagger db upgrade failed: {done.stderr[-2000:]}")

    def cleanup(self) -> None:
        for p in self.live:
            if p.running():
                p.signal(signal.SIGKILL)
                p.p.wait()
            for pid in children_of(p.pid):
                kill(pid)
        for server in self.redis_servers:
            server.stop()
        for proxy in self.proxies:
            proxy.down()
        if REDIS_KINDS & set(self.kinds):
            try:
                import redis as redis_mod

                client = redis_mod.Redis.from_url(self.args.redis)
                client.flushdb()  # the last round's messages: the database is left as found
                client.close()
            except Exception:  # noqa: BLE001 - best effort
                pass
        if self._pg is not None:
            self._pg.dispose()
            self._pg = None
        if self.tmpfs is not None:
            subprocess.run(["umount", "-l", str(self.tmpfs)], capture_output=True)
            self.tmpfs = None
        if self.pg_name:
            try:
                from sqlalchemy import create_engine, text

                admin = create_engine(self.args.pg, isolation_level="AUTOCOMMIT")
                with admin.connect() as conn:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{self.pg_name}" WITH (FORCE)'))
                admin.dispose()
            except Exception as exc:  # noqa: BLE001 - best effort, said
                log(f"could not drop {self.pg_name}: {exc}")
            self.pg_name = None
        if self.own_work and not self.kept:
            shutil.rmtree(self.work, ignore_errors=True)

    # ---------------------------------------------------------- processes
    def tagger_env(self, data: Path, workers: int = 1, db: str = "", broker: str = "") -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TAGGER_")}
        env.update({"TAGGER_DATA_DIR": str(data), "TAGGER_CONFIG": str(self.config),
                    "TAGGER_MODEL": MODEL, "TAGGER_MODEL_DIRS": str(self.models), "TAGGER_MIN_CONFIDENCE": "0",
                    "TAGGER_WORKERS": str(workers), "TAGGER_WINDOWS": "4", "TAGGER_FIRST_WINDOWS": "0"})
        if db:
            env["TAGGER_DB_URL"] = db
        if broker:
            env["TAGGER_BROKER_URL"] = broker
        return env

    def start(self, r: Round, name: str, *args: str, env: Optional[dict] = None) -> Proc:
        p = Proc([PY, "-m", "tagger", *args], env or r.env, r.dir, f"{len(r.procs):02d}-{name}")
        r.procs.append(p)
        self.live.append(p)
        return p

    def run(self, r: Round, name: str, *args: str, env: Optional[dict] = None, timeout: float = 180) -> Proc:
        p = self.start(r, name, *args, env=env)
        if p.wait(timeout) is None:
            p.signal(signal.SIGKILL)
            p.p.wait()
            r.surprise(f"`tagger {' '.join(args[:3])}` hung for {timeout:.0f} s (killed)")
        return p

    def scan(self, r: Round, name: str = "scan", *more: str, env: Optional[dict] = None) -> Proc:
        """Start `tagger scan LIB` (Redis kinds: --wait, so it follows the jobs and owns the scan)."""
        extra = ("--wait",) if r.redis else ()
        return self.start(r, name, "scan", str(r.lib), "--json", "--quiet", *extra, *more, env=env)

    def redis_worker(self, r: Round, name: str, processes: int = 1, env: Optional[dict] = None) -> Proc:
        return self.start(r, name, "worker", "--processes", str(processes), env=env)

    # ---------------------------------------------------------- the database, as the suite reads it
    def engine(self, r: Round):
        from sqlalchemy import create_engine

        if r.db_url.startswith("sqlite:///") and not Path(r.db_url[len("sqlite:///"):]).exists():
            return None
        return create_engine(r.db_url)

    def count(self, r: Round, finished: bool) -> int:
        """Analyses of this round recorded (or finished); 0 while there is no database yet."""
        from sqlalchemy import func, select

        from tagger.db import schema as s

        try:
            if r.db_url.startswith("sqlite:///"):
                path = r.db_url[len("sqlite:///"):]
                if not os.path.exists(path):
                    return 0
                with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=0.2) as db:
                    where = f" WHERE status IN ({','.join(repr(str(x)) for x in s.FINISHED)})" if finished else ""
                    return db.execute(f"SELECT count(*) FROM analyses{where}").fetchone()[0]
            eng = self._pg_engine()
            with eng.connect() as conn:
                q = select(func.count()).select_from(s.Analysis).where(s.Analysis.scan_id > r.scan_floor)
                if finished:
                    q = q.where(s.Analysis.status.in_(list(s.FINISHED)))
                return conn.execute(q).scalar() or 0
        except Exception:  # noqa: BLE001 - not created yet, locked for a moment: nothing counted
            return 0

    _pg = None

    def _pg_engine(self):
        if self._pg is None:
            from sqlalchemy import create_engine

            self._pg = create_engine(self.pg_url, pool_size=1)
        return self._pg

    def max_scan_id(self) -> int:
        from sqlalchemy import func, select

        from tagger.db import schema as s

        with self._pg_engine().connect() as conn:
            return conn.execute(select(func.max(s.Scan.id))).scalar() or 0

    # ---------------------------------------------------------- moments
    def moment(self, r: Round, target: Proc, hows=("time", "done", "write", "renamed"),
               span: tuple[float, float] = (0.2, 3.5), ready: Optional[Callable[[], bool]] = None,
               limit: float = 60.0) -> str:
        """Wait for a random moment of ``target``'s work; return it in words. ``ready``: a condition
        to meet first (worker children started, say). The moment may come after the target ended:
        the caller sees that (``target.running()``) and counts the round as a miss."""
        rng = r.rng
        how = rng.choice(list(hows))
        deadline = time.monotonic() + limit
        if ready is not None:
            while not ready() and target.running() and time.monotonic() < deadline:
                time.sleep(0.01)
        if how == "time":
            t = rng.uniform(*span)
            time.sleep(t)
            return f"after {t:.2f} s"
        if how == "done":
            k = rng.randrange(0, len(self.specs))
            while target.running() and time.monotonic() < deadline:
                if (self.count(r, finished=True) >= k) and self.count(r, finished=False) > 0:
                    break
                time.sleep(0.02)
            return f"once {k} files were done"
        # a tag write in progress: a temporary copy beside a file of the library
        skip = rng.randrange(0, 3)  # let a few writes pass first
        seen = 0
        delay = rng.uniform(0, 0.015)
        while target.running() and time.monotonic() < deadline:
            temps = temp_copies(r.lib)
            if temps:
                if seen >= skip:
                    if how == "write":
                        time.sleep(delay)
                        return f"{delay * 1000:.0f} ms into tag write {seen + 1} ({temps[0].name})"
                    while temps[0].exists() and time.monotonic() < deadline:  # renamed onto the file now
                        pass
                    return f"just after tag write {seen + 1}'s copy was renamed"
                while temps[0].exists() and time.monotonic() < deadline:
                    time.sleep(0.0005)
                seen += 1
            time.sleep(0.0005)
        return f"waiting for tag write {seen + 1} ({how}), which never came"

    # ---------------------------------------------------------- rounds
    def new_round(self, index: int, kind: str, seed: int) -> Round:
        rng = random.Random(seed)
        base = self.work / f"r{index:04d}-{kind}"  # logs and the data folder: always on the real disk
        base.mkdir(parents=True)
        data = base / "data"
        lib = base / "lib"
        extra = []
        if kind == "disk-full" and self.tmpfs is not None:
            lib = self.tmpfs / f"r{index:04d}" / "lib"
            extra.append(lib.parent)
        shutil.copytree(self.pristine, lib)
        redis = kind in REDIS_KINDS
        workers = rng.choice([1, 1, 2])
        if redis:
            db_url = self.pg_url
            env = self.tagger_env(data, workers, db=db_url, broker=f"{self.args.redis}?{FAST_RECOVERY}")
        else:
            db_url = f"sqlite:///{data / 'tagger.sqlite3'}"
            env = self.tagger_env(data, workers)
        r = Round(index, kind, seed, rng, base, lib, data, env, db_url, redis, extra_dirs=extra)
        if redis:
            import redis as redis_mod

            client = redis_mod.Redis.from_url(self.args.redis)
            client.flushdb()
            client.close()
            r.scan_floor = self.max_scan_id()
        r.tried.append(f"{workers} worker{'s' if workers > 1 else ''}")
        return r

    def play(self, index: int, kind: str, seed: int) -> Round:
        started = time.monotonic()
        r = self.new_round(index, kind, seed)
        try:
            t = time.monotonic()
            getattr(self, "fault_" + kind.replace("-", "_"))(r)
            self.reap_round(r, "after the fault")
            r.phases["fault"] = time.monotonic() - t
            t = time.monotonic()
            self.recover(r)
            r.phases["recovery"] = time.monotonic() - t
            self.check(r)
        except Exception as exc:  # noqa: BLE001 - a defect of the suite or of tagger: a loss, said
            import traceback

            r.loss(f"the round stopped: {type(exc).__name__}: {exc} "
                   f"({traceback.extract_tb(exc.__traceback__)[-1].lineno})")
        finally:
            self.reap_round(r, "at the end", quiet=True)
            r.seconds = time.monotonic() - started
            if (r.losses or r.surprises) and self.args.keep_failed and len(self.kept) < 25:
                keep = self.work / "failed" / r.dir.name
                shutil.copytree(r.dir, keep, ignore_dangling_symlinks=True, dirs_exist_ok=True)
                self.kept.append(keep)
            for d in [r.dir, *r.extra_dirs]:
                shutil.rmtree(d, ignore_errors=True)
        return r

    def reap_round(self, r: Round, when: str, quiet: bool = False) -> None:
        """Every process of the round (and the workers its scans started) gone; stragglers killed."""
        pids = []
        for p in r.procs:
            if p.running():
                p.signal(signal.SIGTERM)
            pids += children_of(p.pid)
        deadline = time.monotonic() + 30
        for p in r.procs:
            if p.wait(max(0.1, deadline - time.monotonic())) is None:
                if not quiet:
                    r.surprise(f"{p.name} still running {when} (killed)")
                p.signal(signal.SIGKILL)
                p.p.wait()
        for pid in pids:
            while alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if alive(pid):
                if not quiet:
                    r.surprise(f"worker {pid} outlived its parent {when} (killed)")
                kill(pid)
        self.live = [p for p in self.live if p.running()]

    # ---------------------------------------------------------- the faults
    def fault_scan_kill9(self, r: Round) -> None:
        scan = self.scan(r)
        when = self.moment(r, scan)
        r.hit = scan.running()
        scan.signal(signal.SIGKILL)
        scan.wait(30)
        r.tried.append(f"kill -9 of the scan {when}" + ("" if r.hit else " (it had ended)"))

    def fault_worker_kill9(self, r: Round) -> None:
        scan = self.scan(r)
        when = self.moment(r, scan, ready=lambda: bool(children_of(scan.pid)))
        kids = children_of(scan.pid)
        r.hit = scan.running() and bool(kids)
        if kids:
            kill(r.rng.choice(kids))
        r.tried.append(f"kill -9 of a worker {when}" + ("" if r.hit else " (the scan had ended)"))
        rc = scan.wait(180)
        summary = scan.json() or {}
        if rc != 0:
            r.surprise(f"the scan whose worker was killed ended with {rc}: {one_line(scan.error_line())}")
        elif summary.get("failed"):
            r.surprise(f"a killed worker cost {summary['failed']} failed files: "
                       f"{one_line(str(summary.get('failures'))[:200])}")

    def fault_group_kill9(self, r: Round) -> None:
        scan = self.scan(r)
        when = self.moment(r, scan, hows=("renamed", "renamed", "write", "time", "done"),
                           ready=lambda: bool(children_of(scan.pid)))
        kids = children_of(scan.pid)
        r.hit = scan.running()
        for pid in kids:
            kill(pid)
        scan.signal(signal.SIGKILL)
        scan.wait(30)
        r.tried.append(f"kill -9 of the scan and its {len(kids)} workers {when}" + ("" if r.hit else " (it had ended)"))

    def fault_scan_sigterm(self, r: Round) -> None:
        scan = self.scan(r)
        when = self.moment(r, scan)
        r.hit = scan.running()
        scan.signal(signal.SIGTERM)
        rc = scan.wait(90)
        r.tried.append(f"SIGTERM of the scan {when}, exit {rc}" + ("" if r.hit else " (it had ended)"))
        if rc not in (143, 0):
            r.surprise(f"SIGTERM: the scan ended with {rc}: {one_line(scan.error_line())}")
        if scan.traceback():
            r.surprise(f"SIGTERM: traceback: {scan.traceback()}")
        if rc == 143:
            eng = self.engine(r)
            if eng is not None:
                from sqlalchemy import select

                from tagger.db import schema as s

                with eng.connect() as conn:
                    left = conn.execute(select(s.Analysis.id).where(
                        s.Analysis.status.in_([s.QUEUED, s.RUNNING]))).all()
                    statuses = [row[0] for row in conn.execute(select(s.Scan.status)).all()]
                eng.dispose()
                if left or any(st == "running" for st in statuses):
                    r.surprise(f"SIGTERM left {len(left)} analyses unfinished, scans {statuses}")

    def fault_disk_full(self, r: Round) -> None:
        if self.tmpfs is None:
            raise RuntimeError(self.tmpfs_error or "no tmpfs")
        data_too = r.rng.random() < 0.3
        if data_too:  # the results database on the full disk too: the scan must stop with one line
            r.data = r.lib.parent / "data"
            r.db_url = f"sqlite:///{r.data / 'tagger.sqlite3'}"
            r.env["TAGGER_DATA_DIR"] = str(r.data)
        scan = self.scan(r)
        when = self.moment(r, scan, hows=("time", "done", "write"))
        leave = r.rng.choice([0, 0, 64 * 1024, 256 * 1024])
        filler = r.lib.parent / "filler"
        with open(filler, "wb", buffering=0) as f:  # unbuffered: nothing left to fail at close
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass
        if leave:
            os.truncate(filler, max(0, filler.stat().st_size - leave))
        r.hit = scan.running()
        r.tried.append(f"the disk filled {when} (left {leave // 1024} KiB; "
                       f"{'data folder on it too' if data_too else 'data folder elsewhere'})"
                       + ("" if r.hit else " (the scan had ended)"))
        rc = scan.wait(180)
        if rc not in (0, 1):
            r.surprise(f"full disk: the scan ended with {rc}: {one_line(scan.error_line())}")
        if scan.traceback():
            r.surprise(f"full disk: traceback: {scan.traceback()}")
        self.reap_round(r, "after the disk filled")
        filler.unlink()
        failed = (scan.json() or {}).get("failed")
        r.tried.append(f"scan exit {rc}" + (f", {failed} files failed on the full disk" if failed else ""))

    def fault_db_locked(self, r: Round) -> None:
        which = r.rng.choice(["tagger", "tagger", "queue"])
        path = r.data / f"{which}.sqlite3"
        hold = r.rng.uniform(1, 8)
        scan = self.scan(r)
        when = self.moment(r, scan, hows=("time", "done"), ready=lambda: path.exists(), span=(0.0, 3.0))
        table = "scans SET host = host" if which == "tagger" else "messages SET state = state"
        locker = Proc([PY, "-c", (
            "import sqlite3, sys, time\n"
            f"db = sqlite3.connect({str(path)!r}, timeout=60, isolation_level=None)\n"
            "db.execute('BEGIN IMMEDIATE')\n"
            f"db.execute('UPDATE {table}')\n"
            "print('locked', flush=True)\n"
            f"time.sleep({hold:.2f})\n"
            f"db.execute({'COMMIT' if r.rng.random() < 0.5 else 'ROLLBACK'!r})\n")],
            os.environ.copy(), r.dir, f"{len(r.procs):02d}-locker")
        r.procs.append(locker)
        self.live.append(locker)
        r.hit = scan.running()
        r.tried.append(f"{which} database write-locked {when} for {hold:.1f} s" + ("" if r.hit else " (scan had ended)"))
        rc = scan.wait(180)
        locker.wait(30)
        summary = scan.json() or {}
        if rc != 0:
            r.surprise(f"a {hold:.1f} s lock of the {which} database ended the scan with {rc}: "
                       f"{one_line(scan.error_line())}")
        elif summary.get("failed"):
            r.surprise(f"a {hold:.1f} s lock of the {which} database failed {summary['failed']} files: "
                       f"{one_line(str(summary.get('failures'))[:200])}")
        if "locked" not in locker.out():
            r.surprise(f"the locker never got its lock: {one_line(locker.err()[-200:])}")

    def fault_two_scans(self, r: Round) -> None:
        a = self.scan(r, "scan-a")
        gap = r.rng.choice([0.0, r.rng.uniform(0, 0.6), r.rng.uniform(0.5, 2.0)])
        time.sleep(gap)
        b = self.scan(r, "scan-b")
        r.hit = a.running()
        rcs = [a.wait(180), b.wait(180)]
        r.tried.append(f"two scans {gap:.2f} s apart, exits {rcs}")
        for p, rc in zip((a, b), rcs):
            if rc != 0 or p.traceback():
                r.surprise(f"{p.name[3:]} of two at once ({gap:.2f} s apart) ended with {rc}: "
                           f"{p.traceback() or one_line(p.error_line())}")
        sums = [a.json() or {}, b.json() or {}]
        if all(sums) and sums[0].get("tagged", 0) + sums[1].get("tagged", 0) > sum(
                not s.user_genre for s in self.specs):
            r.surprise(f"two scans at once tagged {sums[0]['tagged']} + {sums[1]['tagged']} files (some twice)")

    def _full_scan(self, r: Round) -> int:
        p = self.run(r, "setup-scan", "scan", str(r.lib), "--json", "--quiet", *(("--wait",) if r.redis else ()))
        summary = p.json()
        if p.p.returncode != 0 or not summary:
            raise RuntimeError(f"the first full scan failed ({p.p.returncode}): {one_line(p.err()[-300:])}")
        return summary["scan_id"]

    def fault_scan_during_undo(self, r: Round) -> None:
        first = self._full_scan(r)
        r.must_tag = False  # undo records the restored files as analysed: later scans leave them alone
        gap = r.rng.uniform(-0.8, 0.8)
        procs = []
        if gap < 0:
            procs.append(self.scan(r, "scan"))
            time.sleep(-gap)
        undo = self.start(r, "undo", "undo", "--scan", str(first), "--json")
        if gap >= 0:
            time.sleep(gap)
            procs.append(self.scan(r, "scan"))
        scan = procs[0]
        r.hit = undo.running()
        rcs = (undo.wait(180), scan.wait(180))
        r.undone.add(first)
        r.tried.append(f"undo of scan {first} and a scan {abs(gap):.2f} s apart "
                       f"({'scan' if gap < 0 else 'undo'} first), exits {list(rcs)}")
        for p, rc in ((undo, rcs[0]), (scan, rcs[1])):
            if rc != 0 or p.traceback():
                r.surprise(f"{p.name[3:]} during an undo/scan ended with {rc}: "
                           f"{p.traceback() or one_line(p.error_line())}")
        results = undo.json() or []
        odd = [f"{Path(x['path']).name}: {x['status']} ({x['reason']})" for x in results
               if x["status"] not in ("restored", "unchanged")]
        if odd:
            r.surprise(f"undo during a scan: {'; '.join(odd)}")

    def fault_undo_kill9(self, r: Round) -> None:
        first = self._full_scan(r)
        r.must_tag = False  # undo records the restored files as analysed: later scans leave them alone
        undo = self.start(r, "undo", "undo", "--scan", str(first), "--json")
        when = self.moment(r, undo, hows=("time", "write", "renamed"), span=(0.0, 1.5))
        r.hit = undo.running()
        undo.signal(signal.SIGKILL)
        undo.wait(30)
        r.undone.add(first)
        # finish the undo as a user can: the files still holding what scan `first` wrote, one by one
        # (`tagger undo --scan` again would redo the files already restored: an undo of an undo)
        rest = [spec.name for spec in self.specs
                if self.read_fields(r.lib / spec.name) != self.snapshot[spec.name].fields]
        for name in rest:
            p = self.run(r, "undo-file", "undo", "--file", str(r.lib / name), "--json")
            got = p.json() or []
            if p.p.returncode != 0 or [x["status"] for x in got] != ["restored"]:
                r.loss(f"{name}: `tagger undo --file` after a killed undo: exit {p.p.returncode}, "
                       f"{[(x['status'], x['reason']) for x in got]} {one_line(p.err()[-200:])}")
        r.tried.append(f"kill -9 of the undo of scan {first} {when}; {len(rest)} files undone one by one after"
                       + ("" if r.hit else " (it had ended)"))

    def read_fields(self, path: Path) -> dict:
        from tagger import tags

        return tags.read(path, fmt_of(path))

    def fault_supervisor_kill9(self, r: Round) -> None:
        sup = self.redis_worker(r, "supervisor", processes=2)
        scan = self.scan(r)
        with_children = r.rng.random() < 0.3
        when = self.moment(r, scan, ready=lambda: len(children_of(sup.pid)) >= 2, limit=90)
        kids = children_of(sup.pid)
        r.hit = scan.running()
        if with_children:
            for pid in kids:
                kill(pid)
        sup.signal(signal.SIGKILL)
        sup.wait(30)
        r.tried.append(f"kill -9 of the supervisor{' and its workers' if with_children else ''} {when}"
                       + ("" if r.hit else " (scan had ended)"))
        self.redis_worker(r, "worker")
        rc = scan.wait(180)
        summary = scan.json() or {}
        if rc != 0:
            r.surprise(f"after the supervisor's kill the scan ended with {rc}: {one_line(scan.error_line())}")
        elif summary.get("failed"):
            r.surprise(f"the supervisor's kill cost {summary['failed']} failed files: "
                       f"{one_line(str(summary.get('failures'))[:200])}")

    def fault_redis_restart(self, r: Round) -> None:
        persist = r.rng.random() < 0.5
        server = RedisServer(r.dir / "redis", persist).start()
        self.redis_servers.append(server)
        r.env["TAGGER_BROKER_URL"] = server.url()
        self.redis_worker(r, "worker")
        scan = self.scan(r)
        when = self.moment(r, scan)
        r.hit = scan.running()
        server.crash()
        down = r.rng.uniform(0.3, 3.0)
        time.sleep(down)
        server.start()
        r.tried.append(f"redis-server ({'AOF' if persist else 'no persistence'}) crashed {when}, back after "
                       f"{down:.1f} s" + ("" if r.hit else " (scan had ended)"))
        rc = scan.wait(60 if persist else 8)
        if rc is None and not persist:  # the queue is gone: what the README says to do
            time.sleep(1)
            scan_id = self.latest_scan_id(r)
            q = self.run(r, "requeue", "requeue", "--scan", str(scan_id), "--running")
            r.tried.append(f"requeue: {one_line(q.out())}")
            rc = scan.wait(120)
        if rc is None:
            r.surprise(f"the scan did not finish after the Redis restart ({'AOF' if persist else 'requeued'})")
            scan.signal(signal.SIGTERM)
            scan.wait(60)
        elif rc == 1 and "cannot reach the broker" in scan.err():
            r.tried.append("the scan met the dead broker while queueing: exit 1, one line (as designed)")
        elif rc != 0:
            r.surprise(f"after a Redis restart the scan ended with {rc}: {one_line(scan.error_line())}")

    def latest_scan_id(self, r: Round) -> int:
        from sqlalchemy import func, select

        from tagger.db import schema as s

        with self._pg_engine().connect() as conn:
            return conn.execute(select(func.max(s.Scan.id)).where(s.Scan.id > r.scan_floor)).scalar() or 0

    def fault_pg_outage(self, r: Round) -> None:
        from sqlalchemy.engine import make_url

        url = make_url(self.pg_url)
        proxy = Proxy(url.port or 5432)
        proxy.up()
        via = url.set(port=proxy.port).render_as_string(hide_password=False)
        env = dict(r.env, TAGGER_DB_URL=via)
        self.redis_worker(r, "worker", env=env)
        scan = self.scan(r, env=env)
        when = self.moment(r, scan)
        r.hit = scan.running()
        proxy.down()
        out = r.rng.uniform(1, 6)
        time.sleep(out)
        proxy.up()
        r.tried.append(f"PostgreSQL cut {when} for {out:.1f} s" + ("" if r.hit else " (scan had ended)"))
        rc = scan.wait(180)
        r.tried.append(f"scan exit {rc}")
        if rc not in (0, 1) or scan.traceback():
            r.surprise(f"PostgreSQL outage: the scan ended with {rc}: {scan.traceback() or one_line(scan.error_line())}")
        elif rc == 1 and "results database" not in scan.err():
            r.surprise(f"PostgreSQL outage: exit 1 with {one_line(scan.error_line())}")
        r.proxy = proxy  # the worker still goes through it; closed in recover
        self.proxies.append(proxy)

    # ---------------------------------------------------------- recovery and checks
    def recover(self, r: Round) -> None:
        worker = None
        if r.redis:
            worker = next((p for p in r.procs if p.name.endswith("worker") and p.running()), None)
            if worker is None:
                worker = self.redis_worker(r, "recovery-worker")
        p = self.run(r, "recovery-scan", "scan", str(r.lib), "--json", "--quiet", *(("--wait",) if r.redis else ()))
        summary = p.json()
        if p.p.returncode != 0 or summary is None:
            r.loss(f"the recovery scan ended with {p.p.returncode}: {one_line(p.err()[-300:])}")
        elif summary["failed"] or summary["pending"]:
            r.loss(f"the recovery scan left {summary['failed']} failed, {summary['pending']} pending: "
                   f"{one_line(str(summary['failures'])[:300])}")
        temps = temp_copies(r.lib)
        if temps:
            # a write killed midway leaves its copy; the next scan removes copies an hour old
            from tagger import tags

            age = getattr(tags, "STALE_TEMP_AGE_S", 3600.0) * 2
            for t in temps:
                os.utime(t, (time.time() - age, time.time() - age))
            r.notes.append(f"{len(temps)} temp copies left by the fault")
            self.run(r, "temp-scan", "scan", str(r.lib), "--json", "--quiet", *(("--wait",) if r.redis else ()))
            for t in temp_copies(r.lib):
                r.loss(f"{t.name}: a temporary copy aged past the stale limit was not removed by the next scan")
        if worker is not None:
            for w in [p for p in r.procs if p.name.endswith(("worker", "supervisor")) and p.running()]:
                if w.stop(60) is None:
                    r.surprise(f"{w.name} did not stop on SIGTERM")
        if r.proxy is not None:
            r.proxy.down()

    def round_scans(self, r: Round, db) -> list:
        from sqlalchemy import select

        from tagger.db import schema as s

        lib = str(r.lib)
        scans = db.scalars(select(s.Scan).where(s.Scan.id > r.scan_floor).order_by(s.Scan.id)).all()
        return [sc for sc in scans if any(str(root) == lib or str(root).startswith(lib + "/") for root in sc.roots)]

    def check(self, r: Round) -> None:
        from sqlalchemy import select
        from sqlalchemy.orm import Session

        from tagger.db import schema as s

        t0 = time.monotonic()
        labels = {_norm(g) for g in json.loads((self.models / MODEL / "card.json").read_text())["labels"]}
        eng = self.engine(r)
        if eng is None:
            r.loss("no results database after recovery")
            return
        with Session(eng) as db:
            scans = self.round_scans(r, db)
            scan_ids = [sc.id for sc in scans]
            for sc in scans:
                if sc.status == s.ScanStatus.RUNNING:
                    r.loss(f"scan {sc.id} is still 'running' after recovery")
            if scan_ids:
                stuck = db.scalars(select(s.Analysis).where(s.Analysis.scan_id.in_(scan_ids),
                                                            s.Analysis.status.in_([s.QUEUED, s.RUNNING]))).all()
                for a in stuck:
                    r.loss(f"{Path(a.file.path).name}: analysis {a.id} of scan {a.scan_id} still {a.status}")
            latest_change = {}
            for spec in self.specs:
                path = r.lib / spec.name
                f = db.scalars(select(s.File).where(s.File.raw_path == os.fsencode(path))).first()
                if f is None:
                    latest_change[spec.name] = "missing"
                    continue
                c = db.scalars(select(s.TagChange).where(s.TagChange.file_id == f.id,
                                                         s.TagChange.state == s.ChangeState.DONE)
                               .order_by(s.TagChange.id.desc())).first()
                latest_change[spec.name] = None if c is None else dict(c.after)
        eng.dispose()

        for spec in self.specs:
            path, pre = r.lib / spec.name, self.snapshot[spec.name]
            r.files += 1
            if not path.exists():
                r.loss(f"{spec.name}: gone")
                continue
            try:
                now = state_of(path)
            except Exception as exc:  # noqa: BLE001 - unreadable is a loss
                r.loss(f"{spec.name}: cannot be read back: {exc}")
                continue
            if now.decode != pre.decode:
                r.loss(f"{spec.name}: does not decode as before: {now.decode[:200]}")
            if now.payload != pre.payload:
                r.loss(f"{spec.name}: audio payload changed")
            # a genre the model can name, as tagger spells it in the tags (it may capitalise)
            new = (len(now.fields["genre"]) == 1 and _norm(now.fields["genre"][0]) in labels
                   and len(now.fields["confidence"]) == 1
                   and re.fullmatch(r"[01]\.\d{3}", now.fields["confidence"][0]) is not None
                   and now.fields["model"] == [MODEL_VALUE])
            if now.fields != pre.fields and not new:
                r.loss(f"{spec.name}: torn fields {now.fields} (before {pre.fields})")
            if spec.user_genre and now.fields != pre.fields:
                r.loss(f"{spec.name}: the user's genre was replaced: {now.fields}")
            if r.must_tag and not spec.user_genre and not new:
                r.loss(f"{spec.name}: not tagged after recovery: {now.fields}")
            if now.others != pre.others:
                diff = sorted(k for k in set(now.others) | set(pre.others) if now.others.get(k) != pre.others.get(k))
                r.loss(f"{spec.name}: other tags changed: {diff}")
            if now.cover != pre.cover:
                r.loss(f"{spec.name}: cover changed")
            recorded = latest_change.get(spec.name)
            if recorded == "missing":
                r.loss(f"{spec.name}: not in the results database")
            elif recorded is None and now.fields != pre.fields:
                r.loss(f"{spec.name}: holds {now.fields} with no done change on record")
            elif recorded is not None and recorded != now.fields:
                r.loss(f"{spec.name}: the database's latest done change says {recorded}, the file holds {now.fields}")
        for t in temp_copies(r.lib):
            r.loss(f"{t.name}: temporary copy left")

        # undo every scan of the round, newest first, and the library must be as it was
        r.phases["checks"] = time.monotonic() - t0
        t0 = time.monotonic()
        eng = self.engine(r)
        with Session(eng) as db:
            with_changes = {c for (c,) in db.execute(select(s.TagChange.scan_id).where(
                s.TagChange.scan_id.in_(scan_ids or [-1])).distinct()).all()}
        eng.dispose()
        for scan_id in sorted(set(scan_ids) - r.undone, reverse=True):
            if scan_id not in with_changes:
                continue  # no change recorded at all: nothing for undo to do
            p = self.run(r, "final-undo", "undo", "--scan", str(scan_id), "--json")
            got = p.json()
            if p.p.returncode != 0 or got is None:
                r.loss(f"undo --scan {scan_id} ended with {p.p.returncode}: {one_line(p.err()[-300:])}")
                continue
            for x in got:
                if x["status"] not in ("restored", "unchanged"):
                    r.loss(f"{Path(x['path']).name}: undo --scan {scan_id}: {x['status']} ({x['reason']})")
        for spec in self.specs:
            path, pre = r.lib / spec.name, self.snapshot[spec.name]
            try:
                now = state_of(path, decode=False)
            except Exception as exc:  # noqa: BLE001
                r.loss(f"{spec.name}: unreadable after undo: {exc}")
                continue
            if now.fields != pre.fields:
                r.loss(f"{spec.name}: undo of the round's scans left {now.fields}, not {pre.fields}")
            elif now.everything != pre.everything:
                diff = sorted(k for k in set(now.everything) | set(pre.everything)
                              if now.everything.get(k) != pre.everything.get(k))
                r.loss(f"{spec.name}: after undo the tags differ from the original in {diff}")
            if now.payload != pre.payload:
                r.loss(f"{spec.name}: audio payload changed after undo")
        for t in temp_copies(r.lib):
            r.loss(f"{t.name}: temporary copy left by undo")
        r.phases["undo"] = time.monotonic() - t0


# ---------------------------------------------------------------- the run
def plan(kinds: list[str], rounds: int, rng: random.Random) -> list[str]:
    """``rounds`` rounds spread evenly over the kinds, in a seeded order."""
    order = [kinds[i % len(kinds)] for i in range(rounds)]
    rng.shuffle(order)
    return order


def report(results: list[Round], kinds: list[str], wall: float, skipped: dict[str, str]) -> dict:
    per = {}
    for k in kinds:
        rs = [r for r in results if r.kind == k]
        per[k] = {
            "what": KINDS[k],
            "rounds": len(rs),
            "hit": sum(r.hit for r in rs),
            "files_checked": sum(r.files for r in rs),
            "losses": [f"round {r.index} (seed {r.seed}): {msg}" for r in rs for msg in r.losses],
            "surprises": [f"round {r.index} (seed {r.seed}): {msg}" for r in rs for msg in r.surprises],
            "notes": [f"round {r.index}: {msg}" for r in rs for msg in r.notes],
            "seconds_per_round": round(sum(r.seconds for r in rs) / len(rs), 2) if rs else None,
        }
        if k in skipped:
            per[k]["skipped"] = skipped[k]
    return {
        "kinds": per,
        "rounds": [{"index": r.index, "kind": r.kind, "seed": r.seed, "hit": r.hit, "tried": r.tried,
                    "losses": r.losses, "surprises": r.surprises, "notes": r.notes,
                    "seconds": round(r.seconds, 2), "phases": {k: round(v, 2) for k, v in r.phases.items()}}
                   for r in results],
        "total": {"rounds": len(results), "kinds": len({r.kind for r in results}),
                  "files_checked": sum(r.files for r in results),
                  "losses": sum(len(r.losses) for r in results),
                  "rounds_with_losses": sum(bool(r.losses) for r in results),
                  "surprises": sum(len(r.surprises) for r in results),
                  "wall_seconds": round(wall, 1),
                  "seconds_per_round": round(wall / len(results), 2) if results else None},
    }


def print_report(doc: dict) -> None:
    print(f"{'kind':<18} {'rounds':>6} {'hit':>4} {'files':>6} {'losses':>6} {'surprises':>9} {'s/round':>8}")
    for k, v in doc["kinds"].items():
        if "skipped" in v:
            print(f"{k:<18} skipped: {v['skipped']}")
            continue
        print(f"{k:<18} {v['rounds']:>6} {v['hit']:>4} {v['files_checked']:>6} {len(v['losses']):>6} "
              f"{len(v['surprises']):>9} {v['seconds_per_round'] or 0:>8.1f}")
        for msg in v["losses"]:
            print(f"    LOST  {msg}")
        for msg in v["surprises"]:
            print(f"    odd   {msg}")
        if v["notes"]:
            print(f"    note  {len(v['notes'])} rounds: temporary copies left by the fault, removed by the next "
                  "scan once aged past the stale limit")
    t = doc["total"]
    print(f"total: {t['rounds']} rounds, {t['kinds']} kinds, {t['files_checked']} files checked, "
          f"{t['losses']} losses ({t['rounds_with_losses']} rounds), {t['surprises']} surprises, "
          f"wall {t['wall_seconds']:.0f} s ({t['seconds_per_round'] or 0:.1f} s/round)")


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="kinds:\n" + "\n".join(f"  {k:<17} {v}" for k, v in KINDS.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=240, help="rounds in all, spread evenly over the kinds (default 240)")
    ap.add_argument("--kinds", default=",".join(KINDS), help="comma-separated kinds (default: all; --list)")
    ap.add_argument("--seed", type=int, default=21, help="seed of the plan and of every round's moments (default 21)")
    ap.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    ap.add_argument("--list", action="store_true", help="list the kinds and exit")
    ap.add_argument("--redis", default=REDIS_URL, help=f"Redis database for the Redis kinds (default {REDIS_URL})")
    ap.add_argument("--pg", default=PG_ADMIN_URL, help="PostgreSQL admin URL; a database is created and dropped")
    ap.add_argument("--workdir", help="work folder (default: a temporary one, removed unless rounds failed)")
    ap.add_argument("--keep-failed", action=argparse.BooleanOptionalAction, default=True,
                    help="keep the folders (logs, database, files) of the first 25 rounds that lost something "
                         "or surprised (default: yes)")
    args = ap.parse_args(argv)
    if args.list:
        for k, v in KINDS.items():
            print(f"{k:<17} {v}")
        return 0
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        ap.error(f"unknown kinds {unknown}; --list names them")
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")

    suite = Suite(args)
    atexit.register(suite.cleanup)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: sys.exit(130))
    started = time.monotonic()
    suite.setup(kinds)
    skipped = {}
    if "disk-full" in kinds and suite.tmpfs is None:
        skipped["disk-full"] = suite.tmpfs_error or "no tmpfs"
    runnable = [k for k in kinds if k not in skipped]
    rng = random.Random(args.seed)
    results = []
    order = plan(runnable, args.rounds, rng)
    for i, kind in enumerate(order, start=1):
        r = suite.play(i, kind, rng.randrange(2 ** 32))
        results.append(r)
        mark = "LOST " + "; ".join(r.losses) if r.losses else ("odd: " + "; ".join(r.surprises) if r.surprises else "ok")
        phases = " ".join(f"{k[0]}{v:.1f}" for k, v in r.phases.items())
        log(f"[{i}/{len(order)}] {kind:<17} {r.seconds:5.1f} s ({phases}) {'hit ' if r.hit else 'miss'} "
            f"{'; '.join(r.tried)} -> {one_line(mark, 400)}")
    wall = time.monotonic() - started
    doc = report(results, kinds, wall, skipped)
    suite.cleanup()
    if suite.kept:
        doc["kept"] = [str(p) for p in suite.kept]
    if args.json:
        print(json.dumps(doc, indent=2, ensure_ascii=False))
    else:
        print_report(doc)
        if suite.kept:
            print(f"folders of rounds that lost something or surprised: {suite.work / 'failed'}")
    return 1 if doc["total"]["losses"] else 0


if __name__ == "__main__":
    sys.exit(main())
