"""The command line: parse, call the library, print. Nothing else lives here."""
from __future__ import annotations

import json
import logging
import signal
import sys
import time
from pathlib import Path
from typing import Optional

import click

from tagger import __version__, errors
from tagger import config as config_mod
from tagger.errors import TaggerError


def _loaded(ctx: click.Context, **flags) -> config_mod.Loaded:
    """The settings from defaults, the config file, the environment and these flags, and where each
    came from; a mistake in any of them is a one-line error (exit code 1)."""
    base = dict(ctx.obj or {})
    base.update({k: v for k, v in flags.items() if v is not None})
    try:
        return config_mod.load_with_sources(base, config_file=ctx.meta.get("config"),
                                            required=bool(ctx.meta.get("config")))
    except TaggerError as exc:
        raise click.ClickException(str(exc)) from None


def _settings(ctx: click.Context, **flags) -> config_mod.Settings:
    return _loaded(ctx, **flags).settings


class Terminated(BaseException):
    """SIGTERM before a command has its own handling (start-up: imports, migrations, loading the
    model). Not an ``Exception``: nothing catches it on the way, transactions roll back, ``finally``
    blocks run, and ``entry`` exits 143, as a process ended by SIGTERM does by convention."""


def _terminated(signum, _frame):
    raise Terminated


def entry() -> None:
    """The ``tagger`` command. SIGTERM is handled from the first line: a scan or a worker stopped
    while it starts ends cleanly with 143, not killed half-way by the signal's default action."""
    signal.signal(signal.SIGTERM, _terminated)
    try:
        main()
    except Terminated:
        sys.exit(143)


class _Group(click.Group):
    """Turns failures of the environment (``errors.environment_error``) into one line and exit code 1."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except Exception as exc:  # noqa: BLE001 - only environment failures are translated
            message = errors.environment_error(exc)
            if message is None:
                raise
            raise click.ClickException(message) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tagger")
@click.option("--db", "db_url", metavar="URL", help="Results database URL (default: SQLite in the data folder; env TAGGER_DB_URL).")
@click.option("--broker", "broker_url", metavar="URL", help="redis://… to send jobs through Redis (env TAGGER_BROKER_URL).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="Config file (TOML; default ~/.config/tagger/config.toml).")
@click.option("-v", "--verbose", count=True, help="More log output (repeat for debug).")
@click.pass_context
def main(ctx: click.Context, db_url, broker_url, config_file, verbose) -> None:
    """tagger: write genres into the tags of a music library."""
    logging.basicConfig(level=[logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)],
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    ctx.obj = {"db_url": db_url, "broker_url": broker_url}
    ctx.meta["config"] = config_file


def _fail(exc: TaggerError) -> None:
    raise click.ClickException(str(exc))


def _ready(ctx: click.Context) -> config_mod.Settings:
    """The settings, with the results database at the latest schema."""
    from tagger import scan as scan_mod

    settings = _settings(ctx)
    try:
        scan_mod.prepare_database(settings)
    except TaggerError as exc:
        _fail(exc)
    return settings


# ---------------------------------------------------------------- scan


class _Bar:
    """done/total, rate and ETA on stderr; a line every few seconds when not a terminal.

    Until a worker takes up the first file (it loads the model first, which takes a while) the bar
    says so instead of sitting at 0/N, then says how long that took. Lines printed while the bar
    is drawn (``say``) go above it: the bar's line is cleared first and drawn again under them.
    """

    def __init__(self, enabled: bool, waiting_for: str = "loading model"):
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self.last = 0.0
        self.queued = 0
        self.waiting_for = waiting_for
        self.began = time.monotonic()
        self.workers_at: Optional[float] = None  # when local workers were started
        self.ready = False
        self.said_waiting = False
        self.line = ""  # what the bar shows now on the terminal

    def workers_started(self) -> None:
        self.workers_at = time.monotonic()

    def _draw(self, line: str) -> None:
        self.line = line
        click.echo("\r\x1b[K" + line, err=True, nl=False)

    def say(self, text: str, err: bool = False) -> None:
        """Print a line (stdout, or stderr with ``err``) above the bar."""
        drawn = self.enabled and self.tty and self.line
        if drawn:
            click.echo("\r\x1b[K", err=True, nl=False)
        click.echo(text, err=err)
        if drawn:
            click.echo(self.line, err=True, nl=False)

    def discovered(self, found: int, queued: int) -> None:
        self.queued = queued
        if self.enabled and self.tty:
            self._draw(f"found {found} files, queued {queued} …")

    def _waiting(self, p) -> bool:
        """While no worker has taken up a file: say so; True while waiting."""
        if self.ready:
            return False
        now = time.monotonic()
        if p.done or p.counts.get("running"):  # a worker took up a file: its model is loaded
            self.ready = True
            if self.workers_at is not None:
                self.say(f"model loaded in {now - self.workers_at:.1f} s", err=True)
            return False
        total = max(p.total, self.queued)
        text = f"{self.waiting_for} … {now - (self.workers_at or self.began):.0f} s  (0/{total} files done)"
        if self.tty:
            self._draw(text)
        elif not self.said_waiting:
            click.echo(f"{self.waiting_for} …", err=True)
        self.said_waiting = True
        return True

    def __call__(self, p) -> None:
        if not self.enabled or self._waiting(p):
            return
        now = time.monotonic()
        final = p.total and p.done >= p.total
        if not self.tty and not final and now - self.last < 5:
            return
        self.last = now
        total = max(p.total, self.queued)
        width = 30
        filled = int(width * p.done / total) if total else width
        eta = f"{int(p.eta // 60)}:{int(p.eta % 60):02d}" if p.eta is not None else "--:--"
        line = f"[{'#' * filled}{'.' * (width - filled)}] {p.done}/{total}  {p.rate:.1f} files/s  ETA {eta}"
        if self.tty:
            self._draw(line)
        else:
            click.echo(line, err=True)

    def close(self) -> None:
        if self.enabled and self.tty and self.line:
            click.echo("", err=True)
            self.line = ""


class _Started:
    """The scan's local workers, telling the bar when they start (they load the model from then)."""

    def __init__(self, group, on_start):
        self.group, self.on_start = group, on_start
        self.size_up_to = group.size_up_to

    def start(self, expected=None):
        self.on_start()
        return self.group.start(expected)

    def stop(self) -> None:
        self.group.stop()


