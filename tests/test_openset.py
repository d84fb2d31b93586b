"""The default chain's open set, end to end: it names genres outside GTZAN's ten, writes
nothing when it cannot name a track reliably, and its confidence is the card's calibrated one."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import audiofiles
import numpy as np
import pytest
from services import run_cli

from tagger import audio, config, tags
from tagger.models import registry
from tagger.models.openset import FEATURES, kind_of

DEFAULT = "gtzan-musicnn-openset"


@pytest.fixture(scope="module")
def model():
    return registry.load(DEFAULT)


@pytest.fixture
def default_settings(tmp_path):
    """The embedded default as a user gets it: the shipped chain and thresholds."""
    return config.load({"data_dir": tmp_path / "data", "workers": 1}, environ={},
                       config_file=tmp_path / "none.toml")


def test_the_default_chain_is_the_open_set_model_and_its_threshold_is_the_default():
    assert registry.default_chain()[0] == DEFAULT
    card = registry.find(DEFAULT)
    s = config.Settings()
    assert s.min_confidence == card.extra["threshold"]
    assert s.early_stop == card.extra["early_stop"]
    assert s.give_up == card.extra["give_up"] == card.extra["give_up_check"]["chosen"]
    assert card.extra["give_up_check"]["debian"]["tags_changed"] == 0
    m = card.metrics
    # the figures the threshold was chosen on, and its calibration
    assert m["pooled_precision"] >= 0.9
    assert m["logo_per_genre"].keys() == {"blues", "classical", "country", "disco", "hiphop", "jazz", "metal",
                                          "pop", "reggae", "rock"}
    assert 0 <= m["ece"]["all"] < 0.1
    assert {"electronic", "ambient", "folk", "punk", "rnb", "funk", "world"} <= set(card.labels)


def test_every_shipped_card_has_calibration_and_open_set_figures():
    for card in registry.cards():
        m = card.metrics
        if card.name == DEFAULT:
            assert "reliability" in m and "logo_per_genre" in m
        else:
            assert "calibration" in m and "open_set" in m, card.name
            for entry in (m["calibration"], m["open_set"]):
                # figures, or why there are none
                assert entry.get("computed", True) or entry["reason"], card.name
            if m["calibration"].get("computed", True):
                assert 0 <= m["calibration"]["ece"] <= 1 and m["calibration"]["reliability"], card.name


def test_decision_confidence_is_the_chosen_candidates_calibrated_probability(model, gtzan):
    clip = audio.load_clip(gtzan / "jazz" / "jazz.00002.mp3")
    rows = model.window_probs(clip)
    assert rows.shape == (len(clip.windows), 300)
    dec = model.decider
    cands = dec.candidates(dec.evidence(rows))
    p = {g: float(dec.calibrator[kind_of(x)].predict_proba(x[None])[0, 1]) for g, x in cands}
    probs = model.from_windows(rows)
    top = dec.labels[int(np.argmax(probs))]
    assert probs.max() == pytest.approx(p[top])
    assert probs.sum() <= 1 + 1e-9 and (probs >= 0).all()
    assert top == "jazz" and probs.max() >= dec.threshold
    assert len(cands[0][1]) == len(FEATURES)


def test_unsure_names_the_heads_candidate_first(model):
    """Below the threshold the GTZAN head's guess is recorded first, with its own probability."""
    dec = model.decider
    y = audiofiles.music_signal(30, 22050, 1, kind="hum")[:, 0]
    clip = audio.Clip(windows=[y[i:i + 67072] for i in range(0, 9 * 67072, 67072)], sr=22050,
                      info=audio.AudioInfo(len(y), 22050, 1, "synthetic"))
    rows = model.window_probs(clip)
    ev = dec.evidence(rows)
    cands = dec.candidates(ev)
    probs = dec.decide(rows)
    assert probs.max() < dec.threshold
    assert dec.labels[int(np.argmax(probs))] == cands[0][0]  # the head's
    assert cands[0][0] == dec.head_labels[int(np.argmax(ev.head_probs))]
    # its prospect is the likelier candidate's chance, whichever is named first
    chances = [float(dec.calibrator[kind_of(x)].predict_proba(x[None])[0, 1]) for _, x in cands]
    assert model.prospect(rows) == pytest.approx(max(chances)) and model.prospect(rows) >= probs.max()


