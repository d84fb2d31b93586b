"""Thread budgets and arithmetic precision for inference runtimes, set once per worker process.

Two processes with one thread each beat one process with two threads on
this machine kind (shared MEASUREMENTS.md), so a worker gives each runtime its
share of the cores and no more.
"""
from __future__ import annotations

import os
from functools import lru_cache

from tagger.config import PRECISIONS

_threads = 0


def set_threads(n: int) -> None:
    """Call before any model loads; 0 leaves the runtimes' defaults."""
    global _threads
    _threads = max(0, int(n))
    if _threads:
        # for libraries loaded from now on, and for child processes
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(_threads)
        # numpy's and scipy's OpenBLAS read the variables when they load, which has happened
        # by now: without this, two workers' matrix products each spin two threads on two cores
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=_threads)


def configure_tensorflow() -> None:
    if not _threads:
        return
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(_threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass  # already initialised in this process: keep what it has


_precision = "auto"
_runtime = "keras"


def set_runtime(value: str) -> None:
    """Call before any model loads (the ``runtime`` setting: keras, litert or onnx; auto, in a process
    that does not know how many files it will hear, is keras where the CPU has AVX-512, else
    onnx: ``litert_outruns_keras``)."""
    global _runtime
    from tagger.config import RUNTIMES

    if value not in RUNTIMES:
        raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, not {value!r}")
    _runtime = value


_student = False


def set_student(on: bool) -> None:
    """The ``student`` setting: whether the default model hears each track with its distilled
    student first (``tagger.models.student``) where its card has one; read at each track."""
    global _student
    _student = bool(on)


def wants_student() -> bool:
    return _student


def wants_onnx() -> bool:
    """ONNX Runtime for the default model: asked for, or ``auto`` where the light runtimes outrun
    Keras (there ONNX Runtime was the faster of the two: README, Throughput)."""
    return _runtime == "onnx" or (_runtime == "auto" and litert_outruns_keras())


def wants_litert() -> bool:
    """LiteRT: asked for, or where ONNX Runtime is wanted but cannot run (not installed, no export)."""
    return _runtime in ("litert", "onnx") or (_runtime == "auto" and litert_outruns_keras())


def litert_outruns_keras() -> bool:
    """Whether LiteRT hears a window about as fast as Keras or faster on this CPU, so that ``auto``
    runs it everywhere and not only where start-up decides (a small scan): where the CPU has no
    AVX-512, which TensorFlow's kernels are fast with.

    Both musicnn networks, one thread, 2026-12-07: on an AMD EPYC with AVX-512 (and BF16), Keras
    47 ms per window in bfloat16 and 71 in float32 against LiteRT's 85; on an AMD EPYC without
    AVX-512, Keras (float32) 220 ms against LiteRT's 118 (README, Throughput). LiteRT also starts
    in about a seventh of the time and holds a third of the memory."""
    return not cpu_has_avx512()


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str] | None:
    """The CPU's feature flags from /proc/cpuinfo, or None where it cannot be read (not Linux)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


def cpu_has_avx512() -> bool:
    """Whether this CPU has AVX-512 (where the flags cannot be read, taken as yes: Keras as before)."""
    flags = cpu_flags()
    return flags is None or "avx512f" in flags


def set_precision(value: str) -> None:
    """Call before any model loads (the ``precision`` setting)."""
    global _precision
    if value not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {value!r}")
    _precision = value


def cpu_has_bfloat16() -> bool:
    """Whether this CPU does bfloat16 arithmetic in hardware (AVX512-BF16 or AMX-BF16; Linux only)."""
    return bool((cpu_flags() or frozenset()) & {"avx512_bf16", "amx_bf16"})


def compute_dtype(verified: bool = False) -> str:
    """``"bfloat16"`` or ``"float32"`` for a model; ``verified``: its card records that its
    answers in bfloat16 were checked against float32 (``"bfloat16"`` in the card).

    bfloat16 keeps float32's range with 8 bits of mantissa. ``auto`` uses it only
    for verified models, and only where the CPU has it in hardware (emulated, it
    is slower): a head trained on float32 features can be thrown off by the
    rounding (a mid-end sequence head was: 0.93 → 0.30 accuracy on one fold),
    while the default head's answers were unchanged. Training code stays in
    float32 unless told otherwise.
    """
    if _precision == "auto":
        return "bfloat16" if verified and cpu_has_bfloat16() else "float32"
    return _precision
