"""Progressive hearing with the shipped default model on real recordings: a few windows
first, the rest only when unsure, and then exactly what hearing all at once gives."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tagger import audio, features
from tagger.errors import UnreadableAudio
from tagger.models import progressive, registry

GTZAN = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "gtzan"
needs_gtzan = pytest.mark.skipif(not GTZAN.is_dir(), reason="needs ../shared/datasets/gtzan")
DEFAULT = "gtzan-musicnn-logreg"


@pytest.fixture(scope="module")
def model():
    return registry.load(DEFAULT)


def test_stages_hear_every_window_once_the_first_spread_then_a_few_at_a_time():
    assert progressive.stages(10, 3, 2) == [[2, 4, 7], [1, 8], [3, 6], [0, 9], [5]]
    assert progressive.stages(10, 3, 0) == [[2, 4, 7], [0, 1, 3, 5, 6, 8, 9]]
    assert progressive.stages(10, 0, 2) == [list(range(10))]
    assert progressive.stages(4, 4, 1) == [list(range(4))]
    for n in range(1, 16):
        for first in range(0, n + 2):
            for step in range(0, 5):
                order = progressive.stages(n, first, step)
                assert sorted(i for s in order for i in s) == list(range(n))
                assert all(order)  # no empty stage
                if 0 < first < n and 0 < step:
                    assert all(len(s) == step for s in order[1:-1]) and len(order[-1]) <= step


def test_first_windows_are_spread_away_from_the_ends():
    assert progressive.first_indices(10, 3) == [2, 4, 7]
    assert progressive.first_indices(10, 1) == [4]  # round half to even: the middle
    for n in range(2, 20):
        for k in range(1, n):
            idx = progressive.first_indices(n, k)
            assert idx == sorted(set(idx)) and 0 <= idx[0] and idx[-1] < n and len(idx) >= 1


@needs_gtzan
def test_a_clear_track_stops_after_the_first_windows(model):
    path = GTZAN / "metal" / "metal.00000.mp3"
    heard = progressive.hear(model, path, "mp3", progressive.Hearing(10, 3, 0, 0.8))
    assert heard.planned == 9  # a 30 s clip holds nine 3.04 s windows back to back
    assert heard.windows == 3 and len(heard.clip.windows) == 3
    assert model.card.labels[int(np.argmax(heard.probs))] == "metal" and heard.probs.max() >= 0.8
    assert heard.probs.sum() == pytest.approx(1.0)


@needs_gtzan
@pytest.mark.parametrize("name,step", [("jazz/jazz.00003.mp3", 0), ("rock/rock.00004.mp3", 2)])
def test_an_unsure_track_hears_everything_and_gets_the_all_at_once_answer(model, name, step):
    path = GTZAN / name
    heard = progressive.hear(model, path, "mp3", progressive.Hearing(10, 3, step, 1.01))  # never sure enough
    whole = audio.load_clip(path, "mp3", n_windows=10)
    assert heard.windows == heard.planned == len(whole.windows)
    # equal up to arithmetic: in bfloat16, batches of other sizes round differently (≈1e-5)
    assert np.abs(heard.probs - model.predict_batch([whole])[0]).max() < 1e-3


@needs_gtzan
def test_models_whose_answer_does_not_split_by_window_hear_everything():
    fallback = registry.load("gtzan-logreg")  # MFCC statistics over all windows together
    heard = progressive.hear(fallback, GTZAN / "blues" / "blues.00001.mp3", "mp3", progressive.Hearing(10, 3, 2, 0.0))
    assert heard.windows == heard.planned


@needs_gtzan
def test_silent_first_windows_are_not_taken_for_a_silent_track(model, tmp_path):
    # real music with silence exactly where the first three windows fall: the rest decide
    y, sr = sf.read(str(GTZAN / "reggae" / "reggae.00001.mp3"), dtype="float32", always_2d=True)
    path = tmp_path / "gaps.wav"
    sf.write(str(path), y, sr)
    info, starts = audio.plan(path, "wav", n_windows=10)
    window_s = features.PATCH_SAMPLES / features.SR
    for i in progressive.first_indices(len(starts), 3):
        y[int(starts[i] * sr): int((starts[i] + window_s) * sr) + 1] = 0.0
    sf.write(str(path), y, sr)
    heard = progressive.hear(model, path, "wav", progressive.Hearing(10, 3, 2, 0.8))
    assert heard.windows == heard.planned
    # and a silent file is still an error
    sf.write(str(tmp_path / "quiet.wav"), np.zeros((sr * 40, 2), np.float32), sr)
    with pytest.raises(UnreadableAudio, match="silent"):
        progressive.hear(model, tmp_path / "quiet.wav", "wav")


def test_training_table_counts_windows_and_scores_like_tagging():
    from training.progressive import progressive_scores

    labels = ["a", "b"]
    # track 0: sure of "a" in its first windows; track 1: unsure early, "b" over all ten
    sure = np.tile([0.9, 0.1], (10, 1))
    unsure = np.tile([0.45, 0.55], (10, 1))
    unsure[progressive.first_indices(10, 3)] = [0.6, 0.4]
    y = np.array([0, 1])
    r = progressive_scores([sure, unsure], y, labels, first=3, stop=0.8)
    assert r["accuracy"] == 1.0 and r["mean_windows"] == (3 + 10) / 2 and r["stopped_early"] == 0.5
    always = progressive_scores([sure, unsure], y, labels, first=3, stop=0.0)
    assert always["mean_windows"] == 3 and always["accuracy"] == 0.5  # the first windows alone get track 1 wrong


@needs_gtzan
def test_the_api_hears_a_file_as_a_scan_does(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from tagger import pipeline
    from tagger.api.predict import Batcher, predict_file
    from tagger.config import Settings

    settings = Settings(data_dir=tmp_path)
    batcher = Batcher(settings).start()
    try:
        assert batcher.ready.wait(120) and batcher.error is None
        paths = [str(GTZAN / n) for n in ("metal/metal.00000.mp3", "jazz/jazz.00003.mp3", "rock/rock.00004.mp3",
                                          "blues/blues.00001.mp3")]
        alone = {}
        for path in paths:
            want, clip = pipeline.predict_path(path, settings)
            doc = predict_file(path, settings, batcher)
            assert doc["windows"] == len(clip.windows) and doc["model"] == registry.default_chain()[0], path
            assert doc["genre"] == want.genre and doc["confidence"] == pytest.approx(want.confidence, abs=1e-3)
            alone[path] = doc
        assert alone[paths[1]]["windows"] == 3  # a clear track (jazz.00003): the first windows decide
        # overlapping requests share model calls, and each still gets its own answer
        with ThreadPoolExecutor(4) as pool:
            together = list(pool.map(lambda p: predict_file(p, settings, batcher), paths * 2))
        for path, doc in zip(paths * 2, together):
            assert (doc["genre"], doc["windows"]) == (alone[path]["genre"], alone[path]["windows"])
            assert doc["confidence"] == pytest.approx(alone[path]["confidence"], abs=1e-3)
        assert batcher.largest_batch > 1  # at least one model call answered several requests
    finally:
        batcher.stop()


@needs_gtzan
def test_a_track_no_answer_can_win_stops_at_the_give_up(teacher_alone):
    # the open-set default after the first 3 windows of this clip: its likelier candidate has a
    # chance of about 0.58; two more windows make it blues at 0.98, above the 0.8 threshold
    # (musicnn hearing alone: the student's give-up is tests/test_student.py's)
    model = registry.load("gtzan-musicnn-openset")
    path = GTZAN / "blues" / "blues.00092.mp3"
    hopeless = progressive.hear(model, path, "mp3", progressive.Hearing(10, 3, 2, 0.95, give_up=0.7))
    assert hopeless.windows == 3
    rows = model.window_probs(hopeless.clip)
    assert model.prospect(rows) < 0.7
    assert hopeless.probs.max() <= model.prospect(rows)  # unsure: no entry above the best chance
    assert np.allclose(hopeless.probs, model.from_windows(rows))
    card_give_up = model.card.extra["give_up"]
    assert card_give_up < 0.5
    for give_up in (0.0, card_give_up):  # 0: never; the card's is below this clip's chance, so it hears on
        heard = progressive.hear(model, path, "mp3", progressive.Hearing(10, 3, 2, 0.95, give_up=give_up))
        assert heard.windows > 3 and heard.probs.max() >= 0.8
        assert model.card.labels[int(np.argmax(heard.probs))] == "blues"
