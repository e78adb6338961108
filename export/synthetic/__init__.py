"""Synthetic radiographs in BTXRD's folder layout, for tests and the demo model (never real data).

``btxrd-synth --out DIR`` writes ``images/``, ``Annotations/`` (LabelMe), ``dataset.xlsx``,
``dataset.csv`` and ``generation.json``; see ``generate.generate_dataset`` for the library call.
"""

# Bump when the same options would produce different pixels, so provenance stays meaningful.
GENERATOR_VERSION = "1.0.0"
