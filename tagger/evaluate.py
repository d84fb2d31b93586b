"""Judge a model on labelled files: accuracy, macro-F1, per-class table, confusion matrix.

``evaluate`` runs the model exactly as tagging does (windows planned and heard
by ``tagger.models.progressive.hear``), so its figures are the ones a user gets.
Labels come from a folder-per-genre tree, a ``path,genre`` CSV, or the files'
own genre tags (``items_from_*``).
"""
from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np

from tagger import formats
from tagger.errors import TaggerError
from tagger.options import MIN_CONFIDENCE



def _norm(label: str) -> str:
    # "Hip-Hop", "hip hop" and "hiphop" name one class
    return re.sub(r"[^0-9a-z]", "", label.lower())


def scores(y_true: list[str], y_pred: list[str], labels: list[str]) -> dict:
    """Accuracy, macro precision/recall/F1, per-class table and confusion matrix.

    Rows of ``confusion`` are the true label, columns the prediction, both in
    ``labels`` order. Classes with no true example are reported (their
    precision counts wrong predictions) but left out of the macro averages, so
    a class the data never tests does not count as a zero.
    """
    index = {lab: i for i, lab in enumerate(labels)}
    cm = np.zeros((len(labels), len(labels)), dtype=int)
    for t, p in zip(y_true, y_pred):
        cm[index[t], index[p]] += 1
    tp = np.diag(cm).astype(float)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    tested = support > 0
    per_class = {
        lab: {
            "precision": round(float(precision[i]), 4),
            "recall": round(float(recall[i]), 4) if tested[i] else None,
            "f1": round(float(f1[i]), 4) if tested[i] else None,
            "support": int(support[i]),
        }
        for i, lab in enumerate(labels)
    }

    def macro(v):
        return round(float(v[tested].mean()), 4) if tested.any() else None

    n = int(cm.sum())
    return {
        "n": n,
        "accuracy": round(float(tp.sum() / n), 4) if n else None,
        "macro_precision": macro(precision),
        "macro_recall": macro(recall),
        "macro_f1": macro(f1),
        "per_class": per_class,
        "labels": list(labels),
        "confusion": cm.tolist(),
    }


def written_scores(y_true: list[str], y_pred: list[str], confidence: list[float], threshold: float,
                   bins: int = 10) -> dict:
    """What a scan at ``threshold`` would write: precision of the written tags, coverage (the
    share of files tagged), the wrong tags written, and the expected calibration error of the
    confidence (``bins`` equal-width bins; 0 is perfectly calibrated), with the diagram's bins."""
    conf = np.asarray(confidence, dtype=float)
    right = np.array([t == p for t, p in zip(y_true, y_pred)], dtype=float)
    written = conf >= threshold
    n = len(conf)
    reliability, err = [], 0.0
    edges = np.arange(bins + 1) / bins  # exact decimal edges: 0.3 falls in [0.3, 0.4)
    for k, (a, b) in enumerate(zip(edges[:-1], edges[1:])):
        m = (conf >= a) & ((conf < b) if k < bins - 1 else (conf <= b))
        if m.any():
            reliability.append({"lo": round(float(a), 2), "hi": round(float(b), 2), "n": int(m.sum()),
                                "mean_confidence": round(float(conf[m].mean()), 4),
                                "accuracy": round(float(right[m].mean()), 4)})
            err += m.sum() / n * abs(conf[m].mean() - right[m].mean())
    return {
        "threshold": threshold,
        "written": int(written.sum()),
        "written_wrong": int((written & (right == 0)).sum()),
        "written_precision": round(float(right[written].mean()), 4) if written.any() else None,
        "coverage": round(float(written.mean()), 4) if n else None,
        "ece": round(float(err), 4) if n else None,
        "reliability": reliability,
    }


def true_label(genre: str, by_norm: dict[str, str]) -> str:
    """A file's labelled genre as the model's label it names, else the taxonomy id its words
    belong to, else as written."""
    from tagger.naming import broad_genre

    exact = by_norm.get(_norm(genre))
    if exact is not None:
        return exact
    broad = broad_genre(genre)
    return by_norm.get(_norm(broad), broad) if broad else genre.strip()


def evaluate(items: list[tuple[Path, str]], model_name: str, model_dirs=(), how=None,
             threshold: float = MIN_CONFIDENCE) -> dict:
    """Run ``model_name`` on every ``(path, genre)`` and score it.

    True genres are matched to the model's labels ignoring case and punctuation, else read as
    people tag genres (``naming.broad_genre``: "Death Metal" is metal, "Deep House" electronic);
    a genre the model cannot output stays as written, or as the taxonomy's id it belongs to
    (and counts as an error).
    Files that cannot be decoded are listed under ``errors`` and not scored.
    """
    from tagger.models import registry
    from tagger.models.progressive import Hearing, hear

    how = how or Hearing()

    model = registry.load(model_name, extra=list(model_dirs))
    card_labels = list(model.card.labels)
    by_norm = {_norm(lab): lab for lab in card_labels}
    truth, pred, conf, paths, errors, heard_windows = [], [], [], [], [], []
    by_student = 0  # files the default's student left untagged without the teacher (tagger.models.student)
    for path, genre in items:
        path = Path(path)
        g = true_label(genre, by_norm)
        try:
            heard = hear(model, path, None, how)
        except (TaggerError, OSError) as exc:
            errors.append({"path": str(path), "error": str(exc)})
            continue
        k = int(np.argmax(heard.probs))
        paths.append(str(path))
        truth.append(g)
        pred.append(card_labels[k])
        conf.append(round(float(heard.probs[k]), 4))
        heard_windows.append(heard.windows)
        by_student += heard.by == "student"
    unknown = sorted(set(truth) - set(card_labels))
    result = scores(truth, pred, card_labels + unknown)
    result["at_threshold"] = written_scores(truth, pred, conf, threshold)
    result.update(
        model=model.card.name,
        version=model.card.version,
        windows=how.windows,
        first_windows=how.first,
        window_step=how.step,
        early_stop=how.stop,
        give_up=how.give_up,
        mean_windows_heard=round(float(np.mean(heard_windows)), 2) if heard_windows else None,
        student=getattr(model, "student", None) is not None,
        answered_by_student=by_student,
        unknown_labels=unknown,
        errors=errors,
        predictions=[{"path": p, "true": t, "predicted": q, "confidence": c}
                     for p, t, q, c in zip(paths, truth, pred, conf)],
    )
    return result


