"""Worker processes: headless (``tagger worker``) or local to an embedded scan.

Each process runs one Dramatiq ``Worker`` over the configured broker; the
model loads once per process, before its first job, with the process's share of
the cores as its thread budget.
"""
from __future__ import annotations

import logging
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from typing import Optional

from tagger import cpus
from tagger.config import Settings, mask_url

log = logging.getLogger("tagger.worker")

#: with ``runtime = auto``, on a CPU with AVX-512, the workers of a scan that queues at most this
#: many files each run the default model in ONNX Runtime (LiteRT where it cannot run): on an AMD
#: EPYC with AVX512-BF16, 2026-12-07, a worker started and tagged a first clip in 0.85 s and 282 MB
#: instead of 5.8 s and 1.4 GB with TensorFlow, and heard a window in about twice the time (both
#: networks, one thread: 66.5 against 34.4 ms in bfloat16; musicnn-msd alone 31.5 against 16.8), so
#: below ≈ 30 unfamiliar tracks (7.5 windows each) or ≈ 48 familiar ones (3.8) a worker is done
#: sooner in ONNX Runtime; README, Throughput. Without AVX-512 the light runtimes are the faster
#: per window too and ONNX Runtime runs every scan (``runtime.litert_outruns_keras``)
LIGHT_FILES_PER_WORKER = 30


def runtime_for(setting: str, expected: Optional[int], processes: int) -> str:
    """The runtime a scan's workers use: ``setting`` unless it is auto; then onnx where the light
    runtimes outrun Keras on this CPU, and also where the scan is known to queue at most
    ``LIGHT_FILES_PER_WORKER`` files per worker (``expected``; None: not known, as when discovery
    is still walking a large tree); else keras. Asked for onnx, a worker runs LiteRT where ONNX
    Runtime cannot run (``runtime.wants_litert``)."""
    from tagger.models import runtime

    if setting != "auto":
        return setting
    if runtime.litert_outruns_keras():
        return "onnx"
    small = expected is not None and expected <= LIGHT_FILES_PER_WORKER * max(1, processes)
    return "onnx" if small else "keras"


def waits_for_size(settings: Settings, processes: int) -> int:
    """How many files a scan may queue for its workers still to run otherwise (``runtime_for``):
    they wait for discovery to learn its size only where the answer could change the runtime."""
    from tagger.models import runtime

    if settings.runtime != "auto" or runtime.litert_outruns_keras():
        return 0
    return LIGHT_FILES_PER_WORKER * max(1, processes)


