"""Run the ORIGINAL musicnn graph (the wheel's own ``models.py``) on given patches.

A script run in a subprocess by ``verify``, because the original code builds
its graph with ``tf.compat.v1.layers``, which TensorFlow 2.16+ only provides
through the separate ``tf_keras`` package (with ``TF_USE_LEGACY_KERAS=1``),
and that switch must not leak into the process that runs Keras 3.

    python -m training.musicnn.reference PACKAGE_PARENT CHECKPOINT IN.npz OUT.npz

``PACKAGE_PARENT`` is the folder holding the extracted ``musicnn/`` package;
``IN.npz`` holds ``patches`` (n, 187, 96); ``OUT.npz`` gets ``tags`` (n, 50)
(sigmoid of the logits, as the original extractor reports) and ``penultimate``.
"""
from __future__ import annotations

import sys


def main(parent: str, checkpoint: str, src: str, dst: str) -> None:
    import numpy as np
    import tensorflow as tf

    sys.path.insert(0, parent)
    from musicnn import models  # the original code, unmodified

    patches = np.load(src)["patches"].astype(np.float32)
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, patches.shape[1], patches.shape[2]])
        is_training = tf.compat.v1.placeholder(tf.bool)
        n_tags = 50
        out = models.define_model(x, is_training, checkpoint, n_tags)
        tags = tf.nn.sigmoid(out[0])
        with tf.compat.v1.Session(graph=graph) as sess:
            tf.compat.v1.train.Saver().restore(sess, f"{parent}/musicnn/{checkpoint}/")
            got_tags, got_pen = [], []
            for i in range(0, len(patches), 16):
                t, p = sess.run([tags, out[-1]], {x: patches[i : i + 16], is_training: False})
                got_tags.append(t)
                got_pen.append(p)
    np.savez(dst, tags=np.concatenate(got_tags), penultimate=np.concatenate(got_pen))


if __name__ == "__main__":
    main(*sys.argv[1:5])