def test_the_training_replay_gives_up_as_hearing_does():
    """training.openset.decisions stops a clip once its likelier candidate is below give_up, keeping
    the stage's answer, as tagger.models.progressive does with Model.prospect."""
    from training.openset import decisions

    head, tags = np.zeros(len(FEATURES)), np.zeros(len(FEATURES))
    head[FEATURES.index("is_head_top")] = 1
    eps, probs = [], []
    # one clip: hopeless after its first stage (0.03 at best), sure after its second (0.9, right)
    for stage, (ph, pt) in enumerate([(0.02, 0.03), (0.9, 0.1)]):
        for genre, x, p_ in (("jazz", head, ph), ("ambient", tags, pt)):
            eps.append({"clip": 0, "kind": "cv", "held": "0", "stage": stage, "genre": genre, "x": x,
                        "right": genre == "jazz", "true": "jazz"})
            probs.append(p_)
    never = decisions(eps, np.array(probs), 0.8, 0.95)
    assert [(d["genre"], d["p"], d["stages"]) for d in never] == [("jazz", 0.9, 2)]
    given_up = decisions(eps, np.array(probs), 0.8, 0.95, give_up=0.05)
    assert [(d["genre"], d["p"], d["stages"]) for d in given_up] == [("jazz", 0.02, 1)]  # the head's, untagged
    assert decisions(eps, np.array(probs), 0.8, 0.95, give_up=0.02)[0]["stages"] == 2  # 0.03 is not below 0.02


@pytest.mark.slow
def test_scan_writes_open_genres_and_leaves_unsure_files_untagged(default_settings, audio_factory, gtzan, tmp_path):
    lib = tmp_path / "lib"
    mine = {"title": ["Hum"], "artist": ["Nobody"]}
    hum = audio_factory("flac", name="lib/hum.flac", seconds=40, tags=mine, kind="hum")
    synth = audio_factory("mp3", name="lib/synth.mp3", seconds=40)  # synthesised notes, kick and hi-hat
    jazz = lib / "jazz.00002.mp3"
    jazz.write_bytes((gtzan / "jazz" / "jazz.00002.mp3").read_bytes())
    before_tags, before_audio = audiofiles.all_tags(hum, "flac"), audiofiles.decode(hum, "flac")

    run = run_cli(default_settings, "scan", str(lib), "--json")
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert summary["tagged"] == 2 and summary["low_confidence"] == 1, summary

    assert tags.read(synth, "mp3")["genre"] == ["Electronic"]  # a genre GTZAN's head cannot say
    assert tags.read(jazz, "mp3")["genre"] == ["Jazz"]
    for path, fmt in ((synth, "mp3"), (jazz, "mp3")):
        ours = tags.read(path, fmt)
        assert float(ours["confidence"][0]) >= default_settings.min_confidence
        assert ours["model"] == [f"{DEFAULT} {registry.find(DEFAULT).version}"]
    # nothing written into the file the chain could not name, audio and the user's tags untouched
    assert audiofiles.all_tags(hum, "flac") == before_tags
    assert not any(tags.read(hum, "flac").values())
    np.testing.assert_array_equal(audiofiles.decode(hum, "flac"), before_audio)

    report = json.loads(run_cli(default_settings, "report", "--format", "json", "--low-confidence").stdout)
    (row,) = report["low_confidence"]
    assert row["path"].endswith("hum.flac")
    assert row["confidence"] < default_settings.min_confidence
    assert len(row["top"]) >= 2 and row["top"][0][0] == row["genre"]


