"""The strategy contract. ``evaluate`` and its decisions arrive with the strategies issue."""

from __future__ import annotations

from typing import Any, ClassVar


class Strategy:
    """A trading strategy: a key, a JSON Schema for its params, and a warm-up length."""

    key: ClassVar[str]
    #: JSON Schema (draft 2020-12) of the params object; validated when a bot is saved.
    params_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {},
        "additionalProperties": False,
    }
    #: Closed candles needed before the first decision.
    warmup: ClassVar[int] = 0
    enabled: ClassVar[bool] = True
