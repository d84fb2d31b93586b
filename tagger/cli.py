"""The command line: parse, call the library, print. Nothing else lives here."""
from __future__ import annotations

import json
import logging
import signal
import sys
import time
from pathlib import Path

import click

from tagger import __version__, errors
from tagger import config as config_mod
from tagger.errors import TaggerError


def _settings(ctx: click.Context, **flags) -> config_mod.Settings:
    base = dict(ctx.obj or {})
    base.update({k: v for k, v in flags.items() if v is not None})
    try:
        return config_mod.load(base, config_file=ctx.meta.get("config"), required=bool(ctx.meta.get("config")))
    except TaggerError as exc:
        raise click.ClickException(str(exc)) from None


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
    """done/total, rate and ETA on stderr; a line every few seconds when not a terminal."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self.last = 0.0
        self.queued = 0

    def discovered(self, found: int, queued: int) -> None:
        self.queued = queued
        if self.enabled and self.tty:
            click.echo(f"\rfound {found} files, queued {queued} …", err=True, nl=False)

    def __call__(self, p) -> None:
        if not self.enabled:
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
        click.echo(("\r" + line) if self.tty else line, err=True, nl=not self.tty)

    def close(self) -> None:
        if self.enabled and self.tty:
            click.echo("", err=True)


def _print_summary(summary: dict) -> None:
    click.echo(f"scan {summary['scan_id']}: {summary['found']} audio files found in {summary['seconds']:.1f} s")
    lines = [("tagged", summary["tagged"]), ("unchanged (skipped)", summary["unchanged"]),
             ("low confidence (not written)", summary["low_confidence"]),
             ("kept the user's genre", summary["kept_user_genre"]), ("dry run (predicted only)", summary["dry_run"]),
             ("failed", summary["failed"]), ("still queued", summary["pending"])]
    for label, n in lines:
        if n or label in ("tagged", "failed"):
            click.echo(f"  {label:<30} {n}")
    if summary["genres"]:
        click.echo("  genres: " + ", ".join(f"{g} {n}" for g, n in summary["genres"].items()))
    from tagger.report import printable

    for f in summary["failures"]:
        click.echo(f"  failed: {printable(f['path'])}: {printable(f['reason'])}")
    for p in summary["problems"]:
        click.echo(f"  skipped: {printable(p['path'])}: {printable(p['reason'])}")


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, file_okay=True, path_type=str))
@click.option("--dry-run", is_flag=True, help="Predict and record, but write nothing into the files.")
@click.option("--force", is_flag=True, help="Analyse files even when unchanged since their last analysis.")
@click.option("--workers", type=click.IntRange(min=1), help="Local worker processes (default: one per core).")
@click.option("--min-confidence", type=click.FloatRange(0, 1), help="Write no tag below this confidence, the calibrated chance that the genre is right (default 0.65).")
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
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.pass_context
def scan(ctx, paths, dry_run, force, workers, min_confidence, overwrite, model, windows, first_windows, window_step,
         wait, as_json, quiet):
    """Find audio files under PATHS, predict their genres and write them into their tags.

    Files unchanged since their last analysis are skipped. With no broker
    configured, jobs run in local worker processes; with a Redis broker they
    go to `tagger worker` processes anywhere.
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
    options = ScanOptions.from_settings(settings, dry_run=dry_run, force=force)
    follow = settings.is_embedded or bool(wait)
    scan_id = scan_mod.create(settings, list(paths), options, follows=follow)
    bar = _Bar(enabled=not quiet and not as_json)
    # with the embedded default this scan runs its own workers, started with its first job
    workers = ProcessGroup(settings, settings.worker_count) if settings.is_embedded else None
    terminated = False

    def _terminate(signum, _frame):
        # SIGTERM (kill, systemd, a container stopping) ends the scan as Ctrl-C does:
        # workers stopped, unfinished files recorded, the scan marked interrupted
        nonlocal terminated
        terminated = True
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        status = scan_mod.run(settings, scan_id, scan_mod.default_roots(paths), options, workers=workers,
                              follow=follow, on_discovered=bar.discovered, on_progress=bar)
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
    summary = scan_mod.summary(settings, scan_id)
    if as_json:
        click.echo(json.dumps(summary, indent=2, ensure_ascii=False))
    else:
        _print_summary(summary)
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
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv", "html"]), default="table", show_default=True,
              help="table: aligned text (coloured on a terminal); html: one self-contained page with charts.")
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True, path_type=Path),
              help="Write the report to FILE instead of stdout (any format; html goes to stdout without it).")
@click.option("--limit", type=click.IntRange(min=1), default=200, show_default=True,
              help="At most this many scans and rows per file list; the report says when it cut a list.")
@click.pass_context
def report(ctx, scan_id, since, genre, only_low, only_failed, fmt, output, limit):
    """Summary of the latest scan, scan history, genre and confidence distributions, low-confidence
    and failed files, tag changes.

    \b
    tagger report --format html -o report.html
    tagger report --since 2024-05-01 --failed --format csv
    """
    from tagger import report as report_mod, scan as scan_mod

    settings = _settings(ctx)
    try:
        since_dt = report_mod.parse_since(since) if since else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None
    lists = tuple(name for name, on in (("low_confidence", only_low), ("failed", only_failed)) if on)
    filters = report_mod.Filters(scan_id=scan_id, since=since_dt, genre=genre, lists=lists or report_mod.LISTS)
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

    A file whose tags were edited since tagger wrote them is left alone and reported.
    """
    from tagger import undo as undo_mod

    if (scan_id is None) == (file_path is None):
        raise click.UsageError("give exactly one of --scan ID or --file PATH")
    from tagger.report import printable

    settings = _ready(ctx)
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
            click.echo(f"{r.status:<9} {printable(r.path)}: {printable(change)}"
                       + (f" ({printable(r.reason)})" if r.reason else ""))
        counts = {}
        for r in results:
            counts[r.status] = counts.get(r.status, 0) + 1
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
    for e in events:
        if e["event"] == "analysis":
            what = (f"{e['genre']} ({e['confidence']:.2f}, {e['model']}, {e['decided_by']})" if e["genre"]
                    else f"failed: {e['error']}")
            click.echo(f"{e['at']}  scan {e['scan_id']}  analysis {e['status']:<14} {what}")
        else:
            click.echo(f"{e['at']}  scan {e['scan_id']}  {e['event']:<8} #{e['change_id']} ({e['state']}) genre "
                       f"{'; '.join(e['genre_before']) or '-'} -> {'; '.join(e['genre_after']) or '-'}")


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
@click.option("--from-tags", is_flag=True, help="Use the files' own genre tags as the labels.")
@click.option("--model", help="Model to evaluate (default: the first of the default chain).")
@click.option("--windows", type=click.IntRange(1, 64), help="3 s windows per track, as `tagger scan --windows` (default 10).")
@click.option("--first-windows", type=click.IntRange(0, 64), help="As `tagger scan --first-windows` (default 3).")
@click.option("--window-step", type=click.IntRange(0, 64), help="As `tagger scan --window-step` (default 2).")
@click.option("--min-confidence", type=click.FloatRange(0, 1),
              help="Score the tags a scan would write at this confidence (default: as `tagger scan`, 0.65).")
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
