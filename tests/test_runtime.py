"""The LiteRT export of the shipped deep model: it loads through the registry, agrees
with the Keras reference on real GTZAN clips, and Keras takes over when it is absent
or broken."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tagger import audio, features
from tagger.models import litert, registry
from tagger.models.base import Card

NAME = "gtzan-cnn-bilstm"
ART = registry.ARTIFACTS / NAME

pytestmark = pytest.mark.skipif(not litert.available(), reason="ai-edge-litert is not installed")


@pytest.fixture(scope="module")
def clips(gtzan) -> list[audio.Clip]:
    # one clip of four genres the model tells apart clearly, and one from the middle of blues
    paths = [sorted((gtzan / g).glob("*.mp3"))[i] for g, i in
             (("classical", 0), ("metal", 1), ("blues", 30), ("disco", 2))]
    return [audio.load_clip(p) for p in paths]


def _copy_without_export(dest: Path) -> Path:
    """The shipped artifact under ``dest`` minus its .tflite: what an older install holds."""
    d = dest / NAME
    shutil.copytree(ART, d, ignore=shutil.ignore_patterns("*.tflite", "*.png"))
    return dest


@pytest.fixture(scope="module")
def keras_model(tmp_path_factory):
    root = _copy_without_export(tmp_path_factory.mktemp("keras-only"))
    return registry.load(NAME, extra=[str(root)])


def test_shipped_card_lists_a_small_export():
    card = Card.read(ART)
    entry = card.extra["runtimes"]["litert"]
    path = ART / entry["file"]
    assert path.is_file() and path.stat().st_size == entry["size_bytes"]
    assert path.stat().st_size < 20 * 2**20
    assert entry["top_genre_agreement"] >= 0.99


def test_export_loads_through_registry_and_agrees_with_keras(clips, keras_model):
    lite = registry.load(NAME)
    assert lite.runtime == "litert"
    assert keras_model.runtime == "keras"
    p_lite = lite.predict_batch(clips)
    p_keras = keras_model.predict_batch(clips)
    assert p_lite.shape == p_keras.shape == (len(clips), len(lite.card.labels))
    np.testing.assert_allclose(p_lite.sum(axis=1), 1.0, atol=1e-4)
    assert list(p_lite.argmax(axis=1)) == list(p_keras.argmax(axis=1))
    # int8 weights move probabilities a little, never by much
    tol = 1e-4 if lite.card.extra["runtimes"]["litert"]["quantization"] == "fp32" else 0.05
    assert np.abs(p_lite - p_keras).max() < tol
    # batching across clips gives each clip what it gets alone
    alone = np.stack([lite.predict_batch([c])[0] for c in clips])
    np.testing.assert_allclose(alone, p_lite, atol=1e-5)


def test_keras_takes_over_when_the_export_is_absent(clips, keras_model):
    assert keras_model.model is not None and keras_model._runner is None
    pred = keras_model.predict(clips[0])
    assert pred.genre == "classical" and pred.decided_by == "deep"


def test_a_broken_export_falls_back_to_keras(tmp_path, clips, caplog):
    root = tmp_path / "models"
    shutil.copytree(ART, root / NAME, ignore=shutil.ignore_patterns("*.png"))
    card = Card.read(root / NAME)
    broken = root / NAME / card.extra["runtimes"]["litert"]["file"]
    broken.write_bytes(broken.read_bytes()[:4096])  # a copy cut short
    model = registry.load(NAME, extra=[str(root)])
    assert model.runtime == "keras"
    assert "using the Keras model" in caplog.text
    assert model.predict(clips[0]).genre == "classical"


def test_an_export_of_another_keras_file_is_not_used(tmp_path, clips, caplog):
    """A model retrained in place keeps its old .tflite on disk; the digest in the card tells them apart."""
    root = tmp_path / "models"
    shutil.copytree(ART, root / NAME, ignore=shutil.ignore_patterns("*.png"))
    card_file = root / NAME / "card.json"
    doc = json.loads(card_file.read_text())
    doc["runtimes"]["litert"]["source"]["sha256"] = "0" * 64  # as if model.keras had been replaced
    card_file.write_text(json.dumps(doc))
    model = registry.load(NAME, extra=[str(root)])
    assert model.runtime == "keras"
    assert "was exported from another" in caplog.text
    assert model.predict(clips[0]).genre == "classical"


def test_runner_pads_the_last_batch(clips):
    card = Card.read(ART)
    runner = litert.Runner(ART / card.extra["runtimes"]["litert"]["file"], threads=1)
    x = np.concatenate([features.mel_patches(w, c.sr) for c in clips for w in c.windows])[..., None]
    assert len(x) % runner.batch != 0  # so the last batch is padded
    full = runner(x)
    assert full.shape == (len(x), len(card.labels))
    # a patch's output does not depend on what shares its batch (padding rows included)
    np.testing.assert_allclose(runner(x[:3]), full[:3], atol=1e-5)
    np.testing.assert_allclose(runner(x[-1:]), full[-1:], atol=1e-5)
    assert runner(x[:0]).shape == (0, len(card.labels))
    with pytest.raises(ValueError, match="input rows"):
        runner(x[:, :64])


def test_convert_keeps_a_recurrent_models_weights(tmp_path):
    """A small Conv+BiLSTM model through the same fixed-batch conversion as the shipped one."""
    keras = pytest.importorskip("keras")
    from training import export

    inp = keras.Input((16, 12, 1))
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inp)
    h = keras.layers.Reshape((16, 12 * 4))(h)
    h = keras.layers.Bidirectional(keras.layers.LSTM(8))(h)
    model = keras.Model(inp, keras.layers.Dense(3, activation="softmax")(h))
    flat = export.convert(model, batch=4, int8=False)
    assert export.holds_weights(len(flat), model.count_params(), int8=False)
    path = tmp_path / "m.tflite"
    path.write_bytes(flat)
    runner = litert.Runner(path, threads=1)
    assert runner.input_shape == (4, 16, 12, 1)
    x = np.random.default_rng(0).normal(size=(6, 16, 12, 1)).astype(np.float32)
    np.testing.assert_allclose(runner(x), model.predict_on_batch(x), atol=1e-5)
