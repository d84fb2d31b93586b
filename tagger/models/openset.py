"""Right or silent: a genre head that knows what it does not know.

Two sources of a genre, both read off one pass of the musicnn networks over a
track's windows:

* the **head**: a logistic regression on musicnn-msd's penultimate layer,
  trained on GTZAN's ten genres (sure of them, blind to everything else);
* the **tag layers**: musicnn-msd's last.fm tags and musicnn-mtt's
  MagnaTagATune tags, mapped to the taxonomy by ``tagger.genres.OPEN_TABLE``
  (trained on hundreds of thousands of tracks; it can say electronic, ambient,
  folk, punk, rnb, funk, world, classical).

Each source proposes its top genre. A **calibrator** (logistic regression on a
few features of each candidate: how strongly each source backs it, whether
they agree, whether the head can name it at all, how far the track's
embedding lies from the head's training clips, how many windows agree) gives
each candidate the probability that it is right; the likelier candidate is the
answer and that probability is its confidence. The calibrator is fitted on
grouped cross-validation folds *and* leave-one-genre-out runs (the head
trained without genre G, then shown G's clips), so it has seen the head be
sure and wrong on music it never heard: the honest stand-in for a user's
library. ``training/openset.py`` fits and measures it; the artifact's card has
the figures.

Per-window outputs (``window_probs``) are the raw network outputs of each
window; ``from_windows`` turns the windows heard so far into the track's
genre probabilities, so progressive hearing can stop once the calibrated
confidence is high.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tagger import genres
from tagger.audio import Clip
from tagger.errors import ModelMissing
from tagger.features import musicnn_window_rows
from tagger.models.base import Card, Model

#: the columns of a window's output row: musicnn-msd penultimate, msd tags, mtt tags
PEN, MSD, MTT = 200, len(genres.MSD_TAGS), len(genres.MTT_TAGS)
#: the nearest training clips whose distance measures how unfamiliar a track is
K_NEAREST = 5
#: the same within one genre's clips (GTZAN's minor genres have 8-10)
K_GENRE = 3
FEATURES = ("head_p", "tag_share", "tag_score", "is_head_top", "is_tag_top", "agree", "head_can_name",
            "head_top", "tag_top_share", "novelty", "window_agreement", "genre_novelty",
            "windows_heard")


def _logit(p: np.ndarray | float) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-4, 1 - 1e-4)
    return np.log(p / (1 - p))


def split_outputs(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Window output rows ``(n, 300)`` → penultimate ``(n, 200)``, msd tags, mtt tags."""
    rows = np.asarray(rows, dtype=np.float32)
    return rows[:, :PEN], rows[:, PEN:PEN + MSD], rows[:, PEN + MSD:PEN + MSD + MTT]


