"""Prompt experiments: deterministic assignment, what is recorded, reports and winners, the CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy
from streamlit.testing.v1 import AppTest

import obsdeco
from obsdeco.collector import sessions_in_memory
from obsdeco.engine.experiments import assigned_variant
from obsdeco.storage.migrations.state import VERSION_TABLE

VARIANTS = {"short": "Be brief.", "long": "Explain in detail."}
PRICES = {
    "m-cheap": {"input": 1.0, "output": 2.0},
    "m-dear": {"input": 10.0, "output": 20.0},
    "m-cheap-too": {"input": 1.0000001, "output": 2.0},
}
Call = tuple[str, float, bool]
"""(model, latency_ms, success) of a call with 1,000 prompt and 500 completion tokens."""


@pytest.fixture
def priced(configured: str) -> str:
    obsdeco.configure(project="test", database_url=configured, pricing_overrides=PRICES)
    return configured


def run_sessions(
    plan: dict[str, list[list[Call]]], scores: dict[str, float] | None = None
) -> dict[str, list[str]]:
    """Sessions of experiment "greeting" as planned per variant (sessions whose hash picks a
    variant with enough sessions already take no part); each session's calls are recorded
    after the assignment, and the session scored `scores[variant]` if given."""
    obs = obsdeco.Observatory("test")
    pending = {variant: list(sessions) for variant, sessions in plan.items()}
    ids: dict[str, list[str]] = {variant: [] for variant in plan}
    while any(pending.values()):
        with obs.track() as session:
            variant = assigned_variant(session.id, "greeting", list(VARIANTS))
            if not pending[variant]:
                continue
            assert obsdeco.experiment("greeting", VARIANTS) == VARIANTS[variant]
            for model, latency, success in pending[variant].pop(0):
                obs.record_call(
                    provider="openai",
                    model_name=model,
                    prompt_tokens=1_000,
                    completion_tokens=500,
                    latency_ms=latency,
                    success=success,
                    error_type=None if success else "server_error",
                )
        ids[variant].append(session.id)
        if scores:
            obsdeco.score(session.id, "helpful", scores[variant])
    return ids


def two_calls(model: str, base: float, sessions: int = 6, failing: int = -1) -> list[list[Call]]:
    return [
        [(model, base + index, True), (model, base + 100 + index, index != failing)]
        for index in range(sessions)
    ]


def test_assignment_is_deterministic_per_session_and_experiment():
    def assigned(session_id: str, name: str = "greeting", variants: dict = VARIANTS) -> object:
        session = obsdeco.Session(id=session_id, project_name="test")
        first = obsdeco.experiment(name, variants, session=session)
        assert obsdeco.experiment(name, variants, session=session) == first
        return first

    assert assigned("session-0001") == "Be brief."
    assert assigned("session-0005") == "Explain in detail."
    assert assigned("session-0001", variants={"a": 1, "b": 2, "c": 3}) == 3
    assert assigned("session-0003", variants={"a": 1, "b": 2, "c": 3}) == 1
    session = obsdeco.Session(id="session-0005", project_name="test")
    obsdeco.experiment("greeting", VARIANTS, session=session)
    obsdeco.experiment("colour", {"red": 1, "blue": 2}, session=session)
    assert session.experiments == {"greeting": "long", "colour": "red"}
    picked = {
        assigned_variant(f"session-{index}", "greeting", list(VARIANTS)) for index in range(40)
    }
    assert picked == {"short", "long"}


def test_bad_experiments_are_refused_naming_the_problem():
    def refused(*arguments: object, **options: object) -> str:
        try:
            obsdeco.experiment(*arguments, **options)  # type: ignore[arg-type]
        except ValueError as error:
            return str(error)
        raise AssertionError("accepted")

    assert refused("greeting", VARIANTS) == (
        "experiment 'greeting': no active session; call experiment() inside "
        "@obsdeco.observe_session or Observatory.track(), or pass session="
    )
    with obsdeco.Observatory("test").track() as session:
        assert refused("greeting", {}) == (
            "variants must be a non-empty dict of variant name -> value, got {}"
        )
        assert refused("greeting", ["a", "b"]) == (
            "variants must be a non-empty dict of variant name -> value, got ['a', 'b']"
        )
        assert refused("greeting", {1: "x"}) == "variant names must be strings, got 1 (int)"
        assert refused("greeting", {"": "x"}) == "variant name: must not be empty (got '')"
        assert refused("", VARIANTS) == "experiment name: must not be empty (got '')"
        assert refused("a\x00", VARIANTS).startswith(
            "experiment name: must not contain NUL characters"
        )
        variant = assigned_variant(session.id, "greeting", list(VARIANTS))
        obsdeco.experiment("greeting", VARIANTS)
        assert refused("greeting", {"a": 1, "b": 2}) == (
            f"experiment 'greeting': this session was assigned variant {variant!r}, which is "
            "not among the variants given ('a', 'b')"
        )
    assert refused("colour", {"red": 1}, session=session) == (
        f"experiment 'colour': session {session.id!r} has ended; variants are assigned while "
        "a session runs"
    )
    assert obsdeco.experiment("greeting", VARIANTS, session=session) == VARIANTS[variant]


def test_the_assignment_is_stored_on_the_session_and_on_later_calls(
    configured, provider, openai_client, patched
):
    def ask() -> None:
        openai_client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}]
        )

    @obsdeco.observe_session
    def handle() -> obsdeco.Session:
        ask()
        obsdeco.experiment("greeting", VARIANTS)
        ask()
        obsdeco.experiment("colour", {"red": 1, "blue": 2})
        ask()
        return obsdeco.current_session()

    session = handle()
    expected = [
        {},
        {"greeting": session.experiments["greeting"]},
        session.experiments,
    ]
    assert [call.experiments for call in obsdeco.get_calls(session.id)] == expected
    obsdeco.flush()
    sessions_in_memory.clear()
    stored = obsdeco.get_calls(session.id)
    assert [call.experiments for call in stored] == expected
    backend = obsdeco.runtime.get_runtime().backend
    assert backend.get_session(session.id).session.experiments == session.experiments
    assert backend.experiment_sessions("colour") == {session.id: session.experiments["colour"]}


def test_the_report_has_exact_figures_per_variant_and_a_winner(priced):
    ids = run_sessions(
        {"short": two_calls("m-cheap", 100.0), "long": two_calls("m-dear", 300.0, failing=0)},
        scores={"short": 0.9, "long": 0.7},
    )
    report = obsdeco.experiment_report("greeting", project="test")

    assert list(report.variants) == ["long", "short"]
    short, long = report.variants["short"], report.variants["long"]
    assert (short.sessions, short.calls, short.errors, long.sessions, long.calls, long.errors) == (
        6,
        12,
        0,
        6,
        12,
        1,
    )
    assert short.cost_per_session_usd == pytest.approx(0.004, rel=1e-12)
    assert long.cost_per_session_usd == pytest.approx(0.04, rel=1e-12)
    assert (short.latency_p50_ms, short.latency_p95_ms) == pytest.approx((152.5, 204.45))
    assert (long.latency_p50_ms, long.latency_p95_ms) == pytest.approx((352.5, 404.45))
    assert (short.success_rate, long.success_rate) == (1.0, pytest.approx(11 / 12))
    assert (short.mean_score, long.mean_score) == pytest.approx((0.9, 0.7))
    assert (short.scores, long.scores) == (6, 6)
    assert report.best == report.winner == "short"
    assert report.verdict == (
        "'short' is significantly cheaper per session than every other variant, with quality "
        "not significantly worse"
    )
    assert short.cost_per_session_diff == obsdeco.Difference(value=0.0, low=0.0, high=0.0)
    cost = long.cost_per_session_diff
    assert (cost.value, cost.low, cost.high) == pytest.approx((0.036, 0.036, 0.036), rel=1e-9)
    assert long.success_rate_diff.value == pytest.approx(-1 / 12)
    assert long.success_rate_diff.high == pytest.approx(0.0)
    assert long.success_rate_diff.low < 0
    assert long.mean_score_diff.value == pytest.approx(-0.2)
    # reproducible: the bootstrap's seed is fixed
    assert obsdeco.experiment_report("greeting", project="test") == report
    text = str(report)
    assert "  winner           short\n" in text
    assert "Variant long\n  sessions           6\n  calls              12 (1 failed)\n" in text
    assert "  latency p50 / p95  152 ms / 204 ms\n" in text
    assert sorted(obsdeco.get_scores(experiment="greeting"), key=lambda s: s.session_id) == sorted(
        obsdeco.get_scores(), key=lambda s: s.session_id
    )
    assert len(ids["short"]) == len(ids["long"]) == 6
    assert obsdeco.list_experiments() == [
        obsdeco.ExperimentSummary(name="greeting", variants={"long": 6, "short": 6}, sessions=12)
    ]


@pytest.mark.parametrize(
    ("plan", "scores", "verdict"),
    [
        (
            {"short": two_calls("m-cheap", 100.0), "long": two_calls("m-cheap", 100.0)},
            None,
            "'long' is not significantly cheaper per session than 'short'",
        ),
        (
            {"short": two_calls("m-cheap", 100.0), "long": two_calls("m-cheap-too", 100.0)},
            None,
            "'short' is not significantly cheaper per session than 'long'",
        ),
        (
            {"short": two_calls("m-cheap", 100.0, 4), "long": two_calls("m-dear", 100.0, 4)},
            None,
            "too few sessions: each variant needs 5 ('long' has 4, 'short' has 4)",
        ),
        (
            {"short": two_calls("m-cheap", 100.0), "long": two_calls("m-dear", 100.0)},
            {"short": 0.5, "long": 0.9},
            "'short' is cheaper, but its mean score is significantly worse than 'long''s",
        ),
    ],
    ids=["equal-costs", "rounding-only", "too-few-sessions", "worse-quality"],
)
def test_no_winner_without_a_clear_cheaper_variant_of_no_worse_quality(
    priced, plan, scores, verdict
):
    run_sessions(plan, scores)
    report = obsdeco.experiment_report("greeting")
    assert (report.winner, report.verdict) == (None, verdict)
    assert "  winner           none\n" in str(report)


def test_an_experiment_without_sessions_has_an_empty_report(priced):
    report = obsdeco.experiment_report("nothing")
    assert (report.variants, report.best, report.winner) == ({}, None, None)
    assert report.verdict == "no session was assigned in this experiment"
    with pytest.raises(ValueError, match=r"^experiment name: must not be empty \(got ''\)$"):
        obsdeco.experiment_report("")


def test_auto_select_gives_new_sessions_the_winner(priced):
    long_by_hash = obsdeco.Session(id="session-0005", project_name="test")
    # no winner yet: the hash decides (and "no winner" is cached for a while)
    assert obsdeco.experiment("greeting", VARIANTS, True, session=long_by_hash) == VARIANTS["long"]
    run_sessions({"short": two_calls("m-cheap", 100.0), "long": two_calls("m-dear", 300.0)})
    later = obsdeco.Session(id="session-0010", project_name="test")
    assert obsdeco.experiment("greeting", VARIANTS, True, session=later) == VARIANTS["long"]
    assert obsdeco.experiment_report("greeting", project="test").winner == "short"  # refreshes
    newest = obsdeco.Session(id="session-0012", project_name="test")
    assert assigned_variant(newest.id, "greeting", list(VARIANTS)) == "long"
    assert obsdeco.experiment("greeting", VARIANTS, True, session=newest) == VARIANTS["short"]
    assert newest.experiments == {"greeting": "short"}
    # a session already assigned keeps its variant; without auto_select the hash decides
    assert obsdeco.experiment("greeting", VARIANTS, True, session=later) == VARIANTS["long"]
    plain = obsdeco.Session(id="session-0013", project_name="test")
    assert assigned_variant(plain.id, "greeting", list(VARIANTS)) == "long"
    assert obsdeco.experiment("greeting", VARIANTS, session=plain) == VARIANTS["long"]


def _obsdeco(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "obsdeco.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_cli_lists_experiments_and_prints_a_report(sqlite_url):
    obsdeco.configure(project="test", database_url=sqlite_url)
    with obsdeco.Observatory("test").track():
        pass
    obsdeco.flush()
    assert _obsdeco("experiments", "--database-url", sqlite_url).stdout == (
        "no experiments stored yet\n"
    )
    run_sessions({"short": two_calls("gpt-4o-mini", 100.0), "long": two_calls("gpt-4o", 300.0, 5)})
    obsdeco.flush()
    listed = _obsdeco("experiments", "--database-url", sqlite_url)
    assert listed.returncode == 0
    assert listed.stdout == (
        "experiment  sessions  variants (sessions)\ngreeting    11        long (5), short (6)\n"
    )
    shown = _obsdeco("experiments", "greeting", "--database-url", sqlite_url)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("obsdeco experiment report: greeting\n  project          all\n")
    assert "  best (cheapest)  short\n  winner           short\n" in shown.stdout
    assert "\nVariant short\n  sessions           6\n  calls              12 (0 failed)\n" in (
        shown.stdout
    )
    missing = _obsdeco("experiments", "nothing", "--database-url", sqlite_url)
    assert (missing.returncode, missing.stderr) == (1, "no sessions in experiment 'nothing'\n")


def test_an_older_store_gains_the_experiment_columns_and_the_scores_table(configured):
    obs = obsdeco.Observatory("test")
    with obs.track("old") as session:
        obs.record_call(
            provider="openai",
            model_name="gpt-4o",
            prompt_tokens=10,
            completion_tokens=5,
            latency_ms=10.0,
        )
    obsdeco.flush()
    engine = sqlalchemy.create_engine(configured)
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text(f"DROP TABLE {VERSION_TABLE}"))
        connection.execute(sqlalchemy.text("DROP TABLE scores"))
        for table in ("sessions", "llm_calls"):
            connection.execute(sqlalchemy.text(f"ALTER TABLE {table} DROP COLUMN experiments"))
    sessions_in_memory.clear()

    obsdeco.configure(project="test", database_url=configured)  # opens the store anew

    (call,) = obsdeco.get_calls(session.id)
    with engine.connect() as connection:
        inspector = sqlalchemy.inspect(connection)
        for table in ("sessions", "llm_calls"):
            assert "experiments" in {column["name"] for column in inspector.get_columns(table)}
        assert inspector.has_table("scores")
    engine.dispose()
    assert call.experiments == {}
    assert obsdeco.get_report(session.id).session.experiments == {}
    obsdeco.score(call.id, "correct", True)
    obsdeco.flush()
    assert [score.call_id for score in obsdeco.get_scores()] == [call.id]
    assert obsdeco.experiment_report("greeting").variants == {}
    assert obsdeco.list_experiments() == []


def test_the_dashboard_shows_experiments_and_scores(sqlite_url):
    obsdeco.configure(project="test", database_url=sqlite_url)
    ids = run_sessions(
        {"short": two_calls("gpt-4o-mini", 100.0), "long": two_calls("gpt-4o", 300.0)},
        scores={"short": 0.75, "long": 0.5},
    )
    obsdeco.flush()

    def run(**params: str) -> AppTest:
        app = AppTest.from_file(str(Path(__file__).parents[1] / "dashboard" / "app.py"))
        for name, value in params.items():
            app.query_params[name] = value
        app.run(timeout=30)
        assert not app.exception, [error.message for error in app.exception]
        return app

    app = run(project="test", range="7d", page="Experiments")
    listed, compared = (frame.value for frame in app.dataframe)
    assert listed.to_dict("records") == [
        {"Experiment": "greeting", "Variant": "long", "Sessions": 6},
        {"Experiment": "greeting", "Variant": "short", "Sessions": 6},
    ]
    expected = obsdeco.experiment_report("greeting", project="test")
    table = compared.set_index("Variant")
    assert table["Sessions"].to_dict() == {"long": 6, "short": 6}
    assert table["Mean score"].to_dict() == pytest.approx({"long": 0.5, "short": 0.75})
    assert table["Cost per session (USD)"].to_dict() == pytest.approx(
        {name: stats.cost_per_session_usd for name, stats in expected.variants.items()}
    )
    assert f"Winner: short · {expected.verdict}" in [text.value for text in app.text]

    app = run(project="test", range="7d", page="Sessions", session=ids["short"][0])
    (scores,) = [
        f.value for f in app.dataframe if list(f.value.columns) == ["Score", "Mean", "Scores"]
    ]
    assert scores.to_dict("records") == [{"Score": "helpful", "Mean": 0.75, "Scores": 1}]
