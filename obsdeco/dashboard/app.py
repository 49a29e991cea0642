"""obsdeco's Streamlit dashboard: overview, session history with drill-down, models and agents.

Run it with `obsdeco dashboard [--database-url URL] [--port N]` or
`streamlit run dashboard/app.py`. It reads the store named by `OBSDECO_DATABASE_URL` (else
obsdeco's default) and never writes calls. The filters live in the URL's query parameters, so a
view can be shared. Set `OBSDECO_DASHBOARD_PASSWORD` to ask for a password first.
"""

from __future__ import annotations

import hmac
import os
from datetime import UTC, datetime, timedelta
from typing import Any, get_args

import altair as alt
import pandas as pd
import streamlit as st

from obsdeco.analyzers import PriceTable
from obsdeco.config import get_settings
from obsdeco.dashboard import data
from obsdeco.privacy.store import open_store
from obsdeco.storage import StorageBackend
from obsdeco.storage.base import SessionOrder

PAGES = ("Overview", "Sessions", "Models & agents")
RANGES = {
    "1h": timedelta(hours=1),
    "24h": timedelta(days=1),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
    "90d": timedelta(days=90),
}
DEFAULT_RANGE = "7d"
PAGE_SIZE = 25
CACHE_TTL_S = 10
PASSWORD_VARIABLE = "OBSDECO_DASHBOARD_PASSWORD"


@st.cache_resource
def _backend(url: str) -> StorageBackend:
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


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def _latency_by(url: str, filters: data.Filters, key: str) -> list[data.GroupLatency]:
    return data.latency_by(_backend(url), filters, key)


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
def _session_detail(url: str, session_id: str) -> Any:
    return data.session_detail(_backend(url), _prices(), session_id)


# --- the URL's query parameters ---------------------------------------------------------------


def _param(name: str, default: str = "") -> str:
    return st.query_params.get(name, default)


def _set_param(name: str, value: str | None) -> None:
    if value:
        st.query_params[name] = value
    elif name in st.query_params:
        del st.query_params[name]


