"""Throughput of `tagger scan` and the bounds set by decoding, features and the model.

Builds a corpus of real music in a temporary folder (GTZAN clips of one genre
joined into 4-minute tracks, or with ``--music DIR`` any folder of real music
joined into tracks of at least 4 minutes), re-encoded to MP3, FLAC, Ogg and
M4A, then prints:

- end to end: tracks/s of `tagger scan` (embedded default), with and without start-up;
- bounds, in one process: each track heard as a worker hears it (progressive
  hearing; the default's student first where ``--chains`` says so), the time
  of each stage a worker's log line names (decode, features, student, model)
  per track; the bound of N workers is N such processes, each as fast as one alone;
- the ratio end-to-end / bound, peak RSS per worker, and the time of a second,
  incremental scan of the unchanged library;
- the incremental re-scan of a large synthetic tree (files recorded as done),
  with the scanner's peak RSS.

    python bench/bench_throughput.py                # 40 tracks, 2 workers
    python bench/bench_throughput.py --music DIR    # music no model here was trained on
    python bench/bench_throughput.py --quick        # CI: 4 short tracks, checks it runs
    python bench/bench_throughput.py --music DIR --corpus KEEP   # build the corpus once into KEEP,
                                                    # later runs scan a fresh copy of it
    python bench/bench_throughput.py --music DIR --chains student,teacher   # the two chains side by side
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GTZAN = ROOT.parent / "shared" / "datasets" / "gtzan"
FORMATS = {"mp3": ["-c:a", "libmp3lame", "-b:a", "192k"], "flac": ["-c:a", "flac"],
           "ogg": ["-c:a", "libvorbis", "-q:a", "5"], "m4a": ["-c:a", "aac", "-b:a", "192k"]}


def build_corpus(out: Path, n_tracks: int, clips_per_track: int, formats: list[str] = list(FORMATS)) -> list[Path]:
    """Join GTZAN clips of one genre into longer tracks, cycling through formats."""
    genres = sorted(p.name for p in GTZAN.iterdir() if p.is_dir() and p.name != "splits")
    clips = {g: sorted((GTZAN / g).glob("*.mp3")) for g in genres}
    paths = []
    for i in range(n_tracks):
        genre = genres[i % len(genres)]
        pool = clips[genre]
        chosen = [pool[(i * clips_per_track + k) % len(pool)] for k in range(clips_per_track)]
        fmt = formats[i % len(formats)]
        dest = out / genre / f"track{i:03d}.{fmt}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        listing = out / f".list{i}.txt"
        listing.write_text("".join(f"file '{c}'\n" for c in chosen))
        subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "concat", "-safe", "0", "-i", str(listing),
                        "-ac", "2", "-ar", "44100", *FORMATS[fmt], str(dest)], check=True)
        listing.unlink()
        paths.append(dest)
    return paths


def build_corpus_from(music: Path, out: Path, n_tracks: int, seconds: float = 240.0,
                      formats: list[str] = list(FORMATS)) -> list[Path]:
    """Join consecutive files of a folder of real music (any format ffmpeg reads) into tracks of at
    least ``seconds``, cycling through formats; for music no model here was trained on."""
    from tagger import audio
    from tagger.errors import TaggerError

    pieces = []
    for p in sorted(q for q in music.rglob("*") if q.is_file()):
        try:
            pieces.append((p, audio.probe(p).duration))
        except (TaggerError, OSError):
            continue  # not audio, or unreadable: skipped
    total = sum(d for _, d in pieces)
    if not pieces or total < seconds:
        raise SystemExit(f"{music}: {total:.0f} s of readable audio, less than one {seconds:.0f} s track")
    paths, k = [], 0
    for i in range(n_tracks):
        chosen, length = [], 0.0
        while length < seconds:
            p, d = pieces[k % len(pieces)]
            chosen.append(p)
            length += d
            k += 1
        fmt = formats[i % len(formats)]
        dest = out / "music" / f"track{i:03d}.{fmt}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        inputs = [a for c in chosen for a in ("-i", str(c))]
        graph = "".join(f"[{j}:a:0]aresample=44100,aformat=sample_fmts=fltp:channel_layouts=stereo[a{j}];"
                        for j in range(len(chosen)))
        graph += "".join(f"[a{j}]" for j in range(len(chosen))) + f"concat=n={len(chosen)}:v=0:a=1[out]"
        subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *inputs, "-filter_complex", graph,
                        "-map", "[out]", *FORMATS[fmt], str(dest)], check=True)
        paths.append(dest)
    return paths


def heard_costs(paths: list[Path], model_name: str, how, runtime_name: str, student: bool) -> dict:
    """Per-track cost of each stage as a worker hears the track (``progressive.hear``, the stages a
    worker's log line names), in this one process with one thread: every track heard once untimed
    (first calls, the page cache), then once timed. With ``student``, the default's student hears
    first and the teacher only the tracks it hands on (``tagger.models.student``)."""
    from tagger import formats, timing
    from tagger.config import Settings
    from tagger.models import progressive, registry, runtime
    from tagger.workers import processes

    runtime.set_threads(1)
    runtime.set_runtime(runtime_name)
    runtime.set_student(student)
    model = registry.load(model_name)
    processes.warm_up(Settings(model=model_name, windows=how.windows, first_windows=how.first,
                               window_step=how.step, early_stop=how.stop, give_up=how.give_up, student=student))
    fmts = [formats.confirm(p) for p in paths]
    for p, fmt in zip(paths, fmts):
        progressive.hear(model, p, fmt, how)
    spent: dict[str, float] = {}
    windows = student_windows = by_student = 0
    for p, fmt in zip(paths, fmts):
        with timing.measuring() as t:
            heard = progressive.hear(model, p, fmt, how)
        for k, v in t.items():
            spent[k] = spent.get(k, 0.0) + v
        by_student += heard.by == "student"
        windows += 0 if heard.by == "student" else heard.windows
        student_windows += heard.windows if heard.by == "student" else heard.student_windows
    n = len(paths)
    out = {f"{k}_ms": 1000 * v / n for k, v in spent.items()}
    out.update({"teacher_windows": windows / n, "student_windows": student_windows / n,
                "by_student": by_student / n, "heard_ms": 1000 * sum(spent.values()) / n,
                "tag_write_ms": tag_write_ms(paths)})
    return out


def tag_write_ms(paths: list[Path]) -> float:
    """Per track: read the tags and write ours as a scan does (copy, verify, fsync, replace), on copies."""
    from tagger import formats, tags

    values = {"genre": ["Rock"], "confidence": ["0.900"], "model": ["bench 1"]}
    with tempfile.TemporaryDirectory() as tmp:
        copies = []
        for i, p in enumerate(paths):
            copies.append(Path(tmp) / f"{i}{p.suffix}")
            shutil.copyfile(p, copies[-1])
        os.sync()
        t = time.perf_counter()
        for c in copies:
            fmt = formats.confirm(c)
            tags.read(c, fmt)
            tags.write(c, fmt, values)
        return 1000 * (time.perf_counter() - t) / len(paths)


#: runs the tagger CLI, then prints the process's own peak RSS (VmHWM: this process image
#: only; ru_maxrss would include the benchmark's memory, inherited through fork)
_WITH_PEAK_RSS = ("import atexit, sys\n"
                  "from tagger.cli import entry\n"
                  "def peak():\n"
                  "    for line in open('/proc/self/status'):\n"
                  "        if line.startswith('VmHWM:'):\n"
                  "            sys.stderr.write('PEAK_RSS_KB ' + line.split()[1] + '\\n')\n"
                  "atexit.register(peak)\n"
                  "sys.argv[0] = 'tagger'\n"
                  "entry()\n")


def scan(env: dict, root: Path, *extra: str, rss: list | None = None) -> tuple[dict, float]:
    """Run `tagger scan`; with ``rss``, append the scan process's peak RSS in MB
    (for an unchanged tree no worker starts: the scanner alone)."""
    head = [sys.executable, "-c", _WITH_PEAK_RSS] if rss is not None else [sys.executable, "-m", "tagger"]
    t = time.perf_counter()
    out = subprocess.run([*head, "scan", str(root), "--json", "--quiet", *extra],
                         env=env, capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - t
    if rss is not None:
        rss.extend(int(m) / 1024 for m in re.findall(r"PEAK_RSS_KB (\d+)", out.stderr))
    return json.loads(out.stdout), seconds


def steady_rate(db_url: str, scan_id: int) -> float | None:
    """Tracks/s between the first job's start and the last job's end (start-up excluded)."""
    from sqlalchemy import create_engine, text

    with create_engine(db_url).connect() as conn:
        rows = conn.execute(text("SELECT started_at, finished_at FROM analyses WHERE scan_id = :s "
                                 "AND started_at IS NOT NULL AND finished_at IS NOT NULL"), {"s": scan_id}).all()
    if len(rows) < 2:
        return None
    from datetime import datetime

    parse = lambda v: v if isinstance(v, datetime) else datetime.fromisoformat(str(v))  # noqa: E731
    first = min(parse(r[0]) for r in rows)
    last = max(parse(r[1]) for r in rows)
    span = (last - first).total_seconds()
    return len(rows) / span if span > 0 else None


def peak_rss_mb(log: Path) -> list[float]:
    if not log.exists():
        return []
    return [float(m) for m in re.findall(r"peak RSS ([0-9.]+) MB", log.read_text(errors="replace"))]


def big_tree_rescan(n_files: int, env: dict, data_dir: Path, rss: list | None = None) -> float:
    """Time `tagger scan` of an unchanged tree of ``n_files`` already-analysed files."""
    from datetime import datetime, timezone

    from sqlalchemy import create_engine, insert

    from tagger.db import engine as engine_mod, schema

    tree = data_dir / "tree"
    rows = []
    now = datetime.now(timezone.utc)
    for i in range(n_files):
        d = tree / f"a{i // 1000:03d}" / f"b{(i // 100) % 10}"
        d.mkdir(parents=True, exist_ok=True)
        f = d / f"t{i:06d}.mp3"
        f.write_bytes(b"ID3")
        st = f.stat()
        rows.append({"raw_path": os.fsencode(f), "path": str(f), "format": "mp3", "size": st.st_size,
                     "mtime_ns": st.st_mtime_ns, "done_size": st.st_size, "done_mtime_ns": st.st_mtime_ns,
                     "updated_at": now})
    db_url = env["TAGGER_DB_URL"]
    engine_mod.upgrade(db_url)
    with create_engine(db_url).begin() as conn:  # as an earlier scan would have left them
        conn.execute(insert(schema.File), rows)
    summary, seconds = scan(env, tree, rss=rss)
    assert summary["unchanged"] == n_files, summary
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tracks", type=int, default=40)
    ap.add_argument("--clips-per-track", type=int, default=8, help="30 s GTZAN clips joined per track")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--tree", type=int, default=10_000, help="files in the synthetic re-scan tree")
    ap.add_argument("--model", default="", help="model (default: the default chain's first)")
    ap.add_argument("--runtime", default="keras", choices=("keras", "litert", "onnx"),
                    help="what runs the networks in the scans' workers, as in the bound (default keras: the "
                         "runtime = auto default would run a corpus of 60 tracks or fewer in LiteRT, and every "
                         "corpus in ONNX Runtime on a CPU without AVX-512)")
    ap.add_argument("--windows", type=int, default=10, help="windows planned per track (tagger scan --windows)")
    ap.add_argument("--first-windows", type=int, default=None, help="windows heard first (tagger scan --first-windows)")
    ap.add_argument("--window-step", type=int, default=None, help="windows heard at a time after the first "
                    "(tagger scan --window-step)")
    ap.add_argument("--formats", default=",".join(FORMATS), help="formats of the corpus, cycled (default: all four)")
    ap.add_argument("--music", type=Path, default=None,
                    help="build the corpus from this folder of real music instead of GTZAN clips "
                         "(e.g. Debian's game soundtracks; see README, Throughput)")
    ap.add_argument("--quick", action="store_true", help="a few short tracks: check that it runs")
    ap.add_argument("--chains", default="student",
                    help="comma-separated, run one after the other on fresh copies of the corpus: student (the "
                         "default: the student first, the teacher behind it), teacher (the teacher alone)")
    ap.add_argument("--corpus", type=Path, default=None,
                    help="keep the built corpus in this folder and, when it already holds one of the same "
                         "options, scan a fresh copy of it instead of building again")
    args = ap.parse_args()
    if args.quick:
        args.tracks, args.clips_per_track, args.tree = 4, 2, 300
    formats = args.formats.split(",")
    chains = args.chains.split(",")
    if set(chains) - {"student", "teacher"}:
        ap.error("--chains: student, teacher or both")
    if set(formats) - set(FORMATS):
        ap.error(f"--formats: choose among {', '.join(FORMATS)}")

    from tagger.config import Settings
    from tagger.models import registry
    from tagger.models.progressive import Hearing

    default = Settings().hearing
    how = Hearing(args.windows, default.first if args.first_windows is None else args.first_windows,
                  default.step if args.window_step is None else args.window_step, default.stop, default.give_up)

    model = args.model or registry.default_chain()[0]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # ONNX Runtime (1.29 and later) leaves a telemetry session file (.ses) in TMPDIR when it
        # loads: here and in the workers, inside the folder that goes when the bench ends
        os.environ["TMPDIR"] = str(tmp)
        t = time.perf_counter()
        if args.music:
            source = f"joined from {args.music}"
        else:
            source = "joined from GTZAN clips of one genre (the default head was trained on them)"
        recipe = json.dumps({"music": str(args.music or ""), "tracks": args.tracks, "formats": formats,
                             "clips_per_track": args.clips_per_track}, sort_keys=True)
        kept = args.corpus / "recipe.json" if args.corpus else None
        if kept and kept.exists() and kept.read_text() == recipe:
            shutil.copytree(args.corpus / "music", tmp / "music")
            paths = sorted((tmp / "music").rglob("track*.*"))
            source += f", copied from {args.corpus}"
        else:
            if args.music:
                paths = build_corpus_from(args.music, tmp, args.tracks, args.clips_per_track * 30.0, formats)
            else:
                paths = build_corpus(tmp / "music", args.tracks, args.clips_per_track, formats)
            if kept:
                shutil.rmtree(args.corpus, ignore_errors=True)
                shutil.copytree(tmp / "music", args.corpus / "music")
                kept.write_text(recipe)
        os.sync()  # a library at rest: the corpus's writeback would otherwise slow the scans' fsyncs
        from tagger import audio

        minutes = sum(audio.probe(p).duration for p in paths) / 60 / len(paths)
        print(f"corpus: {len(paths)} tracks of {minutes:.1f} min on average ({', '.join(formats)}), {source}; "
              f"built in {time.perf_counter() - t:.0f} s")
        table = {}
        for chain in chains:
            table[chain] = run_chain(chain, args, model, how, tmp, paths)
        if len(chains) > 1:
            print()
            print("side by side (start-up excluded; bound: one process per worker, as a worker hears):")
            keys = [("windows heard by the teacher per track", "teacher_windows", "{:.2f}"),
                    ("windows heard by the student per track", "student_windows", "{:.2f}"),
                    ("tracks the student alone answered", "by_student", "{:.2f}"),
                    ("dry run, tracks/s", "dry", "{:.2f}"), ("writing tags, tracks/s", "writes", "{:.2f}"),
                    ("bound, dry run, tracks/s", "bound", "{:.2f}"),
                    ("bound with tag writes, tracks/s", "bound_writes", "{:.2f}"),
                    ("dry run / bound", "dry_ratio", "{:.2f}"),
                    ("writing tags / bound with tag writes", "writes_ratio", "{:.2f}"),
                    ("worker start-up (warm-up), s", "startup", "{}"),
                    ("peak RSS per worker, MB", "rss", "{}")]
            print("| | " + " | ".join(chains) + " |")
            print("| --- |" + " ---: |" * len(chains))
            for label, key, fmt in keys:
                print(f"| {label} | " + " | ".join(fmt.format(table[c].get(key)) for c in chains) + " |")
        scanner_rss: list[float] = []
        tree_s = big_tree_rescan(args.tree, table[chains[-1]]["env"], tmp, rss=scanner_rss)
        print(f"incremental re-scan of an unchanged {args.tree}-file tree: {tree_s:.2f} s "
              f"(scanner peak RSS {scanner_rss[0]:.0f} MB)")


def run_chain(chain: str, args, model: str, how, tmp: Path, paths: list[Path]) -> dict:
    """Scan a fresh copy of the corpus (dry, then writing tags, then unchanged) with one chain:
    ``student`` (the default: the student first, the teacher behind it) or ``teacher`` (the
    teacher hears every track); then its bound in this process. Prints its figures; returns them."""
    student = chain == "student"
    music = tmp / f"music-{chain}"
    shutil.copytree(tmp / "music", music)
    os.sync()
    copies = sorted(music.rglob("track*.*"))
    data = tmp / f"data-{chain}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAGGER_")}
    env.update({"TAGGER_DATA_DIR": str(data), "TAGGER_WORKERS": str(args.workers),
                "TAGGER_DB_URL": f"sqlite:///{data / 'tagger.sqlite3'}", "TAGGER_MIN_CONFIDENCE": "0",
                "TAGGER_MODEL": model, "TAGGER_CONFIG": os.devnull,
                "TAGGER_WINDOWS": str(how.windows), "TAGGER_FIRST_WINDOWS": str(how.first),
                "TAGGER_WINDOW_STEP": str(how.step), "TAGGER_EARLY_STOP": str(how.stop),
                "TAGGER_GIVE_UP": str(how.give_up), "TAGGER_RUNTIME": args.runtime,
                "TAGGER_STUDENT": "on" if student else "off"})
    summary, wall = scan(env, music, "--dry-run")
    steady = steady_rate(env["TAGGER_DB_URL"], summary["scan_id"])
    rescan, rescan_wall = scan(env, music)  # dry run recorded nothing as done: a real run
    steady_writes = steady_rate(env["TAGGER_DB_URL"], rescan["scan_id"])
    second, second_wall = scan(env, music)
    b = heard_costs(copies, model, how, args.runtime, student)
    naive_rate = args.workers / (b["heard_ms"] / 1000)
    write_rate = args.workers / ((b["heard_ms"] + b["tag_write_ms"]) / 1000)
    print(f"--- chain: {chain} ({'the student first, the teacher behind it' if student else 'the teacher alone'}); "
          f"model {model}, runtime {args.runtime}; {args.workers} worker processes; windows {how.windows}, "
          f"first {how.first}, then {how.step or 'the rest'} at a time, stop at {how.stop}, give up below {how.give_up}")
    print(f"windows heard per track: teacher {b['teacher_windows']:.2f}, student {b['student_windows']:.2f} "
          f"(the student alone answered {b['by_student']:.0%} of the tracks)")
    print(f"end to end (dry run), start-up included: {len(paths) / wall:6.2f} tracks/s ({wall:.1f} s)")
    print(f"end to end (dry run), start-up excluded: {steady or float('nan'):6.2f} tracks/s")
    print(f"end to end with tag writes, start-up included: {len(paths) / rescan_wall:6.2f} tracks/s "
          f"({rescan_wall:.1f} s)")
    print(f"end to end with tag writes, start-up excluded: {steady_writes or float('nan'):6.2f} tracks/s")
    stages = ", ".join(f"{k[:-3]} {b[k]:.0f} ms" for k in ("decode_ms", "features_ms", "student_ms", "model_ms")
                       if k in b)
    print(f"bound per track, one process alone, as a worker hears: {b['heard_ms']:.0f} ms ({stages})")
    print(f"bound with {args.workers} processes (each as fast as one alone): {naive_rate:6.2f} tracks/s")
    print(f"tag read and write per track, one process alone: {b['tag_write_ms']:.0f} ms; bound with it: "
          f"{write_rate:6.2f} tracks/s")
    print(f"ratio end-to-end (start-up excluded) / bound: dry run {(steady or 0) / naive_rate:.2f}, "
          f"with tag writes {(steady_writes or 0) / naive_rate:.2f} (against the bound with tag writes "
          f"{(steady_writes or 0) / write_rate:.2f})")
    rss = peak_rss_mb(data / "worker.log")
    startup = warm_up_seconds(data / "worker.log")
    print(f"peak RSS per worker: {', '.join(f'{r:.0f} MB' for r in rss) or 'n/a'}; worker warm-up: "
          f"{', '.join(f'{x:.1f} s' for x in startup) or 'n/a'}")
    print(f"second scan of the unchanged library: {second_wall:.2f} s ({second['unchanged']} unchanged)")
    return {"env": env, "dry": steady, "writes": steady_writes, "bound": naive_rate, "bound_writes": write_rate,
            "dry_ratio": (steady or 0) / naive_rate, "writes_ratio": (steady_writes or 0) / write_rate,
            "teacher_windows": b["teacher_windows"], "student_windows": b["student_windows"],
            "by_student": b["by_student"], "rss": "–".join(f"{r:.0f}" for r in (min(rss), max(rss))) if rss else "n/a",
            "startup": "–".join(f"{x:.1f}" for x in (min(startup), max(startup))) if startup else "n/a"}


def warm_up_seconds(log: Path) -> list[float]:
    """Each worker's warm-up (model load and first calls) from the worker log."""
    if not log.exists():
        return []
    return [float(m) for m in re.findall(r"warmed up .* in ([0-9.]+)s", log.read_text(errors="replace"))]


if __name__ == "__main__":
    main()
