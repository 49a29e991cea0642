"""Starting the dashboard's Streamlit server for `obsdeco dashboard`, and stopping it with us."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from types import FrameType

FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
"""The signals that stop `obsdeco dashboard`; each is passed on to the server, which stops too.
A second one kills the server."""


def streamlit_command(app_path: str, host: str, port: int) -> list[str]:
    """`streamlit run` on the app, listening on `host`:`port`, without Streamlit's Deploy menu
    and usage statistics."""
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        app_path,
        "--server.address",
        host,
        "--server.port",
        str(port),
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        "--client.toolbarMode",
        "viewer",
    ]


def serve(command: Sequence[str], environment: Mapping[str, str]) -> int:
    """Run the server until it ends; return its exit status (128 + N if signal N ended it).

    The server runs in its own process group, so that a terminal's Ctrl-C reaches it once,
    through us, and a signal sent to us alone (systemd, Docker, Kubernetes) reaches it as well.
    """
    started: list[subprocess.Popen[bytes]] = []
    received: list[int] = []

    def forward(number: int, _frame: FrameType | None) -> None:
        received.append(number)
        for server in started:
            if len(received) > 1:
                server.kill()
            else:
                server.send_signal(number)

    previous = {number: signal.signal(number, forward) for number in FORWARDED_SIGNALS}
    try:
        server = subprocess.Popen(list(command), env=dict(environment), process_group=0)
        started.append(server)
        if received:  # a signal came while the server was starting
            server.send_signal(received[0])
        status = server.wait()
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    return status if status >= 0 else 128 - status
