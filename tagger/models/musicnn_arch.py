"""The musicnn network (Pons & Serra, ISMIR 2019 late-breaking demo) in Keras 3.

Written from the paper's description and the shapes of the published
checkpoints, so that those checkpoints load into it unchanged:

front end   batch norm over the (frames, 96 mels) input, then two kinds of
            musically motivated filters, each followed by ReLU, batch norm and
            a max over all frequencies:
            timbral  2 × 204 filters of 7 frames × 38 / 67 mel bands (time zero-padded 3 + 3)
            temporal 3 × 51 filters of 128 / 64 / 32 frames × 1 band ('same')
            → 561 features per frame
mid end     three 1-D convolutions over time (64 filters of 7 frames, zero
            padding 3 + 3, ReLU, batch norm), the 2nd and 3rd residual; the
            front end and all three outputs are concatenated → 753 per frame
back end    max and mean over time, interleaved per feature (max₀, mean₀,
            max₁, …) → 1506, batch norm, dropout, dense 200 ReLU, batch norm,
            dropout, dense n_tags, sigmoid.

Layer names are stable: the converter and the frozen-front-end heads refer to them.
"""
from __future__ import annotations

N_MELS = 96
TIMBRAL_FILTERS = 204  # int(1.6 * 128)
TEMPORAL_FILTERS = 51  # int(1.6 * 32)
TIMBRAL_HEIGHTS = (38, 67)  # int(0.4 * 96), int(0.7 * 96)
TEMPORAL_LENGTHS = (128, 64, 32)
FRONTEND_DIM = 2 * TIMBRAL_FILTERS + 3 * TEMPORAL_FILTERS  # 561
#: batch-norm epsilon of the original tf.compat.v1 layers
BN_EPSILON = 1e-3


def build_musicnn(
    n_tags: int = 50,
    n_frames: int | None = 187,
    n_mels: int = N_MELS,
    midend_filters: int = 64,
    backend_units: int = 200,
    name: str = "musicnn",
):
    """Build the network; input ``(batch, n_frames, n_mels)``, output sigmoid tags ``(batch, n_tags)``.

    ``n_frames=None`` accepts patches of any length (the model pools over time).
    Besides the tag output, the layers ``frontend``, ``midend`` (per-frame
    features, 561 and 753 wide) and ``penultimate`` (200) can be tapped.
    """
    import keras
    from keras import layers

    def bn(name: str):
        return layers.BatchNormalization(epsilon=BN_EPSILON, name=name)

    x_in = keras.Input(shape=(n_frames, n_mels), name="logc_mel")
    x = layers.Reshape((-1, n_mels, 1), name="add_channel")(x_in)
    x = bn("input_bn")(x)

    branches = []
    padded = layers.ZeroPadding2D(((3, 3), (0, 0)), name="timbral_pad")(x)
    for height in TIMBRAL_HEIGHTS:
        h = layers.Conv2D(TIMBRAL_FILTERS, (7, height), padding="valid", activation="relu",
                          name=f"timbral_{height}")(padded)
        h = bn(f"timbral_{height}_bn")(h)
        h = layers.MaxPooling2D((1, n_mels - height + 1), name=f"timbral_{height}_pool")(h)
        branches.append(layers.Reshape((-1, TIMBRAL_FILTERS), name=f"timbral_{height}_squeeze")(h))
    for length in TEMPORAL_LENGTHS:
        t = layers.Conv2D(TEMPORAL_FILTERS, (length, 1), padding="same", activation="relu",
                          name=f"temporal_{length}")(x)
        t = bn(f"temporal_{length}_bn")(t)
        t = layers.MaxPooling2D((1, n_mels), name=f"temporal_{length}_pool")(t)
        branches.append(layers.Reshape((-1, TEMPORAL_FILTERS), name=f"temporal_{length}_squeeze")(t))
    front = layers.Concatenate(axis=-1, name="frontend")(branches)

    mids = [front]
    h = front
    for i in (1, 2, 3):
        c = layers.ZeroPadding1D(3, name=f"midend_{i}_pad")(h)
        c = layers.Conv1D(midend_filters, 7, padding="valid", activation="relu", name=f"midend_{i}")(c)
        c = bn(f"midend_{i}_bn")(c)
        h = c if i == 1 else layers.Add(name=f"midend_{i}_residual")([c, h])
        mids.append(h)
    mid = layers.Concatenate(axis=-1, name="midend")(mids)

    width = FRONTEND_DIM + 3 * midend_filters
    pooled_max = layers.Reshape((width, 1), name="max_col")(layers.GlobalMaxPooling1D(name="time_max")(mid))
    pooled_mean = layers.Reshape((width, 1), name="mean_col")(layers.GlobalAveragePooling1D(name="time_mean")(mid))
    # the original flattens a (features, [max, mean]) array: max and mean alternate
    pooled = layers.Flatten(name="pooled")(layers.Concatenate(axis=-1, name="max_mean")([pooled_max, pooled_mean]))
    z = bn("pooled_bn")(pooled)
    z = layers.Dropout(0.5, name="pooled_dropout")(z)
    z = layers.Dense(backend_units, activation="relu", name="dense")(z)
    z = bn("penultimate")(z)
    z = layers.Dropout(0.5, name="dense_dropout")(z)
    logits = layers.Dense(n_tags, name="logits")(z)
    tags = layers.Activation("sigmoid", name="tags")(logits)
    return keras.Model(x_in, tags, name=name)


#: Keras layer → variable scope in the musicnn checkpoints (tf.compat.v1 auto-names)
CHECKPOINT_NAMES = {
    "input_bn": "batch_normalization",
    "timbral_38": "conv2d",
    "timbral_38_bn": "batch_normalization_1",
    "timbral_67": "conv2d_1",
    "timbral_67_bn": "batch_normalization_2",
    "temporal_128": "conv2d_2",
    "temporal_128_bn": "batch_normalization_3",
    "temporal_64": "conv2d_3",
    "temporal_64_bn": "batch_normalization_4",
    "temporal_32": "conv2d_4",
    "temporal_32_bn": "batch_normalization_5",
    "midend_1": "conv2d_5",
    "midend_1_bn": "batch_normalization_6",
    "midend_2": "conv2d_6",
    "midend_2_bn": "batch_normalization_7",
    "midend_3": "conv2d_7",
    "midend_3_bn": "batch_normalization_8",
    "pooled_bn": "batch_normalization_9",
    "dense": "dense",
    "penultimate": "batch_normalization_10",
    "logits": "dense_1",
}
