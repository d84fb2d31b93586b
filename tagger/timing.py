"""Where one analysis's time goes: seconds per stage, for the worker's log line.

A job opens ``measuring()``; code on its path marks its stages with
``stage("decode")`` and the like. Stages nest, and a stage's time is its own:
the model's call holds the feature computation inside it, so ``features`` is
taken out of ``model``. Outside ``measuring()`` a stage costs one context
variable lookup and records nothing (``tagger serve``, training, tests).
"""
from __future__ import annotations

import contextvars
import time
from contextlib import contextmanager
from typing import Iterator

#: the stages in the order the log line names them
STAGES = ("decode", "features", "student", "model", "tags", "db")

_current: contextvars.ContextVar["Timings | None"] = contextvars.ContextVar("tagger_timings", default=None)


class Timings(dict):
    """Stage name → seconds of its own (nested stages taken out)."""

    def __init__(self) -> None:
        super().__init__()
        self._open: list[list[float]] = []  # per open stage: [start, seconds of its inner stages]
        self.started = time.perf_counter()

    def line(self, total: float | None = None) -> str:
        """``decode 0.10, features 0.05, model 0.60, tags 0.02, db 0.11, other 0.01``."""
        total = time.perf_counter() - self.started if total is None else total
        names = [n for n in STAGES if n in self] + sorted(set(self) - set(STAGES))
        parts = [f"{n} {self[n]:.2f}" for n in names]
        parts.append(f"other {max(0.0, total - sum(self.values())):.2f}")
        return ", ".join(parts)


@contextmanager
def measuring() -> Iterator[Timings]:
    """Collect the stages marked until the block ends."""
    t = Timings()
    token = _current.set(t)
    try:
        yield t
    finally:
        _current.reset(token)


@contextmanager
def stage(name: str) -> Iterator[None]:
    t = _current.get()
    if t is None:
        yield
        return
    frame = [time.perf_counter(), 0.0]
    t._open.append(frame)
    try:
        yield
    finally:
        t._open.pop()
        spent = time.perf_counter() - frame[0]
        t[name] = t.get(name, 0.0) + spent - frame[1]
        if t._open:
            t._open[-1][1] += spent


def timed(name: str):
    """A function whose calls are stage ``name``."""
    import functools

    def wrap(f):
        @functools.wraps(f)
        def timed_call(*args, **kwargs):
            with stage(name):
                return f(*args, **kwargs)
        return timed_call
    return wrap
