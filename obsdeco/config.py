"""Settings: `configure()` arguments, else `OBSDECO_*` environment variables, else defaults."""

from __future__ import annotations

import base64
import binascii
import importlib.util
import json
import os
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from obsdeco.alerts.rules import Alert
from obsdeco.engine.budget_rules import Budget
from obsdeco.engine.routes import Route
from obsdeco.models import Name
from obsdeco.provider_names import check_provider_name
from obsdeco.storage import registered_scheme

DEFAULT_DATABASE_URL = "sqlite:///obsdeco.db"
DEFAULT_CACHE_URL = "memory://"

_SUPPORTED_DIALECTS = ("sqlite", "postgresql")
MAX_RETENTION_DAYS = 36_500
_PRICE_KEYS = frozenset({"input", "output", "cache_read", "cache_write"})
_HOST = re.compile(r"(?:[a-z0-9_-]+(?:\.[a-z0-9_-]+)*|\[[0-9a-f:.]+\])(?::(\d{1,5}))?")


class Settings(BaseModel):
    """The whole obsdeco configuration; `configure()` replaces it as one piece."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    project: Name = "default"
    database_url: str = DEFAULT_DATABASE_URL
    capture_content: bool = False
    scrub_pii: bool = True
    sample_rate: float = Field(default=1.0, ge=0.0, le=1.0)
    pricing_overrides: dict[str, dict[str, float]] = Field(default_factory=dict)
    request_stream_usage: bool = False
    """Ask OpenAI chat streams for usage (the extra usage-only chunk is hidden from the user)."""
    max_queue_size: int = Field(default=50_000, ge=1)
    batch_size: int = Field(default=2_000, ge=1)
    flush_at_exit_timeout_s: float = Field(default=10.0, ge=0.0, le=86_400.0, allow_inf_nan=False)
    """How long the exit hooks wait for the database: at most a day (never infinity)."""
    content_max_chars: int = Field(default=20_000, ge=1)
    """Captured prompts and completions are cut to this many characters, the cut marked."""
    pii_patterns: dict[str, str] = Field(default_factory=dict)
    """Extra scrubbing: NAME -> regular expression, matches replaced by <NAME>."""
    scrubber: Callable[[str], str] | None = None
    """Your own scrubbing (Presidio, house rules), run after the built-in rules."""
    metadata_allow: tuple[str, ...] | None = None
    """Glob patterns: only metadata keys matching one are stored (None: every key)."""
    metadata_deny: tuple[str, ...] = ()
    """Glob patterns: metadata keys matching one are never stored."""
    encryption_key: SecretStr | None = None
    """32 bytes, URL-safe base64: captured content and metadata are encrypted with AES-GCM."""
    provider_hosts: dict[str, str] = Field(default_factory=dict)
    """"host[:port]" -> provider name, for gateways and local servers (before genai-prices'
    provider URL patterns); hosts are kept lowercase."""
    cache_url: str = DEFAULT_CACHE_URL
    """Where `obsdeco.cache()` keeps responses: memory://, sqlite:///path, postgresql+psycopg://,
    redis://host:port/db."""
    routes: tuple[Route, ...] = ()
    """The model router's rules, tried in order; the first that matches a request routes it."""
    budgets: tuple[Budget, ...] = ()
    """Hard budgets: a call that could pass one is refused before it is sent."""
    alerts: tuple[Alert, ...] = ()
    """Alert rules, evaluated off the caller's thread from what is stored."""
    alert_interval_s: float = Field(default=30.0, ge=0.0, le=86_400.0, allow_inf_nan=False)
    """How often the background evaluator checks the alerts (0: only `check_alerts()`)."""
    otlp_endpoint: str | None = None
    """OTLP/HTTP base URL (e.g. http://127.0.0.1:4318): stored records are also exported
    there as OpenTelemetry traces and metrics (`/v1/traces`, `/v1/metrics` are appended)."""
    otlp_headers: dict[str, str] = Field(default_factory=dict)
    """Headers sent with every OTLP export request (e.g. an API key)."""
    otlp_timeout_s: float = Field(default=10.0, gt=0.0, le=600.0, allow_inf_nan=False)
    """How long one OTLP export request may take, retries included."""
    retention_days: int | None = Field(default=None, ge=1, le=MAX_RETENTION_DAYS)
    """Calls, agent spans, scores and sessions are kept for today and this many whole UTC days
    before it; older ones are removed in the background every hour (None: kept forever)."""
    rollup_retention_days: int | None = Field(default=None, ge=1, le=MAX_RETENTION_DAYS)
    """The hourly rollups are kept this many days, at least `retention_days` (None: as long as
    the calls), so that project reports over older ranges can still be read from them."""

    @model_validator(mode="after")
    def _rollups_outlive_calls(self) -> Settings:
        kept = self.rollup_retention_days
        if kept is None:
            return self
        if self.retention_days is None:
            raise ValueError(
                "rollup_retention_days needs retention_days: without it every call is kept, "
                "and rollups are kept with them"
            )
        if kept < self.retention_days:
            raise ValueError(
                f"rollup_retention_days ({kept}) must be at least retention_days "
                f"({self.retention_days}): reports read the rollups of every hour the calls cover"
            )
        return self

    @field_validator("alerts")
    @classmethod
    def _unique_alert_names(cls, value: tuple[Alert, ...]) -> tuple[Alert, ...]:
        names = [alert.name for alert in value]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"alert names must be unique; given twice: {twice}")
        return value

    @field_validator("otlp_endpoint")
    @classmethod
    def _usable_otlp_endpoint(cls, value: str | None) -> str | None:
        return None if value is None else check_otlp_endpoint(value)

    @field_validator("provider_hosts")
    @classmethod
    def _usable_provider_hosts(cls, value: dict[str, str]) -> dict[str, str]:
        hosts: dict[str, str] = {}
        for host, name in value.items():
            key, checked = _provider_host(host), _provider_host_name(host, name)
            if hosts.setdefault(key, checked) != checked:
                raise ValueError(f"provider_hosts names {key!r} twice, as two providers")
        return hosts

    @field_validator("pii_patterns")
    @classmethod
    def _compiled_patterns(cls, value: dict[str, str]) -> dict[str, str]:
        for name, pattern in value.items():
            if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name):
                raise ValueError(f"pii_patterns name {name!r} must be a word such as ORDER_ID")
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(
                    f"pii_patterns[{name!r}] is not a regular expression: {exc}"
                ) from None
        return value

    @field_validator("encryption_key")
    @classmethod
    def _usable_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            key_bytes(value.get_secret_value())
        return value

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        return normalise_database_url(value)

    @field_validator("cache_url")
    @classmethod
    def _known_cache(cls, value: str) -> str:
        return normalise_cache_url(value)

    @field_validator("pricing_overrides")
    @classmethod
    def _known_price_keys(cls, value: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        for model, prices in value.items():
            unknown = set(prices) - _PRICE_KEYS
            if unknown:
                raise ValueError(
                    f"pricing_overrides[{model!r}] has unknown keys {sorted(unknown)}; "
                    f"allowed: {sorted(_PRICE_KEYS)} (USD per 1M tokens)"
                )
            if "input" not in prices or "output" not in prices:
                raise ValueError(f"pricing_overrides[{model!r}] needs both 'input' and 'output'")
            if any(price < 0 for price in prices.values()):
                raise ValueError(f"pricing_overrides[{model!r}] has a negative price")
        return value


def check_otlp_endpoint(url: str) -> str:
    """`url` without a trailing slash if it is an http(s) URL and the OTLP exporter is
    installed, else a `ValueError` saying what to change."""
    parsed = urlsplit(url.strip())
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError(
            f"otlp_endpoint {url!r} must be an http:// or https:// URL such as "
            "http://127.0.0.1:4318"
        )
    if not _otlp_installed():
        raise ValueError(
            "otlp_endpoint needs the OpenTelemetry SDK and OTLP exporter: "
            "pip install 'obsdeco[otel]'"
        )
    return url.strip().rstrip("/")


def _otlp_installed() -> bool:
    return importlib.util.find_spec("opentelemetry.exporter.otlp.proto.http") is not None


def parse_otlp_headers(raw: str) -> dict[str, str]:
    """Headers in the OpenTelemetry environment format: `key=value,key2=value2`, each part
    URL-encoded."""
    headers: dict[str, str] = {}
    for item in raw.split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"expected key=value pairs separated by commas, got {item.strip()!r}")
        headers[unquote(key.strip())] = unquote(value.strip())
    return headers


