"""Checkpoint (TF 1, inside the musicnn wheel) → Keras weights + model card.

The wheel is only read: its checkpoints are extracted to a temporary
directory and their arrays copied, by name, into the Keras network.
"""
from __future__ import annotations

import json
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from tagger import genres
from tagger.models.musicnn_arch import CHECKPOINT_NAMES, build_musicnn
from tagger.features import MUSICNN_PARAMS
from training.musicnn import readme

#: artifact name → (checkpoint folder in the wheel, tag list name)
MODELS = {
    "musicnn-msd": "MSD_musicnn",
    "musicnn-mtt": "MTT_musicnn",
}
WEIGHTS_FILE = "musicnn.weights.h5"
VERSION = "1.0.0"

LICENSE_TEXT = """\
The weights in this directory are converted from the musicnn package 0.1.0
(https://github.com/jordipons/musicnn, PyPI "musicnn"), by Jordi Pons and
Xavier Serra, Music Technology Group, Universitat Pompeu Fabra. Reference:
J. Pons and X. Serra, "musicnn: pre-trained convolutional neural networks for
music audio tagging", ISMIR 2019 late-breaking/demo. Its licence (ISC):

Copyright (c) Music Technology Group, Universitat Pompeu Fabra 2019. Code
developed by Jordi Pons (www.jordipons.me).

Permission to use, copy, modify, and/or distribute this software for any
purpose with or without fee is hereby granted, provided that the above
copyright notice and this permission notice appear in all copies.

THE SOFTWARE IS PROVIDED "AS IS" AND THE AUTHOR DISCLAIMS ALL WARRANTIES WITH
REGARD TO THIS SOFTWARE INCLUDING ALL IMPLIED WARRANTIES OF MERCHANTABILITY AND
FITNESS. IN NO EVENT SHALL THE AUTHOR BE LIABLE FOR ANY SPECIAL, DIRECT,
INDIRECT, OR CONSEQUENTIAL DAMAGES OR ANY DAMAGES WHATSOEVER RESULTING FROM LOSS
OF USE, DATA OR PROFITS, WHETHER IN AN ACTION OF CONTRACT, NEGLIGENCE OR OTHER
TORTIOUS ACTION, ARISING OUT OF OR IN CONNECTION WITH THE USE OR PERFORMANCE OF
THIS SOFTWARE.
"""


def extract_wheel(wheel: Path, into: Path) -> Path:
    """Unpack the wheel's ``musicnn/`` folder into ``into``; returns the package folder."""
    with zipfile.ZipFile(wheel) as zf:
        members = [m for m in zf.namelist() if m.startswith("musicnn/")]
        if not members:
            raise SystemExit(f"{wheel}: not a musicnn wheel (no musicnn/ folder)")
        zf.extractall(into, members)
    return into / "musicnn"


