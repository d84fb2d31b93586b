"""The "does not sound like music" check (tagger/musiclike.py), measured: on every clip of the
shared GTZAN copy (must fire on none), on the real game soundtracks unpacked under a Debian
folder (files of 20 s or more; many shorter ones are sound effects), and on synthetic test
signals (sines, sweeps, square and sawtooth tones, hums, dual tones, white, pink and brown
noise, clicks) written as files and decoded as a scan decodes them.

Each file is heard as a scan plans it (10 windows of 3 s spread over the track); the check
runs on the first 3 of them (what a scan hears when the model is sure at once) and on all
10 (what it hears when the model is unsure), and a file counts as fired on when either fires.

    python bench/bench_musiclike.py [--gtzan DIR] [--debian DIR] [--cache DIR] [--near 8]
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tagger import audio, formats, musiclike  # noqa: E402
from tagger.errors import TaggerError  # noqa: E402
from tagger.models.progressive import first_indices  # noqa: E402
from tagger.options import Hearing  # noqa: E402

GTZAN = ROOT.parent / "shared" / "datasets" / "gtzan"
DEBIAN = Path("/work/debian/x")
MIN_SECONDS = 20.0


@contextlib.contextmanager
def _quiet():
    """libmpg123 reports damaged MP3 frames of some GTZAN clips on stderr: not this script's figures."""
    saved = os.dup(2)
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def windows_of(path: Path, cache: Path | None) -> tuple[list[np.ndarray], int, float]:
    """Every planned window of a file, decoded as a scan decodes it: (windows, sr, duration)."""
    key = cache / (hashlib.sha1(str(path).encode()).hexdigest() + ".npz") if cache else None
    if key is not None and key.exists():
        z = np.load(key)
        return list(z["w"]), int(z["sr"]), float(z["d"])
    fmt = formats.confirm(str(path))
    info, starts = audio.plan(path, fmt, n_windows=Hearing.windows)
    with audio.Reader(path, info) as reader, _quiet():
        clip = reader.read(starts)
    if key is not None:
        np.savez(key, w=np.stack(clip.windows), sr=clip.sr, d=info.duration)
    return clip.windows, clip.sr, info.duration


def judged(windows: list[np.ndarray]) -> tuple[musiclike.Signal, musiclike.Signal, str | None, float]:
    """The figures on the first 3 windows and on all of them, the kind it names (first 3, else
    all; None: may be music), and the milliseconds the check of the first 3 took."""
    first = [windows[i] for i in first_indices(len(windows), Hearing.first)] if len(windows) > Hearing.first \
        else windows
    t = time.perf_counter()
    some = musiclike.measure(first)
    ms = (time.perf_counter() - t) * 1000
    every = musiclike.measure(windows)
    return some, every, some.kind or every.kind, ms


def line(name: str, some: musiclike.Signal, every: musiclike.Signal, kind: str | None) -> str:
    def figs(g: musiclike.Signal) -> str:
        return (f"steady {g.steadiness_db:5.2f} dB, peak {g.peak_db:5.1f} dB, purity {g.purity:.3f}, "
                f"pitch {g.pitch_db:5.1f} dB")
    return f"  {kind or '-':<22} {figs(some)} | all: {figs(every)}  {name}"


def run_set(title: str, paths: list[Path], cache: Path | None, near: int, label=str) -> list[tuple]:
    rows, skipped, ms = [], 0, []
    for p in paths:
        try:
            w, sr, duration = windows_of(p, cache)
        except TaggerError as exc:  # a scan fails it the same way, with this reason
            if "too short" not in exc.message:
                print(f"  not heard, {exc.message}: {p}")
            skipped += 1
            continue
        if duration < MIN_SECONDS:
            skipped += 1
            continue
        some, every, kind, t = judged(w)
        ms.append(t)
        rows.append((label(p), some, every, kind))
    fired = [r for r in rows if r[3]]
    print(f"\n{title}: {len(rows)} files measured ({skipped} under {MIN_SECONDS:.0f} s skipped); "
          f"fires on {len(fired)}; the check of 3 windows took {np.median(ms):.1f} ms median, {max(ms):.1f} ms max")
    for r in fired:
        print(line(*r))
    passed = [r for r in rows if not r[3]]
    if passed and near:
        print(f"  the steadiest it passes (fires below {musiclike.STEADY_DB} dB):")
        for r in sorted(passed, key=lambda r: min(r[1].steadiness_db, r[2].steadiness_db))[:near]:
            print(line(*r))
        print(f"  the purest it passes (fires from {musiclike.PURE}):")
        for r in sorted(passed, key=lambda r: -max(r[1].purity, r[2].purity))[:near]:
            print(line(*r))
        print(f"  the least pitched it passes (fires below {musiclike.PITCH_DB} dB):")
        for r in sorted(passed, key=lambda r: min(r[1].pitch_db, r[2].pitch_db))[:near]:
            print(line(*r))
    return rows


# ---------------------------------------------------------------- synthetic signals

SR = 44100
SECONDS = 30.0


