"""Undo restores every file's tags exactly; an undo of an undo is a redo; history tells it all."""
from __future__ import annotations

import json

import audiofiles
from services import run_cli

from tagger import tags

OTHER = {"title": ["Song"], "artist": ["Artist A", "Artist B"], "album": ["Ålbum"]}


def test_undo_redo_a_mixed_format_scan(settings, audio_factory, tmp_path):
    files = {}
    for i, fmt in enumerate(audiofiles.FORMATS):
        extra = {"genre": ["Own Genre"]} if i % 2 else {}  # half carry the user's genre
        files[fmt] = audio_factory(fmt, name=f"lib/t{i}.{audiofiles.SUFFIX[fmt][1:]}", seconds=10,
                                   tags={**OTHER, **extra}, cover=audiofiles.make_png())
    before = {fmt: audiofiles.all_tags(p, fmt) for fmt, p in files.items()}
    audio = {fmt: tags.audio_fingerprint(p, fmt) for fmt, p in files.items()}

    out = run_cli(settings, "scan", str(tmp_path / "lib"), "--overwrite", "--json")
    scan_id = json.loads(out.stdout)["scan_id"]
    assert json.loads(out.stdout)["tagged"] == 7
    tagged = {fmt: audiofiles.all_tags(p, fmt) for fmt, p in files.items()}
    assert all(tagged[f] != before[f] for f in files)

    undone = run_cli(settings, "undo", "--scan", str(scan_id), "--json")
    assert undone.returncode == 0, undone.stderr
    assert [r["status"] for r in json.loads(undone.stdout)] == ["restored"] * 7
    for fmt, p in files.items():
        assert audiofiles.all_tags(p, fmt) == before[fmt], fmt  # every tag, read back, exactly
        assert tags.audio_fingerprint(p, fmt) == audio[fmt]

    redone = run_cli(settings, "undo", "--scan", str(scan_id), "--json")
    assert [r["status"] for r in json.loads(redone.stdout)] == ["restored"] * 7
    for fmt, p in files.items():
        assert audiofiles.all_tags(p, fmt) == tagged[fmt], fmt

    # a rescan does not re-analyse files whose only change was ours
    again = json.loads(run_cli(settings, "scan", str(tmp_path / "lib"), "--json").stdout)
    assert again["unchanged"] == 7

    hist = json.loads(run_cli(settings, "history", str(files["flac"]), "--json").stdout)
    assert [e["event"] for e in hist] == ["analysis", "write", "undo", "undo"]
    assert hist[2]["reverts"] == hist[1]["change_id"] and hist[3]["reverts"] == hist[2]["change_id"]
    text = run_cli(settings, "history", str(files["flac"]))
    assert "analysis" in text.stdout and "undo" in text.stdout


def test_undo_leaves_a_file_edited_since_alone(settings, audio_factory, tmp_path):
    path = audio_factory("mp3", name="e/x.mp3", seconds=10)
    scan_id = json.loads(run_cli(settings, "scan", str(path.parent), "--json").stdout)["scan_id"]
    st = path.stat()
    tags.write(path, "mp3", {"genre": ["Edited By Hand"], "confidence": [], "model": []},
               expect=tags.FileStat(st.st_size, st.st_mtime_ns))
    res = json.loads(run_cli(settings, "undo", "--scan", str(scan_id), "--json").stdout)
    assert res[0]["status"] == "skipped" and "changed since" in res[0]["reason"]
    assert tags.read(path, "mp3")["genre"] == ["Edited By Hand"]


def test_a_bare_undo_with_nothing_written_says_so(settings):
    out = run_cli(settings, "undo")
    assert out.returncode == 0 and out.stdout.strip() == "nothing to undo: no scan has written tags"


def test_a_bare_undo_undoes_the_latest_scan_and_a_dry_run_says_would(settings, audio_factory, tmp_path):
    first = audio_factory("flac", name="u/one/a.flac", seconds=10)
    second = audio_factory("mp3", name="u/two/b.mp3", seconds=10)
    run_cli(settings, "scan", str(first.parent))
    run_cli(settings, "scan", str(second.parent))
    written = {p: tags.read(p, p.suffix[1:]) for p in (first, second)}
    assert all(v["model"] for v in written.values())

    dry = run_cli(settings, "undo", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "undoing scan 2, the latest that wrote tags (dry run)" in dry.stdout
    assert "would restore" in dry.stdout and "restored" not in dry.stdout.replace("would restore", "")
    assert tags.read(second, "mp3") == written[second]  # a dry run changes nothing

    bare = run_cli(settings, "undo")
    assert bare.returncode == 0 and "1 restored" in bare.stdout, bare.stdout
    assert tags.read(second, "mp3")["model"] == [] and tags.read(first, "flac") == written[first]
    both = run_cli(settings, "undo", "--scan", "1", "--file", str(first))
    assert both.returncode == 2 and "not both" in both.stderr


def test_a_write_whose_record_was_lost_can_still_be_undone(settings, audio_factory):
    """The file was replaced, then the process died (or the database went away) before the change
    was marked done: the next scan finds it pending, sees the file holds its values, and settles it,
    so undo of both scans gives back the original (found by bench/faults.py: group-kill9, pg-outage)."""
    import subprocess

    from tagger import discover, record, scan
    from tagger.db import schema as s
    from tagger.db.engine import session_scope

    path = audio_factory("flac", name="lost/a.flac", seconds=10, tags=OTHER)
    original, every_tag = tags.read(path, "flac"), audiofiles.all_tags(path, "flac")
    scan.prepare_database(settings)
    first = scan.create(settings, [str(path.parent)], scan.ScanOptions(min_confidence=0.0))
    found = [f for f in discover.walk([str(path.parent)]) if isinstance(f, discover.Found)]
    (aid,), _ = scan.record_files(settings, first, found, force=False)
    job = record.start(settings, aid)
    wanted = {"genre": ["Jazz"], "confidence": ["0.900"], "model": ["test-logreg 1"]}
    record.begin_change(settings, file_id=job.file_id, scan_id=first, analysis_id=aid,
                        action=s.ChangeAction.WRITE, before=original, after=wanted)
    st = path.stat()
    tags.write(path, "flac", wanted, expect=tags.FileStat(st.st_size, st.st_mtime_ns))
    gone = subprocess.Popen(["true"])
    gone.wait()
    with session_scope(settings.database_url) as db:  # ... and here the scan's process died
        db.get(s.Scan, first).pid = gone.pid

    again = run_cli(settings, "scan", str(path.parent), "--json")
    assert again.returncode == 0, again.stderr
    second = json.loads(again.stdout)["scan_id"]
    for scan_id in (second, first):
        out = run_cli(settings, "undo", "--scan", str(scan_id), "--json")
        assert out.returncode == 0, out.stderr
    assert tags.read(path, "flac") == original and audiofiles.all_tags(path, "flac") == every_tag