def wheel_metadata(package: Path) -> dict:
    """Tag lists (from configuration.py, parsed as text) and the training figures of each model."""
    import ast

    tree = ast.parse((package / "configuration.py").read_text())
    consts = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            try:
                consts[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass
    return consts


def read_checkpoint(folder: Path) -> dict[str, np.ndarray]:
    """Every trainable/statistics array of a TF 1 checkpoint (optimizer slots left out)."""
    import tensorflow as tf

    reader = tf.compat.v1.train.NewCheckpointReader(str(folder) + "/")
    names = reader.get_variable_to_shape_map()
    return {
        n: reader.get_tensor(n)
        for n in names
        if "Adam" not in n and not n.startswith("beta1_power") and not n.startswith("beta2_power")
    }


def load_into(model, arrays: dict[str, np.ndarray]) -> None:
    """Copy checkpoint arrays into the Keras layers, checking every shape."""
    used = set()
    for layer_name, scope in CHECKPOINT_NAMES.items():
        layer = model.get_layer(layer_name)
        if scope.startswith("batch_normalization"):
            keys = ["gamma", "beta", "moving_mean", "moving_variance"]
        else:
            keys = ["kernel", "bias"]
        values = [arrays[f"{scope}/{k}"] for k in keys]
        used.update(f"{scope}/{k}" for k in keys)
        target = [w.shape for w in layer.get_weights()]
        if layer_name.startswith("midend_") and not layer_name.endswith("_bn"):
            # the original convolves a (frames, features, 1) image with a
            # (7, features) kernel: the same as a 1-D convolution over time
            values[0] = values[0].reshape(values[0].shape[0], values[0].shape[1], values[0].shape[3])
        for v, t in zip(values, target):
            if tuple(v.shape) != tuple(t):
                raise ValueError(f"{layer_name} ← {scope}: shape {v.shape} ≠ {t}")
        layer.set_weights(values)
    left = set(arrays) - used
    if left:
        raise ValueError(f"checkpoint arrays not used: {sorted(left)}")


def convert_one(package: Path, name: str, out_dir: Path, wheel_name: str) -> Path:
    folder = package / MODELS[name]
    consts = wheel_metadata(package)
    tags = list(consts["MSD_LABELS" if "MSD" in MODELS[name] else "MTT_LABELS"])
    config = json.loads((folder / "config.json").read_text())
    result = " ".join((folder / "experiment.result").read_text().split())

    model = build_musicnn(n_tags=len(tags), n_frames=None)
    load_into(model, read_checkpoint(folder))
    target = out_dir / name
    target.mkdir(parents=True, exist_ok=True)
    model.save_weights(target / WEIGHTS_FILE)

    head = genres.HEADS[name]
    if tuple(tags) != head.tags:
        raise ValueError(f"{name}: the wheel's tag list differs from tagger.genres' copy")
    card = {
        "name": name,
        "version": VERSION,
        "kind": "musicnn",
        "labels": list(head.genres),
        "file": WEIGHTS_FILE,
        "features": dict(MUSICNN_PARAMS),
        "metrics": {},
        "tags": tags,
        "architecture": {
            "builder": "tagger.models.musicnn_arch:build_musicnn",
            "n_tags": len(tags),
            "midend_filters": 64,
            "backend_units": 200,
            "params": int(model.count_params()),
        },
        "genre_head": {
            "module": "tagger.genres",
            "head": name,
            "score": "genre score = max over its tags of weight × tag activation (patch-averaged sigmoid)",
            "probabilities": "genre scores divided by their sum",
            "multi_value": f"genres whose score ≥ {genres.MULTI_RELATIVE} × the top genre's score",
        },
        "source": {
            "package": "musicnn 0.1.0 (PyPI), " + wheel_name,
            "checkpoint": MODELS[name],
            "authors": "Jordi Pons, Xavier Serra (MTG, Universitat Pompeu Fabra)",
            "paper": "musicnn: pre-trained convolutional neural networks for music audio tagging, ISMIR 2019 LBD",
            "training_data": "Million Song Dataset (last.fm tags)" if "MSD" in MODELS[name] else "MagnaTagATune",
            "published_result": result,
            "training_config": {k: config[k] for k in ("n_frames", "pre_processing", "pad_short", "audio_rep")},
        },
        "licence": "ISC (see LICENSE)",
        "command": f"python -m training.musicnn convert --wheel {wheel_name} --out {_shown(out_dir)}",
    }
    old = target / "card.json"
    if old.is_file():
        # figures measured by `verify` and `evaluate` survive a re-conversion
        previous = json.loads(old.read_text())
        card["metrics"] = previous.get("metrics", {})
        for key in ("checks", "top_tags"):
            if key in previous:
                card[key] = previous[key]
    old.write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n")
    (target / "LICENSE").write_text(LICENSE_TEXT)
    readme.write(target)
    return target


def _shown(path: Path) -> str:
    """``path`` relative to the repository when it lies inside it (cards carry no machine paths)."""
    repo = Path(__file__).resolve().parents[2]
    try:
        return str(path.resolve().relative_to(repo))
    except ValueError:
        return str(path)


def convert(wheel: Path, out_dir: Path, names: list[str] | None = None) -> list[Path]:
    tmp = Path(tempfile.mkdtemp(prefix="musicnn-"))
    try:
        package = extract_wheel(wheel, tmp)
        return [convert_one(package, n, out_dir, wheel.name) for n in (names or list(MODELS))]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
