"""Fit and measure the open-set default (``tagger.models.openset``): right or silent.

``python -m training.openset cv``     grouped 5-fold CV, leave-one-genre-out, calibration,
    threshold, and the Debian check, all nested (no row judges a calibrator that saw its
    clip); writes ``runs/openset/report.json`` and the reliability diagram
``python -m training.openset train --out DIR``   fits on every clip and writes the artifact
``python -m training.openset bf16``   the shipped decider on float32 vs bfloat16 network outputs
``python -m training.openset mttwindows``   the shipped decider reading musicnn-mtt from the first windows only
``python -m training.openset check``   the shipped decider on music its artists tagged (``training.tagged``)
``python -m training.openset giveup``   the shipped decider's give-up: hearing stops once no candidate can
    reach the threshold
    (``python -m training.openset_embed ... --precision bfloat16`` first)

Reads the per-window network outputs cached by ``python -m training.openset_embed``
(``gtzan`` and, for the unlabelled check, ``debian``).

Episodes, each giving every clip it scores one row per candidate genre (the head's top,
the tag layers' top), labelled right or wrong:

* **cv**: the head trained on 4 of 5 grouped folds (``training.experiments.grouped_folds``,
  seed 0), the fifth scored;
* **logo-G**: the head trained on every clip but genre G's, G's clips scored (the head
  cannot be right; only the tag layers can name G).

Rows are weighted so that every genre counts alike within an episode kind and both kinds
count alike: the calibrator's probability is the chance of being right on a library half
of whose music the head has never heard.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from tagger import genres
from tagger.models.openset import FEATURES, KINDS, PLAIN_NAME, Familiarity, OpenSetDecider, kind_of, save_plain
from training import datasets
from training.openset_embed import load

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "runs" / "openset"
#: the written tags must be right at least this often, in both episode kinds
TARGET_PRECISION = 0.90
SEED = 0
#: the calibrators' inverse regularisation
CAL_C = 1.0
#: the share of the calibrators' weight on leave-one-genre-out rows (music the head never heard)
OPEN_SHARE = 0.5
#: the share of the calibrators' weight on music its artists tagged (``training.tagged``: other
#: recordings, far from GTZAN's), where that collection is embedded. 0: the collection only checks
#: the threshold (``acceptable``); 0.33-0.67 were tried (training/README.md) and not kept: more
#: classical tags on Wesnoth's scores, fewer electronic ones and blues/jazz on adventure-game pieces
TAGGED_SHARE = 0.0
#: a genre's own figure of familiarity is measured between clips of different runs of ids only
#: (``Familiarity.fit(groups=)``): a new track is by an artist the head never heard, and "as near
#: to the genre as its training clips" should mean as near as they come to other albums of it, not
#: to their own album's tracks. False: against every other clip (the recipe until 2026-12-07)
ACROSS_GROUPS = True
#: the labelled collection of other recordings (``python -m training.openset_embed F.csv --name tagged``)
TAGGED = "tagged"
#: the early-stop values tried (progressive hearing stops once the answer reaches one; 1.01: never)
EARLY_STOPS = (0.75, 0.8, 0.85, 0.9, 0.95, 1.01)
#: the give-up values tried: hearing stops once neither candidate's probability reaches one (0: never)
GIVE_UPS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3)
#: a give-up may cost at most this share of the right tags written without one, and no wrong tag more
GIVE_UP_LOSS = 0.01


def track_rows(data: dict) -> list[np.ndarray]:
    """Each track's window rows ``(n, 300)``: penultimate, msd tags, mtt tags."""
    rows = np.concatenate([data["msd_pen"], data["msd_tags"], data["mtt_tags"]], axis=1)
    return [rows[data["track"] == i] for i in range(len(data["ids"]))]


