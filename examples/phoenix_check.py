"""Scripted check against Arize Phoenix: its own token and cost totals for the demo, next to
obsdeco's report.

Phoenix has many dependencies, so it lives in an environment of its own (not `make test`):

    python -m venv /tmp/phoenix-venv && /tmp/phoenix-venv/bin/pip install arize-phoenix
    python examples/phoenix_check.py --phoenix /tmp/phoenix-venv/bin/phoenix

The script starts `phoenix serve` on 127.0.0.1 (free ports, a temporary working directory),
runs examples/quickstart.py (the local provider, no API key) with obsdeco exporting to
Phoenix's OTLP/HTTP endpoint, waits until Phoenix has counted the demo's tokens, then asks
Phoenix's GraphQL API for its totals and prints them beside obsdeco's. Phoenix prices spans
with its own model price table (it does not read `llm.cost.*`), so the costs are compared, not
required to be equal; the token totals must be. Exit status 1 when they differ.
"""

from __future__ import annotations

import argparse
import json
import os
import runpy
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import obsdeco
import obsdeco.otel

PROJECT = "obsdeco-demo"
QUERY = """{ projects { edges { node { name traceCount tokenCountPrompt tokenCountCompletion
  costSummary { total { cost } prompt { cost } completion { cost } } } } } }"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def graphql(base: str, query: str) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{base}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        answer: dict[str, Any] = json.load(response)
    if answer.get("errors"):
        raise RuntimeError(f"Phoenix GraphQL errors: {answer['errors']}")
    return answer["data"]


def wait_until_up(base: str, server: subprocess.Popen[bytes], limit_s: float) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"phoenix serve exited with status {server.returncode}")
        try:
            with urllib.request.urlopen(f"{base}/healthz", timeout=2):
                return
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.5)
    raise RuntimeError(f"Phoenix did not answer at {base} within {limit_s:.0f} s")


def phoenix_totals(base: str, prompt_tokens: int, limit_s: float) -> dict[str, Any]:
    """The demo project's figures, once Phoenix has ingested the demo's prompt tokens."""
    deadline = time.monotonic() + limit_s
    node: dict[str, Any] = {}
    while time.monotonic() < deadline:
        edges = graphql(base, QUERY)["projects"]["edges"]
        node = next((edge["node"] for edge in edges if edge["node"]["name"] == PROJECT), {})
        if node and node["tokenCountPrompt"] >= prompt_tokens:
            return node
        time.sleep(0.5)
    return node


def run_demo(database: Path, endpoint: str) -> obsdeco.ProjectReport:
    os.environ["OBSDECO_DATABASE_URL"] = f"sqlite:///{database}"
    os.environ["OBSDECO_OTLP_ENDPOINT"] = endpoint
    # Phoenix takes traces, not metrics (405): don't wait long for those at exit.
    os.environ["OBSDECO_OTLP_TIMEOUT_S"] = "2"
    os.environ["OTEL_RESOURCE_ATTRIBUTES"] = f"openinference.project.name={PROJECT}"
    demo = runpy.run_path(str(Path(__file__).with_name("quickstart.py")), run_name="demo")
    demo["main"]()
    if not obsdeco.otel.flush_export(timeout=60):
        raise RuntimeError("obsdeco could not export the demo within 60 s")
    stats = obsdeco.stats()
    print(f"\nobsdeco exported {stats.exported_spans} spans ({stats.export_failed} failed)")
    return obsdeco.report(project="support-bot")


def figure(value: float | None) -> str:
    return "" if value is None else f"{value:.8g}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phoenix", default="phoenix", help="the phoenix executable")
    parser.add_argument("--startup-s", type=float, default=120.0)
    options = parser.parse_args()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="phoenix-check-") as work:
        environment = {
            **os.environ,
            "PHOENIX_HOST": "127.0.0.1",
            "PHOENIX_PORT": str(port),
            "PHOENIX_GRPC_PORT": str(free_port()),
            "PHOENIX_WORKING_DIR": work,
        }
        log = Path(work) / "phoenix.log"
        with log.open("wb") as output:
            server = subprocess.Popen(
                [options.phoenix, "serve"], env=environment, stdout=output, stderr=output
            )
            try:
                wait_until_up(base, server, options.startup_s)
                report = run_demo(Path(work) / "obsdeco.db", base)
                node = phoenix_totals(base, report.totals.prompt_tokens, 60.0)
            finally:
                server.terminate()
                server.wait(timeout=30)
    if not node:
        print(f"Phoenix has no project {PROJECT!r}; its log was {log}")
        return 1
    cost = node["costSummary"]
    rows = [
        ("prompt tokens", report.totals.prompt_tokens, node["tokenCountPrompt"]),
        ("completion tokens", report.totals.completion_tokens, node["tokenCountCompletion"]),
        ("cost USD", report.cost.total_usd, cost["total"]["cost"]),
        ("  input cost USD", None, cost["prompt"]["cost"]),
        ("  output cost USD", None, cost["completion"]["cost"]),
    ]
    print(f"\n{'':20}{'obsdeco':>14}{'Phoenix':>14}")
    for label, ours, theirs in rows:
        print(f"{label:20}{figure(ours):>14}{figure(theirs):>14}")
    same_tokens = (report.totals.prompt_tokens, report.totals.completion_tokens) == (
        node["tokenCountPrompt"],
        node["tokenCountCompletion"],
    )
    print(f"\ntraces in Phoenix: {node['traceCount']}; token totals equal: {same_tokens}")
    return 0 if same_tokens else 1


if __name__ == "__main__":
    raise SystemExit(main())