@dataclass
class Familiarity:
    """How far a track's mean embedding lies from the head's training clips.

    ``novelty`` is the log of the mean distance to the ``K_NEAREST`` nearest
    training clips (standardised penultimate space) over the same figure for
    the training clips themselves (each against the others): 0 is as close as
    a training clip is to its neighbours, positive is farther. Against one
    genre's clips (``genre=``), the nearest ``K_GENRE`` of them, over that
    genre's own figure: a genre with many clips (GTZAN's blues, 69 of 218) is
    dense, and a track must come as close to it as its clips are to each other.
    """

    mean: np.ndarray
    scale: np.ndarray
    points: np.ndarray  # standardised training means (n, 200)
    reference: float
    point_labels: np.ndarray | None = None  # each training clip's genre (an index of the head's labels)
    genre_references: np.ndarray | None = None  # per head label, its clips' own figure

    @classmethod
    def fit(cls, track_means: np.ndarray, labels: np.ndarray | None = None,
            groups: np.ndarray | None = None) -> "Familiarity":
        """``groups``: each clip's group (a run of consecutive ids: an album, an artist). A genre's
        own figure is then measured between clips of different groups only: how near a clip comes
        to other albums of its genre, which is what a track by an unheard artist is compared with,
        not how tight one album is. A genre whose clips are all of one group (a fold of cross-
        validation may hold one run of a minor genre) takes the median figure of the others. The
        overall figure stays measured against any other clip: it is what a candidate the head
        cannot name (electronic, ambient) is judged by, and measured between groups it made the
        calibrators turn down electronic soundtracks (training/README.md, "Familiarity between
        albums")."""
        mean = track_means.mean(axis=0)
        scale = track_means.std(axis=0) + 1e-6
        pts = ((track_means - mean) / scale).astype(np.float32)
        d = np.sqrt(((pts[:, None, :] - pts[None, :, :]) ** 2).sum(-1))
        np.fill_diagonal(d, np.inf)
        ref = _nearest_figure(d, K_NEAREST)
        refs = None
        if labels is not None:
            labels = np.asarray(labels)
            refs = np.full(int(labels.max()) + 1, ref)
            genres = np.unique(labels)
            alone = [] if groups is None else [g for g in genres if len(set(np.asarray(groups)[labels == g])) < 2]
            if len(alone) == len(genres):  # no genre spans two groups: within groups, as without them
                alone = []
            elif groups is not None:
                groups = np.asarray(groups)
                d = d.copy()
                d[groups[:, None] == groups[None, :]] = np.inf
            for g in genres:
                m = labels == g
                if g not in alone and m.sum() > 1:
                    refs[g] = _nearest_figure(d[np.ix_(m, m)], K_GENRE)
            if alone:
                refs[alone] = float(np.median(refs[[g for g in genres if g not in alone]]))
        return cls(mean, scale, pts, ref, labels, refs)

    def distances(self, track_mean: np.ndarray) -> np.ndarray:
        z = (np.asarray(track_mean) - self.mean) / self.scale
        return np.sqrt(((self.points - z) ** 2).sum(-1))

    def novelty(self, track_mean: np.ndarray, genre: int | None = None, d: np.ndarray | None = None) -> float:
        """The log distance ratio to all training clips, or (``genre``) to those of one genre only."""
        d = self.distances(track_mean) if d is None else d
        if genre is None or self.point_labels is None:
            return float(np.log(np.sort(d)[:min(K_NEAREST, len(d))].mean() / self.reference))
        d = d[self.point_labels == genre]
        return float(np.log(np.sort(d)[:min(K_GENRE, len(d))].mean() / self.genre_references[genre]))


def _nearest_figure(d: np.ndarray, k: int) -> float:
    """The median over clips (rows) of the mean distance to their ``k`` nearest (inf: not a
    neighbour; a clip with fewer finite distances averages those it has, one with none is left out)."""
    near = np.sort(d, axis=1)[:, :min(k, d.shape[1] - 1)]
    finite = np.isfinite(near)
    counted = finite.sum(axis=1)
    keep = counted > 0
    return float(np.median(np.where(finite, near, 0.0).sum(axis=1)[keep] / counted[keep]))


def kind_of(x: np.ndarray) -> str:
    """A candidate's kind from its features: both sources' top ("agree"), or one source's only."""
    if x[FEATURES.index("agree")]:
        return "agree"
    return "head" if x[FEATURES.index("is_head_top")] else "tags"


KINDS = ("agree", "head", "tags")


@dataclass
class Evidence:
    """What both sources say about one track."""

    head_probs: np.ndarray  # over head_labels, mean of per-window probabilities
    window_top: np.ndarray  # each window's head top index
    tag_scores: np.ndarray  # over the tag head's genres
    novelty: float
    genre_novelty: np.ndarray  # novelty against the training clips of each head label


