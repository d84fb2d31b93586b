"""The safe write: verified, crash-safe replacement of a file with its tags changed.

See tagger/tags/__init__.py for the guarantees.
"""
from __future__ import annotations

import os
import re
import stat as stat_module
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from tagger.errors import FileChanged, FileMissing, TaggerError, TagWriteError, UnreadableAudio
from tagger.tags.fields import _Family, family_of, fields_of, keys_of, opener
from tagger.tags.payload import copy_file, reason, same_payload

#: marks our temporary copies: ``.<name>.tagger-<random>.tmp`` (see :func:`is_temp_name`)
TEMP_MARK = ".tagger-"
TEMP_SUFFIX = ".tmp"
_TEMP_KEEP = 80  # at most this many characters of the file's name start a temporary copy's name
_TEMP_RANDOM = 8  # tempfile.mkstemp's random part: 8 of a-z, 0-9 and _


@dataclass(frozen=True)
class FileStat:
    """What tells us a file changed: its size and mtime (ns)."""

    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: str | Path) -> "FileStat":
        return cls.from_stat(os.stat(path))

    @classmethod
    def from_stat(cls, st: os.stat_result) -> "FileStat":
        return cls(int(st.st_size), int(st.st_mtime_ns))


@dataclass(frozen=True)
class WriteResult:
    """Our fields before and after a write, and the file as it now is."""

    before: dict[str, list[str]]
    after: dict[str, list[str]]
    changed: bool  # False: the values were already there, the file was not touched
    stat: FileStat  # the file's stat after the write (record it for incremental scans)


class UnreadableFrames(TagWriteError):
    """The file's ID3 tag holds frames mutagen cannot read (or reads but would not write back):
    any rewrite would silently drop them, and undo could not bring them back. Permanent, and
    the file's own: a rescan skips it while it is unchanged (``scan.PERMANENT_KINDS``)."""

    kind = "unreadable_frames"


# ---------------------------------------------------------------- public API
def read(path: str | Path, fmt: str) -> dict[str, list[str]]:
    """Current values of our fields (``[]`` when absent); raises UnreadableAudio."""
    family = family_of(fmt)
    f = _load(path, fmt, UnreadableAudio)
    try:
        return fields_of(family, f)
    except (OSError, ValueError) as e:  # a container the family walks itself (a WAV's chunks)
        raise UnreadableAudio(f"cannot read the tags ({reason(e)})") from None


