"""Work run in child processes by the budget tests: calls racing for a shared project budget."""

from __future__ import annotations

import threading
from multiprocessing.queues import Queue

import openai

import obsdeco

PROJECT = "shared"
MESSAGES = [{"role": "user", "content": "Grüße aus Köln"}]
MAX_TOKENS = 50


def spend(database_url: str, base_url: str, limit_usd: float, calls: int, outcomes: Queue) -> None:
    """Make `calls` gpt-4o calls at once under one project budget of `limit_usd` a day; put
    "sent" or "refused" in `outcomes` for each."""
    obsdeco.configure(
        database_url=database_url,
        project=PROJECT,
        budgets=[obsdeco.Budget(limit_usd=limit_usd, scope="project", window="1d")],
    )
    obsdeco.patch_all()
    client = openai.OpenAI(base_url=base_url, api_key="sk-test", max_retries=0)
    start = threading.Barrier(calls)

    def attempt() -> None:
        start.wait()
        try:
            client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=MAX_TOKENS)
        except obsdeco.BudgetExceeded:
            outcomes.put("refused")
        else:
            outcomes.put("sent")

    threads = [threading.Thread(target=attempt) for _ in range(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    obsdeco.flush()
