"""`tagger report`: every format carries the same facts, the filters narrow them, the HTML page
renders in a real browser (headless Chromium) with its charts, tables, sorting and filtering.

The database comes from three real scans of real files (tests/report_fixtures.py).
"""
from __future__ import annotations

import csv
import io
import json
import shutil
import struct
import subprocess
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser
from pathlib import Path

import click
import pytest
from report_fixtures import SCAN_TIMES, report_library  # noqa: F401 (a fixture)
from services import run_cli
from sqlalchemy import insert

from tagger import report, scan
from tagger.config import Settings
from tagger.db import schema as s
from tagger.db.engine import ensure_schema, session_scope
from tagger.report import Filters


def _json(lib, *args) -> dict:
    out = run_cli(lib.settings, "report", "--format", "json", *args)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_json_csv_and_table_carry_the_same_facts(report_library, tmp_path):
    lib = report_library
    doc = _json(lib)
    first, second, third = lib.scan_ids

    assert [sc["id"] for sc in doc["scans"]] == lib.scan_ids
    by_id = {sc["id"]: sc for sc in doc["scans"]}
    assert (by_id[first]["found"], by_id[first]["tagged"], by_id[first]["failed"], by_id[first]["tags_written"]) \
        == (6, 4, 2, 4)
    assert (by_id[second]["found"], by_id[second]["low_confidence"], by_id[second]["tagged"]) == (3, 3, 0)
    assert (by_id[third]["found"], by_id[third]["unchanged"], by_id[third]["queued"], by_id[third]["failed"]) \
        == (9, 7, 2, 2)
    assert by_id[first]["started_at"] == SCAN_TIMES[0].isoformat()
    assert doc["summary"]["latest_scan"]["id"] == third
    assert doc["summary"]["library"] == {"files": 9, "tagged_files": 4, "genres": len(doc["genres"])}

    # the library's genres: one tag written per tagged file
    assert doc["report"]["genres_basis"] == "library"
    assert sum(g["files"] for g in doc["genres"]) == 4
    # the histogram holds each file's latest prediction: 4 tagged + 3 low confidence
    conf = doc["confidence"]
    assert conf["predictions"] == 7 == sum(b["files"] for b in conf["bins"])
    assert [b["from"] for b in conf["bins"]] == [round(0.1 * i, 1) for i in range(10)]
    assert conf["min"] <= conf["mean"] <= conf["max"] <= 1.0

    assert sorted(r["path"] for r in doc["low_confidence"]) == sorted(lib.low)
    for r in doc["low_confidence"]:
        assert len(r["top"]) == 3 and r["top"][0][0] == r["genre"] and r["top"][0][1] == r["confidence"]
        assert [p for _, p in r["top"]] == sorted((p for _, p in r["top"]), reverse=True)
    # failed now: each bad file once, with the latest scan's reason, though both scans failed on it
    assert sorted(r["path"] for r in doc["failed"]) == sorted(lib.failed)
    reasons = {Path(r["path"]).name: r["reason"] for r in doc["failed"]}
    assert "empty file" in reasons["zero.mp3"] and "not MP3 audio" in reasons["readme.mp3"]
    assert {r["scan_id"] for r in doc["failed"]} == {third}
    assert sorted(r["path"] for r in doc["changes"]) == sorted(lib.tagged)
    assert all(r["action"] == "write" and r["state"] == "done" and len(r["after"]) == 1 for r in doc["changes"])
    assert doc["totals"] == {"low_confidence": 3, "failed": 2, "changes": 4, "scans": 3} and doc["truncated"] == []

    # CSV, written with --output: the same rows
    out = run_cli(lib.settings, "report", "--format", "csv", "--output", str(tmp_path / "r.csv"))
    assert out.returncode == 0 and out.stdout == "" and "wrote" in out.stderr
    rows = list(csv.DictReader(io.StringIO((tmp_path / "r.csv").read_text(encoding="utf-8"))))
    section = lambda name: [r for r in rows if r["section"] == name]  # noqa: E731
    assert [int(r["scan_id"]) for r in section("scan")] == lib.scan_ids
    assert [json.loads(r["detail"])["tagged"] for r in section("scan")] == [sc["tagged"] for sc in doc["scans"]]
    assert {r["genre"]: int(r["value"]) for r in section("genre")} == {g["genre"]: g["files"] for g in doc["genres"]}
    assert [int(r["value"]) for r in section("confidence")] == [b["files"] for b in conf["bins"]]
    assert [(r["path"], r["genre"], float(r["value"]), json.loads(r["detail"])) for r in section("low_confidence")] \
        == [(r["path"], r["genre"], r["confidence"], r["top"]) for r in doc["low_confidence"]]
    assert [(r["path"], r["detail"]) for r in section("failed")] == [(r["path"], r["reason"]) for r in doc["failed"]]
    assert [r["path"] for r in section("change")] == [r["path"] for r in doc["changes"]]  # newlines kept, quoted
    assert {r["path"]: int(r["value"]) for r in section("total")} == doc["totals"]

    # the table: piped, so no colour; every file and reason on one line each
    table = run_cli(lib.settings, "report")
    assert table.returncode == 0, table.stderr
    text = table.stdout
    assert "\x1b[" not in text
    for title in ("Summary", "Scans", "Genres", "Confidence", "Low confidence", "Failed", "Tag changes"):
        assert title in text
    for r in doc["low_confidence"]:
        line = next(ln for ln in text.splitlines() if r["path"] in ln)
        assert f"{r['confidence']:.2f}" in line and ", ".join(f"{g} {p:.2f}" for g, p in r["top"]) in line
    for r in doc["failed"]:
        assert any(r["path"] in ln and r["reason"] in ln for ln in text.splitlines())
    newline_name = next(p for p in lib.tagged if "\n" in p)
    assert newline_name.replace("\n", "\\n") in text and newline_name not in text
    assert any("\ufffd" in ln and "m\ufffdtal" in ln for ln in text.splitlines())
    for g in doc["genres"]:
        assert any(ln.startswith(g["genre"]) and f"{100 * g['share']:.1f}%" in ln for ln in text.splitlines())


