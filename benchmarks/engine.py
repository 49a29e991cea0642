"""Engine benchmark: what a cache hit, a cache miss and a route decision cost, in one run.

    python benchmarks/engine.py [--calls N] [--blocks B]

The OpenAI SDK talks to httpx2's MockTransport (no network) answering a recorded chat
completion, with `patch_all()` on and every record going to a SQLite store in a temporary
folder. Figures are medians of per-block medians:

- a hit: one call inside `obsdeco.cache()` answered from the cache (memory, SQLite, Redis),
  SDK parsing included, beside the same call sent to the mock transport with obsdeco on; and
  the hit from the SDK request seam on (the lookup, the SDK's own parsing of the stored
  answer and the record), without what the SDK does before it reaches the seam (turning the
  arguments into a request body, about half of the call);
- a miss: a call inside `obsdeco.cache()` whose request is new each time (the lookup, the
  request hash and the copy of the answer), less the same call outside a cache scope; the
  store's write runs off the caller's thread, and each call waits (untimed) for it to finish,
  so that writes do not pile up behind a mock transport that answers at once. The engine's
  own time on a miss (planning the call, the lookup, keeping the answer) is also timed apart,
  since the difference of two calls of 600 µs is noisy;
- the route decision: `Router.decide` for a matching request (the prompt-size estimate and
  the tools test), and a routed call's added time against the same call unrouted.

Prints a table and writes benchmarks/results/engine.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import timeit
from collections.abc import Callable
from itertools import count
from typing import Any

from common import environment, write_results
from overhead import mock_client

import obsdeco
from obsdeco.engine.cache import CachePlan
from obsdeco.engine.cache_store import flush_caches
from obsdeco.engine.router import Router
from obsdeco.integrations import engine as integrations_engine
from obsdeco.integrations.sdk import SDKSeam

REDIS_URL = os.environ.get("OBSDECO_BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")
MESSAGES = [
    {"role": "system", "content": "You answer in one word."},
    {"role": "user", "content": "What is the capital of France?"},
]


def _block_median(action: Callable[[], None], size: int) -> float:
    """The median µs of `action`, each run followed (untimed) by the cache's pending writes."""
    times = []
    for _ in range(size):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
        flush_caches()
    return statistics.median(times) * 1e6


def _medians(actions: dict[str, Callable[[], None]], blocks: int, size: int) -> dict[str, float]:
    """Each action's median per call (µs), its blocks interleaved with the others'."""
    found: dict[str, list[float]] = {name: [] for name in actions}
    for _ in range(blocks):
        for name, action in actions.items():
            found[name].append(_block_median(action, size))
    return {name: statistics.median(values) for name, values in found.items()}


_ENGINE_STEPS = (
    (integrations_engine, "plan"),
    (CachePlan, "lookup"),
    (CachePlan, "keep_read"),
)


def _time_engine_steps(spent: list[float]) -> list[Callable[..., Any]]:
    """Replace the engine's steps on a miss with timed ones adding to `spent[0]`; the originals."""
    originals = [getattr(owner, name) for owner, name in _ENGINE_STEPS]
    for (owner, name), original in zip(_ENGINE_STEPS, originals, strict=True):

        def timed(*args: Any, original: Callable[..., Any] = original) -> Any:
            start = time.perf_counter()
            try:
                return original(*args)
            finally:
                spent[0] += time.perf_counter() - start

        setattr(owner, name, timed)
    return originals


def _restore_engine_steps(originals: list[Callable[..., Any]]) -> None:
    for (owner, name), original in zip(_ENGINE_STEPS, originals, strict=True):
        setattr(owner, name, original)


def _configure(folder: str, cache_url: str, **options: object) -> None:
    obsdeco.configure(database_url=f"sqlite:///{folder}/calls.db", cache_url=cache_url, **options)


