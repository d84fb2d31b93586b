"""Custom Keras layers of the deep models, registered so ``.keras`` files load.

Importing this module registers ``tagger>SqueezeExcite`` and
``tagger>AttentionPooling``; ``tagger.models.deep`` imports it before loading.
"""
from __future__ import annotations

import keras
from keras import layers, ops


def _last_dim(input_shape) -> int:
    # on load, build() may receive the shape as a list rather than a tuple
    return int(list(input_shape)[-1])


@keras.saving.register_keras_serializable(package="tagger")
class SqueezeExcite(layers.Layer):
    """Squeeze-and-excitation over channels of ``(batch, h, w, c)`` feature maps.

    Global average → Dense(c / ratio, relu) → Dense(c, sigmoid) → channel-wise
    rescaling of the input; output shape equals input shape.
    """

    def __init__(self, ratio: int = 8, **kwargs):
        super().__init__(**kwargs)
        self.ratio = ratio

    def build(self, input_shape):
        c = _last_dim(input_shape)
        self.squeeze = layers.Dense(max(c // self.ratio, 1), activation="relu", name="squeeze")
        self.excite = layers.Dense(c, activation="sigmoid", name="excite")
        self.squeeze.build((None, c))
        self.excite.build((None, max(c // self.ratio, 1)))
        super().build(input_shape)

    def call(self, x):
        s = ops.mean(x, axis=(1, 2))
        w = self.excite(self.squeeze(s))
        return x * w[:, None, None, :]

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "ratio": self.ratio}


@keras.saving.register_keras_serializable(package="tagger")
class AttentionPooling(layers.Layer):
    """Attention-weighted mean over time: ``(batch, t, d)`` → ``(batch, d)``.

    A score per step (``tanh(x W) v``), softmax over steps, weighted sum.
    """

    def __init__(self, units: int = 128, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape):
        d = _last_dim(input_shape)
        self.w = self.add_weight(name="w", shape=(d, self.units), initializer="glorot_uniform")
        self.b = self.add_weight(name="b", shape=(self.units,), initializer="zeros")
        self.v = self.add_weight(name="v", shape=(self.units, 1), initializer="glorot_uniform")
        super().build(input_shape)

    def call(self, x):
        scores = ops.matmul(ops.tanh(ops.matmul(x, self.w) + self.b), self.v)  # (b, t, 1)
        weights = ops.softmax(scores, axis=1)
        return ops.sum(x * weights, axis=1)

    def compute_output_shape(self, input_shape):
        input_shape = list(input_shape)
        return (input_shape[0], input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "units": self.units}
