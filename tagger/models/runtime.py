"""Thread budgets for inference runtimes, set once per worker process.

Two processes with one thread each beat one process with two threads on
this machine kind (shared MEASUREMENTS.md), so a worker gives each runtime its
share of the cores and no more.
"""
from __future__ import annotations

import os

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