def _provider_host(host: str) -> str:
    """A `provider_hosts` key, lowercased, or ValueError saying what is wrong with it."""
    lowered = host.strip().lower()
    if "://" in lowered or "/" in lowered:
        raise ValueError(
            f"provider_hosts key {host!r} must be host[:port] (e.g. 'llm.internal:8000'), "
            "without scheme or path"
        )
    match = _HOST.fullmatch(lowered)
    if match is None:
        raise ValueError(f"provider_hosts key {host!r} is not a host name or host:port")
    port = match.group(1)
    if port is not None and not 0 < int(port) < 65536:
        raise ValueError(f"provider_hosts key {host!r} has port {port}, not in 1-65535")
    return lowered


def _provider_host_name(host: str, name: str) -> str:
    try:
        return check_provider_name(name)
    except ValueError as exc:
        raise ValueError(f"provider_hosts[{host!r}]: {exc}") from None


def normalise_database_url(url: str) -> str:
    """Check that `url` names a supported database and pin PostgreSQL to the psycopg 3 driver."""
    if registered_scheme(url) is not None:
        return url
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ValueError(f"database_url {url!r} is not a database URL: {exc}") from None
    dialect, _, driver = parsed.drivername.partition("+")
    if dialect == "postgres":
        dialect = "postgresql"
    if dialect not in _SUPPORTED_DIALECTS:
        raise ValueError(
            f"database_url scheme {parsed.drivername!r} is not supported; "
            "use sqlite:///path.db or postgresql+psycopg://user@host:5432/db"
        )
    if dialect == "postgresql" and driver not in ("", "psycopg"):
        raise ValueError(
            f"database_url driver {parsed.drivername!r} is not supported; use postgresql+psycopg://"
        )
    if dialect == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


