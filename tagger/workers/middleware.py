"""Retries, the time limit and the record of a job's failures, built from the settings.

A worker whose results database is away waits for it (``WaitForDatabase``) rather than spend
its jobs' retries on the outage.

Whether an attempt was the last is decided once, by Dramatiq's ``Retries`` with
``retry_policy``; ``RecordFailures`` runs after it and records what it decided
(``message.failed``), so the database never calls an analysis failed while a
delivery of it is still to come.
"""
from __future__ import annotations

from typing import Callable

import dramatiq
from dramatiq.middleware import Middleware, Retries, TimeLimit, TimeLimitExceeded

from tagger import errors
from tagger.config import Settings

#: the first retry comes after about a second, later ones back off exponentially up to a minute
MIN_BACKOFF_MS = 1_000
MAX_BACKOFF_MS = 60_000


def retry_policy(max_retries: int, outage: Callable[[BaseException], bool] = lambda _exc: False
                 ) -> Callable[[int, BaseException], bool]:
    """Retry transient failures, ``max_retries`` times at most (``retries`` counts those done);
    a failure that ``outage`` says came from the results database being away is always retried
    (``WaitForDatabase`` holds the next attempt until the database is back)."""

    def should_retry(retries: int, exc: BaseException) -> bool:
        return errors.is_transient(exc) and (retries < max_retries or outage(exc))

    return should_retry


def failure_kind(exc: BaseException) -> str:
    if isinstance(exc, TimeLimitExceeded):
        return "time_limit"
    return getattr(exc, "kind", "transient")


class RecordFailures(Middleware):
    """Records each failed attempt of an analysis; final when ``Retries`` has given up on it.

    ``actor``: the name of the actor whose first argument is an analysis id; ``settings``:
    the settings as they are now (the queue may be configured again in one process).
    """

    def __init__(self, actor: str, settings: Callable[[], Settings],
                 outage: Callable[[BaseException], bool] = lambda _exc: False):
        self.actor, self.settings, self.outage = actor, settings, outage

    def after_process_message(self, broker, message, *, result=None, exception=None):
        if exception is None or message.actor_name != self.actor or not message.args:
            return
        if self.outage(exception):
            return  # the database is away: nothing to record into, and the job will run again
        from tagger import record

        text = f"{type(exception).__name__}: {exception}".strip(": ")
        record.record_failure(self.settings(), int(message.args[0]), failure_kind(exception), text,
                              final=bool(message.failed))


def install(broker: dramatiq.Broker, settings: Settings, actor: str, current: Callable[[], Settings]) -> None:
    """Configure ``broker``'s Retries and TimeLimit from the settings, and record the failures of
    ``actor`` after Retries (``current``: the settings as they are when a failure comes)."""
    waiting = WaitForDatabase(current)
    for middleware in broker.middleware:
        if isinstance(middleware, Retries):
            middleware.retry_when = retry_policy(settings.max_retries, waiting.outage)
            middleware.min_backoff, middleware.max_backoff = MIN_BACKOFF_MS, MAX_BACKOFF_MS
        elif isinstance(middleware, TimeLimit):
            middleware.time_limit = settings.job_time_limit * 1000
    # Dramatiq runs the after_* hooks in reverse order: placed before Retries, this runs after it
    broker.add_middleware(RecordFailures(actor, current, waiting.outage), before=Retries)
    # before TimeLimit: the time spent waiting for the database is not the job's
    broker.add_middleware(waiting, before=TimeLimit)


#: how often a worker that lost the results database probes it again, seconds
DATABASE_PROBE_S = 5.0


class WaitForDatabase(Middleware):
    """A worker whose results database is away (PostgreSQL stopped, its host unreachable) waits
    for it instead of spending its jobs' retries: the failed attempt goes back to the queue
    without counting against ``max_retries`` and without a failure recorded (there is nowhere
    to record it), and no job starts until a probe (``SELECT 1``, every ``DATABASE_PROBE_S``)
    reaches the database again.

    A database error while the probe still reaches the database (a lock, a bad query) is an
    ordinary transient failure, retried and counted as before.
    """

    def __init__(self, settings: Callable[[], Settings], probe_s: float = DATABASE_PROBE_S):
        import threading

        self.settings, self.probe_s = settings, probe_s
        self._down = threading.Event()

    def reachable(self) -> bool:
        from sqlalchemy import text

        from tagger.db.engine import engine_for

        try:
            with engine_for(self.settings().database_url).connect() as connection:
                connection.execute(text("SELECT 1"))
        except Exception as exc:  # noqa: BLE001 - whatever stops a connection means "not yet"
            self.last_error = " ".join(str(exc).split())[:200]
            return False
        return True

    def outage(self, exc: BaseException) -> bool:
        """Whether ``exc`` came from the database being unreachable now (decided once per exception)."""
        known = getattr(exc, "_tagger_database_down", None)
        if known is None:
            known = errors.database_error(exc) and not self.reachable()
            try:
                exc._tagger_database_down = known
            except AttributeError:
                pass
            if known:
                self._down.set()
        return known

    def before_process_message(self, broker, message):
        if not self._down.is_set():
            return
        import logging
        import time

        log = logging.getLogger("tagger.worker")
        waited, started = 0, time.monotonic()
        while not self.reachable():
            if waited % 12 == 0:  # a line a minute, not one per probe
                log.warning("results database unreachable (%s); waiting for it, probing every %.0f s",
                            getattr(self, "last_error", "?"), self.probe_s)
            waited += 1
            time.sleep(self.probe_s)
        if self._down.is_set():
            self._down.clear()
            log.info("results database reachable again after %.0f s; resuming", time.monotonic() - started)
