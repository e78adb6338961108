"""Train the shipped demo model (`make demo-model`): EfficientNet-B0 from scratch on the
synthetic BTXRD-layout dataset, with fixed seeds and the recipe recorded in the checkpoint.

Images are decoded and resized once with the runtime's own preprocessing, then augmented as
uint8 tensors, so an epoch costs only the network on this 2-core machine.
"""

from __future__ import annotations

import json
import math
import random
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click
import numpy as np
import torch
import torchvision
from PIL import Image
from torch import nn

from btxrd.export.archs import get_arch
from btxrd.export.checkpoint import load_checkpoint, save_checkpoint
from btxrd.export.data.dataset import (
    BTXRD_CLASSES,
    Sample,
    load_dataset,
    split_dataset,
    write_split,
)
from btxrd.export.data.labelme import read_annotation
from btxrd.export.data.masks import rasterise_lesions
from btxrd.export.recipe import load_recipe
from btxrd.runtime.cli.common import (
    CONTEXT_SETTINGS,
    debug_option,
    documents_exit_codes,
    run_cli,
    version_option,
)
from btxrd.runtime.decode.image import load_image
from btxrd.runtime.errors import ModelError
from btxrd.runtime.labels.metrics import classification_metrics
from btxrd.runtime.model.contract import Preprocessing
from btxrd.runtime.model.preprocess import resize_for_model
from btxrd.runtime.output.atomic import write_text
from btxrd.runtime.output.folders import prepare_output_dir
from btxrd.runtime.output.progress import progress


def cache_images(samples: list[Sample], prep: Preprocessing) -> torch.Tensor:
    """Decode and resize every image once: (N, 4, H, W) uint8, exactly the runtime's pixels in
    channels 0-2 and the lesion mask (255 = lesion) in channel 3, so augmentation moves both."""
    height, width = prep.image_size
    out = torch.zeros((len(samples), 4, height, width), dtype=torch.uint8)
    for i, sample in enumerate(samples):
        image = load_image(sample.image_path).image
        resized = resize_for_model(image, prep).convert("RGB")
        out[i, :3] = torch.from_numpy(np.asarray(resized).transpose(2, 0, 1).copy())
        annotation = read_annotation(sample.annotation_path) if sample.annotation_path else None
        if annotation and (annotation.image_width, annotation.image_height) == image.size:
            mask = rasterise_lesions(annotation.lesions, image.size)
            full = Image.fromarray(mask.astype(np.uint8) * 255)
            out[i, 3] = torch.from_numpy(np.asarray(resize_for_model(full, prep)).copy())
    return out


def augment_batch(
    batch_u8: torch.Tensor, cfg: dict[str, Any], gen: torch.Generator
) -> torch.Tensor:
    """Random flips, a small affine warp and brightness/contrast, for a whole batch at once
    (per-image torchvision transforms cost more than the network on this CPU). Geometry applies
    to every channel, brightness and contrast to the first three only. Returns uint8."""
    n = batch_u8.shape[0]
    x = batch_u8.float()

    def uniform(low: float, high: float) -> torch.Tensor:
        return torch.rand(n, generator=gen) * (high - low) + low

    hflip = torch.rand(n, generator=gen) < cfg["hflip"]
    vflip = torch.rand(n, generator=gen) < cfg["vflip"]
    x = torch.where(hflip.view(n, 1, 1, 1), x.flip(3), x)
    x = torch.where(vflip.view(n, 1, 1, 1), x.flip(2), x)
    angle = uniform(-cfg["degrees"], cfg["degrees"]) * math.pi / 180
    scale = uniform(*cfg["scale"])
    shift = cfg["translate"] * 2
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [
            torch.stack([cos, -sin, uniform(-shift, shift)], dim=1),
            torch.stack([sin, cos, uniform(-shift, shift)], dim=1),
        ],
        dim=1,
    )
    grid = torch.nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
    x = torch.nn.functional.grid_sample(
        x, grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )
    brightness = uniform(1 - cfg["brightness"], 1 + cfg["brightness"]).view(n, 1, 1, 1)
    contrast = uniform(1 - cfg["contrast"], 1 + cfg["contrast"]).view(n, 1, 1, 1)
    pixels = x[:, :3]
    mean = pixels.mean(dim=(1, 2, 3), keepdim=True)
    x = torch.cat([((pixels - mean) * contrast + mean) * brightness, x[:, 3:]], dim=1)
    return x.clamp(0, 255).round().to(torch.uint8)


