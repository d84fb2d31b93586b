"""The "does not sound like music" check: test signals are named, real music is not, and a scan
leaves such a file untagged, recorded as low confidence with the reason."""
from __future__ import annotations

import json
import subprocess

import audiofiles
import numpy as np
import pytest
import soundfile as sf
from services import run_cli

from tagger import audio, features, musiclike, pipeline
from tagger.models.base import Prediction
from tagger.models.predictor import unless_no_music
from tagger.options import ScanOptions

SR = features.SR
N = features.PATCH_SAMPLES


def _windows(y: np.ndarray, n: int = 3) -> list[np.ndarray]:
    """``n`` windows spread over ``y``, as a scan cuts them."""
    starts = np.linspace(0, len(y) - N, n).astype(int)
    return [y[s:s + N].astype(np.float32) for s in starts]


def _signal(kind: str, seconds: float = 30.0, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    if kind == "sine":
        return 0.3 * np.sin(2 * np.pi * 440 * t)
    if kind == "sweep":  # logarithmic, 20 Hz to 10 kHz
        rate = np.log(10000 / 20) / seconds
        return 0.3 * np.sin(2 * np.pi * 20 / rate * (np.exp(rate * t) - 1))
    if kind == "square":
        return 0.3 * np.sign(np.sin(2 * np.pi * 220 * t))
    if kind == "sawtooth":
        return 0.3 * (2 * ((220 * t) % 1) - 1)
    if kind == "dtmf":  # dual tones of 0.2 s, 0.1 s apart, stepping through the keypad's pairs
        y = np.zeros_like(t)
        for k, start in enumerate(range(0, len(t) - int(0.3 * SR), int(0.3 * SR))):
            seg = t[:int(0.2 * SR)]
            lo, hi = (697, 770, 852, 941)[k % 4], (1209, 1336, 1477)[k // 4 % 3]
            y[start:start + len(seg)] = 0.15 * (np.sin(2 * np.pi * lo * seg) + np.sin(2 * np.pi * hi * seg))
        return y
    if kind == "clicks":  # a metronome of bare impulses, 4 a second
        y = np.zeros_like(t)
        y[::SR // 4] = 0.5
        return y
    if kind == "random clicks":  # 200 impulses at random, of random strength
        y = np.zeros_like(t)
        y[rng.integers(0, len(t), 200)] = rng.uniform(0.1, 0.5, 200)
        return y
    white = rng.standard_normal(len(t))
    if kind == "white":
        return 0.1 * white
    spec = np.fft.rfft(white)
    f = np.maximum(np.fft.rfftfreq(len(t), 1 / SR), 1.0)
    y = np.fft.irfft(spec * (f ** -0.5 if kind == "pink" else f ** -1.0), len(t))
    return 0.3 * y / np.abs(y).max()


@pytest.mark.parametrize("kind,named", [
    ("sine", musiclike.STEADY_TONE), ("square", musiclike.STEADY_TONE), ("sawtooth", musiclike.STEADY_TONE),
    ("white", musiclike.STEADY_NOISE), ("pink", musiclike.STEADY_NOISE), ("brown", musiclike.STEADY_NOISE),
    ("sweep", musiclike.PURE_TONES), ("dtmf", musiclike.PURE_TONES),
    ("clicks", musiclike.NO_PITCH), ("random clicks", musiclike.NO_PITCH),
])
def test_test_signals_are_named(kind, named):
    assert musiclike.measure(_windows(_signal(kind))).kind == named
    assert musiclike.reason(_windows(_signal(kind))) == f"does not sound like music ({named})"


def test_clicks_in_an_mp3_have_no_pitch(tmp_path):
    """Through the encoder and the decoder a scan uses, as a file of a library: MP3's pre-echo
    around each click gives it no pitch."""
    wav, mp3 = tmp_path / "clicks.wav", tmp_path / "clicks.mp3"
    sf.write(wav, _signal("random clicks").astype(np.float32), SR)
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(wav), "-b:a", "192k", str(mp3)], check=True)
    signal = musiclike.measure(audio.load_clip(mp3, n_windows=10).windows)
    assert signal.kind == musiclike.NO_PITCH and signal.pitch_db < musiclike.PITCH_DB - 2


def test_a_tone_with_a_little_life_in_it_is_not_steady():
    """The steadiness margin's other side: the same sine, its loudness moving by ±2 dB twice a
    second (a slow tremolo; no steady test signal does that), is not steady. One pure tone it
    still is, and purity says so."""
    t = np.arange(30 * SR) / SR
    y = 0.3 * np.sin(2 * np.pi * 440 * t) * 10 ** (2 * np.sin(2 * np.pi * 2 * t) / 20)
    signal = musiclike.measure(_windows(y))
    assert signal.steadiness_db > musiclike.STEADY_DB and signal.kind == musiclike.PURE_TONES


@pytest.mark.parametrize("clip", [
    "classical/classical.00001.mp3",  # among the purest clips (a solo instrument)
    "metal/metal.00009.mp3",  # the steadiest (a dense, loud wall of guitars)
    "metal/metal.00007.mp3",  # the least pitched of GTZAN's clips
    "jazz/jazz.00007.mp3",
    "blues/blues.00045.mp3",
])
def test_real_music_passes(gtzan, clip):
    for n in (3, 10):  # what a scan hears first, and everything it may hear
        windows = audio.load_clip(gtzan / clip, n_windows=n).windows
        signal = musiclike.measure(windows)
        assert signal.kind is None, (clip, n, signal)
        assert signal.steadiness_db > 1.5 * musiclike.STEADY_DB and signal.purity < musiclike.PURE - 0.05
        assert signal.pitch_db > musiclike.PITCH_DB + 6
        assert musiclike.reason(windows) is None


def test_a_prediction_on_no_music_is_worth_nothing_whatever_the_threshold(gtzan):
    info = audio.AudioInfo(30 * SR, SR, 1, "synthetic")
    sure = Prediction(genre="jazz", confidence=0.97, top=[("jazz", 0.97), ("blues", 0.02), ("rock", 0.01)],
                      model="m", version="1", decided_by="model", genres=["jazz"])
    noise = unless_no_music(sure, audio.Clip(windows=_windows(_signal("white")), sr=SR, info=info))
    assert noise.confidence == 0.0 and noise.reason == "does not sound like music (steady noise)"
    assert noise.top == sure.top  # what the model said stays on record
    for threshold in (0.0, 0.8):
        options = ScanOptions(min_confidence=threshold)
        assert pipeline.decide(noise, {}, options, "mp3").action == pipeline.LOW_CONFIDENCE
        assert pipeline.decide(sure, {}, options, "mp3").action == pipeline.WRITE
    music = audio.load_clip(gtzan / "jazz" / "jazz.00007.mp3", n_windows=3)
    assert unless_no_music(sure, music) is sure


def test_scan_leaves_test_signals_untagged_and_says_why(settings, gtzan, tmp_path):
    """A real scan (workers, SQLite) at threshold 0: the model would tag anything, yet the sweep
    and the noise get no tag, are recorded low confidence with the reason, and keep every byte."""
    lib = tmp_path / "lib"
    lib.mkdir()
    sweep = lib / "sweep.wav"
    sf.write(sweep, _signal("sweep", 20).astype(np.float32), SR, subtype="PCM_16")
    noise_wav = tmp_path / "noise.wav"
    sf.write(noise_wav, _signal("white", 20).astype(np.float32), SR, subtype="PCM_16")
    noise = lib / "noise.mp3"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(noise_wav), "-b:a", "128k", str(noise)], check=True)
    music = lib / "jazz.00007.mp3"
    music.write_bytes((gtzan / "jazz" / "jazz.00007.mp3").read_bytes())
    before = {p: p.read_bytes() for p in (sweep, noise)}

    def lines(run) -> dict[str, str]:
        assert run.returncode == 0, run.stderr
        return {line.split(": ", 1)[0].split()[-1]: line for line in run.stdout.splitlines() if str(lib) in line}

    dry = lines(run_cli(settings, "scan", str(lib), "-v", "--dry-run"))
    assert dry[str(noise)].endswith(f"would write nothing, does not sound like music ({musiclike.STEADY_NOISE})")
    assert "would write genre - → " in dry[str(music)]
    lines = lines(run_cli(settings, "scan", str(lib), "-v"))
    assert lines[str(sweep)].startswith("low confidence") and lines[str(sweep)].endswith(
        f"no tag, does not sound like music ({musiclike.PURE_TONES})")
    assert lines[str(noise)].endswith(f"no tag, does not sound like music ({musiclike.STEADY_NOISE})")
    assert lines[str(music)].startswith("tagged")  # real music at threshold 0: tagged

    for path, fmt in ((sweep, "wav"), (noise, "mp3")):
        assert path.read_bytes() == before[path]  # nothing written: not the tags, not the audio
        written = audiofiles.all_tags(path, fmt)
        assert not any("genre" in k.lower() or "TAGGER" in k.upper() or k in ("TCON", "IGNR") for k in written), written

    doc = json.loads(run_cli(settings, "report", "--low-confidence", "--format", "json").stdout)
    low = {r["path"]: r for r in doc["low_confidence"]}
    assert set(low) == {str(sweep), str(noise)}
    assert low[str(sweep)]["reason"] == f"does not sound like music ({musiclike.PURE_TONES})"
    assert low[str(noise)]["reason"] == f"does not sound like music ({musiclike.STEADY_NOISE})"
    assert all(r["confidence"] == 0.0 for r in low.values())
    table = run_cli(settings, "report", "--low-confidence").stdout
    assert "sweep.wav" in table and "noise.mp3" in table and "does not sound like music" in table

    from sqlalchemy import select

    from tagger.db import schema as s
    from tagger.db.engine import session_scope

    with session_scope(settings.database_url) as db:
        rows = db.execute(select(s.File.path, s.Analysis.status, s.Prediction.reason, s.File.genre)
                          .join(s.Analysis, s.Analysis.file_id == s.File.id)
                          .join(s.Prediction, s.Prediction.analysis_id == s.Analysis.id)).all()
    got = {path: (status, reason, genre) for path, status, reason, genre in rows}
    assert got[str(sweep)][:2] == (s.LOW_CONFIDENCE, f"does not sound like music ({musiclike.PURE_TONES})")
    assert got[str(noise)][0] == s.LOW_CONFIDENCE and got[str(noise)][2] is None
    assert got[str(music)][0] == s.TAGGED and got[str(music)][1] is None
