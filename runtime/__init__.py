"""btxrd's edge runtime: classify radiographs with an exported ONNX model on a CPU, with
onnxruntime and no torch. Everything ``btxrd-run`` and ``btxrd-serve`` need, and nothing else
(``tests/runtime/test_isolation.py`` and ``tests/test_layering.py`` hold it to that).

Its parts, lower first; each imports only the parts above it in this list, never one below
(``tests/test_layering.py``):

- the ground every part stands on: ``errors`` (the exception family and the exit codes),
  ``settings`` (every default), ``config`` (YAML over the defaults), ``paths`` (the shipped
  model and samples), ``install`` (the install hint for an extra), ``text`` (names as text);
- ``decode/``: image files to 8-bit images, through one registry of formats;
- ``model/``: the exported file, its contract, the session, the classifier and the gate's word;
- ``labels/``: labelled data, BTXRD's sheet and classes, and every figure;
- ``output/``: records, documents and the writers, whole files, one writer per output;
- ``engine/``: folders shard by shard into Parquet, locally or on Ray;
- ``cli/``: ``btxrd-run`` and what every command shares;
- ``node/``: ``btxrd-serve dicom``, the DICOM node a PACS routes radiographs to;
- ``serve/``: ``btxrd-serve``, the web page.
"""
