"""What a user sees of a scan (#18): a line per file with -v (above the progress bar, never through
it), every file in --json, the diff a dry run would write, genre counts that agree with the report,
history that says what was kept, and the progress bar saying the model is loading.

Real processes on real files (the embedded default: SQLite, local worker processes, the test model).
"""
from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
from collections import Counter

from services import cli_env, run_cli

from tagger import discover, pipeline, scan as scan_mod, tags

LABELS = {"tagged": "tagged", "kept": "kept", "low_confidence": "low confidence", "dry_run": "dry run",
          "failed": "failed"}


def _library(audio_factory, tmp_path):
    """Three good files (one carrying its user's own genre), one bad one whose name holds a newline."""
    lib = tmp_path / "lib"
    a = audio_factory("mp3", name="lib/a.mp3", seconds=10)
    b = audio_factory("flac", name="lib/sub/b.flac", seconds=10, tags={"genre": ["Ambient"]})
    c = audio_factory("ogg", name="lib/c.ogg", seconds=10)
    bad = lib / "bad\nname.mp3"
    bad.write_bytes(b"not audio at all, a text file\n" * 20)
    return lib, {"a": a, "b": b, "c": c, "bad": bad}


def _escaped(path) -> str:
    return str(path).replace("\n", "\\n")


def _candidates(top) -> str:
    return ", ".join(f"{g} {p:.2f}" for g, p in top)


def _expected_line(f: dict) -> str:
    """The -v line a file's --json row stands for."""
    st = f["status"]
    if st == "tagged":  # as written into the file
        what = f"{'; '.join(f['change']['after']['genre'])} ({f['confidence']:.2f})"
    elif st == "kept":
        what = f"kept the user's genre {'; '.join(f['genres'])} (predicted {f['predicted']} {f['confidence']:.2f})"
    elif st == "low_confidence":
        what = f"no tag, not sure enough: {_candidates(f['top'])}"
    else:
        what = f["error"]["reason"]
    return f"{LABELS[st]:<14} {_escaped(f['path'])}: {what}"


def test_json_lists_every_file_and_verbose_prints_the_same_as_they_finish(settings, audio_factory, tmp_path):
    lib, files = _library(audio_factory, tmp_path)
    out = run_cli(settings, "scan", str(lib), "-v", "--json")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)  # -v with --json: the lines go to stderr, stdout stays JSON
    rows = {r["path"]: r for r in summary["files"]}
    assert sorted(rows) == sorted(str(p) for p in files.values())
    assert [r["path"] for r in summary["files"]] == sorted(rows)  # by path

    a = rows[str(files["a"])]
    ours = tags.read(files["a"], "mp3")
    # the genre as the database keeps it (the taxonomy's id), and as written into the file (its name)
    assert a["status"] == "tagged" and a["genre"] == a["predicted"] and a["previous_genre"] == []
    assert ours["genre"] == [a["genre"].capitalize()]
    assert a["change"] == {"before": {"genre": [], "confidence": [], "model": []}, "after": ours, "state": "done"}
    assert abs(a["confidence"] - float(ours["confidence"][0])) < 6e-4  # 4 decimals here, 3 in the tag
    assert len(a["top"]) == 3 and a["top"][0][0] == a["predicted"] and a["model"] == ours["model"][0]

    b = rows[str(files["b"])]
    assert b["status"] == "kept" and b["genre"] == "Ambient" and b["previous_genre"] == ["Ambient"]
    assert b["predicted"] and b["predicted"] != "Ambient" and b["change"] is None
    assert tags.read(files["b"], "flac")["genre"] == ["Ambient"]

    bad = rows[str(files["bad"])]
    assert bad["status"] == "failed" and "not MP3 audio" in bad["error"]["reason"] and bad["genre"] is None

    # one line per file, as each finished, each saying what the --json row says
    lines = [ln for ln in out.stderr.splitlines() if ln.split(" ", 1)[0] in ("tagged", "kept", "failed", "low")]
    assert sorted(lines) == sorted(_expected_line(r) for r in summary["files"])
    assert "\\n" in next(ln for ln in lines if ln.startswith("failed"))  # the name's newline, escaped

    # the genres: written plus kept (the user's), not the prediction made for the kept file
    written = Counter(r["genre"] for r in summary["files"] if r["status"] == "tagged")
    assert summary["genres"] == dict(written + Counter({"Ambient": 1}))
    assert sum(summary["genres"].values()) == summary["tagged"] + summary["kept_user_genre"] == 3
    # and the report counts the library the same way
    report = json.loads(run_cli(settings, "report", "--format", "json").stdout)
    assert {g["genre"]: g["files"] for g in report["genres"]} == summary["genres"]
    assert report["summary"]["library"]["genres"] == len(summary["genres"])

    # history of the kept file says what was kept: the user's genre, not the prediction
    hist = run_cli(settings, "history", str(files["b"]))
    assert hist.returncode == 0, hist.stderr
    line = next(ln for ln in hist.stdout.splitlines() if " analysis " in ln)
    assert "kept" in line and "the user's genre Ambient" in line and f"predicted {b['predicted']}" in line
    assert f"kept {b['predicted']} (" not in re.sub(r" +", " ", hist.stdout)
    events = json.loads(run_cli(settings, "history", str(files["b"]), "--json").stdout)
    assert events[0]["kept_genre"] == ["Ambient"] and events[0]["previous_genre"] == ["Ambient"]

    # not sure: nothing written, and the line names the candidates
    low = run_cli(settings, "scan", str(lib), "-v", "--force", "--min-confidence", "1.0")
    assert low.returncode == 0, low.stderr
    low_lines = [ln for ln in low.stdout.splitlines() if ln.startswith("low confidence ")]
    assert len(low_lines) == 3
    report = json.loads(run_cli(settings, "report", "--format", "json", "--low-confidence").stdout)
    for r in report["low_confidence"]:
        assert any(ln.startswith(f"low confidence {_escaped(r['path'])}: no tag, not sure enough: "
                                 f"{_candidates(r['top'])}") for ln in low_lines)
    # the summary: what was found, then how long the whole scan took
    head = next(ln for ln in low.stdout.splitlines() if ln.startswith("scan "))
    assert re.fullmatch(r"scan \d+: 4 audio files found; finished in \d+\.\d s", head), head
    assert "found in" not in low.stdout
    # without -v, a piped scan prints no per-file lines, and the progress goes to stderr only
    quiet = run_cli(settings, "scan", str(lib), "--force")
    assert not any(ln.startswith(("tagged ", "kept ", "low confidence ")) for ln in quiet.stdout.splitlines())
    assert "loading model …" in quiet.stderr
    m = re.search(r"model loaded in (\d+\.\d) s", quiet.stderr)
    assert m and quiet.stderr.index("loading model") < m.start()
    assert "loading model" not in quiet.stdout and "[#" not in quiet.stdout