def run(settings: Settings, threads: int = 1, queues: Optional[list[str]] = None,
        model_threads: int = 0, parent: int = 0) -> int:
    """Run one worker process until SIGTERM or SIGINT; finishes its current job first.

    ``parent``: the pid of the scan that started this worker (``ProcessGroup``); when that
    process is gone (killed with -9, say, so it could not stop its workers) the worker stops
    as on SIGTERM instead of living on as an orphan holding a model in memory.
    """
    import dramatiq

    from tagger import queue
    from tagger.models import runtime
    from tagger.workers import actors

    runtime.set_threads(model_threads or max(1, cpus.usable() // max(1, threads)))
    runtime.set_precision(settings.precision)
    runtime.set_runtime(settings.runtime)
    runtime.set_student(settings.student)
    warm_up(settings)
    broker = queue.configure(settings)
    actors.declare(broker)
    worker = dramatiq.Worker(broker, queues=set(queues) if queues else None, worker_threads=threads,
                             worker_timeout=500)
    stop = threading.Event()

    def _stop(signum, _frame):
        log.info("signal %s: finishing the current job, then stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    worker.start()
    log.info("worker %s ready on %s", os.getpid(), mask_url(settings.queue_url))
    try:
        while not stop.wait(0.5):
            if parent and os.getppid() != parent:
                log.info("worker %s: the scan that started it (%s) is gone; stopping", os.getpid(), parent)
                break
    finally:
        # unacked prefetched messages go back; the running job completes
        worker.stop(timeout=settings.job_time_limit * 1000)
        broker.close()
        log.info("worker %s stopped; peak RSS %.0f MB", os.getpid(), peak_rss_mb())
    return 0


def peak_rss_mb() -> float:
    """This process's peak resident memory, MB: VmHWM where Linux has it (ru_maxrss also counts
    what a process inherited through fork before exec), else ru_maxrss."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def warm_up(settings: Settings) -> None:
    """Pay start-up once, before the first job: imports, the model, feature tables.

    A scan that names another model loads it on its first job; a broken model
    is reported by the jobs, not here.
    """
    import numpy as np

    from tagger import audio, features, pipeline
    from tagger.models import progressive

    started = time.monotonic()
    try:
        model = pipeline.predictor_for(settings.model, settings.model_dirs).primary()
        silence = np.zeros(features.PATCH_SAMPLES, dtype=np.float32)
        silence[::100] = 0.1  # not silent, so every feature path runs
        info = audio.AudioInfo(features.PATCH_SAMPLES, features.SR, 1, "warm-up")
        clip = audio.Clip(windows=[silence], sr=features.SR, info=info)
        model.predict_batch([clip])
        # the progressive path (None where the model has none), at every batch size it will use
        progressive.warm_up(model, settings.hearing, silence, features.SR, info)
        student = getattr(model, "student", None)  # the default's student hears every track first
        if student is not None:
            progressive.warm_up(student, settings.hearing, silence, features.SR, info)
        # the decoders' and taggers' imports (PyAV alone costs ≈ 0.3 s)
        import av  # noqa: F401
        import mutagen.flac  # noqa: F401
        import mutagen.id3  # noqa: F401
        import mutagen.mp4  # noqa: F401
        import mutagen.oggvorbis  # noqa: F401
        import soundfile  # noqa: F401
        log.info("worker %s warmed up %s (%s%s) in %.1fs", os.getpid(), model.card.name,
                 getattr(model, "runtime", "keras"), ", student first" if student is not None else "",
                 time.monotonic() - started)
    except Exception as exc:
        log.warning("warm-up failed (%s); the first job will load the model", exc)


class ProcessGroup:
    """N ``tagger worker`` child processes, restarted if one dies.

    Quiet children write to ``worker.log`` in the data directory; a log grown
    past ``LOG_LIMIT`` is moved to ``worker.log.1`` (replacing the one before)
    when a group starts, so the log of many scans stays bounded.
    """

    LOG_LIMIT = 10 * 1024 * 1024

    def __init__(self, settings: Settings, processes: int, threads: int = 1, queues: Optional[list[str]] = None,
                 max_restarts: int = 3, quiet: bool = True):
        self.settings = settings
        self.n = max(1, processes)
        self.threads = threads
        self.queues = queues or []
        self.max_restarts = max_restarts
        self.restarts = 0
        self.quiet = quiet
        self.procs: list[subprocess.Popen] = []
        self.log_path = settings.data_dir / "worker.log"
        #: what runs the networks in the children (``runtime_for``), decided when the group starts
        self.size_up_to = waits_for_size(settings, self.n)
        self.runtime = runtime_for(settings.runtime, None, self.n)
        #: (above) a scan of at most this many files runs its workers otherwise (``scan.discover_and_queue``)

    def _spawn(self) -> subprocess.Popen:
        env = dict(os.environ)
        env.update(self.settings.to_env())
        env["TAGGER_RUNTIME"] = self.runtime
        model_threads = max(1, cpus.usable() // self.n)
        cmd = [sys.executable, "-m", "tagger", "worker", "--processes", "1", "--threads", str(self.threads),
               "--model-threads", str(model_threads), "--parent", str(os.getpid())]
        for q in self.queues:
            cmd += ["--queues", q]
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        out = open(self.log_path, "ab") if self.quiet else None
        try:
            return subprocess.Popen(cmd, env=env, stdout=out, stderr=out, stdin=subprocess.DEVNULL)
        finally:
            if out is not None:
                out.close()

    def rotate_log(self) -> None:
        """Move a log past ``LOG_LIMIT`` aside."""
        try:
            if self.log_path.stat().st_size > self.LOG_LIMIT:
                os.replace(self.log_path, self.log_path.with_name(self.log_path.name + ".1"))
        except OSError:  # no log yet, or one we cannot move: children append as before
            pass

    def start(self, expected: Optional[int] = None) -> "ProcessGroup":
        """Start the children; ``expected``: how many files the scan queues, where known (``runtime_for``)."""
        if not self.procs:
            self.runtime = runtime_for(self.settings.runtime, expected, self.n)
        if self.quiet and not self.procs:
            self.rotate_log()
        while len(self.procs) < self.n:
            self.procs.append(self._spawn())
        return self

    def check(self) -> bool:
        """Restart dead children within the restart budget; False when none can run."""
        for i, p in enumerate(self.procs):
            if p.poll() is not None:
                if self.restarts >= self.max_restarts:
                    continue
                log.warning("worker %s exited with %s; restarting", p.pid, p.returncode)
                self.restarts += 1
                self.procs[i] = self._spawn()
        return any(p.poll() is None for p in self.procs)

    def stop(self, timeout: float = 30.0) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def wait(self) -> int:
        """Block until every child exits (headless mode); returns the worst exit code."""
        codes = [p.wait() for p in self.procs]
        return max(codes) if codes else 0
