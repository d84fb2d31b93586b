"""musicnn (Pons & Serra) pretrained taggers: convert the published checkpoints to Keras.

``python -m training.musicnn convert --wheel musicnn-0.1.0-py3-none-any.whl --out tagger/models/artifacts``
reads the TensorFlow 1 checkpoints inside the ``musicnn`` wheel as data (no
musicnn code runs), loads them into ``tagger.models.musicnn_arch`` and writes
one artifact directory per model (weights, card.json, LICENSE, README.md).

``python -m training.musicnn verify`` runs the original graph (the wheel's own
``models.py`` through ``tf.compat.v1``; needs the ``tf_keras`` package, see
``reference.py``) beside the port on real recordings and reports the largest
difference per tag.

``python -m training.musicnn evaluate`` scores the genre head on GTZAN and
writes the figures into the card.
"""
