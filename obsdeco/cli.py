"""The `obsdeco` command line: list stored sessions and print their reports."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from obsdeco._version import __version__

if TYPE_CHECKING:
    from obsdeco.models import ProjectReport, SessionReport

_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_time(text: str) -> datetime:
    """An ISO 8601 time (UTC if it has no offset) or a duration back from now: 30m, 24h, 7d."""
    unit = _UNITS.get(text[-1:])
    if unit is not None and text[:-1].isdigit():
        return datetime.now(UTC) - timedelta(**{unit: int(text[:-1])})
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid time {text!r}: use ISO 8601 (2026-11-27T09:00) or a duration (30m, 24h, 7d)"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="obsdeco",
        description="Watch AI agents in production: LLM calls, tokens, cost and latency.",
    )
    parser.add_argument("--version", action="version", version=f"obsdeco {__version__}")
    parser.add_argument(
        "--database-url",
        help="the store to read (default: OBSDECO_DATABASE_URL, else ./obsdeco.db)",
    )
    commands = parser.add_subparsers(dest="command")

    sessions = commands.add_parser("sessions", help="list stored sessions, newest first")
    sessions.add_argument("--project", help="only this project")
    sessions.add_argument("--since", type=parse_time, help="ISO time or duration (24h, 7d)")
    sessions.add_argument("--until", type=parse_time, help="ISO time or duration")
    sessions.add_argument("--limit", type=int, default=20, help="at most this many (default 20)")

    report = commands.add_parser(
        "report",
        help="print the report of a session (SESSION_ID or --last) or of a project (--project)",
    )
    which = report.add_mutually_exclusive_group()
    which.add_argument("session_id", nargs="?", help="the session's id")
    which.add_argument("--last", action="store_true", help="the newest session")
    report.add_argument(
        "--project", help="the project; without SESSION_ID or --last, report on the project"
    )
    report.add_argument("--since", type=parse_time, help="project report: ISO time or duration")
    report.add_argument("--until", type=parse_time, help="project report: ISO time or duration")
    report.add_argument(
        "--format", choices=("text", "json", "markdown"), default="text", help="default: text"
    )

    dashboard = commands.add_parser(
        "dashboard", help="serve the Streamlit dashboard (needs the 'dashboard' extra)"
    )
    dashboard.add_argument(
        "--database-url", dest="dashboard_database_url", help="the store to show"
    )
    dashboard.add_argument("--port", type=int, default=8501, help="default: 8501")
    dashboard.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)"
    )
    return parser


def _dashboard(args: argparse.Namespace) -> int:
    """Serve the app with `streamlit run`, the store passed through OBSDECO_DATABASE_URL; the
    signals that stop this process stop the server too."""
    if importlib.util.find_spec("streamlit") is None:
        print(
            "obsdeco dashboard needs Streamlit: pip install 'obsdeco[dashboard]'", file=sys.stderr
        )
        return 2
    from obsdeco.config import get_settings
    from obsdeco.dashboard import app, server

    environment = dict(os.environ, OBSDECO_DATABASE_URL=get_settings().database_url)
    command = server.streamlit_command(app.__file__, args.host, args.port)
    return server.serve(command, environment)


def _sessions(args: argparse.Namespace) -> int:
    from obsdeco.runtime import get_runtime

    rows = get_runtime().backend.query_sessions(
        project=args.project, since=args.since, until=args.until, limit=args.limit
    )
    if not rows:
        print("no sessions stored yet")
        return 0
    header = ("started (UTC)", "id", "name", "status", "calls", "tokens", "cost")
    table = [
        (
            row.session.started_at.strftime("%Y-%m-%d %H:%M:%S"),
            row.session.id,
            row.session.name or "-",
            row.session.status,
            f"{row.calls:,}",
            f"{row.total_tokens:,}",
            "-" if row.cost_usd is None else f"${row.cost_usd:,.4f}",
        )
        for row in rows
    ]
    widths = [max(len(line[index]) for line in (header, *table)) for index in range(len(header))]
    for line in (header, *table):
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)))
    return 0


def _report(args: argparse.Namespace) -> int:
    import obsdeco
    from obsdeco.runtime import get_runtime

    if args.session_id is None and not args.last:
        if args.project is None and args.since is None and args.until is None:
            print("obsdeco report: give SESSION_ID, --last, or --project/--since", file=sys.stderr)
            return 2
        _print(obsdeco.report(args.project, args.since, args.until), args.format)
        return 0
    session_id = args.session_id
    if args.last:
        newest = get_runtime().backend.query_sessions(project=args.project, limit=1)
        if not newest:
            print("no sessions stored yet", file=sys.stderr)
            return 1
        session_id = newest[0].session.id
    try:
        report = obsdeco.get_report(session_id)
    except LookupError as error:
        print(error.args[0], file=sys.stderr)
        return 1
    _print(report, args.format)
    return 0


def _print(report: SessionReport | ProjectReport, output: str) -> None:
    if output == "json":
        print(json.dumps(report.model_dump(mode="json"), indent=2))
    elif output == "markdown":
        print(report.to_markdown())
    else:
        print(report)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `obsdeco` console script."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stdout)
        return 0
    import obsdeco

    try:
        obsdeco.configure(
            database_url=getattr(args, "dashboard_database_url", None) or args.database_url
        )
    except ValueError as error:
        parser.error(str(error))
    commands = {"sessions": _sessions, "report": _report, "dashboard": _dashboard}
    return commands[args.command](args)


if __name__ == "__main__":
    raise SystemExit(main())