def fit_head(rows: list[np.ndarray], y: list[str], labels: tuple[str, ...]):
    """StandardScaler + LogisticRegression(C=1, balanced) on every window: the shipped head's recipe."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.concatenate([r[:, :200] for r in rows])
    yy = np.repeat([labels.index(g) for g in y], [len(r) for r in rows])
    pipe = Pipeline([("scale", StandardScaler()),
                     ("model", LogisticRegression(C=1.0, class_weight="balanced", max_iter=3000,
                                                  random_state=SEED))])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*max_iter.*")
        pipe.fit(x, yy)
    return pipe


def fit_decider(rows: list[np.ndarray], y: list[str], groups: list[str] | None = None) -> OpenSetDecider:
    """Head and familiarity; with ``groups`` (and ``ACROSS_GROUPS``), a genre's own figure of
    familiarity is measured between clips of different runs of ids only."""
    labels = tuple(sorted(set(y)))
    head = fit_head(rows, y, labels)
    fam = Familiarity.fit(np.stack([r[:, :200].mean(axis=0) for r in rows]), np.array([labels.index(g) for g in y]),
                          np.asarray(groups) if groups is not None and ACROSS_GROUPS else None)
    return OpenSetDecider(head, labels, fam)


def episodes(rows: list[np.ndarray], y: list[str], groups: list[str], folds, first: int = 3,
             step: int = 2) -> list[dict]:
    """Every candidate row of every episode, at every stage of progressive hearing (the windows
    heard after the first ``first``, then ``step`` more at a time: ``progressive.stages``):
    ``{clip, kind, held, stage, genre, x, right, true}``."""
    from tagger.models.progressive import stages

    out = []

    def score(dec: OpenSetDecider, idx, kind: str, held: str):
        for i in idx:
            heard: list[int] = []
            for k, stage in enumerate(stages(len(rows[i]), first, step)):
                heard += stage
                for g, x in dec.candidates(dec.evidence(rows[i][heard])):  # in hearing order
                    out.append({"clip": int(i), "kind": kind, "held": held, "stage": k, "genre": g, "x": x,
                                "right": g == y[i], "true": y[i]})

    for k, (tr, te) in enumerate(folds):
        score(fit_decider([rows[i] for i in tr], [y[i] for i in tr], [groups[i] for i in tr]), te, "cv", str(k))
    for g in sorted(set(y)):
        tr = [i for i in range(len(y)) if y[i] != g]
        te = [i for i in range(len(y)) if y[i] == g]
        score(fit_decider([rows[i] for i in tr], [y[i] for i in tr], [groups[i] for i in tr]), te, "logo", g)
    return out


def tagged_episodes(rows: list[np.ndarray], y: list[str], gtzan_groups: list[str] | None = None,
                    name: str = TAGGED, first: int = 3, step: int = 2, data: dict | None = None) -> list[dict]:
    """Every candidate row of the artist-tagged collection ``name`` at every stage of hearing, the
    head trained on every GTZAN clip (as shipped): ``{clip, kind: "tagged", held: group, group,
    stage, genre, x, right, true}``; [] when the collection is not embedded. Its genres need not
    be GTZAN's: a track the head cannot name is right only through the tag layers. ``data``: the
    collection itself, in ``load``'s form (the student's rows of it, ``training.distill ship``)."""
    from tagger.models.progressive import stages

    if data is None:
        try:
            data = load(name)
        except SystemExit:
            return []
    trows = track_rows(data)
    ty = [str(g) for g in data["genres"]]
    groups = [str(g) for g in data["groups"]] if "groups" in data else [str(i).split("__")[0] for i in data["ids"]]
    dec = fit_decider(rows, y, gtzan_groups)
    out = []
    for i, r in enumerate(trows):
        heard_: list[int] = []
        for k, stage in enumerate(stages(len(r), first, step)):
            heard_ += stage
            for g, x in dec.candidates(dec.evidence(r[heard_])):
                out.append({"clip": i, "kind": "tagged", "held": groups[i], "group": groups[i], "stage": k,
                            "genre": g, "x": x, "right": g == ty[i], "true": ty[i]})
    return out


def weights(eps: list[dict], y: list[str] | None = None) -> np.ndarray:
    """Every genre alike within an episode kind, and within a genre of the artist-tagged kind every
    group (artist) alike; the kinds in OPEN_SHARE and TAGGED_SHARE (none where the episodes hold no
    tagged rows); a clip's weight is shared by its stages (its candidates each carry it: the
    calibrator learns each candidate's chance)."""
    w = np.zeros(len(eps))
    stages_of: dict[tuple, int] = {}
    for e in eps:
        key = (e["kind"], e["held"], e["clip"])
        stages_of[key] = max(stages_of.get(key, 0), e["stage"] + 1)
    tagged = TAGGED_SHARE if any(e["kind"] == "tagged" for e in eps) else 0.0
    for kind, share in (("cv", (1 - OPEN_SHARE) * (1 - tagged)), ("logo", OPEN_SHARE * (1 - tagged)),
                        ("tagged", tagged)):
        idx = [j for j, e in enumerate(eps) if e["kind"] == kind]
        per_genre: dict[str, dict[str, set]] = {}
        for j in idx:
            e = eps[j]
            # GTZAN's episodes: one group per genre (its clips alike); tagged: the clip's artist
            group = e.get("group", "") if kind == "tagged" else ""
            per_genre.setdefault(e["true"], {}).setdefault(group, set()).add(e["clip"])
        for j in idx:
            e = eps[j]
            groups = per_genre[e["true"]]
            group = e.get("group", "") if kind == "tagged" else ""
            w[j] = share / (len(per_genre) * len(groups) * len(groups[group])
                            * stages_of[(e["kind"], e["held"], e["clip"])])
    return w / w.sum() * len(eps)


def fit_calibrator(x: np.ndarray, right: np.ndarray, w: np.ndarray) -> dict:
    """One logistic regression per candidate kind (``openset.KINDS``): the evidence that makes an
    agreeing pair right is not what makes a lone tag-layer guess right."""
    from sklearn.dummy import DummyClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    kinds = np.array([kind_of(r) for r in x])
    out = {}
    for kind in KINDS:
        m = kinds == kind
        if not m.any():  # no candidate of this kind (only in made-up rows): nothing to judge it by
            continue
        if len(set(right[m])) < 2:  # one outcome only (no kind is so on GTZAN): its share
            pipe = DummyClassifier(strategy="prior").fit(x[m], right[m].astype(int), sample_weight=w[m])
        else:
            pipe = Pipeline([("scale", StandardScaler()),
                             ("model", LogisticRegression(C=CAL_C, max_iter=2000))])
            pipe.fit(x[m], right[m].astype(int), model__sample_weight=w[m])
        out[kind] = pipe
    return out


def nested_probs(eps: list[dict], y: list[str], folds) -> np.ndarray:
    """Each row's calibrated probability, from a calibrator fitted without any row of that clip's
    fold (cv), of the held-out genre (logo, the artist-tagged rows of that genre too) or of the
    artist-tagged track's group (tagged)."""
    w = weights(eps, y)
    x = np.stack([e["x"] for e in eps])
    right = np.array([e["right"] for e in eps])
    kinds = np.array([e["kind"] for e in eps])
    helds = np.array([e["held"] for e in eps])
    trues = np.array([e["true"] for e in eps])
    gtzan = kinds != "tagged"
    clip = np.array([e["clip"] for e in eps])
    fold_of = np.zeros(len(y), int)
    for k, (_, te) in enumerate(folds):
        fold_of[te] = k
    row_fold = np.where(gtzan, fold_of[np.where(gtzan, clip, 0)], -1)
    probs = np.zeros(len(eps))
    for kind, held in sorted(set(zip(kinds, helds))):
        mine = (kinds == kind) & (helds == held)
        if kind == "cv":
            keep = row_fold != int(held)
        elif kind == "logo":
            keep = trues != held
        else:
            keep = ~mine
        cal = fit_calibrator(x[keep], right[keep], w[keep])
        probs[mine] = [cal[kind_of(r)].predict_proba(r[None])[0, 1] for r in x[mine]]
    return probs


