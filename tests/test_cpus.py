"""tagger.cpus: the CPUs a process may use, from real cgroup files and a real affinity mask."""
import os
import subprocess
import sys

import pytest

from tagger import cpus


def _v1(root, quota, period=100000, folder="cpu"):
    (root / folder).mkdir(parents=True)
    (root / folder / "cpu.cfs_quota_us").write_text(f"{quota}\n")
    (root / folder / "cpu.cfs_period_us").write_text(f"{period}\n")
    return root


@pytest.mark.parametrize("text, expected", [("200000 100000\n", 2.0), ("150000 100000\n", 1.5),
                                             ("max 100000\n", None), ("garbage\n", None)])
def test_quota_from_cgroup_v2_cpu_max(tmp_path, text, expected):
    (tmp_path / "cpu.max").write_text(text)
    assert cpus.quota(tmp_path) == expected


@pytest.mark.parametrize("folder", ["cpu", "cpu,cpuacct"])
def test_quota_from_cgroup_v1_cfs_files(tmp_path, folder):
    assert cpus.quota(_v1(tmp_path, 300000, folder=folder)) == 3.0
    assert cpus.quota(_v1(tmp_path / "none", -1)) is None


def test_no_cgroup_files_means_no_quota(tmp_path):
    assert cpus.quota(tmp_path) is None
    assert cpus.usable(tmp_path) == len(os.sched_getaffinity(0))


def test_usable_is_capped_by_the_quota_rounded_up(tmp_path):
    affinity = len(os.sched_getaffinity(0))
    (tmp_path / "cpu.max").write_text("50000 100000\n")  # half a CPU: still one process
    assert cpus.usable(tmp_path) == 1
    (tmp_path / "cpu.max").write_text(f"{affinity * 100000 + 1} 100000\n")  # above the mask: the mask
    assert cpus.usable(tmp_path) == affinity


def test_a_process_pinned_to_one_core_counts_one():
    # sched_setaffinity in the child, as taskset or a cpuset would leave it
    code = ("import os; os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]}); "
            "from tagger import cpus; from tagger.config import Settings; "
            "print(cpus.usable(), Settings().worker_count)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["1", "1"]
