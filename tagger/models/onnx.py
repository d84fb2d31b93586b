"""Run the default model's musicnn networks with ONNX Runtime, no TensorFlow needed.

Each network is its own ONNX file (``training.openset_export --onnx``): musicnn-msd gives the
first 250 numbers of a window's row (penultimate layer, tags), musicnn-mtt the last 50 (tags), so
a window past the card's ``mtt_windows`` runs one network. Any batch size; one session per
network, with the worker's thread budget.
"""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np


def available() -> bool:
    """Whether ONNX Runtime can be imported in this environment."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


_arena: bool | None = None  # whether the process's shared CPU arena is registered
_arena_lock = threading.Lock()


def _shared_arena(ort) -> bool:
    """Register, once per process, a CPU arena that extends by the size asked for
    (kSameAsRequested); False where this ONNX Runtime cannot, and sessions keep their own."""
    global _arena
    with _arena_lock:
        if _arena is None:
            try:
                where = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
                # max memory 0: no limit; 1: kSameAsRequested; -1: the defaults
                ort.create_and_register_allocator(where, ort.OrtArenaCfg(0, 1, -1, -1))
                _arena = True
            except Exception:  # an older or trimmed build: the per-session default
                _arena = False
        return _arena


class Session:
    """One ONNX model with one float32 input and one output."""

    def __init__(self, path: str | Path, threads: int = 0):
        import onnxruntime as ort

        self.path = Path(path)
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        if _shared_arena(ort):
            # One arena for the process that grows by what is asked, not by powers of two, and no
            # memory plan kept per batch size: a worker hearing batches of 1 to 3 patches with both
            # networks peaked at 503 MB, now 221 MB, at the same speed (75 ms per patch)
            opts.add_session_config_entry("session.use_env_allocators", "1")
            opts.enable_mem_pattern = False
        self._session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ValueError(f"{self.path.name}: expected one input and one output, "
                             f"found {len(inputs)} and {len(outputs)}")
        self._input = inputs[0].name
        #: the input shape without the batch
        self.takes: tuple = tuple(inputs[0].shape[1:])
        # a session may be called from several threads, but serve's batches are large: take turns
        self._lock = threading.Lock()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        with self._lock:
            return self._session.run(None, {self._input: x})[0]


class Frontend:
    """Both networks: ``rows`` gives the 300 numbers, ``msd_rows`` the first 250 alone."""

    def __init__(self, msd: str | Path, mtt: str | Path, threads: int = 0):
        self.msd = Session(msd, threads)
        self.mtt = Session(mtt, threads)

    def msd_rows(self, patches: np.ndarray) -> np.ndarray:
        return self.msd(patches)

    def rows(self, patches: np.ndarray) -> np.ndarray:
        if len(patches) == 0:
            return np.zeros((0, 300), np.float32)
        return np.concatenate([self.msd(patches), self.mtt(patches)], axis=1)
