"""Calibration and open-set figures for the shipped model cards, from out-of-fold predictions.

``python -m training.calibration``   computes every figure below and writes it into each
    card's ``metrics`` → ``calibration`` and ``metrics`` → ``open_set`` (every other key and
    the file's JSON layout kept), and the whole report to ``runs/calibration/report.json``
``python -m training.calibration --dry-run``   the report only, no card touched
``python -m training.calibration --models gtzan-logreg``   a subset

The confidence scored is what tagger writes as ``TAGGER_CONFIDENCE``: the top class
probability the model outputs for the clip heard whole (every planned window).

**calibration**: expected calibration error (10 equal-width bins, ``training.openset.ece``)
of the top-class confidence, the reliability bins, and at thresholds 0.3, 0.5, 0.75 the
precision of the top genre among clips whose confidence reaches the threshold and the
coverage (the share reaching it).

* GTZAN-trained heads (``gtzan-musicnn-logreg``, ``gtzan-logreg``): out-of-fold predictions
  of the grouped 5-fold CV (``training.openset.folds_for``, seed 0: the folds of every other
  model), each fold's model refitted with the shipped recipe.
* ``musicnn-msd``, ``musicnn-mtt`` (never trained on GTZAN): every clip, the head's top genre
  folded to GTZAN with ``tagger.genres.TO_GTZAN``; a genre with no GTZAN counterpart
  (electronic, folk, ambient, ...) counts as wrong.

**open_set**: for the GTZAN-trained heads, leave-one-genre-out: for each genre G, the recipe
fitted on every clip not of G, G's clips predicted (necessarily wrongly); at each threshold,
how many of G's clips would still get a tag. For the musicnn taggers (no retraining): per
GTZAN genre, how many clips get a wrong genre at each threshold; GTZAN genres their
vocabulary cannot reach can never be right.

``gtzan-cnn-bilstm`` is not refitted (a from-scratch CNN 15 times over does not fit a 2-core
machine); its card gets a ``calibration`` entry saying so, and what it stores instead.

Inputs: the per-window musicnn outputs cached by ``python -m training.openset_embed gtzan``
(``cache/openset/gtzan-v1.npz``) and the MFCC statistics of ``training.cache`` (computed
and cached on first use from the shared GTZAN copy).
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from tagger import genres
from tagger.evaluate import scores
from tagger.models.progressive import Hearing, stages
from training.openset import ece, fit_head, folds_for, gtzan_data, track_rows

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "tagger" / "models" / "artifacts"
RUNS = ROOT / "runs" / "calibration"
THRESHOLDS = (0.3, 0.5, 0.65, 0.75)
COMMAND = "python -m training.calibration"
SAMPLE_NOTE = ("GTZAN here is a small partial sample (218 clips: blues 69, jazz 73, the other eight "
               "genres 8-10 each): wide error bars, one clip moves a minor genre by 0.1")
TRAINED = ("gtzan-musicnn-logreg", "gtzan-logreg")
TAGGERS = ("musicnn-msd", "musicnn-mtt")
NOT_REFITTED = ("gtzan-cnn-bilstm",)
MODELS = TRAINED + TAGGERS + NOT_REFITTED


def _r(x: float | None) -> float | None:
    return None if x is None else round(float(x), 4)


# ---------------------------------------------------------------- the figures

def calibration_figures(conf: np.ndarray, right: np.ndarray) -> dict:
    """ECE, reliability bins, and precision/coverage at each threshold."""
    err, bins = ece([{"p": float(p), "right": bool(r)} for p, r in zip(conf, right)])
    at = {}
    for t in THRESHOLDS:
        m = conf >= t
        at[f"{t:.2f}"] = {"written": int(m.sum()), "right": int(right[m].sum()),
                          "precision": _r(right[m].mean()) if m.any() else None,
                          "coverage": _r(m.mean())}
    return {"n": int(len(conf)), "ece": err, "mean_confidence": _r(conf.mean()), "accuracy": _r(right.mean()),
            "at_threshold": at, "reliability": bins}


def open_set_logo(conf_logo: np.ndarray, pred_logo: list[str], y: list[str]) -> dict:
    """Leave-one-genre-out: every prediction is wrong; how many would be written at each threshold."""
    per_genre = {}
    for g in sorted(set(y)):
        idx = [i for i in range(len(y)) if y[i] == g]
        c = conf_logo[idx]
        wrong_genres: dict[str, int] = {}
        for i in idx:
            if conf_logo[i] >= THRESHOLDS[0]:
                wrong_genres[pred_logo[i]] = wrong_genres.get(pred_logo[i], 0) + 1
        per_genre[g] = {"clips": len(idx), "tagged_wrong": {f"{t:.2f}": int((c >= t).sum()) for t in THRESHOLDS},
                        "median_confidence": _r(np.median(c)),
                        f"genres_given_at_{THRESHOLDS[0]:.2f}": dict(sorted(wrong_genres.items(), key=lambda kv: -kv[1]))}
    total = {f"{t:.2f}": int((conf_logo >= t).sum()) for t in THRESHOLDS}
    return {"protocol": "leave-one-genre-out: for each GTZAN genre G, the shipped recipe fitted on every clip not "
                        "of G, G's clips predicted; every tag given to them is wrong (the head has no G)",
            "n": len(y), "tagged_wrong": total,
            "tagged_wrong_share": {k: _r(v / len(y)) for k, v in total.items()},
            "per_genre": per_genre}


def oof_top1(y: list[str], pred: list[str]) -> dict:
    s = scores(y, pred, sorted(set(y) | set(pred)))
    return {"accuracy": s["accuracy"], "macro_f1": s["macro_f1"]}


def progressive(window_probs: list[np.ndarray], how: Hearing = Hearing()) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Track probabilities as a default scan hears a by-window model (``progressive.hear``):
    ``how.first`` windows, then ``how.step`` more until the top probability reaches ``how.stop``.
    Returns (probabilities, windows heard, windows planned), one row per clip."""
    out, heard_n = [], []
    for w in window_probs:
        heard: list[int] = []
        for stage in stages(len(w), how.first, how.step):
            heard += stage
            p = w[sorted(heard)].mean(axis=0)
            p = p / p.sum()
            if p.max() >= how.stop:
                break
        out.append(p)
        heard_n.append(len(heard))
    return np.stack(out), np.array(heard_n), np.array([len(w) for w in window_probs])