def decisions(eps: list[dict], probs: np.ndarray, threshold: float, stop: float,
              give_up: float = 0.0) -> list[dict]:
    """What the model would record for every clip of every episode, heard progressively: at each
    stage the likelier candidate (the head's when neither reaches ``threshold``,
    ``OpenSetDecider.decide``), stopping at the first stage whose answer reaches ``stop`` or
    whose likelier candidate stays below ``give_up`` (``OpenSetDecider.prospect``)."""
    by_clip: dict[tuple, dict[int, list[int]]] = {}
    for j, e in enumerate(eps):
        by_clip.setdefault((e["kind"], e["held"], e["clip"]), {}).setdefault(e["stage"], []).append(j)
    out = []
    head_i = FEATURES.index("is_head_top")
    for key, st in by_clip.items():
        for k in sorted(st):
            js = st[k]
            best = max(js, key=lambda j: probs[j])
            hopeless = probs[best] < give_up
            if probs[best] < threshold:
                best = next(j for j in js if eps[j]["x"][head_i])
            if probs[best] >= stop or hopeless:
                break
        e = eps[best]
        out.append({"kind": e["kind"], "held": e["held"], "clip": e["clip"], "true": e["true"],
                    "genre": e["genre"], "p": float(probs[best]), "right": bool(e["right"]), "stages": k + 1})
    return out


def at_threshold(dec: list[dict], t: float) -> dict:
    """Precision of what would be written, coverage, and the wrong tags, per episode kind."""
    out = {}
    for kind in ("cv", "logo", "tagged"):
        rows = [d for d in dec if d["kind"] == kind]
        if kind == "tagged" and not rows:
            continue
        written = [d for d in rows if d["p"] >= t]
        right = sum(d["right"] for d in written)
        out[kind] = {"n": len(rows), "written": len(written), "right": right,
                     "wrong": len(written) - right,
                     "precision": round(right / len(written), 4) if written else None,
                     "coverage": round(len(written) / len(rows), 4) if rows else None}
    return out


def ece(dec: list[dict], bins: int = 10) -> tuple[float, list[dict]]:
    """Expected calibration error of the chosen genres' probabilities, and the diagram's bins."""
    p = np.array([d["p"] for d in dec])
    r = np.array([d["right"] for d in dec], float)
    edges = np.arange(bins + 1) / bins  # exact decimal edges: 0.3 falls in [0.3, 0.4)
    out, err = [], 0.0
    for a, b in zip(edges[:-1], edges[1:]):
        m = (p >= a) & ((p < b) | (b == 1.0))
        if m.any():
            out.append({"lo": round(float(a), 2), "hi": round(float(b), 2), "n": int(m.sum()),
                        "mean_confidence": round(float(p[m].mean()), 4), "accuracy": round(float(r[m].mean()), 4)})
            err += m.sum() / len(p) * abs(p[m].mean() - r[m].mean())
    return round(float(err), 4), out


def pooled_precision(s: dict) -> float | None:
    written = s["cv"]["written"] + s["logo"]["written"]
    return (s["cv"]["right"] + s["logo"]["right"]) / written if written else None


def logo_wrong_shares(dec: list[dict], t: float) -> dict[str, float]:
    """Per held-out genre: the share of its clips given a wrong tag at threshold ``t``."""
    per: dict[str, list[int]] = {}
    for d in dec:
        if d["kind"] == "logo":
            n = per.setdefault(d["held"], [0, 0])
            n[0] += 1
            n[1] += d["p"] >= t and not d["right"]
    return {g: wrong / clips for g, (clips, wrong) in sorted(per.items())}


def macro_logo_wrong(dec: list[dict], t: float) -> float:
    """The held-out genres' wrong-tag shares, each genre alike: GTZAN's blues and jazz (142 of
    218 clips here) must not hide a genre of ten clips that gets half of them wrong."""
    shares = logo_wrong_shares(dec, t)
    return float(np.mean(list(shares.values()))) if shares else 0.0


def acceptable(s: dict, dec: list[dict], t: float) -> bool:
    """Written tags right TARGET_PRECISION of the time over both GTZAN kinds together and on the
    artist-tagged music (where the episodes hold it), and at most 1 - TARGET_PRECISION of a
    held-out genre's clips given a wrong tag, every genre alike."""
    p = pooled_precision(s)
    tagged = s.get("tagged")
    if tagged and tagged["written"] and tagged["precision"] < TARGET_PRECISION:
        return False
    return p is not None and p >= TARGET_PRECISION and macro_logo_wrong(dec, t) <= 1 - TARGET_PRECISION


def choose(eps: list[dict], probs: np.ndarray) -> tuple[float, float, list[dict]]:
    """The lowest threshold (steps of 0.05) that is ``acceptable`` as the product hears (stopping
    once the answer reaches the threshold, or EARLY_STOPS' next value up, whichever is acceptable
    with fewer windows): ``(threshold, stop, decisions)``."""
    for t in np.round(np.arange(0.5, 0.96, 0.05), 2):
        for stop in [x for x in EARLY_STOPS if x >= t]:
            dec = decisions(eps, probs, float(t), stop)
            if acceptable(at_threshold(dec, float(t)), dec, float(t)):
                return float(t), stop, dec
    return 0.95, 1.01, decisions(eps, probs, 0.95, 1.01)


def choose_give_up(eps: list[dict], probs: np.ndarray, t: float, stop: float) -> tuple[float, dict]:
    """The largest of GIVE_UPS at which the decisions at threshold ``t`` and early stop ``stop``
    stay ``acceptable``, keep all but GIVE_UP_LOSS of the right tags written without giving up,
    and write no wrong tag more; with the sweep (windows heard, right and wrong tags per value)."""
    sweep, chosen, base = {}, 0.0, None
    for g in GIVE_UPS:
        d = decisions(eps, probs, t, stop, g)
        s = at_threshold(d, t)
        right, wrong = sum(k["right"] for k in s.values()), sum(k["wrong"] for k in s.values())
        base = base or (right, wrong)
        ok = acceptable(s, d, t) and right >= base[0] * (1 - GIVE_UP_LOSS) and wrong <= base[1]
        sweep[f"{g:.2f}"] = {"windows_heard": windows_heard(d), "right": right, "wrong": wrong,
                             "cv_coverage": s["cv"]["coverage"], "logo_coverage": s["logo"]["coverage"],
                             "acceptable": bool(ok)}
        if ok:
            chosen = g
    return chosen, sweep


