"""musicnn_head: genre heads on musicnn-msd's frozen embeddings (tagger.models.transfer, training.transfer)."""
from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from services import GTZAN
from tagger import audio
from tagger.models.transfer import pool_frames, track_probs

needs_gtzan = pytest.mark.skipif(not GTZAN.is_dir(), reason="shared GTZAN copy not present")
SHIPPED = "gtzan-musicnn-logreg"
GTZAN10 = ("blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop", "reggae", "rock")


def excerpt(src: Path, dst: Path, start: float, seconds: float, *effects: str) -> Path:
    """Cut (and optionally transform with sox effects) a real recording, re-encoded by sox."""
    subprocess.run(["sox", "-V1", str(src), "-r", "44100", str(dst), "trim", str(start), str(seconds), *effects],
                   check=True, capture_output=True)
    return dst


# --- numpy helpers -----------------------------------------------------------

def test_pool_frames_averages_runs_and_drops_the_remainder():
    seq = np.arange(2 * 9 * 3, dtype=np.float32).reshape(2, 9, 3)
    out = pool_frames(seq, 4)
    assert out.shape == (2, 2, 3)
    np.testing.assert_allclose(out[1, 1], seq[1, 4:8].mean(axis=0))


def test_track_pooling_by_embedding_or_by_probabilities():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(-1, 1, (30, 4)), rng.normal(1, 1, (30, 4))])
    # classes 0 and 2 of 3 labels: label 1 was never seen and must get probability 0
    head = LogisticRegression().fit(x, np.repeat([0, 2], 30))
    tracks = [x[:5], x[40:43]]
    by_emb = track_probs(head, "sklearn", "embedding", tracks, 3)
    np.testing.assert_allclose(by_emb, head.predict_proba(np.stack([t.mean(0) for t in tracks]))[:, [0, 0, 1]]
                               * [1, 0, 1])
    by_probs = track_probs(head, "sklearn", "probs", tracks, 3)
    np.testing.assert_allclose(by_probs[1, [0, 2]], head.predict_proba(tracks[1]).mean(axis=0))
    assert by_probs.argmax(axis=1).tolist() == [0, 2] and np.all(by_probs[:, 1] == 0)
    with pytest.raises(ValueError):
        track_probs(head, "sklearn", "median", tracks, 3)


# --- the front end on real audio ---------------------------------------------

@needs_gtzan
def test_front_end_taps_are_the_shipped_network():
    from tagger.features import musicnn_window_patches
    from tagger.models import registry
    from tagger.models.transfer import MusicnnFrontEnd

    msd = registry.load("musicnn-msd")
    front = MusicnnFrontEnd(registry.find("musicnn-msd"), ("tags", "penultimate", "pooled", "midend"), 4)
    clip = audio.load_clip(GTZAN / "rock" / "rock.00003.mp3", n_windows=2)
    patches = np.concatenate([musicnn_window_patches(w, clip.sr) for w in clip.windows])
    emb = front.patch_embeddings(patches)
    assert emb["penultimate"].shape == (2, 200) and emb["pooled"].shape == (2, 1506)
    assert emb["midend"].shape == (2, 187 // 4, 753)
    # the tag tap is exactly what the shipped tagger computes: the same weights, frozen
    np.testing.assert_allclose(emb["tags"], msd.patch_activations(patches), atol=1e-5)
    # the pooled tap interleaves max and mean over time of the mid end: max >= mean everywhere
    assert np.all(emb["pooled"][:, 0::2] >= emb["pooled"][:, 1::2] - 1e-5)


@needs_gtzan
def test_embedding_cache_made_for_one_tap_serves_a_later_run_reading_others(tmp_path):
    """A cache file written by a front end tapping fewer layers is computed again, not
    read with the other taps missing (training.progressive used to fail on a new machine)."""
    from tagger.models import registry
    from tagger.models.transfer import MusicnnFrontEnd
    from training import transfer

    item = transfer.datasets.Item(GTZAN / "rock" / "rock.00003.mp3", "rock", "rock.00003", "rock.0")
    base = registry.find("musicnn-msd")
    only = transfer.embed_items([item], MusicnnFrontEnd(base, ("penultimate",), 4), tmp_path, log=None)
    assert set(only["rock.00003"]) == {"penultimate"}
    full = transfer.embed_items([item], MusicnnFrontEnd(base, ("penultimate", "midend"), 4), tmp_path, log=None)
    assert set(full["rock.00003"]) == {"penultimate", "midend"}
    assert full["rock.00003"]["midend"].dtype == np.float16
    np.testing.assert_allclose(full["rock.00003"]["penultimate"], only["rock.00003"]["penultimate"], atol=1e-5)
    # the file now holds both taps: read back from the cache, nothing missing
    again = transfer.embed_items([item], MusicnnFrontEnd(base, ("midend",), 4), tmp_path, log=None)
    assert set(again["rock.00003"]) == {"penultimate", "midend"}


# --- training round trip -----------------------------------------------------

@needs_gtzan
def test_train_a_head_on_a_small_labelled_csv_and_load_it_through_the_registry(tmp_path):
    from tagger.models import registry
    from training import transfer

    rows = []
    for genre, n in [("metal", "00002"), ("metal", "00006"), ("classical", "00002"), ("classical", "00006"),
                     ("hiphop", "00003"), ("hiphop", "00007")]:
        src = GTZAN / genre / f"{genre}.{n}.mp3"
        rows.append((excerpt(src, tmp_path / f"{genre}{n}.flac", 5, 7), genre))
    listing = tmp_path / "train.csv"
    with open(listing, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "genre"])
        w.writerows([(p.name, g) for p, g in rows])
    models = tmp_path / "models"
    out = models / "tiny-head"
    cache = tmp_path / "cache"
    args = ["train", "--dataset", "csv", "--root", str(listing), "--head", "lr-pen-emb", "--name", "tiny-head",
            "--out", str(out), "--cache-dir", str(cache), "--cv-json", ""]
    assert transfer.main(args) == 0

    card = json.loads((out / "card.json").read_text())
    assert card["kind"] == "musicnn_head" and card["labels"] == ["classical", "hiphop", "metal"]
    assert card["frontend"]["model"] == "musicnn-msd" and card["head"]["pool"] == "embedding"
    assert card["features"]["sr"] == 16000 and card["training_time_s"] >= 0
    assert "end_to_end_ms" in card["inference_ms_per_track"]
    # only the head is written: the musicnn weights stay in their own artifact
    assert sorted(p.name for p in out.iterdir()) == ["card.json", "head.joblib"]
    assert len(list(cache.rglob("*.npz"))) == 6

    model = registry.load("tiny-head", extra=[str(models)])
    clips = [audio.load_clip(p) for p, _ in rows]
    probs = model.predict_batch(clips)
    assert probs.shape == (6, 3) and np.allclose(probs.sum(axis=1), 1)
    assert [model.card.labels[i] for i in probs.argmax(axis=1)] == [g for _, g in rows]
    # the cached embeddings are what inference computes on the same windows
    emb = transfer.embed_items(transfer.datasets.csv_list(listing)[:1], model.frontend, cache, log=None)
    np.testing.assert_allclose(emb[next(iter(emb))]["penultimate"], model.embeddings(clips[:1])[0], atol=1e-4)


