"""Installing and removing patches: each target under its own guard, each original kept.

A target that is missing or renamed in a future release of its library is skipped and logged,
never the others. `restore_all()` puts back exactly the objects that were there.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import wrapt

logger = logging.getLogger("obsdeco.patching")


@dataclass(frozen=True, slots=True)
class _Installed:
    owner: Any
    name: str
    original: Any


lock = threading.RLock()
"""Held while patches are installed or removed."""

_installed: dict[str, _Installed] = {}


class _Capture:
    """Whether implicit capture is on (`patch_all()` called, `unpatch_all()` not since).

    A seam installed for an explicit `wrap_*` call alone observes only explicit calls.
    """

    implicit = False


capture = _Capture()


def install(key: str, owner: Any, name: str, wrapper: Callable[..., Any]) -> bool:
    """Wrap `owner.name` with a wrapt `wrapper(wrapped, instance, args, kwargs)`, once per `key`;
    True if it is in place."""
    with lock:
        if key in _installed:
            return True
        try:
            original = owner.__dict__[name]
            wrapt.wrap_function_wrapper(owner, name, wrapper)
        except Exception:
            logger.warning(
                "obsdeco could not patch %s; that target is left alone", key, exc_info=True
            )
            return False
        _installed[key] = _Installed(owner, name, original)
        return True


def installed(key: str) -> bool:
    """Whether the patch `key` is in place."""
    return key in _installed


def restore_all() -> None:
    """Restore every patched attribute to exactly the object it was before."""
    with lock:
        for patch in _installed.values():
            setattr(patch.owner, patch.name, patch.original)
        _installed.clear()
