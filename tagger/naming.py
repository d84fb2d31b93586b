"""How a genre is spelled in a file: display names, the user's own names and list, the separator.

The taxonomy (tagger/genres.py) names genres with short lower-case ids
(``hiphop``, ``rnb``); the database and the report keep those. What is written
into a file is its display name, spelled as players' genre lists and beets'
canonical tree spell it (``Hip-Hop``, ``R&B``, ``Electronic``), unless the
user renames it (``[genres]`` in the config file). ``genres_only`` keeps a
whitelist: a track whose top genre is not on it gets no tag (it is listed with
the low-confidence files), and lesser genres off it are left out.

Several genres are written as players of each format read them: several values
of the genre field where the format lists them and players show them all
(Vorbis comments: FLAC, Ogg, Opus), one value joined with ``JOIN``
(``Rock; Metal``) where players show only the first of several (ID3 in MP3,
WAV and AIFF, v2.3 and v2.4 alike; MP4). A ``genre_separator`` the user sets
joins them with it in every format.

Pure standard library: the settings are built from it before anything heavy.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Optional

#: taxonomy id -> the name written by default
DISPLAY = {
    "ambient": "Ambient", "blues": "Blues", "classical": "Classical", "country": "Country",
    "disco": "Disco", "electronic": "Electronic", "folk": "Folk", "funk": "Funk", "hiphop": "Hip-Hop",
    "instrumental": "Instrumental", "jazz": "Jazz", "metal": "Metal", "pop": "Pop", "punk": "Punk",
    "reggae": "Reggae", "rnb": "R&B", "rock": "Rock", "world": "World",
}

#: other spellings users type for a genre (``--genre hip hop``, ``genres_only = ["RnB"]``)
_ALIASES = {"hip hop": "hiphop", "hip-hop": "hiphop", "rap": "hiphop", "r&b": "rnb", "r and b": "rnb",
            "rhythm and blues": "rnb", "electronica": "electronic", "world music": "world"}


def _key(text: str) -> str:
    return " ".join(str(text).strip().lower().split())


def genre_id(name: str, names: Iterable[tuple[str, str]] = ()) -> Optional[str]:
    """The taxonomy id a genre name stands for: an id, a display name, a common spelling, or one of
    the user's own ``names`` (id, name) pairs; case and spacing ignored. None for anything else."""
    key = _key(name)
    if key in DISPLAY:
        return key
    for gid, shown in [*names, *DISPLAY.items()]:
        if _key(shown) == key:
            return gid
    return _ALIASES.get(key)


#: a word of a genre as people tag it (a subgenre, a style) -> the taxonomy id it belongs to; the
#: more specific words first ("Punk Rock" is punk, "Blues Rock" blues, "Rap Metal" metal)
GENRE_WORDS = (
    ("metal", "metal"), ("punk", "punk"), ("grunge", "rock"),
    ("classical", "classical"), ("classique", "classical"), ("orchestral", "classical"),
    ("symphonic", "classical"), ("baroque", "classical"), ("opera", "classical"),
    ("electronic", "electronic"), ("electronica", "electronic"), ("electro", "electronic"),
    ("house", "electronic"), ("techno", "electronic"), ("trance", "electronic"), ("dnb", "electronic"),
    ("drum and bass", "electronic"), ("drum n bass", "electronic"), ("dubstep", "electronic"),
    ("chiptune", "electronic"), ("edm", "electronic"), ("idm", "electronic"), ("synthwave", "electronic"),
    ("ambient", "ambient"),
    ("hip hop", "hiphop"), ("hip-hop", "hiphop"), ("hiphop", "hiphop"), ("rap", "hiphop"),
    ("reggae", "reggae"), ("dub", "reggae"), ("ska", "reggae"),
    ("funk", "funk"), ("disco", "disco"), ("jazz", "jazz"), ("swing", "jazz"), ("bebop", "jazz"),
    ("blues", "blues"), ("country", "country"), ("bluegrass", "country"), ("folk", "folk"),
    ("r&b", "rnb"), ("rnb", "rnb"), ("soul", "rnb"), ("world", "world"),
    ("rock", "rock"), ("pop", "pop"),
)


def broad_genre(text: str) -> Optional[str]:
    """The taxonomy id a genre as people tag it belongs to, by its words: "Death Metal" and "Female
    Fronted Metal" are metal, "Romantic Classical" classical, "Deep House" electronic; None where
    no word names one ("Soundtrack", "Game", "Psychedelic"; "Trap" is not "rap")."""
    key = _key(text).replace("_", " ")
    if not key:
        return None
    exact = genre_id(key)
    if exact is not None:
        return exact
    for word, gid in GENRE_WORDS:
        if re.search(rf"(?<![a-z&]){re.escape(word)}(?![a-z&])", key):
            return gid
    return None


#: joins several genres into one value where players show only the first of several values (ID3, MP4)
#: and the user chose no separator
JOIN = "; "


@dataclass(frozen=True)
class Naming:
    """The user's choices: renamed genres, the whitelist (taxonomy ids), the separator."""

    names: tuple[tuple[str, str], ...] = ()
    only: tuple[str, ...] = ()
    separator: str = ""

    def shown(self, gid: str) -> str:
        """The name written for the taxonomy id ``gid``."""
        return dict(self.names).get(gid) or DISPLAY.get(gid, gid)

    def written(self, genres: Iterable[str], lists: bool = True) -> list[str]:
        """The genre field's values for a prediction's genres (taxonomy ids, best first); empty when
        the top genre is off the whitelist. ``lists``: the file's format keeps several genres as
        several values (``tagger.tags.lists_genres``); where it does not they are joined into one,
        with the user's separator or ``JOIN``."""
        genres = list(genres)
        if not genres or (self.only and genres[0] not in self.only):
            return []
        values = [self.shown(g) for g in genres if not self.only or g in self.only]
        separator = self.separator or ("" if lists else JOIN)
        return [separator.join(values)] if separator and len(values) > 1 else values

    def top(self, value: str) -> str:
        """The first genre of a value as written: ``Rock`` of ``Rock; Metal`` (several joined into one)."""
        if genre_id(value, self.names) is not None:
            return value  # a genre's own name, even one that holds the separator
        return value.split(self.separator or JOIN, 1)[0]


def check(names: Iterable[tuple[str, str]], only: Iterable[str]) -> tuple[tuple[tuple[str, str], ...], tuple[str, ...]]:
    """Validate the user's names (keys must be taxonomy ids) and whitelist (any spelling ``genre_id``
    reads); returns them normalised: ((id, name), ...), (id, ...). Raises ValueError with one line."""
    pairs = []
    for gid, shown in names:
        if _key(gid) not in DISPLAY:
            raise ValueError(f"[genres]: {gid!r} is not one of tagger's genres ({', '.join(DISPLAY)})")
        if not str(shown).strip():
            raise ValueError(f"[genres]: the name for {gid!r} is empty")
        pairs.append((_key(gid), str(shown).strip()))
    ids = []
    for name in only:
        gid = genre_id(name, pairs)
        if gid is None:
            raise ValueError(f"genres_only: {name!r} is not one of tagger's genres ({', '.join(DISPLAY.values())})")
        ids.append(gid)
    return tuple(pairs), tuple(dict.fromkeys(ids))
