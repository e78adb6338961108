"""Copy a few held-out radiographs of each class, with their annotations, into models/samples.

They are what `make run` classifies and what export's parity check derives its image set from.
Chosen deterministically from the test split (first by image id), never from training data.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from btxrd.export.data.dataset import BTXRD_CLASSES, load_dataset, read_split


def copy_samples(data: Path, split_file: Path, out: Path, per_class: int = 2) -> list[Path]:
    samples = {s.image_id: s for s in load_dataset(data)}
    test_ids = read_split(split_file)["test"]
    chosen = []
    for label in BTXRD_CLASSES:
        of_class = sorted(i for i in test_ids if samples[i].label == label)
        chosen += [samples[i] for i in of_class[:per_class]]
    out.mkdir(parents=True, exist_ok=True)
    (out / "Annotations").mkdir(exist_ok=True)
    written = []
    for sample in chosen:
        target = out / sample.image_path.name
        shutil.copyfile(sample.image_path, target)
        written.append(target)
        if sample.annotation_path is not None:
            shutil.copyfile(
                sample.annotation_path, out / "Annotations" / sample.annotation_path.name
            )
    lines = ["image_id,label"] + [f"{s.image_path.name},{s.label}" for s in chosen]
    (out / "labels.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=Path("data/synthetic"))
    parser.add_argument("--split", type=Path, default=Path("models/btxrd-demo.split.json"))
    parser.add_argument("--out", type=Path, default=Path("models/samples"))
    parser.add_argument("--per-class", type=int, default=2)
    args = parser.parse_args(argv)
    for path in copy_samples(args.data, args.split, args.out, args.per_class):
        print(path)


if __name__ == "__main__":
    main()
