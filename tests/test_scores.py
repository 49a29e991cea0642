"""Scores: validation, storage through the writer, reports' scores sections, listeners."""

from __future__ import annotations

import base64
import re

import pytest
import sqlalchemy

import obsdeco
from obsdeco.collector import sessions_in_memory
from obsdeco.engine.scores import add_score_listener, remove_score_listener
from tests.conftest import count_rows

PRICES = {"m-cheap": {"input": 1.0, "output": 2.0}, "m-dear": {"input": 10.0, "output": 20.0}}


def _call(obs: obsdeco.Observatory, model: str, agent: str | None = None) -> obsdeco.LLMCall:
    return obs.record_call(
        provider="openai",
        model_name=model,
        prompt_tokens=1_000,
        completion_tokens=500,
        latency_ms=100.0,
        agent_name=agent,
    )


@pytest.fixture
def scored(configured: str) -> str:
    obsdeco.configure(project="test", database_url=configured, pricing_overrides=PRICES)
    return configured


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (("helpful", float("nan")), "value must be a finite number in [0, 1], got nan"),
        (("helpful", float("inf")), "value must be a finite number in [0, 1], got inf"),
        (("helpful", 1.5), "value must be in [0, 1], got 1.5"),
        (("helpful", -0.1), "value must be in [0, 1], got -0.1"),
        (("helpful", "good"), "value must be a number in [0, 1] or a bool, got 'good' (str)"),
        (("helpful", None), "value must be a number in [0, 1] or a bool, got None (NoneType)"),
        (("", 1.0), "score name: must not be empty (got '')"),
        (("a\x00b", 1.0), "score name: must not contain NUL characters (got 'a\\x00b')"),
        (("x" * 201, 1.0), "score name: must be at most 200 characters"),
    ],
)
def test_bad_scores_are_refused_naming_the_problem(arguments, message):
    with obsdeco.Observatory("test").track() as session:
        pass
    with pytest.raises(ValueError, match=f"^{re.escape(message)}"):
        obsdeco.score(session.id, *arguments)
    obsdeco.flush()
    assert obsdeco.get_scores() == []


def test_unknown_targets_and_bad_comments_are_refused():
    unknown = (
        "target_id: no session or LLM call with id '0123456789abcdef' in this process or in "
        "the store"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(unknown)}$"):
        obsdeco.score("0123456789abcdef", "helpful", True)
    not_an_id = "target_id must be the id of a session or an LLM call, got 5"
    with pytest.raises(ValueError, match=f"^{re.escape(not_an_id)}$"):
        obsdeco.score(5, "helpful", True)  # type: ignore[arg-type]
    with obsdeco.Observatory("test").track() as session:
        pass
    with pytest.raises(ValueError, match=r"^comment must be text or None, got int$"):
        obsdeco.score(session.id, "helpful", True, comment=5)  # type: ignore[arg-type]


def test_scores_are_stored_and_read_back(scored):
    obs = obsdeco.Observatory("test")
    with obs.track("ticket") as session:
        call = _call(obs, "m-cheap", "Writer")
    thumbs = obsdeco.score(session.id, "thumbs", True, comment="great answer")
    judged = obsdeco.score(call.id, "correct", 0.25)
    obsdeco.flush()

    assert count_rows(scored, "scores") == 2
    stored = obsdeco.get_scores(session_id=session.id)
    assert stored == [thumbs, judged]
    assert [
        (s.target_id, s.session_id, s.call_id, s.name, s.value, s.comment, s.model, s.agent_name)
        for s in stored
    ] == [
        (session.id, session.id, None, "thumbs", 1.0, "great answer", None, None),
        (call.id, session.id, call.id, "correct", 0.25, None, "m-cheap", "Writer"),
    ]
    assert stored[0].project_name == "test"
    assert obsdeco.get_scores(target_id=session.id) == [thumbs]
    assert obsdeco.get_scores(name="correct") == [judged]
    assert obsdeco.get_scores(project="elsewhere") == []
    assert obsdeco.score(session, "thumbs", False).value == 0.0  # the Session itself