_CACHE_SCHEMES = ("memory", "redis", "rediss")


def normalise_cache_url(url: str) -> str:
    """Check that `url` names a cache backend: memory://, redis(s)://, or a SQLite/PostgreSQL
    URL (a storage backend registered with `register_backend` cannot hold the cache)."""
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme in _CACHE_SCHEMES:
        if scheme != "memory" and importlib.util.find_spec("redis") is None:
            raise ValueError(
                f"cache_url {url!r} needs the redis package: pip install 'obsdeco[redis]'"
            )
        return url
    try:
        if registered_scheme(url) is not None:
            raise ValueError(url)
        return normalise_database_url(url)
    except ValueError:
        raise ValueError(
            f"cache_url {url!r} is not supported; use memory://, redis://host:6379/0, "
            "sqlite:///path.db or postgresql+psycopg://user@host:5432/db"
        ) from None


def _parse_bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected a boolean (true/false), got {raw!r}")


def _parse_json(raw: str) -> Any:
    return json.loads(raw)


def _parse_list(raw: str) -> list[str]:
    """Comma-separated patterns."""
    return [item.strip() for item in raw.split(",") if item.strip()]


def key_bytes(key: str) -> bytes:
    """The 32 bytes of an encryption key given as URL-safe base64."""
    try:
        raw = base64.urlsafe_b64decode(key.encode() + b"=" * (-len(key) % 4))
    except (ValueError, binascii.Error):
        raw = b""
    if len(raw) != 32:
        raise ValueError(
            "encryption_key must be 32 random bytes in URL-safe base64, e.g. from python -c "
            '"import base64, os; print(base64.urlsafe_b64encode(os.urandom(32)).decode())"'
        )
    return raw


_ENVIRONMENT: dict[str, Callable[[str], Any]] = {
    "project": str,
    "database_url": str,
    "capture_content": _parse_bool,
    "scrub_pii": _parse_bool,
    "sample_rate": float,
    "pricing_overrides": _parse_json,
    "request_stream_usage": _parse_bool,
    "max_queue_size": int,
    "batch_size": int,
    "flush_at_exit_timeout_s": float,
    "content_max_chars": int,
    "pii_patterns": _parse_json,
    "metadata_allow": _parse_list,
    "metadata_deny": _parse_list,
    "encryption_key": str,
    "provider_hosts": _parse_json,
    "cache_url": str,
    "alert_interval_s": float,
    "otlp_endpoint": str,
    "otlp_headers": parse_otlp_headers,
    "otlp_timeout_s": float,
    "retention_days": int,
    "rollup_retention_days": int,
}

_OTEL_ENVIRONMENT: dict[str, tuple[str, Callable[[str], Any]]] = {
    "otlp_endpoint": ("OTEL_EXPORTER_OTLP_ENDPOINT", str),
    "otlp_headers": ("OTEL_EXPORTER_OTLP_HEADERS", parse_otlp_headers),
}
"""The OpenTelemetry SDK's own variables, read when the `OBSDECO_*` one is not set."""


def _from_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for option, parse in _ENVIRONMENT.items():
        variable = f"OBSDECO_{option.upper()}"
        raw = environ.get(variable)
        if raw is None:
            continue
        try:
            values[option] = parse(raw)
        except ValueError as exc:
            raise ValueError(f"environment variable {variable}: {exc}") from None
    for option, (variable, parse) in _OTEL_ENVIRONMENT.items():
        raw = environ.get(variable)
        if option in values or raw is None or not raw.strip() or not _otlp_installed():
            # Without the exporter, the SDK's variables are for other tools: no error here.
            continue
        try:
            values[option] = parse(raw)
        except ValueError as exc:
            raise ValueError(f"environment variable {variable}: {exc}") from None
    return values


