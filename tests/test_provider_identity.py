"""Provider identity: the service that answered (`LLMCall.provider_name`), found from the
request's host, priced at that service's prices, stored, and grouped by in every report."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import anthropic
import openai
import pytest
import sqlalchemy
from genai_prices import Usage, calc_price
from genai_prices.data_snapshot import DataSnapshot, set_custom_snapshot
from genai_prices.types import Provider
from pydantic import ValidationError

import obsdeco
from obsdeco import ModelProvider
from obsdeco.collector import sessions_in_memory
from obsdeco.integrations.identity import _known_provider, host_key, provider_name_for
from obsdeco.provider_names import default_provider_name, otel_name, price_provider_id
from obsdeco.storage.migrations.state import VERSION_TABLE
from obsdeco.storage.schema import call_rollups
from obsdeco.testing import ProviderServer, Reply
from tests.helpers import in_session

MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]
# The local server's default reply to MESSAGES: 7 prompt tokens, 12 completion tokens (OpenAI);
# Anthropic's count of the same request is the same, its reply text too.
PROMPT_TOKENS = 7
COMPLETION_TOKENS = 12
GROQ_MODEL = "llama-3.3-70b-versatile"


def _price(provider_id: str, model: str, prompt: int, completion: int) -> float:
    """What genai-prices itself says the tokens cost at `provider_id`."""
    usage = Usage(input_tokens=prompt, output_tokens=completion)
    return float(calc_price(usage, model, provider_id=provider_id).total_price)


# --- the host names the service ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("api.groq.com", "groq"),
        ("api.deepseek.com", "deepseek"),
        ("openrouter.ai", "openrouter"),
        ("api.together.xyz", "together"),
        ("x.openai.azure.com", "azure.openai"),
        ("generativelanguage.googleapis.com", "gcp.gemini"),
        ("api.mistral.ai", "mistral_ai"),
        ("api.openai.com", "openai"),
        ("api.anthropic.com", "anthropic"),
        ("api.x.ai", "x_ai"),
        ("bedrock-runtime.us-east-1.amazonaws.com", "aws.bedrock"),
        ("API.Groq.com", "groq"),
        ("api.groq.com:443", "groq"),
    ],
)
def test_known_provider_hosts_are_named_from_genai_prices_patterns(host, expected):
    assert provider_name_for(host, "the-sdk-default") == expected


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1:8000", "llm.internal", "api.groq.community", "evil-api.openai.com", "", None],
)
def test_an_unknown_host_keeps_the_formats_name(host):
    assert provider_name_for(host, "openai") == "openai"


def test_configured_hosts_come_first_exact_port_then_any_port(sqlite_url):
    obsdeco.configure(
        database_url=sqlite_url,
        provider_hosts={
            "api.openai.com": "corp-proxy",
            "llm.internal:8000": "vllm",
            "LLM.internal": "gateway",
        },
    )

    assert provider_name_for("api.openai.com", "openai") == "corp-proxy"
    assert provider_name_for("llm.internal:8000", "openai") == "vllm"
    assert provider_name_for("llm.internal:9000", "openai") == "gateway"
    assert provider_name_for("llm.internal", "openai") == "gateway"
    assert provider_name_for("api.groq.com", "openai") == "groq"

    obsdeco.configure(database_url=sqlite_url)  # the mapping goes with its configuration

    assert provider_name_for("api.openai.com", "openai") == "openai"
    assert provider_name_for("llm.internal:8000", "openai") == "openai"


def test_one_mapping_between_opentelemetry_names_and_genai_prices_ids():
    pairs = {
        "google": "gcp.gemini",
        "mistral": "mistral_ai",
        "azure": "azure.openai",
        "aws": "aws.bedrock",
        "x-ai": "x_ai",
        "groq": "groq",
        "openai": "openai",
    }
    for price_id, name in pairs.items():
        assert otel_name(price_id) == name
        assert price_provider_id(name) == price_id
    assert price_provider_id("corp-gateway") == "corp-gateway"
    # ModelProvider values default to their OpenTelemetry names (GOOGLE's value is "google").
    assert default_provider_name("openai") == "openai"
    assert default_provider_name("anthropic") == "anthropic"
    assert default_provider_name("google") == "gcp.gemini"
    assert default_provider_name("other") == "other"


# --- configuration -----------------------------------------------------------------------------


def test_provider_hosts_from_the_environment(monkeypatch, sqlite_url):
    monkeypatch.setenv("OBSDECO_PROVIDER_HOSTS", json.dumps({"Llm.Internal:8000": "vllm"}))

    settings = obsdeco.configure(database_url=sqlite_url)

    assert settings.provider_hosts == {"llm.internal:8000": "vllm"}
    assert provider_name_for("llm.internal:8000", "openai") == "vllm"


@pytest.mark.parametrize(
    ("hosts", "message"),
    [
        ({"https://llm.internal": "vllm"}, "must be host[:port]"),
        ({"llm.internal/v1": "vllm"}, "without scheme or path"),
        ({"my gateway": "vllm"}, "is not a host name"),
        ({"llm.internal:0": "vllm"}, "not in 1-65535"),
        ({"llm.internal:70000": "vllm"}, "not in 1-65535"),
        ({"llm.internal": ""}, "must not be empty"),
        ({"llm.internal": " vllm"}, "surrounding spaces"),
        ({"llm.internal": "v" * 65}, "longer than 64 characters"),
        ({"llm.internal": 5}, "provider_hosts.llm.internal"),
        ({"llm.internal": "a", "LLM.INTERNAL": "b"}, "twice"),
        (["llm.internal"], "valid dictionary"),
    ],
)
def test_bad_provider_hosts_fail_at_configure(hosts, message):
    with pytest.raises(ValueError, match="provider_hosts") as error:
        obsdeco.configure(provider_hosts=hosts)
    assert message in str(error.value)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("{not json", "environment variable OBSDECO_PROVIDER_HOSTS"),
        ('{"https://x": "vllm"}', "must be host[:port]"),
    ],
)
def test_a_bad_provider_hosts_variable_fails_at_configure(monkeypatch, raw, message):
    monkeypatch.setenv("OBSDECO_PROVIDER_HOSTS", raw)

    with pytest.raises(ValueError, match=r"OBSDECO_PROVIDER_HOSTS|provider_hosts") as error:
        obsdeco.configure()
    assert message in str(error.value)


# --- captured calls ----------------------------------------------------------------------------


@pytest.fixture
def local_host(provider: ProviderServer) -> str:
    return f"{provider.host}:{provider.port}"


@pytest.mark.usefixtures("patched")
def test_an_openai_sdk_aimed_at_groq_is_groq_priced_at_groqs_price(
    sqlite_url, provider, local_host
):
    obsdeco.configure(database_url=sqlite_url, provider_hosts={local_host: "groq"})
    with openai.OpenAI(base_url=provider.openai_base_url, api_key="k", max_retries=0) as client:
        _, (call,) = in_session(
            lambda: client.chat.completions.create(model=GROQ_MODEL, messages=MESSAGES)
        )

    # Groq's Llama 3.3 70B: 7 x $0.59/M + 12 x $0.79/M
    expected = _price("groq", GROQ_MODEL, PROMPT_TOKENS, COMPLETION_TOKENS)
    assert expected == pytest.approx(7 * 0.59e-6 + 12 * 0.79e-6, abs=1e-12)
    assert call.provider is ModelProvider.OPENAI
    assert call.provider_name == "groq"
    assert (call.prompt_tokens, call.completion_tokens) == (PROMPT_TOKENS, COMPLETION_TOKENS)
    assert call.cost_usd == pytest.approx(expected, abs=1e-12)
    report = obsdeco.get_report(call.session_id)
    assert report.cost.by_provider == pytest.approx({"groq": expected}, abs=1e-12)
    assert report.tokens.by_provider["groq"].total_tokens == PROMPT_TOKENS + COMPLETION_TOKENS
    assert report.cost.unpriced_models == []


@pytest.mark.usefixtures("patched")
def test_without_a_mapping_the_local_server_is_openai_and_groqs_model_unpriced(
    sqlite_url, provider
):
    obsdeco.configure(database_url=sqlite_url)
    with openai.OpenAI(base_url=provider.openai_base_url, api_key="k", max_retries=0) as client:
        _, (call,) = in_session(
            lambda: client.chat.completions.create(model=GROQ_MODEL, messages=MESSAGES)
        )

    assert call.provider_name == "openai"
    assert call.cost_usd is None
    assert obsdeco.get_report(call.session_id).cost.unpriced_models == [GROQ_MODEL]


@pytest.mark.usefixtures("patched")
async def test_an_async_openai_sdk_is_named_from_its_host_too(sqlite_url, provider, local_host):
    obsdeco.configure(database_url=sqlite_url, provider_hosts={local_host: "deepseek"})
    async with openai.AsyncOpenAI(
        base_url=provider.openai_base_url, api_key="k", max_retries=0
    ) as client:

        @obsdeco.observe_session
        async def ask() -> str:
            await client.chat.completions.create(model="deepseek-chat", messages=MESSAGES)
            return obsdeco.current_session().id

        session_id = await ask()
    obsdeco.flush()

    (call,) = obsdeco.get_calls(session_id)
    assert call.provider_name == "deepseek"
    expected = _price("deepseek", "deepseek-chat", PROMPT_TOKENS, COMPLETION_TOKENS)
    assert call.cost_usd == pytest.approx(expected, abs=1e-12)


@pytest.mark.usefixtures("patched")
def test_an_anthropic_sdk_through_a_gateway_is_named_after_it_and_priced_by_its_model(
    sqlite_url, provider, local_host
):
    obsdeco.configure(database_url=sqlite_url, provider_hosts={local_host: "corp-gateway"})
    with anthropic.Anthropic(
        base_url=provider.anthropic_base_url, api_key="k", max_retries=0
    ) as client:
        _, (call,) = in_session(
            lambda: client.messages.create(
                model="claude-haiku-4-5", max_tokens=100, messages=MESSAGES
            )
        )

    # genai-prices knows no "corp-gateway": the model's own provider prices it,
    # 7 x $1/M + 12 x $5/M for Claude Haiku 4.5.
    expected = _price("anthropic", "claude-haiku-4-5", PROMPT_TOKENS, COMPLETION_TOKENS)
    assert expected == pytest.approx(7e-6 + 60e-6, abs=1e-12)
    assert call.provider is ModelProvider.ANTHROPIC
    assert call.provider_name == "corp-gateway"
    assert (call.prompt_tokens, call.completion_tokens) == (PROMPT_TOKENS, COMPLETION_TOKENS)
    assert call.cost_usd == pytest.approx(expected, abs=1e-12)
    report = obsdeco.get_report(call.session_id)
    assert report.cost.by_provider == pytest.approx({"corp-gateway": expected}, abs=1e-12)


@pytest.mark.usefixtures("patched")
def test_a_fault_naming_the_provider_keeps_the_sdks_name_and_harms_nothing(sqlite_url, provider):
    obsdeco.configure(database_url=sqlite_url)
    # A reply without usage: nothing is priced while genai-prices' snapshot is broken.
    reply = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Paris."},
                "finish_reason": "stop",
            }
        ],
    }
    provider.enqueue(Reply.json(reply))
    broken = DataSnapshot(
        providers=[Provider(id="broken", name="Broken", api_pattern="(")], from_auto_update=False
    )
    faults = obsdeco.stats().internal_faults
    base_url = f"http://localhost:{provider.port}/v1"
    _known_provider.cache_clear()  # the host is looked up anew, in the broken snapshot

    @obsdeco.observe_session
    def ask(client: openai.OpenAI) -> tuple[object, str]:
        answer = client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        return answer, obsdeco.current_session().id

    with openai.OpenAI(base_url=base_url, api_key="k", max_retries=0) as client:
        set_custom_snapshot(broken)
        try:
            response, session_id = ask(client)
            obsdeco.flush()  # the record is built, and its provider named, here
        finally:
            set_custom_snapshot(None)

    assert response.choices[0].message.content == "Paris."
    (call,) = obsdeco.get_calls(session_id)
    assert call.provider_name == "openai"
    assert call.response_model == "gpt-4o"
    assert obsdeco.stats().internal_faults == faults + 1


# --- the explicit API --------------------------------------------------------------------------


def _explicit(**fields) -> obsdeco.LLMCall:
    collector = obsdeco.MetricsCollector("explicit")
    session = collector.start_session()
    values = {
        "provider": "openai",
        "model_name": GROQ_MODEL,
        "latency_ms": 50.0,
        "prompt_tokens": 1_000,
        "completion_tokens": 100,
    }
    call = collector.record_llm_call(session, **(values | fields))
    collector.end_session(session)
    return call


def test_record_llm_call_takes_a_provider_name_and_prices_at_it(configured):
    call = _explicit(provider_name="groq")
    obsdeco.flush()

    assert call.provider_name == "groq"
    (stored,) = obsdeco.get_calls(call.session_id)
    # 1,000 x $0.59/M + 100 x $0.79/M
    assert stored.cost_usd == pytest.approx(0.000669, abs=1e-12)


def test_record_llm_call_without_a_provider_name_takes_the_providers(configured):
    assert _explicit().provider_name == "openai"
    assert _explicit(provider="anthropic").provider_name == "anthropic"
    assert _explicit(provider=ModelProvider.OTHER).provider_name == "other"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "at least 1 character"),
        ("   ", "should match pattern"),  # spaces around, or nothing but spaces
        ("g" * 65, "at most 64 characters"),
        ("groq\n", "should match pattern"),  # a control character
        (7, "valid string"),
    ],
)
def test_a_bad_provider_name_is_refused_and_nothing_recorded(configured, name, message):
    with pytest.raises(ValidationError, match="provider_name") as error:
        _explicit(provider_name=name)
    assert message in str(error.value)
    obsdeco.flush()
    assert obsdeco.report("explicit").totals.calls == 0


# --- storage and project reports ---------------------------------------------------------------


def _record_mixed(project: str, timestamp: datetime) -> str:
    """Calls a second apart in one hour that differ in who answered them."""
    collector = obsdeco.MetricsCollector(project)
    session = collector.start_session("mixed")
    calls = [
        {"provider_name": "openai"},
        {"provider_name": "azure.openai"},
        {"provider_name": "openrouter", "model_name": "openai/gpt-4o", "agent_name": "Router"},
        {"provider_name": "groq", "model_name": GROQ_MODEL, "latency_ms": 40.0},
        {"provider": "anthropic", "model_name": "claude-haiku-4-5"},
    ]
    for index, fields in enumerate(calls):
        values = {
            "provider": "openai",
            "model_name": "gpt-4o",
            "latency_ms": 100.0,
            "prompt_tokens": 1_000,
            "completion_tokens": 100,
            "timestamp": timestamp + timedelta(seconds=index),
        }
        collector.record_llm_call(session, **(values | fields))
    collector.end_session(session)
    return session.id


# gpt-4o is $2.50/M in, $10/M out at OpenAI, Azure and OpenRouter: 1,000 x 2.5 + 100 x 10
GPT_4O = 0.0035
GROQ = 0.000669  # 1,000 x $0.59/M + 100 x $0.79/M
HAIKU = 0.0015  # 1,000 x $1/M + 100 x $5/M
BY_PROVIDER = {
    "anthropic": HAIKU,
    "azure.openai": GPT_4O,
    "groq": GROQ,
    "openai": GPT_4O,
    "openrouter": GPT_4O,
}


def test_provider_names_are_stored_and_reports_group_by_them(configured):
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
    session_id = _record_mixed("shop", hour + timedelta(minutes=10))
    obsdeco.flush()
    sessions_in_memory.clear()  # read back from the store

    stored = obsdeco.get_calls(session_id)
    assert [call.provider_name for call in stored] == [
        "openai",
        "azure.openai",
        "openrouter",
        "groq",
        "anthropic",
    ]
    assert [call.cost_usd for call in stored] == pytest.approx(
        [GPT_4O, GPT_4O, GPT_4O, GROQ, HAIKU], abs=1e-12
    )
    session_report = obsdeco.get_report(session_id)
    whole_hours = obsdeco.report("shop")  # from the hourly rollups only
    with_edges = obsdeco.report("shop", since=hour + timedelta(minutes=5))  # from the calls
    for report in (session_report, whole_hours, with_edges):
        assert report.cost.by_provider == pytest.approx(BY_PROVIDER, abs=1e-12)
        assert {name: counts.calls for name, counts in report.tokens.by_provider.items()} == {
            name: 1 for name in BY_PROVIDER
        }
        assert report.cost.total_usd == pytest.approx(sum(BY_PROVIDER.values()), abs=1e-12)
    engine = sqlalchemy.create_engine(configured)
    with engine.connect() as connection:
        rollup_rows = connection.execute(
            sqlalchemy.select(call_rollups.c.provider_name, call_rollups.c.calls).order_by(
                call_rollups.c.provider_name
            )
        ).all()
    engine.dispose()
    assert [tuple(row) for row in rollup_rows] == [(name, 1) for name in sorted(BY_PROVIDER)]


def test_reports_render_cost_by_provider(configured):
    session_id = _record_mixed("shop", datetime.now(UTC) - timedelta(hours=2))
    obsdeco.flush()

    for report in (obsdeco.get_report(session_id), obsdeco.report("shop")):
        text = str(report).split("Cost by provider")[1].split("\n\n")[0]
        assert "groq          $0.0007" in text
        assert "azure.openai  $0.0035" in text
        markdown = report.to_markdown().split("## Cost by provider")[1].split("\n## ")[0]
        assert "| openrouter | $0.0035 |" in markdown


def _as_an_earlier_obsdeco_left_it(url: str) -> None:
    """Take `provider_name` out of the store, as a store written before it existed: no column
    on llm_calls, hourly rollups keyed without it (their rows kept), no version table."""
    engine = sqlalchemy.create_engine(url)
    old_columns = [column for column in call_rollups.columns if column.name != "provider_name"]
    old_rollups = sqlalchemy.Table(
        "call_rollups",
        sqlalchemy.MetaData(),
        *(
            sqlalchemy.Column(
                column.name, column.type, primary_key=column.primary_key, nullable=column.nullable
            )
            for column in old_columns
        ),
    )
    names = [column.name for column in old_columns]
    with engine.begin() as connection:
        rows = connection.execute(sqlalchemy.select(*old_columns)).all()
        connection.execute(sqlalchemy.text(f"DROP TABLE {VERSION_TABLE}"))
        connection.execute(sqlalchemy.text("ALTER TABLE llm_calls DROP COLUMN provider_name"))
        connection.execute(sqlalchemy.text("DROP TABLE call_rollups"))
        old_rollups.create(connection)
        connection.execute(
            old_rollups.insert(), [dict(zip(names, row, strict=True)) for row in rows]
        )
    engine.dispose()


def test_a_store_from_before_provider_names_is_upgraded_on_open(configured):
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=5)
    collector = obsdeco.MetricsCollector("shop")
    session = collector.start_session("old")
    base = {"latency_ms": 100.0, "prompt_tokens": 1_000, "completion_tokens": 100}
    for index, (provider, model) in enumerate(
        (
            ("openai", "gpt-4o"),
            ("openai", "gpt-4o"),
            ("anthropic", "claude-haiku-4-5"),
            ("other", "in-house"),
        )
    ):
        collector.record_llm_call(
            session,
            provider=provider,
            model_name=model,
            timestamp=hour + timedelta(seconds=index),
            **base,
        )
    collector.end_session(session)
    obsdeco.flush()
    before = obsdeco.report("shop").model_dump()
    _as_an_earlier_obsdeco_left_it(configured)
    sessions_in_memory.clear()

    obsdeco.configure(project="test", database_url=configured)  # opens the store anew

    stored = obsdeco.get_calls(session.id)
    assert [call.provider_name for call in stored] == ["openai", "openai", "anthropic", "other"]
    after = obsdeco.report("shop")
    assert after.model_dump() == before
    assert after.cost.by_provider == pytest.approx(
        {"anthropic": HAIKU, "openai": 2 * GPT_4O, "other": 0.0}, abs=1e-12
    )
    # The rollups' key now holds provider_name: a call differing only in it gets its own row.
    later = obsdeco.MetricsCollector("shop")
    added = later.start_session("new")
    later.record_llm_call(
        added,
        provider="openai",
        provider_name="azure.openai",
        model_name="gpt-4o",
        timestamp=hour,
        **base,
    )
    later.end_session(added)
    obsdeco.flush()
    assert obsdeco.report("shop").cost.by_provider == pytest.approx(
        {"anthropic": HAIKU, "azure.openai": GPT_4O, "openai": 2 * GPT_4O, "other": 0.0},
        abs=1e-12,
    )


def test_an_ipv6_host_is_named_as_provider_hosts_keys_name_it():
    obsdeco.configure(provider_hosts={"[::1]:8000": "vllm"})

    assert host_key("::1", 8000) == "[::1]:8000"
    assert host_key("API.Groq.com", None) == "api.groq.com"
    assert provider_name_for(host_key("::1", 8000), "openai") == "vllm"
