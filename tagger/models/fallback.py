"""The ML fallback: a scikit-learn pipeline on MFCC statistics."""
from __future__ import annotations

import numpy as np

from tagger import features
from tagger.audio import Clip
from tagger.models.base import Card, Model


class FallbackModel(Model):
    role = "fallback"

    def __init__(self, card: Card):
        super().__init__(card)
        import joblib

        self.pipeline = joblib.load(card.path)

    def predict_batch(self, clips: list[Clip]) -> np.ndarray:
        x = np.stack([features.mfcc_stats(c.windows, c.sr) for c in clips])
        probs = self.pipeline.predict_proba(x)
        # the pipeline's class order may differ from the card's label order
        order = [list(self.pipeline.classes_).index(label) for label in self.card.labels]
        return probs[:, order]
