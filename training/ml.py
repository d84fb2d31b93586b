"""The classic models on MFCC statistics, each a ``Pipeline(StandardScaler, model)``."""
from __future__ import annotations

import numpy as np

MODELS = ("logreg", "knn", "svm")


def pipeline(name: str, seed: int = 0, n_train_min: int | None = None):
    """A fresh, unfitted pipeline.

    ``n_train_min`` is the size of the smallest class in the training data; the
    SVM's probability calibration needs at least two examples of a class per
    internal fold, so it uses ``min(3, n_train_min)`` folds.
    """
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    if name == "logreg":
        # l1_ratio=0 is the L2 penalty (sklearn 1.8 deprecated penalty="l2")
        model = LogisticRegression(C=10, l1_ratio=0, solver="saga", max_iter=10000, random_state=seed)
    elif name == "knn":
        model = KNeighborsClassifier(n_neighbors=5, metric="manhattan", weights="distance")
    elif name == "svm":
        # SVC(probability=True) is deprecated in sklearn 1.9: calibrate the decision function instead
        folds = max(2, min(3, n_train_min or 3))
        model = CalibratedClassifierCV(SVC(kernel="rbf", gamma="scale", random_state=seed), cv=folds, method="sigmoid")
    else:
        raise ValueError(f"unknown ML model {name!r} ({', '.join(MODELS)})")
    return Pipeline([("scale", StandardScaler()), ("model", model)])


def fit(name: str, x: np.ndarray, y: list[str], seed: int = 0):
    """Fit ``pipeline(name)`` on ``x`` ``(n_tracks, 114)`` and string labels ``y``."""
    import warnings

    _, counts = np.unique(y, return_counts=True)
    if name == "svm" and counts.min() < 2:
        return _svm_calibrated_in_sample(x, list(y), seed)
    pipe = pipeline(name, seed, int(counts.min()))
    with warnings.catch_warnings():
        # saga on ~200 rows can stop a hair short of tol; the fit is still the model we score
        warnings.filterwarnings("ignore", message=".*max_iter.*")
        pipe.fit(x, list(y))
    return pipe


def _svm_calibrated_in_sample(x: np.ndarray, y: list[str], seed: int):
    """A class with one example cannot be calibrated out of fold: fit the SVC on
    everything and fit the sigmoid on its own training scores (optimistic
    probabilities; the ranking, hence the predicted class, is the SVC's)."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.frozen import FrozenEstimator
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    scaler = StandardScaler().fit(x)
    xs = scaler.transform(x)
    svc = SVC(kernel="rbf", gamma="scale", random_state=seed).fit(xs, y)
    cal = CalibratedClassifierCV(FrozenEstimator(svc), method="sigmoid").fit(xs, y)
    return Pipeline([("scale", scaler), ("model", cal)])


def predict_proba(pipe, x: np.ndarray, labels: list[str]) -> np.ndarray:
    """Probabilities in ``labels`` order (a class the pipeline never saw gets 0)."""
    raw = pipe.predict_proba(x)
    classes = list(pipe.classes_)
    out = np.zeros((len(x), len(labels)), dtype=np.float64)
    for j, lab in enumerate(labels):
        if lab in classes:
            out[:, j] = raw[:, classes.index(lab)]
    return out
