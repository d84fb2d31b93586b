"""Schema-driven fuzzing of `tagger serve`: schemathesis reads /openapi.json from a started server
and sends a handful of generated requests per operation (valid and invalid ones).

Checks: no 5xx, every status code documented, JSON content type, every response body valid
against its schema. The server has a token configured and a results database with a real
scan in it, so the authenticated paths and non-empty pages are what gets checked.
About 15-20 s on an idle 2-core machine.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import audiofiles
import pytest
from services import TEST_MODEL
from test_serve import start_server

from tagger import config, discover, pipeline, scan as scan_mod

CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"


def _st() -> str:
    found = Path(sys.executable).with_name("st")
    if found.exists():
        return str(found)
    which = shutil.which("st")
    if which is None:
        pytest.fail("schemathesis is not installed (pip install -e '.[dev]')")
    return which


def _seed_results(settings: config.Settings, lib: Path) -> None:
    """A dry-run scan of ``lib`` through the real pipeline, in this process (no worker start-up to wait for)."""
    scan_mod.prepare_database(settings)
    scan_id = scan_mod.create(settings, [str(lib)], scan_mod.ScanOptions(dry_run=True, model=settings.model))
    found = [f for f in discover.walk([str(lib)]) if isinstance(f, discover.Found)]
    ids, _ = scan_mod.record_files(settings, scan_id, found, force=False)
    statuses = [pipeline.analyse(i, settings) for i in ids]
    scan_mod.finish(settings, scan_id)
    assert sorted(statuses) == ["dry_run", "dry_run", "failed"]


def test_schemathesis_finds_no_server_errors_or_schema_violations(tmp_path, test_model_dir, audio_factory):
    lib = tmp_path / "lib"
    audio_factory("mp3", name="lib/a.mp3", seconds=10)
    audio_factory("flac", name="lib/b/b.flac", seconds=10)
    audiofiles.text_as_audio(lib, "bad.mp3")
    settings = config.load({"data_dir": tmp_path / "data", "model": TEST_MODEL, "model_dirs": [str(test_model_dir)],
                            "workers": 1, "min_confidence": 0.0}, environ={}, config_file=tmp_path / "none.toml")
    _seed_results(settings, lib)
    token = "fuzz-" + os.urandom(6).hex()
    server = start_server(settings, tmp_path / "srv", TAGGER_API_TOKEN=token, TAGGER_LIBRARY_ROOTS=str(lib),
                          TAGGER_MAX_UPLOAD_MB="2")
    try:
        run = subprocess.run(
            [_st(), "run", f"{server.url}/openapi.json", "--checks", CHECKS, "--max-examples", "6",
             "--phases", "coverage,fuzzing", "--seed", "20261124", "--generation-database", "none",
             "--header", f"Authorization: Bearer {token}", "--request-timeout", "60", "--workers", "1",
             "--no-color"],
            cwd=tmp_path, capture_output=True, text=True, timeout=150)
        assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
        assert "passed" in run.stdout
        assert "Traceback" not in server.log.read_text()
    finally:
        assert server.stop() == 0