def _parse_time(text: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _password_ok() -> bool:
    expected = os.environ.get(PASSWORD_VARIABLE)
    if not expected:
        return True
    if st.session_state.get("authenticated"):
        return True
    given = st.text_input("Password", type="password")
    if given and hmac.compare_digest(given.encode(), expected.encode()):
        st.session_state["authenticated"] = True
        st.rerun()
    if given:
        st.error("Wrong password.")
    return False


def _sidebar(url: str, projects: list[str]) -> tuple[str, data.Filters, int]:
    sidebar = st.sidebar
    page = sidebar.radio("Page", PAGES, index=_index(PAGES, _param("page"), 0), key="page")
    _set_param("page", page if page != PAGES[0] else None)

    project_options = ["(all projects)", *projects]
    chosen = sidebar.selectbox(
        "Project", project_options, index=_index(project_options, _param("project"), 1)
    )
    project = None if chosen == project_options[0] else chosen
    _set_param("project", project)

    range_options = [*RANGES, "custom"]
    range_name = sidebar.selectbox(
        "Time range", range_options, index=_index(range_options, _param("range"), 2)
    )
    _set_param("range", range_name if range_name != DEFAULT_RANGE else None)
    now = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
    if range_name == "custom":
        since = _parse_time(_param("since")) or now - RANGES[DEFAULT_RANGE]
        until = _parse_time(_param("until")) or now
        start, end = sidebar.date_input("From / to (UTC)", (since.date(), until.date()))
        since = datetime.combine(start, datetime.min.time(), UTC)
        until = datetime.combine(end, datetime.min.time(), UTC) + timedelta(days=1)
        _set_param("since", since.isoformat())
        _set_param("until", until.isoformat())
    else:
        since, until = now - RANGES[range_name], now
        _set_param("since", None)
        _set_param("until", None)

    filters = data.Filters(project=project, since=since, until=until)
    models, agents = _choices(url, filters)
    model = sidebar.selectbox(
        "Model", ["(all models)", *models], index=_index(models, _param("model"), -1) + 1
    )
    agent = sidebar.selectbox(
        "Agent", ["(all agents)", *agents], index=_index(agents, _param("agent"), -1) + 1
    )
    model = None if model.startswith("(all") else model
    agent = None if agent.startswith("(all") else agent
    _set_param("model", model)
    _set_param("agent", agent)

    live = sidebar.toggle("Auto-refresh", value=bool(_param("refresh")))
    refresh = 0
    if live:
        refresh = int(
            sidebar.select_slider(
                "Every (s)", [5, 10, 30, 60, 300], value=int(_param("refresh") or 30)
            )
        )
    _set_param("refresh", str(refresh) if refresh else None)
    sidebar.caption(f"Store: `{_redacted(url)}`")
    return page, data.Filters(project, since, until, model, agent), refresh


def _index(options: Any, value: str, default: int) -> int:
    options = list(options)
    return options.index(value) if value in options else default


def _redacted(url: str) -> str:
    scheme, _, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not at:
        return url
    user = credentials.partition(":")[0]
    return f"{scheme}://{user}:***@{host}"


# --- pages ------------------------------------------------------------------------------------


def _count(value: int) -> str:
    """Thousands separators; millions and billions shortened so that a KPI fits its column."""
    for size, unit in ((1_000_000_000, "B"), (1_000_000, "M")):
        if value >= 10 * size:
            return f"{value / size:,.1f} {unit}"
    return f"{value:,}"


def _usd(value: float) -> str:
    return f"${value:,.4f}" if value < 100 else f"${value:,.2f}"


def _delta(now: float | None, before: float | None, spec: str = "+,.0f") -> str | None:
    if now is None or before is None:
        return None
    return format(now - before, spec)


def overview_page(url: str, filters: data.Filters) -> None:
    found = _overview(url, filters)
    kpis, before = found.kpis, found.previous
    columns = st.columns(5)
    columns[0].metric(
        "Cost",
        _usd(kpis.cost_usd),
        _delta(kpis.cost_usd, before.cost_usd, "+,.4f"),
        delta_color="inverse",
    )
    columns[1].metric("Calls", f"{kpis.calls:,}", _delta(kpis.calls, before.calls))
    columns[2].metric(
        "Tokens", _count(kpis.total_tokens), _delta(kpis.total_tokens, before.total_tokens)
    )
    columns[3].metric(
        "Success rate",
        "-" if kpis.success_rate is None else f"{kpis.success_rate:.1%}",
        _delta(kpis.success_rate, before.success_rate, "+.1%"),
    )
    columns[4].metric(
        "p95 latency",
        "-" if kpis.p95_ms is None else f"{kpis.p95_ms:,.0f} ms",
        _delta(kpis.p95_ms, before.p95_ms),
        delta_color="inverse",
    )
    st.caption("Changes are against the previous period of the same length.")
    if kpis.unpriced_calls:
        st.caption(f"{kpis.unpriced_calls:,} calls have no price (unknown model or tokens).")
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
            x=alt.X("bucket:T", title=None),
            y=alt.Y("cost_usd:Q", title="USD", stack="zero"),
            color=alt.Color("model:N"),
            tooltip=["bucket:T", "model:N", alt.Tooltip("cost_usd:Q", format="$,.4f")],
        ),
        width="stretch",
    )
    calls = pd.DataFrame([point.model_dump() for point in found.calls]).melt(
        id_vars="bucket", value_vars=["calls", "errors"], var_name="kind", value_name="count"
    )
    st.subheader(f"Calls and errors per {unit}")
    st.altair_chart(
        alt.Chart(calls)
        .mark_line(point=True)
        .encode(x=alt.X("bucket:T", title=None), y="count:Q", color="kind:N"),
        width="stretch",
    )
    if found.latency:
        latency = pd.DataFrame([point.model_dump() for point in found.latency]).melt(
            id_vars="hour", value_vars=["p50_ms", "p95_ms"], var_name="percentile", value_name="ms"
        )
        st.subheader("Latency percentiles per hour")
        st.altair_chart(
            alt.Chart(latency)
            .mark_line()
            .encode(x=alt.X("hour:T", title=None), y="ms:Q", color="percentile:N"),
            width="stretch",
        )


