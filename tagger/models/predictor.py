"""Combine models: the first of a chain that can answer decides.

The usual chain is the primary model then the ML fallback: the fallback
decides when the primary is missing or fails on a file.
"""
from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Callable, TypeVar

from tagger import musiclike
from tagger.audio import Clip
from tagger.errors import ModelMissing, TaggerError
from tagger.models import registry
from tagger.models.base import Model, Prediction
from tagger.timing import stage

if TYPE_CHECKING:
    from tagger.models.progressive import Heard, Hearing

log = logging.getLogger(__name__)
T = TypeVar("T")


class Predictor:
    def __init__(self, names: list[str], model_dirs: tuple[str, ...] = ()):
        if not names:
            raise ModelMissing("no genre model is installed")
        self.names = list(names)
        self.model_dirs = tuple(model_dirs)
        self._failed_loads: dict[str, str] = {}

    @classmethod
    def from_settings(cls, model: str, model_dirs: tuple[str, ...] = ()) -> "Predictor":
        """``model`` names one model, a comma-separated chain, or nothing (the default chain)."""
        names = [n.strip() for n in model.split(",") if n.strip()] or registry.default_chain(model_dirs)
        return cls(names, model_dirs)

    def _load(self, name: str) -> Model | None:
        if name in self._failed_loads:
            return None
        try:
            return registry.load(name, self.model_dirs)
        except Exception as exc:  # a broken artifact must not stop the chain
            self._failed_loads[name] = str(exc)
            log.warning("model %s unavailable: %s", name, exc)
            return None

    def primary(self) -> Model:
        """The first model of the chain that loads (for batched prediction)."""
        for name in self.names:
            model = self._load(name)
            if model is not None:
                return model
        detail = "; ".join(f"{n}: {e}" for n, e in self._failed_loads.items())
        raise ModelMissing(f"no usable genre model ({detail or 'none installed'})")

    def hear(self, path: str, fmt: str, how: "Hearing", run=None) -> tuple[Prediction, "Heard"]:
        """Decode and predict one file, progressively where the model allows (``tagger.models.progressive``).

        ``run``: how each model of the chain is called: directly (a worker; the default) or
        through ``tagger serve``'s batcher. Either way the chain's rules are these, and a track
        that does not sound like music gets no confidence (``unless_no_music``).
        """
        from tagger.models.progressive import DIRECT, hear

        def ask(model: Model) -> tuple[Prediction, "Heard"]:
            heard = hear(model, path, fmt, how, run or DIRECT)
            return model.to_prediction(heard.probs), heard

        prediction, heard = self._first_answer(ask)
        return unless_no_music(prediction, heard.clip), heard

    def predict(self, clip: Clip) -> Prediction:
        """The chain's prediction for clip's windows, all heard at once."""
        return unless_no_music(self._first_answer(lambda model: model.predict(clip)), clip)

    def _first_answer(self, ask: Callable[[Model], T]) -> T:
        """``ask(model)`` of the first model of the chain that answers; later ones load only when needed.

        A TaggerError is about the input, not the model: the next model would fail too, so it propagates.
        """
        errors = []
        for name in self.names:
            model = self._load(name)
            if model is None:
                continue
            try:
                return ask(model)
            except TaggerError:
                raise
            except Exception as exc:
                log.warning("model %s failed, trying the next: %s", model.card.name, exc)
                errors.append(f"{model.card.name}: {type(exc).__name__}: {exc}")
        errors += [f"{n}: {e}" for n, e in self._failed_loads.items()]
        raise ModelMissing("no usable genre model (" + ("; ".join(errors) or "none installed") + ")")


def unless_no_music(prediction: Prediction, clip: Clip) -> Prediction:
    """``prediction``, or, when the windows heard do not sound like music (``tagger.musiclike``:
    a steady tone or noise, a sweep), the same with confidence 0, the chance that any genre is
    right, and the reason: no genre is written, whatever the threshold."""
    with stage("features"):
        reason = musiclike.reason(clip.windows)
    if reason is None:
        return prediction
    return replace(prediction, confidence=0.0, reason=reason)