def test_filters_narrow_every_part(report_library):
    lib = report_library
    first, second, third = lib.scan_ids

    since = report.collect(lib.settings, filters=Filters(since=report.parse_since("2024-03-01")))
    assert [sc["id"] for sc in since["scans"]] == [second, third]
    assert since["report"]["genres_basis"] == "predictions"
    # scan 1's tagged files are not in scope: only scan 2's three predictions are
    assert since["confidence"]["predictions"] == 3 and sum(g["files"] for g in since["genres"]) == 3
    assert since["changes"] == [] and len(since["low_confidence"]) == 3 and len(since["failed"]) == 2

    one = report.collect(lib.settings, filters=Filters(scan_id=first))
    assert [sc["id"] for sc in one["scans"]] == [first]
    assert {r["scan_id"] for r in one["failed"]} == {first} and len(one["failed"]) == 2
    assert one["low_confidence"] == [] and len(one["changes"]) == 4
    assert one["confidence"]["predictions"] == 4

    low_genre = report.collect(lib.settings)["low_confidence"][0]["genre"]
    by_genre = report.collect(lib.settings, filters=Filters(genre=low_genre.upper()))
    assert by_genre["low_confidence"] and {r["genre"] for r in by_genre["low_confidence"]} == {low_genre}
    assert {g["genre"] for g in by_genre["genres"]} <= {low_genre}
    assert by_genre["confidence"]["predictions"] == sum(
        1 for r in report.collect(lib.settings)["low_confidence"] if r["genre"] == low_genre) + sum(
        1 for g in report.collect(lib.settings)["genres"] if g["genre"] == low_genre)
    assert by_genre["failed"] == []  # the bad files never had a genre
    # the name written into the files finds the same (Hip-Hop for hiphop, R&B for rnb)
    from tagger.naming import DISPLAY

    by_name = report.collect(lib.settings, filters=Filters(genre=DISPLAY[low_genre]))
    by_name["report"]["generated_at"] = by_genre["report"]["generated_at"]  # the two may be a second apart
    assert by_name == by_genre | {
        "report": {**by_genre["report"], "filters": {**by_genre["report"]["filters"], "genre": DISPLAY[low_genre]}}}

    only_failed = report.collect(lib.settings, filters=Filters(lists=("failed",), since=SCAN_TIMES[0]))
    assert only_failed["report"]["filters"]["lists"] == ["failed"]
    assert only_failed["low_confidence"] == [] and only_failed["changes"] == [] and len(only_failed["failed"]) == 2
    assert set(only_failed["totals"]) == {"failed", "scans"}
    text = report.render_table(only_failed)
    assert "Failed" in text and "Low confidence" not in text and "Tag changes" not in text

    both = report.collect(lib.settings, filters=Filters(lists=("low_confidence", "failed"), scan_id=second))
    assert len(both["low_confidence"]) == 3 and both["failed"] == []

    cut = report.collect(lib.settings, limit=1)
    assert [sc["id"] for sc in cut["scans"]] == [third]  # the latest scans are kept
    assert len(cut["low_confidence"]) == 1 and cut["totals"]["low_confidence"] == 3
    assert set(cut["truncated"]) == {"scans", "low_confidence", "failed", "changes"}
    assert "Low confidence (no tag written): showing 1 of 3 (raise --limit for more)" in report.render_table(cut)

    # the CLI: the same filters as flags, and a clear refusal of a bad date
    doc = _json(lib, "--since", "2024-03-01", "--low-confidence", "--genre", low_genre)
    assert [sc["id"] for sc in doc["scans"]] == [second, third]
    assert doc["failed"] == [] and {r["genre"] for r in doc["low_confidence"]} == {low_genre}
    bad = run_cli(lib.settings, "report", "--since", "last tuesday")
    assert bad.returncode == 2 and "not an ISO date" in bad.stderr
    missing = run_cli(lib.settings, "report", "--scan", "999")
    assert missing.returncode == 1 and "no scan 999" in missing.stderr