#: at most this many files in a dry run's list of what it would change (all of them: --json)
DRY_RUN_LINES = 50

_LABELS = {"tagged": "tagged", "kept": "kept", "low_confidence": "low confidence", "dry_run": "dry run",
           "failed": "failed", "queued": "queued", "running": "running"}


def _candidates(top) -> str:
    from tagger.report.words import candidates

    return candidates(top)


def _unsure(r: dict) -> str:
    """Why a file gets no tag: its reason (``does not sound like music (a steady tone)``), or
    ``not sure enough:`` and its candidates."""
    return r.get("reason") or f"not sure enough: {_candidates(r['top'])}"


def _values(values) -> str:
    return "; ".join(values or []) or "-"


def _diff(change: dict) -> str:
    """``genre - → jazz, confidence - → 0.912, …``: the fields a change alters, before → after."""
    before, after = change.get("before") or {}, change.get("after") or {}
    parts = [f"{k} {_values(before.get(k))} → {_values(after.get(k))}" for k in ("genre", "confidence", "model")
             if k in after and list(before.get(k) or []) != list(after.get(k) or [])]
    return ", ".join(parts)


def _dry_run_detail(r: dict) -> str:
    would = r.get("would")
    if would == "write":
        diff = _diff(r["change"])
        return (f"would write {diff}" if diff else
                f"already holds {_values(r['change']['after'].get('genre'))} ({r['confidence']:.3f})")
    if would == "keep":
        return f"would keep the user's genre {_values(r['genres'])} (predicted {r['predicted']} {r['confidence']:.2f})"
    if would == "low_confidence":
        return f"would write nothing, {_unsure(r)}"
    return f"predicted {r['predicted']} {r['confidence']:.2f} (its tags cannot be read now)"


def _file_detail(r: dict) -> str:
    st = r["status"]
    if st == "tagged":  # the genre as written into the file (named for players; the database keeps the id)
        written = ((r.get("change") or {}).get("after") or {}).get("genre") or r["genres"]
        was = _values(r["previous_genre"])
        return f"{_values(written)} ({r['confidence']:.2f})" + (f", was {was}" if r["previous_genre"]
                                                                and r["previous_genre"] != written else "")
    if st == "kept":
        return f"kept the user's genre {_values(r['genres'])} (predicted {r['predicted']} {r['confidence']:.2f})"
    if st == "low_confidence":
        return f"no tag, {_unsure(r)}"
    if st == "dry_run":
        return _dry_run_detail(r)
    if st == "failed":
        return (r.get("error") or {}).get("reason") or "failed"
    return st


