"""A fitted scikit-learn standardisation + logistic regression, evaluated in numpy.

Every fitted part of the open-set decider is one (``tagger.models.openset``:
the genre head, softmax over ten genres; each kind's calibrator, one sigmoid).
Unpickling them imports scikit-learn, about 1 s of a worker's start
(``bench/bench_coldstart.py``), and runs whatever code a pickle names; their
numbers as arrays need neither.
"""
from __future__ import annotations

import numpy as np


class Linear:
    """``predict_proba`` of a fitted ``Pipeline([StandardScaler, LogisticRegression])``, in numpy."""

    def __init__(self, mean, scale, coef, intercept, classes):
        # each in the precision it was fitted in (a head fitted on float32 rows has float32
        # coefficients): the same arithmetic as scikit-learn's, to the last bit or nearly
        self.mean, self.scale = np.asarray(mean), np.asarray(scale)
        self.coef, self.intercept = np.asarray(coef), np.asarray(intercept)
        self.classes_ = np.asarray(classes)

    @classmethod
    def from_pipeline(cls, pipe) -> "Linear":
        scaler, model = pipe.steps[0][1], pipe.steps[-1][1]
        if len(pipe.steps) != 2 or type(scaler).__name__ != "StandardScaler" \
                or type(model).__name__ != "LogisticRegression":
            raise ValueError(f"not a StandardScaler + LogisticRegression pipeline: {pipe}")
        n = model.coef_.shape[1]
        mean = scaler.mean_ if scaler.mean_ is not None else np.zeros(n)
        scale = scaler.scale_ if scaler.scale_ is not None else np.ones(n)
        return cls(mean, scale, model.coef_, model.intercept_, model.classes_)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if x.dtype not in (np.float32, np.float64):
            x = x.astype(np.float64)
        # standardised in the input's own precision, as StandardScaler does
        z = ((x - self.mean.astype(x.dtype)) / self.scale.astype(x.dtype)) @ self.coef.T + self.intercept
        if self.coef.shape[0] == 1:  # two classes: one decision function, P(classes_[1]) = sigmoid
            p = 1.0 / (1.0 + np.exp(-z[:, 0]))
            return np.stack([1.0 - p, p], axis=1)
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def arrays(self, prefix: str) -> dict[str, np.ndarray]:
        parts = {"mean": self.mean, "scale": self.scale, "coef": self.coef, "intercept": self.intercept,
                 "classes": self.classes_}
        return {f"{prefix}.{k}": v for k, v in parts.items()}

    @classmethod
    def from_arrays(cls, data, prefix: str) -> "Linear":
        return cls(*(data[f"{prefix}.{k}"] for k in ("mean", "scale", "coef", "intercept", "classes")))
