"""Where results go, and the promise that none is lost or garbled.

- ``report``: the record of one prediction, the results document, and the writers (a table on a
  terminal, JSON, JSON lines, CSV, Parquet);
- ``jsonl``: the resumable journal of JSON lines, proof of what each line was made from;
- ``atomic``: whole files or none; ``outlock``: one writer per output; ``folders``: output
  folders and files checked before any work;
- ``overlay``: heatmap pictures that explain themselves; ``progress``: the one progress bar.
"""
