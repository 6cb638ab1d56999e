"""Errors a user can act on. Each message names the thing at fault (dataset, row, file, option) and the fix.

The plugin installs a ``sys.excepthook`` that prints these without a traceback when they reach the top of a
command-line run (set ``MMEB_DLLM_DEBUG=1`` to see the traceback). Library callers get ordinary exceptions.
"""

from __future__ import annotations


class MmebDllmError(Exception):
    """Base class of every error whose message alone tells the user what to do."""


class ConfigError(MmebDllmError, ValueError):
    """An option has a value we do not support (wrong pooling name, unknown attention mode, ...)."""


class CheckpointError(MmebDllmError, FileNotFoundError):
    """Model weights or a required checkpoint file are missing or malformed."""


class DataError(MmebDllmError, ValueError):
    """Benchmark data is missing, in the wrong layout, or has a bad row."""