def test_files_list_in_every_format(report_library, tmp_path):
    lib = report_library
    plain = _json(lib)
    assert plain["files"] == [] and "files" not in plain["totals"]  # only when asked for

    doc = _json(lib, "--files")
    assert doc["low_confidence"] and doc["failed"] and doc["changes"]  # an addition to the default lists
    rows = {r["path"]: r for r in doc["files"]}
    assert [r["path"] for r in doc["files"]] == sorted(rows) and doc["totals"]["files"] == 9
    assert sorted(rows) == sorted(lib.tagged + lib.low + lib.failed)
    written = {c["path"]: c["after"] for c in doc["changes"]}
    for path in lib.tagged:  # each file's latest finished analysis: scan 1's (scan 3 skipped them)
        r = rows[path]
        assert (r["status"], r["scan_id"]) == ("tagged", lib.scan_ids[0]) and r["confidence"] is not None
        # the report keeps the taxonomy's id; the file got its name (Blues)
        assert r["genre"] == r["predicted"] and r["genres"] == [r["predicted"]]
        assert written[path] == [r["genre"].capitalize()]
    low = {r["path"]: r for r in doc["low_confidence"]}
    for path in lib.low:
        r = rows[path]
        assert r["status"] == "low_confidence" and r["genre"] is None and r["genres"] == []
        assert (r["predicted"], r["confidence"], r["top"]) == (low[path]["genre"], low[path]["confidence"],
                                                               low[path]["top"])
    failed = {r["path"]: r for r in doc["failed"]}
    for path in lib.failed:
        assert rows[path]["status"] == "failed" and rows[path]["error"]["reason"] == failed[path]["reason"]

    # the table: one line per file, the candidates on the low-confidence ones
    text = run_cli(lib.settings, "report", "--files").stdout
    section = text[text.index("Files (genre written or kept)"):]
    for path, r in rows.items():
        line = next(ln for ln in section.splitlines() if report.printable(path) in ln)
        if r["status"] == "low_confidence":
            assert "low confidence" in line and ", ".join(f"{g} {p:.2f}" for g, p in r["top"]) in line
        elif r["status"] == "tagged":
            assert f"{r['genre']}  " in line and f"{r['confidence']:.2f}" in line
        else:
            assert r["error"]["reason"] in line

    # cut at --limit like the other lists, and it says so
    cut = _json(lib, "--files", "--limit", "3")
    assert len(cut["files"]) == 3 and cut["totals"]["files"] == 9 and "files" in cut["truncated"]
    assert "Files (genre written or kept): showing 3 of 9 (raise --limit for more)" in \
        run_cli(lib.settings, "report", "--files", "--limit", "3").stdout
    # with --failed: the failed list and the files, narrowed by --genre too
    only = _json(lib, "--files", "--failed")
    assert only["low_confidence"] == [] and only["changes"] == [] and len(only["files"]) == 9
    g = rows[lib.low[0]]["predicted"]
    by_genre = _json(lib, "--files", "--genre", g.upper())
    assert by_genre["files"] and {r["predicted"] for r in by_genre["files"]} == {g}

    # CSV: one "file" row each
    rows_csv = [r for r in csv.DictReader(io.StringIO(run_cli(lib.settings, "report", "--files", "--format",
                                                              "csv").stdout)) if r["section"] == "file"]
    assert [(r["path"], r["value"], r["genre"]) for r in rows_csv] == \
        [(r["path"], r["status"], ";".join(r["genres"])) for r in doc["files"]]
    assert [json.loads(r["detail"])["top"] for r in rows_csv] == [r["top"] for r in doc["files"]]

    # HTML: a table of its own, each path escaped as in the other tables
    page = tmp_path / "files.html"
    assert run_cli(lib.settings, "report", "--files", "--format", "html", "-o", str(page)).returncode == 0
    parsed = _Page()
    parsed.feed(page.read_text(encoding="utf-8"))
    html_rows = parsed.rows("t-files")
    assert [r[0] for r in html_rows] == [report.printable(r["path"]) for r in doc["files"]]
    for hr, r in zip(html_rows, doc["files"]):
        assert hr[1] == {"tagged": "tagged", "low_confidence": "low confidence", "failed": "failed"}[r["status"]]
        if r["status"] == "low_confidence":
            assert hr[4] == " ".join(f"{g} {p:.2f}" for g, p in r["top"])
    assert '<b>&amp;' not in page.read_text(encoding="utf-8")


