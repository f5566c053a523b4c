"""Exceptions raised by the offline-data layer."""

from __future__ import annotations

__all__ = ["DatasetUnavailableError", "DatasetValidationError"]


class DatasetUnavailableError(FileNotFoundError):
    """The dataset is not on this machine and could not be obtained.

    The message names the dataset, the directory that was searched and how to get
    the files there (download on a machine with network access, then copy).
    """


class DatasetValidationError(ValueError):
    """Transitions do not have the layout, dtypes or values the library expects."""
