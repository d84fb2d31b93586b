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