def _file_line(r: dict) -> str:
    """One file's outcome on one line (``tagger scan -v``): status, file, what it got."""
    from tagger.report import printable

    return f"{_LABELS.get(r['status'], r['status']):<14} {printable(r['path'])}: {printable(_file_detail(r))}"


def _print_summary(summary: dict, verbose: bool = False) -> None:
    from tagger.report import printable

    seconds = summary["seconds"]
    took = {"done": f"finished in {seconds:.1f} s", "interrupted": f"interrupted after {seconds:.1f} s"}.get(
        summary["status"], f"running, {seconds:.1f} s so far")
    dry = bool((summary.get("options") or {}).get("dry_run"))
    click.echo(f"scan {summary['scan_id']}{' (dry run)' if dry else ''}: {summary['found']} audio files found; "
               f"{took}")
    lines = [("tagged", summary["tagged"]), ("unchanged (skipped)", summary["unchanged"]),
             ("low confidence (not written)", summary["low_confidence"]),
             ("kept the user's genre", summary["kept_user_genre"]), ("dry run (predicted only)", summary["dry_run"]),
             ("failed", summary["failed"]), ("interrupted (next scan)", summary["interrupted"]),
             ("still queued", summary["pending"])]
    for label, n in lines:
        if n or label in ("tagged", "failed"):
            click.echo(f"  {label:<30} {n}")
    if summary["genres"]:
        click.echo("  genres written or kept: "
                   + ", ".join(f"{printable(g)} {n}" for g, n in summary["genres"].items()))
    dry_rows = [r for r in summary.get("files") or [] if r["status"] == "dry_run"]
    if dry_rows:
        would = {k: sum(r.get("would") == k for r in dry_rows) for k in ("write", "keep", "low_confidence")}
        click.echo(f"  a real scan would write {would['write']}, keep the user's genre on {would['keep']}, "
                   f"leave {would['low_confidence']} untagged (low confidence)")
        if summary.get("would_genres"):
            click.echo("  genres it would write or keep: "
                       + ", ".join(f"{printable(g)} {n}" for g, n in summary["would_genres"].items()))
        if not verbose:  # with -v each file's line said it as it finished
            click.echo("  what it would do:")
            for r in dry_rows[:DRY_RUN_LINES]:
                click.echo(f"    {printable(r['path'])}: {printable(_dry_run_detail(r))}")
            if len(dry_rows) > DRY_RUN_LINES:
                click.echo(f"    … and {len(dry_rows) - DRY_RUN_LINES} more; see --json")

    for f in summary["failures"]:
        click.echo(f"  failed: {printable(f['path'])}: {printable(f['reason'])}")
    for p in summary["problems"]:
        click.echo(f"  skipped: {printable(p['path'])}: {printable(p['reason'])}")


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, file_okay=True, path_type=str))
@click.option("--dry-run", is_flag=True, help="Predict and record, but write nothing into the files.")
@click.option("--force", is_flag=True, help="Analyse files even when unchanged since their last analysis.")
@click.option("--retry-failed", is_flag=True,
              help="Analyse again unchanged files whose last analysis failed for a fault of their own "
                   "(unreadable, unsupported, tags that cannot be written); by default they are skipped.")
@click.option("--workers", type=click.IntRange(min=1), help="Local worker processes (default: one per core).")
@click.option("--min-confidence", type=click.FloatRange(0, 1), help="Write no tag below this confidence, the calibrated chance that the genre is right (default 0.8).")
@click.option("--overwrite", is_flag=True, help="Replace genres the user set themselves.")
@click.option("--model", help="Model name, or a comma-separated chain (default: the shipped default chain).")
@click.option("--windows", type=click.IntRange(1, 64),
              help="3 s windows analysed per track, spread over it (default 10; fewer is faster and a little "
                   "less accurate: see README, Throughput).")
@click.option("--first-windows", type=click.IntRange(0, 64),
              help="Windows heard first; more only while the model is unsure (default 3; 0: all at once).")
@click.option("--window-step", type=click.IntRange(0, 64),
              help="Windows heard at a time after the first ones (default 2; 0: all the others at once).")
@click.option("--wait/--no-wait", default=None, help="With Redis: follow the scan until done (default: return after queueing).")
@click.option("--json", "as_json", is_flag=True,
              help="Print the summary as JSON, with every file's outcome (\"files\").")