@pytest.mark.slow
def test_a_small_scan_runs_its_workers_in_onnx_runtime_unless_told_otherwise(default_settings, gtzan, tmp_path):
    """runtime = auto (the default): a scan known to queue few files starts its workers in ONNX
    Runtime, without TensorFlow; runtime = keras is obeyed. Both write the same genre."""
    lib = tmp_path / "lib"
    lib.mkdir()
    for name in ("jazz.00002.mp3", "jazz.00003.mp3"):
        (lib / name).write_bytes((gtzan / "jazz" / name).read_bytes())
    log = default_settings.data_dir / "worker.log"
    run = run_cli(default_settings, "scan", str(lib), "--json", "--dry-run")
    assert run.returncode == 0, run.stderr
    warmed = [line for line in log.read_text().splitlines() if "warmed up" in line]
    assert len(warmed) == default_settings.worker_count and all(f"{DEFAULT} (onnx)" in w for w in warmed), warmed
    small = {f["path"]: f["predicted"] for f in json.loads(run.stdout)["files"]}

    log.unlink()
    run = run_cli(default_settings, "scan", str(lib), "--json", "--dry-run", "--force", TAGGER_RUNTIME="keras")
    assert run.returncode == 0, run.stderr
    warmed = [line for line in log.read_text().splitlines() if "warmed up" in line]
    assert warmed and all(f"{DEFAULT} (keras)" in w for w in warmed), warmed
    assert {f["path"]: f["predicted"] for f in json.loads(run.stdout)["files"]} == small == {
        str(lib / "jazz.00002.mp3"): "jazz", str(lib / "jazz.00003.mp3"): "jazz"}


@pytest.fixture
def litert_runtime():
    from tagger.models import runtime

    runtime.set_runtime("litert")
    yield
    runtime.set_runtime("keras")


def test_with_runtime_litert_the_default_runs_its_export_and_agrees_with_keras(model, gtzan, litert_runtime):
    """The shipped export of both musicnn networks gives the rows Keras gives, and the same answer."""
    from tagger.models.openset import OpenSetModel

    assert model.runtime == "keras"  # the default runtime: TensorFlow is faster per track here
    fast = OpenSetModel(registry.find(DEFAULT))
    assert fast.runtime == "litert"
    for name in ("jazz/jazz.00002.mp3", "metal/metal.00003.mp3"):
        clip = audio.load_clip(gtzan / name)
        rows, ref = fast.window_probs(clip), model.window_probs(clip)
        assert rows.shape == ref.shape == (len(clip.windows), 300)
        # float32 in LiteRT; Keras in bfloat16 where the card allows it, else float32: bfloat16 keeps
        # 8 bits of mantissa, so an activation of 1.4 may be off by 0.05 (seen: 1.396 against 1.344)
        np.testing.assert_allclose(rows, ref, rtol=0.05, atol=0.05)
        assert np.argmax(fast.from_windows(rows)) == np.argmax(model.from_windows(ref))


def test_with_runtime_litert_later_windows_run_the_export_of_musicnn_msd_alone(gtzan, litert_runtime):
    """Past the card's mtt_windows, a LiteRT worker runs the card's musicnn-msd export
    (runtimes.litert.later): the numbers of the combined export, MTT's columns left out (NaN)."""
    from tagger.audio import Clip
    from tagger.models.openset import OpenSetModel

    fast = OpenSetModel(registry.find(DEFAULT))
    assert fast.runtime == "litert" and fast._later_runner is not None and fast.decider.mtt_windows == 3
    clip = audio.load_clip(gtzan / "metal" / "metal.00003.mp3", n_windows=5)
    rows = fast.window_probs(clip)
    later = fast.later_window_probs(Clip(windows=clip.windows[3:], sr=clip.sr, info=clip.info))
    assert later.shape == (2, 300) and np.isnan(later[:, 250:]).all()
    np.testing.assert_allclose(later[:, :250], rows[3:, :250], rtol=0, atol=1e-4)  # one subgraph, float32
    mixed = np.concatenate([rows[:3], later])
    np.testing.assert_allclose(fast.from_windows(mixed), fast.from_windows(rows), atol=1e-6)  # MTT read from 3