def reliability_png(bins: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=1)
    ax.plot([b["mean_confidence"] for b in bins], [b["accuracy"] for b in bins], "o-")
    for b in bins:
        ax.annotate(str(b["n"]), (b["mean_confidence"], b["accuracy"]), fontsize=7, xytext=(3, -9),
                    textcoords="offset points")
    ax.set_xlabel("confidence written (TAGGER_CONFIDENCE)")
    ax.set_ylabel("share right")
    ax.set_title(title, fontsize=9)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def gtzan_data():
    data = load("gtzan")
    ids = [str(i) for i in data["ids"]]
    y = [str(g) for g in data["genres"]]
    groups = [datasets.gtzan_group(i) for i in ids]
    return data, ids, y, groups


def nested_gtzan() -> tuple[list[np.ndarray], list[str], list[str], list, list[dict], np.ndarray]:
    """The shared GTZAN clips' rows, labels, groups and folds, every episode row and its nested
    calibrated probability (``episodes``, ``nested_probs``): what ``cv`` and ``giveup`` measure on."""
    data, _, y, groups = gtzan_data()
    rows = track_rows(data)
    folds = folds_for(y, groups)
    eps = episodes(rows, y, groups, folds) + tagged_episodes(rows, y, groups)
    return rows, y, groups, folds, eps, nested_probs(eps, y, folds)


def folds_for(y, groups):
    from sklearn.model_selection import StratifiedGroupKFold

    cv = StratifiedGroupKFold(n_splits=5, shuffle=True, random_state=SEED)
    return [(tr, te) for tr, te in cv.split(np.zeros(len(y)), y, groups)]


def final_decider(rows, y, groups, folds, eps=None, tagged: dict | None = None) -> OpenSetDecider:
    """Head and familiarity on every clip; calibrator on every episode row (``tagged``: the
    artist-tagged collection to use instead of the cached one, ``tagged_episodes``)."""
    eps = eps if eps is not None else episodes(rows, y, groups, folds) + tagged_episodes(rows, y, groups, data=tagged)
    dec = fit_decider(rows, y, groups)
    dec.calibrator = fit_calibrator(np.stack([e["x"] for e in eps]), np.array([e["right"] for e in eps]),
                                    weights(eps, y))
    return dec


def top1_scores(dec: list[dict], y_labels) -> dict:
    """Accuracy and macro-F1 of the genre recorded on cv rows, written or not."""
    from tagger.evaluate import scores

    rows = [d for d in dec if d["kind"] == "cv"]
    return scores([d["true"] for d in rows], [d["genre"] for d in rows], sorted(set(y_labels) | {d["genre"] for d in rows}))


def windows_heard(dec: list[dict], first: int = 3, step: int = 2, n: int = 9) -> float:
    return round(float(np.mean([min(n, first + step * (d["stages"] - 1)) for d in dec])), 2)


def unlabelled_check(decider: OpenSetDecider, threshold: float, stop: float, name: str = "debian",
                     give_up: float = 0.0) -> dict:
    """Genres the shipped decider writes on unlabelled music, per folder, and where the sources disagree."""
    try:
        data = load(name)
    except SystemExit:
        return {}
    rows = track_rows(data)
    out = []
    for path, r in zip(data["ids"], rows):
        probs, windows = heard(decider, r, stop, give_up)
        ev = decider.evidence(r[windows])
        k = int(np.argmax(probs))
        cands = [g for g, _ in decider.candidates(ev)]
        out.append({"track": str(path), "genre": decider.labels[k], "p": round(float(probs[k]), 3),
                    "written": bool(probs[k] >= threshold), "head": cands[0],
                    "tags": cands[-1], "novelty": round(ev.novelty, 2), "windows": len(windows)})
    per_folder: dict[str, dict] = {}
    for o in out:
        f = per_folder.setdefault(o["track"].split("/")[0], {"tracks": 0, "untagged": 0, "genres": {},
                                                            "sources_disagree": 0, "windows": 0})
        f["tracks"] += 1
        f["windows"] += o["windows"]
        f["sources_disagree"] += o["head"] != o["tags"]
        if o["written"]:
            f["genres"][o["genre"]] = f["genres"].get(o["genre"], 0) + 1
        else:
            f["untagged"] += 1
    return {"per_folder": per_folder, "tracks": out}


def labelled_check(decider: OpenSetDecider, threshold: float, stop: float, name: str = "tagged",
                   give_up: float = 0.0) -> dict:
    """What the decider writes on a labelled collection of other recordings (``training.tagged``:
    music its artists tagged), heard as a scan hears it: per genre and per package the tracks,
    the tags written and how many are right; and whether
    the right genre was among the two candidates at all (what no calibration can add)."""
    try:
        data = load(name)
    except SystemExit:
        return {}
    rows = track_rows(data)
    tracks, per_genre, per_package = [], {}, {}
    for tid, true, r in zip(data["ids"], data["genres"], rows):
        tid, true = str(tid), str(true)
        probs, windows = heard(decider, r, stop, give_up)
        k = int(np.argmax(probs))
        cands = [g for g, _ in decider.candidates(decider.evidence(r[windows]))]
        t = {"track": tid, "true": true, "genre": decider.labels[k], "p": round(float(probs[k]), 3),
             "written": bool(probs[k] >= threshold), "candidates": cands, "windows": len(windows)}
        tracks.append(t)
        for key, table in ((true, per_genre), (tid.split("__")[0], per_package)):
            c = table.setdefault(key, {"tracks": 0, "written": 0, "right": 0, "among_candidates": 0, "wrote": {}})
            c["tracks"] += 1
            c["among_candidates"] += true in cands
            if t["written"]:
                c["written"] += 1
                c["right"] += t["genre"] == true
                c["wrote"][t["genre"]] = c["wrote"].get(t["genre"], 0) + 1
    written = [t for t in tracks if t["written"]]
    right = sum(t["genre"] == t["true"] for t in written)
    return {"tracks": len(tracks), "written": len(written), "right": right,
            "coverage": round(len(written) / len(tracks), 4) if tracks else None,
            "precision": round(right / len(written), 4) if written else None,
            "among_candidates": sum(t["true"] in t["candidates"] for t in tracks),
            "per_genre": per_genre, "per_package": per_package, "track_list": tracks}