def prepare_from_scratch(
    model: nn.Module, dropout: float, stochastic_depth: float, reset: bool = True
) -> None:
    """Make a randomly initialised network easy to start: every residual block begins as the
    identity (its last BatchNorm scaled to zero, as in Goyal et al. 2017; only with ``reset``),
    and dropout and stochastic depth are set for a short run. Neither changes the state dict's
    layout."""
    for module in model.modules():
        if isinstance(module, torchvision.ops.StochasticDepth):
            module.p = stochastic_depth
        elif isinstance(module, nn.Dropout):
            module.p = dropout
        elif not reset:
            continue
        elif isinstance(module, torchvision.models.efficientnet.MBConv):
            if module.use_res_connect:
                nn.init.zeros_(module.block[-1][1].weight)
        elif isinstance(module, torchvision.models.resnet.BasicBlock):
            nn.init.zeros_(module.bn2.weight)
        elif isinstance(module, torchvision.models.resnet.Bottleneck):
            nn.init.zeros_(module.bn3.weight)


class LesionHead(nn.Module):
    """Training only, never exported: a 1x1 convolution on the Grad-CAM feature map that predicts
    which cells hold an annotated lesion. Its loss points the backbone at the lesions the class
    depends on; without it, a from-scratch network on 2,000 phantoms stays at the class prior for
    many epochs, because a lesion covers about 1.5 % of the picture."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 1, kernel_size=1)

    def loss(
        self, features: torch.Tensor, masks_u8: torch.Tensor, pos_weight: float
    ) -> torch.Tensor:
        # A cell is positive when any of its input pixels is mostly lesion.
        target = nn.functional.adaptive_max_pool2d((masks_u8 >= 128).float(), features.shape[-2:])
        return nn.functional.binary_cross_entropy_with_logits(
            self.conv(features), target, pos_weight=torch.tensor(pos_weight)
        )


def _initialise(
    model: nn.Module, path: str | None, class_names: tuple[str, ...]
) -> dict[str, Any] | None:
    """Load the weights of the checkpoint the recipe fine-tunes (``model.init_checkpoint``), and
    say which one it was: path, sha256 and the metrics it recorded. ``None`` from scratch."""
    if not path:
        return None
    checkpoint = load_checkpoint(path)  # weights_only=True
    if checkpoint.class_names != tuple(class_names):
        raise ModelError(f"{path}: classes {checkpoint.class_names}, expected {class_names}")
    # strict: the checkpoint's layout must be this network's (efficientnet_b0 and
    # efficientnet_b0_os16 share theirs, which is what lets one fine-tune the other).
    try:
        model.load_state_dict(checkpoint.state_dict, strict=True)
    except RuntimeError as exc:  # torch's report of missing, unexpected or misshapen weights
        cause = str(exc).strip().splitlines()[0]
        raise ModelError(
            f"{path}: its weights ({checkpoint.arch}) do not fit model.arch ({cause})"
        ) from None
    training = checkpoint.extra.get("training")
    return {
        "checkpoint": str(path),
        "sha256": checkpoint.sha256,
        "arch": checkpoint.arch,
        "metrics": training.get("metrics") if isinstance(training, dict) else None,
    }


def _normalise(batch_u8: torch.Tensor, prep: Preprocessing) -> torch.Tensor:
    mean = torch.tensor(prep.mean).view(1, 3, 1, 1)
    std = torch.tensor(prep.std).view(1, 3, 1, 1)
    x = (batch_u8[:, :3].float() / prep.pixel_max - mean) / std
    return x.contiguous(memory_format=torch.channels_last)


@torch.inference_mode()
def predict_probabilities(
    model: nn.Module, images: torch.Tensor, prep: Preprocessing, batch_size: int = 64
) -> np.ndarray:
    model.eval()
    chunks = [
        torch.softmax(model(_normalise(images[i : i + batch_size], prep)), dim=1)
        for i in range(0, len(images), batch_size)
    ]
    return torch.cat(chunks).numpy()


def train(config: dict[str, Any], config_text: str) -> dict[str, Any]:
    t_start = time.time()
    tcfg, mcfg, dcfg, ocfg = config["training"], config["model"], config["data"], config["output"]
    torch.set_num_threads(tcfg["threads"])
    random.seed(tcfg["seed"])
    np.random.seed(tcfg["seed"])
    torch.manual_seed(tcfg["seed"])

    for key in ("checkpoint", "split", "metrics"):
        prepare_output_dir(Path(ocfg[key]).parent)
    samples = load_dataset(dcfg["root"])
    split = split_dataset(
        samples, seed=dcfg["split_seed"], fractions=tuple(dcfg["split_fractions"])
    )
    write_split(ocfg["split"], split)
    class_names = BTXRD_CLASSES
    prep = Preprocessing(image_size=(mcfg["image_size"], mcfg["image_size"]))

    def tensors(part: str) -> tuple[torch.Tensor, torch.Tensor]:
        items = split[part]
        labels = torch.tensor([class_names.index(s.label) for s in items])
        return cache_images(items, prep), labels

    x_train, y_train = tensors("train")
    x_val, y_val = tensors("val")
    x_test, y_test = tensors("test")
    _log(
        f"cached {len(x_train)}/{len(x_val)}/{len(x_test)} images in {time.time() - t_start:.0f} s"
    )

    arch = get_arch(mcfg["arch"])
    model = arch.build(len(class_names))
    arch = arch.locate(model, prep.image_size)
    head = arch.head(model)
    init = _initialise(model, mcfg.get("init_checkpoint"), class_names)
    if init is None:
        # torchvision initialises EfficientNet's head for 1000 classes (range
        # 1/sqrt(out_features)): with 3 outputs the first logits are in the tens and training
        # diverges; an all-zero head stalls instead (no gradient reaches the backbone). Small
        # random weights learn at once.
        torch.nn.init.normal_(head.weight, std=0.01)
        torch.nn.init.zeros_(head.bias)
    prepare_from_scratch(model, tcfg["dropout"], tcfg["stochastic_depth"], reset=init is None)
    model = model.to(memory_format=torch.channels_last)
    features: list[torch.Tensor] = []
    hook = arch.target_layer(model).register_forward_hook(
        lambda module, _inputs, out: features.append(out) if module.training else None
    )
    lesion_head = LesionHead(head.in_features).to(memory_format=torch.channels_last)
    weights = None
    if tcfg["class_weights"] == "sqrt_inverse":
        # Inverse square-root frequency: Malignant is rare (9 %) but must reach 90 % recall.
        counts = torch.bincount(y_train, minlength=len(class_names)).float()
        weights = (counts.sum() / counts).sqrt()
        weights = weights / weights.mean()
    loss_fn = nn.CrossEntropyLoss(weight=weights, label_smoothing=tcfg["label_smoothing"])
    optimiser = torch.optim.AdamW(
        [*model.parameters(), *lesion_head.parameters()],
        lr=tcfg["lr"],
        weight_decay=tcfg["weight_decay"],
    )
    steps_per_epoch = math.ceil(len(x_train) / tcfg["batch_size"])
    total_steps = steps_per_epoch * tcfg["epochs"]
    warmup = steps_per_epoch * tcfg["warmup_epochs"]
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser,
        lambda s: (
            (s + 1) / warmup
            if s < warmup  # warmup may be 0 steps
            else 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, total_steps - warmup)))
        ),
    )
    generator = torch.Generator().manual_seed(tcfg["seed"])
    # An exponential moving average of weights and BatchNorm statistics: from-scratch networks
    # on small data swing from epoch to epoch, and the average is what gets evaluated and saved.
    ema = torch.optim.swa_utils.AveragedModel(
        model,
        multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(tcfg["ema_decay"]),
        use_buffers=True,
    )

    best: dict[str, Any] = {"score": -1.0}
    history = []
    # An optional wall-clock cap. Off in the demo recipes: a cap makes the result depend on the
    # machine's speed (a slower machine would stop earlier and save a different model).
    budget = (tcfg.get("max_minutes") or math.inf) * 60
    for epoch in range(1, tcfg["epochs"] + 1):
        model.train()
        t_epoch = time.time()
        order = torch.randperm(len(x_train), generator=generator)
        running = running_class = 0.0
        starts = range(0, len(order), tcfg["batch_size"])
        for start in progress(starts, len(starts), f"epoch {epoch}", "batch"):
            idx = order[start : start + tcfg["batch_size"]]
            batch = augment_batch(x_train[idx], config["augment"], generator)
            features.clear()
            class_loss = loss_fn(model(_normalise(batch, prep)), y_train[idx])
            lesion_loss = (
                lesion_head.loss(features[0], batch[:, 3:], tcfg["lesion_pos_weight"])
                if tcfg["lesion_loss"]
                else torch.zeros(())
            )
            loss = class_loss + tcfg["lesion_loss"] * lesion_loss
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            # From-scratch EfficientNet spikes early; clipping keeps one bad batch from undoing it.
            torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg["clip_grad_norm"])
            optimiser.step()
            schedule.step()
            ema.update_parameters(model)
            running += loss.item() * len(idx)
            running_class += class_loss.item() * len(idx)
        val = classification_metrics(
            y_val.numpy(), predict_probabilities(ema.module, x_val, prep), class_names
        )
        # Select on the weakest class's recall first: the bar is per-class recall.
        score = val["accuracy"] + min(val["recall"].values())
        history.append(
            {
                "epoch": epoch,
                "loss": running / len(x_train),
                "class_loss": running_class / len(x_train),
                "val_accuracy": val["accuracy"],
                "val_min_recall": min(val["recall"].values()),
                "seconds": time.time() - t_epoch,
            }
        )
        _log(
            f"epoch {epoch}: loss {history[-1]['loss']:.4f} "
            f"(classes {history[-1]['class_loss']:.4f}) val acc {val['accuracy']:.4f} "
            f"min recall {history[-1]['val_min_recall']:.4f} ({history[-1]['seconds']:.0f} s)"
        )
        if score > best["score"]:
            best = {
                "score": score,
                "epoch": epoch,
                "state": {k: v.clone() for k, v in ema.module.state_dict().items()},
            }
        if time.time() - t_start > budget:
            _log(f"time budget of {tcfg['max_minutes']} min reached after epoch {epoch}")
            break

    hook.remove()
    model.load_state_dict(best["state"])
    test = classification_metrics(
        y_test.numpy(), predict_probabilities(model, x_test, prep), class_names
    )
    minutes = (time.time() - t_start) / 60
    record = {
        "best_epoch": best["epoch"],
        "training_minutes": round(minutes, 1),
        "history": history,
        "test": test,
        "test_size": len(x_test),
        "initialised_from": init,
        "torch": str(torch.__version__),
    }
    save_checkpoint(
        ocfg["checkpoint"],
        model.to(memory_format=torch.contiguous_format),
        arch=mcfg["arch"],
        class_names=class_names,
        image_size=mcfg["image_size"],
        mean=prep.mean,
        std=prep.std,
        epoch=best["epoch"],
        training={
            "recipe": config,
            "recipe_yaml": config_text,
            "metrics": record,
            "demo": True,
            "preprocessing": asdict(prep),
        },
    )
    write_text(ocfg["metrics"], json.dumps(record, indent=2) + "\n")
    _log(f"test accuracy {test['accuracy']:.4f}, recall {test['recall']}, {minutes:.1f} min")
    return record


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@click.command(context_settings=CONTEXT_SETTINGS)
@click.option(
    "--config",
    "config_path",
    default="configs/demo-train.yaml",
    show_default=True,
    type=click.Path(path_type=Path),
    help="Training recipe (YAML); `base: FILE` inside it names the recipe it builds on.",
)
@version_option(("torch", "torchvision"))
@debug_option
@documents_exit_codes
def main(config_path: Path, debug: bool) -> None:
    """Train a btxrd model from a recipe and save the checkpoint, split and metrics it names.

    The recipe is checked before anything runs: an unknown key or a wrong type is a config
    error naming the file and the key. Progress goes to stderr.

    Here exit code 1 means the dataset (data.root) cannot be read; 3 also covers an
    init_checkpoint that cannot be used.

    \b
    Example:
        python -m btxrd.export.train --config configs/demo-train.yaml
        python -m btxrd.export.train --config configs/demo-finetune.yaml
    """
    run_cli(lambda: _train(config_path), debug)


def _train(config_path: Path) -> int:
    train(*load_recipe(config_path))
    return 0


if __name__ == "__main__":
    main()
