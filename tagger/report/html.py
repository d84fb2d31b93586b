"""The report as one self-contained HTML page: inline CSS, inline SVG charts, a little vanilla JS.

Renders the document ``tagger.report.collect.collect`` returns and nothing else, so the page
carries the same facts as the table, JSON and CSV. No network: no fonts, scripts or
images are fetched. Every string from the database goes through ``_e`` (paths may
hold quotes, ``<``, ``&``, newlines, or U+FFFD where a name was not UTF-8).
"""
from __future__ import annotations

import html
from typing import Any, Iterable, Optional

from tagger import __version__
from tagger.report.collect import ALL_LISTS, LISTS
from tagger.report.words import OUTCOME_WORDS, SECTION_TITLES, duration as _duration, printable, truncation_notes

#: outcome of each analysed or skipped file in a scan: (document key, label, CSS class)
OUTCOMES = (("tagged", "tagged", "tagged"), ("unchanged", "unchanged", "unchanged"),
            ("low_confidence", "low confidence", "low"), ("kept_user_genre", "kept user genre", "kept"),
            ("dry_run_predictions", "dry run", "dry"), ("failed", "failed", "failed"), ("pending", "pending", "pending"))
#: the history chart shows at most this many of the latest scans (the table shows them all)
CHART_SCANS = 40


def _e(value: Any) -> str:
    """Text for HTML/SVG content or an attribute: control characters made visible, markup escaped."""
    return html.escape(printable("" if value is None else value), quote=True)


def _n(x: Optional[float], fmt: str = "{:.2f}") -> str:
    return "–" if x is None else fmt.format(x)


def _when(iso: Optional[str]) -> str:
    # "2024-05-01T18:30:02+00:00" → "2024-05-01 18:30 UTC": short, and says which clock
    return "–" if not iso else iso[:16].replace("T", " ") + (" UTC" if iso.endswith("+00:00") else "")




# ---------------------------------------------------------------- charts (inline SVG)


def _svg(width: int, height: int, body: Iterable[str], label: str) -> str:
    # drawn at its natural size, scaled down only when the column is narrower (text stays legible)
    return (f'<svg class="chart" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
            f'aria-label="{_e(label)}" xmlns="http://www.w3.org/2000/svg">{"".join(body)}</svg>')


def _axis(v: int) -> tuple[int, int]:
    """A round axis maximum ≥ v (1, 2, 5 × 10^k) and a number of whole-number gridline steps."""
    v, k = max(v, 1), 1
    while True:
        for m in (1, 2, 5):
            if m * k >= v:
                top = m * k
                return top, (top if top < 5 else 5 if top % 5 == 0 else 4)
        k *= 10


def _grid(ymax: int, steps: int, left: int, right: float, top_pad: int, plot_h: float) -> list[str]:
    out = []
    for k in range(steps + 1):
        y = top_pad + plot_h - plot_h * k / steps
        out.append(f'<line class="grid" x1="{left}" x2="{right}" y1="{y:.1f}" y2="{y:.1f}"/>'
                   f'<text class="tick" x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{ymax * k // steps}</text>')
    return out


def genre_chart(genres: list[dict[str, Any]], max_rows: int = 25) -> str:
    """Horizontal bars, one per genre, largest first; the rest folded into one "other" row."""
    rows = genres[:max_rows]
    if len(genres) > max_rows:
        rest = genres[max_rows:]
        rows = rows + [{"genre": f"{len(rest)} other genres", "files": sum(g["files"] for g in rest),
                        "share": sum(g["share"] for g in rest), "other": True}]
    width, label_w, bar_h, gap = 540, 140, 20, 6
    top = max(g["files"] for g in rows)
    height = len(rows) * (bar_h + gap) + 4
    span = width - label_w - 110
    body = []
    for i, g in enumerate(rows):
        y = i * (bar_h + gap) + 2
        w = max(2.0, span * g["files"] / top)
        name = g["genre"] if len(g["genre"]) <= 20 else g["genre"][:19] + "…"
        body.append(
            f'<g class="bar-row"><title>{_e(g["genre"])}: {g["files"]} files ({100 * g["share"]:.1f}%)</title>'
            f'<text class="lbl" x="{label_w - 8}" y="{y + bar_h * 0.72:.1f}" text-anchor="end">{_e(name)}</text>'
            f'<rect class="{"bar-other" if g.get("other") else "bar"}" x="{label_w}" y="{y}" width="{w:.1f}" '
            f'height="{bar_h}" rx="3"/>'
            f'<text class="val" x="{label_w + w + 6:.1f}" y="{y + bar_h * 0.72:.1f}">{g["files"]} '
            f'<tspan class="muted">· {100 * g["share"]:.1f}%</tspan></text></g>')
    return _svg(width, height, body, "genre distribution")


