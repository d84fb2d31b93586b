"""Pretrained taggers: musicnn (Pons & Serra) with a genre head.

The network outputs 50 tag activations per 3-second patch. For a track they
are averaged over all patches of all its windows, then the genre head of
``tagger.genres`` turns them into genre probabilities over the card's
``labels`` (scores normalised to sum to 1; see ``tagger.genres`` for the rule),
and ``to_prediction`` writes several genres when several are confident.

Input: any ``Clip``; each window is resampled to 16 kHz and cut into 187-frame
patches. The default 22050 Hz window of ``tagger.audio`` (67072 samples,
3.04 s) holds exactly one patch (48128 samples at 16 kHz are needed); shorter
windows are repeat-padded to one patch, longer ones give several.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from tagger import genres
from tagger.audio import Clip
from tagger.models.base import Card, Model, Prediction
from tagger.features import musicnn_window_patches as window_patches

#: patches per forward pass (bounds memory for long clips)
BATCH = 64


class MusicnnModel(Model):
    """A musicnn tagger loaded from a card of kind ``"musicnn"``."""

    role = "pretrained"

    def __init__(self, card: Card, bfloat16_verified: bool | None = None):
        """``bfloat16_verified``: whether bfloat16 was checked for the model using this
        network (default: this card says so); see ``runtime.compute_dtype``."""
        super().__init__(card)
        from tagger.models import runtime

        runtime.configure_tensorflow()
        import tensorflow as tf

        from tagger.models.musicnn_arch import build_musicnn

        import keras

        arch = card.extra.get("architecture", {})
        self.tags: tuple[str, ...] = tuple(card.extra["tags"])
        self.patch_frames = int(card.features["patch_frames"])
        # weights stay float32; with bfloat16 the layers compute in it (≈ 1.25x faster where native)
        if bfloat16_verified is None:
            bfloat16_verified = "bfloat16" in card.extra
        self.compute_dtype = runtime.compute_dtype(bfloat16_verified)
        previous = keras.config.dtype_policy()
        keras.config.set_dtype_policy("mixed_bfloat16" if self.compute_dtype == "bfloat16" else "float32")
        try:
            self.network = build_musicnn(
                n_tags=len(self.tags),
                n_frames=self.patch_frames,
                n_mels=int(card.features["n_mels"]),
                midend_filters=int(arch.get("midend_filters", 64)),
                backend_units=int(arch.get("backend_units", 200)),
                name=card.name,
            )
        finally:
            keras.config.set_dtype_policy(previous)
        self.network.load_weights(card.path)
        head_name = card.extra.get("genre_head", {}).get("head", card.name)
        self.head: genres.GenreHead = genres.HEADS[head_name]
        if self.head.tags != self.tags or self.head.genres != card.labels:
            raise ValueError(f"{card.name}: card tags/labels do not match genre head {head_name!r}")
        # a compiled call is 2-3x faster than eager Keras on small batches
        spec = tf.TensorSpec([None, self.patch_frames, int(card.features["n_mels"])], tf.float32)
        self._forward = tf.function(lambda x: tf.cast(self.network(x, training=False), tf.float32),
                                    input_signature=[spec], autograph=False)

    def patch_activations(self, patches: np.ndarray) -> np.ndarray:
        """Tag activations of ``(n, 187, 96)`` patches, shape ``(n, n_tags)``."""
        out = [self._forward(patches[i : i + BATCH]).numpy() for i in range(0, len(patches), BATCH)]
        return np.concatenate(out) if out else np.zeros((0, len(self.tags)), dtype=np.float32)

    def tag_activations(self, clips: list[Clip]) -> np.ndarray:
        """Mean tag activation of each clip over all its patches, shape ``(len(clips), n_tags)``."""
        per_clip = [np.concatenate([window_patches(w, c.sr) for w in c.windows]) for c in clips]
        acts = self.patch_activations(np.concatenate(per_clip)) if per_clip else None
        out, i = [], 0
        for p in per_clip:
            out.append(acts[i : i + len(p)].mean(axis=0))
            i += len(p)
        return np.array(out, dtype=np.float32).reshape(len(clips), len(self.tags))

    def predict_batch(self, clips: list[Clip]) -> np.ndarray:
        """Genre probabilities over ``card.labels``, shape ``(len(clips), n_genres)``, rows sum to 1."""
        return self.head.probabilities(self.tag_activations(clips))

    def to_prediction(self, probs: np.ndarray) -> Prediction:
        base = Prediction.from_probs(probs, self.card, self.role)
        return dataclasses.replace(base, genres=genres.confident_genres(probs, self.card.labels))

    def top_tags(self, activations: np.ndarray, k: int = 5) -> list[tuple[str, float]]:
        """The ``k`` strongest tags of one activation row, best first."""
        order = np.argsort(activations)[::-1][:k]
        return [(self.tags[i], float(activations[i])) for i in order]
