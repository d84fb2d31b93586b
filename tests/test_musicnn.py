"""musicnn: its input features, the genre head, and the shipped artifacts on real recordings."""
from __future__ import annotations


import numpy as np
import pytest

from tagger import audio, genres
from tagger.audio import Clip
from services import GTZAN

from tagger.features import MUSICNN_N_MELS as N_MELS
from tagger.features import MUSICNN_PATCH_FRAMES as PATCH_FRAMES
from tagger.features import MUSICNN_PATCH_SAMPLES as PATCH_SAMPLES
from tagger.features import MUSICNN_SR as SR
from tagger.features import fit_patch_samples, logc_mel, mel_filterbank
from tagger.features import musicnn_window_patches as window_patches
needs_gtzan = pytest.mark.skipif(not GTZAN.is_dir(), reason="shared GTZAN copy not present")


def act(head: genres.GenreHead, **tags: float) -> np.ndarray:
    a = np.zeros(len(head.tags), dtype=np.float32)
    for tag, v in tags.items():
        a[head.tags.index(tag.replace("_", " ") if tag not in head.tags else tag)] = v
    return a


# --- features -------------------------------------------------------------

def test_one_patch_of_audio_gives_exactly_one_patch_of_frames():
    y = np.random.default_rng(0).normal(0, 0.1, PATCH_SAMPLES).astype(np.float32)
    spec = logc_mel(y)
    assert spec.shape == (PATCH_FRAMES, N_MELS)
    assert logc_mel(y[:-1]).shape[0] == PATCH_FRAMES - 1


def test_a_tone_lights_the_mel_band_that_holds_its_frequency():
    t = np.arange(PATCH_SAMPLES) / SR
    spec = logc_mel((0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32))
    fb = mel_filterbank(SR, 512, N_MELS)
    bin_1k = int(round(1000 * 512 / SR))
    assert spec.mean(axis=0).argmax() == fb[:, bin_1k].argmax()
    assert spec.min() >= 0.0  # log10(1 + C x) of a power is never negative


def test_silence_is_zero_and_short_windows_are_repeat_padded():
    assert np.all(logc_mel(np.zeros(PATCH_SAMPLES, np.float32)) == 0.0)
    y = np.arange(1000, dtype=np.float32)
    padded = fit_patch_samples(y)
    assert len(padded) == PATCH_SAMPLES and np.array_equal(padded[1000:2000], y)
    # a 1.5 s window at 22050 Hz still yields one full patch
    assert window_patches(np.random.default_rng(1).normal(0, 0.1, 33075).astype(np.float32), 22050).shape == (
        1, PATCH_FRAMES, N_MELS)


@needs_gtzan
def test_features_equal_the_original_formula_on_real_audio():
    librosa = pytest.importorskip("librosa")
    y, _ = librosa.load(GTZAN / "jazz" / "jazz.00000.mp3", sr=SR, duration=5.0)
    mel = librosa.feature.melspectrogram(y=y, sr=SR, n_fft=512, hop_length=256, n_mels=96).T
    # non-centred frame j is the original's centred frame j + 1
    n = len(logc_mel(y)) - 1
    exact = np.abs(logc_mel(y, float16_power=False)[:n] - np.log10(10000 * mel + 1)[1 : n + 1])
    assert exact.max() < 1e-5
    # with the float16 rounding both sides share, a value that lies on a float16
    # rounding boundary may land one half-precision step away (≈ 2e-4 after the log)
    original = np.log10(10000 * mel.astype(np.float16).astype(np.float32) + 1)
    rounded = np.abs(logc_mel(y)[:n] - original[1 : n + 1])
    assert rounded.max() < 1e-3 and np.mean(rounded > 1e-4) < 1e-3


# --- genre head -----------------------------------------------------------

def test_genre_head_takes_the_strongest_weighted_tag_per_genre():
    head = genres.HEADS["musicnn-msd"]
    a = act(head, heavy_metal=0.5, hard_rock=0.4, jazz=0.05)
    s = dict(zip(head.genres, head.scores(a)))
    assert s["metal"] == pytest.approx(0.5)  # max(heavy metal 0.5, 0.6 × hard rock 0.4)
    assert s["rock"] == pytest.approx(0.4)
    assert s["jazz"] == pytest.approx(0.05)
    assert s["pop"] == 0.0
    p = head.probabilities(a)
    assert p.sum() == pytest.approx(1.0)
    assert head.genres[int(p.argmax())] == "metal"


def test_probabilities_are_uniform_without_any_genre_evidence():
    head = genres.HEADS["musicnn-msd"]
    p = head.probabilities(act(head, sad=0.9, Mellow=0.8))  # moods name no genre
    assert np.allclose(p, 1.0 / len(head.genres))


def test_several_genres_are_written_only_when_close_to_the_top():
    head = genres.HEADS["musicnn-msd"]
    close = head.probabilities(act(head, rock=0.5, blues=0.4, jazz=0.1))
    assert genres.confident_genres(close, head.genres) == ["rock", "blues"]
    clear = head.probabilities(act(head, **{"Hip-Hop": 0.9, "funk": 0.2}))
    assert genres.confident_genres(clear, head.genres) == ["hiphop"]


