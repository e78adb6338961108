"""Training-side data, torch-free: the BTXRD folder layout and its ``dataset.xlsx``, splits,
LabelMe annotations, lesion masks and classification metrics.

Why here: export (training, sample selection, the synthetic generator) and explain (galleries,
attention vs annotation) both read BTXRD folders, and explain may import export but not the
other way round. The edge runtime never reads a training folder, so none of this belongs in
``btxrd.runtime``: ``btxrd-run`` and its install stay free of openpyxl and of the archive's
format. Nothing here imports torch, so the loaders and their tests also run without the extras.
"""
