"""Score a musicnn genre head on every GTZAN clip and write the figures into its card.

Nothing of musicnn was trained on GTZAN, so all 218 clips of the shared copy
count as unheard. Each clip goes through the production path:
``tagger.audio.load_clip`` (default windows) → ``MusicnnModel.predict_batch``;
the genre probabilities are folded onto GTZAN's ten classes
(``tagger.genres.fold``) and the best class is the prediction. Two folds are
reported: the strict one (``TO_GTZAN``) and one counting "instrumental" as
classical (``TO_GTZAN_INSTRUMENTAL``).
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from tagger import audio, genres
from tagger.models import registry
from training.musicnn import readme

GTZAN = ("blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop", "reggae", "rock")


def per_class(truth: list[str], pred: list[str], classes: tuple[str, ...]) -> dict:
    out = {}
    for c in classes:
        tp = sum(t == c and p == c for t, p in zip(truth, pred))
        n_true = sum(t == c for t in truth)
        n_pred = sum(p == c for p in pred)
        recall = tp / n_true if n_true else None
        precision = tp / n_pred if n_pred else 0.0
        f1 = 2 * precision * recall / (precision + recall) if recall and precision else 0.0
        out[c] = {"n": n_true, "accuracy": None if recall is None else round(recall, 3), "f1": round(f1, 3)}
    return out


def summarise(truth: list[str], pred: list[str]) -> dict:
    classes = tuple(c for c in GTZAN if c in truth)
    pc = per_class(truth, pred, classes)
    return {
        "accuracy": round(float(np.mean([t == p for t, p in zip(truth, pred)])), 3),
        "macro_accuracy": round(float(np.mean([pc[c]["accuracy"] for c in classes])), 3),
        "macro_f1": round(float(np.mean([pc[c]["f1"] for c in classes])), 3),
        "per_class": pc,
    }


def evaluate(name: str, out_dir: Path, gtzan: Path) -> dict:
    model = registry.load(name, [str(out_dir)])
    files = sorted(p for g in GTZAN for p in (gtzan / g).glob("*.mp3"))
    valid = set((gtzan / "splits" / "valid.txt").read_text().split())
    model.predict_batch([audio.load_clip(files[0])])  # warm-up: graph tracing, librosa import
    truth, probs, ids, t_total, t_model = [], [], [], 0.0, 0.0
    for path in files:
        t0 = time.perf_counter()
        clip = audio.load_clip(path)
        t1 = time.perf_counter()
        probs.append(model.predict_batch([clip])[0])
        t2 = time.perf_counter()
        t_total += t2 - t0
        t_model += t2 - t1
        truth.append(path.parent.name)
        ids.append(path.stem)
    probs = np.array(probs)
    result = {}
    for key, mapping in (("strict", genres.TO_GTZAN), ("instrumental_as_classical", genres.TO_GTZAN_INSTRUMENTAL)):
        folded, classes = genres.fold(probs, model.card.labels, mapping, GTZAN)
        pred = [classes[i] for i in folded.argmax(axis=1)]
        result[key] = summarise(truth, pred)
        # a track counts as a hit here when its true class is among the genres written
        written = [{mapping.get(g) for g in genres.confident_genres(p, model.card.labels)} for p in probs]
        result[key]["hit_in_written_genres"] = round(float(np.mean([t in w for t, w in zip(truth, written)])), 3)
        result[key]["mean_genres_written"] = round(float(np.mean([len(genres.confident_genres(p, model.card.labels))
                                                                  for p in probs])), 2)
        sub = [i for i, x in enumerate(ids) if x in valid]
        result[key]["valid_txt"] = summarise([truth[i] for i in sub], [pred[i] for i in sub])
        print(f"{name} [{key}] accuracy {result[key]['accuracy']} macro {result[key]['macro_accuracy']} "
              f"macro-F1 {result[key]['macro_f1']} hit-in-written {result[key]['hit_in_written_genres']} "
              f"(valid.txt: {result[key]['valid_txt']['accuracy']})")
        for c, v in result[key]["per_class"].items():
            print(f"   {c:10s} n={v['n']:3d} acc={v['accuracy']} f1={v['f1']}")
    n_windows = len(audio.load_clip(files[0]).windows)
    timing = {
        "ms_per_track": round(1000 * t_total / len(files), 1),
        "ms_per_track_model": round(1000 * t_model / len(files), 1),
        "windows_per_track": n_windows,
        "machine": f"{os.cpu_count()} CPU cores, TF 2.21 CPU, tf.function, one track per call; "
                   f"load average at the end {os.getloadavg()[0]:.1f} (other jobs slow it down)",
    }
    print(f"{timing['ms_per_track']} ms/track (decode+features+model), {timing['ms_per_track_model']} features+model")
    card_file = model.card.directory / "card.json"
    doc = json.loads(card_file.read_text())
    doc.setdefault("metrics", {})["gtzan"] = {
        "data": f"all {len(files)} clips of the shared partial GTZAN copy (none used in training)",
        "protocol": "tagger.audio.load_clip defaults → predict_batch → genres.fold → argmax over GTZAN's 10",
        **result,
    }
    doc["metrics"]["speed"] = timing
    card_file.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    readme.write(model.card.directory)
    return result
