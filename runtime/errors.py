"""One exception family for the library; only the CLIs turn these into messages and exit codes."""

from __future__ import annotations


class BtxrdError(Exception):
    """Base of every error btxrd raises on purpose.

    The message names the file, the cause and the fix.
    """


class InputError(BtxrdError):
    """An input image (or annotation) cannot be used. A batch records it and goes on."""


class ModelError(BtxrdError):
    """The model or checkpoint file is unusable. Nothing is processed."""


class OutputError(BtxrdError):
    """An output file or folder cannot be written. Checked before any work is done."""


class ConfigError(BtxrdError):
    """A configuration file or option is invalid."""
