"""What every model is: a card (labels, features, metrics) and ``predict_batch``."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from tagger.audio import Clip


@dataclass(frozen=True)
class Card:
    """A model card: everything needed to load, feed and judge a model.

    ``card.json`` beside the model file holds these keys; training writes it,
    inference reads it.
    """

    name: str
    version: str
    kind: str  # loader: "keras_patches", "sklearn_mfcc", "musicnn", ...
    labels: tuple[str, ...]
    file: str
    features: dict[str, Any]
    directory: Path
    metrics: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return self.directory / self.file

    @classmethod
    def read(cls, directory: str | Path) -> "Card":
        directory = Path(directory)
        doc = json.loads((directory / "card.json").read_text(encoding="utf-8"))
        known = {"name", "version", "kind", "labels", "file", "features", "metrics"}
        return cls(
            name=doc["name"],
            version=str(doc["version"]),
            kind=doc["kind"],
            labels=tuple(doc["labels"]),
            file=doc["file"],
            features=doc.get("features", {}),
            metrics=doc.get("metrics", {}),
            directory=directory,
            extra={k: v for k, v in doc.items() if k not in known},
        )


@dataclass(frozen=True)
class Prediction:
    """The outcome of analysing one file."""

    genre: str
    confidence: float
    top: list[tuple[str, float]]  # best first, at least the top 3
    model: str
    version: str
    decided_by: str  # "deep", "fallback", "pretrained", ...
    genres: list[str] = field(default_factory=list)  # multi-value genres when several are confident
    # why no genre may be written whatever the model says ("does not sound like music (a steady
    # tone)", tagger.musiclike); None: the confidence alone decides
    reason: Optional[str] = None

    @classmethod
    def from_probs(cls, probs: np.ndarray, card: Card, decided_by: str, k: int = 3) -> "Prediction":
        order = np.argsort(probs)[::-1]
        top = [(card.labels[i], float(probs[i])) for i in order[: max(k, 1)]]
        return cls(
            genre=top[0][0],
            confidence=top[0][1],
            top=top,
            model=card.name,
            version=card.version,
            decided_by=decided_by,
            genres=[top[0][0]],
        )


class Model:
    """Base of every loaded model. Subclasses implement ``predict_batch``."""

    #: what the pipeline records as ``decided_by`` when this model decides
    role = "model"

    def __init__(self, card: Card):
        self.card = card

    def predict_batch(self, clips: list[Clip]) -> np.ndarray:
        """Class probabilities, shape ``(len(clips), len(card.labels))``, rows summing to 1."""
        raise NotImplementedError

    def window_probs(self, clip: Clip) -> np.ndarray | None:
        """One row per window ``(len(clip.windows), ...)`` from which ``from_windows`` gives
        this model's prediction for the clip (for most models: the window's probabilities,
        averaged), or None where the prediction does not split so (the track is then always
        heard whole; see ``tagger.models.progressive``)."""
        return None

    def later_window_probs(self, clip: Clip) -> np.ndarray | None:
        """``window_probs`` of windows heard after the first stage. A model whose decision reads
        some of its outputs from the first windows heard only may leave them out here (NaN)
        and save their cost; by default the same as ``window_probs``."""
        return self.window_probs(clip)

    def from_windows(self, rows: np.ndarray) -> np.ndarray:
        """The track's probabilities from the ``window_probs`` rows of the windows heard."""
        mean = np.asarray(rows, dtype=np.float64).mean(axis=0)
        return mean / mean.sum()

    def prospect(self, rows: np.ndarray) -> float:
        """The best chance that any answer from these ``window_probs`` rows is right, which
        progressive hearing compares with ``Hearing.give_up``: for most models the top
        probability; a model with several candidates (the open-set default) gives its likeliest."""
        return self.judged(rows)[1]

    def judged(self, rows: np.ndarray) -> tuple[np.ndarray, float]:
        """``from_windows`` and ``prospect`` of the same rows at once (progressive hearing asks
        for both after every stage); a model whose prospect is not its top probability overrides it."""
        probs = self.from_windows(rows)
        return probs, float(np.max(probs))

    def predict(self, clip: Clip) -> Prediction:
        return self.to_prediction(self.predict_batch([clip])[0])

    def to_prediction(self, probs: np.ndarray) -> Prediction:
        return Prediction.from_probs(probs, self.card, self.role)
