"""Which OpenAI-named request options a provider honours (`seed`, `response_format`, ...).

A /v1 request's options are checked against the provider before anything is stored: one a
provider cannot honour is a 400 that names it, never dropped on the way
(docs/api/openai-compatible.md).
Each provider declares its own `option_support`; the adapter then sends each one as is or
under its own wire name.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field

# Whether a provider can honour one value of an option (None: any value).
ValueCheck = Callable[[object], bool]


@dataclass(frozen=True, slots=True)
class OptionSupport:
    """The options a provider honours, and whether fields nobody knows go upstream too."""

    honoured: Mapping[str, ValueCheck | None] = field(default_factory=dict)
    # An OpenAI-compatible server (vLLM, Ollama) has options of its own: they pass as sent.
    passes_unknown: bool = False

    def honours(self, name: str, value: object, *, known: bool = True) -> bool:
        """Whether `name: value` reaches the model; `known=False` for a field OpenAI lacks."""
        if not known:
            return self.passes_unknown
        if name not in self.honoured:
            return False
        check = self.honoured[name]
        return check is None or check(value)

    def first_refused(self, options: Mapping[str, object], unknown: Collection[str]) -> str | None:
        """The first of `options` this provider cannot honour (`unknown`: fields OpenAI lacks)."""
        for name, value in options.items():
            if not self.honours(name, value, known=name not in unknown):
                return name
        return None


NO_OPTIONS = OptionSupport()

# What an OpenAI-format server receives under OpenAI's own names (every option this service
# takes, but the deprecated `functions`, logprobs and audio).
OPENAI_OPTIONS = frozenset(
    {
        "frequency_penalty",
        "logit_bias",
        "max_completion_tokens",
        "max_tokens",
        "metadata",
        "moderation",
        "parallel_tool_calls",
        "prediction",
        "presence_penalty",
        "prompt_cache_key",
        "prompt_cache_options",
        "prompt_cache_retention",
        "reasoning_effort",
        "response_format",
        "safety_identifier",
        "seed",
        "service_tier",
        "stop",
        "store",
        "temperature",
        "tool_choice",
        "tools",
        "top_p",
        "user",
        "verbosity",
        "web_search_options",
    }
)


def openai_option_support(*, passes_unknown: bool = False) -> OptionSupport:
    """Every OpenAI option, as is; `passes_unknown` for servers with options of their own."""
    return OptionSupport(dict.fromkeys(OPENAI_OPTIONS), passes_unknown=passes_unknown)


def option_support_of(provider: object) -> OptionSupport:
    """What `provider` declares it honours; a provider that declares nothing honours none."""
    support = getattr(provider, "option_support", None)
    return support if isinstance(support, OptionSupport) else NO_OPTIONS
