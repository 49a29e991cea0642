"""Gemini benchmark: time obsdeco adds to google-genai calls, against the same calls unpatched.

    python benchmarks/gemini.py [--blocks N] [--block-size M]

The SDK talks to httpx2's MockTransport (no network), answering generateContent with one JSON
body and streamGenerateContent with SSE chunks that repeat their usage, as Gemini does. Blocks of
calls alternate between obsdeco off and on; figures are medians of the on-minus-off block
medians, and the per-chunk figure is the slope between a short and a long stream. Those
end-to-end figures include obsdeco's writer thread competing for the GIL and are noisy on a
shared machine; obsdeco's own time on the caller's thread, per call (inside the patched
`request`, the SDK's own request excluded) and per chunk (the stream proxy, the chunk's JSON
parse and the reader, on real SDK chunks replayed from memory), is measured apart. Prints a
table and writes benchmarks/results/gemini.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable

import httpx2
from common import environment, timed_without_inner, write_results
from google import genai
from google.genai import types

import obsdeco
from obsdeco.integrations import google_genai
from obsdeco.integrations.gemini import GEMINI, GENERATE_CONTENT
from obsdeco.integrations.recorder import CallRecorder

MODEL = "gemini-2.5-flash"
SHORT_STREAM, LONG_STREAM = 10, 410


def _response(text: str, candidates_tokens: int, finish: bool) -> dict[str, object]:
    candidate: dict[str, object] = {"content": {"parts": [{"text": text}], "role": "model"}}
    if finish:
        candidate["finishReason"] = "STOP"
    return {
        "candidates": [candidate],
        "usageMetadata": {
            "promptTokenCount": 8,
            "candidatesTokenCount": candidates_tokens,
            "totalTokenCount": 8 + candidates_tokens,
        },
        "modelVersion": MODEL,
        "responseId": "bench",
    }


def _stream_body(chunks: int) -> bytes:
    return b"".join(
        b"data: "
        + json.dumps(_response(f" word{index}", index + 1, index == chunks - 1)).encode()
        + b"\r\n\r\n"
        for index in range(chunks)
    )


def _client() -> genai.Client:
    body = json.dumps(_response("Paris.", 2, True)).encode()
    streams = {SHORT_STREAM: _stream_body(SHORT_STREAM), LONG_STREAM: _stream_body(LONG_STREAM)}

    def handler(request: httpx2.Request) -> httpx2.Response:
        if request.url.path.endswith(":streamGenerateContent"):
            limit = json.loads(request.content)["generationConfig"]["maxOutputTokens"]
            headers = {"content-type": "text/event-stream"}
            return httpx2.Response(200, content=streams[limit], headers=headers)
        return httpx2.Response(200, content=body, headers={"content-type": "application/json"})

    options = types.HttpOptions(
        base_url="http://bench.invalid",
        httpx_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
    )
    return genai.Client(api_key="bench", http_options=options)


def _block(workload: Callable[[], None], size: int) -> float:
    """Median seconds of `size` calls, after two untimed warm-up calls."""
    workload()
    workload()
    timings = []
    for _ in range(size):
        start = time.perf_counter()
        workload()
        timings.append(time.perf_counter() - start)
    return statistics.median(timings)


def measure(blocks: int, block_size: int) -> dict[str, float]:
    client = _client()

    def call() -> None:
        client.models.generate_content(model=MODEL, contents="What is the capital of France?")

    def stream(chunks: int) -> None:
        config = types.GenerateContentConfig(max_output_tokens=chunks)
        for _ in client.models.generate_content_stream(model=MODEL, contents="Hi", config=config):
            pass

    workloads: dict[str, tuple[Callable[[], None], int]] = {
        "call": (call, block_size),
        "stream_short": (lambda: stream(SHORT_STREAM), block_size),
        "stream_long": (lambda: stream(LONG_STREAM), max(3, block_size // 10)),
    }
    observatory = obsdeco.Observatory("bench")
    result: dict[str, float] = {}
    for name, (workload, size) in workloads.items():
        added, plain = [], []
        for _ in range(blocks):
            off = _block(workload, size)
            obsdeco.patch_all()
            with observatory.track("gemini"):
                on = _block(workload, size)
            obsdeco.unpatch_all()
            plain.append(off)
            added.append(on - off)
        result[f"added_{name}"] = statistics.median(added)
        result[f"plain_{name}"] = statistics.median(plain)
    return result


def own_call_time(calls: int) -> float:
    """Median seconds obsdeco spends per call inside the patched `request`, SDK excluded."""
    client = _client()
    own: list[float] = []
    observed = google_genai._request

    def timed(wrapped: Callable[..., object], instance: object, args: object, kwargs: object):
        return timed_without_inner(lambda sdk: observed(sdk, instance, args, kwargs), wrapped, own)

    calls_before = google_genai._CALLS
    google_genai._CALLS = (("request", timed), *calls_before[1:])
    obsdeco.patch_all()
    try:
        with obsdeco.Observatory("bench").track("own"):
            for _ in range(calls):
                client.models.generate_content(model=MODEL, contents="The capital of France?")
    finally:
        obsdeco.unpatch_all()
        google_genai._CALLS = calls_before
    return statistics.median(own[calls // 10 :])


def own_chunk_time(chunks: int, repeats: int) -> float:
    """Median seconds obsdeco adds per chunk of `request_streamed`, on real SDK chunks."""
    events = [
        types.HttpResponse(headers={}, body=line.removeprefix(b"data: ").decode())
        for line in _stream_body(chunks).split(b"\r\n\r\n")
        if line
    ]
    plain_times, observed_times = [], []
    with obsdeco.Observatory("bench").track("chunks"):
        for _ in range(repeats):
            start = time.perf_counter()
            for _event in iter(events):
                pass
            plain_times.append(time.perf_counter() - start)
            recorder = CallRecorder(
                GEMINI, GENERATE_CONTENT, {"model": MODEL}, model=MODEL, streamed=True
            )
            stream = google_genai._observed(recorder, iter(events), google_genai._ObservedChunks)
            start = time.perf_counter()
            for _event in stream:
                pass
            observed_times.append(time.perf_counter() - start)
    return (statistics.median(observed_times) - statistics.median(plain_times)) / chunks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--blocks", type=int, default=9)
    parser.add_argument("--block-size", type=int, default=60)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        obsdeco.configure(database_url=f"sqlite:///{folder}/bench.db")
        figures = measure(args.blocks, args.block_size)
        own_call = own_call_time(args.blocks * args.block_size)
        own_chunk = own_chunk_time(LONG_STREAM, args.blocks * 5)
        obsdeco.flush()
    span = LONG_STREAM - SHORT_STREAM
    per_chunk = (figures["added_stream_long"] - figures["added_stream_short"]) / span
    sdk_per_chunk = (figures["plain_stream_long"] - figures["plain_stream_short"]) / span
    rows = [
        ("generate_content", figures["plain_call"], figures["added_call"]),
        (
            f"stream, {SHORT_STREAM} chunks",
            figures["plain_stream_short"],
            figures["added_stream_short"],
        ),
        (
            f"stream, {LONG_STREAM} chunks",
            figures["plain_stream_long"],
            figures["added_stream_long"],
        ),
        ("per stream chunk (slope)", sdk_per_chunk, per_chunk),
    ]
    own = {"per call": own_call, "per chunk": own_chunk}
    print(f"{'google-genai (MockTransport)':<30} {'SDK alone':>12} {'obsdeco adds':>14}")
    for label, plain, added in rows:
        print(f"{label:<30} {plain * 1e6:>9.1f} us {added * 1e6:>11.1f} us")
    print("\nobsdeco's own time on the caller's thread")
    for label, seconds in own.items():
        print(f"{label:<30} {seconds * 1e6:>9.2f} us")
    write_results(
        "gemini",
        {
            **environment(),
            "blocks": args.blocks,
            "block_size": args.block_size,
            "us": {
                label: {"sdk": plain * 1e6, "added": added * 1e6} for label, plain, added in rows
            },
            "own_us": {label: seconds * 1e6 for label, seconds in own.items()},
        },
    )


if __name__ == "__main__":
    main()