# ---------------------------------------------------------------- the models

def full_probs(pipe, x: np.ndarray, n_labels: int) -> np.ndarray:
    """A fitted sklearn pipeline's probabilities over all ``n_labels`` (integer classes_; unseen: 0)."""
    out = np.zeros((len(x), n_labels))
    out[:, [int(c) for c in pipe.classes_]] = pipe.predict_proba(x)
    return out


def musicnn_logreg_windows(rows: list[np.ndarray], y: list[str], labels: tuple[str, ...], tr, te) -> list[np.ndarray]:
    """gtzan-musicnn-logreg's recipe (``training.openset.fit_head``: StandardScaler +
    LogisticRegression(C=1, balanced, max_iter=3000, seed 0) on every window's 200 penultimate
    units) fitted on ``tr``; each ``te`` clip's per-window probabilities."""
    head = fit_head([rows[i] for i in tr], [y[i] for i in tr], labels)
    return [full_probs(head, rows[i][:, :200], len(labels)) for i in te]


def mfcc_stats(ids: list[str], log=print) -> np.ndarray:
    """gtzan-logreg's input: ``training.cache`` ``stats`` (114,) per clip, in ``ids`` order."""
    from training import datasets, experiments

    items, feats, errors = experiments.load("gtzan", log=log)
    if errors or [it.track_id for it in items] != ids:
        raise SystemExit("the MFCC cache's GTZAN clips differ from cache/openset/gtzan-v1.npz's")
    assert [it.group for it in items] == [datasets.gtzan_group(i) for i in ids]
    return np.stack([feats[i].stats for i in ids])


def mfcc_logreg_probs(x: np.ndarray, y: list[str], labels: tuple[str, ...], tr, te) -> np.ndarray:
    """gtzan-logreg's recipe (``training.ml.fit("logreg")``: StandardScaler +
    LogisticRegression(C=10, L2, saga, seed 0)) fitted on ``tr``; ``te``'s probabilities."""
    from training import ml

    pipe = ml.fit("logreg", x[tr], [y[i] for i in tr], seed=0)
    return ml.predict_proba(pipe, x[te], list(labels))


