"""The distribution: the wheel carries the models, installs, and its installed copy finds them.

The wheel is built from a copy of the sources with this environment's setuptools (no isolated
build environment: no network), installed with ``pip install --no-deps --target`` (its
dependencies are this environment's: TensorFlow is too large to install again here), and run from
there with nothing of the checkout on the path.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tagger.models import registry

ROOT = Path(__file__).resolve().parents[1]
DIST = "genre-tagger"
#: what the build reads: the metadata and the packages (setup.cfg)
SOURCES = ("setup.cfg", "pyproject.toml", "README.md", "tagger", "workers", "migrations", "training", "beetsplug")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src")
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(ROOT / name, src / name)
    out = tmp_path_factory.mktemp("dist")
    run = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                          "-q", "-w", str(out), str(src)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    (whl,) = out.glob("*.whl")
    return whl


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("site")
    run = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target",
                          str(target), str(wheel)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    return target


def _artifacts(root: Path) -> set[str]:
    base = root / "tagger" / "models" / "artifacts"
    return {p.relative_to(root).as_posix() for p in base.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


def test_the_wheel_is_genre_tagger_with_the_tagger_command_and_every_model_file(wheel):
    assert wheel.name.startswith(DIST.replace("-", "_") + "-")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        (meta,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        (entry,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        metadata, entry_points = z.read(meta).decode(), z.read(entry).decode()
    assert f"Name: {DIST}\n" in metadata
    assert "Provides-Extra: beets" in metadata
    assert "tagger = tagger.cli:entry" in entry_points.split("[console_scripts]")[1]
    # every file of the shipped models, and in particular every one the registry loads
    assert _artifacts(ROOT) <= names
    loaded = {"tagger/models/artifacts/default.json"}
    for card in registry.cards():
        where = card.directory.relative_to(ROOT).as_posix()
        loaded |= {f"{where}/card.json", f"{where}/{card.file}"}
        loaded |= {f"{where}/{r['file']}" for r in (card.extra.get("runtimes") or {}).values() if "file" in r}
        student = card.extra.get("student")  # the default's student, in a folder of its own
        if student:
            home = (card.directory.parent / student["directory"]).relative_to(ROOT).as_posix()
            loaded |= {f"{home}/{student[k]}" for k in ("file", "decider", "decider_source")}
    assert loaded <= names, sorted(loaded - names)
    assert {"tagger/cli.py", "workers/broker.py", "migrations/env.py", "beetsplug/audiogenre.py"} <= names
    # beets' plugin namespace is shared: an __init__.py would hide beets' own plugins
    assert "beetsplug/__init__.py" not in names
    assert not [n for n in names if "__pycache__" in n or n.startswith("tests/")]


def test_the_installed_copy_finds_its_models_and_runs(installed, gtzan, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAGGER_")}
    env.update(PYTHONPATH=str(installed), TAGGER_CONFIG=os.devnull, TAGGER_DATA_DIR=str(tmp_path / "data"))
    code = """
import json, sys
import tagger
from tagger import audio
from tagger.models import registry
chain = registry.default_chain()
card = registry.find(chain[0])
registry.check_features(card)
fallback = registry.load(chain[-1])
clip = audio.load_clip(sys.argv[1], n_windows=3)
print(json.dumps({"tagger": tagger.__file__, "chain": chain, "card": str(card.path),
                  "cards": {c.name: str(c.path) for c in registry.cards()},
                  "predicted": fallback.predict(clip).genre}))
"""
    run = subprocess.run([sys.executable, "-c", code, str(gtzan / "classical" / "classical.00000.mp3")],
                         env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    doc = json.loads(run.stdout.splitlines()[-1])
    inside = str(installed) + os.sep
    assert doc["tagger"].startswith(inside)
    assert doc["chain"] == ["gtzan-musicnn-openset", "gtzan-logreg"]
    assert doc["card"].startswith(inside) and Path(doc["card"]).is_file()
    assert doc["cards"].keys() == {c.name for c in registry.cards()}
    assert all(p.startswith(inside) and Path(p).is_file() for p in doc["cards"].values())
    assert doc["predicted"] == "classical"

    # the console script pip made runs the installed copy
    run = subprocess.run([str(installed / "bin" / "tagger"), "models"], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "gtzan-musicnn-openset" in run.stdout and "gtzan-logreg" in run.stdout