@dataclass
class OpenSetDecider:
    """The fitted parts: head, tag map, familiarity and calibrator (see the module docstring)."""

    head: Any  # sklearn pipeline: penultimate row → head_labels (integer classes)
    head_labels: tuple[str, ...]
    familiarity: Familiarity
    #: candidate kind ("agree", "head", "tags") → sklearn pipeline: FEATURES → P(candidate right)
    calibrator: dict = field(default_factory=dict)
    tag_head: str = "musicnn-open"
    #: below this, nothing is written and the head's candidate is named first
    threshold: float = 0.0
    #: the MagnaTagATune tags are read from the first this many windows heard only (0: every
    #: window); the card sets it (``mtt_windows``), and a worker then skips musicnn-mtt on the rest
    mtt_windows: int = 0

    @property
    def tags(self) -> genres.GenreHead:
        return genres.HEADS[self.tag_head]

    @property
    def labels(self) -> tuple[str, ...]:
        """Every genre it may write: the head's and the tag head's."""
        return tuple(sorted(set(self.head_labels) | set(self.tags.genres)))

    def evidence(self, rows: np.ndarray) -> Evidence:
        """What both sources say of a track's window rows, in the order they were heard (the
        MagnaTagATune tags of windows past ``mtt_windows`` are not read: NaN there is fine)."""
        pen, msd, mtt = split_outputs(rows)
        if self.mtt_windows:
            mtt = mtt[:self.mtt_windows]
        raw = self.head.predict_proba(pen)
        per_window = np.zeros((len(pen), len(self.head_labels)))
        per_window[:, [int(c) for c in self.head.classes_]] = raw
        acts = np.concatenate([msd.mean(axis=0), np.nanmean(mtt, axis=0)])
        m = pen.mean(axis=0)
        d = self.familiarity.distances(m)
        per_genre = np.array([self.familiarity.novelty(m, k, d) for k in range(len(self.head_labels))])
        return Evidence(per_window.mean(axis=0), per_window.argmax(axis=1),
                        self.tags.scores(acts[None])[0], self.familiarity.novelty(m, None, d), per_genre)

    def candidates(self, ev: Evidence) -> list[tuple[str, np.ndarray]]:
        """The head's top genre and the tag layers' (one when they agree), each with its features."""
        tag_genres = self.tags.genres
        total = float(ev.tag_scores.sum()) or 1.0
        h_top = self.head_labels[int(np.argmax(ev.head_probs))]
        t_top = tag_genres[int(np.argmax(ev.tag_scores))]
        out = []
        for g in dict.fromkeys([h_top, t_top]):
            hp = float(ev.head_probs[self.head_labels.index(g)]) if g in self.head_labels else 0.0
            ts = float(ev.tag_scores[tag_genres.index(g)]) if g in tag_genres else 0.0
            can = g in self.head_labels
            agree_w = float(np.mean([self.head_labels[i] == g for i in ev.window_top])) if can else 0.0
            x = np.array([
                _logit(hp), _logit(ts / total), _logit(ts), float(g == h_top), float(g == t_top),
                float(h_top == t_top), float(can), _logit(ev.head_probs.max()),
                _logit(float(ev.tag_scores.max()) / total), ev.novelty, agree_w,
                float(ev.genre_novelty[self.head_labels.index(g)]) if can else ev.novelty,
                float(np.log(len(ev.window_top))),
            ])
            out.append((g, x))
        return out

    def scored(self, rows: np.ndarray) -> tuple[Evidence, list[tuple[str, np.ndarray]], np.ndarray]:
        """The evidence of one track's window rows, its candidates, and each candidate's
        calibrated probability of being right."""
        ev = self.evidence(rows)
        cands = self.candidates(ev)
        return ev, cands, np.array([self.calibrator[kind_of(x)].predict_proba(x[None])[0, 1] for _, x in cands])

    def prospect(self, rows: np.ndarray) -> float:
        """The best chance any candidate has of being right on these windows: while it stays
        below the card's ``give_up``, more windows would almost never lift an answer to the
        threshold (``training.openset`` measures how rarely), so hearing stops."""
        return self.judged(rows)[1]

    def decide(self, rows: np.ndarray) -> np.ndarray:
        """Genre probabilities over ``labels`` for one track's window rows: the chosen genre's
        entry is the calibrated probability that it is right; the other candidate keeps its
        own; what is left is shared in proportion to the tag layers' scores, no entry above the
        chosen one's (so a row sums to 1 or a little less)."""
        return self.judged(rows)[0]

    def judged(self, rows: np.ndarray) -> tuple[np.ndarray, float]:
        """``decide`` and ``prospect`` of the same rows, from one pass over the evidence."""
        ev, cands, p = self.scored(rows)
        labels = self.labels
        out = np.zeros(len(labels))
        order = np.argsort(-p)
        if p[order[0]] < self.threshold:  # unsure: the head's guess first (cands[0] is the head's)
            order = np.arange(len(cands))
        best = float(p[order[0]])
        out[labels.index(cands[order[0]][0])] = best
        if len(cands) > 1:
            out[labels.index(cands[order[1]][0])] = min(float(p[order[1]]), best, 1.0 - best)
        rest = 1.0 - out.sum()
        share = np.zeros(len(labels))
        for g, s in zip(self.tags.genres, ev.tag_scores):
            share[labels.index(g)] = s
        share[out > 0] = 0
        if share.sum() > 0 and rest > 0:
            out += rest * share / share.sum()
        # the chosen genre stays on top: every other entry below it (the row then sums to a little less than 1)
        chosen = labels.index(cands[order[0]][0])
        capped = np.minimum(out, np.nextafter(best, 0.0))
        capped[chosen] = best
        return capped, float(p.max())