def trained_entries(name: str, y: list[str], folds, predict, by_window: bool) -> tuple[dict, dict, dict]:
    """Out-of-fold CV and leave-one-genre-out predictions of one GTZAN-trained recipe.

    ``predict(tr, te)`` gives ``te``'s per-window probabilities (``by_window``) or per-clip ones."""
    labels = tuple(sorted(set(y)))
    n = len(y)
    t0 = time.time()

    def run(splits):
        per = [None] * n
        for tr, te in splits:
            for i, p in zip(te, predict(tr, te)):
                per[i] = p
        return per

    cv = run(folds)
    logo = run([([i for i in range(n) if y[i] != g], [i for i in range(n) if y[i] == g]) for g in labels])
    seconds = round(time.time() - t0, 1)

    def clip_probs(per):
        if not by_window:
            return np.stack(per)
        p = np.stack([w.mean(axis=0) for w in per])
        return p / p.sum(axis=1, keepdims=True)

    pc, pl = clip_probs(cv), clip_probs(logo)
    pred_cv = [labels[k] for k in pc.argmax(1)]
    pred_logo = [labels[k] for k in pl.argmax(1)]
    right = np.array([a == b for a, b in zip(pred_cv, y)])
    assert not any(a == b for a, b in zip(pred_logo, y))
    recipe = {"gtzan-musicnn-logreg": "StandardScaler + LogisticRegression(C=1.0, class_weight=balanced, max_iter=3000, "
                                      "random_state=0) on every window's musicnn-msd penultimate layer (200 units); "
                                      "track = mean of its windows' probabilities (training.openset.fit_head)",
              "gtzan-logreg": "StandardScaler + LogisticRegression(C=10, L2, saga, max_iter=10000, random_state=0) on "
                              "the clip's MFCC statistics (training.ml.fit('logreg'), training.cache stats)"}[name]
    cal = {"note": SAMPLE_NOTE,
           "protocol": "out-of-fold predictions of the grouped 5-fold CV (StratifiedGroupKFold, groups of 5 "
                       "consecutive ids, seed 0: training.openset.folds_for, the folds of the other cards), every "
                       "window heard; confidence = the top class probability (TAGGER_CONFIDENCE)",
           "recipe": recipe,
           **calibration_figures(pc.max(1), right),
           "oof_top1": oof_top1(y, pred_cv),
           "command": COMMAND, "seconds_cv_and_logo": seconds}
    opn = {"note": SAMPLE_NOTE, **open_set_logo(pl.max(1), pred_logo, y), "recipe": recipe, "command": COMMAND}
    rows = {"clips": [{"cv_genre": a, "cv_p": round(float(p), 4), "logo_genre": b, "logo_p": round(float(q), 4)}
                      for a, p, b, q in zip(pred_cv, pc.max(1), pred_logo, pl.max(1))]}
    if by_window:
        how = Hearing()
        pcs, heard, planned = progressive(cv, how)
        pls, heard_l, _ = progressive(logo, how)
        right_s = np.array([labels[k] == t for k, t in zip(pcs.argmax(1), y)])
        fig = calibration_figures(pcs.max(1), right_s)
        cal["as_a_default_scan_hears"] = {
            "hearing": f"tagger.models.progressive defaults: first {how.first} windows, then {how.step} at a time "
                       f"until the top probability reaches {how.stop}",
            "windows_heard_mean": _r(heard.mean()), "windows_planned": int(planned.max()),
            "ece": fig["ece"], "at_threshold": fig["at_threshold"], "reliability": fig["reliability"],
            "oof_top1": oof_top1(y, [labels[k] for k in pcs.argmax(1)])}
        tw = {f"{t:.2f}": int((pls.max(1) >= t).sum()) for t in THRESHOLDS}
        opn["as_a_default_scan_hears"] = {"tagged_wrong": tw, "tagged_wrong_share": {k: _r(v / n) for k, v in tw.items()},
                                          "windows_heard_mean": _r(heard_l.mean())}
    return cal, opn, rows


