"""The benchmark's PyTorch-side jobs, each run in its own process so torch's thread pool never
competes with onnxruntime's inside the main benchmark process. Prints one JSON document.

Examples:

    python bench/torch_worker.py standin --out bench/.cache/standin/standin.pt --images DIR

    python bench/torch_worker.py gradcam --checkpoint models/btxrd-demo.pt --images a.png b.png

    python bench/torch_worker.py flops --checkpoint models/btxrd-demo.pt
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from timing import interleave, ratio

from btxrd.runtime.decode.image import load_image
from btxrd.runtime.model.contract import Preprocessing
from btxrd.runtime.model.preprocess import preprocess

CLASSES = ("Normal", "Benign", "Malignant")


def standin(out: Path, images: Path, n: int) -> dict[str, object]:
    """A random EfficientNet-B0 whose batch-norm statistics come from real-looking inputs."""
    import torchvision

    from btxrd.export.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = torchvision.models.efficientnet_b0(weights=None, num_classes=len(CLASSES))
    files = sorted(p for p in images.iterdir() if p.suffix.lower() in (".jpeg", ".jpg", ".png"))
    prep = Preprocessing()
    batch = torch.from_numpy(np.stack([preprocess(load_image(p), prep) for p in files[:n]]))
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # a cumulative average over the batches below
    model.train()
    with torch.no_grad():
        for chunk in batch.split(8):
            model(chunk)
    model.eval()
    save_checkpoint(
        out, model, arch="efficientnet_b0", class_names=CLASSES, image_size=224, standin=True
    )
    return {"checkpoint": str(out), "bn_images": len(batch)}


def gradcam(checkpoint: Path, images: list[Path], reps: int) -> dict[str, object]:
    """Grad-CAM per image, naive vs frozen parameters, next to a plain forward pass."""
    try:
        from btxrd.explain.cam import compute_cams, load_backend
        from btxrd.explain.model import load_explainer
    except ImportError as exc:
        return {"skipped": f"btxrd.explain has no compute_cams/load_explainer yet ({exc})"}
    explainer = load_explainer(checkpoint)
    load_backend()
    inputs = np.stack([preprocess(load_image(p), explainer.prep) for p in images])
    n = len(inputs)
    targets = [i % len(explainer.class_names) for i in range(n)]
    model, layer = explainer.model, explainer.target_layer
    tensor = torch.from_numpy(inputs)

    def forward() -> None:
        with torch.inference_mode():
            model(tensor)

    def cams(freeze: bool):
        return compute_cams(model, layer, inputs, targets, freeze=freeze, batch_size=n)

    naive, frozen = cams(False), cams(True)
    diffs = [float(np.abs(a.cam - b.cam).max()) for a, b in zip(naive, frozen, strict=True) if a.ok]
    stats = interleave(
        {"forward": forward, "frozen": lambda: cams(True), "naive": lambda: cams(False)},
        reps,
    )
    per_image = {k: v.scaled(1000.0 / n, "ms/image") for k, v in stats.items()}
    return {
        "images": n,
        "threads": torch.get_num_threads(),
        "target_layer": explainer.target_layer_name,
        "ms_per_image": {k: v.to_json() for k, v in per_image.items()},
        "frozen_over_forward": ratio(stats["frozen"], stats["forward"]),
        "naive_over_frozen": ratio(stats["naive"], stats["frozen"]),
        "max_difference_naive_vs_frozen": max(diffs) if diffs else None,
    }


def flops(checkpoint: Path) -> dict[str, object]:
    """FLOPs of one forward pass as torch counts them (a cross-check of the ONNX count)."""
    from torch.utils.flop_counter import FlopCounterMode

    from btxrd.export.checkpoint import build_model, load_checkpoint

    ckpt = load_checkpoint(checkpoint)
    model, _ = build_model(ckpt)
    height, width = ckpt.preprocessing.image_size
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(torch.zeros(1, 3, height, width))
    return {"gflop_per_image": counter.get_total_flops() / 1e9}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="job", required=True)
    p = sub.add_parser("standin")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--images", type=Path, required=True)
    p.add_argument("--n", type=int, default=32)
    p = sub.add_parser("gradcam")
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--images", type=Path, nargs="+", required=True)
    p.add_argument("--reps", type=int, default=5)
    p = sub.add_parser("flops")
    p.add_argument("--checkpoint", type=Path, required=True)
    args = parser.parse_args()
    if args.job == "standin":
        result = standin(args.out, args.images, args.n)
    elif args.job == "gradcam":
        result = gradcam(args.checkpoint, args.images, args.reps)
    else:
        result = flops(args.checkpoint)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
