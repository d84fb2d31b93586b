"""`tagger scan` and `tagger report` end to end, as a user runs them: real processes,
real files of every format, the embedded default (SQLite + local worker processes)."""
from __future__ import annotations

import json

import audiofiles
import numpy as np
from services import cli_env, run_cli

from tagger import tags
from tagger.naming import genre_id
from tagger.workers.processes import ProcessGroup

OTHER = {"title": ["Título"], "artist": ["Artist"], "album": ["An Album"]}


def _library(audio_factory, tmp_path):
    files = {}
    for fmt in audiofiles.FORMATS:
        files[fmt] = audio_factory(fmt, name=f"lib/{fmt}/track {fmt}.{audiofiles.SUFFIX[fmt][1:]}",
                                   seconds=12, tags=OTHER, cover=audiofiles.make_png())
    bad = tmp_path / "lib" / "bad"
    bad.mkdir()
    audiofiles.zero_byte(bad, "zero.mp3")
    audiofiles.text_as_audio(bad, "readme.mp3")
    audiofiles.truncated(audio_factory("mp3", name="src/full.mp3", seconds=20), bad / "truncated.mp3", 0.05)
    return tmp_path / "lib", files


def test_scan_tags_every_format_reports_bad_files_and_rescan_skips(settings, audio_factory, tmp_path):
    root, files = _library(audio_factory, tmp_path)
    before = {fmt: (audiofiles.all_tags(p, fmt), audiofiles.decode(p, fmt)) for fmt, p in files.items()}

    first = run_cli(settings, "scan", str(root), "--json")
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout)
    assert summary["found"] == 10 and summary["tagged"] == 7 and summary["failed"] == 3
    reasons = {f["path"].rsplit("/", 1)[1]: f["reason"] for f in summary["failures"]}
    assert "empty file" in reasons["zero.mp3"]
    assert "not MP3 audio" in reasons["readme.mp3"]
    assert "truncated" in reasons["truncated.mp3"]

    for fmt, path in files.items():
        old_tags, old_audio = before[fmt]
        ours = tags.read(path, fmt)
        assert ours["genre"] and genre_id(ours["genre"][0]) in summary["genres"]  # a name, the summary ids
        new_tags = audiofiles.all_tags(path, fmt)
        for key, value in old_tags.items():  # every tag that was there is still there, unchanged
            assert new_tags.get(key) == value, (fmt, key)
        np.testing.assert_array_equal(audiofiles.decode(path, fmt), old_audio)

    second = run_cli(settings, "scan", str(root), "--json")
    assert second.returncode == 0, second.stderr
    again = json.loads(second.stdout)
    # nothing is analysed again: the tagged files are unchanged, and the broken ones would only
    # fail again (their faults are their own), costing a worker's start-up each time
    assert again["unchanged"] == 10 and again["tagged"] == 0 and again["queued"] == 0

    report = run_cli(settings, "report", "--format", "json")
    doc = json.loads(report.stdout)
    assert [sc["id"] for sc in doc["scans"]] == [summary["scan_id"], again["scan_id"]]
    assert sum(g["files"] for g in doc["genres"]) == 7
    assert {f["path"].rsplit("/", 1)[1] for f in doc["failed"]} == {"zero.mp3", "readme.mp3", "truncated.mp3"}
    assert len([c for c in doc["changes"] if c["state"] == "done"]) == 7

    table = run_cli(settings, "report")
    assert table.returncode == 0 and "Scans" in table.stdout and "truncated" in table.stdout
    csv_out = run_cli(settings, "report", "--format", "csv", "--scan", str(summary["scan_id"]))
    assert csv_out.stdout.count("\nchange,") == 7

    retry = json.loads(run_cli(settings, "scan", str(root), "--json", "--retry-failed").stdout)
    assert retry["queued"] == 3 and retry["failed"] == 3 and retry["unchanged"] == 7, retry
    (root / "bad" / "readme.mp3").write_bytes(b"still not audio, but changed\n")  # a changed file: tried
    changed = json.loads(run_cli(settings, "scan", str(root), "--json").stdout)
    assert changed["queued"] == 1 and changed["unchanged"] == 9, changed


