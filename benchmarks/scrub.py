"""Scrubbing benchmark: throughput of the built-in PII and secret rules, in MB/s.

    python benchmarks/scrub.py [--megabytes N]

Scrubs N MB of chat-like text twice: prose with no PII at all, and the same prose with a PII
item (email, phone, card, IBAN, IP address, key, ...) every ~200 characters. Also times the
whole policy on a batch of captured calls (cut, scrub) as the writer thread runs it. Prints a
table and writes benchmarks/results/scrub.json.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from common import environment, write_results

from obsdeco.config import build_settings
from obsdeco.models import LLMCall
from obsdeco.privacy.policy import ContentPolicy
from obsdeco.privacy.scrub import Scrubber
from obsdeco.storage.base import WriteBatch

WORDS = [
    "the",
    "customer",
    "asked",
    "about",
    "their",
    "order",
    "and",
    "the",
    "agent",
    "replied",
    "with",
    "the",
    "refund",
    "policy",
    "for",
    "items",
    "bought",
    "last",
    "month",
    "please",
    "summarise",
    "the",
    "thread",
    "and",
    "draft",
    "a",
    "polite",
    "answer",
    "in",
    "english",
]
PII = [
    "ann.lee@example.com",
    "+44 20 7946 0958",
    "4111 1111 1111 1111",
    "GB82 WEST 1234 5698 7654 32",
    "192.168.10.24",
    "sk-proj-abcdefghijklmnopqrstuvwxyz123456",
    "123-45-6789",
    "(415) 555-2671",
]


def text(megabytes: float, with_pii: bool, rng: random.Random) -> str:
    parts: list[str] = []
    size = 0
    while size < megabytes * 1_000_000:
        sentence = " ".join(rng.choices(WORDS, k=30))
        if with_pii:
            sentence += f" {rng.choice(PII)}."
        parts.append(sentence)
        size += len(sentence) + 1
    return "\n".join(parts)


def megabytes_per_second(run: object, payload: str, repeats: int = 3) -> float:
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        run(payload)  # type: ignore[operator]
        timings.append(time.perf_counter() - started)
    return len(payload.encode()) / 1e6 / statistics.median(timings)


def policy_per_call_us(calls: int, rng: random.Random) -> float:
    settings = build_settings(capture_content=True)
    batch = WriteBatch(
        calls=[
            LLMCall(
                session_id="s" * 32,
                project_name="bench",
                provider="openai",
                model="gpt-4o",
                latency_ms=1.0,
                prompt=text(0.002, True, rng),
                completion=text(0.001, True, rng),
            )
            for _ in range(calls)
        ]
    )
    started = time.perf_counter()
    ContentPolicy(settings).apply(batch)
    return (time.perf_counter() - started) / calls * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--megabytes", type=float, default=5.0)
    args = parser.parse_args()
    rng = random.Random(11)
    scrub = Scrubber()
    clean = text(args.megabytes, False, rng)
    dirty = text(args.megabytes, True, rng)
    results = {
        **environment(),
        "megabytes": args.megabytes,
        "clean_mb_s": megabytes_per_second(scrub, clean),
        "pii_mb_s": megabytes_per_second(scrub, dirty),
        "pii_items": sum(dirty.count(item) for item in PII),
        "policy_us_per_call_3kb": policy_per_call_us(500, rng),
    }
    print(f"scrub, prose without PII           {results['clean_mb_s']:8.1f} MB/s")
    print(f"scrub, a PII item every ~200 chars {results['pii_mb_s']:8.1f} MB/s")
    print(f"policy per captured call (3 KB)    {results['policy_us_per_call_3kb']:8.0f} us")
    write_results("scrub", results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
