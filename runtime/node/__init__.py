"""``btxrd-serve dicom``: the DICOM node a PACS routes radiographs to (extra ``[dicom-node]``).

- ``scp``: the Storage SCP (allowlist, accepted SOP classes and transfer syntaxes, limits), each
  received image classified as ``btxrd-run`` classifies it, its record in ``results.jsonl``;
- ``objects``: the result as DICOM in the source's study: a Comprehensive SR (TID 2000 style)
  and, for a classified image, a Secondary Capture of the heatmap overlay;
- ``outbox``: the durable outbox and the sender that C-STOREs it to the PACS, with retries;
- ``cli``: the command.
"""
