"""The actors. They load nothing at import and leave retries and time limits
to Dramatiq's middleware; all the work is ``tagger.pipeline.analyse``."""
import dramatiq
from dramatiq.middleware import CurrentMessage

from tagger import pipeline, queue

_settings = queue.settings()


def _retry_when(retries: int, exc: BaseException) -> bool:
    return pipeline.is_transient(exc) and retries <= _settings.max_retries


@dramatiq.actor(queue_name=queue.QUEUE_NAME, retry_when=_retry_when, min_backoff=1_000,
                max_backoff=60_000, time_limit=_settings.job_time_limit * 1000)
def analyse_file(analysis_id: int) -> None:
    try:
        pipeline.analyse(analysis_id, queue.settings())
    except BaseException as exc:
        message = CurrentMessage.get_current_message()
        retries = message.options.get("retries", 0) if message else 0
        final = not _retry_when(retries + 1, exc)
        kind = "time_limit" if type(exc).__name__ == "TimeLimitExceeded" else getattr(exc, "kind", "transient")
        pipeline.record_failure(queue.settings(), analysis_id, kind, f"{type(exc).__name__}: {exc}".strip(": "),
                                final=final)
        raise
