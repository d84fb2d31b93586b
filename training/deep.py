"""Training loop of the deep models on cached log-mel (augmented on the fly)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from training import augment as aug


def _sequence_class():
    import keras

    class PatchSequence(keras.utils.PyDataset):
        """Batches of augmented patches: ``per_track`` random crops of every track per epoch."""

        def __init__(self, logmels, y, weights, per_track, batch_size, seed, augment=True):
            super().__init__()
            self.logmels, self.y, self.w = logmels, np.asarray(y), np.asarray(weights, np.float32)
            self.per_track, self.batch_size, self.seed, self.augment = per_track, batch_size, seed, augment
            self.epoch = 0
            self._shuffle()

        def _shuffle(self):
            rng = np.random.default_rng([self.seed, self.epoch])
            self.order = rng.permutation(np.repeat(np.arange(len(self.logmels)), self.per_track))

        def __len__(self):
            return math.ceil(len(self.order) / self.batch_size)

        def __getitem__(self, i):
            idx = self.order[i * self.batch_size : (i + 1) * self.batch_size]
            rng = np.random.default_rng([self.seed, self.epoch, i])
            if self.augment:
                x = np.stack([aug.augment(self.logmels[t], rng) for t in idx])
            else:
                x = np.stack([aug.random_crop(self.logmels[t], rng) for t in idx])
            return x[..., None], self.y[idx], self.w[self.y[idx]]

        def on_epoch_end(self):
            self.epoch += 1
            self._shuffle()

    return PatchSequence


def class_weights(y: np.ndarray, n_classes: int) -> np.ndarray:
    """Balanced weights ``n / (k * count)``; classes absent from ``y`` get 0."""
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    present = counts > 0
    w = np.zeros(n_classes)
    w[present] = len(y) / (present.sum() * counts[present])
    return w


def train(
    arch: str,
    logmels: list[np.ndarray],
    patches: list[np.ndarray],
    y: np.ndarray,
    n_classes: int,
    epochs: int = 50,
    seed: int = 0,
    valid: tuple[np.ndarray, np.ndarray] | None = None,
    checkpoint: str | Path | None = None,
    per_track: int = 9,
    batch_size: int = 32,
    augment: bool = True,
    verbose: int = 2,
):
    """Train ``arch`` on tracks (their whole log-mel and their split-window patches).

    ``valid`` = (patches ``(n, 128, 128)``, labels ``(n,)``) enables the research's
    callbacks on ``val_loss``: ReduceLROnPlateau(3, 0.5), EarlyStopping(7, best
    weights restored), ModelCheckpoint(best only). Without it, training runs a
    fixed ``epochs`` and the learning rate follows the training loss.
    Returns (model, history dict).
    """
    import keras

    from training.architectures import BUILDERS

    keras.utils.set_random_seed(seed)
    model = BUILDERS[arch](n_classes, np.concatenate(patches))
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"], weighted_metrics=[])
    seq = _sequence_class()(logmels, y, class_weights(y, n_classes), per_track, batch_size, seed, augment)
    if valid is not None:
        monitor = "val_loss"
        callbacks = [
            keras.callbacks.ReduceLROnPlateau(monitor, factor=0.5, patience=3),
            keras.callbacks.EarlyStopping(monitor, patience=7, restore_best_weights=True),
        ]
        if checkpoint:
            callbacks.append(keras.callbacks.ModelCheckpoint(str(checkpoint), monitor=monitor, save_best_only=True))
        vx, vy = valid
        hist = model.fit(seq, epochs=epochs, validation_data=(vx[..., None], vy), callbacks=callbacks, verbose=verbose)
    else:
        callbacks = [keras.callbacks.ReduceLROnPlateau("loss", factor=0.5, patience=3)]
        hist = model.fit(seq, epochs=epochs, callbacks=callbacks, verbose=verbose)
    return model, {k: [float(v) for v in vals] for k, vals in hist.history.items()}


def predict_patches(model, patches: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Patch probabilities of every track and, per patch, the index of its track."""
    x = np.concatenate(patches)[..., None]
    probs = np.asarray(model.predict(x, batch_size=64, verbose=0))
    owner = np.repeat(np.arange(len(patches)), [len(p) for p in patches])
    return probs, owner


def save_for_inference(model, path: str | Path) -> None:
    """Save weights and architecture without the optimizer state (Adam's two moments
    would triple the file: 32 MB instead of 11 MB for the CNN+BiLSTM)."""
    import keras

    import tagger.models.layers  # noqa: F401  custom layers must be registered to clone

    clean = keras.models.clone_model(model)
    clean.set_weights(model.get_weights())
    clean.save(path)
