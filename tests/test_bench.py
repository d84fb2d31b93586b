"""The throughput benchmark still runs (CI's short mode); its speed is not asserted."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _figure(out: str, pattern: str) -> float:
    m = re.search(pattern, out)
    assert m, f"no line matching {pattern!r} in:\n{out}"
    return float(m.group(1))


@pytest.mark.skipif(not (ROOT.parent / "shared" / "datasets" / "gtzan").is_dir(), reason="needs ../shared/datasets")
def test_throughput_benchmark_quick_mode_runs_and_reports_every_figure(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAGGER_")}
    env["TMPDIR"] = str(tmp_path)
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_throughput.py"), "--quick"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert _figure(out, r"start-up included:\s+([0-9.]+) tracks/s") > 0
    assert _figure(out, r"\(dry run\), start-up excluded:\s+([0-9.]+) tracks/s") > 0
    assert _figure(out, r"tag writes, start-up excluded:\s+([0-9.]+) tracks/s") > 0
    assert _figure(out, r"ratio end-to-end .* with tag writes ([0-9.]+)") > 0
    assert _figure(out, r"tag read and write per track, one process alone: ([0-9.]+) ms") > 0
    assert _figure(out, r"each as fast as one alone\):\s+([0-9.]+) tracks/s") > 0
    assert _figure(out, r"decode ([0-9.]+) ms") > 0
    assert _figure(out, r"peak RSS per worker: ([0-9.]+) MB") > 50
    assert _figure(out, r"second scan of the unchanged library: [0-9.]+ s \((\d+) unchanged\)") == 4
    assert _figure(out, r"unchanged 300-file tree: ([0-9.]+) s") > 0
    assert not list(tmp_path.iterdir()), "the benchmark left files behind"