@click.option("--verbose", "-v", "verbose", is_flag=True,
              help="A line per file as it finishes: status, genre written or kept, confidence, the candidates "
                   "when unsure (with --json: on stderr). Not the same as `tagger -v`, which is log output.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.pass_context
def scan(ctx, paths, dry_run, force, retry_failed, workers, min_confidence, overwrite, model, windows, first_windows, window_step,
         wait, as_json, verbose, quiet):
    """Find audio files under PATHS, predict their genres and write them into their tags.

    Files unchanged since their last analysis are skipped. With no broker
    configured, jobs run in local worker processes; with a Redis broker they
    go to `tagger worker` processes anywhere. A dry run lists what it would
    change in each file.
    """
    from tagger import queue, scan as scan_mod
    from tagger.db import schema as s
    from tagger.models.predictor import Predictor
    from tagger.options import ScanOptions
    from tagger.workers.processes import ProcessGroup

    settings = _settings(ctx, workers=workers, min_confidence=min_confidence, model=model,
                         overwrite=overwrite or None, windows=windows, first_windows=first_windows,
                         window_step=window_step)
    try:
        scan_mod.prepare_database(settings)
        names = Predictor.from_settings(settings.model, settings.model_dirs).names
        if settings.is_embedded:  # a remote worker may have models we don't; locally we must
            for name in names[:1]:
                from tagger.models import registry

                registry.check_features(registry.find(name, settings.model_dirs))
        queue.configure(settings)
    except TaggerError as exc:
        _fail(exc)
    options = ScanOptions.from_settings(settings, dry_run=dry_run, force=force, retry_failed=retry_failed)
    follow = settings.is_embedded or bool(wait)
    scan_id = scan_mod.create(settings, list(paths), options, follows=follow)
    bar = _Bar(enabled=not quiet and not as_json,
               waiting_for="loading model" if settings.is_embedded else "waiting for a worker")
    # with the embedded default this scan runs its own workers, started with its first job
    workers = (_Started(ProcessGroup(settings, settings.worker_count), bar.workers_started)
               if settings.is_embedded else None)
    terminated = False
    cursor, shown = scan_mod.Cursor(), 0

    def show_finished() -> None:
        nonlocal shown
        for row in scan_mod.finished_since(settings, scan_id, cursor):
            bar.say(_file_line(row), err=as_json)
            shown += 1

    def on_progress(p) -> None:
        bar(p)  # first: the lines go above the bar as it is now
        if verbose and p.done > shown:
            show_finished()

    def _terminate(signum, _frame):
        # SIGTERM (kill, systemd, a container stopping) ends the scan as Ctrl-C does:
        # workers stopped, unfinished files recorded, the scan marked interrupted
        nonlocal terminated
        terminated = True
        raise KeyboardInterrupt

    # before this, a SIGTERM raises Terminated (``entry``): the scan just recorded, if any, is
    # given back by the next scan, which finds its process dead (``scan.reap_dead``)
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        status = scan_mod.run(settings, scan_id, scan_mod.default_roots(paths), options, workers=workers,
                              follow=follow, on_discovered=bar.discovered, on_progress=on_progress)
        if verbose and status == s.ScanStatus.DONE:
            show_finished()  # the last ones, and any the workers' end recorded after the last poll
    except KeyboardInterrupt:
        status = s.ScanStatus.INTERRUPTED  # recorded by scan.run
    except Exception as exc:
        message = errors.environment_error(exc)
        if message is None:
            raise
        raise click.ClickException(message) from None  # the broker or the disk went away: recorded
    finally:
        signal.signal(signal.SIGTERM, previous)
        bar.close()
    summary = scan_mod.summary(settings, scan_id, files=as_json or dry_run)
    if as_json:
        click.echo(json.dumps(summary, indent=2, ensure_ascii=False))
    else:
        _print_summary(summary, verbose=verbose)
        if status == s.ScanStatus.RUNNING:
            click.echo(f"queued {summary['queued']} jobs; follow with `tagger status --scan {scan_id}`")
    if status == s.ScanStatus.INTERRUPTED:
        sys.exit(143 if terminated else 130)


# ---------------------------------------------------------------- worker


@main.command()
@click.option("--processes", "-p", type=click.IntRange(min=1), help="Worker processes (default: one per core).")
@click.option("--threads", "-t", type=click.IntRange(min=1), default=1, show_default=True, help="Job threads per process.")
@click.option("--queues", "-Q", multiple=True, help="Only these queues (default: all).")
@click.option("--model-threads", type=click.IntRange(min=0), default=0, hidden=True)
@click.option("--parent", type=click.IntRange(min=0), default=0, hidden=True,
              help="Stop when this process (the scan that started this worker) is gone.")
@click.pass_context
def worker(ctx, processes, threads, queues, model_threads, parent):
    """Run headless workers that take jobs from the configured broker.

    Stop with SIGTERM or Ctrl-C: each process finishes its current job first.
    """
    from tagger import scan as scan_mod
    from tagger.workers import processes as worker_mod

    settings = _settings(ctx)
    try:
        scan_mod.prepare_database(settings)
    except TaggerError as exc:
        _fail(exc)
    if not logging.getLogger().handlers or logging.getLogger().level > logging.INFO:
        logging.getLogger().setLevel(logging.INFO)
    n = processes or (1 if model_threads else settings.worker_count)
    if n == 1:
        sys.exit(worker_mod.run(settings, threads=threads, queues=list(queues), model_threads=model_threads,
                                parent=parent))
    group = worker_mod.ProcessGroup(settings, n, threads=threads, queues=list(queues), quiet=False).start()
    import signal

    def forward(signum, _frame):
        for p in group.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    sys.exit(group.wait())


# ---------------------------------------------------------------- report / status


@main.command()
@click.option("--scan", "scan_id", type=int, help="Only this scan.")
@click.option("--since", metavar="DATE",
              help="Only scans started at or after DATE: an ISO date (local midnight) or datetime, e.g. 2024-05-01T18:30.")
@click.option("--genre", metavar="G", help="Only files whose genre is G (case-insensitive): the prediction, or for "
              "failed files the genre tagger last wrote.")
@click.option("--low-confidence", "only_low", is_flag=True, help="List only the low-confidence files (with --failed: both).")
@click.option("--failed", "only_failed", is_flag=True, help="List only the failed files (with --low-confidence: both).")
@click.option("--files", "with_files", is_flag=True,
              help="Also list every file: the genre written or kept, its confidence, the candidates when low, "
                   "a failure's reason (each file's latest analysis in the scans shown).")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv", "html"]), default="table", show_default=True,
              help="table: aligned text (coloured on a terminal); html: one self-contained page with charts.")
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True, path_type=Path),
              help="Write the report to FILE instead of stdout (any format; html goes to stdout without it).")