def test_since_reads_dates_and_datetimes():
    assert report.parse_since("2024-05-01T18:30:00+02:00") == datetime(2024, 5, 1, 16, 30, tzinfo=timezone.utc)
    assert report.parse_since("2024-05-01T18:30Z") == datetime(2024, 5, 1, 18, 30, tzinfo=timezone.utc)
    local_midnight = datetime(2024, 5, 1).astimezone()
    assert report.parse_since("2024-05-01") == local_midnight.astimezone(timezone.utc)
    with pytest.raises(ValueError, match="not an ISO date"):
        report.parse_since("05/01/2024")


# ---------------------------------------------------------------- the HTML page in a browser


class _Page(HTMLParser):
    """The visible text of a DOM Chromium dumped, and the rows of each table by id."""

    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, bool]] = []  # (tag, hidden)
        self.text: list[str] = []
        self.tables: dict[str, list[tuple[bool, list[str]]]] = {}
        self.table = None
        self.cells: list[str] | None = None

    def hidden(self) -> bool:
        return any(h for _, h in self.stack)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag in self.VOID:
            return
        self.stack.append((tag, tag in ("script", "style", "title") or "hidden" in a))
        if tag == "table":
            self.table = self.tables.setdefault(a.get("id", ""), [])
        elif tag == "tr" and self.table is not None:
            self.table.append(("hidden" in a, []))
        elif tag in ("td", "th") and self.table is not None:
            self.table[-1][1].append("")

    def handle_endtag(self, tag):
        while self.stack:
            if self.stack.pop()[0] == tag:
                break
        if tag == "table":
            self.table = None

    def handle_data(self, data):
        if self.table is not None and self.table and self.table[-1][1] and any(t in ("td", "th") for t, _ in self.stack):
            self.table[-1][1][-1] += data
        if not self.hidden():
            self.text.append(data)

    def visible(self) -> str:
        return " ".join(" ".join(self.text).split())

    def rows(self, table_id: str, shown_only: bool = True) -> list[list[str]]:
        return [[" ".join(c.split()) for c in cells] for hidden, cells in self.tables[table_id][1:]
                if not (shown_only and hidden)]


def _chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.fail("chromium is not installed (Debian: apt-get install chromium; `make system-test` installs it)")
    return subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                           "--disable-background-networking", "--disable-component-update", "--disable-sync",
                           "--disable-extensions", f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=120)


def _dom(page: Path, profile: Path) -> _Page:
    out = _chromium("--dump-dom", page.as_uri(), profile=profile)
    assert out.returncode == 0 and "</html>" in out.stdout, out.stderr[-2000:]
    parsed = _Page()
    parsed.feed(out.stdout)
    return parsed


# what a user does: sort the low-confidence table by confidence (twice: highest first), filter the failed one
_INTERACT = """<script>
var th=[].find.call(document.querySelectorAll('#t-low th'),function(h){return h.textContent==='confidence';});
th.click(); th.click();
var box=document.querySelector('input[data-filter="t-failed"]'); box.value='ZERO';
box.dispatchEvent(new Event('input'));
</script></body>"""


