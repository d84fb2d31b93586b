"""The two deep models, on raw log-mel patches ``(batch, 128, 128, 1)`` in dB.

Each model normalises its own input (per-mel-band mean and variance, adapted on
the training patches), because inference (``tagger.models.deep``) feeds raw
patches. Axis 1 is frequency (mel band), axis 2 is time (frame).
"""
from __future__ import annotations

import numpy as np


def _normaliser(train_patches: np.ndarray):
    from keras import layers

    x = np.asarray(train_patches, dtype=np.float32)
    mean = x.mean(axis=(0, 2))
    var = x.var(axis=(0, 2))
    # per mel band: loudness differs far more across bands than across time
    return layers.Normalization(axis=1, mean=mean, variance=var, name="normalise")


def cnn(n_classes: int, train_patches: np.ndarray, dropout: float = 0.45, shape=(128, 128, 1)):
    """The research's 5-layer CNN: four conv+pool layers and one dense layer, then softmax."""
    import keras
    from keras import layers

    inp = keras.Input(shape=shape, name="logmel")
    x = _normaliser(train_patches)(inp)
    for filters in (16, 32, 64, 128):
        x = layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = layers.MaxPooling2D(2)(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dense(128, activation="relu")(x)
    x = layers.Dropout(dropout)(x)
    out = layers.Dense(n_classes, activation="softmax", name="genre")(x)
    return keras.Model(inp, out, name="cnn")


def cnn_bilstm(
    n_classes: int,
    train_patches: np.ndarray,
    dropout: float = 0.5,
    lstm_units: int = 128,
    shape=(128, 128, 1),
):
    """CNN+BiLSTM: 4 conv blocks (32→64→128→256, batch norm, 2×2 pooling), an SE block,
    a BiLSTM over the 8 remaining time steps, attention pooling, dropout, softmax."""
    import keras
    from keras import layers

    from tagger.models.layers import AttentionPooling, SqueezeExcite

    inp = keras.Input(shape=shape, name="logmel")
    x = _normaliser(train_patches)(inp)
    for filters in (32, 64, 128, 256):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.Activation("relu")(x)
        x = layers.MaxPooling2D(2)(x)
    x = SqueezeExcite(ratio=8, name="se")(x)  # (b, 8 freq, 8 time, 256)
    x = layers.Permute((2, 1, 3))(x)  # time first
    x = layers.Reshape((shape[1] // 16, (shape[0] // 16) * 256))(x)
    x = layers.Bidirectional(layers.LSTM(lstm_units, return_sequences=True), name="bilstm")(x)
    x = AttentionPooling(128, name="attention")(x)
    x = layers.Dropout(dropout)(x)
    out = layers.Dense(n_classes, activation="softmax", name="genre")(x)
    return keras.Model(inp, out, name="cnn_bilstm")


BUILDERS = {"cnn": cnn, "cnn_bilstm": cnn_bilstm}