def confidence_chart(conf: dict[str, Any], threshold: Optional[float]) -> str:
    """Histogram of confidence in ten bins, bins under the write threshold shaded as low."""
    width, height, left, bottom, top_pad = 540, 262, 44, 34, 30
    plot_w, plot_h = width - left - 12, height - bottom - top_pad
    ymax, steps = _axis(max(b["files"] for b in conf["bins"]))
    bw = plot_w / len(conf["bins"])
    body = _grid(ymax, steps, left, width - 12, top_pad, plot_h)
    for i, b in enumerate(conf["bins"]):
        h = plot_h * b["files"] / ymax
        x = left + i * bw
        low = threshold is not None and b["to"] <= threshold + 1e-9
        body.append(f'<g><title>{b["from"]:.1f}–{b["to"]:.1f}: {b["files"]} files</title>'
                    f'<rect class="{"bar-low" if low else "bar"}" x="{x + 3:.1f}" y="{top_pad + plot_h - h:.1f}" '
                    f'width="{bw - 6:.1f}" height="{max(h, 0):.1f}" rx="2"/>'
                    + (f'<text class="val" x="{x + bw / 2:.1f}" y="{top_pad + plot_h - h - 4:.1f}" '
                       f'text-anchor="middle">{b["files"]}</text>' if b["files"] else "") + "</g>")
    for i in range(len(conf["bins"]) + 1):
        x = left + i * bw
        body.append(f'<text class="tick" x="{x:.1f}" y="{height - bottom + 16}" text-anchor="middle">'
                    f'{i / len(conf["bins"]):.1f}</text>')
    body.append(f'<line class="axis" x1="{left}" x2="{width - 12}" y1="{top_pad + plot_h}" y2="{top_pad + plot_h}"/>')
    body.append(f'<text class="tick" x="{left + plot_w / 2:.1f}" y="{height - 2}" text-anchor="middle">'
                f'confidence of the top genre</text>')
    if threshold:  # 0 would be a line on the axis that says nothing
        x = left + plot_w * threshold
        body.append(f'<line class="threshold" x1="{x:.1f}" x2="{x:.1f}" y1="{top_pad - 24}" y2="{top_pad + plot_h}"/>'
                    f'<text class="tick thr" x="{x + 4:.1f}" y="{top_pad - 14}">tags written from {threshold:g}</text>')
    return _svg(width, height, body, "confidence histogram")


