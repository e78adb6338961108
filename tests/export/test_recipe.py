"""Training recipes: the shipped ones validate, and every kind of fault is one line naming the
file and the key, through the real training command (exit 2), before anything trains."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

torch = pytest.importorskip("torch")

from btxrd.export.recipe import RECIPE, load_recipe  # noqa: E402
from btxrd.export.train import main as train_main  # noqa: E402
from btxrd.runtime.errors import ConfigError  # noqa: E402

pytestmark = pytest.mark.torch
ROOT = Path(__file__).resolve().parents[2]
DEMO = yaml.safe_load((ROOT / "configs/demo-train.yaml").read_text())


@pytest.mark.parametrize("name", ["demo-train.yaml", "demo-finetune.yaml"])
def test_shipped_recipes_validate(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # a recipe's base: is relative to the repository
    recipe, text = load_recipe(f"configs/{name}")
    assert set(recipe) == set(RECIPE.keys or {})
    assert (ROOT / "configs" / name).read_text() in text


def test_every_key_of_the_demo_recipe_is_known() -> None:
    """The schema and the demo recipe, which sets every key training reads, agree."""

    def keys(node: dict[str, Any], prefix: str = "") -> set[str]:
        out = set()
        for key, value in node.items():
            out.add(prefix + key)
            if isinstance(value, dict):
                out |= keys(value, f"{prefix}{key}.")
        return out

    def schema(spec, prefix: str = "") -> set[str]:
        out = set()
        for key, child in (spec.keys or {}).items():
            out.add(prefix + key)
            if child.kind == "section":
                out |= schema(child, f"{prefix}{key}.")
        return out

    known = schema(RECIPE)
    assert keys(DEMO) <= known
    optional_here = {
        "model.init_checkpoint",
        "data.generator.min_size",
        "data.generator.proportions",
    }
    assert known - keys(DEMO) == optional_here


def _write(tmp_path: Path, change, name: str = "recipe.yaml") -> Path:
    recipe = copy.deepcopy(DEMO)
    change(recipe)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(recipe))
    return path


def _set(section: str, key: str, value: Any):
    return lambda recipe: recipe[section].__setitem__(key, value)


@pytest.mark.parametrize(
    ("change", "key", "cause"),
    [
        (lambda r: r.__setitem__("trainig", {"lr": 0.1}), "trainig", "unknown key"),
        (_set("training", "lrr", 0.1), "training.lrr", "unknown key"),
        (_set("augment", "hflipp", 0.5), "augment.hflipp", "unknown key"),
        (lambda r: r["data"]["generator"].__setitem__("sed", 1), "data.generator.sed", "unknown"),
        (_set("training", "epochs", "ten"), "training.epochs", "expected a whole number"),
        (_set("training", "epochs", 16.0), "training.epochs", "expected a whole number"),
        (_set("training", "epochs", True), "training.epochs", "expected a whole number"),
        (_set("training", "lr", "fast"), "training.lr", "expected a number"),
        (_set("training", "max_minutes", "an hour"), "training.max_minutes", "or null"),
        (_set("model", "arch", 18), "model.arch", "expected text"),
        (_set("augment", "scale", [0.9]), "augment.scale", "a list of 2 numbers"),
        (_set("data", "split_fractions", "0.7,0.15,0.15"), "data.split_fractions", "list of 3"),
        (_set("training", "class_weights", "sqrt_invers"), "training.class_weights", "one of"),
        (lambda r: r.__setitem__("output", ["m.pt"]), "output", "expected a section"),
        (lambda r: r["training"].pop("lr"), "training.lr", "missing"),
        (_set("training", "epochs", 0), "training.epochs", "must be at least 1, got 0"),
        (_set("model", "image_size", 4), "model.image_size", "must be 8 to 4096"),
        (_set("augment", "hflip", 1.5), "augment.hflip", "must be 0 to 1"),
        (_set("data", "split_fractions", [0.7, 0.2, 0.2]), "data.split_fractions", "add up to 1"),
        (_set("data", "split_fractions", [1.2, -0.1, -0.1]), "data.split_fractions", "at least 0"),
        (_set("model", "arch", "timm/hf-hub:someone/model"), "model.arch", "not a plain timm"),
        (_set("model", "arch", "resnet9000"), "model.arch", "unknown architecture"),
    ],
    ids=[
        "unknown-section",
        "unknown-key",
        "unknown-augment-key",
        "unknown-nested-key",
        "text-for-int",
        "float-for-int",
        "bool-for-int",
        "text-for-number",
        "text-for-nullable",
        "int-for-text",
        "short-list",
        "text-for-list",
        "unknown-choice",
        "list-for-section",
        "missing-key",
        "no-epochs",
        "tiny-image",
        "probability-above-1",
        "fractions-sum",
        "negative-fraction",
        "hub-arch",
        "unknown-arch",
    ],
)
def test_a_faulty_recipe_is_one_line_naming_file_and_key(
    tmp_path: Path, change, key: str, cause: str
) -> None:
    path = _write(tmp_path, change)
    result = CliRunner().invoke(train_main, ["--config", str(path)])
    assert result.exit_code == 2, result.stderr
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert "Traceback" not in result.stderr and "internal error" not in line
    assert f"error: {path}: {key}: " in line and cause in line


def test_a_base_merges_first_and_the_fault_names_the_file_that_set_it(tmp_path: Path) -> None:
    base = _write(tmp_path, _set("training", "epochs", "many"), "base.yaml")
    child = tmp_path / "child.yaml"
    child.write_text(f"base: {base}\ntraining:\n  lr: 0.1\n")
    with pytest.raises(ConfigError, match=rf"^{base}: training\.epochs: expected a whole number"):
        load_recipe(child)
    # ...and the child's fix is taken: merged before validation.
    child.write_text(f"base: {base}\ntraining:\n  epochs: 2\n")
    recipe, _ = load_recipe(child)
    assert recipe["training"]["epochs"] == 2 and recipe["training"]["lr"] == DEMO["training"]["lr"]
    child.write_text(f"base: {base}\ntraining:\n  epochs: 2\n  lrr: 0.1\n")
    with pytest.raises(ConfigError, match=rf"^{child}: training\.lrr: unknown key"):
        load_recipe(child)


@pytest.mark.parametrize(
    ("text", "cause"),
    [
        ("training: [\n", "not valid YAML"),
        ("- a list\n", "a recipe is a YAML mapping"),
        ("base: [1]\n", "base: expected the path of another recipe"),
        ("base: nowhere.yaml\n", "nowhere.yaml (base of"),
        ("base: recipe.yaml\n", "in a loop"),
    ],
    ids=["yaml", "not-a-mapping", "base-not-a-path", "missing-base", "base-loop"],
)
def test_unreadable_recipes_are_config_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, cause: str
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("recipe.yaml").write_text(text)
    result = CliRunner().invoke(train_main, ["--config", "recipe.yaml"])
    assert result.exit_code == 2
    (line,) = result.stderr.splitlines()
    assert "recipe.yaml" in line and cause in line


def test_a_missing_recipe_is_a_config_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(train_main, ["--config", str(tmp_path / "none.yaml")])
    assert result.exit_code == 2
    assert "recipe not found" in result.stderr