def test_with_runtime_onnx_the_default_runs_each_network_in_onnx_runtime(gtzan):
    """The shipped ONNX export (each network its own file) gives the LiteRT export's numbers and the
    same answer, and past mtt_windows runs musicnn-msd alone."""
    from tagger.audio import Clip
    from tagger.models import runtime
    from tagger.models.openset import OpenSetModel

    try:
        runtime.set_runtime("litert")
        lite = OpenSetModel(registry.find(DEFAULT))
        runtime.set_runtime("onnx")
        fast = OpenSetModel(registry.find(DEFAULT))
    finally:
        runtime.set_runtime("keras")
    assert (lite.runtime, fast.runtime) == ("litert", "onnx")
    for name in ("jazz/jazz.00002.mp3", "metal/metal.00003.mp3"):
        clip = audio.load_clip(gtzan / name, n_windows=5)
        rows, ref = fast.window_probs(clip), lite.window_probs(clip)
        assert rows.shape == ref.shape == (5, 300)
        np.testing.assert_allclose(rows, ref, rtol=0, atol=1e-4)  # both float32
        np.testing.assert_allclose(fast.from_windows(rows), lite.from_windows(ref), atol=1e-4)
        later = fast.later_window_probs(Clip(windows=clip.windows[3:], sr=clip.sr, info=clip.info))
        assert np.isnan(later[:, 250:]).all()
        np.testing.assert_allclose(later[:, :250], rows[3:, :250], rtol=0, atol=1e-5)


@pytest.mark.parametrize("kind", ["litert", "onnx"])
def test_an_export_of_other_weights_is_not_used(tmp_path, kind):
    """A retrained or replaced musicnn makes the recorded export stale: Keras runs instead."""
    from tagger.models import runtime
    from tagger.models.base import Card
    from tagger.models.openset import OpenSetModel

    src = registry.find(DEFAULT).directory
    dst = tmp_path / DEFAULT
    shutil.copytree(src, dst)
    doc = json.loads((dst / "card.json").read_text())
    for export in ("litert", "onnx"):
        doc["runtimes"][export]["sources"]["musicnn-msd"]["sha256"] = "0" * 64
    (dst / "card.json").write_text(json.dumps(doc))
    try:
        runtime.set_runtime(kind)
        stale = OpenSetModel(Card.read(dst))
    finally:
        runtime.set_runtime("keras")
    assert stale.runtime == "keras"


