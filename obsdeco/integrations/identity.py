"""Which service answered a call, from the host its request went to.

An OpenAI SDK pointed at Groq speaks OpenAI's format but is answered (and billed) by Groq. The
host names the service: first `configure(provider_hosts=...)` (private gateways, local
servers), then the provider URL patterns of genai-prices' snapshot (the same data the prices
come from), named the OpenTelemetry way. A host neither knows keeps the format's name.
"""

from __future__ import annotations

import re
from functools import lru_cache

from genai_prices import data_snapshot

from obsdeco.config import get_settings
from obsdeco.provider_names import otel_name


def host_key(host: object, port: object) -> str | None:
    """`host[:port]` of a request, as `provider_hosts` keys name it (lower case, an IPv6
    address in brackets), or None without a host."""
    if not host:
        return None
    name = str(host).lower()
    if ":" in name and not name.startswith("["):
        name = f"[{name}]"
    return f"{name}:{port}" if port else name


def provider_name_for(host: str | None, default: str) -> str:
    """The provider name of a request sent to `host` ("host[:port]"); `default` (the format's
    provider name) when the host is unknown or not given."""
    if not host:
        return default
    host = host.lower()
    configured = get_settings().provider_hosts
    if configured:
        name = configured.get(host) or configured.get(_without_port(host))
        if name is not None:
            return name
    return _known_provider(host) or default


def _without_port(host: str) -> str:
    name, colon, port = host.rpartition(":")
    return name if colon and port.isdigit() else host


@lru_cache(maxsize=1_024)
def _known_provider(host: str) -> str | None:
    """The OpenTelemetry name of the genai-prices provider whose API URL pattern matches
    `https://host/`, or None. A pattern must match the whole host (`api.groq.com`, not
    `api.groq.community`); patterns that need a URL path (Cloudflare's, Databricks', Hugging
    Face's router) cannot match a host alone."""
    url = f"https://{host}/"
    host_end = len(url) - 1
    for provider in data_snapshot.get_snapshot().providers:
        match = re.match(provider.api_pattern, url)
        # The match must end where the host name does: before its port, its end, or the "/".
        if match is not None and (match.end() >= host_end or url[match.end()] == ":"):
            return otel_name(provider.id)
    return None