def history_chart(scans: list[dict[str, Any]]) -> str:
    """One stacked bar per scan: what happened to each file it found."""
    scans = scans[-CHART_SCANS:]
    width, height, left, bottom, top_pad = 1100, 230, 44, 40, 12
    plot_w, plot_h = width - left - 12, height - bottom - top_pad
    ymax, steps = _axis(max(max(sum(sc[k] for k, _, _ in OUTCOMES), sc["found"]) for sc in scans))
    slot = plot_w / max(len(scans), 1)
    bw = min(44.0, slot * 0.7)
    body = _grid(ymax, steps, left, width - 12, top_pad, plot_h)
    every = max(1, len(scans) // 12)  # keep the x labels from overlapping
    for i, sc in enumerate(scans):
        x = left + i * slot + (slot - bw) / 2
        y = top_pad + plot_h
        tip = f"scan #{sc['id']} {_when(sc['started_at'])}: " + ", ".join(
            f"{label} {sc[key]}" for key, label, _ in OUTCOMES if sc[key])
        parts = []
        for key, _label, cls in OUTCOMES:
            h = plot_h * sc[key] / ymax
            if h > 0:
                y -= h
                parts.append(f'<rect class="s-{cls}" x="{x:.1f}" y="{y:.1f}" width="{bw:.1f}" height="{h:.1f}"/>')
        body.append(f'<g><title>{_e(tip)}</title>{"".join(parts)}</g>')
        if i % every == 0:
            cx = x + bw / 2
            body.append(f'<text class="tick" x="{cx:.1f}" y="{top_pad + plot_h + 15}" text-anchor="middle">'
                        f'#{sc["id"]}</text><text class="tick muted" x="{cx:.1f}" y="{top_pad + plot_h + 29}" '
                        f'text-anchor="middle">{_e((sc["started_at"] or "")[5:10])}</text>')
    body.append(f'<line class="axis" x1="{left}" x2="{width - 12}" y1="{top_pad + plot_h}" y2="{top_pad + plot_h}"/>')
    return _svg(width, height, body, "scan history")


def _legend() -> str:
    return '<ul class="legend">' + "".join(
        f'<li><span class="sw s-{cls}"></span>{label}</li>' for _, label, cls in OUTCOMES) + "</ul>"


# ---------------------------------------------------------------- tables


def _table(tid: str, headers: list[tuple[str, str]], rows: list[str], empty: str, note: Optional[str],
           total: int) -> str:
    """A sortable, searchable table: ``headers`` are (label, "num" | "text")."""
    if not rows:
        return f'<p class="empty">{_e(empty)}</p>'
    head = "".join(f'<th scope="col" data-type="{t}" tabindex="0">{_e(h)}</th>' for h, t in headers)
    shown = len(rows)
    count = f"{shown} rows" if shown == total else f"{shown} of {total} rows"
    return (f'<div class="tools"><input type="search" placeholder="Filter these rows…" data-filter="{tid}" '
            f'aria-label="Filter"><span class="count" data-count="{tid}" data-total="{shown}">{count}</span></div>'
            + (f'<p class="note">{_e(note)}</p>' if note else "")
            + f'<div class="scroll"><table class="data {tid}" id="{tid}"><thead><tr>{head}</tr></thead>'
              f'<tbody>{"".join(rows)}</tbody></table></div>')


def _td(text: Any, sort: Any = None, cls: str = "") -> str:
    attrs = (f' data-v="{_e(sort)}"' if sort is not None else "") + (f' class="{cls}"' if cls else "")
    return f"<td{attrs}>{_e(text)}</td>"


def _path_td(path: str) -> str:
    return f'<td class="path" title="{_e(path)}">{_e(path)}</td>'


def _meter(p: Optional[float], low: bool = False) -> str:
    if p is None:
        return "–"
    return (f'<span class="meter{" low" if low else ""}"><span style="width:{100 * p:.0f}%"></span></span>'
            f'<span class="num">{p:.2f}</span>')


def _genres(values: list[str]) -> str:
    return " ".join(f'<span class="chip">{_e(v)}</span>' for v in values) or '<span class="muted">–</span>'


def scans_table(doc: dict[str, Any], note: Optional[str]) -> str:
    rows = []
    for sc in reversed(doc["scans"]):  # newest first
        rows.append(
            "<tr>" + _td(f"#{sc['id']}", sc["id"]) + _td(_when(sc["started_at"]), sc["started_at"], "nw")
            + _td(_duration(sc["seconds"]), sc["seconds"] if sc["seconds"] is not None else -1, "nw")
            + f'<td><span class="badge st-{_e(sc["status"])}">{_e(sc["status"])}</span>'
            + (' <span class="badge st-dry">dry run</span>' if sc["dry_run"] else "") + "</td>"
            + "".join(_td(sc[k], sc[k], "n" + (f" c-{cls}" if sc[k] else ""))
                      for k, cls in (("found", ""), ("unchanged", "unchanged"), ("tagged", "tagged"),
                                     ("low_confidence", "low"), ("kept_user_genre", "kept"),
                                     ("dry_run_predictions", "dry"), ("failed", "failed"), ("tags_written", "")))
            + _td(_n(sc["mean_confidence"]), sc["mean_confidence"] if sc["mean_confidence"] is not None else -1, "n")
            + f'<td class="roots">{"<br>".join(_e(r) for r in sc["roots"])}</td></tr>')
    headers = [("scan", "num"), ("started", "text"), ("took", "num"), ("status", "text"), ("found", "num"),
               ("unchanged", "num"), ("tagged", "num"), ("low", "num"), ("kept", "num"), ("dry run", "num"),
               ("failed", "num"), ("written", "num"), ("conf.", "num"), ("roots", "text")]
    return _table("t-scans", headers, rows, "No scans yet: run tagger scan PATH.", note, doc["totals"]["scans"])


def _chips(top: list) -> str:
    """A prediction's candidates, a chip each."""
    return " ".join(f'<span class="chip">{_e(g)} <b>{p:.2f}</b></span>' for g, p in top)


def low_table(doc: dict[str, Any], note: Optional[str]) -> str:
    rows = []
    for r in doc["low_confidence"]:
        top = _e(r["reason"]) if r["reason"] else _chips(r["top"])
        rows.append("<tr>" + _path_td(r["path"]) + _td(r["genre"])
                    + f'<td data-v="{r["confidence"]}">{_meter(r["confidence"], True)}</td>'
                    + f'<td>{top}</td>' + _td(f"#{r['scan_id']}", r["scan_id"]) + "</tr>")
    return _table("t-low", [("file", "text"), ("best guess", "text"), ("confidence", "num"), ("top 3 / reason", "text"),
                            ("scan", "num")], rows,
                  "No low-confidence files: every prediction cleared the threshold.", note,
                  doc["totals"].get("low_confidence", 0))


def failed_table(doc: dict[str, Any], note: Optional[str]) -> str:
    rows = ["<tr>" + _path_td(r["path"]) + f'<td><span class="badge st-failed">{_e(r["kind"])}</span></td>'
            + _td(r["reason"], cls="reason") + _td(r["attempts"], r["attempts"], "n")
            + _td(f"#{r['scan_id']}", r["scan_id"]) + "</tr>" for r in doc["failed"]]
    return _table("t-failed", [("file", "text"), ("kind", "text"), ("reason", "text"), ("attempts", "num"),
                               ("scan", "num")], rows, "No failed files.", note, doc["totals"].get("failed", 0))


def changes_table(doc: dict[str, Any], note: Optional[str]) -> str:
    rows = ["<tr>" + _td(_when(r["at"]), r["at"]) + _td(r["action"]) + _path_td(r["path"])
            + f"<td>{_genres(r['before'])}</td><td>{_genres(r['after'])}</td>"
            + f'<td><span class="badge st-{_e(r["state"])}">{_e(r["state"])}</span></td>'
            + _td(f"#{r['scan_id']}" if r["scan_id"] is not None else "–", r["scan_id"] or 0) + "</tr>"
            for r in doc["changes"]]
    return _table("t-changes", [("when", "text"), ("action", "text"), ("file", "text"), ("genre before", "text"),
                                ("genre after", "text"), ("state", "text"), ("scan", "num")], rows,
                  "No tags changed.", note, doc["totals"].get("changes", 0))


#: a file's outcome → the CSS class its badge takes
_OUTCOME_CLASS = {"tagged": "tagged", "kept": "kept", "low_confidence": "low", "dry_run": "dry", "failed": "failed"}


def files_table(doc: dict[str, Any], note: Optional[str]) -> str:
    rows = []
    for r in doc["files"]:
        if r["status"] == "low_confidence":
            extra = _e(r["reason"]) if r["reason"] else _chips(r["top"])
        elif r["status"] == "failed":
            extra = _e((r["error"] or {}).get("reason") or "")
        elif r["status"] in ("kept", "dry_run") and r["predicted"]:
            extra = f'<span class="muted">predicted</span> {_e(r["predicted"])}'
        else:
            extra = ""
        rows.append("<tr>" + _path_td(r["path"])
                    + f'<td><span class="badge o-{_OUTCOME_CLASS.get(r["status"], "pending")}">'
                    + f'{_e(OUTCOME_WORDS.get(r["status"], r["status"]))}</span></td>'
                    + f"<td>{_genres(r['genres'])}</td>"
                    + f'<td data-v="{r["confidence"] if r["confidence"] is not None else -1}">'
                    + f'{_meter(r["confidence"], r["status"] == "low_confidence")}</td>'
                    + f'<td class="reason">{extra}</td>' + _td(f"#{r['scan_id']}", r["scan_id"]) + "</tr>")
    return _table("t-files", [("file", "text"), ("outcome", "text"), ("genre", "text"), ("confidence", "num"),
                              ("candidates (low) / reason", "text"), ("scan", "num")], rows,
                  "No files analysed.", note, doc["totals"].get("files", 0))


# ---------------------------------------------------------------- the page


def _card(label: str, value: Any, cls: str = "", sub: str = "") -> str:
    return (f'<div class="card {cls}"><div class="k">{_e(label)}</div><div class="v">{_e(value)}</div>'
            + (f'<div class="sub">{_e(sub)}</div>' if sub else "") + "</div>")


def summary(doc: dict[str, Any]) -> str:
    latest, lib, conf = doc["summary"]["latest_scan"], doc["summary"]["library"], doc["confidence"]
    cards = []
    if latest:
        cards += [
            _card("latest scan", f"#{latest['id']}", "wide",
                  f"{_when(latest['started_at'])} · {_duration(latest['seconds'])} · {latest['status']}"
                  + (" · dry run" if latest["dry_run"] else "")),
            _card("found", latest["found"]), _card("unchanged", latest["unchanged"], "c-unchanged"),
            _card("tagged", latest["tagged"], "c-tagged"), _card("low confidence", latest["low_confidence"], "c-low"),
            _card("kept user genre", latest["kept_user_genre"], "c-kept"),
            _card("failed", latest["failed"], "c-failed" if latest["failed"] else ""),
        ]
        if latest["pending"]:
            cards.append(_card("pending", latest["pending"], "c-pending"))
    cards += [_card("files in library", lib["files"], "lib", f"{lib['tagged_files']} tagged by tagger"),
              _card("genres", lib["genres"], "lib"),
              _card("mean confidence", _n(conf["mean"]), "lib", f"{conf['predictions']} predictions")]
    return f'<div class="cards">{"".join(cards)}</div>'


def _filters(doc: dict[str, Any]) -> str:
    f = doc["report"]["filters"]
    chips = [f"{k} {v}" for k, v in (("scan", f["scan_id"]), ("since", f["since"]), ("genre", f["genre"]))
             if v is not None]
    narrowed = [x for x in f["lists"] if x in LISTS]  # the files list is an addition, not a narrowing
    if narrowed != list(LISTS):
        chips.append("only " + " + ".join(SECTION_TITLES[x].split(" (")[0].lower() for x in narrowed or f["lists"]))
    return "".join(f'<span class="chip filter">{_e(c)}</span>' for c in chips)


def render(doc: dict[str, Any]) -> str:
    """The whole page as one string."""
    notes = truncation_notes(doc)
    lists = doc["report"]["filters"]["lists"]
    basis = ("each file's genre: written by tagger, or the user's, kept" if doc["report"]["genres_basis"] == "library"
             else "each file's latest prediction in the scans shown, written or not")
    conf = doc["confidence"]
    sections = [
        f'<section id="summary"><h2>Summary</h2>{summary(doc)}</section>',
        '<div class="two">'
        f'<section id="genres"><h2>Genres <small>{_e(basis)}</small></h2>'
        + (genre_chart(doc["genres"]) if doc["genres"] else '<p class="empty">No genres yet.</p>') + "</section>"
        f'<section id="confidence"><h2>Confidence <small>{conf["predictions"]} predictions, '
        f'mean {_n(conf["mean"])}</small></h2>'
        + (confidence_chart(conf, doc["report"]["min_confidence"]) if conf["predictions"]
           else '<p class="empty">No predictions yet.</p>') + "</section></div>",
        '<section id="history"><h2>History <small>what each scan did with the files it found</small></h2>'
        + ((history_chart(doc["scans"]) + _legend()) if doc["scans"] else "")
        + scans_table(doc, notes.get("scans")) + "</section>",
    ]
    builders = {"low_confidence": low_table, "failed": failed_table, "changes": changes_table, "files": files_table}
    for name in ALL_LISTS:
        if name in lists:
            total = doc["totals"].get(name, 0)
            sections.append(f'<section id="{name.replace("_", "-")}"><h2>{_e(SECTION_TITLES[name])} '
                            f'<small>{total}</small></h2>{builders[name](doc, notes.get(name))}</section>')
    nav = "".join(f'<a href="#{name.replace("_", "-")}">{_e(SECTION_TITLES[name].split(" (")[0])}</a>'
                  for name in ALL_LISTS if name in lists)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<title>tagger report · {_e(_when(doc["report"]["generated_at"]))}</title>
<style>{CSS}</style></head>
<body><header><div class="wrap"><h1>tagger <span>report</span></h1>
<p class="meta">generated {_e(_when(doc["report"]["generated_at"]))} · tagger {_e(__version__)} {_filters(doc)}</p>
<nav><a href="#summary">Summary</a><a href="#genres">Genres</a><a href="#confidence">Confidence</a>
<a href="#history">History</a>{nav}</nav></div></header>
<main class="wrap">{"".join(sections)}</main>
<footer class="wrap">One self-contained file: nothing here is fetched from the network. Click a column title to
sort; type in a filter box to search a table.</footer>
<script>{JS}</script></body></html>
"""


CSS = """
:root{--bg:#f7f7f5;--panel:#fff;--fg:#1d1f23;--muted:#6b7078;--line:#e3e3df;--accent:#3b6fd8;--accent2:#9db7ee;
--tagged:#2f9e5b;--unchanged:#b9bdc4;--low:#e0a326;--kept:#4c8fd6;--dry:#9a6bd1;--failed:#d9463b;--pending:#d7dbe0;
--chip:#eef0f3;--shadow:0 1px 2px rgba(0,0,0,.06),0 2px 8px rgba(0,0,0,.04)}
@media (prefers-color-scheme:dark){:root{--bg:#131519;--panel:#1c1f25;--fg:#e6e8eb;--muted:#9aa1ab;--line:#2e333b;
--accent:#6e9bf5;--accent2:#3d5a94;--tagged:#46c079;--unchanged:#5c636e;--low:#f0b743;--kept:#6aa8ec;--dry:#b48ae6;
--failed:#f0675c;--pending:#3a4049;--chip:#272b33;--shadow:none}}
*{box-sizing:border-box}
html{font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;background:var(--bg);
color:var(--fg);-webkit-text-size-adjust:100%}
body{margin:0}
.wrap{max-width:1180px;margin:0 auto;padding:0 20px}
header{background:var(--panel);border-bottom:1px solid var(--line);padding:18px 0 0;margin-bottom:22px}
h1{margin:0;font-size:1.6rem;letter-spacing:-.02em}h1 span{color:var(--accent);font-weight:500}
.meta{margin:.2rem 0 .6rem;color:var(--muted);font-size:.9rem}
nav{display:flex;gap:18px;flex-wrap:wrap}nav a{color:var(--muted);text-decoration:none;padding:6px 0 10px;
border-bottom:2px solid transparent;font-size:.92rem}nav a:hover{color:var(--fg);border-color:var(--accent)}
section{background:var(--panel);border:1px solid var(--line);border-radius:10px;padding:16px 18px 18px;
margin:0 0 20px;box-shadow:var(--shadow);min-width:0}
h2{font-size:1.1rem;margin:0 0 12px;display:flex;align-items:baseline;gap:10px;flex-wrap:wrap}
h2 small{font-weight:400;color:var(--muted);font-size:.85rem}
.two{display:grid;grid-template-columns:1fr 1fr;gap:20px}@media (max-width:900px){.two{grid-template-columns:1fr}}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(140px,1fr));gap:12px}
.card{border:1px solid var(--line);border-radius:8px;padding:10px 12px;border-top:3px solid var(--line)}
.card.wide{grid-column:span 2}.card .k{color:var(--muted);font-size:.8rem;text-transform:uppercase;letter-spacing:.04em}
.card .v{font-size:1.7rem;font-weight:650;font-variant-numeric:tabular-nums}.card .sub{color:var(--muted);font-size:.85rem}
.card.c-tagged{border-top-color:var(--tagged)}.card.c-low{border-top-color:var(--low)}
.card.c-failed{border-top-color:var(--failed)}.card.c-kept{border-top-color:var(--kept)}
.card.c-unchanged{border-top-color:var(--unchanged)}.card.c-pending{border-top-color:var(--pending)}
.card.lib{border-top-color:var(--accent)}
svg.chart{max-width:100%;height:auto;display:block;overflow:visible}
svg .lbl,svg .val,svg .tick{fill:var(--fg);font-size:12px}svg .tick{fill:var(--muted);font-size:11px}
svg .muted{fill:var(--muted)}svg .bar{fill:var(--accent)}svg .bar-other{fill:var(--accent2)}svg .bar-low{fill:var(--low)}
svg .grid{stroke:var(--line);stroke-width:1}svg .axis{stroke:var(--muted);stroke-width:1}
svg .threshold{stroke:var(--failed);stroke-width:1.5;stroke-dasharray:4 3}svg .thr{fill:var(--failed)}
svg g:hover rect{opacity:.8}
.s-tagged{fill:var(--tagged);background:var(--tagged)}.s-unchanged{fill:var(--unchanged);background:var(--unchanged)}
.s-low{fill:var(--low);background:var(--low)}.s-kept{fill:var(--kept);background:var(--kept)}
.s-dry{fill:var(--dry);background:var(--dry)}.s-failed{fill:var(--failed);background:var(--failed)}
.s-pending{fill:var(--pending);background:var(--pending)}
.legend{list-style:none;display:flex;flex-wrap:wrap;gap:14px;padding:0;margin:8px 0 14px;font-size:.85rem;
color:var(--muted)}.legend .sw{display:inline-block;width:11px;height:11px;border-radius:2px;margin-right:6px;
vertical-align:-1px}
.tools{display:flex;align-items:center;gap:12px;margin:0 0 8px}
input[type=search]{font:inherit;font-size:.92rem;padding:6px 10px;border:1px solid var(--line);border-radius:6px;
background:var(--bg);color:var(--fg);width:min(360px,100%)}input[type=search]:focus{outline:2px solid var(--accent);
border-color:transparent}
.count,.note,.empty{color:var(--muted);font-size:.88rem}.note{margin:0 0 8px}.empty{margin:4px 0}
.scroll{overflow-x:auto}
table.data{border-collapse:collapse;width:100%;font-size:.9rem}
table.data th{text-align:left;font-weight:600;color:var(--muted);font-size:.8rem;text-transform:uppercase;
letter-spacing:.03em;padding:8px 10px;border-bottom:2px solid var(--line);cursor:pointer;user-select:none;
white-space:nowrap;position:sticky;top:0;background:var(--panel)}
table.data th:hover{color:var(--fg)}table.data th[aria-sort=ascending]::after{content:" ▲"}
table.data th[aria-sort=descending]::after{content:" ▼"}
table.data td{padding:7px 10px;border-bottom:1px solid var(--line);vertical-align:top}
table.data tbody tr:hover{background:var(--chip)}
td.path{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.84rem;word-break:break-all;
min-width:16rem}
td.roots{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.8rem;
word-break:break-all;min-width:8rem}td.nw{white-space:nowrap}
table.t-scans th,table.t-scans td{padding:7px 6px}
td.n{text-align:right;font-variant-numeric:tabular-nums}td.reason{max-width:28rem}
td.c-tagged{color:var(--tagged);font-weight:600}td.c-low{color:var(--low);font-weight:600}
td.c-failed{color:var(--failed);font-weight:600}td.c-kept{color:var(--kept)}td.c-dry{color:var(--dry)}
.chip{display:inline-block;background:var(--chip);border-radius:999px;padding:1px 9px;margin:1px 2px 1px 0;
font-size:.84rem;white-space:nowrap}.chip b{font-weight:600;font-variant-numeric:tabular-nums}
.chip.filter{background:var(--accent);color:#fff;margin-left:6px}
.badge{display:inline-block;border-radius:4px;padding:0 6px;font-size:.8rem;background:var(--chip)}
.badge.st-failed,.badge.st-interrupted{background:var(--failed);color:#fff}.badge.st-done{background:var(--tagged);
color:#fff}.badge.st-running,.badge.st-pending{background:var(--low);color:#000}.badge.st-dry{background:var(--dry);
color:#fff}
.badge.o-tagged{background:var(--tagged);color:#fff}.badge.o-kept{background:var(--kept);color:#fff}
.badge.o-low{background:var(--low);color:#000}.badge.o-dry{background:var(--dry);color:#fff}
.badge.o-failed{background:var(--failed);color:#fff}
.meter{display:inline-block;width:60px;height:6px;border-radius:3px;background:var(--chip);margin-right:8px;
vertical-align:middle;overflow:hidden}.meter span{display:block;height:100%;background:var(--accent)}
.meter.low span{background:var(--low)}.num{font-variant-numeric:tabular-nums}
.muted{color:var(--muted)}
footer{color:var(--muted);font-size:.85rem;padding-bottom:30px}
@media print{header nav,.tools{display:none}section{break-inside:avoid;box-shadow:none}}
"""

# Sort on click (numbers by data-v, text by locale), filter rows as the user types.
JS = """
(function(){
  document.querySelectorAll('input[data-filter]').forEach(function(box){
    var table=document.getElementById(box.dataset.filter);
    var count=document.querySelector('[data-count="'+box.dataset.filter+'"]');
    var base=count.textContent;
    box.addEventListener('input',function(){
      var q=box.value.trim().toLowerCase(),n=0,rows=table.tBodies[0].rows;
      for(var i=0;i<rows.length;i++){var show=!q||rows[i].textContent.toLowerCase().indexOf(q)>=0;
        rows[i].hidden=!show;if(show)n++;}
      count.textContent=q?(n+' matching of '+base):base;
    });
  });
  document.querySelectorAll('table.data th').forEach(function(th){
    function sort(){
      var table=th.closest('table'),col=th.cellIndex,num=th.dataset.type==='num';
      var dir=th.getAttribute('aria-sort')==='ascending'?-1:1;
      table.querySelectorAll('th').forEach(function(h){h.removeAttribute('aria-sort');});
      th.setAttribute('aria-sort',dir>0?'ascending':'descending');
      var body=table.tBodies[0],rows=Array.prototype.slice.call(body.rows);
      function key(r){var c=r.cells[col];var v=c.dataset.v!==undefined?c.dataset.v:c.textContent;
        return num?parseFloat(v):v.toLowerCase();}
      rows.sort(function(a,b){var x=key(a),y=key(b);
        if(num){x=isNaN(x)?-Infinity:x;y=isNaN(y)?-Infinity:y;return (x-y)*dir;}
        return x.localeCompare(y)*dir;});
      rows.forEach(function(r){body.appendChild(r);});
    }
    th.addEventListener('click',sort);
    th.addEventListener('keydown',function(e){if(e.key==='Enter'||e.key===' '){e.preventDefault();sort();}});
  });
})();
"""