def _run_in_terminal(settings, *args: str, timeout: float = 240) -> str:
    """Run ``tagger ARGS`` with stdout and stderr on a pseudo-terminal; what was written to it."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "tagger", *args], env=cli_env(settings), stdin=subprocess.DEVNULL,
                            stdout=slave, stderr=slave)
    os.close(slave)
    chunks = []
    try:
        while True:
            ready, _, _ = select.select([master], [], [], timeout)
            if not ready:
                proc.kill()
                raise AssertionError("the scan wrote nothing for too long")
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the process closed the terminal
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(master)
        proc.wait(timeout=30)
    assert proc.returncode == 0, b"".join(chunks).decode("utf-8", "replace")[-3000:]
    return b"".join(chunks).decode("utf-8")


def _screen(raw: str) -> list[str]:
    """The lines a terminal ends up showing: carriage returns, erase-to-end-of-line, newlines."""
    lines, cur, col, i = [], [], 0, 0
    while i < len(raw):
        if raw.startswith("\x1b[K", i):
            del cur[col:]
            i += 3
            continue
        ch = raw[i]
        if ch == "\r":
            col = 0
        elif ch == "\n":
            lines.append("".join(cur))
            cur, col = [], 0
        else:
            if col < len(cur):
                cur[col] = ch
            else:
                cur.append(ch)
            col += 1
        i += 1
    lines.append("".join(cur))
    return lines


def test_verbose_lines_go_above_the_progress_bar_on_a_terminal(settings, audio_factory, tmp_path):
    lib, files = _library(audio_factory, tmp_path)
    raw = _run_in_terminal(settings, "scan", str(lib), "-v")
    screen = _screen(raw)
    # the bar first says what it waits for, then how long that took
    assert "loading model … " in raw and "(0/4 files done)" in raw
    loaded = [ln for ln in screen if re.fullmatch(r"model loaded in \d+\.\d s", ln)]
    assert len(loaded) == 1
    assert raw.index("loading model") < raw.index(loaded[0])
    # each file's line whole on its own line: the bar was cleared first and drawn again under it
    paths = [_escaped(p) for p in files.values()]
    file_lines = [ln for ln in screen if any(p + ":" in ln for p in paths) and not ln.startswith(" ")]
    assert len(file_lines) == 4, screen  # (the summary's "  failed: …" line apart)
    for ln in file_lines:
        assert re.match(r"(tagged|kept|failed) +/", ln), ln
        assert "[#" not in ln and "[." not in ln and "files/s" not in ln and "loading" not in ln
    assert screen.index(loaded[0]) < min(screen.index(ln) for ln in file_lines if not ln.startswith("failed"))
    # the bar ends full, on a line of its own, before the summary
    bar = [ln for ln in screen if ln.startswith("[")]
    assert bar and re.match(r"\[#{30}\] 4/4 ", bar[-1]), bar
    assert screen.index(bar[-1]) < next(i for i, ln in enumerate(screen) if ln.startswith("scan "))


def test_dry_run_shows_the_diff_it_would_write(settings, audio_factory, tmp_path):
    lib = tmp_path / "lib"
    plain = [audio_factory("mp3", name=f"lib/p{i:02d}.mp3", seconds=6) for i in range(52)]
    user = audio_factory("flac", name="lib/user.flac", seconds=6, tags={"genre": ["Ambient"]})
    ours = audio_factory("mp3", name="lib/ours.mp3", seconds=6)
    tags.write(ours, "mp3", {"genre": ["Rock"], "confidence": ["0.500"], "model": ["old-model 0"]})
    raw = {p: p.read_bytes() for p in [*plain, user, ours]}

    out = run_cli(settings, "scan", str(lib), "--dry-run", "--json")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["dry_run"] == 54 and summary["genres"] == {}  # nothing written, nothing kept
    rows = {r["path"]: r for r in summary["files"]}
    o = rows[str(ours)]
    assert o["would"] == "write" and o["previous_genre"] == ["Rock"]
    assert o["change"]["before"] == {"genre": ["Rock"], "confidence": ["0.500"], "model": ["old-model 0"]}
    after = o["change"]["after"]
    assert after["genre"] == [o["predicted"].capitalize()] and after["model"] == ["test-logreg 1"]
    assert abs(float(after["confidence"][0]) - o["confidence"]) < 5e-4
    u = rows[str(user)]
    assert u["would"] == "keep" and u["genre"] == "Ambient" and u["change"] is None
    p = rows[str(plain[0])]
    assert p["would"] == "write" and p["change"]["before"] == {"genre": [], "confidence": [], "model": []}
    assert summary["would_genres"] == dict(sorted(Counter(r["genre"] for r in summary["files"]).items(),
                                                  key=lambda kv: (-kv[1], kv[0])))
    assert summary["would_genres"]["Ambient"] == 1
    assert {pth: pth.read_bytes() for pth in raw} == raw  # a dry run writes nothing

    text = run_cli(settings, "scan", str(lib), "--dry-run")
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0].startswith("scan ") and "(dry run)" in lines[0] and "finished in" in lines[0]
    assert "  a real scan would write 53, keep the user's genre on 1, leave 0 untagged (low confidence)" in lines
    listed = [ln.strip() for ln in lines if ln.startswith("    ") and ": " in ln]
    assert len(listed) == 50  # the list stops at 50 …
    assert lines[-1] == "    … and 4 more; see --json"
    conf = after["confidence"][0]
    assert (f"{ours}: would write genre Rock → {after['genre'][0]}, confidence 0.500 → {conf}, "
            f"model old-model 0 → test-logreg 1") in listed
    p_after = p["change"]["after"]
    assert (f"{plain[0]}: would write genre - → {p_after['genre'][0]}, confidence - → {p_after['confidence'][0]}, "
            f"model - → test-logreg 1") in listed
    # … and the rest are in --json (54 in all, by path: user.flac is among the cut ones)
    assert [r["path"] for r in summary["files"]][:50] == [ln.split(": ", 1)[0] for ln in listed]
    assert {pth: pth.read_bytes() for pth in raw} == raw


def test_finished_since_hands_out_each_analysis_once_whatever_order_they_finish(settings, audio_factory, tmp_path):
    paths = [audio_factory("wav", name=f"o/{n}.wav", seconds=4) for n in ("x", "y", "z")]
    scan_mod.prepare_database(settings)
    scan_id = scan_mod.create(settings, [str(tmp_path / "o")], scan_mod.ScanOptions(model=settings.model))
    found = [f for f in discover.walk([str(tmp_path / "o")]) if isinstance(f, discover.Found)]
    ids, _ = scan_mod.record_files(settings, scan_id, found, force=False)
    assert len(ids) == 3
    cursor = scan_mod.Cursor()
    assert scan_mod.finished_since(settings, scan_id, cursor) == []
    pipeline.analyse(ids[1], settings)  # the second finishes first
    assert [r["id"] for r in scan_mod.finished_since(settings, scan_id, cursor)] == [ids[1]]
    pipeline.analyse(ids[0], settings)  # then one below the last seen
    got = scan_mod.finished_since(settings, scan_id, cursor)
    assert [r["id"] for r in got] == [ids[0]] and got[0]["status"] == "tagged" and got[0]["path"] == str(paths[0])
    assert scan_mod.finished_since(settings, scan_id, cursor) == []
    pipeline.analyse(ids[2], settings)
    assert [r["id"] for r in scan_mod.finished_since(settings, scan_id, cursor)] == [ids[2]]
    assert scan_mod.finished_since(settings, scan_id, cursor) == [] and cursor.seen == set()