def cache_figures(folder: str, blocks: int, size: int) -> dict[str, dict[str, float]]:
    client = mock_client()
    fresh = count()

    def plain() -> None:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    def cached() -> None:
        with obsdeco.cache(ttl_s=3600):
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    def missed() -> None:
        with obsdeco.cache(ttl_s=3600):
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, seed=next(fresh))

    def sent() -> None:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, seed=next(fresh))

    seam_times: list[float] = []
    observed_request = SDKSeam.request

    def timed_request(self: SDKSeam, *args: Any) -> Any:
        start = time.perf_counter()
        try:
            return observed_request(self, *args)
        finally:
            seam_times.append(time.perf_counter() - start)

    own: list[float] = []

    def timed_miss() -> None:
        """A miss, with the engine's own time on it kept apart (planning, the lookup and
        keeping the answer: everything the cache adds to the caller's thread)."""
        spent = [0.0]
        originals = _time_engine_steps(spent)
        try:
            missed()
        finally:
            _restore_engine_steps(originals)
        own.append(spent[0])

    results: dict[str, dict[str, float]] = {}
    backends = {
        "memory": "memory://",
        "sqlite": f"sqlite:///{folder}/cache.db",
        "redis": REDIS_URL,
    }
    for name, url in backends.items():
        _configure(folder, url)
        cached()  # stored
        obsdeco.flush()
        medians = _medians(
            {"hit": cached, "sent": plain, "miss": missed, "outside": sent}, blocks, size
        )
        own.clear()
        for _ in range(blocks * size):
            timed_miss()
            flush_caches()
        seam_times.clear()
        SDKSeam.request = timed_request  # type: ignore[method-assign]
        try:
            for _ in range(blocks * size):
                cached()
        finally:
            SDKSeam.request = observed_request  # type: ignore[method-assign]
        obsdeco.flush()
        results[name] = {
            "hit_us": medians["hit"],
            "hit_from_seam_us": statistics.median(seam_times) * 1e6,
            "sent_to_transport_us": medians["sent"],
            "miss_added_us": medians["miss"] - medians["outside"],
            "miss_own_us": statistics.median(own) * 1e6,
        }
    return results


def route_figures(folder: str, blocks: int, size: int) -> dict[str, float]:
    rule = obsdeco.Route(
        from_model="gpt-4o", to_model="gpt-4o-mini", max_prompt_tokens=2_000, tools=False
    )
    router = Router([rule])
    body = {"model": "gpt-4o", "messages": MESSAGES}
    decisions = min(timeit.repeat(lambda: router.decide("gpt-4o", body), number=10_000, repeat=7))
    client = mock_client()

    def routed() -> None:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)

    def unrouted() -> None:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    _configure(folder, "memory://", routes=[rule])
    medians = _medians({"routed": routed, "unrouted": unrouted}, blocks, size)
    obsdeco.flush()
    return {
        "decision_us": decisions / 10_000 * 1e6,
        "routed_call_added_us": medians["routed"] - medians["unrouted"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=200, help="calls per block")
    parser.add_argument("--blocks", type=int, default=9)
    args = parser.parse_args()
    obsdeco.patch_all()
    with tempfile.TemporaryDirectory() as folder:
        cache = cache_figures(folder, args.blocks, args.calls)
        route = route_figures(folder, args.blocks, args.calls)
    print("Response cache (median per call, µs; OpenAI SDK over MockTransport):")
    print(
        f"  {'backend':8} {'hit':>9} {'hit from the seam':>18} {'sent to transport':>18} "
        f"{'miss adds':>10} {'miss, engine own':>17}"
    )
    for name, figures in cache.items():
        print(
            f"  {name:8} {figures['hit_us']:9.1f} {figures['hit_from_seam_us']:18.1f} "
            f"{figures['sent_to_transport_us']:18.1f} {figures['miss_added_us']:10.1f} "
            f"{figures['miss_own_us']:17.1f}"
        )
    print("\nModel router:")
    print(f"  decision (Router.decide, matching request)  {route['decision_us']:6.2f} µs")
    print(f"  routed call, added against unrouted         {route['routed_call_added_us']:6.1f} µs")
    write_results("engine", {"environment": environment(), "cache": cache, "router": route})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
