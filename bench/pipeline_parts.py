"""The parts of ``btxrd-run --dir``'s pipeline, timed alone (run by bench/folder.py each round).

Run with the Python of the environment whose ``btxrd-run`` is timed, so both use the same
libraries. Appends one JSON line per run to OUT: per image, decode+preprocess on one thread
(exact, and as ``--fast-decode`` does it) and the model on pre-made tensors with the runtime's
session (every core, as ``btxrd-run`` opens it, and one intra-op thread), in batches of the
runtime's size. Everything runs through the runtime's own code (``Classifier``, ``OnnxModel``).

Usage: python bench/pipeline_parts.py MODEL FOLDER OUT
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from btxrd.runtime.model.classifier import Classifier
from btxrd.runtime.model.session import OnnxModel


def main(model: Path, folder: Path, out: Path) -> None:
    paths = sorted(p for p in folder.iterdir() if p.is_file())
    exact = Classifier(model, ood_gate=False)
    fast = Classifier(model, ood_gate=False, fast_decode=True)
    figures: dict[str, float | int | str] = {"images": len(paths), "batch": exact.batch_size}
    # One thread, no pool: the cost of one image's decode+preprocess on one core.
    arrays = []
    for name, classifier in (("decode_exact", exact), ("decode_fast", fast)):
        started = time.perf_counter()
        prepared = [classifier._prepare(p, keep_image=False) for p in paths]
        figures[f"{name}_ms"] = _per_image(started, len(paths))
        figures[f"{name}_as"] = prepared[0].decode or "failed"
        arrays = arrays or [p.array for p in prepared]
    tensors = np.stack(arrays)
    for name, threads in (("model", None), ("model_1thread", 1)):
        session = OnnxModel(model, threads=threads)
        session.run(tensors[: exact.batch_size])  # first run allocates; not the steady cost
        started = time.perf_counter()
        for i in range(0, len(tensors), exact.batch_size):
            session.run(tensors[i : i + exact.batch_size])
        figures[f"{name}_ms"] = _per_image(started, len(tensors))
        del session
    with out.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(figures) + "\n")


def _per_image(started: float, n: int) -> float:
    return round((time.perf_counter() - started) * 1000 / n, 3)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
