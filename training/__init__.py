"""Training: datasets, cached features, the five models, evaluation and cross-validation.

``python -m training <experiment>`` runs one experiment; see ``training/README.md``.
Everything here reads audio through ``tagger.audio`` and features through
``tagger.features``, so trained models see what inference computes.
"""
