"""btxrd's edge runtime: classify radiographs with an exported ONNX model on a CPU, with
onnxruntime and no torch. Everything ``btxrd-run`` and ``btxrd-serve`` need, and nothing else
(``tests/runtime/test_isolation.py`` and ``tests/test_layering.py`` hold it to that).

Its parts, by what they do:

- the model: ``contract`` (what an exported file says about itself), ``onnxheader``, ``model``
  (the onnxruntime session), ``classifier`` (the Python API), ``verdict`` (the
  out-of-distribution gate's word), ``postprocess``, ``selftest``, ``info``;
- decoding: ``formats`` (the registry of formats read), ``imageio`` (Pillow), ``dicom``
  (pydicom), ``pixels``, ``preprocess``;
- inputs: ``inputs`` (folders and names), ``sheet`` and ``labelled`` (BTXRD's classes, its sheet
  and labelled folders, for ``--labels``), ``validation`` and ``metrics`` (the figures);
- outputs: ``report`` (records, documents and the writers), ``jsonl`` (the resumable journal),
  ``atomic`` (whole files or none), ``outlock`` (one writer per output), ``overlay`` (heatmap
  pictures), ``text`` (names as text);
- commands: ``cli`` (``btxrd-run``), ``cliutil``, ``config`` and ``settings`` (every default),
  ``paths``, ``install``, ``progress``, ``errors``;
- ``engine/``: folders shard by shard into Parquet, locally or on Ray; ``serve/``: the web page.
"""
