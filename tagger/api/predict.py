"""Predictions for the API: one model per server process, overlapping requests batched.

Request threads decode their own audio (decoding is per file and releases the
GIL in libsndfile/ffmpeg); the model runs on one thread that takes every clip
waiting when it becomes free and predicts them as one batch. A batch of N
costs far less than N single predictions for the deep model, and one thread
means no model is ever entered by two requests at once.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from typing import Any, Optional

import numpy as np

from tagger import audio, features, formats, pipeline
from tagger.api.security import ApiError
from tagger.config import Settings
from tagger.models.base import Prediction

log = logging.getLogger("tagger.serve")

#: the most clips one model call takes
MAX_BATCH = 16


class Batcher:
    """Runs the settings' predictor on one thread, in batches of whatever is waiting."""

    def __init__(self, settings: Settings, max_batch: int = MAX_BATCH):
        self.predictor = pipeline.predictor_for(settings.model, settings.model_dirs)
        self.max_batch = max_batch
        self.ready = threading.Event()
        self.error: Optional[str] = None
        self.requests = 0
        self.batches = 0
        self.largest_batch = 0
        self._q: "queue.Queue[Optional[tuple[audio.Clip, Future]]]" = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="tagger-predict", daemon=True)

    def start(self) -> "Batcher":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._q.put(None)
        self._thread.join(timeout=10)

    def predict(self, clip: audio.Clip, timeout: float = 300.0) -> Prediction:
        fut: Future = Future()
        self._q.put((clip, fut))
        try:
            return fut.result(timeout)
        except TimeoutError:
            fut.cancel()
            raise ApiError(503, f"the model did not answer within {timeout:.0f} s; try again later") from None

    def _warm_up(self) -> None:
        """Load the models and run one prediction, so the first request pays neither."""
        try:
            # as many windows as a full-length track gets: the runtime sees the shapes real requests bring
            n = audio.DEFAULT_WINDOWS
            rng = np.random.default_rng(0)
            windows = [rng.normal(0, 0.1, features.PATCH_SAMPLES).astype(np.float32) for _ in range(n)]
            info = audio.AudioInfo(n * features.PATCH_SAMPLES, features.SR, 1, "synthetic")
            starts = [i * features.PATCH_SAMPLES / features.SR for i in range(n)]
            self.predictor.predict(audio.Clip(windows=windows, sr=features.SR, info=info, starts=starts))
        except Exception as exc:
            self.error = " ".join(f"{type(exc).__name__}: {exc}".split())
            log.error("model warm-up failed: %s", self.error)
        finally:
            self.ready.set()

    def _run(self) -> None:
        self._warm_up()
        while True:
            item = self._q.get()
            if item is None:
                return
            batch = [item]
            while len(batch) < self.max_batch:
                try:
                    nxt = self._q.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._q.put(None)  # stop after this batch
                    break
                batch.append(nxt)
            self._predict(batch)

    def _predict(self, batch: list[tuple[audio.Clip, Future]]) -> None:
        batch = [(clip, fut) for clip, fut in batch if fut.set_running_or_notify_cancel()]
        if not batch:
            return
        self.requests += len(batch)
        self.batches += 1
        self.largest_batch = max(self.largest_batch, len(batch))
        try:
            model = self.predictor.primary()
            probs = model.predict_batch([clip for clip, _ in batch])
            predictions = [model.to_prediction(p) for p in probs]
        except Exception:
            # one clip, or the first model, failing must not fail the others: the
            # chain's own rules (fallback on a model failure) decide clip by clip
            for clip, fut in batch:
                try:
                    fut.set_result(self.predictor.predict(clip))
                except BaseException as exc:
                    fut.set_exception(exc)
            return
        for (_, fut), p in zip(batch, predictions):
            fut.set_result(p)

    def health(self) -> dict[str, Any]:
        return {"ready": self.ready.is_set() and self.error is None, "requests": self.requests,
                "batches": self.batches, "largest_batch": self.largest_batch}


def predict_file(path: str, settings: Settings, batcher: Batcher) -> dict[str, Any]:
    """Predict one audio file: the response body of ``POST /v1/predict`` less ``source`` and total time.

    Raises the pipeline's one-line TaggerErrors for bad input, ApiError for
    audio longer than the configured limit.
    """
    t0 = time.perf_counter()
    fmt = formats.confirm(path)
    info = audio.probe(path, fmt)
    if info.duration > settings.max_duration_s:
        raise ApiError(413, f"the audio is {info.duration:.0f} s long; this server accepts at most "
                            f"{settings.max_duration_s:.0f} s (max_duration_s)")
    clip = audio.load_clip(path, fmt, n_windows=settings.windows)
    t1 = time.perf_counter()
    p = batcher.predict(clip)
    t2 = time.perf_counter()
    return {
        "genre": p.genre,
        "confidence": round(float(p.confidence), 6),
        "genres": list(p.genres or [p.genre]),
        "top": [{"genre": g, "probability": round(float(q), 6)} for g, q in p.top],
        "model": p.model,
        "version": p.version,
        "decided_by": p.decided_by,
        "format": fmt,
        "duration_s": round(info.duration, 3),
        "windows": len(clip.windows),
        "timings_ms": {"decode": round((t1 - t0) * 1000, 2), "predict": round((t2 - t1) * 1000, 2)},
    }
