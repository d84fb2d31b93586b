"""Models: artifacts with a card, loaded through one registry (``registry.load``)."""
from tagger.models.base import Card, Model, Prediction  # noqa: F401
