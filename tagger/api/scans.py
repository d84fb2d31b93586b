"""Scans started over HTTP: the same scan module and queue as ``tagger scan``.

With the embedded default (no Redis broker) the server is the only thing that
can run the jobs, so it starts local worker processes (``tagger.workers.processes.ProcessGroup``)
when a scan queues its first job and stops them when no scan needs them; one
group serves every concurrent scan. With a Redis broker, jobs go to
``tagger worker`` processes wherever they run, and the server only follows
the scan until every analysis has finished, then marks it done.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Optional

from tagger import queue, scan as scan_mod
from tagger.config import Settings
from tagger.workers.processes import ProcessGroup

log = logging.getLogger("tagger.serve")


class _SharedWorkers:
    """``check()`` for scan.wait from several scan threads at once."""

    def __init__(self, group: ProcessGroup, lock: threading.Lock, stopping: threading.Event):
        self.group, self.lock, self.stopping = group, lock, stopping

    def check(self) -> bool:
        if self.stopping.is_set():  # shutting down: no restarts, the wait ends
            return False
        with self.lock:
            return self.group.check()


class ScanRunner:
    def __init__(self, settings: Settings):
        self.settings = settings
        self._lock = threading.Lock()
        self._group: Optional[ProcessGroup] = None
        self._users = 0
        self._active: set[int] = set()
        self._stopping = threading.Event()

    def start(self, roots: list[str], dry_run: bool, force: bool) -> int:
        """Record a scan and run it on a background thread; returns its id at once."""
        queue.configure(self.settings)
        options = scan_mod.ScanOptions(dry_run=dry_run, force=force, min_confidence=self.settings.min_confidence,
                                       overwrite=self.settings.overwrite, model=self.settings.model,
                                       windows=self.settings.windows, first_windows=self.settings.first_windows,
                                       window_step=self.settings.window_step, early_stop=self.settings.early_stop)
        scan_id = scan_mod.create(self.settings, roots, options)
        with self._lock:
            self._active.add(scan_id)
        threading.Thread(target=self._run, args=(scan_id, roots, force), name=f"tagger-scan-{scan_id}",
                         daemon=True).start()
        return scan_id

    def running(self) -> int:
        with self._lock:
            return len(self._active)

    def _acquire(self) -> None:
        with self._lock:
            self._users += 1
            if self._group is None:
                self._group = ProcessGroup(self.settings, self.settings.worker_count).start()

    def _release(self) -> None:
        with self._lock:
            self._users -= 1
            group = self._group if self._users == 0 else None
            if group is not None:
                self._group = None
        if group is not None:
            group.stop()

    def _run(self, scan_id: int, roots: list[str], force: bool) -> None:
        settings = self.settings
        acquired = False

        def first_job() -> None:
            nonlocal acquired
            if settings.is_embedded:
                self._acquire()
                acquired = True

        started = time.monotonic()
        status = "done"
        try:
            # the roots were confined to library_roots; links inside them must not lead out
            _, _, queued = scan_mod.discover_and_queue(settings, scan_id, roots, force, on_first_job=first_job,
                                                       within=settings.library_roots)
            if queued:
                group = self._group
                workers = _SharedWorkers(group, self._lock, self._stopping) if acquired and group else None
                scan_mod.wait(settings, scan_id, started, lambda _p: None, workers=workers)
        except Exception:
            log.exception("scan %s stopped by an error", scan_id)
            status = "interrupted"
            scan_mod.fail_unfinished(settings, scan_id, "internal", "the server's scan stopped by an error")
        finally:
            if acquired:
                self._release()
            with self._lock:
                self._active.discard(scan_id)
        if not self._stopping.is_set():
            scan_mod.finish(settings, scan_id, status)

    def stop(self) -> None:
        """Server shutdown: unfinished scans are marked interrupted, local workers stopped."""
        self._stopping.set()
        with self._lock:
            active = list(self._active)
            group, self._group = self._group, None
        for scan_id in active:
            try:
                scan_mod.fail_unfinished(self.settings, scan_id, "interrupted",
                                         "the server stopped before this file was analysed")
                scan_mod.finish(self.settings, scan_id, "interrupted")
            except Exception:
                log.exception("could not mark scan %s interrupted", scan_id)
        if group is not None:
            group.stop()