@click.option("--limit", type=click.IntRange(min=1), default=200, show_default=True,
              help="At most this many scans and rows per file list; the report says when it cut a list.")
@click.pass_context
def report(ctx, scan_id, since, genre, only_low, only_failed, with_files, fmt, output, limit):
    """Summary of the latest scan, scan history, genre and confidence distributions, low-confidence
    and failed files, tag changes; with --files, every file's outcome.

    \b
    tagger report --format html -o report.html
    tagger report --since 2024-05-01 --failed --format csv
    tagger report --scan 3 --files
    """
    from tagger import report as report_mod, scan as scan_mod

    settings = _settings(ctx)
    try:
        since_dt = report_mod.parse_since(since) if since else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None
    lists = tuple(name for name, on in (("low_confidence", only_low), ("failed", only_failed)) if on)
    lists = (lists or report_mod.LISTS) + (("files",) if with_files else ())
    filters = report_mod.Filters(scan_id=scan_id, since=since_dt, genre=genre, lists=lists)
    try:
        scan_mod.prepare_database(settings)
    except TaggerError as exc:
        _fail(exc)
    doc = report_mod.collect(settings, limit=limit, filters=filters)
    if scan_id is not None and not doc["scans"]:
        raise click.ClickException(f"no scan {scan_id}" + (f" since {since}" if since else ""))
    if fmt == "table":
        text = report_mod.render_table(doc, color=output is None and sys.stdout.isatty())
    else:
        text = report_mod.RENDERERS[fmt](doc)
    if not text.endswith("\n"):
        text += "\n"
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        click.echo(f"wrote {output} ({len(text.encode('utf-8')) // 1024 + 1} KiB)", err=True)


