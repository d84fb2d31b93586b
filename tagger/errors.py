"""One exception hierarchy; each error carries a one-line message a user understands.

``permanent`` errors come from the input (bad audio, unsupported file) and are
recorded once, never retried; transient ones (a busy file, a database hiccup)
are retried by the queue's middleware.
"""


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


def broker_unreachable(exc: BaseException) -> bool:
    """The broker refused, timed out or is still loading (redis-py's errors are not OSErrors)."""
    import dramatiq.errors
    import redis.exceptions

    return isinstance(exc, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
                            dramatiq.errors.ConnectionError))


def _is_redis_error(exc: BaseException) -> bool:
    import redis.exceptions

    return isinstance(exc, redis.exceptions.RedisError)
