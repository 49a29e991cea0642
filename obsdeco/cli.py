"""The `obsdeco` command line: list stored sessions, experiments and alerts, print their
reports and the savings, export records to files, migrate the store's schema."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from obsdeco._version import __version__
from obsdeco.file_export import EXPORTS as EXPORT_TABLES
from obsdeco.file_export import FORMATS as EXPORT_FORMATS

if TYPE_CHECKING:
    from obsdeco.models import ProjectReport, SavingsReport, SessionReport

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


def database_url_argument(text: str) -> str:
    """A database URL, or a bare path to a SQLite file (`./obsdeco.db`, `/var/lib/obs.db`)."""
    if "://" in text:
        return text
    return f"sqlite:///{Path(text).expanduser().resolve()}"


def _global_options(defaults: bool) -> argparse.ArgumentParser:
    """The options every command takes, before or after its name. Only the top-level parser
    sets defaults, so that a subcommand does not overwrite a value given before its name."""
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument(
        "--database-url",
        type=database_url_argument,
        default=None if defaults else argparse.SUPPRESS,
        help="the store: a database URL or a SQLite file's path "
        "(default: OBSDECO_DATABASE_URL, else ./obsdeco.db)",
    )
    return options


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="obsdeco",
        description="Watch AI agents in production: LLM calls, tokens, cost and latency.",
        parents=[_global_options(defaults=True)],
    )
    parser.add_argument("--version", action="version", version=f"obsdeco {__version__}")
    commands = parser.add_subparsers(dest="command")
    options = _global_options(defaults=False)

    sessions = commands.add_parser(
        "sessions", help="list stored sessions, newest first", parents=[options]
    )
    sessions.add_argument("--project", help="only this project")
    sessions.add_argument("--since", type=parse_time, help="ISO time or duration (24h, 7d)")
    sessions.add_argument("--until", type=parse_time, help="ISO time or duration")
    sessions.add_argument("--limit", type=int, default=20, help="at most this many (default 20)")

    report = commands.add_parser(
        "report",
        help="print the report of a session (SESSION_ID or --last) or of a project (--project)",
        parents=[options],
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

    savings = commands.add_parser(
        "savings",
        help="print what the response cache and the router saved, per UTC day",
        parents=[options],
    )
    savings.add_argument("--project", help="only this project (default: every project)")
    savings.add_argument("--since", type=parse_time, help="ISO time or duration (24h, 7d)")
    savings.add_argument("--until", type=parse_time, help="ISO time or duration")
    savings.add_argument(
        "--format", choices=("text", "json", "markdown"), default="text", help="default: text"
    )
    experiments = commands.add_parser(
        "experiments",
        help="list prompt experiments, or print the report of one (NAME)",
        parents=[options],
    )
    experiments.add_argument("name", nargs="?", help="the experiment's name")
    experiments.add_argument("--project", help="only this project")
    experiments.add_argument("--since", type=parse_time, help="report: sessions started since")
    experiments.add_argument("--until", type=parse_time, help="report: sessions started before")

    alerts = commands.add_parser(
        "alerts", help="list the alerts that fired or resolved, newest first", parents=[options]
    )
    alerts.add_argument("--name", help="only this alert")
    alerts.add_argument("--project", help="only alerts on this project")
    alerts.add_argument("--since", type=parse_time, help="ISO time or duration (24h, 7d)")
    alerts.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")

    export = commands.add_parser(
        "export",
        help="write stored calls, sessions or agent spans to a JSON Lines, CSV or Parquet file",
        parents=[options],
    )
    export.add_argument(
        "what", choices=EXPORT_TABLES, metavar="WHAT", help="calls, sessions, spans or scores"
    )
    export.add_argument(
        "output",
        metavar="OUTPUT",
        help="the file to write (its suffix names the format), or - for stdout",
    )
    export.add_argument(
        "--format",
        choices=EXPORT_FORMATS,
        help="jsonl, csv or parquet (default: from OUTPUT's suffix; jsonl for stdout)",
    )
    export.add_argument("--project", help="only this project (default: every project)")
    export.add_argument("--since", type=parse_time, help="ISO time or duration (24h, 7d)")
    export.add_argument("--until", type=parse_time, help="ISO time or duration")
    export.add_argument("--model", help="only calls of this model (sessions: that called it)")
    export.add_argument("--agent", help="only calls of this agent (sessions: that it called from)")
    export.add_argument("--session", dest="session_id", help="only this session")

    database = commands.add_parser(
        "db", help="the store's schema: its revision, upgrades and downgrades", parents=[options]
    )
    steps = database.add_subparsers(dest="step", required=True, metavar="STEP")
    steps.add_parser(
        "upgrade",
        help="bring the store to the current schema (creating it in an empty database)",
        parents=[options],
    )
    steps.add_parser("current", help="print the store's schema revision", parents=[options])
    downgrade = steps.add_parser(
        "downgrade",
        help="take the store down to an earlier revision, dropping what later ones added",
        parents=[options],
    )
    downgrade.add_argument("revision", help="the revision to go down to (see obsdeco db current)")

    dashboard = commands.add_parser(
        "dashboard",
        help="serve the Streamlit dashboard (needs the 'dashboard' extra)",
        parents=[options],
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


def _savings(args: argparse.Namespace) -> int:
    import obsdeco

    _print(obsdeco.savings(args.project, args.since, args.until), args.format)
    return 0


def _experiments(args: argparse.Namespace) -> int:
    import obsdeco

    if args.name is not None:
        try:
            report = obsdeco.experiment_report(args.name, args.project, args.since, args.until)
        except ValueError as error:
            print(f"obsdeco experiments: {error}", file=sys.stderr)
            return 2
        if not report.variants:
            print(f"no sessions in experiment {args.name!r}", file=sys.stderr)
            return 1
        print(report)
        return 0
    found = obsdeco.list_experiments(args.project)
    if not found:
        print("no experiments stored yet")
        return 0
    header = ("experiment", "sessions", "variants (sessions)")
    table = [
        (
            summary.name,
            f"{summary.sessions:,}",
            ", ".join(f"{name} ({count:,})" for name, count in summary.variants.items()),
        )
        for summary in found
    ]
    widths = [max(len(line[index]) for line in (header, *table)) for index in range(2)]
    for line in (header, *table):
        print(f"{line[0].ljust(widths[0])}  {line[1].ljust(widths[1])}  {line[2]}")
    return 0


def _alerts(args: argparse.Namespace) -> int:
    import obsdeco
    from obsdeco.alerts.events import shown_value

    try:
        found = obsdeco.get_alerts(args.since, args.name, args.project, args.limit)
    except ValueError as error:
        print(f"obsdeco alerts: {error}", file=sys.stderr)
        return 2
    if not found:
        print("no alerts stored yet")
        return 0
    header = ("fired (UTC)", "alert", "state", "metric", "value", "threshold", "window", "project")
    table = [
        (
            event.fired_at.strftime("%Y-%m-%d %H:%M:%S"),
            event.alert,
            event.state,
            event.metric if event.budget is None else f"budget {event.budget}",
            shown_value(event.metric, event.value),
            f"{event.direction} {shown_value(event.metric, event.threshold)}",
            "-" if event.metric == "budget" else event.window,
            event.project or "(all)",
        )
        for event in found
    ]
    widths = [max(len(line[index]) for line in (header, *table)) for index in range(len(header))]
    for line in (header, *table):
        cells = (cell.ljust(width) for cell, width in zip(line, widths, strict=True))
        print("  ".join(cells).rstrip())
    return 0


def _export(args: argparse.Namespace) -> int:
    """Write the export; what was written is said on stderr, so that stdout holds only rows."""
    import obsdeco

    to_stdout = args.output == "-"
    if to_stdout and args.format == "parquet":
        print("obsdeco export: Parquet cannot go to stdout; give a file path", file=sys.stderr)
        return 2
    try:
        written = obsdeco.export(
            sys.stdout if to_stdout else args.output,
            args.what,
            (args.format or "jsonl") if to_stdout else args.format,
            project=args.project,
            since=args.since,
            until=args.until,
            model=args.model,
            agent=args.agent,
            session_id=args.session_id,
        )
    except (ValueError, OSError) as error:
        print(f"obsdeco export: {error}", file=sys.stderr)
        return 2
    where = "stdout" if to_stdout else args.output
    print(f"wrote {written:,} rows of {args.what} to {where}", file=sys.stderr)
    return 0


def _db(args: argparse.Namespace) -> int:
    """`obsdeco db upgrade|current|downgrade`, on the configured store's engine."""
    from alembic.util import CommandError

    from obsdeco.runtime import get_runtime
    from obsdeco.storage import schema_setup
    from obsdeco.storage.migrations.revisions import head

    engine = getattr(get_runtime().backend, "engine", None)
    if engine is None:
        print(
            f"obsdeco db {args.step}: the store is a registered backend of its own; "
            "only SQLAlchemy stores have revisions",
            file=sys.stderr,
        )
        return 2
    newest = head()
    if args.step == "current":
        revision = schema_setup.schema_revision(engine)
        if revision is None:
            print(
                "none: written by an obsdeco without migrations; obsdeco db upgrade brings it "
                f"to {newest}"
            )
        else:
            print(f"{revision} (head)" if revision == newest else revision)
        return 0
    try:
        if args.step == "upgrade":
            change = schema_setup.prepare_schema(engine)
        else:
            change = schema_setup.downgrade_schema(engine, args.revision)
    except (CommandError, NotImplementedError, schema_setup.UnknownStoreError) as error:
        print(f"obsdeco db {args.step}: {error}", file=sys.stderr)
        return 2
    if change.action == "none":
        print(f"already at {change.after} (head)")
    elif change.action == "created":
        print(f"created the store at {change.after}")
    else:
        before = change.before or "an obsdeco without migrations"
        print(f"{change.action} from {before} to {change.after}")
    return 0


