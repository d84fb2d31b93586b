"""Run an exported ``.tflite`` model with LiteRT (``ai-edge-litert``), no TensorFlow needed.

The deep models are exported with a fixed batch (TFLite cannot convert their
LSTMs with a dynamic one), so :class:`Runner` cuts any number of inputs into
batches of exactly that size and pads the last one; the padded rows are
computed and dropped. A worker that runs LiteRT starts in about 3 s and
350 MB instead of TensorFlow's 7-9 s and 820 MB (shared MEASUREMENTS.md).
"""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np


def available() -> bool:
    """Whether LiteRT's interpreter can be imported in this environment."""
    try:
        from ai_edge_litert.interpreter import Interpreter  # noqa: F401
    except ImportError:
        return False
    return True


class Runner:
    """A loaded ``.tflite`` model with one float32 input and one output.

    Parameters
    ----------
    path
        The ``.tflite`` file.
    threads
        Interpreter threads; 0 leaves LiteRT's default.
    """

    def __init__(self, path: str | Path, threads: int = 0):
        from ai_edge_litert.interpreter import Interpreter

        self.path = Path(path)
        self._interpreter = Interpreter(model_path=str(self.path), num_threads=threads or None)
        self._interpreter.allocate_tensors()
        inputs = self._interpreter.get_input_details()
        outputs = self._interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ValueError(f"{self.path.name}: expected one input and one output, "
                             f"found {len(inputs)} and {len(outputs)}")
        self._in = inputs[0]
        self._out = outputs[0]
        #: the fixed input shape, batch first
        self.input_shape: tuple[int, ...] = tuple(int(d) for d in self._in["shape"])
        self.batch: int = self.input_shape[0]
        # one interpreter holds one set of buffers: calls from several threads (serve) take turns
        self._lock = threading.Lock()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Outputs for ``x`` of shape ``(n, *input_shape[1:])``; shape ``(n, *output_shape[1:])``."""
        x = np.asarray(x, dtype=np.float32)
        if x.shape[1:] != self.input_shape[1:]:
            raise ValueError(f"{self.path.name}: input rows of shape {x.shape[1:]}, "
                             f"the model takes {self.input_shape[1:]}")
        n = len(x)
        out_shape = tuple(int(d) for d in self._out["shape"][1:])
        if n == 0:
            return np.zeros((0, *out_shape), dtype=np.float32)
        padded = -(-n // self.batch) * self.batch
        if padded != n:
            x = np.concatenate([x, np.zeros((padded - n, *x.shape[1:]), dtype=np.float32)])
        out = np.empty((padded, *out_shape), dtype=np.float32)
        with self._lock:
            for i in range(0, padded, self.batch):
                self._interpreter.set_tensor(self._in["index"], x[i : i + self.batch])
                self._interpreter.invoke()
                out[i : i + self.batch] = self._interpreter.get_tensor(self._out["index"])
        return out[:n]


def load(path: Path, owner: str, takes: tuple[int, ...], what: str):
    """A Runner for ``path`` when LiteRT is installed and the file takes inputs of shape ``takes``
    (batch left out), else None with the reason logged as ``owner``'s (its caller then runs Keras).
    ``what`` names the inputs it should take, for that line."""
    import logging

    from tagger.models import runtime

    log = logging.getLogger("tagger.models")
    if not path.is_file() or not available():
        return None
    try:
        runner = Runner(path, threads=getattr(runtime, "_threads", 0))
    except (ValueError, RuntimeError, OSError) as exc:
        log.warning("%s: cannot load %s (%s); using the Keras model", owner, path.name, exc)
        return None
    if runner.input_shape[1:] != tuple(takes):
        log.warning("%s: %s takes %s, not %s; using the Keras model", owner, path.name, runner.input_shape, what)
        return None
    return runner