#: the decider's fitted numbers as plain arrays, beside the ``decider.joblib`` training writes
PLAIN_NAME = "decider.npz"


def _digest(path: Path) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def save_plain(decider: OpenSetDecider, source: Path, out: Path) -> Path:
    """Write ``decider`` (fitted, as unpickled from ``source``) as plain arrays to ``out``: what a
    worker loads, with no scikit-learn and no pickle (``tagger.models.linear``). The digest of
    ``source`` goes with them, so arrays made from another decider are not used."""
    import json

    from tagger.models.linear import Linear

    fam = decider.familiarity
    arrays = dict(Linear.from_pipeline(decider.head).arrays("head"))
    for kind, pipe in decider.calibrator.items():
        arrays.update(Linear.from_pipeline(pipe).arrays(f"calibrator.{kind}"))
    arrays.update({"familiarity.mean": fam.mean, "familiarity.scale": fam.scale, "familiarity.points": fam.points})
    if fam.point_labels is not None:
        arrays["familiarity.point_labels"] = np.asarray(fam.point_labels)
        arrays["familiarity.genre_references"] = np.asarray(fam.genre_references)
    meta = {"head_labels": list(decider.head_labels), "calibrator": sorted(decider.calibrator),
            "tag_head": decider.tag_head, "threshold": float(decider.threshold),
            "reference": float(fam.reference), "source_sha256": _digest(source)}
    arrays["meta"] = np.array(json.dumps(meta))
    with open(out, "wb") as f:
        np.savez_compressed(f, **arrays)
    return out


def load_plain(path: Path, source: Path) -> OpenSetDecider | None:
    """The decider from ``path``, or None when it was made from another ``source`` than this one."""
    import json

    from tagger.models.linear import Linear

    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(str(data["meta"]))
        if meta["source_sha256"] != _digest(source):
            return None
        labels = data["familiarity.point_labels"] if "familiarity.point_labels" in data else None
        refs = data["familiarity.genre_references"] if "familiarity.genre_references" in data else None
        fam = Familiarity(data["familiarity.mean"], data["familiarity.scale"], data["familiarity.points"],
                          meta["reference"], labels, refs)
        return OpenSetDecider(head=Linear.from_arrays(data, "head"), head_labels=tuple(meta["head_labels"]),
                              familiarity=fam,
                              calibrator={k: Linear.from_arrays(data, f"calibrator.{k}") for k in meta["calibrator"]},
                              tag_head=meta["tag_head"], threshold=meta["threshold"])


def load_decider(card: Card) -> OpenSetDecider:
    """A card's decider: the plain arrays (``tagger.models.linear``: no scikit-learn, no pickle)
    where they were made from its decider file, else the file itself."""
    import logging

    plain = card.directory / PLAIN_NAME
    if plain.is_file():
        decider = load_plain(plain, card.path)
        if decider is not None:
            return decider
        logging.getLogger(__name__).warning("%s: %s was made from another %s; unpickling that",
                                            card.name, plain.name, card.path.name)
    import joblib

    return joblib.load(card.path)


