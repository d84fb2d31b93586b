"""Transfer heads: musicnn-msd's frozen network as a front end, a small trained genre head on top.

A card of kind ``"musicnn_head"`` names its front end (``card.extra["frontend"]``):
the musicnn artifact whose weights it reads (found through the registry, so the
3 MB of weights are not copied into the head's artifact) and the layer it taps:

``penultimate``  ``(200,)`` per patch: the back end's dense layer after batch norm
``pooled``       ``(1506,)`` per patch: max and mean over time of the mid end
``tags``         ``(50,)`` per patch: the tag sigmoids
``midend``       ``(t, 753)`` per patch: mid-end frame features, averaged over
                 runs of ``midend_pool`` frames (187 frames → ``187 // pool`` steps)

Input: any ``Clip``; every window is cut into musicnn patches exactly as
``tagger.models.pretrained`` does (``features.musicnn_window_patches``: 16 kHz,
one 187-frame patch per default 3.04 s window). A track's probabilities are
either the head applied to the mean embedding of all its patches
(``pool="embedding"``) or the mean of the head's per-patch probabilities
(``pool="probs"``); ``card.extra["head"]`` says which, and whether the head is a
scikit-learn pipeline (``.joblib``) or a Keras model (``.keras``).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from tagger.audio import Clip
from tagger.features import musicnn_window_patches
from tagger.models.base import Card, Model

#: patches per forward pass (bounds memory for long clips)
BATCH = 64
#: the layers a head may read, by the names of ``tagger.models.musicnn_arch``
TAPS = ("penultimate", "pooled", "tags", "midend")


def pool_frames(seq: np.ndarray, factor: int) -> np.ndarray:
    """Mean over consecutive runs of ``factor`` frames.

    ``seq`` ``(n, t, d)`` → ``(n, t // factor, d)``; a trailing remainder shorter
    than ``factor`` is dropped.
    """
    n, t, d = seq.shape
    steps = t // factor
    return seq[:, : steps * factor].reshape(n, steps, factor, d).mean(axis=2)


class MusicnnFrontEnd:
    """The frozen musicnn network of ``base`` (a card of kind ``"musicnn"``) with its taps exposed."""

    def __init__(self, base: Card, taps: tuple[str, ...] | list[str] = TAPS, midend_pool: int = 4,
                 bfloat16_verified: bool = False):
        import keras
        import tensorflow as tf

        from tagger.models import runtime
        from tagger.models.pretrained import MusicnnModel

        runtime.configure_tensorflow()
        unknown = set(taps) - set(TAPS)
        if unknown:
            raise ValueError(f"unknown musicnn taps {sorted(unknown)} (known: {', '.join(TAPS)})")
        self.base = base
        self.taps = tuple(taps)
        self.midend_pool = int(midend_pool)
        # built straight from the card, not through registry.load: a loader runs
        # under the registry's lock, so it must not call registry.load itself
        net = MusicnnModel(base, bfloat16_verified).network
        # the taps are layer names of tagger.models.musicnn_arch
        self.network = keras.Model(net.input, [net.get_layer(t).output for t in self.taps],
                                   name=f"{base.name}-taps")
        frames, mels = int(base.features["patch_frames"]), int(base.features["n_mels"])
        spec = tf.TensorSpec([None, frames, mels], tf.float32)
        self._forward = tf.function(lambda x: [tf.cast(o, tf.float32) for o in tf.nest.flatten(
            self.network(x, training=False))], input_signature=[spec], autograph=False)

    def patch_embeddings(self, patches: np.ndarray) -> dict[str, np.ndarray]:
        """Tap outputs of ``(n, 187, 96)`` patches: ``{tap: (n, ...)}`` float32 (see the module docstring)."""
        out: dict[str, list[np.ndarray]] = {t: [] for t in self.taps}
        for i in range(0, len(patches), BATCH):
            res = self._forward(np.asarray(patches[i : i + BATCH], dtype=np.float32))
            res = res if isinstance(res, (list, tuple)) else [res]
            for t, r in zip(self.taps, res):
                r = r.numpy()
                out[t].append(pool_frames(r, self.midend_pool) if t == "midend" else r)
        return {t: np.concatenate(v).astype(np.float32) if v else np.zeros((0,), np.float32)
                for t, v in out.items()}

    def clip_patches(self, clip: Clip) -> np.ndarray:
        """Every musicnn patch of a clip's windows, ``(n, 187, 96)``."""
        return np.concatenate([musicnn_window_patches(w, clip.sr) for w in clip.windows])


def head_probs(head: Any, head_type: str, x: np.ndarray, n_labels: int) -> np.ndarray:
    """Probabilities ``(n, n_labels)`` of a fitted head on inputs ``x`` (rows are patches or tracks).

    ``head_type`` is ``"sklearn"`` (a fitted pipeline whose integer ``classes_``
    index the labels; a class it never saw gets 0) or ``"keras"`` (softmax over
    all labels).
    """
    if head_type == "keras":
        return np.asarray(head.predict_on_batch(np.asarray(x, np.float32)), dtype=np.float64)
    raw = head.predict_proba(x)
    out = np.zeros((len(x), n_labels))
    out[:, [int(c) for c in head.classes_]] = raw
    return out


def track_probs(head: Any, head_type: str, pool: str, per_track: list[np.ndarray], n_labels: int) -> np.ndarray:
    """A head's probabilities per track from each track's patch embeddings ``(n_patches, ...)``.

    ``pool="embedding"``: the head sees each track's mean embedding;
    ``pool="probs"``: the head sees every patch and its probabilities are averaged per track.
    Returns ``(len(per_track), n_labels)``.
    """
    if pool == "embedding":
        return head_probs(head, head_type, np.stack([e.mean(axis=0) for e in per_track]), n_labels)
    if pool != "probs":
        raise ValueError(f"unknown pooling {pool!r} (embedding, probs)")
    probs = head_probs(head, head_type, np.concatenate(per_track), n_labels)
    bounds = np.cumsum([0] + [len(e) for e in per_track])
    return np.stack([probs[a:b].mean(axis=0) for a, b in zip(bounds[:-1], bounds[1:])])


class TransferModel(Model):
    """A trained genre head on musicnn embeddings, loaded from a card of kind ``"musicnn_head"``."""

    role = "deep"

    def __init__(self, card: Card):
        super().__init__(card)
        from tagger.models import registry

        front = card.extra["frontend"]
        head = card.extra["head"]
        # look beside this artifact first (a trained head in runs/ next to a copy), then the shipped ones
        base = registry.find(front["model"], [str(card.directory.parent)])
        if base.kind != "musicnn":
            raise ValueError(f"{card.name}: front end {base.name!r} is not a musicnn model")
        self.tap = front["tap"]
        # bfloat16 only where this head's card records it was checked (runtime.compute_dtype)
        self.frontend = MusicnnFrontEnd(base, (self.tap,), int(front.get("midend_pool", 4)),
                                        bfloat16_verified="bfloat16" in card.extra)
        self.head_type = head["type"]
        self.pool = head["pool"]
        if self.head_type == "sklearn":
            import joblib

            self.head = joblib.load(card.path)
        elif self.head_type == "keras":
            import keras

            import tagger.models.layers  # noqa: F401  registers the custom layers

            self.head = keras.saving.load_model(card.path, compile=False)
        else:
            raise ValueError(f"{card.name}: unknown head type {self.head_type!r}")

    def embeddings(self, clips: list[Clip]) -> list[np.ndarray]:
        """Each clip's patch embeddings at this model's tap, ``(n_patches, ...)`` per clip."""
        per_clip = [self.frontend.clip_patches(c) for c in clips]
        if not per_clip:
            return []
        emb = self.frontend.patch_embeddings(np.concatenate(per_clip))[self.tap]
        bounds = np.cumsum([0] + [len(p) for p in per_clip])
        return [emb[a:b] for a, b in zip(bounds[:-1], bounds[1:])]

    def window_probs(self, clip: Clip) -> np.ndarray | None:
        """Per-window probabilities where the track's are the mean of its patches' (``pool="probs"``)."""
        if self.pool != "probs" or not clip.windows:
            return None
        return self.predict_batch(clip.one_per_window())

    def predict_batch(self, clips: list[Clip]) -> np.ndarray:
        """Genre probabilities over ``card.labels``, shape ``(len(clips), n_labels)``, rows sum to 1."""
        if not clips:
            return np.zeros((0, len(self.card.labels)))
        p = track_probs(self.head, self.head_type, self.pool, self.embeddings(clips), len(self.card.labels))
        return p / p.sum(axis=1, keepdims=True)
