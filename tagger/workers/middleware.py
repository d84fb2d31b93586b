"""Retries, the time limit and the record of a job's failures, built from the settings.

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


def retry_policy(max_retries: int) -> Callable[[int, BaseException], bool]:
    """Retry transient failures, ``max_retries`` times at most (``retries`` counts those done)."""

    def should_retry(retries: int, exc: BaseException) -> bool:
        return errors.is_transient(exc) and retries < max_retries

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

    def __init__(self, actor: str, settings: Callable[[], Settings]):
        self.actor, self.settings = actor, settings

    def after_process_message(self, broker, message, *, result=None, exception=None):
        if exception is None or message.actor_name != self.actor or not message.args:
            return
        from tagger import record

        text = f"{type(exception).__name__}: {exception}".strip(": ")
        record.record_failure(self.settings(), int(message.args[0]), failure_kind(exception), text,
                              final=bool(message.failed))


def install(broker: dramatiq.Broker, settings: Settings, actor: str, current: Callable[[], Settings]) -> None:
    """Configure ``broker``'s Retries and TimeLimit from the settings, and record the failures of
    ``actor`` after Retries (``current``: the settings as they are when a failure comes)."""
    for middleware in broker.middleware:
        if isinstance(middleware, Retries):
            middleware.retry_when = retry_policy(settings.max_retries)
            middleware.min_backoff, middleware.max_backoff = MIN_BACKOFF_MS, MAX_BACKOFF_MS
        elif isinstance(middleware, TimeLimit):
            middleware.time_limit = settings.job_time_limit * 1000
    # Dramatiq runs the after_* hooks in reverse order: placed before Retries, this runs after it
    broker.add_middleware(RecordFailures(actor, current), before=Retries)
