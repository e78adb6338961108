# The front door. `make run` and `make test` are the README's two commands.
PYTHON ?= python3
VENV_RUN := .venv-run
VENV := .venv
CHECKPOINT ?= models/btxrd-demo.pt
OUT ?= models/btxrd-demo.onnx
DATA ?= data/synthetic
# What `make export` fits calibration and the out-of-distribution gate on (the demo model's
# data and split); CALIBRATION_DATA= exports without them.
CALIBRATION_DATA ?= $(DATA)
SPLIT ?= models/btxrd-demo.split.json
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: run test chromium axe dicom-tools test-runtime test-wheel export trust demo-model dataset gradcam bench bench-serve bench-dicom-node screenshot fuzz lint clean

# Runtime-only environment: onnxruntime, numpy, pillow, click, pyyaml. No torch.
$(VENV_RUN)/.stamp: pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV_RUN)
	$(VENV_RUN)/bin/pip install -q .
	touch $@

# Full environment with every extra; built once, reused while pyproject.toml is unchanged.
$(VENV)/.stamp: pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -e '.[export,explain,timm,dicom,dicom-node,serve,ray,dev]'
	touch $@

run: $(VENV_RUN)/.stamp
	$(VENV_RUN)/bin/btxrd-run --dir models/samples
	@echo ""
	@echo "Run it yourself: $(VENV_RUN)/bin/btxrd-run YOUR_IMAGE.png  (or: source $(VENV_RUN)/bin/activate)"
	@echo "  heatmaps: --cam   JSON: --json -o results.json   a folder: --dir FOLDER   all: --help"
	@echo "What the demo model is and is not (not for clinical use): models/README.md"

test: $(VENV)/.stamp chromium axe dicom-tools
	$(VENV)/bin/python -m pytest --durations=15

# Headless Chromium (Debian) for the test that opens the explain report; the test skips with a
# reason where it cannot be installed (no root, no apt).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  (apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium) >/dev/null 2>&1 \
	  || echo "note: chromium could not be installed; the report-render test will be skipped"; }

# Real DICOM software for the DICOM tests (Debian): dcmtk (storescu, echoscu, img2dcm, the
# compressors, dcmj2pnm), Orthanc as the PACS and dicom3tools' dciodvfy; each test that needs one
# skips with a reason where apt cannot install it (no root, no apt).
DICOM_TOOLS := storescu:dcmtk Orthanc:orthanc dciodvfy:dicom3tools
dicom-tools:
	@missing=""; for pair in $(DICOM_TOOLS); do \
	  command -v $${pair%%:*} >/dev/null 2>&1 || missing="$$missing $${pair#*:}"; done; \
	[ -z "$$missing" ] || { \
	  (apt-get install -y -qq --no-install-recommends $$missing || \
	   (apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing)) \
	  >/dev/null 2>&1 || echo "note: could not install$$missing; their tests will be skipped"; }

# axe-core (npm) for the page's accessibility test, in .cache/ (not in git); the test skips with
# a reason where npm cannot install it.
AXE := .cache/axe/node_modules/axe-core/axe.min.js
axe: $(AXE)
$(AXE):
	@command -v npm >/dev/null 2>&1 || { \
	  (apt-get update -qq && apt-get install -y -qq --no-install-recommends npm) >/dev/null 2>&1; }
	@mkdir -p .cache/axe && npm install --prefix .cache/axe --no-save --no-audit --no-fund \
	  axe-core@4 >/dev/null 2>&1 \
	  || echo "note: axe-core could not be installed; the accessibility test will be skipped"

# The suite without the extras, in the small runtime environment (pytest added there on demand).
test-runtime: $(VENV_RUN)/.stamp
	$(VENV_RUN)/bin/pip install -q pytest hypothesis jsonschema
	$(VENV_RUN)/bin/python -m pytest -m "not torch" --durations=15

# What a plain `pip install` gives a user: the wheel, installed non-editable with its extras in a
# clean venv, each command run from another folder (.ci/test-wheel). Reuses pip's cache of .venv.
test-wheel: $(VENV)/.stamp
	PYTHON=$(PYTHON) .ci/test-wheel

# The demo model's data: 5,000 synthetic radiographs (the recipe in configs/demo-train.yaml).
dataset: $(VENV)/.stamp
	$(VENV)/bin/btxrd-synth --out $(DATA) --n 5000 --seed 0 --max-size 1200 --overwrite

