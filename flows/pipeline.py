"""What a user writes to plug in their own work: a pipeline definition.

A pipeline names its model and channel, turns one input item into a prompt, declares the
Pydantic model its answers must validate against, and gives an idempotent side effect
``on_result(key, result)`` that delivers one validated result.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from ledger import PIPELINE_NAME_MAX, Channel, Policy

__all__ = ["Item", "Pipeline", "Prompt"]

Item = TypeVar("Item")


class Prompt(BaseModel):
    """The request for one item, independent of the channel that will send it.

    It is what the ledger stores as the job's payload; each channel renders it into its own
    API call (a batch JSONL row, an interaction, a generate_content call).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    text: str = Field(min_length=1)
    system: str | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)


@dataclass(frozen=True, kw_only=True)
class Pipeline(Generic[Item]):
    """One nightly job: its inputs, how each becomes a prompt, and where results go.

    ``key_of`` must be stable for an item (the idempotency key); put a version in it to ask
    for a deliberate regeneration. ``on_result`` must be idempotent (an overwrite by key):
    after a crash inside it, it is called again for the same key.
    """

    name: str
    model: str
    channel: Channel
    output: type[BaseModel]
    load_items: Callable[[date], Iterable[Item]]
    key_of: Callable[[Item, date], str]
    build_prompt: Callable[[Item], Prompt]
    on_result: Callable[[str, Any], None]
    attempt_cap: int = 4
    unknown_cap: int = 2
    batch_size_limit: int = 50_000
    # The API takes input files of up to 2 GB; a reservation whose file would be larger is
    # split, the rows that did not fit going out in the next batch job.
    batch_bytes_limit: int = 2_000_000_000
    description: str = ""

    def __post_init__(self) -> None:
        if (
            not isinstance(self.name, str)
            or not self.name.replace("-", "").replace("_", "").isalnum()
        ):
            raise ValueError(f"pipeline name {self.name!r}: use letters, digits, - and _")
        if len(self.name) > PIPELINE_NAME_MAX:
            # It is part of every batch reservation token (gl-<name>-<8 hex>, varchar(128)):
            # PostgreSQL would refuse the longer token at the first reserve, every tick.
            raise ValueError(
                f"pipeline name {self.name[:20]!r}... is {len(self.name)} characters long,"
                f" the limit is {PIPELINE_NAME_MAX}"
            )
        if self.batch_size_limit < 1:
            raise ValueError("batch_size_limit must be at least 1")
        if self.batch_bytes_limit < 1:
            raise ValueError("batch_bytes_limit must be at least 1")
        Policy(attempt_cap=self.attempt_cap, unknown_cap=self.unknown_cap)

    @property
    def policy(self) -> Policy:
        return Policy(attempt_cap=self.attempt_cap, unknown_cap=self.unknown_cap)

    def prompt_of(self, payload: str) -> Prompt:
        """The prompt stored as a job's payload."""
        return Prompt.model_validate_json(payload)
