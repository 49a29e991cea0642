"""Provider integrations: the patches behind `patch_all()` and the explicit wrappers.

`base.py` holds what every provider shares; `openai.py` and `anthropic.py` describe one SDK each.
"""

from obsdeco.integrations.anthropic import AnthropicIntegration
from obsdeco.integrations.base import (
    CallRecorder,
    ProviderIntegration,
    ResponseFacts,
    StreamAccumulator,
)
from obsdeco.integrations.openai import OpenAIIntegration
from obsdeco.integrations.patching import patch_all, unpatch_all

__all__ = [
    "AnthropicIntegration",
    "CallRecorder",
    "OpenAIIntegration",
    "ProviderIntegration",
    "ResponseFacts",
    "StreamAccumulator",
    "patch_all",
    "unpatch_all",
]