def test_html_page_renders_in_chromium(report_library, tmp_path):
    lib = report_library
    doc = _json(lib)
    page = tmp_path / "report.html"
    out = run_cli(lib.settings, "report", "--format", "html", "--output", str(page))
    assert out.returncode == 0, out.stderr
    source = page.read_text(encoding="utf-8")
    # self-contained: nothing to fetch (the SVG namespace is a name, not a request)
    assert source.count("http") == source.count('xmlns="http://www.w3.org/2000/svg"')
    assert " src=" not in source and "<link" not in source and "@import" not in source
    assert '<b>&amp;' not in source  # the file name's markup is escaped, never live
    assert source.count("<svg") == 3  # genres, confidence, history

    dom = _dom(page, tmp_path / "profile")
    text = dom.visible()
    for title in ("Summary", "Genres", "Confidence", "History", "Low confidence (no tag written)", "Failed",
                  "Tag changes"):
        assert title in text
    latest = doc["summary"]["latest_scan"]
    assert f"LATEST SCAN #{latest['id']}".lower() in text.lower()
    assert f"mean {doc['confidence']['mean']:.2f}" in text
    for g in doc["genres"]:
        assert f"{g['genre']} {g['files']} · {100 * g['share']:.1f}%" in text  # the bar's label and value
    # every path as it really is: quotes, markup characters, the newline shown as \n, U+FFFD for a bad byte
    quoted = next(p for p in lib.tagged if '"' in p)
    assert quoted in text and '"quoted" <b>&amp; more.mp3' in quoted
    assert next(p for p in lib.tagged if "\n" in p).replace("\n", "\\n") in text
    assert "m\ufffdtal caf\ufffd.mp3" in text

    scans = dom.rows("t-scans")
    assert [r[0] for r in scans] == [f"#{i}" for i in reversed(lib.scan_ids)]  # newest first
    assert [r[6] for r in scans] == [str(sc["tagged"]) for sc in reversed(doc["scans"])]
    low = dom.rows("t-low")
    assert [(r[0], r[1], r[2]) for r in low] == [(p["path"], p["genre"], f"{p['confidence']:.2f}")
                                                 for p in doc["low_confidence"]]
    for row, p in zip(low, doc["low_confidence"]):
        assert row[3] == " ".join(f"{g} {q:.2f}" for g, q in p["top"])
    failed = dom.rows("t-failed")
    assert [(r[0], r[2]) for r in failed] == [(p["path"], p["reason"]) for p in doc["failed"]]
    assert len(dom.rows("t-changes")) == len(doc["changes"])

    # the page's own script at work: sorted by confidence, highest first; the filter hides rows
    page2 = tmp_path / "interact.html"
    page2.write_text(source.replace("</body>", _INTERACT), encoding="utf-8")
    dom2 = _dom(page2, tmp_path / "profile")
    assert [r[2] for r in dom2.rows("t-low")] == sorted((f"{p['confidence']:.2f}" for p in doc["low_confidence"]),
                                                        reverse=True)
    assert [r[0] for r in dom2.rows("t-failed")] == [p["path"] for p in doc["failed"] if "zero" in p["path"]]
    assert len(dom2.rows("t-failed", shown_only=False)) == 2
    assert "1 matching of 2 rows" in dom2.visible()

    shot = tmp_path / "report.png"
    out = _chromium(f"--screenshot={shot}", "--window-size=1280,2000", page.as_uri(), profile=tmp_path / "profile")
    assert out.returncode == 0 and shot.is_file(), out.stderr[-2000:]
    head = shot.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", head[16:24]) == (1280, 2000)


def test_empty_database_renders_everywhere(settings, tmp_path):
    scan.prepare_database(settings)
    doc = report.collect(settings)
    assert doc["scans"] == [] and doc["summary"]["latest_scan"] is None and doc["confidence"]["predictions"] == 0
    assert "(no scans yet)" in report.render_table(doc)
    assert report.render_csv(doc).splitlines()[0] == ",".join(report.CSV_HEADER)
    assert json.loads(report.render_json(doc)) == doc
    page = tmp_path / "empty.html"
    out = run_cli(settings, "report", "--format", "html", "-o", str(page))
    assert out.returncode == 0, out.stderr
    text = _dom(page, tmp_path / "profile").visible()
    assert "No scans yet" in text and "No genres yet" in text and "No failed files" in text