def sessions_page(url: str, filters: data.Filters) -> None:
    controls = st.columns([3, 2, 1, 1])
    search = controls[0].text_input("Search name or id", value=_param("q"))
    _set_param("q", search)
    orders = list(get_args(SessionOrder))
    order_by = controls[1].selectbox(
        "Sort by", orders, index=_index(orders, _param("sort"), 0), format_func=_label
    )
    _set_param("sort", order_by if order_by != orders[0] else None)
    descending = controls[2].toggle("Descending", value=_param("asc") != "1")
    _set_param("asc", None if descending else "1")
    found = _session_page(url, filters, search, order_by, descending, _page_number())
    pages = max(1, -(-found.total // PAGE_SIZE))
    page = controls[3].number_input("Page", 1, pages, min(_page_number() + 1, pages)) - 1
    _set_param("p", str(page + 1) if page else None)
    if page != _page_number():
        found = _session_page(url, filters, search, order_by, descending, page)
    st.caption(f"{found.total:,} sessions · page {page + 1} of {pages}")
    if not found.sessions:
        st.info("No sessions match.")
        return
    table = pd.DataFrame(
        [
            {
                "id": row.session.id,
                "start": row.session.started_at,
                "name": row.session.name,
                "duration (s)": (row.session.duration_ms or 0) / 1000
                if row.session.ended_at
                else None,
                "calls": row.calls,
                "tokens": row.total_tokens,
                "cost (USD)": row.cost_usd,
                "status": row.session.status,
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
        column_config={"cost (USD)": st.column_config.NumberColumn(format="$%.4f")},
    )
    rows = picked.selection.rows if picked is not None else []
    session_id = table.iloc[rows[0]]["id"] if rows else _param("session")
    _set_param("session", session_id or None)
    if session_id:
        session_drilldown(url, session_id)


def _label(name: str) -> str:
    return name.replace("_", " ").removesuffix(" ms")


def session_drilldown(url: str, session_id: str) -> None:
    found = _session_detail(url, session_id)
    if found is None:
        st.warning(f"Session {session_id} is not in the store.")
        return
    report, record = found
    st.subheader(f"Session {report.session.name or ''} · {session_id}")
    columns = st.columns(4)
    columns[0].metric("Cost", _usd(report.totals.cost_usd or 0.0))
    columns[1].metric("Calls", f"{report.totals.calls:,}")
    columns[2].metric("Tokens", f"{report.totals.total_tokens:,}")
    columns[3].metric("Success rate", f"{report.quality.success_rate:.1%}")
    bars = [
        {
            "lane": f"agent {span.agent_name}",
            "start": span.started_at,
            "end": span.ended_at,
            "what": "agent",
        }
        for span in record.spans
    ] + [
        {
            "lane": f"{call.agent_name or '(no agent)'} · {call.model_key}",
            "start": call.timestamp,
            "end": call.timestamp + timedelta(milliseconds=call.latency_ms),
            "what": "LLM call" if call.success else "failed call",
        }
        for call in record.calls
    ]
    if bars:
        st.markdown("**Timeline**")
        st.altair_chart(
            alt.Chart(pd.DataFrame(bars))
            .mark_bar()
            .encode(
                x=alt.X("start:T", title=None),
                x2="end:T",
                y=alt.Y("lane:N", title=None),
                color="what:N",
                tooltip=["lane:N", "start:T", "end:T", "what:N"],
            ),
            width="stretch",
        )
    st.markdown(f"```\n{report}\n```")
    st.markdown("**Calls**")
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "time": call.timestamp,
                    "agent": call.agent_name,
                    "provider": call.provider_name,
                    "model": call.model_key,
                    "prompt": call.prompt_tokens,
                    "completion": call.completion_tokens,
                    "latency (ms)": call.latency_ms,
                    "success": call.success,
                    "error": call.error_type,
                }
                for call in record.calls
            ]
        ),
        hide_index=True,
        width="stretch",
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
        ("Agents", "agent_name", report.cost.by_agent, report.tokens.by_agent, {}),
        (
            "Providers",
            "provider_name",
            report.cost.by_provider,
            report.tokens.by_provider,
            {},
        ),
    ):
        st.subheader(title)
        latency = {row.name: row for row in _latency_by(url, filters, key)}
        st.dataframe(
            pd.DataFrame(
                [
                    {
                        "name": name,
                        "calls": counts.calls,
                        "cost (USD)": costs.get(name, 0.0),
                        "tokens": counts.total_tokens,
                        "errors": errors.get(name, 0) if errors else None,
                        "avg latency (ms)": latency[name].avg_ms if name in latency else None,
                        "p95 latency (ms)": latency[name].p95_ms if name in latency else None,
                    }
                    for name, counts in tokens.items()
                ]
            ),
            hide_index=True,
            width="stretch",
            column_config={"cost (USD)": st.column_config.NumberColumn(format="$%.4f")},
        )
    if report.latency.agent_time:
        st.subheader("Agent wall time against LLM time")
        st.dataframe(
            pd.DataFrame([row.model_dump() for row in report.latency.agent_time]),
            hide_index=True,
            width="stretch",
        )
    st.subheader("Suggestions")
    if not report.suggestions:
        st.write("Nothing to change on this evidence.")
    for suggestion in report.suggestions:
        savings = suggestion.estimated_savings_usd
        st.markdown(
            f"**{suggestion.kind}**: {suggestion.message}"
            + (f" (saves ~{_usd(savings)})" if savings is not None else "")
        )
        if suggestion.evidence:
            st.caption("; ".join(suggestion.evidence))


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
    page, filters, refresh = _sidebar(url, projects)
    scope = filters.project or "all projects"
    st.caption(
        f"{scope} · {filters.since:%Y-%m-%d %H:%M} to {filters.until:%Y-%m-%d %H:%M} UTC"
        + (f" · model {filters.model}" if filters.model else "")
        + (f" · agent {filters.agent}" if filters.agent else "")
    )
    show = {
        "Overview": overview_page,
        "Sessions": sessions_page,
        "Models & agents": models_and_agents_page,
    }[page]
    show(url, filters)
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


def _page_number() -> int:
    try:
        return max(0, int(_param("p", "1")) - 1)
    except ValueError:
        return 0


if __name__ == "__main__":
    main()
