"""Training-side data, torch-free: BTXRD-layout folders as training samples (``dataset``:
images, the sheet's rows, splits), LabelMe annotations (``labelme``) and lesion masks
(``masks``).

Why here: export (training, sample selection, the synthetic generator) and explain (galleries,
attention vs annotation) both use them, and explain may import export but not the other way
round. What ``btxrd-run --labels`` needs of a BTXRD folder (its sheet, each image's class) is in
``btxrd.runtime.labels.sheet`` and ``btxrd.runtime.labels.folders``, which this package builds
on. Nothing here imports torch, so the loaders and their tests also run without the extras.
"""
