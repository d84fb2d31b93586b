"""Train from the command's entry point on real audio, then load through the registry."""
from __future__ import annotations

import json

import numpy as np
import pytest

import audiofiles
from tagger import audio, features
from tagger.models import registry
from training import ml
from training.__main__ import main


@pytest.fixture(scope="module")
def genre_tree(tmp_path_factory):
    """Two audibly different 'genres': plucked pentatonic music with drums, and a steady sine."""
    root = tmp_path_factory.mktemp("tree")
    for k in range(4):
        audiofiles.make_audio(root / "music", "wav", f"m{k}.wav", seconds=7.0, sr=22050, channels=1)
        audiofiles.make_audio(root / "tone", "flac", f"t{k}.flac", seconds=7.0, sr=22050, channels=1, kind="tone")
    return root


def _train(kind: str, tree, tmp_path, *extra) -> tuple[dict, object]:
    out = tmp_path / "models" / f"test-{kind}"
    assert main([kind, "--dataset", "folder", "--root", str(tree), "--cache-dir", str(tmp_path / "cache"),
                 "--name", f"test-{kind}", "--out", str(out), "--timing-tracks", "2", *extra]) == 0
    card = json.loads((out / "card.json").read_text())
    return card, registry.load(card["name"], extra=[str(tmp_path / "models")])


def test_ml_pipeline_round_trip(genre_tree, tmp_path):
    card, model = _train("ml", genre_tree, tmp_path, "--model", "svm", "--cv", "2")
    assert card["kind"] == "sklearn_mfcc" and card["labels"] == ["music", "tone"]
    assert card["features"] == features.MFCC_STATS_PARAMS
    assert card["metrics"]["grouped_cv"]["track"]["n"] == 8
    assert card["inference_ms_per_track"]["end_to_end_ms"] > 0
    clips = [audio.load_clip(p) for p in sorted(genre_tree.rglob("*.*"))]
    probs = model.predict_batch(clips)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    # the registry's model is the pipeline that was saved, reordered to the card's labels
    x = np.stack([features.mfcc_stats(c.windows) for c in clips])
    np.testing.assert_allclose(probs, ml.predict_proba(model.pipeline, x, card["labels"]), atol=1e-9)
    assert [card["labels"][k] for k in probs.argmax(axis=1)] == ["music"] * 4 + ["tone"] * 4


@pytest.mark.slow  # ~28 s on 2 cores: TensorFlow import, BiLSTM tracing, .keras and .h5 round trips
def test_deep_model_trains_saves_and_loads(genre_tree, tmp_path):
    card, model = _train("deep", genre_tree, tmp_path, "--arch", "cnn_bilstm", "--epochs", "1", "--export-h5")
    out = tmp_path / "models" / "test-deep"
    assert card["kind"] == "keras_patches" and card["file"] == "model.keras"
    assert card["labels"] == ["music", "tone"] and card["features"] == features.LOGMEL_PARAMS
    assert card["model"]["epochs_run"] == 1 and (out / "model.h5").is_file() and (out / "history.png").is_file()
    clip = audio.load_clip(genre_tree / "music" / "m0.wav")
    probs = model.predict_batch([clip, clip])
    assert probs.shape == (2, 2)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    # the loaded model normalises raw dB patches itself: same output as the in-memory Keras model
    import keras

    import tagger.models.layers  # noqa: F401
    again = keras.saving.load_model(out / "model.h5", compile=False)
    x = np.concatenate([features.mel_patches(w) for w in clip.windows])[..., None]
    np.testing.assert_allclose(np.asarray(again.predict(x, verbose=0)).mean(axis=0), probs[0], atol=1e-4)