def test_a_session_just_ended_and_a_call_still_queued_can_be_scored(scored):
    obs = obsdeco.Observatory("test")
    with obs.track() as session:
        call = _call(obs, "m-cheap")
    obsdeco.score(session.id, "thumbs", True)  # in memory: nothing waited for
    sessions_in_memory.clear()  # now only the writer's queue (then the store) knows them
    obsdeco.score(call.id, "correct", 1.0)
    obsdeco.score(session.id, "thumbs", 0.5)
    obsdeco.flush()
    assert [(s.name, s.call_id, s.value) for s in obsdeco.get_scores(session_id=session.id)] == [
        ("thumbs", None, 1.0),
        ("correct", call.id, 1.0),
        ("thumbs", None, 0.5),
    ]
    # read back from the store: the session's report has them too
    assert obsdeco.get_report(session.id).scores.by_name == {
        "correct": obsdeco.ScoreStats(count=1, mean=1.0),
        "thumbs": obsdeco.ScoreStats(count=2, mean=0.75),
    }


def test_session_and_project_reports_show_exact_means(scored):
    obs = obsdeco.Observatory("test")
    with obs.track("first") as first:
        obsdeco.experiment("tone", {"plain": "p", "warm": "w"})
        plain = first.experiments["tone"]
        cheap = _call(obs, "m-cheap", "Planner")
        dear = _call(obs, "m-dear", None)
    with obs.track("second") as second:
        other = _call(obs, "m-cheap", "Planner")
    obsdeco.score(first.id, "helpful", 0.5)
    obsdeco.score(cheap.id, "helpful", 1.0)
    obsdeco.score(dear.id, "helpful", 0.0)
    obsdeco.score(dear.id, "correct", True)
    obsdeco.score(other.id, "helpful", 0.75)
    obsdeco.score(second.id, "helpful", 0.25)

    stats = obsdeco.ScoreStats
    report = obsdeco.get_report(first.id)
    assert report.scores.model_dump() == {
        "count": 4,
        "by_name": {"correct": {"count": 1, "mean": 1.0}, "helpful": {"count": 3, "mean": 0.5}},
        "by_model": {
            "m-cheap": {"helpful": {"count": 1, "mean": 1.0}},
            "m-dear": {"correct": {"count": 1, "mean": 1.0}, "helpful": {"count": 1, "mean": 0.0}},
        },
        "by_agent": {
            "(none)": {"correct": {"count": 1, "mean": 1.0}, "helpful": {"count": 1, "mean": 0.0}},
            "Planner": {"helpful": {"count": 1, "mean": 1.0}},
        },
        "by_variant": {
            "tone": {
                plain: {"correct": {"count": 1, "mean": 1.0}, "helpful": {"count": 3, "mean": 0.5}}
            }
        },
    }
    text = str(report)
    assert "Scores\n  correct  1.000 (1 score)\n  helpful  0.500 (3 scores)" in text
    assert f"  tone={plain} / helpful  0.500 (3 scores)" in text
    assert "| Planner / helpful | 1.000 (1 score) |" in report.to_markdown()

    project = obsdeco.report("test")
    assert project.scores.count == 6
    assert project.scores.by_name == {
        "correct": stats(count=1, mean=1.0),
        "helpful": stats(count=5, mean=0.5),
    }
    assert project.scores.by_model == {
        "m-cheap": {"helpful": stats(count=2, mean=0.875)},
        "m-dear": {"correct": stats(count=1, mean=1.0), "helpful": stats(count=1, mean=0.0)},
    }
    assert project.scores.by_agent == {
        "(none)": {"correct": stats(count=1, mean=1.0), "helpful": stats(count=1, mean=0.0)},
        "Planner": {"helpful": stats(count=2, mean=0.875)},
    }
    assert project.scores.by_variant == {
        "tone": {plain: {"correct": stats(count=1, mean=1.0), "helpful": stats(count=3, mean=0.5)}}
    }
    assert obsdeco.report("test", model="m-dear").scores.by_name == {
        "correct": stats(count=1, mean=1.0),
        "helpful": stats(count=1, mean=0.0),
    }
    assert "Scores by model\n  m-cheap / helpful  0.875 (2 scores)" in str(project)


