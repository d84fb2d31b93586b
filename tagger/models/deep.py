"""Deep models on 128×128 log-mel patches (the CNN and CNN+BiLSTM+SE+attention).

The Keras model takes raw log-mel patches ``(batch, 128, 128, 1)`` in dB and
normalises inside itself; a track's probabilities are the mean over its patches.

When the card lists a LiteRT export (``"runtimes": {"litert": {"file": ...}}``,
written by ``python -m training.export``) and ``ai-edge-litert`` is installed,
that file runs the model and TensorFlow is never imported: a worker starts in
a third of the time and memory. Otherwise, or if the export does not load, the
``.keras`` file runs through Keras, which stays the reference the export was
checked against.
"""
from __future__ import annotations

import logging

import numpy as np

from tagger import features
from tagger.audio import Clip
from tagger.models.base import Card, Model

log = logging.getLogger(__name__)


class DeepModel(Model):
    role = "deep"

    def __init__(self, card: Card):
        super().__init__(card)
        #: "litert" or "keras": what runs the network in this process
        self.runtime = "keras"
        self._runner = None
        self.model = None
        export = (card.extra.get("runtimes") or {}).get("litert") or {}
        if export.get("file") and self._export_is_current(export):
            self._runner = self._load_litert(card.directory / export["file"])
        if self._runner is not None:
            self.runtime = "litert"
            return
        from tagger.models import runtime

        runtime.configure_tensorflow()
        import keras

        import tagger.models.layers  # noqa: F401  registers the custom layers

        self.model = keras.saving.load_model(card.path, compile=False)

    def _export_is_current(self, export: dict) -> bool:
        """Whether the export was made from the model file now in the directory (not a retrained one)."""
        want = (export.get("source") or {}).get("sha256")
        if not want:
            return True  # an export recorded without its source's digest: trust the card
        import hashlib

        try:
            have = hashlib.sha256(self.card.path.read_bytes()).hexdigest()
        except OSError:
            return True  # only the export shipped: nothing to compare with
        if have != want:
            log.warning("%s: %s was exported from another %s; using the Keras model",
                        self.card.name, export["file"], self.card.file)
        return have == want

    def _load_litert(self, path):
        from tagger.models import litert

        f = self.card.features
        expected = (int(f.get("n_mels", features.N_MELS)), int(f.get("patch_frames", features.PATCH_FRAMES)), 1)
        return litert.load(path, self.card.name, expected, "log-mel patches")

    def patches(self, clip: Clip) -> np.ndarray:
        return np.concatenate([features.mel_patches(w, clip.sr) for w in clip.windows])

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities of patches ``(n, 128, 128, 1)``, shape ``(n, n_labels)``."""
        if self._runner is not None:
            return self._runner(x)
        return np.asarray(self.model.predict_on_batch(x))

    def window_probs(self, clip: Clip) -> np.ndarray:
        # equal windows hold equal numbers of patches: the mean of window means is the mean of patches
        return self.predict_batch(clip.one_per_window())

    def predict_batch(self, clips: list[Clip]) -> np.ndarray:
        # every patch of every clip goes through the network together, then splits back per clip
        per_clip = [self.patches(c) for c in clips]
        x = np.concatenate(per_clip)[..., None]
        probs = self.forward(x)
        bounds = np.cumsum([0] + [len(p) for p in per_clip])
        return np.stack([probs[a:b].mean(axis=0) for a, b in zip(bounds[:-1], bounds[1:])])
