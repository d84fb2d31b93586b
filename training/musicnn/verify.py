"""Is the Keras port faithful? Original graph vs port on the same real-audio patches.

The original graph is the wheel's ``models.py`` run through ``tf.compat.v1``
(``reference.py``, in a subprocess). Both get identical input patches computed
by ``tagger.features`` from whole GTZAN clips; the largest absolute
difference of any tag activation is recorded in the card (``metrics.port_max_abs_diff``).
The features are checked separately against the original formula computed
with librosa (``librosa.feature.melspectrogram``, centred frames, float16, logC).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from tagger import features
from tagger.models.base import Card
from tagger.models.pretrained import MusicnnModel
from tagger.features import MUSICNN_HOP as HOP, MUSICNN_LOG_C as LOG_C, MUSICNN_N_FFT as N_FFT
from tagger.features import MUSICNN_N_MELS as N_MELS, MUSICNN_SR as SR, logc_mel, musicnn_patches
from training.musicnn import readme
from training.musicnn.convert import MODELS, extract_wheel

REPO = Path(__file__).resolve().parents[2]


def gtzan_sample(root: Path, per_genre: int) -> list[Path]:
    """The first ``per_genre`` clips of every genre folder, sorted by id."""
    return [p for g in sorted(d for d in root.iterdir() if d.is_dir() and d.name != "splits")
            for p in sorted(g.glob("*.mp3"))[:per_genre]]


def decode16(path: Path) -> np.ndarray:
    """A whole file, mono, at 16 kHz."""
    import soundfile as sf

    y, sr = sf.read(str(path), dtype="float32", always_2d=True)
    return features.resample(y.mean(axis=1), sr, SR)


def feature_gap(y16: np.ndarray) -> tuple[float, float, float]:
    """|ours − original formula| over interior frames of one clip.

    Returns ``(max without the float16 step, max with it, share of values off by > 1e-4 with it)``:
    with float16 rounding on both sides, a value on a rounding boundary may
    land one half-precision step (≈ 2e-4 after the log) away.
    """
    import librosa

    mel = librosa.feature.melspectrogram(y=y16, sr=SR, n_fft=N_FFT, hop_length=HOP, n_mels=N_MELS).T
    # numpy < 1.17 (what musicnn ran on) promoted float16 * 10000 to float32;
    # numpy 2 would keep float16 and overflow, so promote explicitly
    original16 = np.log10(LOG_C * mel.astype(np.float16).astype(np.float32) + 1)
    original32 = np.log10(LOG_C * mel + 1)
    ours16, ours32 = logc_mel(y16), logc_mel(y16, float16_power=False)
    # our non-centred frame j is the original's centred frame j + 1
    n = min(len(ours16), len(original16) - 2)
    d16 = np.abs(ours16[:n] - original16[1 : n + 1])
    d32 = np.abs(ours32[:n] - original32[1 : n + 1])
    return float(d32.max()), float(d16.max()), float(np.mean(d16 > 1e-4))


def run_reference(package_parent: Path, checkpoint: str, patches: np.ndarray, tf_keras: Path | None) -> np.ndarray:
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.npz", Path(tmp) / "out.npz"
        np.savez(src, patches=patches)
        env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="3")
        paths = [str(REPO)] + ([str(tf_keras)] if tf_keras else [])
        env["PYTHONPATH"] = os.pathsep.join(paths + [env.get("PYTHONPATH", "")])
        cmd = [sys.executable, "-m", "training.musicnn.reference", str(package_parent), checkpoint, str(src), str(dst)]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError("original graph failed:\n" + proc.stderr[-3000:])
        return np.load(dst)["tags"]


def verify(wheel: Path, out_dir: Path, gtzan: Path, per_genre: int = 2, tf_keras: Path | None = None) -> dict:
    clips = gtzan_sample(gtzan, per_genre)
    audio = {p.stem: decode16(p) for p in clips}
    gaps = np.array([feature_gap(y) for y in audio.values()])
    spec_gap32, spec_gap16, spec_share = float(gaps[:, 0].max()), float(gaps[:, 1].max()), float(gaps[:, 2].mean())
    patches = {k: musicnn_patches(logc_mel(y)) for k, y in audio.items()}
    stacked = np.concatenate(list(patches.values()))
    print(f"{len(clips)} clips, {len(stacked)} patches; features vs original formula: max |diff| "
          f"{spec_gap32:.2e} in float32, {spec_gap16:.2e} with float16 rounding ({spec_share:.1e} of values > 1e-4)")

    tmp = Path(tempfile.mkdtemp(prefix="musicnn-verify-"))
    report = {}
    try:
        extract_wheel(wheel, tmp)
        for name, checkpoint in MODELS.items():
            card = Card.read(out_dir / name)
            model = MusicnnModel(card)
            ours = model.patch_activations(stacked)
            theirs = run_reference(tmp, checkpoint, stacked, tf_keras)
            diff = np.abs(ours - theirs)
            worst = float(diff.max())
            print(f"{name}: max |port − original| = {worst:.2e} over {diff.size} tag activations")
            table, i = {}, 0
            for clip, p in patches.items():
                mean = ours[i : i + len(p)].mean(axis=0)
                i += len(p)
                table[clip] = [[t, round(v, 3)] for t, v in model.top_tags(mean, 5)]
                print(f"  {clip:16s} " + ", ".join(f"{t} {v:.2f}" for t, v in model.top_tags(mean, 5)))
            doc = json.loads((card.directory / "card.json").read_text())
            doc.setdefault("metrics", {})["port_max_abs_diff"] = worst
            doc["checks"] = {
                "port_vs_original": {
                    "max_abs_diff": worst,
                    "mean_abs_diff": float(diff.mean()),
                    "tolerance": 1e-4,
                    "passed": worst <= 1e-4,
                    "inputs": f"{len(stacked)} patches of 187 frames from {len(clips)} GTZAN clips "
                              f"(first {per_genre} of each genre), identical for both graphs",
                    "original": "the wheel's models.py, tf.compat.v1 graph + Saver.restore, TF 2.21 with tf_keras 2.21",
                },
                "features_vs_original_formula": {
                    "max_abs_diff_float32": spec_gap32,
                    "max_abs_diff_float16": spec_gap16,
                    "share_over_1e-4_float16": spec_share,
                    "note": "float16 rounding boundary flips: one half-precision step ≈ 2e-4 after the log",
                    "original": "librosa.feature.melspectrogram(center=True) → float16 → log10(10000 x + 1), "
                                "compared frame j ↔ centred frame j+1",
                },
            }
            doc["top_tags"] = table
            (card.directory / "card.json").write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
            readme.write(card.directory)
            report[name] = worst
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return report
