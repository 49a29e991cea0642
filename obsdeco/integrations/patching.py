"""`patch_all()` / `unpatch_all()`: wrapt wrappers at seams that survive SDK upgrades.

Each SDK is observed at its base client's `request` method (sync and async), which every
resource method, `with_raw_response`, `with_streaming_response`, `beta` resources and the
streaming helpers go through, and which is shared by clients created before patching. Each
target is patched under its own guard: a missing or renamed one is skipped (and logged), never
the rest. `ThreadPoolExecutor.submit` is wrapped so that jobs keep their submitter's session.
"""

from __future__ import annotations

import concurrent.futures
import importlib
import importlib.util
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import wrapt

from obsdeco.context import propagating
from obsdeco.integrations.base import ProviderIntegration, explicit_attribution, note_retry

logger = logging.getLogger("obsdeco.patching")


@dataclass(frozen=True, slots=True)
class _Installed:
    owner: Any
    name: str
    original: Any


_lock = threading.RLock()
_installed: dict[str, _Installed] = {}
_implicit_capture = False


def _seam_targets(integration_cls: type[ProviderIntegration]) -> tuple[str, list[str]]:
    module = integration_cls.__module__.rsplit(".", 1)[-1]
    return module, [f"{module}._base_client.SyncAPIClient", f"{module}._base_client.AsyncAPIClient"]


def _install(key: str, owner: Any, name: str, wrapper: Callable[..., Any]) -> bool:
    if key in _installed:
        return True
    try:
        original = owner.__dict__[name]
        wrapt.wrap_function_wrapper(owner, name, wrapper)
    except Exception:
        logger.warning("obsdeco could not patch %s; that target is left alone", key, exc_info=True)
        return False
    _installed[key] = _Installed(owner, name, original)
    return True


def _seam_wrappers(
    integration: ProviderIntegration,
) -> tuple[Callable[..., Any], Callable[..., Any]]:
    def sync_request(wrapped: Any, _instance: Any, args: Any, kwargs: Any) -> Any:
        if not _implicit_capture and explicit_attribution() is None:
            return wrapped(*args, **kwargs)
        return integration.request(wrapped, args, kwargs)

    async def async_request(wrapped: Any, _instance: Any, args: Any, kwargs: Any) -> Any:
        if not _implicit_capture and explicit_attribution() is None:
            return await wrapped(*args, **kwargs)
        return await integration.async_request(wrapped, args, kwargs)

    return sync_request, async_request


def _count_retry(wrapped: Any, _instance: Any, args: Any, kwargs: Any) -> Any:
    _guarded_note_retry(kwargs.get("response"))
    return wrapped(*args, **kwargs)


async def _count_async_retry(wrapped: Any, _instance: Any, args: Any, kwargs: Any) -> Any:
    _guarded_note_retry(kwargs.get("response"))
    return await wrapped(*args, **kwargs)


def _guarded_note_retry(response: Any) -> None:
    try:
        note_retry(response)
    except Exception:
        logger.debug("obsdeco could not count a retry", exc_info=True)


def ensure_seam(integration_cls: type[ProviderIntegration]) -> bool:
    """Install one provider's request seam (if its SDK is installed); True if it is in place."""
    module, (sync_path, async_path) = _seam_targets(integration_cls)
    if importlib.util.find_spec(module) is None:
        return False
    with _lock:
        if sync_path in _installed and async_path in _installed:
            return True
        try:
            base_client = importlib.import_module(f"{module}._base_client")
            integration = integration_cls()
        except Exception:
            logger.warning("obsdeco could not load the %s SDK; not patched", module, exc_info=True)
            return False
        sync_wrapper, async_wrapper = _seam_wrappers(integration)
        installed_sync = _install(
            sync_path, getattr(base_client, "SyncAPIClient", None), "request", sync_wrapper
        )
        installed_async = _install(
            async_path, getattr(base_client, "AsyncAPIClient", None), "request", async_wrapper
        )
        # Retries are counted where the SDK waits before one; without it, they go uncounted.
        for path, wrapper in ((sync_path, _count_retry), (async_path, _count_async_retry)):
            owner = getattr(base_client, path.rsplit(".", 1)[-1], None)
            _install(f"{path}._sleep_for_retry", owner, "_sleep_for_retry", wrapper)
        return installed_sync or installed_async


def _submit_in_context(wrapped: Any, _instance: Any, args: Any, kwargs: Any) -> Any:
    if args:
        return wrapped(propagating(args[0]), *args[1:], **kwargs)
    return wrapped(*args, **kwargs)


def _integrations() -> list[type[ProviderIntegration]]:
    from obsdeco.integrations.anthropic import AnthropicIntegration
    from obsdeco.integrations.openai import OpenAIIntegration

    return [OpenAIIntegration, AnthropicIntegration]


def patch_all() -> list[str]:
    """Capture every call of the installed provider SDKs; idempotent.

    Returns the names of what is patched: "openai", "anthropic" (each only if installed) and
    "threadpool" (context propagation into `ThreadPoolExecutor` jobs).
    """
    global _implicit_capture
    patched = []
    with _lock:
        for integration_cls in _integrations():
            if ensure_seam(integration_cls):
                patched.append(_seam_targets(integration_cls)[0])
        if _install(
            "concurrent.futures.ThreadPoolExecutor.submit",
            concurrent.futures.ThreadPoolExecutor,
            "submit",
            _submit_in_context,
        ):
            patched.append("threadpool")
        _implicit_capture = True
    return patched


def unpatch_all() -> None:
    """Restore every patched attribute to exactly the object it was before."""
    global _implicit_capture
    with _lock:
        for installed in _installed.values():
            setattr(installed.owner, installed.name, installed.original)
        _installed.clear()
        _implicit_capture = False