def test_dry_run_changes_no_file(settings, audio_factory):
    paths = [audio_factory(fmt, name=f"d/x.{audiofiles.SUFFIX[fmt][1:]}", seconds=10) for fmt in ("mp3", "flac")]
    raw = [p.read_bytes() for p in paths]
    # a worker log grown past its limit by earlier scans is moved aside when the workers start
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    old_log = settings.data_dir / "worker.log"
    old_log.write_bytes(b"an earlier scan\n" * (ProcessGroup.LOG_LIMIT // 16 + 1))
    out = run_cli(settings, "scan", str(paths[0].parent), "--dry-run", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["dry_run"] == 2
    assert [p.read_bytes() for p in paths] == raw
    moved = settings.data_dir / "worker.log.1"
    assert moved.stat().st_size > ProcessGroup.LOG_LIMIT and moved.read_bytes().startswith(b"an earlier scan")
    assert old_log.stat().st_size < 1024 * 1024 and b"an earlier scan" not in old_log.read_bytes()


def test_scan_without_any_model_says_so(settings, audio_factory, tmp_path):
    path = audio_factory("mp3", name="m/a.mp3", seconds=10)
    out = run_cli(settings, "scan", str(path.parent), TAGGER_MODEL="absent-model", TAGGER_MODEL_DIRS=str(tmp_path))
    assert out.returncode != 0
    assert "no model named 'absent-model'" in out.stderr


def test_every_command_has_help(settings):
    for cmd in ([], ["scan"], ["report"], ["worker"], ["status"], ["db", "upgrade"], ["models"], ["evaluate"]):
        out = run_cli(settings, *cmd, "--help")
        assert out.returncode == 0 and "Usage:" in out.stdout, cmd


def test_evaluate_on_a_labeled_folder_and_from_tags(settings, gtzan, tmp_path):
    import shutil

    root = tmp_path / "labeled"
    for genre in ("metal", "classical"):
        (root / genre).mkdir(parents=True)
        for clip in sorted((gtzan / genre).glob("*.mp3"))[:2]:
            shutil.copyfile(clip, root / genre / clip.name)
    out = run_cli(settings, "evaluate", str(root), "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["n"] == 4 and 0.0 <= result["accuracy"] <= 1.0
    text = run_cli(settings, "evaluate", str(root))
    assert "accuracy" in text.stdout.lower()

    for genre in ("metal", "classical"):  # the user's own tags as labels
        for f in (root / genre).glob("*.mp3"):
            tags.write(f, "mp3", {"genre": [genre]})
    tagged = run_cli(settings, "evaluate", str(root), "--from-tags", "--json")
    assert tagged.returncode == 0, tagged.stderr
    assert json.loads(tagged.stdout)["n"] == 4


def test_a_model_trained_on_other_features_refuses_to_load(settings, test_model_dir, audio_factory, tmp_path):
    import shutil

    from tagger.errors import ModelMissing
    from tagger.models import registry

    other = tmp_path / "models" / "mfcc13"
    shutil.copytree(test_model_dir / "test-logreg", other)
    card = json.loads((other / "card.json").read_text())
    card["name"], card["features"]["n_mfcc"] = "mfcc13", 13
    (other / "card.json").write_text(json.dumps(card))
    try:
        registry.load("mfcc13", [str(other.parent)])
    except ModelMissing as exc:
        assert "trained on other features" in str(exc) and "n_mfcc: trained with 13, computed here as 20" in str(exc)
    else:
        raise AssertionError("a model fed other features than it was trained on loaded")
    path = audio_factory("mp3", name="m/a.mp3", seconds=10)
    out = run_cli(settings, "scan", str(path.parent), TAGGER_MODEL="mfcc13", TAGGER_MODEL_DIRS=str(other.parent))
    assert out.returncode == 1 and "trained on other features" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_shell_completion_as_the_readme_says(settings):
    import subprocess
    import sys
    from pathlib import Path



    tagger = str(Path(sys.executable).parent / "tagger")  # the installed command, as a shell runs it

    def run(**env):
        return subprocess.run([tagger], env=cli_env(settings, **env), capture_output=True, text=True, timeout=60)

    out = run(COMP_WORDS="tagger sc", COMP_CWORD="1", _TAGGER_COMPLETE="bash_complete")
    assert out.returncode == 0 and out.stdout.split() == ["plain,scan"], (out.stdout, out.stderr)
    script = run(_TAGGER_COMPLETE="bash_source")
    assert "_tagger_completion" in script.stdout and "complete" in script.stdout


def test_a_write_that_failed_for_the_machine_is_tried_again(settings, audio_factory):
    """A tag write refused for a reason outside the file (here: no write permission, as a full disk
    or a read-only mount would be) is not the file's fault: the next scan tries it again."""
    import os

    path = audio_factory("mp3", name="ro/a.mp3", seconds=10)
    os.chmod(path, 0o444)
    first = json.loads(run_cli(settings, "scan", "--json", str(path.parent)).stdout)
    assert first["failed"] == 1 and first["failures"][0]["kind"] == "tag_write_failed", first
    os.chmod(path, 0o644)  # the size and mtime stay as they were
    again = json.loads(run_cli(settings, "scan", "--json", str(path.parent)).stdout)
    assert again["queued"] == 1 and again["tagged"] == 1, again
