"""Folders classified shard by shard into a resumable Parquet dataset, on this machine or on Ray.

- ``manifest``: the inputs (path, size, mtime) in fixed shards, and the dataset folder that holds
  one part file per finished shard (written atomically), so ``--resume`` redoes only the rest;
- ``rows``: one Parquet row per input, built from the record every btxrd JSON holds, with a
  fixed schema;
- ``local``, ``ray_engine``: who classifies a shard (this process, or Ray actors each holding
  one ``Classifier``); both call ``rows.classify_shard``, so a row never depends on the engine;
- ``run``: what ``btxrd-run --parquet`` does with them.

pyarrow (extra ``[parquet]``) and Ray (extra ``[ray]``) are imported only when used, so the
runtime imports and runs without them.
"""