@pytest.mark.parametrize("kind", ["litert", "onnx"])
def test_a_worker_hearing_with_a_light_runtime_never_imports_tensorflow(tmp_path, gtzan, kind):
    code = textwrap.dedent(f"""
        import sys
        from tagger import audio
        from tagger.models import registry, runtime
        runtime.set_runtime({kind!r})
        m = registry.load({DEFAULT!r})
        clip = audio.load_clip({str(gtzan / "jazz" / "jazz.00002.mp3")!r})
        p = m.from_windows(m.window_probs(clip))
        assert m.runtime == {kind!r}, m.runtime
        assert m.decider.labels[int(p.argmax())] == "jazz"
        bad = sorted(k for k in sys.modules if k.split(".")[0] in ("tensorflow", "keras", "tf_keras"))
        print(len(bad), bad[:5])
        # the decider's plain arrays (tagger.models.linear): no scikit-learn (1 s of start-up)
        print(sorted(k for k in sys.modules if k.split(".")[0] == "sklearn")[:5])
    """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    first, second = run.stdout.splitlines()[-2:]
    assert first.split()[0] == "0" and second == "[]", run.stdout


def test_the_plain_decider_is_the_pickled_one(tmp_path):
    """decider.npz (what workers load) decides as decider.joblib does, and is not used once stale."""
    import joblib

    from tagger.models import linear
    from tagger.models.base import Card
    from tagger.models.openset import PLAIN_NAME, OpenSetModel, load_plain

    src = registry.find(DEFAULT).directory
    pickled = joblib.load(src / "decider.joblib")
    plain = OpenSetModel(Card.read(src)).decider
    assert isinstance(plain.head, linear.Linear) and plain.labels == pickled.labels
    pickled.mtt_windows = plain.mtt_windows  # the card's setting, applied to whichever is loaded
    rng = np.random.default_rng(7)
    for n in (1, 3, 5, 10):  # window rows as the networks give them: penultimate, then tag activations
        rows = np.concatenate([rng.normal(0, 1.5, (n, 200)), rng.uniform(0, 1, (n, 100))], axis=1).astype(np.float32)
        np.testing.assert_allclose(plain.decide(rows), pickled.decide(rows), rtol=0, atol=1e-12)
    dst = tmp_path / DEFAULT
    shutil.copytree(src, dst)
    pickled.threshold = 0.5  # a retrained decider beside the old arrays
    joblib.dump(pickled, dst / "decider.joblib")
    assert load_plain(dst / PLAIN_NAME, dst / "decider.joblib") is None
    again = OpenSetModel(Card.read(dst)).decider
    assert not isinstance(again.head, linear.Linear) and again.threshold == 0.5


def test_artist_tagged_rows_are_judged_without_their_artist(monkeypatch):
    """training.openset.nested_probs: a calibrator that judges an artist-tagged track never saw a row
    of that track's group (artist). Two artists whose tracks look alike: one's are all right, the
    other's all wrong; judged without itself, each gets the other's verdict. The weights give each
    tagged genre alike and each artist within a genre alike."""
    from training import openset

    rng = np.random.default_rng(0)
    x0 = np.zeros(len(FEATURES))
    x0[FEATURES.index("agree")] = 1
    eps, y = [], []
    for clip in range(20):  # GTZAN cv rows: nothing to tell right from wrong
        y.append("jazz" if clip % 2 else "blues")
        x = x0.copy()
        x[FEATURES.index("head_p")] = rng.normal()
        eps.append({"clip": clip, "kind": "cv", "held": str(clip % 2), "stage": 0, "genre": "jazz", "x": x,
                    "right": bool(clip % 4 < 2), "true": y[-1]})
    folds = [(np.arange(1, 20, 2), np.arange(0, 20, 2)), (np.arange(0, 20, 2), np.arange(1, 20, 2))]
    for clip, (group, right) in enumerate([("pkg/A", True)] * 6 + [("pkg/B", False)] * 6 + [("other/C", True)] * 2):
        x = x0.copy()
        x[FEATURES.index("novelty")] = (5.0 if group.startswith("pkg") else 0.0) + rng.normal(scale=0.1)
        eps.append({"clip": clip, "kind": "tagged", "held": group, "group": group, "stage": 0,
                    "genre": "classical", "x": x, "right": right, "true": "classical" if clip < 12 else "metal"})
    monkeypatch.setattr(openset, "TAGGED_SHARE", 0.5)
    probs = openset.nested_probs(eps, y, folds)
    a = [p for e, p in zip(eps, probs) if e.get("group") == "pkg/A"]
    b = [p for e, p in zip(eps, probs) if e.get("group") == "pkg/B"]
    assert max(a) < 0.35 and min(b) > 0.5, (a, b)  # fitted on all rows, both would sit near 0.5
    w = openset.weights(eps, y)
    tagged = np.array([e["kind"] == "tagged" for e in eps])
    share = openset.TAGGED_SHARE
    assert w[tagged].sum() / w[~tagged].sum() == pytest.approx(share / ((1 - openset.OPEN_SHARE) * (1 - share)))
    classical_a = w[[i for i, e in enumerate(eps) if e.get("group") == "pkg/A"]].sum()
    classical_b = w[[i for i, e in enumerate(eps) if e.get("group") == "pkg/B"]].sum()
    metal = w[[i for i, e in enumerate(eps) if e["kind"] == "tagged" and e["true"] == "metal"]].sum()
    assert classical_a == pytest.approx(classical_b) and metal == pytest.approx(classical_a + classical_b)


def test_the_threshold_must_hold_on_artist_tagged_music():
    """training.openset.acceptable: GTZAN's figures passing is not enough where the artist-tagged
    music's written tags are right less than 9 times in 10."""
    from training.openset import acceptable

    def dec(kind, held, n_right, n_wrong):
        return [{"kind": kind, "held": held, "p": 0.9, "right": i < n_right, "genre": "x", "true": "x",
                 "clip": i, "stages": 1} for i in range(n_right + n_wrong)]

    gtzan = dec("cv", "0", 19, 1) + dec("logo", "blues", 0, 0)
    s = {"cv": {"written": 20, "right": 19, "wrong": 1, "precision": 0.95},
         "logo": {"written": 0, "right": 0, "wrong": 0, "precision": None}}
    assert acceptable(s, gtzan, 0.8)
    assert acceptable({**s, "tagged": {"written": 10, "right": 9, "wrong": 1, "precision": 0.9}}, gtzan, 0.8)
    assert not acceptable({**s, "tagged": {"written": 15, "right": 12, "wrong": 3, "precision": 0.8}}, gtzan, 0.8)


def test_later_windows_run_musicnn_msd_only_and_decide_the_same(model, gtzan):
    """The card's ``mtt_windows`` (3): the decider reads musicnn-mtt's tags from the first three
    windows heard only, so the windows heard after the first stage run musicnn-msd alone (their
    MTT columns NaN), and the decision is the one every output of those windows gives."""
    from tagger.audio import Clip

    assert model.card.extra["mtt_windows"] == 3 and model.decider.mtt_windows == 3
    clip = audio.load_clip(gtzan / "country" / "country.00002.mp3", n_windows=9)
    rows = model.window_probs(clip)
    later = model.later_window_probs(Clip(windows=clip.windows[3:], sr=clip.sr, info=clip.info))
    assert np.isnan(later[:, 250:]).all() and not np.isnan(later[:, :250]).any()
    np.testing.assert_allclose(later[:, :250], rows[3:, :250], rtol=0.05, atol=0.02)  # bfloat16, other batch
    mixed = np.concatenate([rows[:3], later])
    full, part = model.judged(rows), model.judged(mixed)
    assert np.argmax(full[0]) == np.argmax(part[0]) and full[0].max() == pytest.approx(part[0].max(), abs=0.02)
    # the setting is what makes the later MTT tags unread: with every window's, the evidence differs
    dec = model.decider
    try:
        dec.mtt_windows = 0
        every = dec.evidence(rows).tag_scores
    finally:
        dec.mtt_windows = 3
    assert not np.allclose(every, dec.evidence(rows).tag_scores)
    np.testing.assert_allclose(dec.evidence(rows).tag_scores, dec.evidence(mixed).tag_scores, atol=0.02)


def test_familiarity_with_groups_compares_a_track_with_other_albums_not_one_albums_tightness():
    """Familiarity.fit(groups=): a genre's own figure is how near its clips come to clips of other
    groups (runs of ids: albums), so a track of a new album lying as far from the known albums as
    they lie from each other is as familiar as they are (novelty near 0), where measured against
    one album's tightness it would look far off. A genre of one group takes the others' figure."""
    from tagger.models.openset import Familiarity

    rng = np.random.default_rng(0)
    albums = {"a": (0.0, 0.0), "b": (1.0, 0.0), "c": (0.0, 1.0), "d": (5.0, 5.0)}
    means, labels, groups = [], [], []
    for group, centre in albums.items():
        for _ in range(4):  # more than the 3 nearest a genre's figure counts
            means.append(np.array(centre) + rng.normal(scale=0.01, size=2))
            labels.append(1 if group == "d" else 0)
            groups.append(group)
    means, labels, groups = np.array(means), np.array(labels), np.array(groups)
    new_album = np.array([1.0, 1.0])
    by_album = Familiarity.fit(means, labels)
    across = Familiarity.fit(means, labels, groups)
    assert by_album.novelty(new_album, genre=0) > 3.0
    assert abs(across.novelty(new_album, genre=0)) < 0.3
    # a clip of a known album is nearer than the albums are to each other
    assert across.novelty(means[0], genre=0) < -1.0
    # genre 1 is one album: it takes genre 0's figure (the median of the genres that span two groups)
    assert across.genre_references[1] == pytest.approx(across.genre_references[0])
    assert by_album.genre_references[1] < 0.1 * across.genre_references[1]
    # the overall figure (what a genre the head cannot name is judged by) is not per genre: as before
    assert across.reference == pytest.approx(by_album.reference)
