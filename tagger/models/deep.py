"""Deep models on 128×128 log-mel patches (the CNN and CNN+BiLSTM+SE+attention).

The Keras model takes raw log-mel patches ``(batch, 128, 128, 1)`` in dB and
normalises inside itself; a track's probabilities are the mean over its patches.
"""
from __future__ import annotations

import numpy as np

from tagger import features
from tagger.audio import Clip
from tagger.models.base import Card, Model


class DeepModel(Model):
    role = "deep"

    def __init__(self, card: Card):
        super().__init__(card)
        from tagger.models import runtime

        runtime.configure_tensorflow()
        import keras

        import tagger.models.layers  # noqa: F401  registers the custom layers

        self.model = keras.saving.load_model(card.path, compile=False)

    def patches(self, clip: Clip) -> np.ndarray:
        return np.concatenate([features.mel_patches(w, clip.sr) for w in clip.windows])

    def predict_batch(self, clips: list[Clip]) -> np.ndarray:
        per_clip = [self.patches(c) for c in clips]
        x = np.concatenate(per_clip)[..., None]
        probs = np.asarray(self.model.predict_on_batch(x))
        bounds = np.cumsum([0] + [len(p) for p in per_clip])
        return np.stack([probs[a:b].mean(axis=0) for a, b in zip(bounds[:-1], bounds[1:])])
