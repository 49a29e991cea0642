"""obsdeco's Streamlit dashboard: overview, session history with drill-down, models and agents,
what the optimisation engine saved, experiments, alerts and the hard budgets.

Run it with `obsdeco dashboard [--database-url URL] [--port N] [--host ADDRESS]` or
`streamlit run dashboard/app.py`. It reads the store named by `OBSDECO_DATABASE_URL` (else
obsdeco's default) and never writes calls. The filters live in the URL's query parameters, so a
view can be shared. Set `OBSDECO_DASHBOARD_PASSWORD` to ask for a password first.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, get_args

import altair as alt
import pandas as pd
import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from obsdeco.analyzers import PriceTable
from obsdeco.config import get_settings
from obsdeco.dashboard import data, gate, sections
from obsdeco.dashboard.formatting import count, ms, plural, rounded_ms, share, usd
from obsdeco.dashboard.gate import Attempt
from obsdeco.dashboard.sections import MONEY
from obsdeco.engine.accounts import StoredAccount
from obsdeco.engine.experiment_report import ExperimentReport
from obsdeco.privacy.store import open_store
from obsdeco.storage import ReportStore
from obsdeco.storage.base import ExperimentVariant, SessionOrder

PAGES = (
    "Overview",
    "Sessions",
    "Models & agents",
    "Savings",
    "Experiments",
    "Alerts",
    "Budgets",
)
RANGES = {
    "1h": timedelta(hours=1),
    "24h": timedelta(days=1),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
    "90d": timedelta(days=90),
}
DEFAULT_RANGE = "7d"
FIRST_DAY, LAST_DAY = date(1970, 1, 1), date(2999, 12, 31)
"""The custom range's bounds (the previous period of equal length must still be a date)."""
REFRESH_EVERY_S = (5, 10, 30, 60, 300)
PAGE_SIZE = 25
MAX_PAGE = 1_000_000_000
CACHE_TTL_S = 10
PASSWORD_VARIABLE = "OBSDECO_DASHBOARD_PASSWORD"


@st.cache_resource
def _backend(url: str) -> ReportStore:
    return open_store(get_settings().model_copy(update={"database_url": url}))


def _prices() -> PriceTable:
    return PriceTable(get_settings().pricing_overrides)


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def _projects(url: str) -> list[str]:
    return _backend(url).project_names()


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def _choices(url: str, filters: data.Filters) -> tuple[list[str], list[str]]:
    return data.choices(_backend(url), filters)


@st.cache_data(ttl=CACHE_TTL_S, show_spinner="Aggregating...")
def _overview(url: str, filters: data.Filters) -> data.Overview:
    return data.overview(_backend(url), _prices(), filters)


@st.cache_data(ttl=CACHE_TTL_S, show_spinner="Aggregating...")
def _project_report(url: str, filters: data.Filters) -> Any:
    return data.project_report(_backend(url), _prices(), filters)


@st.cache_data(ttl=CACHE_TTL_S, show_spinner="Aggregating...")
def _savings(url: str, filters: data.Filters) -> Any:
    return data.savings(_backend(url), _prices(), filters)


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def _latency_by(url: str, filters: data.Filters, key: str) -> list[data.GroupLatency]:
    return data.latency_by(_backend(url), filters, key)


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def _errors_by(url: str, filters: data.Filters, key: str) -> dict[str, int]:
    return data.errors_by(_backend(url), filters, key)


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def _session_page(
    url: str, filters: data.Filters, search: str, order_by: str, descending: bool, page: int
) -> data.SessionPage:
    return data.session_page(
        _backend(url),
        filters,
        search,
        order_by,
        descending,
        page,
        PAGE_SIZE,  # type: ignore[arg-type]
    )


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def _experiments(url: str, project: str | None) -> list[ExperimentVariant]:
    return data.experiments(_backend(url), project)