def heard(decider: OpenSetDecider, rows: np.ndarray, stop: float, give_up: float = 0.0) -> tuple[np.ndarray, list[int]]:
    """The decider's probabilities for one track's window rows as progressive hearing leaves them
    (3 windows, then 2 at a time, until the answer reaches ``stop`` or no candidate reaches
    ``give_up``), and the windows heard, in the order heard."""
    from tagger.models.progressive import stages

    idx: list[int] = []
    for stage in stages(len(rows), 3, 2):
        idx += stage
        p, chance = decider.judged(rows[idx])  # in hearing order, as a worker's rows are
        if p.max() >= stop or chance < give_up:
            break
    return p, idx


def nested_tagged(dec: list[dict], t: float) -> dict:
    """The nested decisions on the artist-tagged music (no calibrator saw the track's group), per
    genre and per group: tracks, written, right, and what was written."""
    rows = [d for d in dec if d["kind"] == "tagged"]
    out: dict[str, dict] = {"per_genre": {}, "per_group": {}}
    for d in rows:
        for key, table in ((d["true"], out["per_genre"]), (d["held"], out["per_group"])):
            c = table.setdefault(key, {"tracks": 0, "written": 0, "right": 0, "wrote": {}})
            c["tracks"] += 1
            if d["p"] >= t:
                c["written"] += 1
                c["right"] += d["right"]
                c["wrote"][d["genre"]] = c["wrote"].get(d["genre"], 0) + 1
    return out


def cmd_cv(args) -> int:
    global TAGGED_SHARE, ACROSS_GROUPS
    t0 = time.time()
    if getattr(args, "tagged_share", None) is not None:
        TAGGED_SHARE = args.tagged_share
    if getattr(args, "familiar_within_runs", False):
        ACROSS_GROUPS = False
    rows, y, groups, folds, eps, probs = nested_gtzan()
    t, stop, dec = choose(eps, probs)
    give_up, give_up_sweep = choose_give_up(eps, probs, t, stop)
    dec = decisions(eps, probs, t, stop, give_up)
    full = decisions(eps, probs, t, 1.01)
    err, bins = ece(dec)
    per_genre = {}
    for g in sorted(set(y)):
        rs = [d for d in dec if d["kind"] == "logo" and d["held"] == g]
        wr = [d for d in rs if d["p"] >= t]
        per_genre[g] = {"clips": len(rs), "right": sum(d["right"] for d in wr),
                        "wrong": sum(not d["right"] for d in wr), "untagged": len(rs) - len(wr),
                        "wrong_genres": sorted({d["genre"] for d in wr if not d["right"]}),
                        "outside_gtzan": sum(d["genre"] not in datasets.GTZAN_GENRES for d in wr)}
    sweep = {}
    for x in np.round(np.arange(0.5, 0.96, 0.05), 2):
        d = decisions(eps, probs, float(x), max(float(x), stop))
        s = at_threshold(d, float(x))
        s["pooled_precision"] = round(pooled_precision(s) or 0, 4)
        s["logo_macro_wrong"] = round(macro_logo_wrong(d, float(x)), 4)
        sweep[f"{x:.2f}"] = s
    stops = {}
    for st in EARLY_STOPS:
        if st >= t:
            d = decisions(eps, probs, t, st)
            s = at_threshold(d, t)
            stops[f"{st:.2f}"] = {"windows_heard": windows_heard(d), "pooled_precision": round(pooled_precision(s) or 0, 4),
                                  "logo_wrong": s["logo"]["wrong"], "logo_macro_wrong": round(macro_logo_wrong(d, t), 4),
                                  "cv_coverage": s["cv"]["coverage"]}
    acc, acc_full = top1_scores(dec, y), top1_scores(full, y)
    report = {
        "sample_note": "GTZAN here is a partial copy (218 clips; blues 69, jazz 73, the rest 8-10): a small sample, "
                       "one clip moves a minor class by 0.1",
        "threshold": t, "early_stop": stop, "give_up": give_up, "windows_heard": windows_heard(dec),
        "at_threshold": at_threshold(dec, t),
        "pooled_precision": round(pooled_precision(at_threshold(dec, t)), 4),
        "logo_macro_wrong": round(macro_logo_wrong(dec, t), 4),
        "acceptance": (f"the lowest threshold whose written tags are right {TARGET_PRECISION:.0%} of the time over "
                       "grouped CV and leave-one-genre-out together, with at most "
                       f"{1 - TARGET_PRECISION:.0%} of a held-out genre's clips given a wrong tag, the mean "
                       "over the ten held-out genres (each alike)"),
        "ece": {"all": err, "cv": ece([d for d in dec if d["kind"] == "cv"])[0],
                "logo": ece([d for d in dec if d["kind"] == "logo"])[0]},
        "reliability": bins,
        "logo_per_genre": per_genre,
        "cv_top1": {k: acc[k] for k in ("n", "accuracy", "macro_f1", "per_class")},
        "cv_top1_all_windows": {k: acc_full[k] for k in ("accuracy", "macro_f1")},
        "at_threshold_all_windows": at_threshold(full, t),
        "sweep_thresholds": sweep,
        "sweep_early_stop": stops,
        "sweep_give_up": give_up_sweep,
        "features": list(FEATURES),
        "open_share": OPEN_SHARE,
        "tagged_share": TAGGED_SHARE if any(e["kind"] == "tagged" for e in eps) else 0.0,
        "tagged_nested": nested_tagged(dec, t),
        "seconds": round(time.time() - t0, 1),
    }
    final = final_decider(rows, y, groups, folds, eps)
    final.threshold = t
    report["debian"] = unlabelled_check(final, t, stop, give_up=give_up)
    RUNS.mkdir(parents=True, exist_ok=True)
    (RUNS / "report.json").write_text(json.dumps(report, indent=1))
    reliability_png(bins, RUNS / "reliability.png",
                    f"{len(dec)} nested decisions (grouped CV + leave-one-genre-out"
                    f"{' + artist-tagged' if any(d['kind'] == 'tagged' for d in dec) else ''})\nECE {err:.3f}")
    print(json.dumps({k: report[k] for k in ("threshold", "early_stop", "give_up", "windows_heard", "pooled_precision",
                                              "at_threshold", "ece", "sweep_early_stop", "sweep_give_up")}, indent=1))
    for g, v in per_genre.items():
        print(f"  logo {g:10s} right {v['right']:3d} wrong {v['wrong']:3d} untagged {v['untagged']:3d} {v['wrong_genres']}")
    print("cv top-1 (as recorded)", acc["accuracy"], "macro-F1", acc["macro_f1"], "| all windows",
          acc_full["accuracy"], acc_full["macro_f1"])
    for folder, f in report["debian"].get("per_folder", {}).items():
        print(" ", folder, f)
    for key, table in report["tagged_nested"].items():
        for k, c in table.items():
            print(f"  nested tagged {k:40s} {c['tracks']:3d} tracks, written {c['written']:3d}, right {c['right']:3d} "
                  f"{c['wrote']}")
    return 0


