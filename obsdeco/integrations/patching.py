"""`patch_all()` / `unpatch_all()`: every seam obsdeco knows, installed or removed at once.

The SDK seams (`sdk.py`) observe the openai and anthropic SDKs at their base client's
`request`; `google_genai.py` observes the google-genai SDK at its API client, `dspy.py` dspy's
own lm15 client, and the HTTP seam (`http.py`) the `httpx` / `httpx2` clients, for the LLM calls
that reach no other seam. `ThreadPoolExecutor.submit` is wrapped so that jobs keep their
submitter's session.
"""

from __future__ import annotations

import concurrent.futures
from typing import Any

from obsdeco.context import propagating
from obsdeco.integrations import seam
from obsdeco.integrations.anthropic import AnthropicSDK
from obsdeco.integrations.dspy import install_dspy_seam
from obsdeco.integrations.google_genai import install_google_genai
from obsdeco.integrations.http import install_http_seam
from obsdeco.integrations.openai import OpenAISDK
from obsdeco.integrations.sdk import SDKSeam, install_sdk_seam
from obsdeco.runtime import exit_hooks

_SDKS: tuple[type[SDKSeam], ...] = (OpenAISDK, AnthropicSDK)


def _submit_in_context(wrapped: Any, _instance: Any, args: Any, kwargs: Any) -> Any:
    if args:
        return wrapped(propagating(args[0]), *args[1:], **kwargs)
    return wrapped(*args, **kwargs)


def patch_all() -> list[str]:
    """Capture every call of the installed provider SDKs; idempotent.

    Returns the names of what is patched: "openai", "anthropic", "google-genai", "dspy" (each
    only if installed; the last two when the program imports them, if it has not yet), "http"
    (the `httpx` / `httpx2` clients, if either is installed) and "threadpool" (context
    propagation into `ThreadPoolExecutor` jobs).
    """
    patched = []
    with seam.lock:
        for sdk in _SDKS:
            if install_sdk_seam(sdk):
                patched.append(sdk.module)
        # Heavy libraries a program may have installed but not use are patched on import.
        if seam.when_imported("google.genai", install_google_genai):
            patched.append("google-genai")
        if seam.when_imported("dspy", install_dspy_seam):
            patched.append("dspy")
        if install_http_seam():
            patched.append("http")
        if seam.install(
            "concurrent.futures.ThreadPoolExecutor.submit",
            concurrent.futures.ThreadPoolExecutor,
            "submit",
            _submit_in_context,
        ):
            patched.append("threadpool")
        seam.capture.implicit = True
    exit_hooks.install()
    return patched


def unpatch_all() -> None:
    """Restore every patched attribute to exactly the object it was before."""
    with seam.lock:
        seam.restore_all()
        seam.capture.implicit = False