@st.cache_data(ttl=CACHE_TTL_S, show_spinner="Comparing variants...")
def _experiment(url: str, name: str, filters: data.Filters) -> ExperimentReport:
    return data.experiment(_backend(url), _prices(), name, filters)


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def _alerts(url: str, filters: data.Filters) -> data.AlertsView:
    return data.alerts(_backend(url), filters)


def _budget_accounts(url: str) -> list[StoredAccount]:
    return data.budget_accounts(_backend(url))


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def _session_detail(url: str, session_id: str) -> Any:
    return data.session_detail(_backend(url), _prices(), session_id)


# --- the URL's query parameters ---------------------------------------------------------------


class UrlParams:
    """The URL's query parameters, read leniently: a value that does not fit falls back to the
    default and is named in one notice (which never repeats the value: the URL is anyone's)."""

    def __init__(self) -> None:
        self.ignored: list[str] = []

    def get(self, name: str) -> str:
        """The parameter's value, "" if absent; NUL characters (no store takes them) dropped."""
        return st.query_params.get(name, "").replace("\0", "")

    def index(self, name: str, options: Sequence[str], default: int, why: str) -> int:
        """The position of the parameter's value among `options`, else `default`."""
        value = self.get(name)
        if value in options:
            return list(options).index(value)
        if value:
            self.ignored.append(f"{name} ({why})")
        return default

    def day(self, name: str) -> date | None:
        """A day (2026-11-27), or the day of an ISO time, between FIRST_DAY and LAST_DAY."""
        value = self.get(name)
        if not value:
            return None
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            moment = None
        if moment is None or not FIRST_DAY <= moment.date() <= LAST_DAY:
            self.ignored.append(f"{name} (not a date from {FIRST_DAY.year} to {LAST_DAY.year})")
            return None
        return moment.date()

    def number(self, name: str, allowed: Sequence[int], default: int, why: str) -> int:
        value = self.get(name)
        if not value:
            return default
        if value.isdecimal() and int(value) in allowed:
            return int(value)
        self.ignored.append(f"{name} ({why})")
        return default

    def page_number(self) -> int:
        """The sessions page, counted from 0."""
        value = self.get("p")
        if value.isdecimal() and 1 <= int(value) <= MAX_PAGE:
            return int(value) - 1
        if value:
            self.ignored.append("p (not a page number)")
        return 0

    def set(self, name: str, value: str | None) -> None:
        if value:
            st.query_params[name] = value
        elif name in st.query_params:
            del st.query_params[name]

    def notice(self, slot: DeltaGenerator) -> None:
        """Name the ignored parameters in `slot` (fixed words only)."""
        if self.ignored:
            slot.warning("Ignored in the URL: " + "; ".join(self.ignored) + ".")


def _password_ok() -> bool:
    """The password gate; nothing is read from the store before it opens."""
    expected = os.environ.get(PASSWORD_VARIABLE)
    if not expected or st.session_state.get("authenticated"):
        return True
    with st.form("password"):
        given = st.text_input("Password", type="password")
        submitted = st.form_submit_button("Open")
    if not submitted or not given:
        return False
    outcome = gate.SERVER_GATE.attempt(given, expected)
    if outcome is Attempt.OPEN:
        st.session_state["authenticated"] = True
        st.rerun()
    wait = math.ceil(gate.SERVER_GATE.wait_s())
    if outcome is Attempt.WRONG:
        st.error(f"Wrong password. The next attempt is accepted in {plural(wait, 'second')}.")
    else:
        st.error(
            f"Too soon after a wrong password: try again in {plural(wait, 'second')} "
            "(this attempt was not checked)."
        )
    return False