def _print(report: SessionReport | ProjectReport | SavingsReport, output: str) -> None:
    if output == "json":
        print(json.dumps(report.model_dump(mode="json"), indent=2))
    elif output == "markdown":
        print(report.to_markdown())
    else:
        print(report)


def _missing_store(database_url: str) -> str | None:
    """Why `database_url` holds no obsdeco store (None when it does), checked without creating
    anything: these commands only read."""
    from sqlalchemy import create_engine, inspect
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    from obsdeco.storage import registered_scheme

    if registered_scheme(database_url) is not None:
        return None
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        path = Path(url.database)
        if not path.is_file():
            return f"no obsdeco database at {path.resolve()} (nothing recorded there yet?)"
        return None
    engine = create_engine(url, hide_parameters=True)
    try:
        with engine.connect() as connection:
            if not inspect(connection).has_table("sessions"):
                return f"no obsdeco store in {url.render_as_string(hide_password=True)}"
    except SQLAlchemyError as error:
        return f"cannot open {url.render_as_string(hide_password=True)}: {type(error).__name__}"
    finally:
        engine.dispose()
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `obsdeco` console script."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stdout)
        return 0
    import obsdeco

    try:
        settings = obsdeco.configure(database_url=args.database_url)
    except ValueError as error:
        parser.error(str(error))
    creates = args.command == "db" and args.step == "upgrade"
    missing = None if creates else _missing_store(settings.database_url)
    if missing is not None:
        print(f"obsdeco {args.command}: {missing}", file=sys.stderr)
        return 1
    commands = {
        "sessions": _sessions,
        "report": _report,
        "savings": _savings,
        "experiments": _experiments,
        "alerts": _alerts,
        "export": _export,
        "db": _db,
        "dashboard": _dashboard,
    }
    try:
        status = commands[args.command](args)
        sys.stdout.flush()
        return status
    except BrokenPipeError:
        # The reader went away (`obsdeco report ... | head`): end quietly, as Unix tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
