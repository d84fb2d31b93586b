"""training.finetune: musicnn-msd + the seq head, frozen then fine-tuned, on real GTZAN clips."""
from __future__ import annotations

import csv
import json
from dataclasses import replace

import numpy as np
import pytest

from services import GTZAN

needs_gtzan = pytest.mark.skipif(not GTZAN.is_dir(), reason="shared GTZAN copy not present")
CLIPS = [("metal", "00002"), ("metal", "00006"), ("classical", "00002"), ("classical", "00006"),
         ("hiphop", "00003"), ("hiphop", "00007"), ("reggae", "00000"), ("reggae", "00006")]


@needs_gtzan
def test_composed_model_is_the_head_on_the_midend_until_fine_tuning_moves_the_convolutions(tmp_path):
    import keras

    from tagger.models import registry
    from tagger.models.transfer import MusicnnFrontEnd
    from training import finetune, transfer

    base = registry.find("musicnn-msd")
    paths = [GTZAN / g / f"{g}.{n}.mp3" for g, n in CLIPS[:6]]
    patches = [finetune.cached_patches(p, tmp_path)[:2] for p in paths]
    np.testing.assert_array_equal(finetune.cached_patches(paths[0], tmp_path)[:2], patches[0])  # from the cache
    assert patches[0].shape == (2, 187, 96) and len(list(tmp_path.rglob("*.npy"))) == 6
    front = MusicnnFrontEnd(base, ("midend",), transfer.MIDEND_POOL)
    emb = [front.patch_embeddings(p)["midend"] for p in patches]
    y = np.repeat([0, 1, 2], 2)

    spec = transfer.HEADS[finetune.HEAD]
    head = transfer.fit_head(replace(spec, epochs=1), emb, y, 3)
    model, midend = finetune.build(base, head)
    # frozen: the composed model on patches is the head on those patches' mid-end embeddings
    on_patches = finetune.predict_tracks(model, patches)
    np.testing.assert_allclose(on_patches, transfer.predict_tracks(spec, head, emb, 3), atol=1e-4)
    assert on_patches.shape == (6, 3) and np.allclose(on_patches.sum(axis=1), 1, atol=1e-5)
    assert not midend.trainable_weights

    finetune.unfreeze(midend)
    bns = [layer for layer in midend.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(bns) == 9 and not any(b.trainable_weights for b in bns)
    assert midend.get_layer("timbral_38").trainable_weights
    w0 = finetune.kernels(midend)
    stats0 = [b.moving_mean.numpy().copy() for b in bns]
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    model.fit(np.concatenate(patches), np.repeat(y, 2), epochs=1, batch_size=4, verbose=0)
    assert all(v > 0 for v in finetune.change(w0, midend).values())
    # batch norm stayed in inference mode: its statistics did not move
    for b, s in zip(bns, stats0):
        np.testing.assert_array_equal(b.moving_mean.numpy(), s)


@needs_gtzan
def test_cv_command_runs_both_stages_on_the_same_grouped_folds(tmp_path):
    from training import finetune

    listing = tmp_path / "list.csv"
    with open(listing, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "genre"])
        w.writerows([(GTZAN / g / f"{g}.{n}.mp3", g) for g, n in CLIPS])
    out = tmp_path / "run"
    assert finetune.main(["cv", "--dataset", "csv", "--root", str(listing), "--folds", "2", "--epochs", "1",
                          "--head-epochs", "2", "--patches-per-track", "2", "--out", str(out),
                          "--patch-dir", str(tmp_path / "patches")]) == 0
    doc = json.loads((out / "cv.json").read_text())
    assert doc["folds"] == 2 and doc["epochs"] == 1 and doc["tracks"] == 8 and doc["n_tracks_scored"] == 8
    assert doc["command"].startswith("python -m training.finetune cv --dataset csv")
    assert [f["n_test"] for f in doc["folds_done"]] == [4, 4]
    for fold in doc["folds_done"]:
        assert set(fold["change_frozen"].values()) == {0.0}  # stage 1 never touches musicnn
        assert all(v > 0 for v in fold["change_finetuned"].values())
    for stage in ("frozen", "finetuned"):
        r = doc[stage]
        assert r["track"]["n"] == 8 and len(r["predictions"]) == 8 and len(r["fold_macro_f1"]) == 2
        assert set(r["track"]["per_class"]) == {"classical", "hiphop", "metal", "reggae"}