def _sidebar(url: str, projects: list[str], params: UrlParams) -> tuple[str, data.Filters, int]:
    sidebar = st.sidebar
    page = sidebar.radio(
        "Page", PAGES, index=params.index("page", PAGES, 0, "no such page"), key="page"
    )
    params.set("page", page if page != PAGES[0] else None)

    project_options = ["(all projects)", *projects]
    chosen = sidebar.selectbox(
        "Project",
        project_options,
        index=params.index("project", project_options, 1, "no such project in this store"),
    )
    project = None if chosen == project_options[0] else chosen
    params.set("project", project)

    range_options = [*RANGES, "custom"]
    range_name = sidebar.selectbox(
        "Time range",
        range_options,
        index=params.index("range", range_options, 2, "not 1h, 24h, 7d, 30d, 90d or custom"),
    )
    params.set("range", range_name if range_name != DEFAULT_RANGE else None)
    now = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
    if range_name == "custom":
        first = params.day("since") or (now - RANGES[DEFAULT_RANGE]).date()
        last = params.day("until") or now.date()
        first, last = min(first, last), max(first, last)
        picked = sidebar.date_input(
            "From / to (UTC)", (first, last), min_value=FIRST_DAY, max_value=LAST_DAY
        )
        if len(picked) == 2:  # a half-picked range (one day so far) keeps the URL's
            first, last = picked
        since = datetime.combine(first, time.min, UTC)
        until = datetime.combine(last, time.min, UTC) + timedelta(days=1)
        params.set("since", first.isoformat())
        params.set("until", last.isoformat())
    else:
        since, until = now - RANGES[range_name], now
        params.set("since", None)
        params.set("until", None)

    filters = data.Filters(project=project, since=since, until=until)
    models, agents = _choices(url, filters)
    model_options = ["(all models)", *models]
    agent_options = ["(all agents)", *agents]
    model = sidebar.selectbox(
        "Model",
        model_options,
        index=params.index("model", model_options, 0, "no calls to it in this project and range"),
    )
    agent = sidebar.selectbox(
        "Agent",
        agent_options,
        index=params.index("agent", agent_options, 0, "no calls by it in this project and range"),
    )
    model = None if model == model_options[0] else model
    agent = None if agent == agent_options[0] else agent
    params.set("model", model)
    params.set("agent", agent)

    every = params.number("refresh", (0, *REFRESH_EVERY_S), 0, "not 5, 10, 30, 60 or 300 seconds")
    live = sidebar.toggle("Auto-refresh", value=bool(every))
    refresh = 0
    if live:
        refresh = int(sidebar.select_slider("Every (s)", REFRESH_EVERY_S, value=every or 30))
    params.set("refresh", str(refresh) if refresh else None)
    sidebar.text(f"Store: {_redacted(url)}")
    return page, data.Filters(project, since, until, model, agent), refresh


def _redacted(url: str) -> str:
    scheme, _, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not at:
        return url
    user = credentials.partition(":")[0]
    return f"{scheme}://{user}:***@{host}"


# --- pages ------------------------------------------------------------------------------------


def _delta(now: float | None, before: float | None, spec: str = "+,.0f") -> str | None:
    if now is None or before is None:
        return None
    return format(now - before, spec)


def _time_axis(field: str, unit: str) -> alt.X:
    """A time axis in UTC whose marks span their whole hour or day, so that data in a single
    bucket still draws a bar rather than a zero-width one."""
    time_unit, labels = (
        ("utcyearmonthdatehours", "%b %d %H:%M")
        if unit == "hour"
        else ("utcyearmonthdate", "%b %d")
    )
    return alt.X(
        f"{time_unit}({field}):T",
        title=f"{unit} (UTC)",
        axis=alt.Axis(format=labels, labelOverlap=True),
    )


