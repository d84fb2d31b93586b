"""Per-window musicnn outputs of whole collections, as the product hears them, cached once.

``python -m training.openset_embed gtzan``       the shared GTZAN clips
``python -m training.openset_embed DIR --name N``  every audio file under DIR (unlabelled music)
``python -m training.openset_embed F.csv --name N``  the files a ``path,genre`` CSV lists, with their
    genres (``training.tagged`` writes one of music its artists tagged)

Each track is planned and decoded exactly as a scan does (``tagger.audio.plan``
with the default 10 windows, ``audio.Reader``), each window cut into its one
musicnn patch, and both musicnn networks run in float32 on every patch:

``msd_pen``   ``(200,)``  musicnn-msd's penultimate layer (what the genre heads read)
``msd_tags``  ``(50,)``   musicnn-msd's tag sigmoids (last.fm vocabulary)
``mtt_tags``  ``(50,)``   musicnn-mtt's tag sigmoids (MagnaTagATune vocabulary)

One ``.npz`` per collection under ``cache/openset/``: the arrays of every
window stacked, ``track`` (the window's track index), ``ids``, ``genres``
(``""`` when unlabelled), ``paths`` and, from a CSV with a ``group`` column,
``groups`` (the artist: no fold holds one on both sides). ``training.openset``
reads it.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from tagger import audio, formats
from tagger.features import musicnn_window_patches
from tagger.models import registry
from tagger.models.transfer import MusicnnFrontEnd
from training import datasets

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "cache" / "openset"
VERSION = 1


def collection_path(name: str) -> Path:
    return CACHE / f"{name}-v{VERSION}.npz"


def load(name: str) -> dict[str, np.ndarray]:
    return read(collection_path(name), "python -m training.openset_embed")


def read(f: Path, made_by: str) -> dict[str, np.ndarray]:
    """A saved collection's arrays; a missing one says which command makes it."""
    if not f.is_file():
        raise SystemExit(f"{f} is missing: run {made_by} first")
    with np.load(f, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def track_windows(path: Path, n_windows: int = audio.DEFAULT_WINDOWS) -> np.ndarray:
    """The musicnn patches ``(n, 187, 96)`` of the windows a scan would hear in ``path``."""
    fmt = formats.confirm(str(path))
    info, starts = audio.plan(path, fmt, n_windows=n_windows)
    with audio.Reader(path, info) as reader:
        clip = reader.read(starts)
    return np.concatenate([musicnn_window_patches(w, clip.sr) for w in clip.windows])


def embed(items: list[tuple[str, str, Path]], log=print, precision: str = "float32") -> dict[str, np.ndarray]:
    """``items``: (track id, genre or "", path). Unreadable files are skipped and reported.
    ``precision`` "bfloat16" computes as inference does where the card allows it (the check
    of ``training.openset bf16``)."""
    from tagger.models import runtime

    runtime.set_precision(precision)
    bf16 = precision == "bfloat16"
    msd = MusicnnFrontEnd(registry.find("musicnn-msd"), ("penultimate", "tags"), bfloat16_verified=bf16)
    mtt = MusicnnFrontEnd(registry.find("musicnn-mtt"), ("tags",), bfloat16_verified=bf16)
    cols: dict[str, list] = {"msd_pen": [], "msd_tags": [], "mtt_tags": [], "track": []}
    ids, genres, paths = [], [], []
    t0 = time.time()
    for i, (tid, genre, path) in enumerate(items):
        try:
            patches = track_windows(path)
        except Exception as exc:  # noqa: BLE001 - report and go on
            log(f"skipped {path}: {exc}")
            continue
        a = msd.patch_embeddings(patches)
        b = mtt.patch_embeddings(patches)
        cols["msd_pen"].append(a["penultimate"])
        cols["msd_tags"].append(a["tags"])
        cols["mtt_tags"].append(b["tags"])
        cols["track"].append(np.full(len(patches), len(ids), np.int32))
        ids.append(tid)
        genres.append(genre)
        paths.append(str(path))
        if log and (i + 1) % 20 == 0:
            log(f"{i + 1}/{len(items)} tracks ({time.time() - t0:.0f} s)")
    out = {k: np.concatenate(v) for k, v in cols.items()}
    out.update(ids=np.array(ids), genres=np.array(genres), paths=np.array(paths))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.openset_embed", description=__doc__.split("\n")[0])
    ap.add_argument("source", help="'gtzan' (the shared copy), a folder of audio files, or a path,genre CSV")
    ap.add_argument("--name", help="collection name for a folder (default: the folder's name)")
    ap.add_argument("--root", help="GTZAN root (default: ../shared/datasets/gtzan)")
    ap.add_argument("--precision", choices=("float32", "bfloat16"), default="float32",
                    help="the networks' arithmetic (bfloat16: the collection is named NAME-bf16)")
    args = ap.parse_args(argv)
    items, name = source_items(args.source, args.name, args.root)
    if args.precision == "bfloat16":
        name += "-bf16"
    data = embed(items, precision=args.precision)
    if args.source.lower().endswith(".csv"):
        groups = csv_groups(Path(args.source))
        if groups:
            data["groups"] = np.array([groups.get(str(i), "") for i in data["ids"]])
    f = save(collection_path(name), data)
    print(f"{f}: {len(data['ids'])} tracks, {len(data['track'])} windows")
    return 0


def source_items(source: str, name: str | None = None, root: str | None = None) -> tuple[list, str]:
    """``(track id, genre or "", path)`` of 'gtzan' (the shared copy) or of a folder's audio files,
    and the collection's name."""
    if source == "gtzan":
        root = Path(root) if root else ROOT.parent / "shared" / "datasets" / "gtzan"
        return [(it.track_id, it.genre, it.path) for it in datasets.gtzan(root)], "gtzan"
    folder = Path(source)
    if folder.suffix.lower() == ".csv":
        from tagger.evaluate import items_from_csv

        return [(str(p.relative_to(folder.parent)) if p.is_relative_to(folder.parent) else str(p), g, p)
                for p, g in items_from_csv(folder)], name or folder.parent.name
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in datasets.AUDIO_SUFFIXES)
    return [(str(p.relative_to(folder)), "", p) for p in files], name or folder.name


def csv_groups(csv_path: Path) -> dict[str, str]:
    """A labels CSV's ``group`` column by track id (the path as listed), or {} where it has none."""
    import csv

    with open(csv_path, newline="", encoding="utf-8") as fh:
        return {row["path"]: row["group"] for row in csv.DictReader(fh) if row.get("group")}


def save(path: Path, data: dict[str, np.ndarray]) -> Path:
    """Write a collection whole or not at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **data)
    tmp.replace(path)
    return path


if __name__ == "__main__":
    sys.exit(main())
