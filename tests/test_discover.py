import os
import time
from pathlib import Path

from tagger.discover import Found, Problem, walk
from tagger.tags import writing as tag_writing


def _touch(path, data=b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_walk_finds_audio_by_extension_recursively(tmp_path):
    _touch(tmp_path / "a" / "one.MP3")
    _touch(tmp_path / "a" / "b" / "two.flac")
    _touch(tmp_path / "cover.jpg")
    _touch(tmp_path / "notes.txt")
    (tmp_path / "album.mp3").mkdir()  # a folder named like an audio file
    _touch(tmp_path / "album.mp3" / "inside.opus")
    found = [f for f in walk([tmp_path]) if isinstance(f, Found)]
    names = sorted(os.path.basename(f.path) for f in found)
    assert names == ["inside.opus", "one.MP3", "two.flac"]
    assert {f.format for f in found} == {"mp3", "flac", "opus"}


def test_symlink_loops_and_links_to_seen_files(tmp_path):
    real = _touch(tmp_path / "music" / "song.ogg")
    os.symlink(tmp_path / "music", tmp_path / "music" / "loop")  # a loop
    os.symlink(real, tmp_path / "music" / "alias.ogg")  # the same file again
    os.symlink(tmp_path / "nowhere.mp3", tmp_path / "music" / "broken.mp3")
    items = list(walk([tmp_path]))
    found = [i for i in items if isinstance(i, Found)]
    assert len(found) == 1
    problems = [i for i in items if isinstance(i, Problem)]
    assert len(problems) == 1 and "broken" in problems[0].path and "\n" not in problems[0].reason


def test_within_roots_symlinks_do_not_lead_out(tmp_path):
    root = tmp_path / "library"
    _touch(root / "a" / "song.mp3")
    outside = _touch(tmp_path / "private" / "secret.mp3")
    os.symlink(tmp_path / "private", root / "elsewhere")  # a folder outside
    os.symlink(outside, root / "secret-link.mp3")  # a file outside
    os.symlink(root / "a", root / "shortcut")  # a folder inside: followed (its file is met once)
    _touch(tmp_path / "private" / "notes.txt")
    os.symlink(tmp_path / "private" / "notes.txt", root / "notes.txt")  # not audio: not reported
    confined = list(walk([root], within=[str(root)]))
    assert [os.path.basename(i.path) for i in confined if isinstance(i, Found)] == ["song.mp3"]
    problems = sorted((os.path.basename(i.path), i.reason) for i in confined if isinstance(i, Problem))
    assert problems == [("elsewhere", "symlink leads outside the library roots; not followed"),
                        ("secret-link.mp3", "symlink leads outside the library roots; not followed")]
    # another root listed in `within` may be linked to; and without `within`, links are followed
    assert len([i for i in walk([root], within=[str(root), str(tmp_path / "private")]) if isinstance(i, Found)]) == 2
    assert sorted(os.path.basename(i.path) for i in walk([root]) if isinstance(i, Found)) == ["secret-link.mp3", "song.mp3"]


def test_odd_names_survive(tmp_path):
    odd = [b"with space.mp3", b"quote'\".mp3", b"new\nline.mp3", b"latin1-\xe9.mp3"]
    for name in odd:
        with open(os.path.join(os.fsencode(tmp_path), name), "wb") as f:
            f.write(b"x")
    found = [f for f in walk([tmp_path]) if isinstance(f, Found)]
    assert sorted(os.fsencode(os.path.basename(f.path)) for f in found) == sorted(odd)


def test_unreadable_folder_is_a_problem_not_a_crash(tmp_path):
    locked = tmp_path / "locked"
    _touch(locked / "x.mp3")
    _touch(tmp_path / "ok.mp3")
    locked.chmod(0)
    try:
        items = list(walk([tmp_path]))
    finally:
        locked.chmod(0o755)
    assert any(isinstance(i, Found) and i.path.endswith("ok.mp3") for i in items)
    if os.geteuid() != 0:  # root reads everything
        assert any(isinstance(i, Problem) and "locked" in i.path for i in items)


def test_a_file_given_as_root(tmp_path):
    f = _touch(tmp_path / "x.wav")
    assert [i.path for i in walk([f])] == [str(f)]


def test_walk_removes_only_tagger_s_stale_temporary_copies(tmp_path):
    """A write killed with -9 leaves ``.NAME.tagger-XXXXXXXX.tmp`` next to the file; the next walk of
    the folder removes it once it is an hour old, and nothing else (#22 item 6)."""
    hours_ago = time.time() - 2 * 3600
    music = tmp_path / "music"
    song = _touch(music / "song.mp3")
    deep = _touch(music / "disc 2" / ("音" * 83 + ".flac"))  # a long name: its temp name is cut
    stale = []
    for real in (song, deep):
        fd, name = tag_writing._make_temp(real)  # the very names a write makes
        os.write(fd, b"half a copy")
        os.close(fd)
        os.utime(name, (hours_ago, hours_ago))
        stale.append(Path(name))
    fd, live = tag_writing._make_temp(song)  # another worker's write in progress
    os.close(fd)
    user = ["song.mp3.tagger-abcd1234.tmp",  # no leading dot
            ".song.mp3.tagger-abcd123.tmp",  # seven characters, not eight
            ".song.mp3.tagger-ABCD1234.tmp",  # mkstemp uses lowercase letters, digits, _
            ".song.mp3.tagger-abcd1234.tmp.bak",
            ".song.mp3.tagger-abcd1234.TMP",
            ".song.mp3-tagger-abcd1234.tmp",
            ".tagger-abcd1234.tmp"]
    for name in user:
        _touch(music / name)
        os.utime(music / name, (hours_ago, hours_ago))
    folder = music / ".x.mp3.tagger-abcd1234.tmp"  # a folder of that name: not ours
    folder.mkdir()
    os.utime(folder, (hours_ago, hours_ago))
    link = music / ".y.mp3.tagger-abcd1234.tmp"  # a symlink of that name: not ours either
    os.symlink(song, link)
    os.utime(link, (hours_ago, hours_ago), follow_symlinks=False)

    found = [os.path.basename(i.path) for i in walk([tmp_path]) if isinstance(i, Found)]
    assert sorted(found) == sorted([song.name, deep.name])
    assert not any(p.exists() for p in stale)
    assert os.path.exists(live)
    assert all((music / name).exists() for name in user)
    assert folder.is_dir() and link.is_symlink() and song.exists() and deep.exists()


def test_remove_stale_temps_on_its_own(tmp_path):
    from tagger import tags

    song = _touch(tmp_path / "song.ogg")
    fd, name = tag_writing._make_temp(song)
    os.close(fd)
    assert tags.remove_stale_temps(tmp_path) == []  # fresh: kept
    old = time.time() - 3601
    os.utime(name, (old, old))
    assert tags.remove_stale_temps(tmp_path, older_than_s=7200) == []
    assert tags.remove_stale_temps(tmp_path) == [name]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["song.ogg"]


def test_a_walk_for_a_dry_run_removes_nothing(tmp_path):
    song = _touch(tmp_path / "song.flac")
    fd, name = tag_writing._make_temp(song)
    os.close(fd)
    old = time.time() - 2 * 3600
    os.utime(name, (old, old))
    assert [f.path for f in walk([tmp_path], clean=False)] == [str(song)]
    assert os.path.exists(name)  # a dry run changes nothing, not even our own leftovers
    list(walk([tmp_path]))
    assert not os.path.exists(name)