def test_the_students_flops_count_and_its_agreement_check():
    """training.distill: FLOPs counted from the layers; agreement compares written decisions."""
    import keras

    from tagger.models.openset import OpenSetModel
    from training import distill

    inp = keras.Input((4, 4, 1))
    conv = keras.layers.Conv2D(2, 3, padding="same")(inp)
    out = keras.layers.Dense(3)(keras.layers.Flatten()(conv))
    assert distill.flops(keras.Model(inp, out)) == 2 * 4 * 4 * 9 * 1 * 2 + 2 * 32 * 3
    dec = OpenSetModel(registry.find("gtzan-musicnn-openset")).decider
    rng = np.random.default_rng(3)
    tracks = [np.concatenate([rng.normal(0, 1.5, (9, 200)), rng.uniform(0, 1, (9, 100))], 1).astype(np.float32)
              for _ in range(6)]
    # the student chain: here the shipped decider too (training may refit one on the student's rows)
    same = distill.agreement(dec, dec, 0.95, 0.8, tracks, tracks)
    assert same["agreement"] == 1.0 and same["same_decision"] == 6
    assert distill.agreement(dec, dec, 0.95, 0.8, tracks, tracks, give_up=0.05)["agreement"] == 1.0
    other = distill.agreement(dec, dec, 0.95, 0.8, tracks, tracks[1:] + tracks[:1])
    assert other["tracks"] == 6
    assert other["written_by_teacher"] == other["written_by_student"]  # the same rows, shuffled


def test_the_cascade_gives_the_teachers_answer_where_the_student_is_near_the_threshold():
    """training.distill.cascade: no band is the student chain alone, a band wider than any
    distance to the threshold is the teacher chain alone; between, the teacher hears again exactly
    the tracks whose student answer lies within the band."""
    from tagger.models.openset import OpenSetModel
    from training import distill
    from training.openset import heard

    dec = OpenSetModel(registry.find("gtzan-musicnn-openset")).decider
    rng = np.random.default_rng(5)
    tracks = [np.concatenate([rng.normal(0, 1.5, (9, 200)), rng.uniform(0, 1, (9, 100))], 1).astype(np.float32)
              for _ in range(8)]
    pupil = tracks[3:] + tracks[:3]  # another chain's rows: the same decider on other tracks
    alone = distill.agreement(dec, dec, 0.95, 0.8, tracks, pupil)
    bands = distill.cascade(dec, dec, 0.95, 0.8, tracks, pupil, bands=(0.0, 0.1, 2.0))
    assert bands[0]["teacher_hears_again"] == 0 and bands[0]["same_decision"] == alone["same_decision"]
    assert bands[2]["teacher_hears_again"] == 8 and bands[2]["agreement"] == 1.0
    assert bands[2]["teacher_windows_per_track"] == bands[2]["teacher_windows_alone"]
    near = sum(abs(float(heard(dec, r, 0.95)[0].max()) - 0.8) < 0.1 for r in pupil)
    assert bands[1]["teacher_hears_again"] == near


def test_the_students_head_output_is_the_shipped_heads_logits():
    """training.distill --head-weight: the student's third output, a fixed map of its standardised
    penultimate, gives the shipped genre head's own probabilities back (centred logits, scaled)."""
    import keras

    from tagger.models.openset import load_decider
    from training import distill

    head = load_decider(registry.find("gtzan-musicnn-openset")).head
    rng = np.random.default_rng(5)
    rows = np.concatenate([rng.normal(0.3, 1.2, (12, 200)), rng.uniform(0, 1, (12, 100))], 1).astype(np.float32)
    mean, std = rows[:, :200].mean(axis=0), rows[:, :200].std(axis=0) + 1e-6
    inp = keras.Input((200,))
    pen = keras.layers.Identity(name="pen")(inp)  # a "student" whose output is the teacher's, standardised
    tags = keras.layers.Dense(100, activation="sigmoid", name="tags")(inp)
    model, target = distill.with_head_logits(keras.Model(inp, [pen, tags]), mean, std, rows)
    want = target(rows)  # the teacher's numbers, divided by their spread over these rows
    assert abs(float(want.std()) - 1.0) < 1e-5
    got = model.predict(((rows[:, :200] - mean) / std).astype(np.float32), verbose=0)[2]
    np.testing.assert_allclose(got, want, atol=1e-4)
    probs = head.predict_proba(rows[:, :200])
    centred = np.log(probs) - np.log(probs).mean(axis=1, keepdims=True)  # the head's centred logits
    p = np.exp(want * float(np.std(centred)))
    np.testing.assert_allclose(p / p.sum(axis=1, keepdims=True), probs, atol=1e-4)
    assert not model.get_layer("head").trainable