def write(path: str | Path, fmt: str, values: dict[str, list[str]], *,
          expect: FileStat | None = None) -> WriteResult:
    """Set our fields to ``values`` (field -> list of strings; ``[]`` removes the field).

    Fields not in ``values`` keep their value, a WAV's ``info_genre`` included: what a scan
    writes is ``tags.stored(fmt, values)``, which gives it the genre. See the module docstring
    for the safety guarantees and the mtime policy.

    Raises
    ------
    FileChanged
        ``expect`` is given and the file's size or mtime differs, or the
        file changed while we were writing the copy. Nothing is written.
    FileMissing
        The file does not exist (any more).
    TagWriteError
        Anything else: read-only file or directory, a value the format
        cannot store, mutagen failing, verification failing, disk full.
        The original file is untouched.
    """
    family = family_of(fmt)
    _check_values(family, values)
    real = Path(os.path.realpath(path))
    try:
        st = os.stat(real)
    except FileNotFoundError:
        raise FileMissing("the file no longer exists") from None
    except OSError as e:
        raise TagWriteError(f"cannot stat the file ({e.strerror or e})") from None
    if expect is not None and FileStat.from_stat(st) != expect:
        raise FileChanged("the file changed on disk since it was analysed; not written")
    if not stat_module.S_ISREG(st.st_mode):
        raise TagWriteError("not a regular file")
    if st.st_nlink > 1:
        raise TagWriteError(f"the file has {st.st_nlink} hard links; replacing it would split them")
    if not _writable(real, st):
        raise TagWriteError("the file is read-only")
    folder = real.parent
    try:
        folder_st = os.stat(folder)
    except OSError as e:
        raise TagWriteError(f"cannot stat the folder ({e.strerror or e})") from None
    if not _writable(folder, folder_st, directory=True):
        raise TagWriteError(f"the folder {folder} is read-only (a safe write needs a temporary file there)")

    original = _load(real, fmt, TagWriteError)
    try:
        before = fields_of(family, original)
    except (OSError, ValueError) as e:
        raise TagWriteError(f"cannot read the tags ({reason(e)})") from None
    target = {k: list(values.get(k, before[k])) for k in before}
    if target == before:
        return WriteResult(before, before, False, FileStat.from_stat(st))
    try:
        lost = family.would_lose(real, fmt)
    except FileNotFoundError:
        raise FileMissing("the file no longer exists") from None
    except Exception as e:  # a tag too odd to walk is not one to rewrite either
        raise TagWriteError(f"cannot check the file's tags before writing, file left as it was ({reason(e)})") from e
    if lost:
        raise UnreadableFrames(f"the file has {lost}; not rewritten, as a rewrite would drop them")
    others = family.others(original)

    fd, tmp_name = _make_temp(real)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, open(real, "rb") as src:
            copy_file(src, out, st.st_size)
        copy = _load(tmp, fmt, TagWriteError)
        # untouched fields stay exactly as they are stored
        family.change(copy, {k: v for k, v in target.items() if v != before[k]})
        try:
            _verify(tmp, fmt, family, target, others, real)
        except TagWriteError:
            # the copy is checked against the original as it is now: one changed meanwhile is said so
            if FileStat.of(real) != FileStat.from_stat(st):
                raise FileChanged("the file changed on disk while its tags were being written; not written") from None
            raise
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        _match_metadata(tmp, st)
        if FileStat.of(real) != FileStat.from_stat(st):
            raise FileChanged("the file changed on disk while its tags were being written; not written")
        os.replace(tmp, real)
    except TaggerError:
        _discard(tmp)
        raise
    except Exception as e:  # mutagen, OS and parsing errors all mean: not written
        _discard(tmp)
        raise TagWriteError(f"writing tags failed, file left as it was ({reason(e)})") from e
    _fsync_dir(folder)
    return WriteResult(before, target, True, FileStat.of(real))


#: exactly the names :func:`_make_temp` gives: a dot, the start of the file's name, the mark,
#: mkstemp's 8 random characters, ".tmp"
_TEMP_NAME = re.compile(rf"\..*{re.escape(TEMP_MARK)}[a-z0-9_]{{{_TEMP_RANDOM}}}{re.escape(TEMP_SUFFIX)}", re.DOTALL)

#: a temporary copy untouched this long (by mtime) is a write that died (kill -9, power cut):
#: no live write takes an hour, so another worker's copy in progress is never removed
STALE_TEMP_AGE_S = 3600.0


def is_temp_name(name: str) -> bool:
    """Whether ``name`` (a file's name, no folder) is one of tagger's temporary copies."""
    return _TEMP_NAME.fullmatch(name) is not None


def remove_stale_temps(folder: str | Path, older_than_s: float = STALE_TEMP_AGE_S,
                       entries: Iterable[os.DirEntry] | None = None) -> list[str]:
    """Delete the temporary copies that writes killed midway left in ``folder``; return their paths.

    Only regular files (not links, not folders) named exactly as :func:`is_temp_name` says and
    not modified for ``older_than_s`` seconds are removed; anything else is never touched.
    ``entries``: the folder's listing when the caller has read it already (a scan's walk), so
    the folder is not listed twice. A copy that cannot be removed (a read-only folder) stays.
    """
    if entries is None:
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError:
            return []
    cutoff = time.time() - older_than_s
    removed = []
    for entry in entries:
        if TEMP_MARK not in entry.name or not is_temp_name(entry.name):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
            if stat_module.S_ISREG(st.st_mode) and st.st_mtime < cutoff:
                os.unlink(entry.path)
                removed.append(entry.path)
        except OSError:
            continue  # gone already (another scan), or not ours to remove
    return removed