def test_a_report_without_scores_has_no_scores_section(scored):
    obs = obsdeco.Observatory("test")
    with obs.track() as session:
        _call(obs, "m-cheap")
    report = obsdeco.get_report(session.id)
    assert report.scores == obsdeco.ScoreBreakdown()
    assert "Scores" not in str(report)


def test_a_call_made_by_the_openai_sdk_is_scored(scored, provider, openai_client, patched):
    @obsdeco.observe_session
    def ask() -> str:
        openai_client.chat.completions.create(
            model="m-dear", messages=[{"role": "user", "content": "Hello"}]
        )
        return obsdeco.current_session().id

    session_id = ask()
    (call,) = obsdeco.get_calls(session_id)
    given = obsdeco.score(call.id, "judge", 0.8)
    assert (given.session_id, given.call_id, given.model) == (session_id, call.id, "m-dear")
    obsdeco.flush()
    assert obsdeco.get_scores(target_id=call.id) == [given]
    assert obsdeco.report("test").scores.by_model == {
        "m-dear": {"judge": obsdeco.ScoreStats(count=1, mean=0.8)}
    }


def test_listeners_learn_each_accepted_score_and_a_failing_one_is_ignored():
    learned: list[obsdeco.Score] = []

    def broken(score: obsdeco.Score) -> None:
        raise RuntimeError("listener bug")

    add_score_listener(broken)
    add_score_listener(learned.append)
    try:
        with obsdeco.Observatory("test").track() as session:
            pass
        faults = obsdeco.stats().internal_faults
        given = obsdeco.score(session.id, "thumbs", True)
        with pytest.raises(ValueError, match=r"^value must be in \[0, 1\], got 2.0$"):
            obsdeco.score(session.id, "thumbs", 2)
        assert learned == [given]
        assert obsdeco.stats().internal_faults == faults + 1
    finally:
        remove_score_listener(broken)
        remove_score_listener(learned.append)
    obsdeco.score(session.id, "thumbs", False)
    assert learned == [given]
    with pytest.raises(ValueError, match=r"^callback must be callable, got str$"):
        add_score_listener("not callable")  # type: ignore[arg-type]


def test_comments_lose_secrets_and_are_encrypted_at_rest(sqlite_url):
    key = base64.urlsafe_b64encode(bytes(range(32))).decode()
    obsdeco.configure(project="test", database_url=sqlite_url, encryption_key=key)
    with obsdeco.Observatory("test").track() as session:
        pass
    obsdeco.score(session.id, "thumbs", True, comment="mail bob@example.com\x00 please")
    obsdeco.flush()
    (stored,) = obsdeco.get_scores()
    assert stored.comment == "mail <EMAIL> please"
    engine = sqlalchemy.create_engine(sqlite_url)
    with engine.connect() as connection:
        raw = connection.execute(sqlalchemy.text("SELECT comment FROM scores")).scalar_one()
    engine.dispose()
    assert "EMAIL" not in raw
    assert "please" not in raw


def test_scores_of_an_unsampled_session_stay_in_memory(sqlite_url):
    obsdeco.configure(project="test", database_url=sqlite_url, sample_rate=0.0)
    with obsdeco.Observatory("test").track() as session:
        pass
    obsdeco.score(session.id, "thumbs", True)
    obsdeco.flush()
    assert obsdeco.get_scores() == []
    assert obsdeco.get_report(session.id).scores.by_name == {
        "thumbs": obsdeco.ScoreStats(count=1, mean=1.0)
    }
