"""musicnn-mtt on the first windows only (the card's ``mtt_windows``) against every window, in one process.

Each track of a folder of real music is heard as a worker hears it (``progressive.hear``: decode,
features, the networks, the decider; default hearing settings), twice, the two ways interleaved and
their order alternated from track to track, on one thread:

- **every window**: both musicnn networks on every window heard (``mtt_windows`` 0);
- **as shipped**: musicnn-mtt on the first ``mtt_windows`` windows, musicnn-msd alone after them
  (Keras's musicnn-msd, or the card's LiteRT export of it, ``runtimes.litert.later``).

Prints ms per track for each, windows heard, and how many tracks get the same top genre.

    python bench/bench_mtt_windows.py --music DIR [--tracks 20] [--runtime litert|keras]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--music", type=Path, required=True, help="a folder of real music (any format tagger reads)")
    ap.add_argument("--tracks", type=int, default=20, help="tracks heard (spread over the folder's files)")
    ap.add_argument("--runtime", default="onnx", choices=("onnx", "litert", "keras"))
    args = ap.parse_args()

    from tagger import formats
    from tagger.errors import TaggerError
    from tagger.models import registry, runtime

    runtime.set_threads(1)  # as a worker on a 2-core machine with 2 workers
    runtime.set_runtime(args.runtime)
    from tagger.models.openset import OpenSetModel
    from tagger.models.progressive import Hearing, hear

    model = OpenSetModel(registry.find("gtzan-musicnn-openset"))
    shipped = model.decider.mtt_windows
    if not shipped:
        raise SystemExit("the card sets no mtt_windows: nothing to compare")
    files = sorted(p for p in args.music.rglob("*") if p.is_file())
    readable = []
    for p in files[:: max(1, len(files) // (2 * args.tracks))]:
        try:
            fmt = formats.confirm(str(p))
            hear(model, p, fmt, Hearing(windows=3, first=0))  # also warms each batch size up
        except (TaggerError, OSError):
            continue
        readable.append((p, fmt))
        if len(readable) == args.tracks:
            break
    if not readable:
        raise SystemExit(f"{args.music}: no readable audio")
    seconds = {"every window": 0.0, "as shipped": 0.0}
    windows = {k: 0 for k in seconds}
    same = 0
    for i, (p, fmt) in enumerate(readable):
        top = {}
        for way in (list(seconds) if i % 2 == 0 else list(seconds)[::-1]):
            model.decider.mtt_windows = shipped if way == "as shipped" else 0
            t = time.perf_counter()
            heard = hear(model, p, fmt, Hearing())
            seconds[way] += time.perf_counter() - t
            windows[way] += heard.windows
            top[way] = int(np.argmax(heard.probs))
        same += len(set(top.values())) == 1
    n = len(readable)
    print(f"{n} tracks of {args.music}; runtime {model.runtime}, one thread; mtt_windows {shipped}")
    for way in seconds:
        print(f"{way:>13}: {1000 * seconds[way] / n:6.0f} ms per track (decode, features, networks, decider), "
              f"{windows[way] / n:.2f} windows heard")
    print(f"same top genre on {same} of {n}; as shipped / every window: "
          f"{seconds['as shipped'] / seconds['every window']:.2f} of the time")


if __name__ == "__main__":
    main()
