"""The ``btxrd-run`` command and what every btxrd command shares.

- ``run``: ``btxrd-run`` (files and folders in, results out, ``--info``, ``--labels``,
  ``--selftest``);
- ``common``: option bundles, the version line and the runner that turns a fault into one line
  and its exit code;
- ``info``: the terminal summary of ``--info``.
"""
