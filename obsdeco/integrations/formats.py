"""The provider formats that the seams without an SDK of their own read (the HTTP seam, dspy's),
and which format and API a request path calls.

A format is tried in the order of `FORMATS`: a more specific ending (Anthropic's
`/v1/messages`) before OpenAI's generic ones, which any OpenAI-compatible server answers.
"""

from __future__ import annotations

from obsdeco.integrations.anthropic import ANTHROPIC
from obsdeco.integrations.format import ProviderFormat
from obsdeco.integrations.gemini import GEMINI
from obsdeco.integrations.openai import OPENAI

FORMATS: tuple[ProviderFormat, ...] = (ANTHROPIC, GEMINI, OPENAI)

ENDINGS: tuple[str, ...] = tuple(ending for format in FORMATS for ending in format.endpoints)
"""Every endpoint ending of every format, for one quick `str.endswith` test."""


def endpoint_of(path: str) -> tuple[ProviderFormat, str] | None:
    """(format, API) of a request path (without its query), or None for no known endpoint."""
    if not path.endswith(ENDINGS):
        return None
    for format in FORMATS:
        api = format.endpoint(path)
        if api is not None:
            return format, api
    return None
