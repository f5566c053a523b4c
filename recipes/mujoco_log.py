"""MuJoCo's warnings through Python logging, not into ``MUJOCO_LOG.TXT`` in the working directory.

MuJoCo's default warning handler prints each warning and appends it to ``MUJOCO_LOG.TXT`` in
the current directory (MuJoCo 4.0 warns on every HalfCheetah model load, for example).
:func:`route_mujoco_warnings` replaces that handler with one that logs to the ``mujoco``
logger: the first occurrence of a message at ``WARNING``, its repeats at ``DEBUG``.

Example:
    >>> route_mujoco_warnings() in (True, False)
    True
"""

from __future__ import annotations

import logging

__all__ = ["route_mujoco_warnings"]

logger = logging.getLogger("mujoco")
_seen: set[str] = set()


def _log_warning(message: str) -> None:
    level = logging.DEBUG if message in _seen else logging.WARNING
    _seen.add(message)
    logger.log(level, "%s", message)


def route_mujoco_warnings() -> bool:
    """Installs the logging handler unless another one is installed; idempotent.

    Returns ``False`` when MuJoCo is not installed (nothing to do), ``True`` otherwise.
    Call it before creating MuJoCo envs; it is process-wide (MuJoCo has one handler).
    """
    try:
        import mujoco
    except ImportError:
        return False
    if mujoco.get_mju_user_warning() is None:
        mujoco.set_mju_user_warning(_log_warning)
    return True