def _check_values(family: "_Family", values: dict[str, list[str]]) -> None:
    known = dict(keys_of(family))
    for field, vals in values.items():
        if field not in known:
            raise ValueError(f"unknown field {field!r}; expected one of {tuple(known)}")
        if isinstance(vals, str) or not all(isinstance(v, str) for v in vals):
            raise TypeError(f"values of {field!r} must be a list of str, got {vals!r}")
        key = known[field]
        for v in vals:
            problem = family.cannot_store(key, v)
            if problem:
                raise TagWriteError(f"cannot store {field} value {v!r}: {problem}")


def _load(path: str | Path, fmt: str, error: type[TaggerError]) -> Any:
    try:
        return opener(fmt)(str(path))
    except FileNotFoundError:
        raise FileMissing("the file no longer exists") from None
    except Exception as e:
        raise error(f"cannot read the tags ({reason(e)})") from None


def _verify(tmp: Path, fmt: str, family: "_Family", target: dict[str, list[str]],
            others: list[tuple[str, str]], original: Path) -> None:
    """The copy ``tmp`` holds ``target`` in our fields, the ``others`` unchanged, and the
    audio payload of ``original`` byte for byte; raises TagWriteError where it does not."""
    check = _load(tmp, fmt, TagWriteError)
    got = fields_of(family, check)
    if got != target:
        bad = [k for k in target if got.get(k) != target[k]]
        raise TagWriteError(f"verification failed: {', '.join(bad)} read back differently")
    now = family.others(check)
    if now != others:
        changed = sorted({k for k, _ in now} ^ {k for k, _ in others}
                         | {a[0] for a, b in zip(now, others) if a != b})
        raise TagWriteError(f"verification failed: other tags changed ({', '.join(changed)[:200]})")
    try:
        same = same_payload(original, tmp, fmt)
    except UnreadableAudio as e:
        raise TagWriteError(f"not written: {e.message}") from None
    if not same:
        raise TagWriteError("verification failed: the audio data changed")


def _writable(path: Path, st: os.stat_result, directory: bool = False) -> bool:
    # Root passes os.access on anything; the mode bits still say what the user meant.
    mode = os.W_OK | (os.X_OK if directory else 0)
    return os.access(path, mode) and bool(st.st_mode & 0o222)


def _make_temp(real: Path) -> tuple[int, str]:
    try:
        name_max = os.pathconf(real.parent, "PC_NAME_MAX")
    except (AttributeError, OSError, ValueError):
        name_max = 255
    # ".<kept>.tagger-XXXXXXXX.tmp": the kept start of the name is cut by its encoded bytes
    # (a name of 80 CJK characters is 240 bytes), between characters, so the whole fits
    room = min(name_max, 255) - len(f".{TEMP_MARK}{'x' * _TEMP_RANDOM}{TEMP_SUFFIX}")
    kept, used = [], 0
    for ch in real.name[:_TEMP_KEEP]:
        used += len(os.fsencode(ch))
        if used > room:
            break
        kept.append(ch)
    try:
        return tempfile.mkstemp(prefix=f".{''.join(kept)}{TEMP_MARK}", suffix=TEMP_SUFFIX, dir=real.parent)
    except OSError as e:
        raise TagWriteError(f"cannot create a temporary file next to the file ({e.strerror or e})") from None


def _match_metadata(tmp: Path, st: os.stat_result) -> None:
    os.chmod(tmp, stat_module.S_IMODE(st.st_mode))
    try:
        os.chown(tmp, st.st_uid, st.st_gid)
    except OSError:
        pass  # only root (or the owner, for the group) may; the copy is then ours


def _discard(tmp: Path) -> None:
    try:
        tmp.unlink()
    except FileNotFoundError:
        pass


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


