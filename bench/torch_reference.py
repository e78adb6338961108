"""The pipeline a user would write without btxrd: torch, torchvision transforms, the checkpoint.

It is the reference side of ``make bench`` and deliberately plain: no btxrd imports, the
checkpoint loaded with ``torch.load(weights_only=True)``, torchvision's EfficientNet-B0, and
``Resize((224, 224)) -> ToTensor() -> Normalize(mean, std)`` on ``Image.open(...).convert("RGB")``.

Examples:

    python bench/torch_reference.py --checkpoint models/btxrd-demo.pt scan.jpeg

    python bench/torch_reference.py --checkpoint models/btxrd-demo.pt --dir radiographs/ \
        --output results.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torchvision
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
OUTPUT_STRIDE_16 = "_os16"


def load(checkpoint: Path) -> tuple[torch.nn.Module, list[str], transforms.Compose]:
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    names = list(state["class_names"])
    # What a user would write: the torchvision architecture the checkpoint names.
    arch = state.get("config", {}).get("arch", "efficientnet_b0")
    model = torchvision.models.get_model(
        arch.removesuffix(OUTPUT_STRIDE_16), weights=None, num_classes=len(names)
    )
    if arch.endswith(OUTPUT_STRIDE_16):  # trained with stage 6 kept at stride 1
        model.features[6][0].block[1][0].stride = (1, 1)
    model.load_state_dict(state["model_state_dict"])
    model.eval()
    size = int(state.get("config", {}).get("image_size", 224))
    norm = state.get("normalization", {})
    transform = transforms.Compose(
        [
            transforms.Resize((size, size)),
            transforms.ToTensor(),
            transforms.Normalize(norm.get("mean", IMAGENET_MEAN), norm.get("std", IMAGENET_STD)),
        ]
    )
    return model, names, transform


class Folder(Dataset):
    """Every image file in a folder, sorted (an ImageFolder without class sub-folders)."""

    def __init__(self, folder: Path, transform: transforms.Compose) -> None:
        self.paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in SUFFIXES)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        with Image.open(self.paths[index]) as image:
            return self.transform(image.convert("RGB")), index


@torch.inference_mode()
def classify_one(path: Path, model, names, transform) -> None:
    with Image.open(path) as image:
        batch = transform(image.convert("RGB")).unsqueeze(0)
    probs = torch.softmax(model(batch), dim=1)[0]
    best = int(probs.argmax())
    print(f"{path.name}: {names[best]} ({float(probs[best]):.4f})")
    for name, p in zip(names, probs.tolist(), strict=True):
        print(f"  {name:<12}{p:.4f}")


@torch.inference_mode()
def classify_folder(folder: Path, model, names, transform, args) -> None:
    started = time.perf_counter()
    data = Folder(folder, transform)
    loader = DataLoader(data, batch_size=args.batch_size, num_workers=args.workers)
    out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout  # noqa: SIM115
    for batch, indices in loader:
        probs = torch.softmax(model(batch), dim=1)
        for index, row in zip(indices.tolist(), probs.tolist(), strict=True):
            best = max(range(len(names)), key=row.__getitem__)
            record = {
                "path": str(data.paths[index]),
                "prediction": names[best],
                "scores": dict(zip(names, row, strict=True)),
            }
            out.write(json.dumps(record) + "\n")
    if out is not sys.stdout:
        out.close()
    seconds = time.perf_counter() - started
    print(json.dumps({"images": len(data), "loop_seconds": round(seconds, 3)}), file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="*", type=Path)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--dir", type=Path, help="classify every image in this folder")
    parser.add_argument("--output", type=Path, help="with --dir: JSON lines to this file")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    args = parser.parse_args()
    model, names, transform = load(args.checkpoint)
    if args.dir:
        classify_folder(args.dir, model, names, transform, args)
    for path in args.images:
        classify_one(path, model, names, transform)


if __name__ == "__main__":
    main()