def tagger_entries(name: str, tags: np.ndarray, track: np.ndarray, y: list[str]) -> tuple[dict, dict, dict]:
    """A fixed musicnn tag→genre head on every clip: the genre it writes, folded to GTZAN."""
    head = genres.HEADS[name]
    n = len(y)
    acts = np.stack([tags[track == i].mean(axis=0) for i in range(n)])  # MusicnnModel.tag_activations
    probs = head.probabilities(acts)  # MusicnnModel.predict_batch
    top = probs.argmax(1)
    conf = probs.max(1).astype(float)
    written = [head.genres[k] for k in top]
    folded = [genres.TO_GTZAN.get(g) for g in written]
    right = np.array([f == t for f, t in zip(folded, y)])
    gtzan = sorted(set(genres.TO_GTZAN.values()))
    reachable = {genres.TO_GTZAN[g] for g in head.genres if g in genres.TO_GTZAN}
    unreachable = [g for g in gtzan if g not in reachable]
    outside = sorted({g for g in head.genres if g not in genres.TO_GTZAN})
    cal = {"note": SAMPLE_NOTE,
           "protocol": "not trained on GTZAN: every clip (no folds), every window heard; the head's top genre "
                       "(confidence = its probability, TAGGER_CONFIDENCE) folded to GTZAN with "
                       "tagger.genres.TO_GTZAN; a genre with no GTZAN counterpart counts as wrong",
           **calibration_figures(conf, right),
           "top1": oof_top1(y, [f or g for f, g in zip(folded, written)]),
           "written_outside_gtzan": int(sum(f is None for f in folded)),
           "command": COMMAND}
    per_genre = {}
    for g in gtzan:
        idx = [i for i in range(n) if y[i] == g]
        wrong = [i for i in idx if not right[i]]
        given: dict[str, int] = {}
        for i in wrong:
            if conf[i] >= THRESHOLDS[0]:
                given[written[i]] = given.get(written[i], 0) + 1
        per_genre[g] = {"clips": len(idx), "reachable": g in reachable,
                        "tagged_wrong": {f"{t:.2f}": int(sum(conf[i] >= t for i in wrong)) for t in THRESHOLDS},
                        f"genres_given_at_{THRESHOLDS[0]:.2f}": dict(sorted(given.items(), key=lambda kv: -kv[1]))}
    total = {f"{t:.2f}": int(((conf >= t) & ~right).sum()) for t in THRESHOLDS}
    opn = {"note": SAMPLE_NOTE,
           "protocol": "no retraining (the head is a fixed tag map): per GTZAN genre, the clips that get a wrong "
                       "genre (folded with TO_GTZAN; one outside GTZAN is wrong) at each confidence threshold",
           "unreachable_gtzan_genres": unreachable,
           "unreachable_note": "no genre of this head folds onto these, so their clips can never be right (the "
                               "tagger.genres docstring lists the vocabulary's gaps)",
           "genres_outside_gtzan": outside,
           "n": n, "tagged_wrong": total, "tagged_wrong_share": {k: _r(v / n) for k, v in total.items()},
           "per_genre": per_genre, "command": COMMAND}
    rows = {"clips": [{"genre": g, "folded": f, "p": round(float(p), 4)} for g, f, p in zip(written, folded, conf)]}
    return cal, opn, rows


def cnn_bilstm_entry() -> dict:
    """What gtzan-cnn-bilstm stores instead of out-of-fold probabilities, and why none were made."""
    d = ARTIFACTS / "gtzan-cnn-bilstm"
    stored = json.loads((d / "cv_confusion.json").read_text())
    card = json.loads((d / "card.json").read_text())
    cv = card.get("metrics", {}).get("grouped_cv", {})
    return {"computed": False,
            "note": SAMPLE_NOTE,
            "reason": "no out-of-fold probabilities are stored: cv_confusion.json holds only the "
                      f"{cv.get('folds', '?')}-fold CV's confusion counts and scores (keys: " + ", ".join(sorted(stored))
                      + "), the card only accuracy/F1 figures, so neither ECE nor precision/coverage at a confidence "
                      "threshold can be derived; refitting this from-scratch CNN-BiLSTM for the grouped 5-fold CV and "
                      f"the 10 leave-one-genre-out runs (15 fits; the card's {cv.get('folds', '?')}-fold CV took "
                      f"{cv.get('seconds', '?')} s and the full fit {card.get('training_time_s', '?')} s) does not fit "
                      "the shared 2-core machine in this session, so neither the calibration nor the open-set "
                      "(leave-one-genre-out) figures were computed",
            "to_compute": "rerun the grouped CV on training.openset.folds_for's folds keeping per-clip probabilities, "
                          "and 10 leave-one-genre-out fits, then score them as training.calibration scores the other "
                          "GTZAN heads",
            "command": COMMAND}


