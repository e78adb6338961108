"""The defaults of fitting trust, in one light module: ``btxrd-export``'s options show them in
``--help`` without importing onnxruntime, and ``fit`` uses the same values."""

# Share of the validation images the gate's threshold keeps, and the range a user may choose.
DEFAULT_RETENTION = 0.99
RETENTION_RANGE = (0.5, 1.0)
# Chosen by `make trust` (models/README.md): the only candidate that refuses every
# out-of-distribution set; the last feature map alone lets flat fields and inverted images by.
DEFAULT_METHOD = "mahalanobis_multilayer"
# Fewer validation images of a class than this and the temperature and the gate's threshold
# rest on too little: export refuses (--min-val-per-class lowers it, knowingly).
MIN_VAL_PER_CLASS = 30
