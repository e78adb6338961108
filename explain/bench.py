"""Time one CAM per image, naive (pytorch-grad-cam as it comes) against frozen (gradients only
from the target layer on), next to a plain forward pass, and check both give the same maps.

    python -m btxrd.explain.bench --checkpoint models/btxrd-demo.pt

Prints one JSON document. Best of ``--repeat`` runs, after one warm-up run, so other load on the
machine inflates the figures as little as possible.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from btxrd.explain.cam import compute_cams, load_backend
from btxrd.explain.methods import METHODS
from btxrd.explain.model import load_explainer, load_input


def best_ms_per_image(run: Callable[[], object], n: int, repeat: int) -> float:
    run()  # warm-up: kernel selection, autograd engine start
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times) * 1000 / n


def benchmark(
    checkpoint: Path,
    images: list[Path],
    n: int = 8,
    repeat: int = 3,
    method: str = "gradcam",
) -> dict[str, object]:
    explainer = load_explainer(checkpoint)
    load_backend()
    height, width = explainer.prep.image_size
    if images:
        inputs = np.stack([load_input(p, explainer.prep)[1] for p in images[:n]])
    else:
        inputs = np.random.default_rng(0).normal(size=(n, 3, height, width)).astype(np.float32)
    n = len(inputs)
    targets = [i % len(explainer.class_names) for i in range(n)]
    model, layer = explainer.model, explainer.target_layer

    def forward() -> None:
        with torch.inference_mode():
            model(torch.from_numpy(inputs))

    def cams(freeze: bool):
        return compute_cams(model, layer, inputs, targets, method, freeze=freeze, batch_size=n)

    naive, frozen = cams(False), cams(True)
    differences = [
        float(np.abs(a.cam - b.cam).max()) for a, b in zip(naive, frozen, strict=True) if a.ok
    ]
    return {
        "checkpoint": str(checkpoint),
        "arch": explainer.arch.name,
        "image_size": [height, width],
        "method": method,
        "target_layer": explainer.target_layer_name,
        "images": n,
        "threads": torch.get_num_threads(),
        "forward_ms_per_image": round(best_ms_per_image(forward, n, repeat), 1),
        "cam_naive_ms_per_image": round(best_ms_per_image(lambda: cams(False), n, repeat), 1),
        "cam_frozen_ms_per_image": round(best_ms_per_image(lambda: cams(True), n, repeat), 1),
        "max_difference_naive_vs_frozen": max(differences) if differences else None,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=Path("models/btxrd-demo.pt"))
    parser.add_argument("--images", type=Path, nargs="*", default=[])
    parser.add_argument("--n", type=int, default=8, help="images per batch (random if no files)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--method", choices=list(METHODS), default="gradcam")
    args = parser.parse_args(argv)
    result = benchmark(args.checkpoint, args.images, args.n, args.repeat, args.method)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