def print_labelled(check: dict) -> None:
    if not check:
        return
    print(f"artist-tagged music: {check['written']} of {check['tracks']} written, {check['right']} right; "
          f"the right genre among the candidates on {check['among_candidates']}")
    for key in ("per_genre", "per_package"):
        for k, c in check[key].items():
            print(f"  {k:28s} {c['tracks']:3d} tracks, written {c['written']:3d}, right {c['right']:3d}, "
                  f"among candidates {c['among_candidates']:3d} {c['wrote']}")


def shipped_decider(model: Path, card: dict) -> OpenSetDecider:
    """A model folder's decider as a worker runs it (the card's ``mtt_windows``)."""
    import joblib

    dec = joblib.load(Path(model) / "decider.joblib")
    dec.mtt_windows = int(card.get("mtt_windows", 0))
    return dec


def cmd_mtt_windows(args) -> int:
    """The shipped decider reading musicnn-mtt's tags from the first K windows heard only (a
    worker then runs one network, not two, on every later window), against every window:
    the same tag written or withheld, and the windows each network runs on."""
    model = Path(args.model)
    card_path = model / "card.json"
    card = json.loads(card_path.read_text())
    t, stop, give_up = card["threshold"], card["early_stop"], card.get("give_up", 0.0)
    dec = shipped_decider(model, {})
    out: dict = {}
    for name in ("gtzan", "debian", TAGGED):
        try:
            data = load(name)
        except SystemExit:
            continue
        rows = track_rows(data)
        truth = [str(g) for g in data["genres"]]

        def written(p):
            return dec.labels[int(np.argmax(p))] if p.max() >= t else None

        dec.mtt_windows = 0
        base = [heard(dec, r, stop, give_up) for r in rows]
        dec.mtt_windows = args.windows
        alt = [heard(dec, r, stop, give_up) for r in rows]
        a, b = [written(p) for p, _ in base], [written(p) for p, _ in alt]
        out[name] = {"tracks": len(rows), "same_written_or_not_and_genre": sum(x == y for x, y in zip(a, b)),
                     "written": [sum(x is not None for x in a), sum(x is not None for x in b)],
                     "windows_per_track": [round(float(np.mean([len(w) for _, w in base])), 2),
                                           round(float(np.mean([len(w) for _, w in alt])), 2)],
                     "mtt_windows_per_track": round(float(np.mean([min(len(w), args.windows) for _, w in alt])), 2),
                     "changed": [{"track": str(i), "every_window": x, f"first_{args.windows}": y}
                                 for i, x, y in zip(data["ids"], a, b) if x != y]}
        if any(truth):
            out[name]["right"] = [sum(x == g for x, g in zip(a, truth)), sum(y == g for y, g in zip(b, truth))]
    print(json.dumps(out, indent=1))
    if args.write:
        card["mtt_windows"] = args.windows
        record_check(card_path, card, "mtt_windows_check",
                     command=f"python -m training.openset mttwindows --windows {args.windows} --write",
                     what="the shipped decider heard as a scan hears (threshold, early stop, give-up of this card) "
                          "with musicnn-mtt's tags read from every window heard and from the first ones only",
                     **out)
    return 0


def record_check(card_path: Path, card: dict, key: str, **figures) -> None:
    """Write ``figures`` into the card under ``key``, dated today."""
    import datetime

    card[key] = {"checked": datetime.date.today().isoformat(), **figures}
    card_path.write_text(json.dumps(card, indent=1) + "\n")
    print(f"recorded in {card_path}")


def cmd_check(args) -> int:
    """The shipped decider, as its card sets it, on the artist-tagged collection (and the
    unlabelled one): the figures of music by artists no data set here holds."""
    model = Path(args.model)
    card_path = model / "card.json"
    card = json.loads(card_path.read_text())
    dec = shipped_decider(model, card)
    t, stop, give_up = card["threshold"], card["early_stop"], card.get("give_up", 0.0)
    check = labelled_check(dec, t, stop, args.collection, give_up)
    if not check:
        raise SystemExit(f"no collection {args.collection!r}: run python -m training.tagged and "
                         "python -m training.openset_embed FOLDER/labels.csv --name tagged first")
    print_labelled(check)
    if args.write:
        record_check(card_path, card, "artist_tagged_check",
                     data="music whose composers tagged it with a genre, in Debian packages of games "
                          "(training/tagged.py); the tag mapped to the taxonomy by whole words (63 files of 12 "
                          "packages, 22 artists, 2026-12-07); the shipped decider was not fitted on them",
                     command="python -m training.tagged UNPACKED_PACKAGES/* --out DIR && python -m "
                             "training.openset_embed DIR/labels.csv --name tagged && python -m training.openset "
                             "check --write",
                     **{k: v for k, v in check.items() if k != "track_list"})
    return 0