@main.command()
@click.option("--scan", "scan_id", type=int, help="One scan (default: the latest).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def status(ctx, scan_id, as_json):
    """Queue depth and a scan's progress: done, failed, rate."""
    from sqlalchemy import func, select

    from tagger import queue, scan as scan_mod
    from tagger.db import schema as s
    from tagger.db.engine import session_scope

    settings = _ready(ctx)
    with session_scope(settings.database_url) as db:
        if scan_id is not None and db.get(s.Scan, scan_id) is None:
            raise click.ClickException(f"no scan {scan_id} (tagger report lists the scans)")
        scan_id = scan_id or db.scalar(select(func.max(s.Scan.id)))
    doc = {"queue": queue.depth(settings)}
    if scan_id:
        doc["scan"] = scan_mod.summary(settings, scan_id)
        doc["scan"].pop("failures")
    if as_json:
        click.echo(json.dumps(doc, indent=2))
        return
    q = doc["queue"]
    click.echo(f"queue: {q['waiting']} waiting, {q['in_flight']} in flight, {q['dead']} dead")
    if scan_id:
        sm = doc["scan"]
        done = sm["tagged"] + sm["low_confidence"] + sm["kept_user_genre"] + sm["dry_run"] + sm["failed"]
        click.echo(f"scan {scan_id}: {done}/{sm['queued']} done ({sm['failed']} failed, {sm['pending']} pending), "
                   f"{sm['files_per_second'] or 0} files/s")


@main.command()
@click.option("--scan", "scan_id", type=int, required=True, help="The scan whose unfinished jobs to send again.")
@click.option("--running", is_flag=True, help="Also jobs marked running (their worker died and the broker lost them).")
@click.pass_context
def requeue(ctx, scan_id, running):
    """Queue a scan's unfinished jobs again, e.g. after a Redis without persistence restarted.

    Jobs are idempotent: one delivered twice does its work once.
    """
    from tagger import queue, scan as scan_mod

    settings = _settings(ctx)
    try:
        scan_mod.prepare_database(settings)
        queue.configure(settings)
    except TaggerError as exc:
        _fail(exc)
    click.echo(f"queued {scan_mod.requeue(settings, scan_id, include_running=running)} jobs of scan {scan_id} again")


# ---------------------------------------------------------------- undo / history


@main.command()
@click.option("--scan", "scan_id", type=int, help="Undo every tag change of this scan.")
@click.option("--file", "file_path", type=click.Path(path_type=str), help="Undo the latest change of this file.")
@click.option("--dry-run", is_flag=True, help="Say what would be restored, change nothing.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def undo(ctx, scan_id, file_path, dry_run, as_json):
    """Restore what tagger's changes replaced (an undo of an undo is a redo).

    With neither --scan nor --file: the latest scan that wrote tags. A file whose
    tags were edited since tagger wrote them is left alone and reported.
    """
    from tagger import undo as undo_mod

    if scan_id is not None and file_path is not None:
        raise click.UsageError("give --scan ID or --file PATH, not both")
    from tagger.report import printable

    settings = _ready(ctx)
    if scan_id is None and file_path is None:
        scan_id = undo_mod.latest_scan_with_changes(settings)
        if scan_id is None:
            click.echo("nothing to undo: no scan has written tags")
            return
        if not as_json:
            click.echo(f"undoing scan {scan_id}, the latest that wrote tags{' (dry run)' if dry_run else ''}")
    if scan_id is not None and not undo_mod.scan_exists(settings, scan_id):
        raise click.ClickException(f"no scan {scan_id} (tagger report lists the scans)")
    results = undo_mod.undo(settings, scan_id=scan_id, path=file_path, dry_run=dry_run)
    failed = sum(r.status == "failed" for r in results)
    if as_json:
        click.echo(json.dumps([r.as_dict() for r in results], indent=2, ensure_ascii=False))
    else:
        if not results:
            click.echo("nothing to undo")
        for r in results:
            change = f"{'; '.join(r.genre_before or []) or '-'} -> {'; '.join(r.genre_after or []) or '-'}"
            click.echo(f"{r.status.replace('_', ' '):<13} {printable(r.path)}: {printable(change)}"
                       + (f" ({printable(r.reason)})" if r.reason else ""))
        counts = {}
        for r in results:
            counts[r.status.replace("_", " ")] = counts.get(r.status.replace("_", " "), 0) + 1
        if results:
            click.echo(", ".join(f"{n} {k}" for k, n in sorted(counts.items())) + (" (dry run)" if dry_run else ""))
    if failed:
        sys.exit(1)  # a change that could not be undone is an error, whatever the output format


@main.command()
@click.argument("path", type=click.Path(path_type=str))
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def history(ctx, path, as_json):
    """Every prediction and tag change recorded for one file."""
    from tagger import undo as undo_mod

    settings = _ready(ctx)
    events = undo_mod.history(settings, path)
    if as_json:
        click.echo(json.dumps(events, indent=2, ensure_ascii=False))
        return
    if not events:
        raise click.ClickException(f"no history for {path}")
    from tagger.report import printable

    for e in events:
        if e["event"] == "analysis":
            how = f"{e['confidence']:.2f}, {e['model']}, {e['decided_by']}" if e["genre"] else ""
            if e["kept_genre"] is not None:  # what the file holds is the user's genre, not the prediction
                what = f"the user's genre {_values(e['kept_genre'])} (predicted {e['genre']} {how})"
            elif e["status"] == "low_confidence":
                what = f"no tag, {_unsure({'reason': e['reason'], 'top': (e['top'] or [])[:3]})} ({e['model']})"
            elif e["genre"]:
                what = f"{e['genre']} ({how})"
            else:
                what = f"failed: {e['error']}" if e["error"] else e["status"]
            click.echo(f"{e['at']}  scan {e['scan_id']}  analysis {e['status']:<14} {printable(what)}")
        else:
            click.echo(f"{e['at']}  scan {e['scan_id']}  {e['event']:<8} #{e['change_id']} ({e['state']}) genre "
                       f"{'; '.join(e['genre_before']) or '-'} -> {'; '.join(e['genre_after']) or '-'}")


# ---------------------------------------------------------------- config

#: the flags that set a setting, as a user types them (the others are named after the setting)
_FLAGS = {"db_url": "--db", "broker_url": "--broker"}

#: what a default that is no plain value means
_DEFAULT_MEANS = {"db_url": "SQLite in data_dir", "broker_url": "the local queue in data_dir",
                  "workers": "one per core", "model": "the default chain (tagger models)",
                  "genre_separator": 'several genres: a list in Vorbis comments, joined with "; " in ID3 and MP4'}


def _toml(value) -> str:
    """A value as TOML writes it (so the printed settings read as a config file)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml(str(k))} = {_toml(v)}" for k, v in value.items()) + "}"
    return json.dumps(str(value), ensure_ascii=False)


def _source_words(name: str, entry: dict) -> str:
    kind, where = entry["source"], entry["from"]
    if kind == "default":
        means = _DEFAULT_MEANS.get(name)
        return f"default: {means}" if means else "default"
    if kind == "file":
        return "config file"
    if kind == "env":
        return f"env {where}"
    return f"flag {where}"


@main.command("config")
@click.option("--json", "as_json", is_flag=True, help="Print it as JSON: each setting's value, source and from.")
@click.pass_context
def config_cmd(ctx, as_json):
    """Print the settings in force and where each came from.

    A setting's source is its default, the config file (its path is printed; chosen with --config or
    TAGGER_CONFIG), a TAGGER_* environment variable, or a flag (--db, --broker), each overriding
    the ones before it. The [genres] table lists the name written for every genre. Passwords in
    database and broker URLs, and the API token, are masked.
    """
    from tagger.report import printable

    doc = config_mod.describe(_loaded(ctx))
    for name, entry in doc["settings"].items():
        if entry["source"] == "flag":  # named as typed
            entry["from"] = _FLAGS.get(name, "--" + name.replace("_", "-"))
    if as_json:
        click.echo(json.dumps(doc, indent=2, ensure_ascii=False))
        return
    cf = doc["config_file"]
    how = f"named by {cf['named_by']}" if cf["named_by"] else "the default place"
    click.echo(f"# config file: {printable(cf['path'])} ({how}" + ("" if cf["read"] else "; not there, none read")
               + ")")
    tables = [("[tagger]", [(name, _toml(e["value"]), _source_words(name, e)) for name, e in doc["settings"].items()]),
              ("[genres]  # the name written for each genre",
               [(gid, _toml(e["name"]), _source_words("", e)) for gid, e in doc["genres"].items()])]
    for heading, rows in tables:
        width = min(60, max(len(f"{k} = {v}") for k, v, _ in rows))
        click.echo("\n" + heading)
        for key, value, words in rows:
            click.echo(printable(f"{f'{key} = {value}':<{width}}  # {words}"))


# ---------------------------------------------------------------- db / models


@main.group()
def db():
    """Results database: migrations."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
@click.pass_context
def db_upgrade(ctx, revision):
    """Apply the Alembic migrations to the configured database."""
    from tagger.db import engine

    settings = _settings(ctx)
    try:
        engine.upgrade(settings.database_url, revision)
    except TaggerError as exc:
        _fail(exc)
    click.echo(f"{settings.database_url.split('@')[-1]} at revision {engine.current_revision(settings.database_url)}")


@db.command("current")
@click.pass_context
def db_current(ctx):
    """Print the database's migration revision."""
    from tagger.db import engine

    settings = _settings(ctx)
    click.echo(engine.current_revision(settings.database_url) or "(empty)")


@main.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def models(ctx, as_json):
    """List installed models and the default chain."""
    from tagger.models import registry

    settings = _settings(ctx)
    cards = registry.cards(settings.model_dirs)
    chain = registry.default_chain(settings.model_dirs)
    rows = [{"name": c.name, "version": c.version, "kind": c.kind, "labels": list(c.labels),
             "metrics": c.metrics, "default_position": chain.index(c.name) if c.name in chain else None,
             "directory": str(c.directory)} for c in cards]
    if as_json:
        click.echo(json.dumps({"default_chain": chain, "models": rows}, indent=2))
        return
    if not rows:
        click.echo("no models installed")
        return
    click.echo("default chain: " + " → ".join(chain))
    for r in rows:
        click.echo(f"  {r['name']} {r['version']} ({r['kind']}, {len(r['labels'])} labels)")


@main.command()
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--labels", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="CSV of path,genre (default: one folder per genre under PATH).")
@click.option("--from-tags", is_flag=True,
              help="Use the files' own genre tags as the labels, read by their words "
                   "('Death Metal' is metal, 'Deep House' electronic).")
@click.option("--model", help="Model to evaluate (default: the first of the default chain).")
@click.option("--windows", type=click.IntRange(1, 64), help="3 s windows per track, as `tagger scan --windows` (default 10).")
@click.option("--first-windows", type=click.IntRange(0, 64), help="As `tagger scan --first-windows` (default 3).")
@click.option("--window-step", type=click.IntRange(0, 64), help="As `tagger scan --window-step` (default 2).")
@click.option("--min-confidence", type=click.FloatRange(0, 1),
              help="Score the tags a scan would write at this confidence (default: as `tagger scan`, 0.8).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def evaluate(ctx, path, labels, from_tags, model, windows, first_windows, window_step, min_confidence, as_json):
    """Measure a model on a labeled folder: accuracy, macro-F1, per class, confusion matrix."""
    from tagger import evaluate as ev
    from tagger.models import registry

    settings = _settings(ctx, windows=windows, first_windows=first_windows, window_step=window_step,
                         min_confidence=min_confidence)
    try:
        name = model or settings.model or registry.default_chain(settings.model_dirs)[0]
    except IndexError:
        raise click.ClickException("no genre model is installed") from None
    if from_tags:
        items = ev.items_from_tags(path)
    elif labels:
        items = ev.items_from_csv(labels, root=path)
    else:
        items = ev.items_from_folder(path)
    if not items:
        raise click.ClickException(f"no labeled audio files found under {path}")
    try:
        from tagger.models import runtime

        runtime.set_student(settings.student)  # TAGGER_STUDENT=on measures what a scan with it writes
        result = ev.evaluate(items, name, settings.model_dirs, settings.hearing, settings.min_confidence)
    except TaggerError as exc:
        _fail(exc)
    click.echo(json.dumps(result, indent=2, ensure_ascii=False) if as_json else ev.render_text(result))


# ---------------------------------------------------------------- serve


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Anything but loopback needs a bearer token (TAGGER_API_TOKEN).")
@click.option("--port", type=click.IntRange(0, 65535), default=8750, show_default=True, help="0: any free port.")
@click.pass_context
def serve(ctx, host, port):
    """HTTP API: predictions for uploads or library files, scans, the results database.

    \b
    curl -F file=@song.mp3 http://127.0.0.1:8750/v1/predict
    curl http://127.0.0.1:8750/openapi.json
    Paths named by clients must lie under library_roots (TAGGER_LIBRARY_ROOTS).
    """
    from tagger import serve as serve_mod

    settings = _settings(ctx)
    try:
        serve_mod.run(settings, host, port)
    except TaggerError as exc:
        _fail(exc)