# Retrain the shipped demo model from scratch, pick the samples, export. Stage 1 trains at output
# stride 32 (configs/demo-train.yaml), stage 2 fine-tunes at 16 (configs/demo-finetune.yaml).
# Time on 2 cores (models/README.md): about 33 + 7 min on the machine of 2026-11-22; 14.5 for
# stage 2 on the slower one of 2026-11-30, where stage 1 would take about 61 (228 s per epoch).
demo-model: dataset
	$(VENV)/bin/python -m btxrd.export.train --config configs/demo-train.yaml
	$(VENV)/bin/python -m btxrd.export.train --config configs/demo-finetune.yaml
	rm -rf models/samples
	$(VENV)/bin/python -m btxrd.export.samples --data $(DATA) --out models/samples
	$(MAKE) export

# In a fresh clone the dataset does not exist yet: `make dataset` writes it once (about 100 s on
# 2 cores), then fitting reads its 5,000 images (models/README.md gives the times).
$(DATA)/generation.json:
	@echo "make: $(DATA) is missing; generating the synthetic dataset first (about 2 min)"
	$(MAKE) dataset

export: $(VENV)/.stamp $(if $(CALIBRATION_DATA),$(CALIBRATION_DATA)/generation.json)
	$(VENV)/bin/btxrd-export --checkpoint $(CHECKPOINT) --out $(OUT) \
	  $(if $(CALIBRATION_DATA),--calibration-data $(CALIBRATION_DATA) --split $(SPLIT))

# What the gate catches and how well the probabilities are calibrated, on the demo model:
# results/trust/trust.json, reliability diagrams and a table on stdout (models/README.md).
trust: $(VENV)/.stamp $(DATA)/generation.json
	$(VENV)/bin/python -m btxrd.export.trust.measure --checkpoint $(CHECKPOINT) --model $(OUT) \
	  --data $(DATA) --split $(SPLIT) --out results/trust

# The explainer report on the demo model's held-out split; the synthetic data is generated first
# when it is missing (a fresh clone).
gradcam: $(VENV)/.stamp $(DATA)/generation.json
	$(VENV)/bin/btxrd-explain report --data $(DATA) --split $(SPLIT) --out results/explain

# hyperfine (Debian) times the cold starts when it can be installed; OpenVINO is compared with
# onnxruntime on the same model file.
bench: $(VENV)/.stamp
	@command -v hyperfine >/dev/null 2>&1 || { \
	  (apt-get install -y -qq --no-install-recommends hyperfine || \
	   (apt-get update -qq && apt-get install -y -qq --no-install-recommends hyperfine)) >/dev/null 2>&1 \
	  || echo "note: hyperfine could not be installed; cold starts are timed with subprocess"; }
	$(VENV)/bin/pip install -q -e '.[openvino]'
	$(VENV)/bin/python bench/run.py

# btxrd-serve: start to first answer, upload-to-result per image against btxrd-run's warm time on
# the same files, 50 uploads at once, the [serve] extra's size: prints them, writes bench/serve.json.
bench-serve: $(VENV)/.stamp
	$(VENV)/bin/python bench/serve.py

# The DICOM node's images per second against btxrd-run on the same files (bench/dicom_node.json).
bench-dicom-node: $(VENV)/.stamp dicom-tools
	$(VENV)/bin/python bench/dicom_node.py

# The README's picture of btxrd-serve's page, made by the browser test's own code path.
screenshot: $(VENV)/.stamp chromium
	$(VENV)/bin/python tests/serve/page_driver.py docs/serve.png

# 200,000 mutated files of every allowed format (JPEG, PNG 8/16-bit, TIFF incl. 16-bit, float
# and WhiteIsZero, BMP, DICOM) through the decode path (tests/fuzz/fuzz_decode.py); not in CI.
# A finding is saved as results/fuzz/crash-*: keep it in tests/fuzz/regressions/.
fuzz: $(VENV)/.stamp
	$(VENV)/bin/pip install -q -e '.[fuzz]'
	mkdir -p results/fuzz
	$(VENV)/bin/python tests/fuzz/fuzz_decode.py -atheris_runs=200000

lint: $(VENV)/.stamp
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy runtime

clean:
	rm -rf $(VENV) $(VENV_RUN) build *.egg-info results .pytest_cache