def cmd_bf16(args) -> int:
    """The shipped decider on the same windows computed in float32 and in bfloat16 (inference's
    ``precision = auto`` on a CPU with native bfloat16): same genre, same written-or-not?"""
    card = json.loads((Path(args.model) / "card.json").read_text())
    dec = shipped_decider(Path(args.model), card)
    stop, give_up = card["early_stop"], card.get("give_up", 0.0)
    out = {}
    for name in ("gtzan", "debian"):
        try:
            a, b = load(name), load(f"{name}-bf16")
        except SystemExit:
            continue
        ra, rb = track_rows(a), track_rows(b)
        same = written_same = 0
        diff = []
        for x, y_ in zip(ra, rb):
            pa, pb = heard(dec, x, stop, give_up)[0], heard(dec, y_, stop, give_up)[0]
            same += int(np.argmax(pa) == np.argmax(pb))
            written_same += int((pa.max() >= dec.threshold) == (pb.max() >= dec.threshold))
            diff.append(abs(float(pa.max()) - float(pb.max())))
        out[name] = {"tracks": len(ra), "same_genre": same, "same_written_or_not": written_same,
                     "max_confidence_difference": round(max(diff), 4),
                     "median_confidence_difference": round(float(np.median(diff)), 4)}
    print(json.dumps(out, indent=1))
    if args.write:
        import datetime

        card_path = Path(args.model) / "card.json"
        card = json.loads(card_path.read_text())
        from tagger.models.runtime import cpu_flags

        native = sorted((cpu_flags() or frozenset()) & {"avx512_bf16", "amx_bf16"})
        card["bfloat16"] = {
            "checked": datetime.date.today().isoformat() + f", on a CPU with {' and '.join(native) or 'no native bfloat16'}: "
                       "the same windows' network outputs in float32 and bfloat16, heard progressively",
            "command": "python -m training.openset_embed gtzan --precision bfloat16 && python -m "
                       "training.openset_embed DEBIAN_MUSIC --name debian --precision bfloat16 && "
                       "python -m training.openset bf16 --write",
            **out,
        }
        card_path.write_text(json.dumps(card, indent=1) + "\n")
        print(f"recorded in {card_path}")
    return 0


def cmd_give_up(args) -> int:
    """Choose the shipped decider's give-up on the nested GTZAN episodes at its card's threshold
    and early stop (``choose_give_up``), then replay the shipped decider on the unlabelled
    collection with and without it: windows heard, and the tags written that it changes."""
    model = Path(args.model)
    card_path = model / "card.json"
    card = json.loads(card_path.read_text())
    t, stop = card["threshold"], card["early_stop"]
    _, _, _, _, eps, probs = nested_gtzan()
    give_up, sweep = choose_give_up(eps, probs, t, stop)
    check = {"chosen": give_up, "nested_gtzan": sweep}
    dec = shipped_decider(model, card)
    try:
        unl = track_rows(load(args.collection))
    except SystemExit:
        unl = []
    if unl:
        before = [heard(dec, r, stop) for r in unl]
        after = [heard(dec, r, stop, give_up) for r in unl]
        label = [(int(np.argmax(p)) if p.max() >= t else None) for p, _ in before]
        label_gu = [(int(np.argmax(p)) if p.max() >= t else None) for p, _ in after]
        check[args.collection] = {
            "tracks": len(unl),
            "windows_per_track": [round(float(np.mean([len(w) for _, w in before])), 2),
                                  round(float(np.mean([len(w) for _, w in after])), 2)],
            "tagged": [sum(x is not None for x in label), sum(x is not None for x in label_gu)],
            "tags_changed": sum(a != b for a, b in zip(label, label_gu)),
        }
    print(json.dumps(check, indent=1))
    if args.write:
        import datetime

        card["give_up"] = give_up
        card["give_up_check"] = {"checked": datetime.date.today().isoformat(),
                                 "command": "python -m training.openset giveup --write", **check}
        card_path.write_text(json.dumps(card, indent=1) + "\n")
        print(f"recorded in {card_path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.openset", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    cv = sub.add_parser("cv", help="nested CV, leave-one-genre-out, calibration, threshold, Debian check")
    cv.add_argument("--tagged-share", type=float, help=f"the calibrators' weight on artist-tagged music "
                    f"(default {TAGGED_SHARE}; 0: none)")
    cv.add_argument("--familiar-within-runs", action="store_true",
                    help="measure the training clips' familiarity against every other clip, their own run of "
                         "ids too (the recipe until 2026-12-07)")
    tr = sub.add_parser("train", help="fit on every clip and write the artifact")
    tr.add_argument("--out", required=True)
    tr.add_argument("--name", default="gtzan-musicnn-openset")
    tr.add_argument("--version", default="2", help="the card's version, written into every file tagged with it "
                    "(1: the recipe until 2026-12-07, familiarity within runs of ids)")
    bf = sub.add_parser("bf16", help="the shipped decider on float32 vs bfloat16 network outputs")
    bf.add_argument("--model", default=str(ROOT / "tagger" / "models" / "artifacts" / "gtzan-musicnn-openset"))
    bf.add_argument("--write", action="store_true", help="record the check in the card (enables bfloat16 there)")
    gu = sub.add_parser("giveup", help="choose the shipped decider's give-up (hearing stops on hopeless tracks)")
    gu.add_argument("--model", default=str(ROOT / "tagger" / "models" / "artifacts" / "gtzan-musicnn-openset"))
    gu.add_argument("--collection", default="debian", help="the unlabelled collection to replay it on")
    gu.add_argument("--write", action="store_true", help="record the choice and its check in the card")
    ck = sub.add_parser("check", help="the shipped decider on music its artists tagged (training.tagged)")
    ck.add_argument("--model", default=str(ROOT / "tagger" / "models" / "artifacts" / "gtzan-musicnn-openset"))
    ck.add_argument("--collection", default="tagged", help="the labelled collection (training.openset_embed --name)")
    ck.add_argument("--write", action="store_true", help="record the figures in the card")
    mw = sub.add_parser("mttwindows", help="the shipped decider with musicnn-mtt on the first windows only")
    mw.add_argument("--model", default=str(ROOT / "tagger" / "models" / "artifacts" / "gtzan-musicnn-openset"))
    mw.add_argument("--windows", type=int, default=3, help="the first windows heard whose MTT tags are read")
    mw.add_argument("--write", action="store_true", help="record the choice and its check in the card")
    pl = sub.add_parser("plain", help="write a model folder's decider.joblib again as decider.npz (what workers load)")
    pl.add_argument("--model", default=str(ROOT / "tagger" / "models" / "artifacts" / "gtzan-musicnn-openset"))
    args = ap.parse_args(argv)
    return {"cv": cmd_cv, "train": cmd_train, "bf16": cmd_bf16, "plain": cmd_plain,
            "giveup": cmd_give_up, "check": cmd_check,
            "mttwindows": cmd_mtt_windows}[args.cmd](args)


def cmd_plain(args) -> int:
    import joblib

    source = Path(args.model) / "decider.joblib"
    out = save_plain(joblib.load(source), source, Path(args.model) / PLAIN_NAME)
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB)")
    return 0


