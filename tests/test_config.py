"""configure(): arguments over OBSDECO_* variables over defaults; bad values fail at once."""

from __future__ import annotations

import pytest

import obsdeco
from obsdeco.config import DEFAULT_DATABASE_URL, build_settings


def test_defaults_without_any_configuration():
    settings = build_settings(environ={})

    assert settings.project == "default"
    assert settings.database_url == DEFAULT_DATABASE_URL == "sqlite:///obsdeco.db"
    assert settings.capture_content is False
    assert settings.scrub_pii is True
    assert settings.sample_rate == 1.0
    assert settings.pricing_overrides == {}


def test_environment_fills_what_arguments_leave_out():
    environ = {
        "OBSDECO_PROJECT": "from-env",
        "OBSDECO_SAMPLE_RATE": "0.25",
        "OBSDECO_CAPTURE_CONTENT": "true",
        "OBSDECO_DATABASE_URL": "postgresql://postgres@db:5432/prod",
        "OBSDECO_PRICING_OVERRIDES": '{"my-model": {"input": 1, "output": 2}}',
    }

    settings = build_settings(environ=environ, project="from-argument")

    assert settings.project == "from-argument"
    assert settings.sample_rate == 0.25
    assert settings.capture_content is True
    assert settings.database_url == "postgresql+psycopg://postgres@db:5432/prod"
    assert settings.pricing_overrides == {"my-model": {"input": 1.0, "output": 2.0}}


def test_configure_replaces_the_whole_configuration(monkeypatch, tmp_path):
    obsdeco.configure(project="first", sample_rate=0.5, database_url=f"sqlite:///{tmp_path}/a.db")
    obsdeco.configure(database_url=f"sqlite:///{tmp_path}/b.db")

    settings = obsdeco.get_settings()
    assert settings.project == "default"
    assert settings.sample_rate == 1.0


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"sample_rate": 2.0}, "sample_rate"),
        ({"sample_rate": -0.1}, "sample_rate"),
        ({"database_url": "mysql://root@localhost/db"}, "database_url scheme 'mysql'"),
        ({"database_url": "postgresql+psycopg2://u@h/db"}, "driver 'postgresql+psycopg2'"),
        ({"database_url": "not a url"}, "database_url"),
        ({"project": ""}, "project"),
        ({"pricing_overrides": {"m": {"input": 1}}}, "needs both 'input' and 'output'"),
        ({"pricing_overrides": {"m": {"input": 1, "output": 2, "oops": 3}}}, "unknown keys"),
        ({"max_queue_size": 0}, "max_queue_size"),
    ],
)
def test_bad_values_raise_at_configure_naming_the_option(options, named):
    with pytest.raises(ValueError, match=r"invalid obsdeco configuration|database_url") as error:
        obsdeco.configure(**options)

    assert named in str(error.value)


def test_bad_environment_value_names_the_variable(monkeypatch):
    monkeypatch.setenv("OBSDECO_CAPTURE_CONTENT", "maybe")

    with pytest.raises(ValueError, match="OBSDECO_CAPTURE_CONTENT"):
        obsdeco.configure()


def test_unknown_option_is_a_type_error():
    with pytest.raises(TypeError, match="sample_rat"):
        build_settings(environ={}, sample_rat=0.5)


def test_later_records_go_to_the_new_database(tmp_path):
    from tests.conftest import count_rows

    first, second = f"sqlite:///{tmp_path}/first.db", f"sqlite:///{tmp_path}/second.db"
    obsdeco.configure(database_url=first)
    collector = obsdeco.MetricsCollector("test")
    session = collector.start_session()
    collector.record_llm_call(session, provider="openai", model_name="gpt-4o", latency_ms=1)

    obsdeco.configure(database_url=second)
    collector.record_llm_call(session, provider="openai", model_name="gpt-4o", latency_ms=2)
    collector.record_llm_call(session, provider="openai", model_name="gpt-4o", latency_ms=3)

    assert obsdeco.flush(timeout=30)
    assert count_rows(first, "llm_calls") == 1
    assert count_rows(second, "llm_calls") == 2
