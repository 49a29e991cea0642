"""obsdeco quickstart: a small multi-agent program, observed, and its session report.

A planner (OpenAI, with a tool call), a researcher (Anthropic, streamed) and a writer (OpenAI,
whose first attempt is rate limited and retried by the SDK) answer one question. obsdeco
records every call through `patch_all()` and the decorators; nothing else in the program knows.

With OPENAI_API_KEY and ANTHROPIC_API_KEY set, it calls the real APIs. Without them it starts
obsdeco's local test provider, which answers like the real APIs, so no key is needed:

    make demo            # or: python examples/quickstart.py
"""

from __future__ import annotations

import json
import os
from contextlib import ExitStack

import anthropic
import openai

import obsdeco
from obsdeco.testing import ProviderServer, Reply

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "search_docs",
            "description": "Search the product documentation.",
            "parameters": {
                "type": "object",
                "properties": {"query": {"type": "string"}},
                "required": ["query"],
            },
        },
    }
]


def connect(stack: ExitStack) -> tuple[openai.OpenAI, anthropic.Anthropic]:
    """Real clients when both keys are set, else clients of a local provider."""
    if os.environ.get("OPENAI_API_KEY") and os.environ.get("ANTHROPIC_API_KEY"):
        return openai.OpenAI(max_retries=2), anthropic.Anthropic(max_retries=2)
    provider = stack.enter_context(ProviderServer())
    # The real APIs answer an alias with the snapshot it stands for; so do these replies.
    provider.enqueue(_planner_tool_call(), path="/v1/chat/completions")
    provider.enqueue(Reply.default(model="gpt-4o-mini-2024-07-18"), path="/v1/chat/completions")
    provider.enqueue(
        Reply.error(429, message="Rate limit reached for gpt-4o", headers={"retry-after-ms": "5"}),
        path="/v1/chat/completions",
    )
    provider.enqueue(Reply.default(model="gpt-4o-2024-08-06"), path="/v1/chat/completions")
    provider.enqueue(Reply.default(model="claude-haiku-4-5-20251001"), path="/v1/messages")
    print(f"no API keys: using the local provider at {provider.base_url}\n")
    return (
        openai.OpenAI(base_url=provider.openai_base_url, api_key="sk-local", max_retries=2),
        anthropic.Anthropic(base_url=provider.anthropic_base_url, api_key="sk-local"),
    )


def _planner_tool_call() -> Reply:
    return Reply.json(
        {
            "id": "chatcmpl-local-1",
            "object": "chat.completion",
            "created": 1_764_000_000,
            "model": "gpt-4o-mini-2024-07-18",
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {
                                "id": "call_1",
                                "type": "function",
                                "function": {
                                    "name": "search_docs",
                                    "arguments": json.dumps({"query": "refund policy"}),
                                },
                            }
                        ],
                    },
                    "finish_reason": "tool_calls",
                }
            ],
            "usage": {"prompt_tokens": 96, "completion_tokens": 18, "total_tokens": 114},
        }
    )


def main() -> None:
    obsdeco.configure(project="support-bot")
    obsdeco.patch_all()

    with ExitStack() as stack:
        llm, claude = connect(stack)

        @obsdeco.observe_agent(name="Planner", operation="plan")
        def plan(question: str) -> str:
            messages = [{"role": "user", "content": question}]
            first = llm.chat.completions.create(model="gpt-4o-mini", messages=messages, tools=TOOLS)
            call = first.choices[0].message.tool_calls[0]
            messages += [
                first.choices[0].message.model_dump(exclude_none=True),
                {"role": "tool", "tool_call_id": call.id, "content": "Refunds within 30 days."},
            ]
            second = llm.chat.completions.create(model="gpt-4o-mini", messages=messages)
            return second.choices[0].message.content or ""

        @obsdeco.observe_agent(name="Researcher", operation="research")
        def research(topic: str) -> str:
            with claude.messages.stream(
                model="claude-haiku-4-5",
                max_tokens=300,
                messages=[{"role": "user", "content": f"Summarise: {topic}"}],
            ) as stream:
                return "".join(stream.text_stream)

        @obsdeco.observe_agent(name="Writer", operation="write")
        def write(notes: str) -> str:
            reply = llm.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": f"Reply using: {notes}"}]
            )
            return reply.choices[0].message.content or ""

        @obsdeco.observe_session(name="answer-question", return_report=True)
        def answer(question: str) -> str:
            return write(research(plan(question)))

        text, report = answer("Can I get a refund after two weeks?")

    print(f"answer: {text[:70]}...\n")
    print(report)
    obsdeco.flush()
    print(f"\nstored in {obsdeco.get_settings().database_url}, session {report.session.id}")


if __name__ == "__main__":
    main()
