"""obsdeco quickstart: record a support-bot session and print its report (no API key needed).

Run with `make demo`, or `python examples/quickstart.py`. Records go to ./obsdeco.db unless
OBSDECO_DATABASE_URL says otherwise.
"""

from __future__ import annotations

import obsdeco
from obsdeco import ModelProvider, Observatory

obsdeco.configure(project="support-bot")
obs = Observatory()

# One customer ticket handled by three agents; the numbers are what the SDKs would report.
with obs.track("handle-ticket", metadata={"ticket": "T-1042"}) as session:
    obs.record_call(
        provider=ModelProvider.OPENAI,
        model_name="gpt-4o-mini",
        prompt_tokens=850,
        completion_tokens=12,
        latency_ms=420,
        agent_name="Triage",
        operation="classify",
    )
    obs.record_call(
        provider=ModelProvider.ANTHROPIC,
        model_name="claude-sonnet-4-5",
        prompt_tokens=6_200,
        cached_tokens=5_000,
        completion_tokens=640,
        latency_ms=5_300,
        time_to_first_token_ms=610,
        streamed=True,
        agent_name="Researcher",
        operation="search-kb",
    )
    obs.record_call(
        provider=ModelProvider.OPENAI,
        model_name="gpt-4o",
        prompt_tokens=2_400,
        completion_tokens=380,
        latency_ms=3_900,
        agent_name="Writer",
        operation="draft-reply",
    )
    obs.record_call(
        provider=ModelProvider.OPENAI,
        model_name="gpt-4o",
        latency_ms=150,
        success=False,
        error_type="rate_limit",
        error_message="429: Rate limit reached for gpt-4o",
        agent_name="Writer",
        operation="draft-reply",
    )

print(obs.get_report(session))
obsdeco.flush()
print(f"\nstored in {obsdeco.get_settings().database_url}: {obsdeco.stats().written} records")
