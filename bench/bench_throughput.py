"""Throughput of `tagger scan` and the bounds set by decoding, features and the model.

Builds a corpus of real music in a temporary folder (GTZAN clips of one genre
joined into 4-minute tracks, or with ``--music DIR`` any folder of real music
joined into tracks of at least 4 minutes), re-encoded to MP3, FLAC, Ogg and
M4A, then prints:

- end to end: tracks/s of `tagger scan` (embedded default), with and without start-up;
- bounds, in one process: decode-only (exactly the windows the analysis hears),
  features-only, model-only (batched, and one track per call), per track; the
  bound of N workers is N such processes, each as fast as one alone;
- the ratio end-to-end / bound, peak RSS per worker, and the time of a second,
  incremental scan of the unchanged library;
- the incremental re-scan of a large synthetic tree (files recorded as done),
  with the scanner's peak RSS.

    python bench/bench_throughput.py                # 40 tracks, 2 workers
    python bench/bench_throughput.py --music DIR    # music no model here was trained on
    python bench/bench_throughput.py --quick        # CI: 4 short tracks, checks it runs
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GTZAN = ROOT.parent / "shared" / "datasets" / "gtzan"
FORMATS = {"mp3": ["-c:a", "libmp3lame", "-b:a", "192k"], "flac": ["-c:a", "flac"],
           "ogg": ["-c:a", "libvorbis", "-q:a", "5"], "m4a": ["-c:a", "aac", "-b:a", "192k"]}


def build_corpus(out: Path, n_tracks: int, clips_per_track: int) -> list[Path]:
    """Join GTZAN clips of one genre into longer tracks, cycling through formats."""
    genres = sorted(p.name for p in GTZAN.iterdir() if p.is_dir() and p.name != "splits")
    clips = {g: sorted((GTZAN / g).glob("*.mp3")) for g in genres}
    paths = []
    for i in range(n_tracks):
        genre = genres[i % len(genres)]
        pool = clips[genre]
        chosen = [pool[(i * clips_per_track + k) % len(pool)] for k in range(clips_per_track)]
        fmt = list(FORMATS)[i % len(FORMATS)]
        dest = out / genre / f"track{i:03d}.{fmt}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        listing = out / f".list{i}.txt"
        listing.write_text("".join(f"file '{c}'\n" for c in chosen))
        subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "concat", "-safe", "0", "-i", str(listing),
                        "-ac", "2", "-ar", "44100", *FORMATS[fmt], str(dest)], check=True)
        listing.unlink()
        paths.append(dest)
    return paths


def build_corpus_from(music: Path, out: Path, n_tracks: int, seconds: float = 240.0) -> list[Path]:
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
        fmt = list(FORMATS)[i % len(FORMATS)]
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


def bounds(paths: list[Path], model_name: str, windows: int = 10, first: int = 3,
           stop: float = 0.8) -> dict:
    """Per-track cost of each stage, measured in this one process (single-threaded runtimes).

    Each stage handles exactly the windows the analysis uses: which windows of a
    track the model hears (progressive hearing, ``tagger.models.progressive``)
    is found first, untimed; then those windows are decoded, turned into
    features and run through the model, each stage timed on its own.
    """
    from tagger import audio, features, formats
    from tagger.models import progressive, registry, runtime

    runtime.set_threads(1)
    model = registry.load(model_name)
    warm = audio.load_clip(paths[0], formats.confirm(paths[0]))  # imports, filterbanks, first-call costs
    features.mel_patches(warm.windows[0], warm.sr)
    features.mfcc_stats(warm.windows[:1], warm.sr)
    model.predict_batch([warm])  # warm-up: graph tracing
    plans = []
    for p in paths:
        fmt = formats.confirm(p)
        heard = progressive.hear(model, p, fmt, windows, first, stop)
        plans.append((p, heard.clip.info, heard.clip.starts))
    clips = []
    t = time.perf_counter()
    for p, info, starts in plans:
        clips.append(audio.read_windows(p, info, starts))
    t_decode = time.perf_counter() - t
    t = time.perf_counter()
    for c in clips:
        for w in c.windows:
            features.mel_patches(w, c.sr)
    t_features = time.perf_counter() - t
    t = time.perf_counter()
    for i in range(0, len(clips), 8):
        model.predict_batch(clips[i:i + 8])
    t_model = time.perf_counter() - t
    n = len(paths)
    out = {"windows_heard": sum(len(c.windows) for c in clips) / n, "decode_ms": 1000 * t_decode / n,
           "features_ms": 1000 * t_features / n, "model_ms_incl_features": 1000 * t_model / n}
    t = time.perf_counter()  # batching across files or not: one track per call, as a job runs it
    for c in clips:
        model.predict_batch([c])
    out["model_ms_one_per_call"] = 1000 * (time.perf_counter() - t) / n
    return out


#: runs the tagger CLI, then prints the process's own peak RSS (VmHWM: this process image
#: only; ru_maxrss would include the benchmark's memory, inherited through fork)
_WITH_PEAK_RSS = ("import atexit, sys\n"
                  "from tagger.cli import main\n"
                  "def peak():\n"
                  "    for line in open('/proc/self/status'):\n"
                  "        if line.startswith('VmHWM:'):\n"
                  "            sys.stderr.write('PEAK_RSS_KB ' + line.split()[1] + '\\n')\n"
                  "atexit.register(peak)\n"
                  "sys.argv[0] = 'tagger'\n"
                  "main()\n")


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
    ap.add_argument("--windows", type=int, default=10, help="windows planned per track (tagger scan --windows)")
    ap.add_argument("--first-windows", type=int, default=3, help="windows heard first (tagger scan --first-windows)")
    ap.add_argument("--music", type=Path, default=None,
                    help="build the corpus from this folder of real music instead of GTZAN clips "
                         "(e.g. Debian's game soundtracks; see README, Throughput)")
    ap.add_argument("--quick", action="store_true", help="a few short tracks: check that it runs")
    args = ap.parse_args()
    if args.quick:
        args.tracks, args.clips_per_track, args.tree = 4, 2, 300

    from tagger.models import registry

    model = args.model or registry.default_chain()[0]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        if args.music:
            paths = build_corpus_from(args.music, tmp, args.tracks, args.clips_per_track * 30.0)
            source = f"joined from {args.music}"
        else:
            paths = build_corpus(tmp / "music", args.tracks, args.clips_per_track)
            source = "joined from GTZAN clips of one genre (the default head was trained on them)"
        from tagger import audio

        minutes = sum(audio.probe(p).duration for p in paths) / 60 / len(paths)
        print(f"corpus: {len(paths)} tracks of {minutes:.1f} min on average ({', '.join(FORMATS)}), {source}; "
              f"built in {time.perf_counter() - t:.0f} s")
        data = tmp / "data"
        env = {k: v for k, v in os.environ.items() if not k.startswith("TAGGER_")}
        env.update({"TAGGER_DATA_DIR": str(data), "TAGGER_WORKERS": str(args.workers),
                    "TAGGER_DB_URL": f"sqlite:///{data / 'tagger.sqlite3'}", "TAGGER_MIN_CONFIDENCE": "0",
                    "TAGGER_MODEL": model, "TAGGER_CONFIG": str(tmp / "none.toml"),
                    "TAGGER_WINDOWS": str(args.windows), "TAGGER_FIRST_WINDOWS": str(args.first_windows)})

        summary, wall = scan(env, tmp / "music", "--dry-run")
        steady = steady_rate(env["TAGGER_DB_URL"], summary["scan_id"])
        rescan, rescan_wall = scan(env, tmp / "music")  # dry run recorded nothing as done: a real run
        second, second_wall = scan(env, tmp / "music")
        hearing = {"windows": args.windows, "first": args.first_windows, "stop": 0.8}
        b = bounds(paths, model, **hearing)
        per_track_bound = (b["decode_ms"] + b["model_ms_incl_features"]) / 1000
        naive_rate = args.workers / per_track_bound
        print(f"model: {model}; {args.workers} worker processes; windows {args.windows}, first "
              f"{args.first_windows}: {b['windows_heard']:.2f} windows heard per track")
        print(f"end to end (dry run), start-up included: {len(paths) / wall:6.2f} tracks/s ({wall:.1f} s)")
        print(f"end to end (dry run), start-up excluded: {steady or float('nan'):6.2f} tracks/s")
        print(f"end to end with tag writes, start-up included: {len(paths) / rescan_wall:6.2f} tracks/s")
        print(f"bound per track, one process alone: decode {b['decode_ms']:.0f} ms, features {b['features_ms']:.0f} ms, "
              f"model incl. features {b['model_ms_incl_features']:.0f} ms")
        print(f"model incl. features, ms per track: 8 tracks per call {b['model_ms_incl_features']:.0f}, "
              f"1 track per call {b['model_ms_one_per_call']:.0f}")
        print(f"bound with {args.workers} processes (each as fast as one alone): {naive_rate:6.2f} tracks/s")
        print(f"ratio end-to-end (start-up excluded) / bound: {(steady or 0) / naive_rate:.2f}")
        rss = peak_rss_mb(data / "worker.log")
        print(f"peak RSS per worker: {', '.join(f'{r:.0f} MB' for r in rss) or 'n/a'}")
        print(f"second scan of the unchanged library: {second_wall:.2f} s ({second['unchanged']} unchanged)")
        scanner_rss: list[float] = []
        tree_s = big_tree_rescan(args.tree, env, tmp, rss=scanner_rss)
        print(f"incremental re-scan of an unchanged {args.tree}-file tree: {tree_s:.2f} s "
              f"(scanner peak RSS {scanner_rss[0]:.0f} MB)")


if __name__ == "__main__":
    main()
