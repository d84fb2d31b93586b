"""One exception hierarchy; each error carries a one-line message a user understands.

``permanent`` errors come from the input (bad audio, unsupported file) and are
recorded once, never retried; transient ones (a busy file, a database hiccup)
are retried by the queue's middleware.
"""
from __future__ import annotations

from typing import Optional


class TaggerError(Exception):
    """Base of every error tagger raises on purpose."""

    permanent = True
    kind = "error"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = " ".join(str(message).split())  # always one line

    def __str__(self) -> str:
        return self.message


class UnreadableAudio(TaggerError):
    kind = "unreadable_audio"


class UnsupportedFormat(TaggerError):
    kind = "unsupported_format"


class TagWriteError(TaggerError):
    kind = "tag_write_failed"


class ModelMissing(TaggerError):
    kind = "model_missing"


class FileChanged(TaggerError):
    """The file changed on disk between its analysis and the write."""

    kind = "file_changed"


class FileMissing(TaggerError):
    kind = "file_missing"


class ConfigError(TaggerError):
    kind = "config"


class TransientError(TaggerError):
    permanent = False
    kind = "transient"


class ModelBusy(TransientError):
    """The model did not answer in time (``tagger serve`` under load)."""

    kind = "model_busy"


def is_transient(exc: BaseException) -> bool:
    """Failures worth retrying: the database or the broker away, the file busy.

    The one place that decides it: the queue's retry policy and the pipeline ask here.
    """
    import errno

    from sqlalchemy.exc import InterfaceError, OperationalError

    if isinstance(exc, TaggerError):
        return not exc.permanent
    if isinstance(exc, (OperationalError, InterfaceError, ConnectionError, TimeoutError)):
        return True
    if isinstance(exc, OSError) and exc.errno in (errno.EBUSY, errno.EAGAIN, errno.ETXTBSY, errno.EINTR):
        return True
    return broker_unreachable(exc) or _is_redis_error(exc)


def database_error(exc: BaseException) -> bool:
    """Whether ``exc``, or what caused it (the pipeline wraps transient errors), is SQLAlchemy's
    account of a database it could not use."""
    from sqlalchemy.exc import InterfaceError, OperationalError

    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, (OperationalError, InterfaceError)):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def broker_unreachable(exc: BaseException) -> bool:
    """The broker refused, timed out or is still loading (redis-py's errors are not OSErrors)."""
    import dramatiq.errors
    import redis.exceptions

    return isinstance(exc, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
                            dramatiq.errors.ConnectionError))


def _is_redis_error(exc: BaseException) -> bool:
    import redis.exceptions

    return isinstance(exc, redis.exceptions.RedisError)


def environment_error(exc: BaseException) -> Optional[str]:
    """A one-line account of a failure of the machine around tagger, not of tagger: a full disk,
    a database that cannot be opened or reached. None for anything else (a defect: let it show)."""
    import errno

    from sqlalchemy.exc import OperationalError

    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        where = f" ({exc.filename})" if exc.filename else ""
        return f"no space left on the device{where}: free some space, or set TAGGER_DATA_DIR elsewhere"
    if broker_unreachable(exc):
        first = " ".join(str(exc).split()) or type(exc).__name__
        return f"cannot reach the broker: {first}"
    if isinstance(exc, OSError) and exc.filename and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    if isinstance(exc, OperationalError):
        first = (str(exc.orig) if exc.orig is not None else str(exc)).strip().splitlines()[0]
        if "disk is full" in first:  # said as the same full disk met elsewhere is said
            return (f"no space left on the device for the results database ({first}): free some space, "
                    "or set TAGGER_DATA_DIR / TAGGER_DB_URL elsewhere")
        if "disk I/O error" in first:
            return (f"the results database's disk failed ({first}): check it, free some space, or set "
                    "TAGGER_DATA_DIR / TAGGER_DB_URL elsewhere")
        return f"cannot use the results database: {first}"
    return None
