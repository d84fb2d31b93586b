"""The distributed path: a scan queued through the real Redis, done by a `tagger worker` process."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import audiofiles
from services import cli_env, run_cli

from tagger import tags


def test_scan_through_redis_with_a_headless_worker(settings, audio_factory, redis_url, tmp_path):
    paths = [audio_factory(fmt, name=f"r/t.{audiofiles.SUFFIX[fmt][1:]}", seconds=10) for fmt in ("mp3", "opus", "m4a")]
    queued = run_cli(settings, "scan", str(paths[0].parent), "--json", TAGGER_BROKER_URL=redis_url)
    assert queued.returncode == 0, queued.stderr
    summary = json.loads(queued.stdout)
    assert summary["queued"] == 3 and summary["pending"] == 3  # scan returns once queued

    worker = subprocess.Popen([sys.executable, "-m", "tagger", "worker", "--processes", "1"],
                              env=cli_env(settings, TAGGER_BROKER_URL=redis_url),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        again = run_cli(settings, "scan", str(paths[0].parent), "--json", TAGGER_BROKER_URL=redis_url)
        assert json.loads(again.stdout)["queued"] == 0  # already queued by the first scan: not twice
        status = None
        for _ in range(120):
            status = json.loads(run_cli(settings, "status", "--json", "--scan", str(summary["scan_id"]),
                                        TAGGER_BROKER_URL=redis_url).stdout)
            if status["scan"]["pending"] == 0:
                break
            time.sleep(1)
        assert status["scan"]["tagged"] == 3, status
        assert status["queue"]["waiting"] == 0

        late = audio_factory("flac", name="r/late.flac", seconds=10)
        waited = run_cli(settings, "scan", str(paths[0].parent), "--json", "--wait", "--quiet",
                         TAGGER_BROKER_URL=redis_url)
        followed = json.loads(waited.stdout)
        assert followed["queued"] == 1 and followed["tagged"] == 1 and followed["unchanged"] == 3
        assert tags.read(late, "flac")["genre"]
    finally:
        worker.send_signal(signal.SIGTERM)
        log = worker.communicate(timeout=60)[0]
    assert worker.returncode == 0, log
    assert log.count("tagged ") == 4  # one log line per job
    for p in paths:
        assert tags.read(p, p.suffix[1:])["genre"]


def test_requeue_after_the_broker_lost_its_messages(settings, audio_factory, redis_url):
    import redis as redis_lib

    path = audio_factory("flac", name="q/a.flac", seconds=10)
    summary = json.loads(run_cli(settings, "scan", str(path.parent), "--json", TAGGER_BROKER_URL=redis_url).stdout)
    redis_lib.Redis.from_url(redis_url).flushdb()  # a Redis without persistence restarted
    out = run_cli(settings, "requeue", "--scan", str(summary["scan_id"]), TAGGER_BROKER_URL=redis_url)
    assert out.returncode == 0 and "queued 1 jobs" in out.stdout, out.stderr
    status = json.loads(run_cli(settings, "status", "--json", TAGGER_BROKER_URL=redis_url).stdout)
    assert status["queue"]["waiting"] == 1
