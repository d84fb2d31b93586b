"""Music labelled by its own artists: the genre tags composers put in their files, as a check of
the open-set default on recordings no data set here holds (issue "Right or silent").

``python -m training.tagged DIR [DIR ...] --out FOLDER``

walks the folders (unpacked Debian packages of game music, say), reads each audio file's own
genre tag, and keeps the files whose tag names a genre of the taxonomy by its words
(``tagger.naming.broad_genre``, which ``tagger evaluate`` also reads users' tags with)
("Romantic Classical" and "Orchestral" are classical, "Death Metal" metal, "dnb" and "House"
electronic; "Game", "Soundtrack", "Other" and "Psychedelic" name none, and such files are left
out). It writes ``FOLDER/labels.csv`` (``path,genre,group,tag``: the group is the package and the
file's artist tag, ``wesnoth-1.16-music/Doug Kaufman``, or the package alone where the file names
no artist; no fold holds one group on both sides) and links each file
into ``FOLDER``. A Frets on Fire song ships as stems (``song.ogg`` without the guitar,
``guitar.ogg``); the two are mixed into one file (ffmpeg's ``amix``), the record as released.

``python -m training.openset_embed FOLDER/labels.csv --name tagged`` then embeds them as a scan
hears them, and ``python -m training.openset cv`` measures the default on them.
"""
from __future__ import annotations

import argparse
import csv
import subprocess
import sys
from pathlib import Path

from tagger import formats
from tagger.naming import broad_genre

#: shorter than this is a jingle, not a piece
MIN_SECONDS = 20.0


def genre_of(tag: str) -> str | None:
    """The taxonomy genre an artist's tag names (``tagger.naming.broad_genre``), or None."""
    return broad_genre(tag)


def file_tag(path: Path) -> tuple[str | None, str, float]:
    """A file's own genre tag (the first value), its artist ("" when untagged) and its length in seconds."""
    import mutagen

    try:
        f = mutagen.File(path, easy=True)
    except (mutagen.MutagenError, OSError):
        return None, "", 0.0
    if f is None:
        return None, "", 0.0
    tags = f.tags if f.tags is not None else {}
    genre, artist = tags.get("genre"), tags.get("artist")
    return ((str(genre[0]).strip() if genre else None), (str(artist[0]).strip() if artist else ""),
            float(getattr(f.info, "length", 0.0) or 0.0))


def collect(roots: list[Path], out: Path, log=print) -> list[dict]:
    """Link (or mix, for stems) every artist-tagged file under ``roots`` into ``out``; its rows."""
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for root in roots:
        files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in formats.READABLE_EXTENSIONS)
        for p in files:
            if p.name == "guitar.ogg":
                continue  # joined with its song.ogg
            tag, artist, seconds = file_tag(p)
            genre = genre_of(tag) if tag else None
            if genre is None or seconds < MIN_SECONDS:
                continue
            group = f"{root.name}/{artist}" if artist else root.name
            name = f"{root.name}__{'_'.join(p.relative_to(root).parts[-3:])}".replace(" ", "_")
            dest = out / name
            guitar = p.with_name("guitar.ogg")
            if p.name == "song.ogg" and guitar.is_file():
                if not dest.exists():
                    # the song's own tags go with the mix (tagger evaluate --from-tags reads them)
                    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(p), "-i", str(guitar),
                                    "-filter_complex", "amix=inputs=2:normalize=0", "-map_metadata", "0:s:0",
                                    "-c:a", "libvorbis", "-q:a", "6", str(dest)], check=True)
            elif not dest.exists():
                dest.symlink_to(p.resolve())
            rows.append({"path": name, "genre": genre, "group": group, "tag": tag})
    with open(out / "labels.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=["path", "genre", "group", "tag"])
        w.writeheader()
        w.writerows(rows)
    per: dict[str, int] = {}
    for r in rows:
        per[r["genre"]] = per.get(r["genre"], 0) + 1
    log(f"{out / 'labels.csv'}: {len(rows)} files, " + ", ".join(f"{g} {n}" for g, n in sorted(per.items())))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.tagged", description=__doc__.split("\n")[0])
    ap.add_argument("roots", nargs="+", type=Path, help="folders to walk (one per package: its name is the group)")
    ap.add_argument("--out", type=Path, required=True, help="folder for the links and labels.csv")
    args = ap.parse_args(argv)
    collect(args.roots, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
