"""Labelled audio collections as lists of ``Item`` (path, genre, track_id, group).

``group`` is what must never straddle a split: GTZAN has no artist metadata,
but one artist's excerpts sit in runs of consecutive ids, so a group there is a
block of ``group_size`` ids (``blues.00000-00004``). FMA-small's official split
already separates artists; its group is the track itself. User trees and CSVs
group by track unless told otherwise.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from tagger import formats

#: files of these names are audio (tagger.formats declares them)
AUDIO_SUFFIXES = formats.READABLE_EXTENSIONS

GTZAN_GENRES = ("blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop", "reggae", "rock")
FMA_GENRES = ("Electronic", "Experimental", "Folk", "Hip-Hop", "Instrumental", "International", "Pop", "Rock")


@dataclass(frozen=True)
class Item:
    path: Path
    genre: str
    track_id: str
    group: str


def labels_of(items: list[Item]) -> list[str]:
    """Sorted distinct genres of ``items`` (the label order of a model trained on them)."""
    return sorted({it.genre for it in items})


def gtzan_group(track_id: str, group_size: int = 5) -> str:
    """``'blues.00013'`` → ``'blues.00010-00014'`` for ``group_size=5``."""
    genre, num = track_id.rsplit(".", 1)
    lo = int(num) // group_size * group_size
    return f"{genre}.{lo:05d}-{lo + group_size - 1:05d}"


def gtzan(root: str | Path, split: str | None = None, group_size: int = 5) -> list[Item]:
    """GTZAN as ``<root>/<genre>/<genre>.<NNNNN>.<ext>``.

    ``split`` None takes every file present; ``"train"``/``"valid"``/``"test"``
    take the ids listed in ``<root>/splits/<split>.txt`` whose audio is present.
    """
    root = Path(root)
    found: dict[str, Path] = {}
    for genre_dir in sorted(p for p in root.iterdir() if p.is_dir() and p.name in GTZAN_GENRES):
        for f in sorted(genre_dir.iterdir()):
            if f.suffix.lower() in AUDIO_SUFFIXES:
                found[f.name[: -len(f.suffix)]] = f
    if split is None:
        ids = sorted(found)
    else:
        listed = (root / "splits" / f"{split}.txt").read_text().split()
        ids = [i for i in listed if i in found]
    return [Item(found[i], i.split(".")[0], i, gtzan_group(i, group_size)) for i in ids]


def fma(root: str | Path, split: str | None = None, csv_name: str = "labels.csv") -> list[Item]:
    """FMA-small as ``<root>/<Genre>/<track_id>.mp3`` listed in ``<root>/<csv_name>``.

    The CSV has ``track_id,genre,split`` (split ``training``/``validation``/``test``);
    ``split`` filters on it (``"train"`` and ``"valid"`` are accepted as short names).
    Rows whose audio is absent are skipped.
    """
    root = Path(root)
    want = {"train": "training", "valid": "validation"}.get(split or "", split)
    items = []
    with open(root / csv_name, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if want and row["split"] != want:
                continue
            tid = row["track_id"].zfill(6)
            path = root / row["genre"] / f"{tid}.mp3"
            if path.is_file():
                items.append(Item(path, row["genre"], tid, tid))
    return items


def folder_tree(root: str | Path) -> list[Item]:
    """Any ``<root>/<genre>/**/<audio file>`` tree: the top folder names the genre."""
    root = Path(root)
    items = []
    for genre_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for f in sorted(genre_dir.rglob("*")):
            if f.is_file() and f.suffix.lower() in AUDIO_SUFFIXES:
                tid = str(f.relative_to(root))
                items.append(Item(f, genre_dir.name, tid, tid))
    return items


def csv_list(csv_path: str | Path) -> list[Item]:
    """A CSV with a ``path,genre`` header (optional ``group`` column); relative paths are
    taken from the CSV's folder."""
    csv_path = Path(csv_path)
    items = []
    with open(csv_path, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            p = Path(row["path"]).expanduser()
            if not p.is_absolute():
                p = csv_path.parent / p
            group = row.get("group") or str(p)
            items.append(Item(p, row["genre"].strip(), str(p), group))
    return items


def load(dataset: str, root: str | Path | None = None, split: str | None = None, group_size: int = 5) -> list[Item]:
    """Dispatch on a dataset name: ``gtzan``, ``fma``, ``folder`` or ``csv``."""
    defaults = {"gtzan": "../shared/datasets/gtzan", "fma": "../shared/datasets/fma_small"}
    if dataset in defaults:
        root = Path(root or Path(__file__).resolve().parent.parent / defaults[dataset]).resolve()
    if dataset == "gtzan":
        return gtzan(root, split, group_size)
    if dataset == "fma":
        return fma(root, split)
    if root is None:
        raise ValueError(f"dataset {dataset!r} needs a path")
    if dataset == "folder":
        return folder_tree(root)
    if dataset == "csv":
        return csv_list(root)
    raise ValueError(f"unknown dataset {dataset!r} (gtzan, fma, folder, csv)")
