"""The HTTP libraries obsdeco's transport seam wraps, and which one a client is of."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

LIBRARIES = ("httpx", "httpx2")
"""The HTTP libraries whose clients the seam wraps (each when installed)."""


def library_of(client: Any) -> ModuleType:
    """The HTTP library (`httpx` or `httpx2` module) an HTTP client (or a subclass) is of."""
    for cls in type(client).__mro__:
        name = cls.__module__.partition(".")[0]
        if name in LIBRARIES:
            return importlib.import_module(name)
    raise TypeError(f"{type(client).__qualname__} is no httpx or httpx2 client")
