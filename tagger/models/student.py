"""The default model's distilled student front end (issue #20), heard before the teacher.

musicnn's two networks (the teacher: ≈ 5.6 GFLOP per 3 s patch) give each window the 300
numbers the open-set decider reads. The student (``training.distill``) is a small network of
depthwise-separable convolutions trained to give the same 300 numbers from the same patch, at a
thirtieth of the FLOPs; it runs in ONNX Runtime. Its own decider (the same recipe refitted on the
student's rows of the GTZAN clips and the artist-tagged files) judges the windows it hears.

The cascade (``tagger.models.progressive.hear``), where the ``student`` setting asks for it (it
is off by default: the card's ``why_not_default``): the student hears a track first,
progressively as the teacher would, but with its own give-up, chosen with the band. Where its
calibrated chance for its top genre stays below the card's ``threshold - band``, the track stays
untagged on the student's word, at a fraction of the teacher's cost. Every other track is heard
again by the teacher, on the windows already decoded, and the teacher's answer is what is
written: every tag a scan writes is the teacher's decision, with the teacher's confidence. The
cut is the card's threshold, whatever ``min_confidence`` a scan writes at.
"""
from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np

from tagger.audio import Clip
from tagger.features import musicnn_window_rows
from tagger.models.base import Card
from tagger.options import Hearing

log = logging.getLogger(__name__)


class Student:
    """A card's student (``card.extra["student"]``): the network, its decider and the band.

    Window by window as ``OpenSetModel`` is (``window_probs``, ``judged``), so that progressive
    hearing runs it the same way; ``hands_on(probs)`` says whether the teacher must hear the track.
    """

    role = "student"

    def __init__(self, card: Card, session, decider, entry: dict):
        self.card = card
        self._session = session
        self.decider = decider
        #: the teacher hears a track again when the student's chance is at least threshold - band
        self.band = float(entry["band"])
        self.threshold = float(card.extra.get("threshold", decider.threshold))
        #: the student's own give-up, chosen with the band (None: the teacher's, ``Hearing.give_up``)
        self.give_up = None if entry.get("give_up") is None else float(entry["give_up"])

    @classmethod
    def load(cls, card: Card, read_decider, threads: int = 0) -> "Student | None":
        """The card's student, or None: the card has none, its files are missing or were made
        from another decider, or ONNX Runtime cannot run here (the teacher alone then hears).
        ``read_decider(plain, source)``: ``tagger.models.openset.load_plain``."""
        from tagger.models import onnx

        entry = card.extra.get("student") or {}
        if not entry.get("file") or not entry.get("decider") or "band" not in entry:
            return None
        home = card.directory.parent / entry.get("directory", card.directory.name)
        net = home / entry["file"]
        plain, source = home / entry["decider"], home / entry["decider_source"]
        if not (net.is_file() and plain.is_file() and source.is_file()) or not onnx.available():
            return None
        try:
            decider = read_decider(plain, source)
            session = onnx.Session(net, threads)
        except Exception as exc:  # noqa: BLE001 - a broken file or runtime: the teacher alone hears
            log.warning("%s: cannot load the student (%s); the teacher hears every track", card.name, exc)
            return None
        f = card.features
        if decider is None or session.takes != (int(f["patch_frames"]), int(f["n_mels"])):
            log.warning("%s: the student's files do not match the card; the teacher hears every track", card.name)
            return None
        if tuple(decider.labels) != tuple(card.labels):
            return None
        return cls(card, session, decider, entry)

    def window_rows(self, patches: np.ndarray) -> np.ndarray:
        """``(n, 187, 96)`` patches → ``(n, 300)``: the student's reading of the teacher's rows."""
        if len(patches) == 0:
            return np.zeros((0, 300), np.float32)
        return self._session(patches)

    def window_probs(self, clip: Clip) -> np.ndarray:
        return musicnn_window_rows(clip.windows, clip.sr, self.window_rows)

    later_window_probs = window_probs

    def judged(self, rows: np.ndarray) -> tuple[np.ndarray, float]:
        return self.decider.judged(rows)

    def from_windows(self, rows: np.ndarray) -> np.ndarray:
        return self.decider.decide(rows)

    def hearing(self, how: Hearing) -> Hearing:
        """How the student hears: as ``how`` says, but giving up at its own give-up where that is
        the higher (a setting of 0, never give up, holds for it too)."""
        if self.give_up is None or not how.give_up or how.give_up >= self.give_up:
            return how
        return replace(how, give_up=self.give_up)

    def hands_on(self, probs: np.ndarray) -> bool:
        """Whether the teacher must hear a track the student judged ``probs``: its chance for its
        top genre is within the band of the threshold, or above it."""
        return float(np.max(probs)) >= self.threshold - self.band
