"""Writing what inference reads: ``card.json`` beside the model file (see tagger.models.base.Card)."""
from __future__ import annotations

import datetime as _dt
import json
import os
import shlex
import sys
import time
from pathlib import Path


def command_line() -> str:
    """The command that reproduces this run, as typed."""
    return "python -m training " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def write_card(out_dir: str | Path, **fields) -> Path:
    """Write ``card.json``; required keys: name, version, kind, labels, file, features, metrics."""
    for key in ("name", "version", "kind", "labels", "file", "features", "metrics"):
        if key not in fields:
            raise ValueError(f"card needs {key!r}")
    fields.setdefault("created", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    path = Path(out_dir) / "card.json"
    path.write_text(json.dumps(fields, indent=1) + "\n", encoding="utf-8")
    return path


def retime(model_dir: str | Path, paths: list[Path]) -> dict:
    """Re-measure ``inference_ms_per_track`` of a written model (on a quiet CPU) and update its card."""
    model_dir = Path(model_dir)
    doc = json.loads((model_dir / "card.json").read_text(encoding="utf-8"))
    doc["inference_ms_per_track"] = inference_ms_per_track(doc["name"], model_dir, paths)
    write_card(model_dir, **doc)
    return doc["inference_ms_per_track"]


def inference_ms_per_track(name: str, model_dir: str | Path, paths: list[Path], repeats: int = 1) -> dict:
    """Median ms per track through the registry, as the tagger runs it: decode the
    windows (``tagger.audio.load_clip``), compute features, predict. The first file
    is a warm-up and not counted."""
    import numpy as np

    from tagger import audio
    from tagger.models import registry

    model = registry.load(name, extra=[str(Path(model_dir).parent)])
    model.predict(audio.load_clip(paths[0]))
    decode, total = [], []
    for p in paths[1:] * repeats:
        t0 = time.perf_counter()
        clip = audio.load_clip(p)
        t1 = time.perf_counter()
        model.predict(clip)
        t2 = time.perf_counter()
        decode.append((t1 - t0) * 1000)
        total.append((t2 - t0) * 1000)
    return {
        "end_to_end_ms": round(float(np.median(total)), 1),
        "decode_ms": round(float(np.median(decode)), 1),
        "features_and_model_ms": round(float(np.median(np.array(total) - np.array(decode))), 1),
        "tracks_timed": len(total),
        "runtime": getattr(model, "runtime", type(model).__name__),
        "load_average_1min": round(os.getloadavg()[0], 2),  # other jobs on the machine skew it
        "note": "median over 30 s clips (9 windows each), one process on the 2-core training machine, "
                "through tagger.models.registry: tagger.audio.load_clip, then Model.predict",
    }