def overview_page(url: str, filters: data.Filters) -> None:
    found = _overview(url, filters)
    kpis, before = found.kpis, found.previous
    columns = st.columns(5)
    columns[0].metric(
        "Cost",
        usd(kpis.cost_usd),
        _delta(kpis.cost_usd, before.cost_usd, "+,.4f"),
        delta_color="inverse",
    )
    columns[1].metric("Calls", f"{kpis.calls:,}", _delta(kpis.calls, before.calls))
    columns[2].metric(
        "Tokens", count(kpis.total_tokens), _delta(kpis.total_tokens, before.total_tokens)
    )
    columns[3].metric(
        "Success rate",
        share(kpis.success_rate),
        _delta(kpis.success_rate, before.success_rate, "+.1%"),
    )
    columns[4].metric(
        "p95 latency", ms(kpis.p95_ms), _delta(kpis.p95_ms, before.p95_ms), delta_color="inverse"
    )
    st.caption("Changes are against the previous period of the same length.")
    if kpis.unpriced_calls:
        has = "has" if kpis.unpriced_calls == 1 else "have"
        st.caption(
            f"{plural(kpis.unpriced_calls, 'call')} {has} no price (unknown model or tokens)."
        )
    if not kpis.calls:
        st.info("No calls in this range.")
        return
    unit = found.bucket
    cost = pd.DataFrame([point.model_dump() for point in found.cost])
    st.subheader(f"Cost per {unit}, by model")
    st.altair_chart(
        alt.Chart(cost)
        .mark_bar()
        .encode(
            x=_time_axis("bucket", unit),
            y=alt.Y("cost_usd:Q", title="USD", stack="zero"),
            color=alt.Color("model:N", title="model"),
            tooltip=[
                alt.Tooltip("bucket:T", title=unit, format="%Y-%m-%d %H:%M"),
                alt.Tooltip("model:N"),
                alt.Tooltip("cost_usd:Q", title="cost", format="$,.4f"),
            ],
        ),
        width="stretch",
    )
    calls = pd.DataFrame([point.model_dump() for point in found.calls]).melt(
        id_vars="bucket", value_vars=["calls", "errors"], var_name="kind", value_name="count"
    )
    st.subheader(f"Calls and errors per {unit}")
    st.altair_chart(
        alt.Chart(calls)
        .mark_bar()
        .encode(
            x=_time_axis("bucket", unit),
            xOffset=alt.XOffset("kind:N"),
            y=alt.Y("count:Q", title="calls"),
            color=alt.Color("kind:N", title=None),
            tooltip=["kind:N", "count:Q"],
        ),
        width="stretch",
    )
    if found.latency:
        latency = pd.DataFrame(
            [
                {"hour": point.hour, "percentile": name, "ms": rounded_ms(value)}
                for point in found.latency
                for name, value in (("p50", point.p50_ms), ("p95", point.p95_ms))
            ]
        )
        st.subheader("Latency percentiles per hour")
        st.altair_chart(
            alt.Chart(latency)
            .mark_line(point=alt.OverlayMarkDef(size=60))
            .encode(
                x=_time_axis("hour", "hour"),
                y=alt.Y("ms:Q", title="ms"),
                color=alt.Color("percentile:N", title=None),
                tooltip=["percentile:N", "ms:Q"],
            ),
            width="stretch",
        )