def build_settings(environ: Mapping[str, str] | None = None, **options: Any) -> Settings:
    """Merge explicit options over `OBSDECO_*` variables over defaults, validating everything."""
    unknown = set(options) - set(Settings.model_fields)
    if unknown:
        raise TypeError(f"configure() got unknown option(s): {', '.join(sorted(unknown))}")
    values = _from_environment(os.environ if environ is None else environ)
    values.update({key: value for key, value in options.items() if value is not None})
    try:
        return Settings(**values)
    except ValidationError as exc:
        # Each problem by option name, without the values given: one of them may be a key.
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
            for error in exc.errors()
        )
        raise ValueError(f"invalid obsdeco configuration: {problems}") from None


class _SettingsHolder:
    """The process-wide settings, built lazily from the environment on first use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.current: Settings | None = None
        self._listeners: list[Callable[[Settings], None]] = []

    def add_listener(self, listener: Callable[[Settings], None]) -> None:
        """Call `listener(settings)` after each `configure()`, on its thread."""
        self._listeners.append(listener)

    def get(self) -> Settings:
        settings = self.current
        if settings is None:
            with self._lock:
                if self.current is None:
                    self.current = build_settings()
                settings = self.current
        return settings

    def replace(self, settings: Settings) -> None:
        with self._lock:
            self.current = settings
        for listener in self._listeners:
            listener(settings)


settings_holder = _SettingsHolder()


def get_settings() -> Settings:
    """The settings in force (environment and defaults until `configure()` is called)."""
    return settings_holder.get()


def configure(
    project: str | None = None,
    database_url: str | None = None,
    capture_content: bool | None = None,
    scrub_pii: bool | None = None,
    sample_rate: float | None = None,
    pricing_overrides: Mapping[str, Mapping[str, float]] | None = None,
    *,
    request_stream_usage: bool | None = None,
    max_queue_size: int | None = None,
    batch_size: int | None = None,
    flush_at_exit_timeout_s: float | None = None,
    content_max_chars: int | None = None,
    pii_patterns: Mapping[str, str] | None = None,
    scrubber: Callable[[str], str] | None = None,
    metadata_allow: Sequence[str] | None = None,
    metadata_deny: Sequence[str] | None = None,
    encryption_key: str | None = None,
    provider_hosts: Mapping[str, str] | None = None,
    cache_url: str | None = None,
    routes: Sequence[Route] | None = None,
    alerts: Sequence[Alert] | None = None,
    alert_interval_s: float | None = None,
    budgets: Sequence[Budget] | None = None,
    otlp_endpoint: str | None = None,
    otlp_headers: Mapping[str, str] | None = None,
    otlp_timeout_s: float | None = None,
    retention_days: int | None = None,
    rollup_retention_days: int | None = None,
) -> Settings:
    """Replace the whole obsdeco configuration.

    An option not given takes its `OBSDECO_<OPTION>` environment value, else its default.
    Records made after this call go to the new database; records already queued still go to
    the database they were recorded for. Bad values raise `ValueError` naming the option.
    """
    if isinstance(alerts, Alert):
        raise ValueError("alerts must be a list of obsdeco.Alert, e.g. alerts=[obsdeco.Alert(...)]")
    settings = build_settings(
        project=project,
        database_url=database_url,
        capture_content=capture_content,
        scrub_pii=scrub_pii,
        sample_rate=sample_rate,
        pricing_overrides=pricing_overrides,
        request_stream_usage=request_stream_usage,
        max_queue_size=max_queue_size,
        batch_size=batch_size,
        flush_at_exit_timeout_s=flush_at_exit_timeout_s,
        content_max_chars=content_max_chars,
        pii_patterns=pii_patterns,
        scrubber=scrubber,
        metadata_allow=metadata_allow,
        metadata_deny=metadata_deny,
        encryption_key=encryption_key,
        provider_hosts=provider_hosts,
        cache_url=cache_url,
        routes=None if routes is None else tuple(routes),
        alerts=None if alerts is None else tuple(alerts),
        alert_interval_s=alert_interval_s,
        budgets=None if budgets is None else tuple(budgets),
        otlp_endpoint=otlp_endpoint,
        otlp_headers=otlp_headers,
        otlp_timeout_s=otlp_timeout_s,
        retention_days=retention_days,
        rollup_retention_days=rollup_retention_days,
    )
    settings_holder.replace(settings)
    return settings