#: entries of an earlier card in the same folder that ``train`` keeps: the LiteRT and ONNX exports of
#: the networks, made from the weights, not the decider. The checks of the decider (bfloat16, the
#: give-up, mtt_windows, the artist-tagged check) are run again on the new one (training/README.md)
DECIDER_FREE = ("runtimes",)


def cmd_train(args) -> int:
    """Measure (as ``cv``), then fit on every clip and write the artifact with its card."""
    import datetime
    import shutil

    import joblib

    cmd_cv(args)
    report = json.loads((RUNS / "report.json").read_text())
    data, ids, y, groups = gtzan_data()
    rows = track_rows(data)
    folds = folds_for(y, groups)
    dec = final_decider(rows, y, groups, folds)
    dec.threshold = report["threshold"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    joblib.dump(dec, out / "decider.joblib", compress=3)
    save_plain(dec, out / "decider.joblib", out / PLAIN_NAME)  # what workers load
    shutil.copy(RUNS / "reliability.png", out / "reliability.png")
    from tagger.features import MUSICNN_PARAMS

    card = {
        "name": args.name, "version": args.version, "kind": "musicnn_openset", "labels": list(dec.labels),
        "file": "decider.joblib", "features": dict(MUSICNN_PARAMS),
        "frontends": {"msd": {"model": "musicnn-msd", "taps": ["penultimate", "tags"]},
                      "mtt": {"model": "musicnn-mtt", "taps": ["tags"]},
                      "note": "weights read from the musicnn artifacts through tagger.models.registry, not copied"},
        "threshold": dec.threshold,
        "how": ("two candidates per track: the GTZAN head's top genre (logistic regression on musicnn-msd's "
                "penultimate layer, every window, C=1, balanced) and the tag layers' top genre "
                "(tagger.genres.OPEN_TABLE over musicnn-msd's and musicnn-mtt's tags); one logistic-regression "
                "calibrator per candidate kind (agree / head only / tags only) on the features "
                + ", ".join(FEATURES) + ", fitted on grouped 5-fold CV rows and leave-one-genre-out rows, "
                f"weighted {1 - OPEN_SHARE:.0%} / {OPEN_SHARE:.0%} with every genre alike; a genre's novelty "
                "is the distance to its nearest training clips over how near its training clips come to "
                + ("its clips of other runs of ids (other albums; a genre of one run in a fold: the other "
                   "genres' median)" if ACROSS_GROUPS else "any other of its clips")
                + "; the likelier candidate "
                "is the answer and its calibrated probability the confidence; below the threshold the head's "
                "candidate is named first (it is right more often on music of its genres) and nothing is written"),
        "why": ("the head alone is sure and wrong on music outside its ten genres (leave-one-genre-out: "
                "every held-out clip gets a wrong genre); the tag layers were trained on far more music and "
                "name electronic, ambient, folk, punk, rnb, funk, world, but confuse neighbouring genres; "
                "training the calibrator on runs where the head never heard the genre teaches it what an "
                "unfamiliar track looks like (far from the training clips, sources disagreeing)"),
        "data": {"dataset": "gtzan", "tracks": len(y), "per_genre": {g: y.count(g) for g in sorted(set(y))},
                 "group_size": 5, "windows": "as a scan hears a 30 s clip: tagger.audio.plan, 9 windows"},
        "split": "trained on all 218 clips; every figure below is nested out-of-fold (see metrics)",
        "command": (f"python -m training.openset_embed gtzan && python -m training.openset train --out {args.out} "
                    f"--version {args.version}"),
        "early_stop": report["early_stop"],
        "give_up": report["give_up"],
        "metrics": {k: report[k] for k in ("sample_note", "threshold", "early_stop", "give_up", "windows_heard",
                                            "pooled_precision", "logo_macro_wrong", "acceptance", "at_threshold", "ece", "reliability",
                                            "logo_per_genre", "cv_top1", "cv_top1_all_windows",
                                            "at_threshold_all_windows", "sweep_thresholds", "sweep_early_stop",
                                            "sweep_give_up")},
        "unlabelled_check": report.get("debian", {}).get("per_folder", {}),
        "artist_tagged_nested": {"at_threshold": report["at_threshold"].get("tagged"), **report["tagged_nested"]},
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "seed": SEED,
        "licence": "the head and calibrator: this project's; the front ends: musicnn's ISC licence",
    }
    previous = out / "card.json"
    if previous.is_file():
        # the networks' exports do not depend on the decider (a worker checks their weights' digests)
        card.update({k: v for k, v in json.loads(previous.read_text()).items() if k in DECIDER_FREE})
    previous.write_text(json.dumps(card, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
