"""Writing tagger's fields into audio files: one field table, verified, crash-safe writes.

The field table
---------------
Each logical field is declared once with its storage in every tag family
(:data:`FIELD_TABLE`, tagger/tags/fields.py); a format's record
(tagger/formats.py) says which family it uses. The families (:class:`_ID3`,
:class:`_RiffID3` for WAV, :class:`_Vorbis`, :class:`_MP4`) implement the same
small interface; nothing above them branches on the format.

What players read decides two things, per family (measured with ffprobe, FFmpeg
5.1): several genres are several values only in Vorbis comments, whose every
value FFmpeg shows; in ID3 (v2.3 and v2.4) and MP4 it shows the first of
several, so there they are one value joined with ``naming.JOIN``
(:func:`lists_genres`, used by the naming). And a WAV keeps its genre twice: in
its ``id3 `` chunk and in its RIFF INFO list (``IGNR``, tagger/tags/riff.py),
which FFmpeg shows over the ID3 chunk's. The INFO genre is a field of its own
(``info_genre``, read as the file holds it, so undo gives it back); what a scan
writes is :func:`stored`, which gives it the genre; :func:`shown_genre` is the
genre a player shows (the genre field, else the INFO genre); :func:`holds`
compares a file's fields with a recorded change, leaving out fields the record
does not name (a WAV change an older tagger recorded without ``info_genre``).

The package: fields.py (the field table and the families), writing.py (the
safe write below, ``read``, the temporary copies), payload.py (container
parsing: the audio payload fingerprint and the raw ID3 frames), riff.py (a
WAV's RIFF INFO list).

Write safety (see :func:`write`)
--------------------------------
1. ``expect``: a file whose size or mtime differs from what the analysis saw
   raises :class:`~tagger.errors.FileChanged` and is not written. Neither is
   a file whose ID3 tag holds frames mutagen cannot read (a text encoding
   byte that is not 0-3, bytes that are no frame, an id that is not one) or
   reads and would not write back (ID3v2.3 ``RVAD``/``EQUA``/``TRDA``/``TSIZ``,
   unknown ID3v2.2 frames): mutagen drops those silently, the read-back of
   step 3 cannot see it and undo could not restore them, so the stored
   frames are walked and such a file raises :class:`UnreadableFrames`
   (permanent), its bytes unchanged.
2. The tags are written into a copy in the same directory (a hidden
   ``.<name>.tagger-XXXXXXXX.tmp`` file, the name's start cut to fit 255
   bytes), never into the original.
3. The copy is verified by reading it back: our fields hold exactly the
   values meant, every other tag (frames, comments, atoms, pictures) is
   unchanged, and the audio payload is the original's, byte for byte
   (:func:`same_payload`, which reads both files at once).
4. The copy is flushed to disk, gets the original's permission bits (and
   owner and group when the process may set them), and ``os.replace``
   moves it onto the original in one atomic step, followed by an fsync of
   the directory. A process killed at any moment leaves the original as it
   was or fully written; at worst a stray ``.<name>.tagger-XXXXXXXX.tmp``
   file remains, which the next scan walking the folder removes once it is
   an hour old (:func:`remove_stale_temps`).

mtime policy: a written file's mtime is the time of the write, because its
content changed (backup and sync tools rely on that). The stat after the
write is returned in :attr:`WriteResult.stat` so the caller can record it and
a later scan sees the file as unchanged. A write that changes nothing does
not touch the file at all.

A symlink is followed: the file it points to is replaced and the link stays.
A file with several hard links is refused (replacing it would split the
links, leaving the other names with the old content). A file without write
permission bits, or in a directory that cannot be written, is refused with a
:class:`~tagger.errors.TagWriteError`, even for root: read-only is taken as
the user's intent.

Undo is ``write(path, fmt, previous)`` with the values :func:`read` returned
before: a field that was absent is given ``[]`` and so removed. One limit:
an ID3 genre frame whose text mutagen reads as no genre at all (a text that
starts with a line break) reads as ``[]``; if we write a genre, undo removes
that empty frame rather than recreating it.

Audio payload fingerprint
-------------------------
:func:`audio_fingerprint` hashes the bytes of the encoded audio, not decoded
samples: it is exact, needs no decoder, and costs one read of the file.
What counts as the payload, per format: MP3 - everything between the ID3v2
tag(s) and a trailing ID3v1 tag; FLAC - STREAMINFO and every byte after the
last metadata block; Ogg Vorbis/Opus - every packet except the comment
header, with the granule positions of the audio pages (mutagen re-pages the
headers, so page bytes and CRCs may change while packets may not; each stream's
lacing values, joined, give its packets' lengths however they are paged); MP4 - the
sample description, timing table and every sample of the sound tracks read
through the chunk offset table (so moved audio with rewritten offsets hashes
the same, and a wrong offset does not; a fragmented MP4 adds its ``mdat``
atoms whole); WAV/AIFF - the format and sample data chunks.

What each family can store
--------------------------
Vorbis comments and MP4 atoms store any list of strings, empty strings and
NUL included. ID3 cannot: mutagen drops empty text values, NUL separates
values, and it turns some genre texts into ID3v1 genre names when it reads
them ("17" -> "Rock", "CR" -> "Cover", text after a line break dropped);
such values are refused with a TagWriteError before anything is written.
A leading "(" in an ID3 genre is escaped so it reads back literally.

Not carried over to the new file: extended attributes and ACLs (only the
permission bits, owner and group are).
"""
from __future__ import annotations

from tagger.tags.fields import FIELD_TABLE, FIELDS, holds, lists_genres, shown_genre, stored
from tagger.tags.payload import audio_fingerprint, same_payload
from tagger.tags.writing import (STALE_TEMP_AGE_S, TEMP_MARK, FileStat, UnreadableFrames, WriteResult, is_temp_name,
                                 read, remove_stale_temps, write)

__all__ = ["FIELDS", "FIELD_TABLE", "FileStat", "WriteResult", "UnreadableFrames", "read", "write",
           "stored", "lists_genres", "shown_genre", "holds",
           "audio_fingerprint", "same_payload", "TEMP_MARK", "STALE_TEMP_AGE_S", "is_temp_name", "remove_stale_temps"]
