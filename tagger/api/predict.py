"""Predictions for the API: one model per server process, overlapping requests batched.

Request threads decode their own audio (decoding is per file and releases the
GIL in libsndfile/ffmpeg); the model runs on one thread that takes every clip
waiting when it becomes free and predicts them as one batch. A batch of N
costs far less than N single predictions for the deep model, and one thread
means no model is ever entered by two requests at once.

A request hears its file as a scan does (``tagger.models.progressive``): the
first windows, then a few more while the model is unsure, each stage's
windows answered on the model thread together with whatever else is waiting.
So the API answers what ``tagger scan`` would write.
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
from tagger.errors import TaggerError
from tagger.models import progressive
from tagger.models.base import Model, Prediction

log = logging.getLogger("tagger.serve")

#: the most clips one model call takes
MAX_BATCH = 16


class Batcher:
    """Runs the settings' predictor on one thread, in batches of whatever is waiting."""

    def __init__(self, settings: Settings, max_batch: int = MAX_BATCH):
        self.predictor = pipeline.predictor_for(settings.model, settings.model_dirs)
        self.hearing = settings.hearing
        self.max_batch = max_batch
        self.ready = threading.Event()
        self.error: Optional[str] = None
        self.requests = 0
        self.batches = 0
        self.largest_batch = 0
        # (clip, future, per_window): per_window asks for each window's probabilities from the
        # first model of the chain; otherwise the chain's prediction for the whole clip
        self._q: "queue.Queue[Optional[tuple[audio.Clip, Future, bool]]]" = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="tagger-predict", daemon=True)

    def start(self) -> "Batcher":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._q.put(None)
        self._thread.join(timeout=10)

    def predict(self, clip: audio.Clip, timeout: float = 300.0) -> Prediction:
        return self._ask(clip, False, timeout)

    def window_probs(self, clip: audio.Clip, timeout: float = 300.0) -> np.ndarray:
        """The first model's probabilities for each window of ``clip`` (``Model.window_probs``)."""
        return self._ask(clip, True, timeout)

    def _ask(self, clip: audio.Clip, per_window: bool, timeout: float):
        fut: Future = Future()
        self._q.put((clip, fut, per_window))
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
            model = progressive_model(self.predictor)
            if model is not None:  # every stage size a lone request brings (batches bring others)
                progressive.warm_up(model, self.hearing, windows[0], features.SR, info)
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

    def _predict(self, batch: list[tuple[audio.Clip, Future, bool]]) -> None:
        batch = [item for item in batch if item[1].set_running_or_notify_cancel()]
        if not batch:
            return
        self.requests += len(batch)
        self.batches += 1
        self.largest_batch = max(self.largest_batch, len(batch))
        self._per_window([(clip, fut) for clip, fut, per_window in batch if per_window])
        self._whole([(clip, fut) for clip, fut, per_window in batch if not per_window])

    def _per_window(self, batch: list[tuple[audio.Clip, Future]]) -> None:
        """Every waiting clip's windows through the first model in one call, split back per clip."""
        if not batch:
            return
        try:
            windows = [w for clip, _ in batch for w in clip.windows]
            first = batch[0][0]
            probs = self.predictor.primary().window_probs(audio.Clip(windows=windows, sr=first.sr, info=first.info))
            if probs is None:
                raise RuntimeError("the model gives no per-window probabilities")
        except BaseException as exc:  # the request falls back to the whole chain (predict_file)
            for _, fut in batch:
                fut.set_exception(exc)
            return
        at = 0
        for clip, fut in batch:
            fut.set_result(probs[at: at + len(clip.windows)])
            at += len(clip.windows)

    def _whole(self, batch: list[tuple[audio.Clip, Future]]) -> None:
        if not batch:
            return
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


def progressive_model(predictor) -> Optional[Model]:
    """The chain's first model when it answers window by window, else None."""
    try:
        model = predictor.primary()
    except Exception:
        return None
    return model if progressive.by_window(model) else None


class _ThroughBatcher:
    """The first model as progressive hearing uses it, its arithmetic done on the batcher's thread."""

    def __init__(self, batcher: Batcher):
        self.batcher = batcher
        self.model_s = 0.0  # time spent waiting for the model

    def window_probs(self, clip: audio.Clip) -> np.ndarray:
        t = time.perf_counter()
        try:
            return self.batcher.window_probs(clip)
        finally:
            self.model_s += time.perf_counter() - t

    def from_windows(self, rows: np.ndarray) -> np.ndarray:
        return self.batcher.predictor.primary().from_windows(rows)

    def predict_batch(self, clips: list[audio.Clip]) -> np.ndarray:
        return np.stack([self.from_windows(self.window_probs(c)) for c in clips])


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
    p, clip, model_s = None, None, 0.0
    model = progressive_model(batcher.predictor)
    if model is not None:
        via = _ThroughBatcher(batcher)
        try:
            heard = progressive.hear(via, path, fmt, settings.hearing)
            p, clip, model_s = model.to_prediction(heard.probs), heard.clip, via.model_s
        except (TaggerError, ApiError):
            raise  # the file's fault: the same one-line error a scan records
        except Exception as exc:  # the first model failing: the whole chain decides, as a scan's would
            log.warning("per-window prediction failed (%s); asking the whole chain", exc)
    if p is None:
        clip = audio.load_clip(path, fmt, n_windows=settings.windows)
        t = time.perf_counter()
        p = batcher.predict(clip)
        model_s = time.perf_counter() - t
    t2 = time.perf_counter()
    t1 = t2 - model_s
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
