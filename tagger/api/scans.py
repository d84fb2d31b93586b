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
from typing import Optional

from tagger import queue, scan as scan_mod
from tagger.config import Settings
from tagger.db import schema as s
from tagger.options import ScanOptions
from tagger.workers.processes import ProcessGroup

log = logging.getLogger("tagger.serve")

STOPPED = "the server stopped before this file was analysed"


class _SharedWorkers:
    """One scan's share of the server's worker group (``scan.Workers``): the first scan that needs
    workers starts the group, the last one to end stops it; ``check()`` answers for ``scan.wait``
    from several scan threads at once."""

    def __init__(self, runner: "ScanRunner"):
        self.runner = runner

    def start(self, expected: Optional[int] = None) -> "_SharedWorkers":
        # the server's group serves every scan it runs: its runtime is not one scan's to choose
        self.runner._acquire()
        return self

    def stop(self) -> None:
        self.runner._release()

    def check(self) -> bool:
        runner = self.runner
        if runner._stopping.is_set():  # shutting down: no restarts, the scan ends here
            raise scan_mod.Interrupted(STOPPED)
        with runner._lock:
            return runner._group is not None and runner._group.check()


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
        options = ScanOptions.from_settings(self.settings, dry_run=dry_run, force=force)
        scan_id = scan_mod.create(self.settings, roots, options)
        with self._lock:
            self._active.add(scan_id)
        threading.Thread(target=self._run, args=(scan_id, roots, options), name=f"tagger-scan-{scan_id}",
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

    def _run(self, scan_id: int, roots: list[str], options: ScanOptions) -> None:
        settings = self.settings
        workers = _SharedWorkers(self) if settings.is_embedded else None
        try:
            # the roots were confined to library_roots; links inside them must not lead out
            scan_mod.run(settings, scan_id, roots, options, workers=workers, within=settings.library_roots)
        except scan_mod.Interrupted:
            pass
        except Exception:  # recorded by scan.run (unfinished files failed, the scan interrupted)
            log.exception("scan %s stopped by an error", scan_id)
        finally:
            with self._lock:
                self._active.discard(scan_id)

    def stop(self) -> None:
        """Server shutdown: unfinished scans are marked interrupted, local workers stopped."""
        self._stopping.set()
        with self._lock:
            active = list(self._active)
            group, self._group = self._group, None
        for scan_id in active:
            try:
                scan_mod.fail_unfinished(self.settings, scan_id, "interrupted", STOPPED)
                scan_mod.finish(self.settings, scan_id, s.ScanStatus.INTERRUPTED)
            except Exception:
                log.exception("could not mark scan %s interrupted", scan_id)
        if group is not None:
            group.stop()
