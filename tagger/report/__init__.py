"""The report: ``collect`` (collect.py) gathers the facts, one renderer per format draws them.

Imports run one way: collect ← words ← table, html; collect ← plain. Nothing here imports
this package's ``__init__``.
"""
from __future__ import annotations

from tagger.report.collect import ALL_LISTS, LIMIT, LISTS, Filters, collect, parse_since
from tagger.report.html import render as render_html
from tagger.report.plain import CSV_HEADER, render_csv, render_json
from tagger.report.table import render_table
from tagger.report.words import SECTION_TITLES, duration, printable, truncation_notes

RENDERERS = {"table": render_table, "json": render_json, "csv": render_csv, "html": render_html}

__all__ = ["ALL_LISTS", "LIMIT", "LISTS", "Filters", "collect", "parse_since", "render_html", "CSV_HEADER",
           "render_csv", "render_json", "render_table", "SECTION_TITLES", "duration", "printable", "truncation_notes",
           "RENDERERS"]
