"""Hear a track a few windows at a time, stopping as soon as the model is sure.

A track is planned as ``windows`` windows spread over it. The model first hears
``first`` of them, themselves spread over the track (for 3 of 10: the 3rd, 5th
and 8th), then ``step`` more at a time, spread over those not yet heard
(``step=0``: all the others at once). After each stage, when the top
probability of the track (``Model.from_windows`` of the windows heard: for most
models their mean) reaches ``stop``, that is the answer; when the model's best chance of being
right (``Model.prospect``: the open-set default's likelier candidate) stays below ``give_up``,
hearing stops too, and the track goes untagged as it would have (the card's ``give_up`` is
chosen so that this almost never changes a tag: ``training.openset giveup``). A track never
that sure nor that hopeless hears every window, and its answer is what the model would have
said hearing all of them at once. This works for models whose
track probabilities are the mean of per-window ones (``Model.window_probs``);
any other model hears every window.

On the shared GTZAN copy (grouped 5-fold CV of the default head, 30 s clips),
first=3, step=2, stop=0.7 gave the same accuracy and macro-F1 as hearing all
windows while hearing 4.1 windows per track on average (4.7 with the rest all
at once at stop=0.8); README, Throughput, has the figures and the command.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tagger import audio
from tagger.audio import Clip
from tagger.errors import UnreadableAudio
from tagger.models.base import Model
from tagger.options import Hearing  # noqa: F401 - declared there, used here and by callers of hear
from tagger.timing import stage


@dataclass
class Heard:
    """A track's probabilities and how much of it the model heard."""

    probs: np.ndarray
    windows: int  # windows heard
    planned: int  # windows planned
    clip: Clip  # every window the answering model heard
    #: who answered: "model", or "student" where the model's student left the track untagged
    by: str = "model"
    #: windows the model's student heard before the model itself (0: no student)
    student_windows: int = 0


def first_indices(n: int, first: int) -> list[int]:
    """``first`` indices of ``range(n)`` spread over it, away from both ends (``first < n``);
    fewer where rounding makes two coincide."""
    return sorted({int(round(x)) for x in np.linspace(0, n - 1, first + 2)[1:-1]})


def stages(n: int, first: int, step: int) -> list[list[int]]:
    """The order in which the ``n`` windows of a track are heard, stage by stage.

    Every index of ``range(n)`` appears in exactly one stage; one stage holding
    them all when ``first`` is 0 or not below ``n``.
    """
    if not 0 < first < n:
        return [list(range(n))]
    out = [first_indices(n, first)]
    rest = [i for i in range(n) if i not in out[0]]
    while rest:
        take = rest if not 0 < step < len(rest) else [rest[j] for j in _spread(len(rest), step)]
        out.append(take)
        rest = [i for i in rest if i not in take]
    return out


def by_window(model) -> bool:
    """Whether ``model`` answers window by window (overrides ``Model.window_probs``)."""
    return type(model).window_probs is not Model.window_probs


def warm_up(model, how: Hearing, window: np.ndarray, sr: int, info: audio.AudioInfo) -> None:
    """Run ``model.window_probs`` at every stage size ``how`` brings, on copies of ``window``:
    a runtime prepares its kernels once per input shape (oneDNN: ≈ 30 ms each)."""
    for size in sorted({len(s) for s in stages(how.windows, how.first, how.step)}):
        model.window_probs(Clip(windows=[window] * size, sr=sr, info=info))


def _spread(m: int, k: int) -> list[int]:
    """``k`` distinct indices of ``range(m)`` (``k <= m``), one in each of ``k`` equal parts."""
    return [int((j + 0.5) * m / k) for j in range(k)]


class Direct:
    """Calls a model in the calling thread: how a worker runs its model (``hear``'s ``run``).

    ``tagger serve`` passes its batcher instead, which runs the same calls on the model's
    own thread, batched with other requests' (tagger/api/predict.py).
    """

    def window_probs(self, model: Model, clip: Clip) -> np.ndarray | None:
        with stage(_stage_of(model)):  # the features it computes inside are their own stage
            return model.window_probs(clip)

    def later_window_probs(self, model: Model, clip: Clip) -> np.ndarray | None:
        with stage(_stage_of(model)):
            return model.later_window_probs(clip)

    def predict_batch(self, model: Model, clips: list[Clip]) -> np.ndarray:
        with stage("model"):
            return model.predict_batch(clips)