# --- the shipped artifact ----------------------------------------------------

@pytest.fixture(scope="module")
def shipped():
    from tagger.models import registry

    return registry.load(SHIPPED)


@needs_gtzan
def test_shipped_head_builds_on_musicnn_msd_without_copying_it(shipped):
    from tagger.models.transfer import TransferModel

    assert isinstance(shipped, TransferModel) and shipped.card.labels == GTZAN10
    assert shipped.frontend.base.name == "musicnn-msd"
    files = list(shipped.card.directory.iterdir())
    assert not [f for f in files if f.suffix == ".h5"]
    assert sum(f.stat().st_size for f in files) < 1_000_000
    cv = shipped.card.metrics["grouped_cv"]["track"]
    assert set(cv["per_class"]) == set(GTZAN10) and cv["n"] == 218


@needs_gtzan
@pytest.mark.parametrize("genre, n", [("metal", "00000"), ("classical", "00001"), ("reggae", "00004"),
                                      ("blues", "00011")])
def test_shipped_head_names_real_recordings(shipped, genre, n):
    # all 218 shared clips are its training data: this checks the shipped file, not generalisation
    probs = shipped.predict_batch([audio.load_clip(GTZAN / genre / f"{genre}.{n}.mp3", n_windows=4)])
    assert probs.shape == (1, 10) and probs.sum() == pytest.approx(1.0)
    assert shipped.to_prediction(probs[0]).genre == genre


@needs_gtzan
@pytest.mark.parametrize("genre, n", [("classical", "00007"), ("metal", "00008"), ("hiphop", "00005")])
def test_shipped_head_survives_a_pitch_shifted_slowed_reencoded_excerpt(shipped, tmp_path, genre, n):
    # half a semitone up and 6 % slower, 10 s from the middle, re-encoded as Ogg Vorbis:
    # audio the head has never seen sample for sample
    src = GTZAN / genre / f"{genre}.{n}.mp3"
    changed = excerpt(src, tmp_path / "changed.ogg", 10, 10, "pitch", "50", "tempo", "0.94")
    clip = audio.load_clip(changed)
    probs = shipped.predict_batch([clip])[0]
    assert shipped.card.labels[int(probs.argmax())] == genre
    batch = shipped.predict_batch([clip, audio.load_clip(src, n_windows=2)])
    np.testing.assert_allclose(batch[0], probs, atol=1e-5)  # batching does not change a clip's answer
