"""A worker's thread budget reaches the BLAS libraries numpy and scipy loaded before it was set."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

PROBE = """
import json, numpy, scipy.linalg, threadpoolctl
before = [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
from tagger.models import runtime
runtime.set_threads(1)
after = [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
print(json.dumps([before, after]))
"""


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: BLAS runs one thread anyway")
def test_set_threads_limits_already_loaded_blas():
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, check=True)
    before, after = json.loads(out.stdout.strip().splitlines()[-1])
    assert before and max(before) > 1  # what a worker had: a thread per core in every process
    assert after == [1] * len(before)