DIRECT = Direct()


def hear(model, path: str | Path, fmt: str | None, how: Hearing = Hearing(), run: Direct = DIRECT) -> Heard:
    """``model``'s probabilities for one file, heard progressively where it can be.

    ``run``: how the model is called (``Direct``, or anything with its two methods).

    A model with a student (``model.student``: the default's distilled front end,
    ``tagger.models.student``) hears through it first: where the student's chance stays below
    its band, that is the answer (untagged); otherwise the model itself hears the track again,
    from the windows already decoded, and its answer is the one returned.

    Raises the decoder's UnreadableAudio (too short, silent, corrupt) like ``audio.load_clip``.
    """
    info, starts = audio.plan(path, fmt, n_windows=how.windows)
    n = len(starts)
    order = stages(n, how.first, how.step)
    with audio.Reader(path, info) as reader:
        # a model that keeps the base class's window_probs never answers window by window
        if len(order) == 1 or not by_window(model):
            clip = _checked(reader.read(starts))
            return Heard(run.predict_batch(model, [clip])[0], len(clip.windows), n, clip)
        decoded = _Decoded(reader, starts)
        student, first = getattr(model, "student", None), None
        if student is not None:
            first = _progressively(student, decoded, order, student.hearing(how), run)
            if first is not None and not student.hands_on(first.probs):
                first.by = "student"
                return first
        got = _progressively(model, decoded, order, how, run)
        if got is None:  # silent so far, or no per-window answer: all at once
            rest = decoded.read([i for s in order[1:] for i in s])
            whole = _checked(_joined(decoded.read(order[0]), rest))
            got = Heard(run.predict_batch(model, [whole])[0], len(whole.windows), n, whole)
        got.student_windows = 0 if first is None else first.windows
        return got


class _Decoded:
    """A track's windows by their index in the plan, each decoded once (the student's windows
    are the teacher's when it hears the track again)."""

    def __init__(self, reader: audio.Reader, starts: list[float]):
        self.reader, self.starts = reader, starts
        self._got: dict[int, np.ndarray] = {}
        self._clip: Clip | None = None  # for sr and info

    def read(self, indices: list[int]) -> Clip:
        need = [i for i in indices if i not in self._got]
        if need:
            clip = self.reader.read([self.starts[i] for i in need])
            self._clip = clip
            # a reader that stops short (a truncated stream) gives the first windows asked for
            self._got.update(zip(need, clip.windows))
        have = [i for i in indices if i in self._got]
        base = self._clip
        return Clip(windows=[self._got[i] for i in have], sr=base.sr, info=base.info,
                    starts=[self.starts[i] for i in have])


def _progressively(model, decoded: _Decoded, order: list[list[int]], how: Hearing, run) -> Heard | None:
    """``model`` hears the planned windows stage by stage until sure, hopeless or done; None
    where the first windows are silent or the model gives no per-window answer."""
    clip = decoded.read(order[0])
    probs = None if audio.is_silent(clip.windows) else run.window_probs(model, clip)
    if probs is None or not len(probs):
        return None
    track, chance = _judge(model, probs)
    for part in order[1:]:
        # sure enough, or no answer with a chance of how.give_up: more windows would almost
        # never make one sure enough to write
        if float(track.max()) >= how.stop or chance < how.give_up:
            break
        more = decoded.read(part)
        if not more.windows:
            break
        clip = _joined(clip, more)
        # a run that batches across requests (tagger serve) computes every output: the same answer
        later = getattr(run, "later_window_probs", None) or run.window_probs
        probs = np.concatenate([probs, later(model, more)])
        track, chance = _judge(model, probs)
    return Heard(track, len(clip.windows), len(decoded.starts), clip)


def _stage_of(model) -> str:
    """The timing stage of a model's calls: "student" for the default's student, else "model"."""
    return "student" if getattr(model, "role", "") == "student" else "model"


def _judge(model, probs: np.ndarray) -> tuple[np.ndarray, float]:
    with stage(_stage_of(model)):
        return model.judged(probs)


def _joined(a: Clip, b: Clip) -> Clip:
    return Clip(windows=a.windows + b.windows, sr=a.sr, info=a.info, starts=a.starts + b.starts)


def _checked(clip: Clip) -> Clip:
    if audio.is_silent(clip.windows):
        raise UnreadableAudio("the audio is silent")
    return clip

