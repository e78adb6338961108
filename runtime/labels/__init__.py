"""Labelled data and the figures measured on it (``btxrd-run --labels``; export and explain use
the same code).

- ``sheet``: BTXRD's classes and image suffixes, its metadata sheet and each image's class;
- ``folders``: labelled images in the layouts engineers keep them in (BTXRD, ImageFolder, a CSV);
- ``metrics``: every figure (accuracy, per-class precision and recall, AUROC, ECE and its
  reliability bins, bootstrap intervals), defined once;
- ``validation``: a model checked on labelled images, without torch.
"""
