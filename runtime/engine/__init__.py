"""Folders classified shard by shard into a resumable Parquet dataset, on this machine or on Ray.

- ``manifest``: the inputs (path, size, mtime) in fixed shards, and the dataset folder that holds
  one part file per finished shard (written atomically), so ``--resume`` redoes only the rest;
- ``rows``: one Parquet row per input, built from the record every btxrd JSON holds, with a
  fixed schema;
- ``ray_engine``: Ray actors, each holding one ``Classifier``, classify shards on a cluster;
- ``run``: what ``btxrd-run --parquet`` does with them; its local engine classifies the shards
  one after another in this process. Both engines call ``rows.classify_shard``, so a row never
  depends on the engine.

pyarrow (extra ``[parquet]``) and Ray (extra ``[ray]``) are imported only when used, so the
runtime imports and runs without them.
"""
