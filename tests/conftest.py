"""Shared fixtures: a fresh SQLite file or PostgreSQL schema per test, obsdeco configured on it."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

# litellm fetches its model cost map (and other catalogs) from the network when imported, unless
# told to use the copies it ships with; the tests use no network.
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
os.environ["LITELLM_OFFLINE_MODE"] = "true"

import anthropic
import openai
import pytest
import sqlalchemy
from sqlalchemy.engine import make_url

import obsdeco
from obsdeco.collector import sessions_in_memory
from obsdeco.testing import ProviderServer

POSTGRES_URL = os.environ.get(
    "OBSDECO_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
_KEPT_VARIABLES = frozenset({"OBSDECO_TEST_POSTGRES_URL", "OBSDECO_FIXTURES"})
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _postgres_unreachable_reason() -> str | None:
    engine = sqlalchemy.create_engine(POSTGRES_URL)
    try:
        with engine.connect():
            return None
    except sqlalchemy.exc.OperationalError as exc:
        return f"PostgreSQL unreachable at {POSTGRES_URL} ({type(exc).__name__})"
    finally:
        engine.dispose()


_POSTGRES_SKIP_REASON = _postgres_unreachable_reason()


def require_postgres() -> None:
    """Skip when PostgreSQL is down, except in CI where its tests must run."""
    if _POSTGRES_SKIP_REASON is None:
        return
    if IN_CI:
        pytest.fail(f"{_POSTGRES_SKIP_REASON}; in CI the PostgreSQL tests must run")
    pytest.skip(_POSTGRES_SKIP_REASON)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a schema of its own, dropped afterwards."""
    with postgres_schema() as url:
        yield url


@contextmanager
def postgres_schema() -> Iterator[str]:
    """What `postgres_url` gives, for a test that needs more than one."""
    require_postgres()
    schema = f"obsdeco_test_{uuid.uuid4().hex[:12]}"
    admin = sqlalchemy.create_engine(POSTGRES_URL)
    with admin.begin() as connection:
        connection.execute(sqlalchemy.text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(POSTGRES_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        obsdeco.flush(timeout=30)
        with admin.begin() as connection:
            connection.execute(sqlalchemy.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path: os.PathLike[str]) -> str:
    return f"sqlite:///{tmp_path}/obsdeco.db"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str:
    """Each test using this runs once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    return request.getfixturevalue("postgres_url")


@pytest.fixture(autouse=True)
def _isolated_obsdeco(
    tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """Every test starts from defaults on a database of its own and leaves nothing queued."""
    for variable in list(os.environ):
        if variable.startswith("OBSDECO_") and variable not in _KEPT_VARIABLES:
            monkeypatch.delenv(variable)
    obsdeco.configure(database_url=f"sqlite:///{tmp_path}/default.db")
    yield
    obsdeco.flush(timeout=30)
    sessions_in_memory.clear()


@pytest.fixture
def configured(database_url: str) -> str:
    """obsdeco configured on the parametrised database (SQLite, then PostgreSQL)."""
    obsdeco.configure(project="test", database_url=database_url)
    return database_url


def count_rows(url: str, table: str) -> int:
    """Rows in a table (0 if it was never created), read with a connection of the test's own."""
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as connection:
            if not sqlalchemy.inspect(connection).has_table(table):
                return 0
            return connection.execute(sqlalchemy.text(f"SELECT count(*) FROM {table}")).scalar_one()
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def provider_server() -> Iterator[ProviderServer]:
    """One local OpenAI/Anthropic-compatible server for the whole test run."""
    with ProviderServer() as server:
        yield server


@pytest.fixture
def provider(provider_server: ProviderServer) -> ProviderServer:
    """The local provider with no scripted replies and no recorded requests."""
    provider_server.reset()
    return provider_server


@pytest.fixture
def patched() -> Iterator[list[str]]:
    """obsdeco.patch_all() for the test, undone afterwards."""
    names = obsdeco.patch_all()
    yield names
    obsdeco.unpatch_all()


@pytest.fixture
def openai_client(provider: ProviderServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=provider.openai_base_url, api_key="sk-test", max_retries=0
    ) as client:
        yield client


@pytest.fixture
async def async_openai_client(provider: ProviderServer) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url=provider.openai_base_url, api_key="sk-test", max_retries=0
    ) as client:
        yield client


@pytest.fixture(params=["sync", "async"])
def client(
    request: pytest.FixtureRequest,
    openai_client: openai.OpenAI,
    async_openai_client: openai.AsyncOpenAI,
) -> openai.OpenAI | openai.AsyncOpenAI:
    """An OpenAI client: each test using it runs with the sync one, then with the async one."""
    return openai_client if request.param == "sync" else async_openai_client


@pytest.fixture
def anthropic_client(provider: ProviderServer) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(
        base_url=provider.anthropic_base_url, api_key="sk-ant-test", max_retries=0
    ) as client:
        yield client


@pytest.fixture
async def async_anthropic_client(
    provider: ProviderServer,
) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(
        base_url=provider.anthropic_base_url, api_key="sk-ant-test", max_retries=0
    ) as client:
        yield client
