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
from dataclasses import asdict, dataclass
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


@dataclass(frozen=True)
class _Data:
    """The split's images, cached once as uint8 tensors (RGB plus the lesion mask), and their
    labels as class indices."""

    split: dict[str, list[Sample]]
    prep: Preprocessing
    class_names: tuple[str, ...]
    x: dict[str, torch.Tensor]
    y: dict[str, torch.Tensor]


@dataclass
class _Loop:
    """What the epochs update: the optimiser and its schedule, the weight average that is
    evaluated and saved, and the generator of the shuffles and augmentations."""

    loss_fn: nn.Module
    optimiser: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler
    ema: torch.optim.swa_utils.AveragedModel
    generator: torch.Generator


def train(config: dict[str, Any], config_text: str) -> dict[str, Any]:
    """Train the recipe ``config`` (its text: ``config_text``, kept in the checkpoint): data,
    model, epochs, then the best epoch's weight average saved with its test metrics."""
    t_start = time.time()
    tcfg = config["training"]
    torch.set_num_threads(tcfg["threads"])
    random.seed(tcfg["seed"])
    np.random.seed(tcfg["seed"])
    torch.manual_seed(tcfg["seed"])
    data = _load_data(config, t_start)
    model, arch, head, init = _build_model(config["model"], tcfg, data)
    features: list[torch.Tensor] = []
    hook = arch.target_layer(model).register_forward_hook(
        lambda module, _inputs, out: features.append(out) if module.training else None
    )
    lesion_head = LesionHead(head.in_features).to(memory_format=torch.channels_last)
    loop = _loop(model, lesion_head, data, tcfg)
    best, history = _fit(config, data, model, lesion_head, loop, features, t_start)
    hook.remove()
    model.load_state_dict(best["state"])
    return _save(config, config_text, data, model, best, history, init, t_start)


def _load_data(config: dict[str, Any], t_start: float) -> _Data:
    """Read the dataset, write the split, cache every image of it."""
    dcfg, ocfg = config["data"], config["output"]
    for key in ("checkpoint", "split", "metrics"):
        prepare_output_dir(Path(ocfg[key]).parent)
    samples = load_dataset(dcfg["root"])
    split = split_dataset(
        samples, seed=dcfg["split_seed"], fractions=tuple(dcfg["split_fractions"])
    )
    write_split(ocfg["split"], split)
    class_names = BTXRD_CLASSES
    size = config["model"]["image_size"]
    prep = Preprocessing(image_size=(size, size))
    x, y = {}, {}
    for part in ("train", "val", "test"):
        y[part] = torch.tensor([class_names.index(s.label) for s in split[part]])
        x[part] = cache_images(split[part], prep)
    _log(
        f"cached {len(x['train'])}/{len(x['val'])}/{len(x['test'])} images in "
        f"{time.time() - t_start:.0f} s"
    )
    return _Data(split, prep, class_names, x, y)


def _build_model(
    mcfg: dict[str, Any], tcfg: dict[str, Any], data: _Data
) -> tuple[nn.Module, Any, nn.Linear, str | None]:
    """The network of ``mcfg``, located for the input size, initialised (from the recipe's
    checkpoint, or with a small random head) and set up for training from scratch."""
    arch = get_arch(mcfg["arch"])
    model = arch.build(len(data.class_names))
    arch = arch.locate(model, data.prep.image_size)
    head = arch.head(model)
    init = _initialise(model, mcfg.get("init_checkpoint"), data.class_names)
    if init is None:
        # torchvision initialises EfficientNet's head for 1000 classes (range
        # 1/sqrt(out_features)): with 3 outputs the first logits are in the tens and training
        # diverges; an all-zero head stalls instead (no gradient reaches the backbone). Small
        # random weights learn at once.
        torch.nn.init.normal_(head.weight, std=0.01)
        torch.nn.init.zeros_(head.bias)
    prepare_from_scratch(model, tcfg["dropout"], tcfg["stochastic_depth"], reset=init is None)
    return model.to(memory_format=torch.channels_last), arch, head, init


def _loop(model: nn.Module, lesion_head: LesionHead, data: _Data, tcfg: dict[str, Any]) -> _Loop:
    weights = None
    if tcfg["class_weights"] == "sqrt_inverse":
        # Inverse square-root frequency: Malignant is rare (9 %) but must reach 90 % recall.
        counts = torch.bincount(data.y["train"], minlength=len(data.class_names)).float()
        weights = (counts.sum() / counts).sqrt()
        weights = weights / weights.mean()
    loss_fn = nn.CrossEntropyLoss(weight=weights, label_smoothing=tcfg["label_smoothing"])
    optimiser = torch.optim.AdamW(
        [*model.parameters(), *lesion_head.parameters()],
        lr=tcfg["lr"],
        weight_decay=tcfg["weight_decay"],
    )
    steps_per_epoch = math.ceil(len(data.x["train"]) / tcfg["batch_size"])
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
    return _Loop(loss_fn, optimiser, schedule, ema, generator)