# ---------------------------------------------------------------- a large library


def _big_database(settings: Settings, n_files: int, n_scans: int) -> None:
    """Rows as the pipeline writes them, inserted in bulk: ``n_scans`` scans over ``n_files`` files."""
    ensure_schema(settings.database_url, auto_upgrade=True)  # what `tagger db upgrade` does on a server
    genres = ["blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop", "reggae", "rock"]
    t0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
    with session_scope(settings.database_url) as db:
        db.execute(insert(s.Scan), [
            {"id": k + 1, "started_at": t0 + timedelta(days=k), "finished_at": t0 + timedelta(days=k, hours=1),
             "status": "done", "roots": ["/music"], "options": {"min_confidence": 0.3}, "host": "h",
             "found": n_files, "skipped": 0, "queued": n_files} for k in range(n_scans)])
        db.execute(insert(s.File), [
            {"id": i + 1, "raw_path": f"/music/{i:06d}.mp3".encode(), "path": f"/music/{i:06d}.mp3", "format": "mp3",
             "size": 1, "mtime_ns": 1, "genre": genres[i % 10] if i % 7 else None,
             "confidence": 0.9 if i % 7 else None} for i in range(n_files)])
        analyses, predictions = [], []
        for k in range(n_scans):
            for i in range(n_files):
                aid = k * n_files + i + 1
                status = s.FAILED if i % 13 == 0 else s.LOW_CONFIDENCE if i % 7 == 0 else s.TAGGED
                analyses.append({"id": aid, "scan_id": k + 1, "file_id": i + 1, "status": status, "size": 1,
                                 "mtime_ns": 1, "error_kind": "unsupported_format" if status == s.FAILED else None,
                                 "error": "empty file (0 bytes)" if status == s.FAILED else None,
                                 "finished_at": t0 + timedelta(days=k)})
                if status != s.FAILED:
                    conf = ((i * 37) % 100) / 100
                    predictions.append({"analysis_id": aid, "file_id": i + 1, "genre": genres[i % 10],
                                        "genres": [genres[i % 10]], "confidence": conf,
                                        "top": [[genres[i % 10], conf], ["rock", 0.1], ["pop", 0.05]],
                                        "model": "m", "model_version": "1", "decided_by": "m"})
        db.execute(insert(s.Analysis), analyses)
        db.execute(insert(s.Prediction), predictions)


def test_large_library_report_says_when_it_cuts(settings, tmp_path):
    # speed is measured in bench/, not asserted here; this checks counts and truncation at size
    n_files, n_scans = 10000, 3
    _big_database(settings, n_files, n_scans)
    doc = report.collect(settings, limit=100)
    failed_files = len(range(0, n_files, 13))
    assert doc["totals"]["failed"] == failed_files and len(doc["failed"]) == 100
    assert doc["totals"]["low_confidence"] == sum(1 for i in range(n_files) if i % 7 == 0 and i % 13)
    assert doc["confidence"]["predictions"] == n_files - failed_files  # one per file, the latest
    assert [sc["failed"] for sc in doc["scans"]] == [failed_files] * n_scans
    assert set(doc["truncated"]) == {"failed", "low_confidence"}
    html = report.render_html(doc)
    assert len(html) < 400_000 and "showing 100 of" in html


def test_postgresql_and_sqlite_give_the_same_report(pg_url, tmp_path):
    docs = []
    for url in (pg_url, f"sqlite:///{tmp_path / 'same.sqlite3'}"):
        settings = Settings(db_url=url, data_dir=tmp_path)
        _big_database(settings, 700, 2)
        for filters in (Filters(), Filters(since=datetime(2024, 1, 2, tzinfo=timezone.utc), genre="JAZZ"),
                        Filters(scan_id=1, lists=("failed",))):
            doc = report.collect(settings, limit=40, filters=filters)
            doc["report"].pop("generated_at")
            docs.append(doc)
    pg, lite = docs[:3], docs[3:]
    assert pg == lite
    assert pg[0]["totals"]["failed"] == len(range(0, 700, 13)) and pg[1]["genres"][0]["genre"] == "jazz"


def test_colour_only_decorates_the_table(report_library):
    doc = report.collect(report_library.settings)
    plain, coloured = report.render_table(doc), report.render_table(doc, color=True)
    assert "\x1b[" in coloured and "\x1b[" not in plain
    assert click.unstyle(coloured) == plain  # same text, same alignment
