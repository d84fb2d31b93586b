"""The one way to find and load models: by name, from directories of cards.

A model lives in a directory holding ``card.json`` and the file it names.
Shipped models sit in ``tagger/models/artifacts/``; more directories can be
added with the ``model_dirs`` setting (trained models, for instance).
"""
from __future__ import annotations

import importlib
import json
import threading
from pathlib import Path

from tagger.errors import ModelMissing
from tagger.models.base import Card, Model

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"

#: card ``kind`` → loader class
LOADERS = {
    "keras_patches": "tagger.models.deep:DeepModel",
    "sklearn_mfcc": "tagger.models.fallback:FallbackModel",
    "musicnn": "tagger.models.pretrained:MusicnnModel",
    "musicnn_head": "tagger.models.transfer:TransferModel",
    "musicnn_openset": "tagger.models.openset:OpenSetModel",
}

#: card ``kind`` → the features (``tagger.features.PARAMS``) its loader computes for it
FEATURES_OF = {
    "keras_patches": "logmel",
    "sklearn_mfcc": "mfcc_stats",
    "musicnn": "musicnn_logc_mel",
    "musicnn_head": "musicnn_logc_mel",
    "musicnn_openset": "musicnn_logc_mel",
}

_cache: dict[tuple[str, tuple[str, ...]], Model] = {}
_lock = threading.Lock()


def search_path(extra: tuple[str, ...] | list[str] = ()) -> list[Path]:
    return [Path(p).expanduser() for p in extra] + [ARTIFACTS]


def cards(extra: tuple[str, ...] | list[str] = ()) -> list[Card]:
    """Every model card found, first directory wins on a name clash."""
    seen: dict[str, Card] = {}
    for root in search_path(extra):
        if not root.is_dir():
            continue
        for card_file in sorted(root.glob("*/card.json")):
            card = Card.read(card_file.parent)
            seen.setdefault(card.name, card)
    return list(seen.values())


def find(name: str, extra: tuple[str, ...] | list[str] = ()) -> Card:
    for card in cards(extra):
        if card.name == name:
            return card
    known = ", ".join(sorted(c.name for c in cards(extra))) or "none installed"
    raise ModelMissing(f"no model named {name!r} (available: {known})")


def load(name: str, extra: tuple[str, ...] | list[str] = ()) -> Model:
    """Load a model once per process; later calls return the same object."""
    key = (name, tuple(extra))
    with _lock:
        if key not in _cache:
            card = find(name, extra)
            if card.kind not in LOADERS:
                raise ModelMissing(f"model {name!r} has an unknown kind {card.kind!r}")
            if not card.path.is_file():
                raise ModelMissing(f"model {name!r}: its file {card.path} is missing")
            check_features(card)
            module, cls = LOADERS[card.kind].split(":")
            _cache[key] = getattr(importlib.import_module(module), cls)(card)
        return _cache[key]


def check_features(card: Card) -> None:
    """Refuse a model whose card says it was trained on other features than tagger computes for
    its kind: its answers would look like answers and mean nothing. Raises ModelMissing."""
    from tagger import features

    differ = features.mismatch(card.features, FEATURES_OF[card.kind])
    if differ:
        raise ModelMissing(f"model {card.name!r} was trained on other features than tagger computes "
                           f"({'; '.join(differ[:3])}{'; …' if len(differ) > 3 else ''}): retrain it "
                           "with this version's training/ or use a tagger that matches it")


def default_chain(extra: tuple[str, ...] | list[str] = ()) -> list[str]:
    """The model names tried in order when the user names none.

    ``artifacts/default.json`` lists them (``{"chain": [primary, fallback]}``);
    names whose model is not installed are left out.
    """
    installed = {c.name for c in cards(extra)}
    spec = ARTIFACTS / "default.json"
    chain = json.loads(spec.read_text())["chain"] if spec.is_file() else []
    chain = [n for n in chain if n in installed]
    return chain or sorted(installed)
