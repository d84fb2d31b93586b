"""Scores and plots: accuracy, per-class and macro precision/recall/F1, confusion matrix."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def scores(y_true: list[str], y_pred: list[str], labels: list[str]) -> dict:
    """See ``tagger.evaluate.scores``: one scorer for training and ``tagger evaluate``."""
    from tagger.evaluate import scores as _scores

    return _scores(list(y_true), list(y_pred), list(labels))


def track_and_patch(
    patch_probs: np.ndarray, patch_track: np.ndarray, track_ids: list[str], truth: dict[str, str], labels: list[str]
) -> dict:
    """Track-level scores (patch probabilities averaged per track) and patch-level ones.

    ``patch_probs`` ``(n_patches, n_classes)``; ``patch_track[i]`` is the index into
    ``track_ids`` of patch ``i``.
    """
    patch_pred = [labels[k] for k in patch_probs.argmax(axis=1)]
    patch_true = [truth[track_ids[t]] for t in patch_track]
    track_probs = np.stack([patch_probs[patch_track == t].mean(axis=0) for t in range(len(track_ids))])
    track_pred = [labels[k] for k in track_probs.argmax(axis=1)]
    return {
        "track": scores([truth[t] for t in track_ids], track_pred, labels),
        "patch": scores(patch_true, patch_pred, labels),
        "predictions": dict(zip(track_ids, track_pred)),
    }


def confusion_png(result: dict, path: str | Path, title: str = "") -> None:
    """Write the confusion matrix of a ``scores`` result as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.array(result["confusion"])
    labels = result["labels"]
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * len(labels), 0.8 + 0.55 * len(labels)))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(labels)):
        for j in range(len(labels)):
            if cm[i, j]:
                ax.text(j, i, str(cm[i, j]), ha="center", va="center",
                        color="white" if cm[i, j] > cm.max() / 2 else "black", fontsize=8)
    ax.set_title(title or f"accuracy {result['accuracy']}, macro-F1 {result['macro_f1']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(result: dict, out_dir: str | Path, stem: str, title: str = "") -> None:
    """``<stem>.json`` and ``<stem>.png`` (confusion matrix) in ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{stem}.json").write_text(json.dumps(result, indent=1))
    confusion_png(result, out_dir / f"{stem}.png", title)