def render_text(result: dict) -> str:
    """A plain-text report: headline figures, per-class table, confusion matrix, errors."""
    def fmt(v):
        return "   -" if v is None else f"{v:.3f}"

    lines = [
        f"model {result['model']} v{result['version']}: {result['n']} files scored, "
        f"{len(result['errors'])} unreadable",
        f"accuracy {fmt(result['accuracy'])}   macro-F1 {fmt(result['macro_f1'])}",
    ]
    if result.get("mean_windows_heard") is not None:
        if 0 < result["first_windows"] < result["windows"]:
            how = (f"first {result['first_windows']}, then {result['window_step'] or 'the rest'} at a time, "
                   f"stop at {result['early_stop']}")
            if result.get("give_up"):
                how += f" or when no answer's chance reaches {result['give_up']}"
        else:
            how = "all at once"
        lines.append(f"windows heard per file: {result['mean_windows_heard']:.2f} of {result['windows']} planned "
                     f"({how})")
    if result.get("student"):
        lines.append(f"the student heard every file first: {result['answered_by_student']} of {result['n']} "
                     "it left untagged alone, the teacher heard the rest")
    w = result.get("at_threshold")
    if w and result["n"]:
        lines.append(f"at --min-confidence {w['threshold']}: {w['written']} of {result['n']} tagged "
                     f"(coverage {fmt(w['coverage'])}), precision of the tags written {fmt(w['written_precision'])} "
                     f"({w['written_wrong']} wrong); calibration error (ECE) {fmt(w['ece'])}")
    if result["unknown_labels"]:
        lines.append("labels the model cannot output: " + ", ".join(result["unknown_labels"]))
    width = max([len(lab) for lab in result["labels"]] + [5])
    lines += ["", f"{'class':<{width}}  precision  recall     f1  support"]
    predicted = np.array(result["confusion"]).sum(axis=0) if result["confusion"] else []
    for i, (lab, row) in enumerate(result["per_class"].items()):
        if row["support"] == 0 and not predicted[i]:
            continue  # neither tested nor predicted
        lines.append(f"{lab:<{width}}      {fmt(row['precision'])}   {fmt(row['recall'])}  "
                     f"{fmt(row['f1'])}  {row['support']:>7}")
    used = [i for i, lab in enumerate(result["labels"])
            if result["per_class"][lab]["support"] or any(r[i] for r in result["confusion"])]
    if used:
        short = [result["labels"][i][:6] for i in used]
        lines += ["", "confusion (rows: true, columns: predicted)",
                  " " * (width + 1) + " ".join(f"{s:>6}" for s in short)]
        for i in used:
            row = result["confusion"][i]
            lines.append(f"{result['labels'][i]:<{width}} " + " ".join(f"{row[j]:>6}" for j in used))
    if result["errors"]:
        lines += ["", "unreadable files:"] + [f"  {e['path']}: {e['error']}" for e in result["errors"]]
    return "\n".join(lines)


# ---------------------------------------------------------------- building the labelled list

def items_from_folder(root: str | Path) -> list[tuple[Path, str]]:
    """``<root>/<genre>/**/<audio>``: the top-level folder names the genre."""
    root = Path(root)
    out = []
    for genre_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        out += [(f, genre_dir.name) for f in sorted(genre_dir.rglob("*"))
                if f.is_file() and f.suffix.lower() in formats.READABLE_EXTENSIONS]
    return out


def items_from_csv(csv_path: str | Path, root: str | Path | None = None) -> list[tuple[Path, str]]:
    """A CSV with a ``path,genre`` header; relative paths resolve against ``root``
    (default: the CSV's folder)."""
    csv_path = Path(csv_path)
    base = Path(root) if root else csv_path.parent
    out = []
    with open(csv_path, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            p = Path(row["path"]).expanduser()
            out.append((p if p.is_absolute() else base / p, row["genre"].strip()))
    return out


def items_from_tags(root: str | Path) -> list[tuple[Path, str]]:
    """Audio files under ``root`` (a folder or one file) labelled by their own genre tag.

    Files without a readable genre tag are left out: they have no label to check against.
    """
    import mutagen

    root = Path(root)
    files = [root] if root.is_file() else sorted(
        f for f in root.rglob("*") if f.is_file() and f.suffix.lower() in formats.READABLE_EXTENSIONS)
    out = []
    for f in files:
        try:
            tags = mutagen.File(f, easy=True)
        except (mutagen.MutagenError, OSError):
            continue
        genres = (tags or {}).get("genre") if tags is not None else None
        if genres and str(genres[0]).strip():
            out.append((f, str(genres[0]).strip()))
    return out