def test_heads_reach_only_genres_of_the_taxonomy_and_fold_onto_gtzan():
    for head in genres.HEADS.values():
        assert set(head.genres) <= set(genres.GENRES)
        assert head.weights.shape == (len(head.tags), len(head.genres))
    head = genres.HEADS["musicnn-msd"]
    assert {"classical", "reggae"}.isdisjoint(head.genres)  # no such MSD tags
    probs = head.probabilities(act(head, funk=0.6, soul=0.3))
    folded, classes = genres.fold(probs[None], head.genres)
    assert classes[int(folded.argmax())] == "disco"
    with pytest.raises(ValueError):
        genres.GenreHead.from_table(genres.MSD_TAGS, {"polka": {"rock": 1.0}})


# --- the shipped artifacts on real recordings ------------------------------

@pytest.fixture(scope="module")
def msd():
    from tagger.models import registry

    return registry.load("musicnn-msd")


def clip_of(genre: str, n: str, windows: int = 4) -> Clip:
    return audio.load_clip(GTZAN / genre / f"{genre}.{n}.mp3", n_windows=windows)


@needs_gtzan
def test_registry_loads_musicnn_msd_with_its_card(msd):
    from tagger.models.pretrained import MusicnnModel

    assert isinstance(msd, MusicnnModel) and msd.role == "pretrained"
    assert msd.card.kind == "musicnn" and len(msd.tags) == 50
    assert msd.card.metrics["port_max_abs_diff"] <= 1e-4
    assert (msd.card.directory / "LICENSE").read_text().count("Pons") >= 1


@needs_gtzan
@pytest.mark.parametrize("genre, n, expected", [
    ("metal", "00000", "metal"),
    ("hiphop", "00001", "hiphop"),
    ("jazz", "00001", "jazz"),
    ("blues", "00001", "blues"),
])
def test_msd_genre_head_is_right_on_real_recordings(msd, genre, n, expected):
    clip = clip_of(genre, n)
    probs = msd.predict_batch([clip])
    assert probs.shape == (1, len(msd.card.labels)) and probs.sum() == pytest.approx(1.0, abs=1e-5)
    pred = msd.to_prediction(probs[0])
    assert pred.genre == expected and pred.genres[0] == expected
    assert pred.decided_by == "pretrained" and pred.model == "musicnn-msd"


@needs_gtzan
def test_msd_calls_classical_instrumental_and_mtt_calls_it_classical(msd):
    from tagger.models import registry

    clip = clip_of("classical", "00000")
    assert msd.predict(clip).genre == "instrumental"
    mtt = registry.load("musicnn-mtt")
    assert mtt.predict(clip).genre == "classical"


@needs_gtzan
def test_batch_of_clips_matches_clips_one_by_one(msd):
    a, b = clip_of("metal", "00001", 2), clip_of("jazz", "00000", 3)
    together = msd.predict_batch([a, b])
    alone = np.vstack([msd.predict_batch([a]), msd.predict_batch([b])])
    assert np.abs(together - alone).max() < 1e-5
    # a short window (1.5 s) is padded, not rejected
    short = Clip(windows=[w[:33075] for w in a.windows], sr=a.sr, info=a.info, starts=a.starts)
    assert msd.predict_batch([short]).shape == (1, len(msd.card.labels))


@needs_gtzan
def test_bfloat16_agrees_with_float32_on_real_recordings():
    from tagger.models import registry, runtime
    from tagger.models.pretrained import MusicnnModel

    card = registry.find("musicnn-msd")
    clips = [clip_of(g, "00002", 2) for g in ("metal", "jazz", "hiphop", "classical")]
    probs = {}
    try:
        for precision in ("float32", "bfloat16"):
            runtime.set_precision(precision)
            model = MusicnnModel(card)
            conv = model.network.get_layer("timbral_38")
            assert conv.compute_dtype == precision and conv.kernel.dtype == "float32"
            probs[precision] = model.predict_batch(clips)
            assert probs[precision].dtype == np.float32 or probs[precision].dtype == np.float64
    finally:
        runtime.set_precision("auto")
    a, b = probs["float32"], probs["bfloat16"]
    assert np.array_equal(a.argmax(axis=1), b.argmax(axis=1))
    assert np.abs(a - b).max() < 0.05
    assert np.abs(a - b).max() > 0  # it did compute differently
    with pytest.raises(ValueError, match="precision must be one of"):
        runtime.set_precision("fp16")


def test_auto_precision_uses_bfloat16_only_for_models_whose_card_records_the_check():
    from tagger.models import runtime
    from tagger.models.pretrained import MusicnnModel
    from tagger.models.registry import find
    from tagger.models.transfer import TransferModel

    runtime.set_precision("auto")
    plain = MusicnnModel(find("musicnn-msd"))  # its card records no bfloat16 check
    assert plain.compute_dtype == "float32"
    head_card = find("gtzan-musicnn-logreg")
    assert "bfloat16" in head_card.extra and head_card.extra["bfloat16"]["top1_agreement"].startswith("218/218")
    head = TransferModel(head_card)
    conv = head.frontend.network.get_layer("timbral_38")
    assert conv.compute_dtype == ("bfloat16" if runtime.cpu_has_bfloat16() else "float32")
