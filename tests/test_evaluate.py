"""tagger.evaluate on real GTZAN clips with a real (small) model."""
from __future__ import annotations

import numpy as np

import audiofiles
from services import TEST_MODEL
from tagger import audio
from tagger.evaluate import (evaluate, items_from_csv, items_from_folder, items_from_tags, render_text,
                             written_scores)
from tagger.models import registry
from tagger.options import MIN_CONFIDENCE, Hearing


def test_evaluate_scores_what_the_model_predicts(gtzan, test_model_dir, tmp_path):
    clips = [gtzan / "blues" / "blues.00010.mp3", gtzan / "blues" / "blues.00011.mp3",
             gtzan / "metal" / "metal.00009.mp3", gtzan / "rock" / "rock.00003.mp3"]
    bad = audiofiles.text_as_audio(tmp_path)
    items = [(clips[0], "Blues"), (clips[1], "blues"), (clips[2], "Death Metal"), (clips[3], "Progressive Rock"),
             (bad, "jazz")]
    res = evaluate(items, TEST_MODEL, model_dirs=[str(test_model_dir)])

    assert res["model"] == TEST_MODEL and res["n"] == 4
    assert [e["path"] for e in res["errors"]] == [str(bad)]
    # "Blues" matches the model's label, "Death Metal" is metal; "Progressive Rock" is rock, a genre
    # this model cannot output
    assert [p["true"] for p in res["predictions"]] == ["blues", "blues", "metal", "rock"]
    assert res["unknown_labels"] == ["rock"] and res["per_class"]["rock"]["recall"] == 0.0
    # every figure follows from the per-file predictions, which are the model's own
    model = registry.load(TEST_MODEL, extra=[str(test_model_dir)])
    probs = model.predict_batch([audio.load_clip(p) for p in clips])
    assert [p["predicted"] for p in res["predictions"]] == [model.card.labels[k] for k in probs.argmax(1)]
    hits = [p["true"] == p["predicted"] for p in res["predictions"]]
    assert res["accuracy"] == round(np.mean(hits), 4)
    cm = np.array(res["confusion"])
    assert cm.sum() == 4 and cm.trace() == sum(hits)
    assert [res["per_class"][lab]["support"] for lab in res["labels"]] == cm.sum(axis=1).tolist()
    tested = [lab for lab in res["labels"] if res["per_class"][lab]["support"]]
    assert res["macro_f1"] == round(np.mean([res["per_class"][lab]["f1"] for lab in tested]), 4)
    text = render_text(res)
    assert f"accuracy {res['accuracy']:.3f}" in text and "rock" in text and "1 unreadable" in text
    h = Hearing()  # the defaults, which the default model's card sets
    assert f"(first 3, then 2 at a time, stop at {h.stop:g} or when no answer's chance reaches {h.give_up:g})" in text
    # what a scan at the threshold would write, from the same predictions
    w = res["at_threshold"]
    written = [p for p in res["predictions"] if p["confidence"] >= w["threshold"]]
    assert w["threshold"] == MIN_CONFIDENCE and w["written"] == len(written)
    assert w["written_wrong"] == sum(p["true"] != p["predicted"] for p in written)
    assert w["coverage"] == round(len(written) / 4, 4)
    assert f"calibration error (ECE) {w['ece']:.3f}" in text
    assert "(all at once)" in render_text(res | {"first_windows": 0})


def test_written_scores_precision_coverage_and_calibration_error():
    truth = ["a", "a", "b", "b", "c"]
    pred = ["a", "b", "b", "b", "a"]
    conf = [0.95, 0.9, 0.8, 0.35, 0.3]
    w = written_scores(truth, pred, conf, 0.75)
    assert (w["written"], w["written_wrong"], w["written_precision"], w["coverage"]) == (3, 1, 0.6667, 0.6)
    # bins: [0.3, 0.4): conf 0.325, right 1/2; [0.8, 0.9): 0.8 right; [0.9, 1]: 0.925, right 1/2
    expected = 2 / 5 * abs(0.325 - 0.5) + 1 / 5 * abs(0.8 - 1) + 2 / 5 * abs(0.925 - 0.5)
    assert w["ece"] == round(expected, 4)
    assert [b["n"] for b in w["reliability"]] == [2, 1, 2]
    assert written_scores(truth, pred, conf, 0.99)["written_precision"] is None


def test_label_sources(gtzan, tmp_path):
    tree = items_from_folder(gtzan)
    assert len(tree) == 218 and tree[0] == (gtzan / "blues" / "blues.00000.mp3", "blues")
    (tmp_path / "l.csv").write_text("path,genre\nblues/blues.00000.mp3,blues\n")
    assert items_from_csv(tmp_path / "l.csv", root=gtzan) == [(gtzan / "blues" / "blues.00000.mp3", "blues")]
    tagged = audiofiles.make_audio(tmp_path / "lib", "mp3", "a.mp3", seconds=4.0, tags={"genre": ["Jazz"]})
    audiofiles.make_audio(tmp_path / "lib", "flac", "b.flac", seconds=4.0, tags={"genre": ["Metal"]})
    audiofiles.make_audio(tmp_path / "lib", "ogg", "untagged.ogg", seconds=4.0)
    assert items_from_tags(tmp_path / "lib") == [(tagged, "Jazz"), (tmp_path / "lib" / "b.flac", "Metal")]