def _noise(color: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """White, pink (-3 dB/octave) or brown (-6 dB/octave) Gaussian noise, made in the frequency domain."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / SR)
    f[0] = f[1]
    spec *= {"white": 1.0, "pink": f ** -0.5, "brown": f ** -1.0}[color]
    y = np.fft.irfft(spec, n)
    return y / np.abs(y).max()


def synthetic() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(16)
    t = np.arange(int(SR * SECONDS)) / SR
    n = len(t)

    def sine(f):
        return np.sin(2 * np.pi * f * t)

    log_phase = 2 * np.pi * 20 * SECONDS / np.log(10000 / 20) * (np.exp(t / SECONDS * np.log(10000 / 20)) - 1)
    lin_phase = 2 * np.pi * (20 * t + (10000 - 20) / (2 * SECONDS) * t ** 2)
    dtmf_rows, dtmf_cols = (697, 770, 852, 941), (1209, 1336, 1477)
    digits = np.zeros(n)
    step = int(0.3 * SR)
    for k, start in enumerate(range(0, n - step, step)):
        seg = t[start:start + int(0.2 * SR)]
        pair = dtmf_rows[k % 4], dtmf_cols[(k // 4) % 3]
        digits[start:start + len(seg)] = np.sin(2 * np.pi * pair[0] * seg) + np.sin(2 * np.pi * pair[1] * seg)
    stepped = np.concatenate([np.sin(2 * np.pi * f * t[:n // 10]) for f in (100, 250, 500, 1000, 2000, 3000,
                                                                               4000, 6000, 8000, 10000)])
    clicks = np.zeros(n)
    clicks[::SR // 4] = 1.0
    random_clicks = np.zeros(n)
    random_clicks[rng.integers(0, n, 200)] = rng.uniform(0.2, 1.0, 200)
    hum = sine(50) + 0.5 * sine(100) + 0.3 * sine(150) + 0.2 * sine(250) + 0.01 * rng.standard_normal(n)
    signals = {
        "sine 50 Hz": sine(50), "sine 440 Hz": sine(440), "sine 1 kHz": sine(1000), "sine 8 kHz": sine(8000),
        "sine 1 kHz + white noise at -20 dB": sine(1000) + 0.07 * rng.standard_normal(n),
        "log sine sweep 20 Hz-10 kHz": np.sin(log_phase), "linear sine sweep 20 Hz-10 kHz": np.sin(lin_phase),
        "stepped sine 100 Hz-10 kHz (3 s each)": stepped,
        "square 220 Hz": np.sign(sine(220)), "sawtooth 220 Hz": 2 * ((220 * t) % 1) - 1,
        "triangle 220 Hz": 2 * np.abs(2 * ((220 * t) % 1) - 1) - 1,
        "50 Hz hum with harmonics": hum, "dial tone 350+440 Hz": sine(350) + sine(440),
        "DTMF-like dual tones (0.2 s on, 0.1 s off)": digits,
        "white noise": _noise("white", n, rng), "pink noise": _noise("pink", n, rng),
        "brown noise": _noise("brown", n, rng),
        "clicks, 4 a second": clicks, "200 clicks at random": random_clicks,
    }
    return {k: (0.3 * v / np.abs(v).max()).astype(np.float32) for k, v in signals.items()}


def run_synthetic() -> None:
    import soundfile as sf

    print("\nsynthetic signals (30 s; as WAV, and as 128 kbit/s MP3 through ffmpeg):")
    caught = {"wav": 0, "mp3": 0}
    with tempfile.TemporaryDirectory() as tmp:
        for name, y in synthetic().items():
            wav = Path(tmp) / "signal.wav"
            sf.write(wav, y, SR, subtype="PCM_16")
            mp3 = Path(tmp) / "signal.mp3"
            subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(wav), "-b:a", "128k", str(mp3)], check=True)
            for ext, path in (("wav", wav), ("mp3", mp3)):
                w, sr, _ = windows_of(path, None)
                some, every, kind, _ = judged(w)
                caught[ext] += kind is not None
                print(line(f"{name} ({ext})", some, every, kind))
    total = len(synthetic())
    print(f"  caught: {caught['wav']} of {total} as WAV, {caught['mp3']} of {total} as MP3")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gtzan", type=Path, default=GTZAN)
    ap.add_argument("--debian", type=Path, default=DEBIAN)
    ap.add_argument("--cache", type=Path, help="keep the decoded windows here (a second run decodes nothing)")
    ap.add_argument("--near", type=int, default=5, help="list this many passed files nearest each threshold")
    ap.add_argument("--only", choices=("gtzan", "debian", "synthetic"))
    args = ap.parse_args()
    if args.cache:
        args.cache.mkdir(parents=True, exist_ok=True)
    print(f"thresholds: steady below {musiclike.STEADY_DB} dB (a tone when a peak stands {musiclike.PEAK_DB} dB "
          f"out), pure from {musiclike.PURE}, pitch below {musiclike.PITCH_DB} dB")
    if args.only in (None, "synthetic"):
        run_synthetic()
    if args.only in (None, "gtzan") and args.gtzan.is_dir():
        run_set("GTZAN (shared copy)", sorted(args.gtzan.glob("*/*.mp3")), args.cache, args.near,
                label=lambda p: f"{p.parent.name}/{p.name}")
    if args.only in (None, "debian") and args.debian.is_dir():
        paths, seen = [], set()
        for p in sorted(p for ext in ("ogg", "opus", "mp3") for p in args.debian.rglob(f"*.{ext}")):
            digest = hashlib.sha1(p.read_bytes()).hexdigest()  # drascula's 6 language folders: the same pieces
            if digest not in seen:
                seen.add(digest)
                paths.append(p)
        print(f"\n{len(paths)} distinct files of {sum(1 for ext in ('ogg', 'opus', 'mp3') for _ in args.debian.rglob(f'*.{ext}'))}"
              f" under {args.debian}")
        rows = run_set("Debian game audio", paths, args.cache, args.near,
                       label=lambda p: str(p.relative_to(args.debian)))
        # sound effects and voices lie under sound/ or sounds/ folders (nexuiz keeps its music in sound/cdtracks)
        music = [r for r in rows if "/sound" not in r[0] or "cdtracks" in r[0]]
        print(f"  of them music pieces (not under a sound folder): {len(music)}, fires on {sum(bool(r[3]) for r in music)}")

if __name__ == "__main__":
    main()
