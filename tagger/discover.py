"""Walking music folders: which files are audio, and which need analysing.

The walk streams: it holds the directories still to visit and the identities
of directories and files already seen (to survive symlink loops and links to
files met before), never the list of files. Only ``stat`` is called per file;
reading the file to confirm its format is the job's first step.

Each folder's listing is also where the temporary copies of tag writes killed
midway (``.NAME.tagger-XXXXXXXX.tmp``, an hour old) are found and removed; see
:func:`tagger.tags.remove_stale_temps`.
"""
from __future__ import annotations

import os
import stat as stat_mod
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from tagger import tags
from tagger.formats import EXTENSIONS


@dataclass(frozen=True)
class Found:
    """An audio file by its extension: path as given, stat at discovery."""

    path: str
    format: str
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class Problem:
    """Something in the tree that could not be looked at, with a one-line reason."""

    path: str
    reason: str


def audio_format(name: str) -> str | None:
    return EXTENSIONS.get(os.path.splitext(name)[1].lower())


def walk(roots: Iterable[str | Path], within: Iterable[str] | None = None,
         clean: bool = True) -> Iterator[Found | Problem]:
    """Yield every audio file under ``roots`` once (and every unreadable place).

    ``clean``: remove tagger's own stale temporary copies from the folders walked (not on a
    dry run, which changes nothing).

    Symlinks are followed, but a directory or file reached twice (a loop, or a
    link to something already found) is yielded only the first time. With
    ``within`` (folders; ``tagger serve``'s library roots), a symlink whose
    target lies outside all of them is not followed: a Problem says so.
    """
    bounds = None if within is None else tuple(os.path.realpath(w) for w in within)
    seen_dirs: set[tuple[int, int]] = set()
    seen_files: set[tuple[int, int]] = set()
    for root in roots:
        root = os.path.abspath(os.fspath(root))
        try:
            st = os.stat(root)
        except OSError as exc:
            yield Problem(root, f"cannot read: {exc.strerror or exc}")
            continue
        if stat_mod.S_ISREG(st.st_mode):
            found = _file(root, st, seen_files)
            if found is not None:
                yield found
            continue
        stack = [root]
        while stack:
            directory = stack.pop()
            try:
                dst = os.stat(directory)
            except OSError as exc:
                yield Problem(directory, f"cannot read folder: {exc.strerror or exc}")
                continue
            key = (dst.st_dev, dst.st_ino)
            if key in seen_dirs:
                continue
            seen_dirs.add(key)
            try:
                entries = sorted(os.scandir(directory), key=lambda e: e.name)
            except OSError as exc:
                yield Problem(directory, f"cannot list folder: {exc.strerror or exc}")
                continue
            if clean:
                tags.remove_stale_temps(directory, entries=entries)  # left by writes killed midway
            subdirs = []
            for entry in entries:
                try:
                    est = entry.stat(follow_symlinks=True)
                except OSError as exc:
                    if entry.is_symlink():
                        yield Problem(entry.path, f"broken or looping symlink: {exc.strerror or exc}")
                    elif audio_format(entry.name):
                        yield Problem(entry.path, f"cannot read: {exc.strerror or exc}")
                    continue
                wanted = stat_mod.S_ISDIR(est.st_mode) or (stat_mod.S_ISREG(est.st_mode) and audio_format(entry.name))
                if wanted and bounds is not None and entry.is_symlink() and not _inside(entry.path, bounds):
                    yield Problem(entry.path, "symlink leads outside the library roots; not followed")
                    continue
                if stat_mod.S_ISDIR(est.st_mode):
                    subdirs.append(entry.path)
                elif stat_mod.S_ISREG(est.st_mode):
                    found = _file(entry.path, est, seen_files)
                    if found is not None:
                        yield found
            stack.extend(reversed(subdirs))  # visit in name order


def _inside(path: str, bounds: tuple[str, ...]) -> bool:
    real = os.path.realpath(path)
    return any(real == b or real.startswith(b.rstrip(os.sep) + os.sep) for b in bounds)


def _file(path: str, st: os.stat_result, seen: set[tuple[int, int]]) -> Found | None:
    fmt = audio_format(path)
    if fmt is None:
        return None
    key = (st.st_dev, st.st_ino)
    if key in seen:
        return None
    seen.add(key)
    return Found(path=path, format=fmt, size=st.st_size, mtime_ns=st.st_mtime_ns)