def sessions_page(url: str, filters: data.Filters, params: UrlParams) -> None:
    controls = st.columns([3, 2, 1, 1])
    search = controls[0].text_input("Search name or id", value=params.get("q")).replace("\0", "")
    params.set("q", search)
    orders = list(get_args(SessionOrder))
    order_by = controls[1].selectbox(
        "Sort by",
        orders,
        index=params.index("sort", orders, 0, "not a column sessions sort by"),
        format_func=_label,
    )
    params.set("sort", order_by if order_by != orders[0] else None)
    descending = controls[2].toggle("Descending", value=params.get("asc") != "1")
    params.set("asc", None if descending else "1")
    asked = params.page_number()
    found = _session_page(url, filters, search, order_by, descending, asked)
    pages = max(1, -(-found.total // PAGE_SIZE))
    page = controls[3].number_input("Page", 1, pages, min(asked + 1, pages)) - 1
    params.set("p", str(page + 1) if page else None)
    if page != asked:
        found = _session_page(url, filters, search, order_by, descending, page)
    st.caption(f"{plural(found.total, 'session')} · page {page + 1} of {pages}")
    if not found.sessions:
        st.info("No sessions match.")
        return
    table = pd.DataFrame(
        [
            {
                "Session id": row.session.id,
                "Started (UTC)": row.session.started_at,
                "Name": row.session.name or "",
                "Duration (s)": round((row.session.duration_ms or 0) / 1000, 1)
                if row.session.ended_at
                else None,
                "Calls": row.calls,
                "Tokens": row.total_tokens,
                "Errors": row.errors,
                "Cost (USD)": row.cost_usd,
                "Status": row.session.status,
            }
            for row in found.sessions
        ]
    )
    picked = st.dataframe(
        table,
        hide_index=True,
        on_select="rerun",
        selection_mode="single-row",
        width="stretch",
        column_config={
            "Cost (USD)": MONEY,
            "Started (UTC)": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm:ss"),
        },
    )
    rows = picked.selection.rows if picked is not None else []
    session_id = table.iloc[rows[0]]["Session id"] if rows else params.get("session")
    params.set("session", session_id or None)
    if session_id:
        found_session = _session_detail(url, session_id)
        if found_session is None:
            st.warning("The session in the URL is not in this store.")
        else:
            sections.session_drilldown(*found_session)


def _label(name: str) -> str:
    return {"call_count": "calls", "total_tokens": "tokens", "cost_usd": "cost"}.get(
        name, name.replace("_", " ").removesuffix(" ms")
    )


def models_and_agents_page(url: str, filters: data.Filters) -> None:
    report = _project_report(url, filters)
    if not report.totals.calls:
        st.info("No calls in this range.")
        return
    for title, key, costs, tokens, errors in (
        (
            "Models",
            "model",
            report.cost.by_model,
            report.tokens.by_model,
            report.quality.errors_by_model,
        ),
        (
            "Agents",
            "agent_name",
            report.cost.by_agent,
            report.tokens.by_agent,
            _errors_by(url, filters, "agent_name"),
        ),
        (
            "Providers",
            "provider_name",
            report.cost.by_provider,
            report.tokens.by_provider,
            _errors_by(url, filters, "provider_name"),
        ),
    ):
        st.subheader(title)
        latency = {row.name: row for row in _latency_by(url, filters, key)}
        st.dataframe(
            pd.DataFrame(
                [
                    {
                        "Name": name,
                        "Calls": counts.calls,
                        "Cost (USD)": costs.get(name, 0.0),
                        "Tokens": counts.total_tokens,
                        "Errors": errors.get(name, 0),
                        "Average latency (ms)": rounded_ms(latency[name].avg_ms)
                        if name in latency
                        else None,
                        "p95 latency (ms)": rounded_ms(latency[name].p95_ms)
                        if name in latency
                        else None,
                    }
                    for name, counts in tokens.items()
                ]
            ),
            hide_index=True,
            width="stretch",
            column_config={"Cost (USD)": MONEY},
        )
    if report.latency.agent_time:
        st.subheader("Agent wall time against LLM time")
        st.dataframe(
            pd.DataFrame(
                [
                    {
                        "Agent": row.agent_name,
                        "Runs": row.invocations,
                        "Wall time (ms)": rounded_ms(row.wall_ms),
                        "LLM time (ms)": rounded_ms(row.llm_ms),
                    }
                    for row in report.latency.agent_time
                ]
            ),
            hide_index=True,
            width="stretch",
        )
    sections.scores(report.scores)
    st.subheader("Suggestions")
    sections.suggestions(report.suggestions)


def savings_page(url: str, filters: data.Filters) -> None:
    found = _savings(url, filters)
    columns = st.columns(5)
    columns[0].metric("Saved", usd(found.saved_usd))
    columns[1].metric("By the response cache", usd(found.cache_saved_usd))
    columns[2].metric("By the router", usd(found.routing_saved_usd))
    columns[3].metric("Shadow rules would save", usd(found.shadow_saved_usd))
    columns[4].metric("Suggestions could still save", usd(found.remaining_potential_usd))
    st.caption(
        f"{plural(found.cache_hits, 'call')} answered by the cache, "
        f"{plural(found.routed_calls, 'call')} routed to a cheaper model."
    )
    if not found.days:
        st.info(
            "Nothing saved in this range: make calls inside obsdeco.cache(ttl_s=...) or "
            "configure routes=[obsdeco.Route(...)]."
        )
    else:
        st.subheader("Saved per day")
        saved = pd.DataFrame(
            [
                {"day": datetime.combine(day.day, time.min, UTC), "by": by, "usd": value}
                for day in found.days
                for by, value in (
                    ("response cache", day.cache_saved_usd),
                    ("router", day.routing_saved_usd),
                )
            ]
        )
        st.altair_chart(
            alt.Chart(saved)
            .mark_bar()
            .encode(
                x=_time_axis("day", "day"),
                y=alt.Y("usd:Q", title="USD", stack="zero"),
                color=alt.Color("by:N", title=None),
                tooltip=[
                    alt.Tooltip("day:T", format="%Y-%m-%d"),
                    alt.Tooltip("by:N"),
                    alt.Tooltip("usd:Q", title="saved", format="$,.4f"),
                ],
            ),
            width="stretch",
        )
        st.dataframe(
            pd.DataFrame(
                [
                    {
                        "Day (UTC)": day.day.isoformat(),
                        "Cache (USD)": day.cache_saved_usd,
                        "Cache hits": day.cache_hits,
                        "Router (USD)": day.routing_saved_usd,
                        "Routed calls": day.routed_calls,
                        "Shadow would save (USD)": day.shadow_saved_usd,
                    }
                    for day in found.days
                ]
            ),
            hide_index=True,
            width="stretch",
            column_config={
                "Cache (USD)": MONEY,
                "Router (USD)": MONEY,
                "Shadow would save (USD)": MONEY,
            },
        )
        report = _project_report(url, filters)
        sections.cache_and_routing(report.cache, report.routing)
    st.subheader("Still to save")
    sections.suggestions(found.suggestions)


def experiments_page(url: str, filters: data.Filters, params: UrlParams) -> None:
    """The experiments of the project with their variants' sessions; one picked is compared
    over the sessions started in the range."""
    found = _experiments(url, filters.project)
    if not found:
        st.info("No prompt experiments stored yet (see obsdeco.experiment()).")
        return
    names = list(dict.fromkeys(row.experiment for row in found))
    st.dataframe(
        pd.DataFrame(
            [
                {"Experiment": row.experiment, "Variant": row.variant, "Sessions": row.sessions}
                for row in found
            ]
        ),
        hide_index=True,
        width="stretch",
    )
    name = st.selectbox(
        "Experiment",
        names,
        index=params.index("experiment", names, 0, "not a stored experiment"),
    )
    params.set("experiment", name if name != names[0] else None)
    report = _experiment(url, name, filters)
    if not report.variants:
        st.info("No session of this experiment started in this range.")
        return
    sections.experiment_report(report)


def alerts_page(url: str, filters: data.Filters) -> None:
    """Each alert's current state (its newest event) and the events fired in the range."""
    found = _alerts(url, filters)
    if not found.states:
        st.info("No alert has fired yet (see obsdeco.Alert).")
        return
    st.subheader("Rules")
    sections.alert_events(found.states, "Since (UTC)")
    st.subheader("Fired and resolved in this range")
    if not found.events:
        st.info("No alert fired or resolved in this range.")
        return
    sections.alert_events(found.events, "At (UTC)")


def budgets_page(url: str) -> None:
    """The budgets this process is configured with, and the project budgets' accounts the
    store holds (whichever process spent them)."""
    st.subheader("Configured budgets")
    configured = get_settings().budgets
    if not configured:
        st.info(
            "No budget is configured here: configure(budgets=[obsdeco.Budget(...)]), or "
            "@obsdeco.observe_session(budget_usd=...) for one session."
        )
    else:
        st.dataframe(
            pd.DataFrame(
                [
                    {
                        "Budget": budget.label,
                        "Scope": budget.scope,
                        "For": budget.agent or budget.project or f"each {budget.scope}",
                        "Window": budget.window or "none",
                        "Limit (USD)": budget.limit_usd,
                        "Soft limit (USD)": budget.soft_usd,
                    }
                    for budget in configured
                ]
            ),
            hide_index=True,
            width="stretch",
            column_config={"Limit (USD)": MONEY, "Soft limit (USD)": MONEY},
        )
    st.subheader("Project budget accounts in this store")
    accounts = _budget_accounts(url)
    if not accounts:
        st.info("No project budget has reserved anything in this store yet.")
    else:
        st.dataframe(
            pd.DataFrame(
                [
                    {
                        "Account": account.budget,
                        "Window from (UTC)": "no window"
                        if account.period is None
                        else account.period.strftime("%Y-%m-%d %H:%M"),
                        "Spent (USD)": account.spent_usd,
                        "Reserved (USD)": account.reserved_usd,
                        "Limit (USD)": account.limit_usd,
                        "Used": (account.spent_usd + account.reserved_usd) / account.limit_usd,
                    }
                    for account in accounts
                ]
            ),
            hide_index=True,
            width="stretch",
            column_config={
                "Spent (USD)": MONEY,
                "Reserved (USD)": MONEY,
                "Limit (USD)": MONEY,
                "Used": sections.PERCENT,
            },
        )
    st.caption(
        "Reserved: the worst cases of calls in flight. Session and agent budgets are kept in "
        "the memory of the process that enforces them; project budgets in the store, shared "
        "by every process writing it."
    )


def empty_state() -> None:
    st.info("Nothing recorded yet in this store.")
    st.markdown(
        "Record your first session, then come back:\n\n"
        "```python\nimport obsdeco\n\nobsdeco.patch_all()\n\n\n"
        "@obsdeco.observe_session\ndef handle_ticket(ticket):\n    ...  "
        "# your OpenAI / Anthropic calls\n```\n\n"
        "or run `make demo` in the obsdeco repository."
    )


def main() -> None:
    st.set_page_config(page_title="obsdeco", layout="wide")
    st.title("obsdeco")
    if not _password_ok():
        st.stop()
    url = get_settings().database_url
    projects = _projects(url)
    if not projects:
        empty_state()
        return
    params = UrlParams()
    notice = st.empty()
    page, filters, refresh = _sidebar(url, projects, params)
    st.text(
        f"{filters.project or 'all projects'} · {filters.since:%Y-%m-%d %H:%M} to "
        f"{filters.until:%Y-%m-%d %H:%M} UTC"
        + (f" · model {filters.model}" if filters.model else "")
        + (f" · agent {filters.agent}" if filters.agent else "")
    )
    if page == "Sessions":
        sessions_page(url, filters, params)
    elif page == "Models & agents":
        models_and_agents_page(url, filters)
    elif page == "Savings":
        savings_page(url, filters)
    elif page == "Experiments":
        experiments_page(url, filters, params)
    elif page == "Alerts":
        alerts_page(url, filters)

    elif page == "Budgets":
        budgets_page(url)
    else:
        overview_page(url, filters)
    params.notice(notice)
    if refresh:
        _refresh_every(refresh)


def _refresh_every(seconds: int) -> None:
    """Rerun the whole app every `seconds`, so that the range's end moves and new sessions
    appear (the data cache expires after CACHE_TTL_S)."""

    @st.fragment(run_every=timedelta(seconds=seconds))
    def tick() -> None:
        if st.session_state.get("refresh_armed"):
            st.rerun(scope="app")
        st.session_state["refresh_armed"] = True

    st.session_state["refresh_armed"] = False
    tick()


if __name__ == "__main__":
    main()