_UNLOADED = object()


class OpenSetModel(Model):
    """The open-set default, loaded from a card of kind ``"musicnn_openset"``.

    Each window goes once through musicnn-msd (penultimate layer and tags) and
    musicnn-mtt (tags); ``from_windows`` decides on the windows heard so far.
    Where the card records a LiteRT export of both networks made from the
    installed weights (``runtimes.litert``, ``training.openset_export``) and the
    ``runtime`` setting is litert (or the card makes it the default), the
    networks run in LiteRT and TensorFlow is never imported; otherwise in Keras.

    Where the card has a student (``student``: a small network distilled from the two, in ONNX
    Runtime, with its own decider; ``tagger.models.student``), progressive hearing asks it
    first, and these networks hear only the tracks it hands on.
    """

    role = "openset"

    def __init__(self, card: Card):
        super().__init__(card)
        self.decider: OpenSetDecider = load_decider(card)
        if tuple(self.decider.labels) != tuple(card.labels):
            raise ValueError(f"{card.name}: card labels do not match the decider's {self.decider.labels}")
        self.decider.mtt_windows = int(card.extra.get("mtt_windows", 0))
        self._student: Any = _UNLOADED
        #: "onnx", "litert" or "keras": what runs the networks in this process
        self.runtime = "keras"
        #: both networks in ONNX Runtime (``tagger.models.onnx.Frontend``), where the runtime setting wants it
        self._onnx = self._load_onnx()
        self._runner = None
        #: musicnn-msd alone in LiteRT, for the windows past ``mtt_windows`` (None: not exported)
        self._later_runner = None
        if self._onnx is not None:
            self.runtime = "onnx"
            return
        self._runner = self._load_litert()
        if self._runner is not None:
            self.runtime = "litert"
            later = (card.extra["runtimes"]["litert"].get("later") or {}).get("file")
            if later:
                from tagger.models import litert

                f = card.features
                self._later_runner = litert.load(card.directory / later, card.name,
                                                 (int(f["patch_frames"]), int(f["n_mels"])), "musicnn patches")
            return
        from tagger.models.transfer import MusicnnFrontEnd

        fronts = card.extra["frontends"]
        # bfloat16 only where this card records the check against float32 (runtime.compute_dtype)
        bf16 = "bfloat16" in card.extra
        self.msd = MusicnnFrontEnd(self._front_card(fronts["msd"]["model"]), ("penultimate", "tags"),
                                   bfloat16_verified=bf16)
        self.mtt = MusicnnFrontEnd(self._front_card(fronts["mtt"]["model"]), ("tags",), bfloat16_verified=bf16)


    @property
    def student(self):
        """The distilled student that hears each track first (``tagger.models.student``), or None:
        the card has none, or the ``student`` setting is off (read at each call, loaded once)."""
        from tagger.models import runtime
        from tagger.models.student import Student

        if not runtime.wants_student():
            return None
        if self._student is _UNLOADED:
            self._student = Student.load(self.card, load_plain, threads=getattr(runtime, "_threads", 0))
        return self._student

    def _front_card(self, name: str) -> Card:
        from tagger.models import registry

        return registry.find(name, [str(self.card.directory.parent)])

    def _exported_from_these_weights(self, export: dict, what: str) -> bool:
        """Whether an export's recorded sources are the installed weights (else it is stale)."""
        import logging

        for name, source in (export.get("sources") or {}).items():
            try:
                have = _digest(self._front_card(name).path)
            except (OSError, ModelMissing):  # the weights are gone: the export is all there is
                have = source.get("sha256")
            if have != source.get("sha256"):
                logging.getLogger(__name__).warning("%s: %s was exported from other %s weights; not used",
                                                    self.card.name, what, name)
                return False
        return True

    def _load_onnx(self):
        """Both networks in ONNX Runtime, or None (not wanted, not exported, stale, or no ONNX Runtime)."""
        import logging

        from tagger.models import onnx, runtime

        export = (self.card.extra.get("runtimes") or {}).get("onnx") or {}
        files = export.get("files") or {}
        paths = [self.card.directory / files.get(k, "") for k in ("msd", "mtt")]
        if not runtime.wants_onnx() or not all(files.get(k) for k in ("msd", "mtt")):
            return None
        if not all(p.is_file() for p in paths) or not onnx.available():
            return None
        if not self._exported_from_these_weights(export, "the ONNX export"):
            return None
        try:
            front = onnx.Frontend(*paths, threads=getattr(runtime, "_threads", 0))
        except Exception as exc:  # noqa: BLE001 - a broken file or runtime: the next runtime runs it
            logging.getLogger(__name__).warning("%s: cannot load the ONNX export (%s)", self.card.name, exc)
            return None
        f = self.card.features
        if front.msd.takes != (int(f["patch_frames"]), int(f["n_mels"])):
            return None
        return front

    def _load_litert(self):
        """The export's runner, or None (none recorded, made from other weights, or no LiteRT here)."""
        from tagger.models import litert, runtime

        export = (self.card.extra.get("runtimes") or {}).get("litert") or {}
        path = self.card.directory / export.get("file", "")
        if not (runtime.wants_litert() or export.get("default", True)):
            return None  # the card's figures say Keras is faster here (runtime = litert chooses it)
        if not export.get("file") or not path.is_file() or not litert.available():
            return None
        if not self._exported_from_these_weights(export, path.name):
            return None
        f = self.card.features
        return litert.load(path, self.card.name, (int(f["patch_frames"]), int(f["n_mels"])), "musicnn patches")

    def window_rows(self, patches: np.ndarray) -> np.ndarray:
        """``(n, 187, 96)`` patches → ``(n, 300)`` rows: penultimate, msd tags, mtt tags."""
        if self._onnx is not None:
            return self._onnx.rows(patches)
        if self._runner is not None:
            return self._runner(patches)
        a = self.msd.patch_embeddings(patches)
        b = self.mtt.patch_embeddings(patches)
        return np.concatenate([a["penultimate"], a["tags"], b["tags"]], axis=1)

    def window_probs(self, clip: Clip) -> np.ndarray:
        """Each window's network outputs (one patch per default window; a longer window's
        patches averaged), rows of ``(len(clip.windows), 300)``; ``from_windows`` reads them."""
        return musicnn_window_rows(clip.windows, clip.sr, self.window_rows)

    def msd_rows(self, patches: np.ndarray) -> np.ndarray | None:
        """``(n, 250)``: musicnn-msd's penultimate layer and tags alone, or None where nothing
        runs that network alone (a LiteRT export without its musicnn-msd part)."""
        if self._onnx is not None:
            return self._onnx.msd_rows(patches)
        if self._runner is not None:
            return None if self._later_runner is None else self._later_runner(patches)
        a = self.msd.patch_embeddings(patches)
        return np.concatenate([a["penultimate"], a["tags"]], axis=1)

    def later_window_probs(self, clip: Clip) -> np.ndarray:
        """``window_probs`` of windows heard after the first stage: where the decider reads the
        MagnaTagATune tags of the first windows only (``mtt_windows``), musicnn-mtt is not run
        on these (its columns NaN) and a window costs one network instead of two: Keras's
        musicnn-msd, or the card's LiteRT export of it alone (``runtimes.litert.later``)."""
        if not self.decider.mtt_windows:
            return self.window_probs(clip)
        msd = musicnn_window_rows(clip.windows, clip.sr, self.msd_rows)
        if msd is None:
            return self.window_probs(clip)
        return np.concatenate([msd, np.full((len(msd), MTT), np.nan, np.float32)], axis=1)

    def from_windows(self, rows: np.ndarray) -> np.ndarray:
        return self.decider.decide(rows)

    def judged(self, rows: np.ndarray) -> tuple[np.ndarray, float]:
        return self.decider.judged(rows)

    def predict_batch(self, clips: list[Clip]) -> np.ndarray:
        if not clips:
            return np.zeros((0, len(self.card.labels)))
        return np.stack([self.from_windows(self.window_probs(c)) for c in clips])