def _fit(
    config: dict[str, Any],
    data: _Data,
    model: nn.Module,
    lesion_head: LesionHead,
    loop: _Loop,
    features: list[torch.Tensor],
    t_start: float,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The epochs: each trains, then scores the weight average on the validation split; the
    best epoch's average is kept."""
    tcfg = config["training"]
    best: dict[str, Any] = {"score": -1.0}
    history = []
    # An optional wall-clock cap. Off in the demo recipes: a cap makes the result depend on the
    # machine's speed (a slower machine would stop earlier and save a different model).
    budget = (tcfg.get("max_minutes") or math.inf) * 60
    for epoch in range(1, tcfg["epochs"] + 1):
        t_epoch = time.time()
        running, running_class = _train_epoch(
            config, data, model, lesion_head, loop, features, epoch
        )
        val = classification_metrics(
            data.y["val"].numpy(),
            predict_probabilities(loop.ema.module, data.x["val"], data.prep),
            data.class_names,
        )
        n_train = len(data.x["train"])
        history.append(
            {
                "epoch": epoch,
                "loss": running / n_train,
                "class_loss": running_class / n_train,
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
        # Select on the weakest class's recall first: the bar is per-class recall.
        score = val["accuracy"] + min(val["recall"].values())
        if score > best["score"]:
            best = {
                "score": score,
                "epoch": epoch,
                "state": {k: v.clone() for k, v in loop.ema.module.state_dict().items()},
            }
        if time.time() - t_start > budget:
            _log(f"time budget of {tcfg['max_minutes']} min reached after epoch {epoch}")
            break
    return best, history


def _train_epoch(
    config: dict[str, Any],
    data: _Data,
    model: nn.Module,
    lesion_head: LesionHead,
    loop: _Loop,
    features: list[torch.Tensor],
    epoch: int,
) -> tuple[float, float]:
    """One pass over the training split; the summed loss and class loss (times batch size)."""
    tcfg = config["training"]
    x_train, y_train = data.x["train"], data.y["train"]
    model.train()
    order = torch.randperm(len(x_train), generator=loop.generator)
    running = running_class = 0.0
    starts = range(0, len(order), tcfg["batch_size"])
    for start in progress(starts, len(starts), f"epoch {epoch}", "batch"):
        idx = order[start : start + tcfg["batch_size"]]
        batch = augment_batch(x_train[idx], config["augment"], loop.generator)
        features.clear()
        class_loss = loop.loss_fn(model(_normalise(batch, data.prep)), y_train[idx])
        lesion_loss = (
            lesion_head.loss(features[0], batch[:, 3:], tcfg["lesion_pos_weight"])
            if tcfg["lesion_loss"]
            else torch.zeros(())
        )
        loss = class_loss + tcfg["lesion_loss"] * lesion_loss
        loop.optimiser.zero_grad(set_to_none=True)
        loss.backward()
        # From-scratch EfficientNet spikes early; clipping keeps one bad batch from undoing it.
        torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg["clip_grad_norm"])
        loop.optimiser.step()
        loop.schedule.step()
        loop.ema.update_parameters(model)
        running += loss.item() * len(idx)
        running_class += class_loss.item() * len(idx)
    return running, running_class


def _save(
    config: dict[str, Any],
    config_text: str,
    data: _Data,
    model: nn.Module,
    best: dict[str, Any],
    history: list[dict[str, Any]],
    init: str | None,
    t_start: float,
) -> dict[str, Any]:
    """Score the kept model on the test split, save the checkpoint and the metrics file."""
    mcfg, ocfg, prep = config["model"], config["output"], data.prep
    test = classification_metrics(
        data.y["test"].numpy(), predict_probabilities(model, data.x["test"], prep), data.class_names
    )
    minutes = (time.time() - t_start) / 60
    record = {
        "best_epoch": best["epoch"],
        "training_minutes": round(minutes, 1),
        "history": history,
        "test": test,
        "test_size": len(data.x["test"]),
        "initialised_from": init,
        "torch": str(torch.__version__),
    }
    save_checkpoint(
        ocfg["checkpoint"],
        model.to(memory_format=torch.contiguous_format),
        arch=mcfg["arch"],
        class_names=data.class_names,
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
