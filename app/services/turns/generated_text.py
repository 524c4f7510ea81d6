"""A reply's text as the provider produces it, shared by the turn that runs the provider and
the saver that stores the text of every running reply while it grows."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass(slots=True)
class Generation:
    """What the provider produced so far: kept on the reply whether it finishes or fails."""

    parts: list[str] = field(default_factory=list)
    first_token_at: int | None = None

    @property
    def text(self) -> str:
        return "".join(self.parts)


def monotonic_ms() -> int:
    return int(time.monotonic() * 1000)
