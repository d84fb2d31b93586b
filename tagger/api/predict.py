"""Predictions for the API: one model per server process, overlapping requests batched.

Request threads decode their own audio (decoding is per file and releases the
GIL in libsndfile/ffmpeg); the model runs on one thread that takes every clip
waiting when it becomes free and predicts them as one batch. A batch of N
costs far less than N single predictions for the deep model, and one thread
means no model is ever entered by two requests at once.

A request hears its file as a scan does, through the very same
``Predictor.hear`` (chain, fallback, progressive hearing): the batcher is only
*how* each model is called (its ``run``), so each stage's windows are answered
on the model thread together with whatever else is waiting. So the API answers
what ``tagger scan`` would write, and keeps no chain logic of its own.
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
from tagger.errors import ModelBusy
from tagger.models import progressive
from tagger.models.base import Model

log = logging.getLogger("tagger.serve")

#: the most clips one model call takes
MAX_BATCH = 16


class Batcher:
    """Runs every model call of the server on one thread, in batches of whatever is waiting.

    ``window_probs`` and ``predict_batch`` take a model and clips as ``Direct`` does
    (tagger/models/progressive.py): the batcher is a ``run`` for ``Predictor.hear``.
    """

    def __init__(self, settings: Settings, max_batch: int = MAX_BATCH):
        self.predictor = pipeline.predictor_for(settings.model, settings.model_dirs)
        self.hearing = settings.hearing
        self.max_batch = max_batch
        self.timeout = 300.0
        self.ready = threading.Event()
        self.error: Optional[str] = None
        self.requests = 0
        self.batches = 0
        self.largest_batch = 0
        # (model, clip, future, per_window): per_window asks for each window's probabilities
        # (Model.window_probs), otherwise the clip's (Model.predict_batch)
        self._q: "queue.Queue[Optional[tuple[Model, audio.Clip, Future, bool]]]" = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="tagger-predict", daemon=True)

    def start(self) -> "Batcher":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._q.put(None)
        self._thread.join(timeout=10)

    def window_probs(self, model: Model, clip: audio.Clip) -> Optional[np.ndarray]:
        return self._ask(model, clip, True)

    def predict_batch(self, model: Model, clips: list[audio.Clip]) -> np.ndarray:
        futures = [self._submit(model, clip, False) for clip in clips]
        return np.stack([self._result(f) for f in futures])

    def _submit(self, model: Model, clip: audio.Clip, per_window: bool) -> Future:
        fut: Future = Future()
        self._q.put((model, clip, fut, per_window))
        return fut

    def _ask(self, model: Model, clip: audio.Clip, per_window: bool):
        return self._result(self._submit(model, clip, per_window))

    def _result(self, fut: Future):
        try:
            return fut.result(self.timeout)
        except TimeoutError:
            fut.cancel()
            raise ModelBusy(f"the model did not answer within {self.timeout:.0f} s; try again later") from None

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
            model = self.predictor.primary()
            if progressive.by_window(model):  # every stage size a lone request brings (batches bring others)
                progressive.warm_up(model, self.hearing, windows[0], features.SR, info)
                student = getattr(model, "student", None)  # the default's student hears each request first
                if student is not None:
                    progressive.warm_up(student, self.hearing, windows[0], features.SR, info)
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

    def _predict(self, batch: list[tuple[Model, audio.Clip, Future, bool]]) -> None:
        batch = [item for item in batch if item[2].set_running_or_notify_cancel()]
        if not batch:
            return
        self.requests += len(batch)
        self.batches += 1
        self.largest_batch = max(self.largest_batch, len(batch))
        groups: dict[tuple[int, bool], list[tuple[Model, audio.Clip, Future]]] = {}
        for model, clip, fut, per_window in batch:  # one call per model and kind of answer
            groups.setdefault((id(model), per_window), []).append((model, clip, fut))
        for (_, per_window), items in groups.items():
            (self._per_window if per_window else self._whole)(items)

    @staticmethod
    def _per_window(items: list[tuple[Model, audio.Clip, Future]]) -> None:
        """Every waiting clip's windows through the model in one call, split back per clip."""
        model, first = items[0][0], items[0][1]
        try:
            windows = [w for _, clip, _ in items for w in clip.windows]
            probs = model.window_probs(audio.Clip(windows=windows, sr=first.sr, info=first.info))
        except BaseException as exc:  # each request's chain decides what follows (Predictor)
            for _, _, fut in items:
                fut.set_exception(exc)
            return
        at = 0
        for _, clip, fut in items:
            fut.set_result(None if probs is None else probs[at: at + len(clip.windows)])
            at += len(clip.windows)

    @staticmethod
    def _whole(items: list[tuple[Model, audio.Clip, Future]]) -> None:
        model = items[0][0]
        try:
            probs = model.predict_batch([clip for _, clip, _ in items])
        except Exception:
            # one clip failing must not fail the others: each is asked alone, and its
            # own error goes to its own request
            for _, clip, fut in items:
                try:
                    fut.set_result(model.predict_batch([clip])[0])
                except BaseException as exc:
                    fut.set_exception(exc)
            return
        for (_, _, fut), p in zip(items, probs):
            fut.set_result(p)

    def health(self) -> dict[str, Any]:
        return {"ready": self.ready.is_set() and self.error is None, "requests": self.requests,
                "batches": self.batches, "largest_batch": self.largest_batch}


class _Timed:
    """A request's ``run``: the batcher, with the time this request waited for the model."""

    def __init__(self, batcher: Batcher):
        self.batcher = batcher
        self.model_s = 0.0

    def window_probs(self, model: Model, clip: audio.Clip) -> Optional[np.ndarray]:
        t = time.perf_counter()
        try:
            return self.batcher.window_probs(model, clip)
        finally:
            self.model_s += time.perf_counter() - t

    def predict_batch(self, model: Model, clips: list[audio.Clip]) -> np.ndarray:
        t = time.perf_counter()
        try:
            return self.batcher.predict_batch(model, clips)
        finally:
            self.model_s += time.perf_counter() - t


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
    run = _Timed(batcher)
    p, heard = batcher.predictor.hear(path, fmt, settings.hearing, run=run)
    t2 = time.perf_counter()
    t1 = t2 - run.model_s
    return {
        "genre": p.genre,
        "confidence": round(float(p.confidence), 6),
        "genres": list(p.genres or [p.genre]),
        "top": [{"genre": g, "probability": round(float(q), 6)} for g, q in p.top],
        "model": p.model,
        "version": p.version,
        "decided_by": p.decided_by,
        "reason": p.reason,
        "format": fmt,
        "duration_s": round(info.duration, 3),
        "windows": heard.windows,
        "timings_ms": {"decode": round((t1 - t0) * 1000, 2), "predict": round((t2 - t1) * 1000, 2)},
    }
