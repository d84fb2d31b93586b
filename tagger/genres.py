"""The genre taxonomy, and how a tagger's tags map onto it.

``GENRES`` is the list of genre names ``tagger`` writes. Lower case, one
word, the GTZAN spellings where GTZAN has the genre (``hiphop``, not
``Hip-Hop``).

A pretrained tagger (musicnn) outputs independent tag activations (sigmoids
in [0, 1], not a distribution). Its *genre head* turns them into genres:

1. every tag that names a genre feeds that genre with a weight in (0, 1]
   (``rock`` → rock 1.0; ``hard rock`` → rock 1.0 and metal 0.6);
2. a genre's score is the largest weighted activation among its tags
   (a max, not a sum, so a genre with many synonyms — rock has seven — is not
   favoured over one with a single tag);
3. probabilities are the scores divided by their sum (``confidence`` is the
   top genre's share);
4. a track gets several genres when their scores are close to the top one:
   every genre with score ≥ ``MULTI_RELATIVE`` × the top score, at most
   ``MULTI_MAX``, best first.

Tags that do not name a genre (decades, moods, "female vocalists") are ignored.
Some genres cannot be reached from a tagger's vocabulary: MSD tags have no
classical or reggae tag (disco only through "dance"); MTT tags no jazz, blues,
hip-hop or reggae. A head's ``genres`` lists only the genres it can reach.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: every genre any model of tagger may write
GENRES = (
    "ambient", "blues", "classical", "country", "disco", "electronic", "folk", "funk",
    "hiphop", "instrumental", "jazz", "metal", "pop", "punk", "reggae", "rnb", "rock", "world",
)

#: a second genre is written when its score is at least this share of the top score
MULTI_RELATIVE = 0.6
#: at most this many genres per track
MULTI_MAX = 3

#: how the taxonomy folds onto GTZAN's ten classes (for evaluation); genres
#: left out (ambient, electronic, folk, instrumental, world) do not vote
TO_GTZAN = {
    "blues": "blues",
    "classical": "classical",
    "country": "country",
    "disco": "disco",
    "funk": "disco",
    "hiphop": "hiphop",
    "rnb": "hiphop",
    "jazz": "jazz",
    "metal": "metal",
    "pop": "pop",
    "reggae": "reggae",
    "rock": "rock",
    "punk": "rock",
}


@dataclass(frozen=True)
class GenreHead:
    """A fixed map from a tagger's tags to genres.

    ``weights`` has shape ``(len(tags), len(genres))``; entry ``[t, g]`` is the
    weight with which tag ``t`` votes for genre ``g`` (0 when it does not).
    """

    tags: tuple[str, ...]
    genres: tuple[str, ...]
    weights: np.ndarray

    @classmethod
    def from_table(cls, tags: list[str] | tuple[str, ...], table: dict[str, dict[str, float]]) -> "GenreHead":
        unknown = set(table) - set(tags)
        if unknown:
            raise ValueError(f"tags not in the tagger's vocabulary: {sorted(unknown)}")
        reached = sorted({g for votes in table.values() for g in votes})
        bad = set(reached) - set(GENRES)
        if bad:
            raise ValueError(f"genres not in the taxonomy: {sorted(bad)}")
        w = np.zeros((len(tags), len(reached)), dtype=np.float32)
        for tag, votes in table.items():
            for genre, weight in votes.items():
                w[tags.index(tag), reached.index(genre)] = weight
        return cls(tuple(tags), tuple(reached), w)

    def scores(self, activations: np.ndarray) -> np.ndarray:
        """Tag activations ``(..., n_tags)`` in [0, 1] → genre scores ``(..., n_genres)`` in [0, 1]."""
        a = np.asarray(activations, dtype=np.float32)
        return (a[..., :, None] * self.weights).max(axis=-2)

    def probabilities(self, activations: np.ndarray) -> np.ndarray:
        """Genre scores normalised to sum to 1 along the last axis (uniform if all are 0)."""
        s = self.scores(activations)
        total = s.sum(axis=-1, keepdims=True)
        uniform = np.full_like(s, 1.0 / s.shape[-1])
        return np.where(total > 0, s / np.maximum(total, 1e-12), uniform)


def confident_genres(
    probs: np.ndarray,
    labels: tuple[str, ...] | list[str],
    relative: float = MULTI_RELATIVE,
    most: int = MULTI_MAX,
) -> list[str]:
    """The genres to write, best first: the top one and those within ``relative`` of it.

    ``probs`` is one row of ``GenreHead.probabilities``; as the ratio of two
    probabilities equals the ratio of their scores, the rule reads the same on
    either.
    """
    order = np.argsort(probs)[::-1]
    top = float(probs[order[0]])
    return [labels[i] for i in order[:most] if float(probs[i]) >= relative * top]


#: the same, with "instrumental" counted as classical: GTZAN has no other
#: instrumental-only class, and MSD's vocabulary has no classical tag
TO_GTZAN_INSTRUMENTAL = {**TO_GTZAN, "instrumental": "classical"}


def fold(probs: np.ndarray, labels: tuple[str, ...] | list[str], mapping: dict[str, str] = TO_GTZAN,
         classes: tuple[str, ...] | list[str] | None = None) -> tuple[np.ndarray, tuple[str, ...]]:
    """Fold genre probabilities ``(n, n_genres)`` onto coarser ``classes`` (default: GTZAN's 10).

    A class scores the largest probability among the genres mapped to it;
    genres without a mapping are dropped. Returns ``(scores (n, n_classes), classes)``.
    """
    classes = tuple(classes or sorted(set(mapping.values())))
    probs = np.atleast_2d(probs)
    out = np.zeros((probs.shape[0], len(classes)), dtype=np.float32)
    for j, genre in enumerate(labels):
        target = mapping.get(genre)
        if target in classes:
            k = classes.index(target)
            out[:, k] = np.maximum(out[:, k], probs[:, j])
    return out, classes


MSD_TAGS = (
    "rock", "pop", "alternative", "indie", "electronic", "female vocalists", "dance", "00s",
    "alternative rock", "jazz", "beautiful", "metal", "chillout", "male vocalists", "classic rock",
    "soul", "indie rock", "Mellow", "electronica", "80s", "folk", "90s", "chill", "instrumental",
    "punk", "oldies", "blues", "hard rock", "ambient", "acoustic", "experimental", "female vocalist",
    "guitar", "Hip-Hop", "70s", "party", "country", "easy listening", "sexy", "catchy", "funk",
    "electro", "heavy metal", "Progressive rock", "60s", "rnb", "indie pop", "sad", "House", "happy",
)
MTT_TAGS = (
    "guitar", "classical", "slow", "techno", "strings", "drums", "electronic", "rock", "fast",
    "piano", "ambient", "beat", "violin", "vocal", "synth", "female", "indian", "opera", "male",
    "singing", "vocals", "no vocals", "harpsichord", "loud", "quiet", "flute", "woman", "male vocal",
    "no vocal", "pop", "soft", "sitar", "solo", "man", "classic", "choir", "voice", "new age",
    "dance", "male voice", "female vocal", "beats", "harp", "cello", "no voice", "weird", "country",
    "metal", "female voice", "choral",
)

#: MSD (last.fm) tag → genre votes
MSD_TABLE: dict[str, dict[str, float]] = {
    "rock": {"rock": 1.0},
    "alternative rock": {"rock": 1.0},
    "classic rock": {"rock": 1.0},
    "indie rock": {"rock": 1.0},
    "Progressive rock": {"rock": 1.0},
    "hard rock": {"rock": 1.0, "metal": 0.6},
    "alternative": {"rock": 0.8},
    "indie": {"rock": 0.6, "pop": 0.6},
    "pop": {"pop": 1.0},
    "indie pop": {"pop": 1.0},
    "metal": {"metal": 1.0},
    "heavy metal": {"metal": 1.0},
    "punk": {"punk": 1.0},
    "electronic": {"electronic": 1.0},
    "electronica": {"electronic": 1.0},
    "electro": {"electronic": 1.0},
    "House": {"electronic": 1.0},
    "dance": {"electronic": 0.7, "disco": 0.5},
    "jazz": {"jazz": 1.0},
    "blues": {"blues": 1.0},
    "soul": {"rnb": 1.0},
    "rnb": {"rnb": 1.0},
    "funk": {"funk": 1.0},
    "Hip-Hop": {"hiphop": 1.0},
    "folk": {"folk": 1.0},
    "country": {"country": 1.0},
    "ambient": {"ambient": 1.0},
    # MSD tags have no "classical"; on classical recordings "instrumental" is
    # the strongest tag, but it also fits instrumental rock or electronic music,
    # so it feeds its own genre (as in FMA's taxonomy), at reduced weight
    "instrumental": {"instrumental": 0.8},
}

#: MagnaTagATune tag → genre votes
MTT_TABLE: dict[str, dict[str, float]] = {
    "classical": {"classical": 1.0},
    "classic": {"classical": 0.8},
    "harpsichord": {"classical": 0.8},
    "opera": {"classical": 0.8},
    "choral": {"classical": 0.6},
    "techno": {"electronic": 1.0},
    "electronic": {"electronic": 1.0},
    "dance": {"electronic": 0.7, "disco": 0.5},
    "rock": {"rock": 1.0},
    "pop": {"pop": 1.0},
    "metal": {"metal": 1.0},
    "country": {"country": 1.0},
    "ambient": {"ambient": 1.0},
    "new age": {"ambient": 0.8},
    "indian": {"world": 1.0},
    "sitar": {"world": 1.0},
}

#: artifact name → its genre head
HEADS = {
    "musicnn-msd": GenreHead.from_table(MSD_TAGS, MSD_TABLE),
    "musicnn-mtt": GenreHead.from_table(MTT_TAGS, MTT_TABLE),
}


#: both taggers' vocabularies side by side (musicnn-msd's tags, then musicnn-mtt's), as
#: ``tagger.models.openset`` reads them: one row of 100 activations per window
OPEN_TAGS = tuple(f"msd:{t}" for t in MSD_TAGS) + tuple(f"mtt:{t}" for t in MTT_TAGS)

#: the open vocabulary: every genre MSD's tags name (as ``MSD_TABLE``, less "instrumental",
#: which is no genre), and from MTT the ones MSD lacks: classical and world (and ambient's
#: "new age"). MTT's rock, pop, techno, … are left out: on GTZAN's hip-hop clips MTT's
#: strongest genre tag is "techno", on its blues clips "country"
OPEN_TABLE: dict[str, dict[str, float]] = {
    **{f"msd:{t}": v for t, v in MSD_TABLE.items() if t != "instrumental"},
    **{f"mtt:{t}": MTT_TABLE[t] for t in ("classical", "classic", "harpsichord", "opera", "choral",
                                          "indian", "sitar", "new age")},
}

HEADS["musicnn-open"] = GenreHead.from_table(OPEN_TAGS, OPEN_TABLE)
