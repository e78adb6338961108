"""``btxrd-run`` end to end: exit codes, stdout (results only) and stderr (everything else)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from terminal import through_a_terminal

from btxrd.runtime.cli.run import main
from btxrd.runtime.model.classifier import Classifier

CLASSES = ["Normal", "Benign", "Malignant"]
# Keep the caller's environment out of the commands under test.
CLEAN_ENV = {"BTXRD_MODEL": None, "BTXRD_CONFIG": None}


def run(*args: object, env: dict | None = None):
    runner = CliRunner()
    return runner.invoke(main, [str(a) for a in args], env={**CLEAN_ENV, **(env or {})})


def _save(path: Path, pixels: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture
def images(phantom_images) -> list[Path]:
    return list(phantom_images.values())


@pytest.fixture
def bad_image(tmp_path) -> Path:
    path = tmp_path / "broken.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 10)
    return path


def _stderr_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


# --- human output ------------------------------------------------------------------------


def test_one_image_prints_one_row(tiny_onnx, images):
    expected = Classifier(tiny_onnx).predict(images[0])
    result = run("--model", tiny_onnx, images[0])
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["image", "prediction", "conf", *CLASSES]
    assert len(lines) == 2
    row = lines[1].split()
    assert row[0] == images[0].name
    assert row[1] == expected.prediction
    assert float(row[2]) == pytest.approx(expected.confidence, abs=5e-4)
    assert [float(v) for v in row[3:]] == pytest.approx(
        [expected.scores[c] for c in CLASSES], abs=5e-5
    )
    # notices (intended use, speed) go to stderr, never into the results
    assert "not for clinical use" in result.stderr
    assert "clinical" not in result.stdout


def test_several_images_in_order_with_a_summary(tiny_onnx, images):
    result = run("--model", tiny_onnx, *images)
    assert result.exit_code == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert [line.split()[0] for line in lines[1:-1]] == [p.name for p in images]
    assert lines[-1].startswith(f"{len(images)} classified: ")


def test_failed_input_is_an_error_row_and_counted(tiny_onnx, images, bad_image):
    result = run("--model", tiny_onnx, images[0], bad_image)
    assert result.exit_code == 1
    rows = {line.split()[0]: line for line in result.stdout.splitlines()[1:] if line.strip()}
    assert rows[bad_image.name].split()[1] == "ERROR"
    assert str(bad_image) in rows[bad_image.name]
    assert result.stdout.rstrip().endswith("1 failed")
    assert f"btxrd-run: error: {bad_image}" in result.stderr


def test_quiet_leaves_stderr_empty_on_success(tiny_onnx, images):
    result = run("--model", tiny_onnx, "--quiet", *images)
    assert result.exit_code == 0
    assert result.stderr == ""
    assert len(result.stdout.splitlines()) >= len(images) + 1


# --- machine-readable output ---------------------------------------------------------------


def test_json_document_with_model_identity_and_a_record_per_input(tiny_onnx, images, bad_image):
    inputs = [images[0], bad_image, *images[1:]]
    result = run("--model", tiny_onnx, "--json", *inputs)
    assert result.exit_code == 1  # one input failed
    document = json.loads(result.stdout)  # stdout is exactly one JSON document
    assert document["schema_version"] == 3
    model = document["model"]
    assert model["sha256"] == Classifier(tiny_onnx).info.sha256
    assert model["file"] == tiny_onnx.name
    assert model["class_names"] == CLASSES
    assert "not for clinical use" in model["intended_use"].lower()
    records = document["results"]
    assert [r["path"] for r in records] == [str(p) for p in inputs]
    failed = records[1]
    assert failed["prediction"] is None and failed["confidence"] is None
    assert str(bad_image) in failed["error"]
    for record in records[:1] + records[2:]:
        assert record["error"] is None
        assert record["prediction"] in CLASSES
        assert sum(record["scores"].values()) == pytest.approx(1.0, abs=1e-9)
    summary = document["summary"]
    assert (summary["inputs"], summary["classified"], summary["failed"]) == (5, 4, 1)
    error_lines = [line for line in _stderr_lines(result) if "error" in line]
    assert len(error_lines) == 1 and str(bad_image) in error_lines[0]


def test_jsonl_one_line_per_input_in_order(tiny_onnx, images, bad_image):
    inputs = [*images[:2], bad_image, *images[2:]]
    result = run("--model", tiny_onnx, "--jsonl", *inputs)
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert len(lines) == len(inputs)
    records = [json.loads(line) for line in lines]
    assert [r["path"] for r in records] == [str(p) for p in inputs]
    assert [r["error"] is not None for r in records] == [False, False, True, False, False]
    sha = Classifier(tiny_onnx).info.sha256
    assert all(r["model_sha256"] == sha for r in records)


def test_csv_table(tiny_onnx, images, bad_image):
    inputs = [*images, bad_image]
    result = run("--model", tiny_onnx, "--csv", *inputs)
    assert result.exit_code == 1
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert list(rows[0]) == [
        *("image_name", "path", "path_escaped", "prediction", "confidence", *CLASSES),
        *("ood_score", "in_distribution", "error"),
    ]
    assert [r["path"] for r in rows] == [str(p) for p in inputs]
    assert {r["path_escaped"] for r in rows} == {"false"}
    for row in rows[:-1]:
        assert row["prediction"] in CLASSES and row["error"] == ""
        assert sum(float(row[c]) for c in CLASSES) == pytest.approx(1.0, abs=1e-5)
    assert rows[-1]["prediction"] == "" and rows[-1]["confidence"] == ""
    assert str(bad_image) in rows[-1]["error"]


@pytest.mark.parametrize("fmt", ["--json", "--csv", "--jsonl"])
def test_output_file_replaces_the_old_one_and_leaves_no_temp_files(
    tiny_onnx, images, tmp_path, fmt
):
    out_dir = tmp_path / "results"
    out_dir.mkdir()
    output = out_dir / "results.out"
    output.write_text("stale results from an earlier run\n", encoding="utf-8")
    result = run("--model", tiny_onnx, fmt, "--output", output, *images)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    assert [p.name for p in out_dir.iterdir()] == ["results.out"]
    text = output.read_text(encoding="utf-8")
    assert "stale" not in text
    if fmt == "--json":
        assert len(json.loads(text)["results"]) == len(images)
    elif fmt == "--jsonl":
        assert len([json.loads(line) for line in text.splitlines()]) == len(images)
    else:
        assert len(list(csv.DictReader(io.StringIO(text)))) == len(images)


def test_json_stdout_stays_parseable_while_notices_go_to_stderr(tiny_onnx, images):
    result = run("--model", tiny_onnx, "--json", *images)
    assert result.exit_code == 0
    assert json.loads(result.stdout)["summary"]["classified"] == len(images)
    assert "not for clinical use" in result.stderr
    assert "speed:" in result.stderr


# --- folders ---------------------------------------------------------------------------------


@pytest.fixture
def folder(tmp_path, make_phantom) -> Path:
    root = tmp_path / "scans"
    for i, name in enumerate(["b.png", "a.png", "c.jpg", "sub/d.png", "sub/deeper/e.tif"]):
        _save(root / name, make_phantom(64, 48, seed=i))
    _save(root / ".hidden.png", make_phantom(64, 48, seed=9))
    _save(root / ".cache/f.png", make_phantom(64, 48, seed=10))
    (root / "notes.txt").write_text("not an image", encoding="utf-8")
    return root


def _paths(result, base: Path) -> list[str]:
    return [
        Path(json.loads(line)["path"]).relative_to(base).as_posix()
        for line in result.stdout.splitlines()
    ]


def test_dir_is_sorted_and_skips_hidden_and_non_image_files(tiny_onnx, folder):
    result = run("--model", tiny_onnx, "--jsonl", "--dir", folder)
    assert result.exit_code == 0, result.stderr
    assert _paths(result, folder) == ["a.png", "b.png", "c.jpg"]


def test_dir_recursive_includes_sub_folders_but_not_hidden_ones(tiny_onnx, folder):
    result = run("--model", tiny_onnx, "--jsonl", "--dir", folder, "--recursive")
    assert result.exit_code == 0, result.stderr
    assert _paths(result, folder) == ["a.png", "b.png", "c.jpg", "sub/d.png", "sub/deeper/e.tif"]


def test_dir_recursive_terminates_on_a_symlink_loop(tiny_onnx, folder):
    (folder / "sub" / "loop").symlink_to(folder, target_is_directory=True)
    (folder / "sub" / "deeper" / "up").symlink_to(folder / "sub", target_is_directory=True)
    result = run("--model", tiny_onnx, "--jsonl", "--dir", folder, "--recursive")
    assert result.exit_code == 0, result.stderr
    assert _paths(result, folder) == ["a.png", "b.png", "c.jpg", "sub/d.png", "sub/deeper/e.tif"]


def test_empty_folder_exits_1_with_a_message(tiny_onnx, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here", encoding="utf-8")
    result = run("--model", tiny_onnx, "--dir", empty)
    assert result.exit_code == 1
    assert result.stdout == ""
    (line,) = _stderr_lines(result)
    assert str(empty) in line and "no image files found" in line and "--recursive" in line


def test_missing_folder_is_a_usage_error(tiny_onnx, tmp_path):
    result = run("--model", tiny_onnx, "--dir", tmp_path / "nowhere")
    assert result.exit_code == 2
    assert "no such folder" in result.stderr
    assert result.stdout == ""


# --- usage and model errors ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["a.png", "--dir", "."], "not both", id="images-and-dir"),
        pytest.param([], "nothing to classify", id="no-inputs"),
        pytest.param(["a.png", "--json", "--csv"], "choose one of", id="two-formats"),
        pytest.param(
            ["a.png", "--output", "out.txt"], "choose a format", id="output-of-unknown-format"
        ),
        pytest.param(
            ["a.png", "--json", "--resume"], "--jsonl --output", id="resume-without-jsonl-output"
        ),
        pytest.param(["a.png", "--cam-class", "Benign"], "need --cam", id="cam-class-no-cam"),
    ],
)
def test_usage_errors_exit_2(tmp_path, args, message):
    result = run("--model", tmp_path / "unused.onnx", *args)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert message in result.stderr
    assert "internal error" not in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["a.png", "--threads", "0"], id="threads-out-of-range"),
        pytest.param(["a.png", "--batch-size", "x"], id="batch-size-not-a-number"),
        pytest.param(["a.png", "--no-such-flag"], id="unknown-flag"),
    ],
)
def test_option_parsing_errors_exit_2(tmp_path, args):
    result = run("--model", tmp_path / "unused.onnx", *args)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "Usage:" in result.stderr


def test_missing_model_exits_3_with_one_line_and_no_traceback(tmp_path, images):
    missing = tmp_path / "models" / "absent.onnx"
    result = run("--model", missing, *images)
    assert result.exit_code == 3
    assert result.stdout == ""
    (line,) = _stderr_lines(result)
    assert line.startswith("btxrd-run: error: ")
    assert str(missing) in line and "not found" in line
    assert "Traceback" not in result.stderr


def test_model_from_environment_variable(tiny_onnx, images):
    result = run(images[0], "--json", env={"BTXRD_MODEL": str(tiny_onnx)})
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["model"]["file"] == tiny_onnx.name


def test_debug_shows_the_traceback(tmp_path, images):
    result = run("--model", tmp_path / "absent.onnx", "--debug", *images)
    assert result.exit_code == 3
    assert "Traceback (most recent call last)" in result.stderr
    assert "ModelError" in result.stderr
    assert result.stdout == ""


def test_help_documents_every_exit_code():
    result = run("--help")
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())
    for code, meaning in [
        ("0", "success"),
        ("1", "some input failed"),
        ("2", "usage"),
        ("3", "model, checkpoint or output unusable"),
        ("130", "interrupted"),
    ]:
        assert f"{code} {meaning}" in text
    assert "Example" in text


# --- info and selftest --------------------------------------------------------------------


def test_info_prints_the_model_contract_as_json(tiny_onnx):
    result = run("--model", tiny_onnx, "--info", "--json")
    assert result.exit_code == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["class_names"] == CLASSES
    assert info["preprocessing"]["image_size"] == [64, 64]
    assert info["preprocessing"]["mean"] == [0.485, 0.456, 0.406]
    assert info["has_cam"] is True
    assert info["arch"] == "resnet18"
    assert info["provenance"]["checkpoint_file"] == "tiny.pt"


def test_selftest_passes_on_this_machine(tiny_onnx):
    result = run("--model", tiny_onnx, "--selftest")
    assert result.exit_code == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[-1] == "selftest passed"
    assert {line.split(":")[0] for line in lines[:-1]} == {"bar", "rings", "ramp"}
    assert all(" ok " in line for line in lines[:-1])


def test_selftest_fails_when_the_model_does_not_reproduce_its_reference(tiny_model_proto, tmp_path):
    onnx = pytest.importorskip("onnx")
    changed = onnx.ModelProto()
    changed.CopyFrom(tiny_model_proto)
    for entry in changed.metadata_props:
        if entry.key == "btxrd.reference_scores":
            scores = json.loads(entry.value)
            scores["images"]["bar"] = [1 / 3, 1 / 3, 1 / 3]
            entry.value = json.dumps(scores)
    path = tmp_path / "tampered.onnx"
    path.write_bytes(changed.SerializeToString())
    result = run("--model", path, "--selftest")
    assert result.exit_code == 1
    assert "bar: DIFFERS" in result.stdout
    assert "selftest FAILED" in result.stdout


# --- CAM overlays ---------------------------------------------------------------------------


def test_cam_writes_rgb_overlays_at_the_original_size(tiny_onnx, images, tmp_path):
    """The overlay at the radiograph's own size, its caption and colour scale below it, and
    the facts as PNG text."""
    cams = tmp_path / "cams"
    result = run("--model", tiny_onnx, "--cam", "--cam-dir", cams, "--jsonl", *images)
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in cams.iterdir()) == sorted(f"{p.stem}_cam.png" for p in images)
    records = {Path(r["path"]).stem: r for r in map(json.loads, result.stdout.splitlines())}
    for path in images:
        with Image.open(path) as original, Image.open(cams / f"{path.stem}_cam.png") as overlay:
            assert overlay.mode == "RGB"
            assert overlay.width == original.width and overlay.height > original.height
            assert np.asarray(overlay)[: original.height].std() > 0
            record = records[path.stem]
            assert overlay.text["btxrd.class"] == record["prediction"]
            assert float(overlay.text["btxrd.probability"]) == pytest.approx(record["confidence"])
            assert overlay.text["btxrd.model_sha256"] == record["model_sha256"]
            assert "not for clinical use" in overlay.text["btxrd.intended_use"].lower()
    notes = [json.loads(line)["notes"] for line in result.stdout.splitlines()]
    assert all(any(n.startswith("cam: ") for n in record) for record in notes)


def test_cam_same_stem_in_two_sub_folders_gives_two_overlays(tiny_onnx, tmp_path, make_phantom):
    root = tmp_path / "scans"
    _save(root / "left" / "knee.png", make_phantom(64, 64, seed=1))
    _save(root / "right" / "knee.png", make_phantom(80, 64, seed=2))
    cams = tmp_path / "cams"
    result = run(
        "--model", tiny_onnx, "--cam", "--cam-dir", cams, "--dir", root, "--recursive", "--quiet"
    )
    assert result.exit_code == 0, result.stderr
    written = sorted(cams.iterdir())
    assert len(written) == 2
    sources = set()
    for path in written:
        with Image.open(path) as overlay:
            sources.add(overlay.text["btxrd.image"])
    assert sources == {str(root / "left" / "knee.png"), str(root / "right" / "knee.png")}


def test_cam_same_stem_given_as_files_gives_two_overlays(tiny_onnx, tmp_path, make_phantom):
    first = _save(tmp_path / "a" / "scan.png", make_phantom(64, 64, seed=1))
    second = _save(tmp_path / "b" / "scan.png", make_phantom(64, 64, seed=2))
    cams = tmp_path / "cams"
    result = run("--model", tiny_onnx, "--cam", "--cam-dir", cams, "--quiet", first, second)
    assert result.exit_code == 0, result.stderr
    assert len(list(cams.iterdir())) == 2


def test_cam_folder_inside_the_input_folder_is_not_classified(tiny_onnx, folder):
    cams = folder / "overlays"
    args = ("--model", tiny_onnx, "--cam", "--cam-dir", cams, "--dir", folder, "-r", "--jsonl")
    first = run(*args)
    second = run(*args)
    assert first.exit_code == 0 and second.exit_code == 0, second.stderr
    assert len(second.stdout.splitlines()) == len(first.stdout.splitlines()) == 5


def test_cam_class_names_the_explained_class(tiny_onnx, images, tmp_path):
    cams = tmp_path / "c"
    result = run(
        "--model",
        tiny_onnx,
        "--cam",
        "--cam-dir",
        cams,
        "--cam-class",
        "Malignant",
        "--jsonl",
        images[0],
    )
    assert result.exit_code == 0, result.stderr
    (record,) = [json.loads(line) for line in result.stdout.splitlines()]
    overlay = cams / f"{images[0].stem}_cam.png"
    assert f"cam: {overlay} (Malignant)" in record["notes"]
    assert overlay.is_file()


def test_cam_notes_agree_with_the_files_written(tiny_onnx, images, tmp_path):
    # With the tiny model some class maps are all zero after the ReLU: those get a note
    # and no overlay; the others get an overlay and a note naming it.
    for name in CLASSES:
        cams = tmp_path / name
        result = run(
            "--model",
            tiny_onnx,
            "--cam",
            "--cam-dir",
            cams,
            "--cam-class",
            name,
            "--jsonl",
            *images,
        )
        assert result.exit_code == 0, result.stderr
        for path, line in zip(images, result.stdout.splitlines(), strict=True):
            notes = json.loads(line)["notes"]
            overlay = cams / f"{path.stem}_cam.png"
            if overlay.exists():
                assert f"cam: {overlay} ({name})" in notes
            else:
                assert f"CAM for {name} is flat (no positive evidence); no overlay written" in notes


def test_cam_class_not_in_the_model_exits_2(tiny_onnx, images, tmp_path):
    result = run(
        "--model",
        tiny_onnx,
        "--cam",
        "--cam-dir",
        tmp_path / "c",
        "--cam-class",
        "Tumour",
        images[0],
    )
    assert result.exit_code == 2
    assert "Tumour" in result.stderr and "Malignant" in result.stderr
    assert result.stdout == ""


# --- resume ---------------------------------------------------------------------------------


def test_resume_skips_inputs_already_recorded(tiny_onnx, images, tmp_path):
    output = tmp_path / "run.jsonl"
    first = run("--model", tiny_onnx, "--jsonl", "--output", output, *images[:2])
    assert first.exit_code == 0, first.stderr
    before = output.read_bytes()
    second = run("--model", tiny_onnx, "--jsonl", "--output", output, "--resume", *images)
    assert second.exit_code == 0, second.stderr
    assert f"resuming: 2 of {len(images)}" in second.stderr
    after = output.read_bytes()
    assert after.startswith(before)  # earlier lines untouched
    paths = [json.loads(line)["path"] for line in after.decode().splitlines()]
    assert paths == [str(p) for p in images]  # each input exactly once, in order


def test_resume_after_a_cut_line_reruns_that_input(tiny_onnx, images, tmp_path):
    output = tmp_path / "run.jsonl"
    assert run("--model", tiny_onnx, "--jsonl", "--output", output, *images[:2]).exit_code == 0
    lines = output.read_text(encoding="utf-8").splitlines()
    output.write_text(lines[0] + "\n" + lines[1][:20], encoding="utf-8")  # interrupted mid-line
    result = run("--model", tiny_onnx, "--jsonl", "--output", output, "--resume", *images[:2])
    assert result.exit_code == 0, result.stderr
    records = []
    for line in output.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    assert sorted(r["path"] for r in records) == sorted(str(p) for p in images[:2])


# --- the installed entry point ------------------------------------------------------------


def _entry_point() -> Path:
    path = Path(sys.executable).parent / "btxrd-run"
    if not path.exists():
        pytest.skip("btxrd-run is not installed in this environment")
    return path


def _subprocess_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("BTXRD_MODEL", "BTXRD_CONFIG")}
    return env


def test_entry_point_json_run(tiny_onnx, images):
    completed = subprocess.run(
        [_entry_point(), "--model", tiny_onnx, "--json", *images],
        capture_output=True,
        text=True,
        timeout=60,
        env=_subprocess_env(),
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    document = json.loads(completed.stdout)
    assert [r["path"] for r in document["results"]] == [str(p) for p in images]
    assert "not for clinical use" in completed.stderr


def test_entry_point_missing_model_exits_3(tmp_path):
    completed = subprocess.run(
        [_entry_point(), "--model", tmp_path / "absent.onnx", tmp_path / "x.png"],
        capture_output=True,
        text=True,
        timeout=60,
        env=_subprocess_env(),
        check=False,
    )
    assert completed.returncode == 3
    assert completed.stdout == ""
    assert completed.stderr.count("\n") == 1
    assert completed.stderr.startswith("btxrd-run: error: ")
    assert "Traceback" not in completed.stderr


def test_default_model_is_the_shipped_demo_from_any_folder(demo_onnx, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not the repo root: the demo model is found via the package
    result = run("--info", "--json")
    assert result.exit_code == 0, result.stderr
    info = json.loads(result.stdout)
    # From a checkout this is models/; from a plain install, the package's copy of the same file.
    assert info["sha256"] == hashlib.sha256(demo_onnx.read_bytes()).hexdigest()
    assert info["provenance"]["demo_model"] is True
    assert "DEMO MODEL" in info["intended_use"]
    selftest = run("--selftest")
    assert selftest.exit_code == 0, selftest.stdout


# --- progress bar: on a terminal only --------------------------------------------------------


def _through_a_terminal(*args: object, stdout_too: bool = False) -> tuple[int, str, str]:
    """btxrd-run with stderr (and with ``stdout_too`` stdout as well) on a pseudo-terminal."""
    env = {k: v for k, v in os.environ.items() if k not in CLEAN_ENV}
    command = [sys.executable, "-m", "btxrd.runtime.cli.run", *map(str, args)]
    return through_a_terminal(command, env=env, stdout_too=stdout_too, timeout=60)


def test_progress_bar_on_a_terminal_and_never_in_the_results(tiny_onnx, images):
    code, stdout, terminal = _through_a_terminal("--model", tiny_onnx, "--jsonl", *images)
    assert code == 0
    assert "classifying" in terminal and f"/{len(images)} [" in terminal  # count of total
    assert "image/s" in terminal  # tqdm's rate
    assert len(stdout.splitlines()) == len(images)  # stdout holds the records only
    quiet_code, _, quiet_terminal = _through_a_terminal(
        "--model", tiny_onnx, "--jsonl", "--quiet", *images
    )
    assert quiet_code == 0 and quiet_terminal == ""


@pytest.mark.parametrize("suffix", [".json", ".jsonl", ".csv"])
def test_output_format_follows_the_file_suffix(tiny_onnx, phantom_images, tmp_path, suffix):
    out = tmp_path / f"results{suffix}"
    image = phantom_images["gray8_png"]
    result = run("--model", tiny_onnx, "--quiet", "-o", out, image)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    text = out.read_text(encoding="utf-8")
    if suffix == ".json":
        assert json.loads(text)["results"][0]["path"] == str(image)
    elif suffix == ".jsonl":
        assert json.loads(text.splitlines()[0])["path"] == str(image)
    else:
        assert text.splitlines()[1].split(",")[1] == str(image)


def test_bar_and_table_never_share_a_line_on_a_terminal(tiny_onnx, images):
    code, _, screen = _through_a_terminal(
        "--model", tiny_onnx, "--batch-size", 1, *images, stdout_too=True
    )
    assert code == 0
    assert "classifying" in screen  # the bar was drawn
    # What a reader sees on each line is what follows its last carriage return.
    visible = [line.split("\r")[-1] for line in screen.replace("\r\n", "\n").split("\n")]
    rows = [line for line in visible if line.startswith(tuple(p.name for p in images))]
    assert len(rows) == len(images)  # every row on a line of its own
    for line in visible:
        assert not ("classifying" in line and any(p.name in line for p in images)), line


def test_each_output_is_announced_on_stderr(tiny_onnx, images, tmp_path):
    out, cams = tmp_path / "results.jsonl", tmp_path / "cams"
    result = run("--model", tiny_onnx, "-o", out, "--cam", "--cam-dir", cams, *images)
    assert result.exit_code == 0, result.stderr
    assert f"wrote {len(images)} records to {out}" in result.stderr
    assert f"wrote {len(images)} overlays to {cams}/" in result.stderr
    one = run("--model", tiny_onnx, "-o", tmp_path / "one.json", images[0])
    assert "wrote 1 record to" in one.stderr and "(1 image classified in" in one.stderr


def test_version_names_the_model_and_its_sha256(tiny_onnx):
    result = run("--model", tiny_onnx, "--version")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("btxrd ") and lines[1].startswith("onnxruntime ")
    digest = hashlib.sha256(tiny_onnx.read_bytes()).hexdigest()
    assert lines[2] == f"model {tiny_onnx} (sha256 {digest})"
