"""Overhead benchmark: time obsdeco adds to OpenAI SDK calls, against the same calls unpatched
and against the OpenInference instrumentor, in one run.

    python benchmarks/overhead.py [--blocks N] [--block-size M]

The SDK talks to httpx2's MockTransport (no network), replaying a recorded chat completion and a
synthetic stream, so the difference is not drowned by I/O. Blocks of calls alternate between
instrumentation off and on; figures are medians of the on-minus-off block medians. The
per-chunk figure is the slope between a short and a long stream, which removes the per-call
part. The HTTP seam's cost on requests that are no LLM call (a GET, and a JSON POST to a path
that is no LLM endpoint) is measured the same way, through httpx and httpx2 clients on a
MockTransport. "obsdeco + OTLP" is obsdeco with every stored record also exported over
OTLP/HTTP to a receiver in another process: the export runs on the writer's side, so it should
add nothing on the caller's thread. Prints a table and writes benchmarks/results/overhead.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from functools import partial
from typing import Any

import httpx
import httpx2
import openai
from common import environment, timed_without_inner, write_results

import obsdeco
from obsdeco.integrations.http import _sync_seam
from obsdeco.testing import fixture_path

MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]
SHORT_STREAM, LONG_STREAM = 10, 410


def _completion_body() -> bytes:
    fixture = fixture_path("openai/chat_completion.json")
    if fixture.exists():
        return fixture.read_bytes()
    return json.dumps(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1,
            "model": "gpt-4o-mini-2024-07-18",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "Paris."},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 14, "completion_tokens": 2, "total_tokens": 16},
        }
    ).encode()


def _stream_body(chunks: int) -> bytes:
    def chunk(delta: dict[str, object], finish: str | None, usage: object = None) -> bytes:
        body = {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "gpt-4o-mini-2024-07-18",
            "choices": [] if usage else [{"index": 0, "delta": delta, "finish_reason": finish}],
            "usage": usage,
        }
        return b"data: " + json.dumps(body).encode() + b"\n\n"

    parts = [chunk({"role": "assistant", "content": ""}, None)]
    parts += [chunk({"content": f" word{index}"}, None) for index in range(chunks - 3)]
    parts.append(chunk({}, "stop"))
    usage = {"prompt_tokens": 14, "completion_tokens": chunks - 3, "total_tokens": chunks + 11}
    parts.append(chunk({}, None, usage))
    parts.append(b"data: [DONE]\n\n")
    return b"".join(parts)


def mock_client() -> openai.OpenAI:
    """An OpenAI client whose transport answers at once, with no network: a recorded chat
    completion, or a synthetic stream of `max_tokens` chunks."""
    completion = _completion_body()
    streams = {SHORT_STREAM: _stream_body(SHORT_STREAM), LONG_STREAM: _stream_body(LONG_STREAM)}

    def handler(request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content)
        if body.get("stream"):
            return httpx2.Response(
                200,
                content=streams[body["max_tokens"]],
                headers={"content-type": "text/event-stream"},
            )
        return httpx2.Response(
            200, content=completion, headers={"content-type": "application/json"}
        )

    return openai.OpenAI(
        api_key="sk-bench",
        base_url="http://bench.invalid/v1",
        max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
    )


def _call(client: openai.OpenAI) -> None:
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)


def _stream(client: openai.OpenAI, chunks: int) -> None:
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=MESSAGES,
        max_tokens=chunks,
        stream=True,
        stream_options={"include_usage": True},
    )
    for _ in stream:
        pass


def _once(action: Callable[[], None]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


class _Toggle:
    """Turns one instrumentation on and off (outside the timed region)."""

    def __init__(self, on: Callable[[], None], off: Callable[[], None]) -> None:
        self.on, self.off = on, off


def _obsdeco() -> _Toggle:
    """Each block of calls runs in a session of its own, as requests of a service would."""
    observatory = obsdeco.Observatory("bench")
    sessions: list[AbstractContextManager[obsdeco.Session]] = []

    def on() -> None:
        obsdeco.patch_all()
        session = observatory.track("overhead")
        session.__enter__()
        sessions.append(session)

    def off() -> None:
        sessions.pop().__exit__(None, None, None)
        obsdeco.unpatch_all()

    return _Toggle(on, off)


_RECEIVER = """
import http.server, sys
class Receiver(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


@contextmanager
def otlp_receiver() -> Iterator[str]:
    """An OTLP/HTTP endpoint in a process of its own (accepting every export), so that its
    work does not run in the benchmark's process."""
    process = subprocess.Popen([sys.executable, "-c", _RECEIVER], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        yield f"http://127.0.0.1:{process.stdout.readline().strip()}"
    finally:
        process.terminate()
        process.wait()


def _obsdeco_exporting(database_url: str, endpoint: str) -> Callable[[], _Toggle]:
    """obsdeco with every stored record also exported over OTLP (configured once, before the
    blocks)."""

    def make() -> _Toggle:
        obsdeco.configure(database_url=database_url, otlp_endpoint=endpoint)
        return _obsdeco()

    return make


def _openinference() -> _Toggle:
    from openinference.instrumentation.openai import OpenAIInstrumentor
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = OpenAIInstrumentor()

    def off() -> None:
        instrumentor.uninstrument()
        exporter.clear()

    return _Toggle(lambda: instrumentor.instrument(tracer_provider=provider), off)


def _block(workload: Callable[[], None], size: int) -> float:
    """Median seconds of `size` calls, after two untimed warm-up calls."""
    workload()
    workload()
    return statistics.median(_once(workload) for _ in range(size))


def measure(toggle: _Toggle, blocks: int, block_size: int) -> dict[str, float]:
    """Median added seconds per workload. Blocks of calls alternate between instrumentation
    off and on; each sample is a block's median minus the preceding off-block's, so that drift
    cancels out, and warm-up calls after each switch are not timed."""
    client = mock_client()
    workloads: dict[str, tuple[Callable[[], None], int]] = {
        "call": (lambda: _call(client), block_size),
        "stream_short": (lambda: _stream(client, SHORT_STREAM), block_size),
        "stream_long": (lambda: _stream(client, LONG_STREAM), max(3, block_size // 10)),
    }
    added: dict[str, list[float]] = {name: [] for name in workloads}
    plain: dict[str, list[float]] = {name: [] for name in workloads}
    for name, (workload, size) in workloads.items():
        for _ in range(blocks):
            off = _block(workload, size)
            toggle.on()
            on = _block(workload, size)
            toggle.off()
            plain[name].append(off)
            added[name].append(on - off)
    result = {f"added_{name}": statistics.median(values) for name, values in added.items()}
    result.update({f"plain_{name}": statistics.median(values) for name, values in plain.items()})
    return result


def seam_time(calls: int) -> float:
    """Median seconds obsdeco itself spends per call inside the patched `request` seam (the
    SDK's own request excluded), measured on the caller's thread."""
    from obsdeco.integrations.sdk import SDKSeam

    client = mock_client()
    own: list[float] = []
    original = SDKSeam.request

    def timed(self: SDKSeam, wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        return timed_without_inner(
            lambda sdk: original(self, sdk, instance, args, kwargs), wrapped, own
        )

    SDKSeam.request = timed  # type: ignore[method-assign]
    obsdeco.patch_all()
    try:
        with obsdeco.Observatory("bench").track("seam"):
            for _ in range(calls):
                _call(client)
    finally:
        obsdeco.unpatch_all()
        SDKSeam.request = original  # type: ignore[method-assign]
    return statistics.median(own[calls // 10 :])


def chunk_time(chunks: int, repeats: int) -> float:
    """Median seconds added per chunk by obsdeco's stream proxy, on real SDK chunk objects
    replayed from memory (the SDK's own ~100 us of parsing per chunk would drown it)."""
    from openai.types.chat import ChatCompletionChunk

    from obsdeco.integrations.openai import CHAT, OPENAI
    from obsdeco.integrations.proxies import ObservedStream
    from obsdeco.integrations.recorder import CallRecorder

    events = [
        ChatCompletionChunk.model_validate_json(line.removeprefix(b"data: "))
        for line in _stream_body(chunks).split(b"\n\n")
        if line.startswith(b"data: {")
    ]

    def plain() -> None:
        for _ in iter(events):
            pass

    def observed() -> None:
        recorder = CallRecorder(OPENAI, CHAT, {"model": "m", "stream": True})
        for _ in ObservedStream(iter(events), recorder, OPENAI.stream_accumulator(CHAT, False)):
            pass

    with obsdeco.Observatory("bench").track("chunks"):
        plain_times = [_once(plain) for _ in range(repeats)]
        observed_times = [_once(observed) for _ in range(repeats)]
    return (statistics.median(observed_times) - statistics.median(plain_times)) / len(events)


def non_llm_requests(blocks: int, block_size: int) -> dict[str, dict[str, float]]:
    """Median microseconds of `send` for a request that is no LLM call (a GET, and a JSON POST
    to a path that is no LLM endpoint), unpatched and patched, through httpx and httpx2 on a
    MockTransport (so only the clients' own work is timed).

    While patched, the original `send` (the one `unpatch_all()` puts back) is still callable:
    each pair of timings calls it and the patched `send` on the same request, one right after
    the other (in turns, which goes first), so both see the same moment of a busy machine. The
    added figure is the median over blocks of (patched block median - unpatched block median).
    """
    results: dict[str, dict[str, float]] = {}
    for lib in (httpx, httpx2):
        original_send = vars(lib.Client)["send"]
        client = lib.Client(
            transport=lib.MockTransport(lambda request, lib=lib: lib.Response(200, json={}))
        )
        requests = {
            "get": client.build_request("GET", "http://api.bench.invalid/v1/models"),
            "post": client.build_request(
                "POST", "http://api.bench.invalid/v1/files", json={"model": "gpt-4o"}
            ),
        }
        obsdeco.patch_all()
        try:
            for method, request in requests.items():
                plain: list[float] = []
                added: list[float] = []
                for _ in range(blocks):
                    off: list[float] = []
                    on: list[float] = []
                    for turn in range(block_size):
                        pair = (
                            (off, partial(original_send, client, request)),
                            (on, partial(client.send, request)),
                        )
                        for times, send in pair if turn % 2 else pair[::-1]:
                            times.append(_once(send))
                    plain.append(statistics.median(off))
                    added.append(statistics.median(on) - statistics.median(off))
                results[f"{lib.__name__}_{method}"] = {
                    "unpatched_us": statistics.median(plain) * 1e6,
                    "patched_us": (statistics.median(plain) + statistics.median(added)) * 1e6,
                    "added_us": statistics.median(added) * 1e6,
                }
        finally:
            obsdeco.unpatch_all()
            client.close()
    return results


def non_llm_own_time(calls: int, repeats: int) -> dict[str, float]:
    """obsdeco's own microseconds per request that is no LLM call, in the HTTP seam: the
    seam's `send` around a `send` that does nothing, minus that `send` alone (best of
    `repeats` runs of `calls`), on real httpx and httpx2 requests."""

    def nothing(_client: Any, _request: Any, **_kwargs: Any) -> None:
        return None

    observed = _sync_seam(nothing, httpx2.Response)
    results: dict[str, float] = {}
    obsdeco.patch_all()  # the seam tests that capture is on
    try:
        for lib in (httpx, httpx2):
            requests = {
                "get": lib.Request("GET", "http://api.bench.invalid/v1/models"),
                "post": lib.Request(
                    "POST", "http://api.bench.invalid/v1/files", json={"model": "gpt-4o"}
                ),
            }
            for method, request in requests.items():
                plain = min(
                    timeit.repeat(lambda r=request: nothing(None, r), number=calls, repeat=repeats)
                )
                seam = min(
                    timeit.repeat(lambda r=request: observed(None, r), number=calls, repeat=repeats)
                )
                results[f"{lib.__name__}_{method}"] = (seam - plain) / calls * 1e6
    finally:
        obsdeco.unpatch_all()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--blocks", type=int, default=40)
    parser.add_argument("--block-size", type=int, default=50)
    args = parser.parse_args()

    toggles: dict[str, Callable[[], _Toggle]] = {"obsdeco": _obsdeco}
    try:
        import openinference.instrumentation.openai  # noqa: F401

        toggles["openinference"] = _openinference
    except ImportError:
        print("openinference-instrumentation-openai not installed: comparison skipped")

    results: dict[str, object] = {
        **environment(),
        "openai": openai.__version__,
        "blocks": args.blocks,
        "block_size": args.block_size,
    }
    with tempfile.TemporaryDirectory() as folder, otlp_receiver() as endpoint:
        database_url = f"sqlite:///{folder}/overhead.db"
        toggles["obsdeco + OTLP"] = _obsdeco_exporting(database_url, endpoint)
        obsdeco.configure(database_url=database_url)
        results["obsdeco_own_time_per_call_us"] = seam_time(args.blocks * args.block_size) * 1e6
        results["obsdeco_per_chunk_us"] = chunk_time(LONG_STREAM, 200) * 1e6
        results["http_seam_non_llm_request"] = non_llm_requests(args.blocks, args.block_size * 4)
        results["http_seam_non_llm_own_time_us"] = non_llm_own_time(100_000, 9)
        for name, make_toggle in toggles.items():
            timing = measure(make_toggle(), args.blocks, args.block_size)
            per_chunk = (timing["added_stream_long"] - timing["added_stream_short"]) / (
                LONG_STREAM - SHORT_STREAM
            )
            results[name] = {
                "added_per_call_us": timing["added_call"] * 1e6,
                "added_per_chunk_us": per_chunk * 1e6,
                "unpatched_call_us": timing["plain_call"] * 1e6,
                "unpatched_long_stream_us": timing["plain_stream_long"] * 1e6,
            }
        obsdeco.flush()
        results["otlp_exported_spans"] = obsdeco.stats().exported_spans

    ours = results["obsdeco"]
    print(
        f"obsdeco's own time per call inside the seam (median): "
        f"{results['obsdeco_own_time_per_call_us']:.1f} us"
    )
    print(f"obsdeco's stream proxy, per chunk (median): {results['obsdeco_per_chunk_us']:.2f} us")
    print("end to end, instrumented minus unpatched (block medians; the per-chunk slope is noisy):")
    print(
        f"unpatched median: call {ours['unpatched_call_us']:.0f} us, "
        f"stream of {LONG_STREAM} chunks {ours['unpatched_long_stream_us']:.0f} us"
    )
    print(f"{'instrumentation':<16}{'added per call':>18}{'added per chunk':>18}")
    for name in toggles:
        row = results[name]
        print(
            f"{name:<16}{row['added_per_call_us']:>15.1f} us{row['added_per_chunk_us']:>15.2f} us"
        )
    print(
        f"(obsdeco + OTLP: every record also exported; spans accepted: "
        f"{results['otlp_exported_spans']})"
    )
    if "openinference" in results:
        theirs = results["openinference"]
        ratio = {
            "per_call": theirs["added_per_call_us"] / ours["added_per_call_us"],
            "per_chunk": theirs["added_per_chunk_us"] / ours["added_per_chunk_us"],
        }
        results["openinference_over_obsdeco"] = ratio
        print(
            f"OpenInference / obsdeco: {ratio['per_call']:.1f}x per call, "
            f"{ratio['per_chunk']:.1f}x per chunk"
        )

    print("\nHTTP seam, a request that is no LLM call (MockTransport; block medians):")
    own = results["http_seam_non_llm_own_time_us"]
    print(f"{'request':<16}{'unpatched':>14}{'patched':>14}{'added':>12}{'own time':>12}")
    for name, row in results["http_seam_non_llm_request"].items():  # type: ignore[attr-defined]
        print(
            f"{name:<16}{row['unpatched_us']:>11.1f} us{row['patched_us']:>11.1f} us"
            f"{row['added_us']:>9.2f} us{own[name]:>9.2f} us"  # type: ignore[index]
        )
    print("(own time: the seam's code alone, best of 9 runs of 100,000 requests)")

    write_results("overhead", results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
