"""Decoding: the windows tagger reads by seeking are the audio at those times, in every format.

The reference is a full decode by the ffmpeg command line (independent of the
decoders tagger uses: libsndfile, PyAV), cut at each window's start. Lossy
decoders and resamplers differ a little, so the checks are alignment to the
sample (cross-correlation peak at lag 0) and a small relative error.
"""
from __future__ import annotations

import subprocess
import sys

import av
import numpy as np
import pytest

import audiofiles
from tagger import audio, features
from tagger.errors import UnreadableAudio

SR = features.SR
WINDOW = features.PATCH_SAMPLES


def full_decode(path) -> np.ndarray:
    """The whole file as mono float32 at SR: ffmpeg decodes and resamples, numpy downmixes."""
    out = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-ar", str(SR),
                          "-f", "f32le", "-"], capture_output=True, check=True).stdout
    ch = audio.probe(path).channels
    x = np.frombuffer(out, dtype=np.float32)
    return x[: len(x) - len(x) % ch].reshape(-1, ch).mean(axis=1)


def lag_and_error(window: np.ndarray, reference: np.ndarray, start: int, search: int = 300) -> tuple[int, float]:
    """Lag (samples) of ``window`` against ``reference[start:]``, and the relative RMS error at that lag."""
    ref = reference[max(0, start - search): start + len(window) + search]
    cc = np.correlate(ref, window, mode="valid")
    lag = int(np.argmax(cc)) - min(search, start)
    seg = reference[start + lag: start + lag + len(window)]
    n = min(len(seg), len(window))
    err = np.sqrt(np.mean((seg[:n] - window[:n]) ** 2)) / np.sqrt(np.mean(seg[:n] ** 2))
    return lag, float(err)


@pytest.mark.parametrize("fmt", audiofiles.FORMATS)
def test_seeked_windows_are_the_audio_at_their_start(audio_factory, fmt):
    path = audio_factory(fmt, name=f"long.{audiofiles.SUFFIX[fmt][1:]}", seconds=45)
    clip = audio.load_clip(path, fmt)
    reference = full_decode(path)
    assert len(clip.windows) == audio.DEFAULT_WINDOWS
    assert clip.starts[0] > 0 and clip.starts[-1] + WINDOW / SR < len(reference) / SR  # spread, edges skipped
    for start, w in zip(clip.starts, clip.windows):
        assert w.shape == (WINDOW,) and w.dtype == np.float32
        lag, err = lag_and_error(w, reference, int(round(start * SR)))
        assert abs(lag) <= 1, (fmt, start, lag)
        assert err < 0.1, (fmt, start, err)


@pytest.mark.parametrize("fmt", audiofiles.FORMATS)
def test_a_reader_read_in_stages_gives_the_windows_of_one_read(audio_factory, fmt):
    # progressive hearing reads a track in stages through one open decoder, in any order
    path = audio_factory(fmt, name=f"staged.{audiofiles.SUFFIX[fmt][1:]}", seconds=45)
    info, starts = audio.plan(path, fmt)
    whole = audio.read_windows(path, info, starts)
    order = [[2, 4, 7], [1, 8], [3, 6], [0, 9], [5]]
    with audio.Reader(path, info) as reader:
        parts = [reader.read([starts[i] for i in stage]) for stage in order]
        if info.decoder in ("soundfile", "av"):
            assert reader._handle is not None  # one decoder, kept open between stages
    assert reader._handle is None  # and closed after
    reference = full_decode(path) if fmt == "m4a" else None
    for stage, part in zip(order, parts):
        assert part.starts == [starts[i] for i in stage]
        for i, w in zip(stage, part.windows):
            if reference is None:
                np.testing.assert_allclose(w, whole.windows[i], atol=1e-4, err_msg=f"window {i}")
            else:
                # AAC's samples after a seek depend a little on what was decoded before (frames
                # overlap): not equal, but as close to the full decode as the one read's window
                at = int(round(starts[i] * SR))
                (lag, err), (_, err_whole) = (lag_and_error(x, reference, at) for x in (w, whole.windows[i]))
                assert abs(lag) <= 1 and err < err_whole + 0.01, (i, lag, err, err_whole)


def test_m4a_in_process_is_at_least_as_exact_as_the_command_line(audio_factory):
    # the command line's fast seek starts AAC decoding cold (its first ~1000 samples are off);
    # PyAV decodes a little before each window and drops it
    path = audio_factory("m4a", seconds=40)
    info = audio.probe(path, "m4a")
    assert info.decoder == "av" and info.channels == 2 and abs(info.duration - 40) < 0.1
    starts = audio.window_starts(info.duration, WINDOW / SR)
    with av.open(str(path)) as c:
        mine = audio._read_av(c, starts, WINDOW, SR)
    cli = audio._read_ffmpeg(path, info, starts, WINDOW, SR)
    reference = full_decode(path)
    assert len(mine) == len(cli) == len(starts)
    for start, a, b in zip(starts, mine, cli):
        (lag_a, err_a), (lag_b, err_b) = (lag_and_error(x, reference, int(round(start * SR))) for x in (a, b))
        assert abs(lag_a) <= 1 and err_a < 0.1
        assert err_a <= err_b + 0.01, (start, err_a, err_b)


def test_m4a_with_a_late_start_time_counts_from_its_first_sample(audio_factory, tmp_path):
    # an MP4 whose audio starts at a non-zero timestamp (as ffmpeg's concat of MP3s makes):
    # window times count from the first sample, as libsndfile's and the command line's do
    src = audio_factory("wav", seconds=40)
    shifted = tmp_path / "shifted.m4a"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-itsoffset", "0.7", "-i", str(src), "-c:a", "aac",
                    "-b:a", "160k", str(shifted)], check=True)
    clip = audio.load_clip(shifted, "m4a")
    assert clip.info.decoder == "av"
    reference = full_decode(shifted)
    for start, w in zip(clip.starts, clip.windows):
        lag, err = lag_and_error(w, reference, int(round(start * SR)))
        assert abs(lag) <= 1 and err < 0.1, (start, lag, err)


def test_truncated_m4a_is_a_clear_error(audio_factory, tmp_path):
    # moov first (faststart), then the audio cut after a few seconds: the later windows cannot be decoded
    path = audio_factory("m4a", seconds=40)
    cut = audiofiles.truncated(path, tmp_path / "cut.m4a", 0.1)
    with pytest.raises(UnreadableAudio, match="truncated or corrupt") as err:
        audio.load_clip(cut, "m4a")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("sr,n_fft,n_mels", [(features.SR, features.N_FFT, features.N_MELS),
                                             (features.MUSICNN_SR, features.MUSICNN_N_FFT, features.MUSICNN_N_MELS),
                                             (44100, 2048, 64)])
def test_the_mel_filterbank_is_librosas(sr, n_fft, n_mels):
    """tagger's own filterbank (a worker need not import librosa) gives librosa's filters."""
    import librosa

    ours = features.mel_filterbank(sr, n_fft, n_mels)
    theirs = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels)
    assert ours.shape == theirs.shape and ours.dtype == np.float32
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-7 * float(theirs.max()))
    assert (ours.sum(axis=1) > 0).all()  # no empty band


def test_a_worker_computes_musicnn_patches_without_librosa():
    code = ("import sys, numpy as np\n"
            "from tagger import features\n"
            "p = features.musicnn_window_patches(np.random.default_rng(0).normal(0, .1, 3 * 22050).astype('float32'), 22050)\n"
            "print(p.shape, 'librosa' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.split()[-1] == "False", (out.stdout, out.stderr[-2000:])