# ---------------------------------------------------------------- cards

def json_style(text: str) -> dict:
    """The ``json.dumps`` arguments that reproduce ``text`` exactly (indent=1, ASCII by default)."""
    doc = json.loads(text)
    for indent in (1, 2, 4):
        for ascii_ in (True, False):
            if json.dumps(doc, indent=indent, ensure_ascii=ascii_) + "\n" == text:
                return {"indent": indent, "ensure_ascii": ascii_}
    return {"indent": 1, "ensure_ascii": True}


def write_card(name: str, entries: dict) -> Path:
    path = ARTIFACTS / name / "card.json"
    text = path.read_text(encoding="utf-8")
    style = json_style(text)
    card = json.loads(text)
    metrics = card.setdefault("metrics", {})
    for key, value in entries.items():
        metrics[key] = value
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(card, **style) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog=COMMAND, description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.split("\n")[1:]))
    ap.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS), metavar="NAME",
                    help="the cards to score (default: all of " + ", ".join(MODELS) + ")")
    ap.add_argument("--dry-run", action="store_true", help="write runs/calibration/report.json only, no card")
    ap.add_argument("--report", default=str(RUNS / "report.json"), help="where the report goes")
    args = ap.parse_args(argv)

    data, ids, y, groups = gtzan_data()
    folds = folds_for(y, groups)
    labels = tuple(sorted(set(y)))
    report: dict = {"command": COMMAND, "note": SAMPLE_NOTE, "thresholds": list(THRESHOLDS),
                    "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                    "ids": ids, "genres": y, "fold": [0] * len(y), "models": {}}
    for k, (_, te) in enumerate(folds):
        for i in te:
            report["fold"][i] = k

    results: dict[str, dict] = {}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*max_iter.*")
        for name in args.models:
            t0 = time.time()
            if name == "gtzan-musicnn-logreg":
                rows = track_rows(data)
                cal, opn, per_clip = trained_entries(
                    name, y, folds, lambda tr, te: musicnn_logreg_windows(rows, y, labels, tr, te), by_window=True)
            elif name == "gtzan-logreg":
                x = mfcc_stats(ids)
                cal, opn, per_clip = trained_entries(
                    name, y, folds, lambda tr, te: mfcc_logreg_probs(x, y, labels, tr, te), by_window=False)
            elif name in TAGGERS:
                tags = data["msd_tags"] if name == "musicnn-msd" else data["mtt_tags"]
                cal, opn, per_clip = tagger_entries(name, tags, data["track"], y)
            else:
                cal, per_clip = cnn_bilstm_entry(), {}
                opn = {k: cal[k] for k in ("computed", "reason", "to_compute", "command")}
            results[name] = {"calibration": cal, "open_set": opn}
            report["models"][name] = {**results[name], **per_clip}
            if not cal.get("computed", True):
                print(f"{name}: not computed ({time.time() - t0:.0f} s)")
            else:
                a = cal["at_threshold"]["0.75"]
                print(f"{name}: ECE {cal['ece']}, at 0.75 precision {a['precision']} coverage {a['coverage']}; "
                      f"wrong share at 0.30 {opn['tagged_wrong_share']['0.30']}, at 0.75 "
                      f"{opn['tagged_wrong_share']['0.75']} ({time.time() - t0:.0f} s)")

    out = Path(args.report)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {out}")
    if not args.dry_run:
        for name, entries in results.items():
            print(f"recorded in {write_card(name, entries)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
