"""Provider integrations: the seams behind `patch_all()` and the explicit wrappers.

One module per job: `facts` (the readers' vocabulary), `format` (what a provider format
supplies), `recorder` (one observed call), `proxies` (observed streams and raw responses),
`seam` (installing and removing patches), `sdk` (the SDK request seam), `google_genai` (the
google-genai SDK's own seam), `dspy` (dspy's lm15 client), `explicit` (the `wrap_*`
integrations), `patching` (`patch_all`); one module per provider format (`openai`,
`anthropic`, `gemini`), shared by every seam.
"""

from obsdeco.integrations.explicit import AnthropicIntegration, OpenAIIntegration
from obsdeco.integrations.facts import ResponseFacts, StreamAccumulator, field
from obsdeco.integrations.format import ProviderFormat
from obsdeco.integrations.patching import patch_all, unpatch_all
from obsdeco.integrations.recorder import CallRecorder
from obsdeco.integrations.sdk import SDKSeam

__all__ = [
    "AnthropicIntegration",
    "CallRecorder",
    "OpenAIIntegration",
    "ProviderFormat",
    "ResponseFacts",
    "SDKSeam",
    "StreamAccumulator",
    "field",
    "patch_all",
    "unpatch_all",
]
