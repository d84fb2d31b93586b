"""Per-stage timings of an analysis: a stage's time is its own, nested stages taken out."""
from __future__ import annotations

import time

from tagger import timing


def test_nested_stages_count_their_own_time_only():
    with timing.measuring() as t:
        with timing.stage("model"):
            time.sleep(0.05)
            with timing.stage("features"):
                time.sleep(0.1)
        with timing.stage("features"):
            time.sleep(0.02)
    assert 0.11 <= t["features"] < 0.2
    assert 0.04 <= t["model"] < 0.1  # without the 0.1 s of features inside it
    line = t.line()
    assert line.startswith("features ") and ", model " in line and line.endswith(tuple("0123456789"))
    assert line.index("features") < line.index("model") < line.index("other")


def test_outside_a_measurement_stages_record_nothing():
    @timing.timed("decode")
    def work():
        return 7

    assert work() == 7
    with timing.measuring() as t:
        assert work() == 7
    assert set(t) == {"decode"}
    with timing.measuring() as inner:
        pass
    assert inner == {}
