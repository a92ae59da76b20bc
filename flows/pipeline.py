"""What a user writes to plug in their own work: a pipeline definition.

A pipeline names its model and channel, turns one input item into a prompt, declares the
Pydantic model its answers must validate against and the generation settings its requests
carry, and gives an idempotent side effect ``on_result(key, result)`` that delivers one
validated result.

Every hook may take one more positional argument than its usual ones, and then gets it
(checked once, from its signature, so hooks written before keep working):

- ``load_items(day, run)``, ``key_of(item, day, run)``, ``build_prompt(item, run)``: the
  :class:`Run` (its day and its parameters, e.g. a target language set on a deployment);
- ``on_result(key, result, kept)``: what ``build_prompt`` chose to keep of the item
  (``Prompt.keep``), stored with the job, so a side effect never parses ids out of keys.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from types import MappingProxyType
from typing import Any, Generic, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator, model_validator

from flows.contents import Part, fit_inline
from flows.deadline import Deadline
from flows.embedding import EmbeddingSettings
from flows.generation import GenerationSettings, check_settings
from flows.prefix import CachedPrefix
from ledger import PIPELINE_NAME_MAX, Channel, Policy, Vector

__all__ = [
    "KEEP_MAX_BYTES",
    "Item",
    "Part",
    "Pipeline",
    "Prompt",
    "Run",
    "effective_settings",
]

Item = TypeVar("Item")

# What an item keeps rides with its job in the ledger, on every row: ids and small fields,
# never the item itself.
KEEP_MAX_BYTES = 2048


@dataclass(frozen=True)
class Run:
    """What the hooks know of the run: its day and its parameters (a tick's ``params``,
    e.g. set on a deployment; empty when none were given)."""

    day: date
    params: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))


class Prompt(BaseModel):
    """The request for one item, independent of the channel that will send it.

    It is what the ledger stores as the job's payload; each channel renders it into its own
    API call (a batch JSONL row, an interaction, a generate_content call).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    text: str = Field(min_length=1)
    # Media (and more text) after the text, in order: inline bytes, files to upload, URIs
    # (flows.contents). Inline data that would make the request too large is uploaded.
    parts: tuple[Part, ...] = ()
    system: str | None = None
    # Kept from before generation settings existed: the same as settings.temperature.
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    # This item's own generation settings, over the pipeline's (field by field).
    settings: GenerationSettings | None = None
    # What of the item its on_result needs (ids, a path...): stored with the job, never
    # sent to the API, handed to on_result(key, result, kept). Small, and no secrets.
    keep: JsonValue | None = None

    @model_validator(mode="after")
    def _fits_inline(self) -> Prompt:
        if self.parts:
            # Frozen: the fitted parts replace the given ones once, when the prompt is made.
            object.__setattr__(self, "parts", fit_inline(self.text, self.parts))
        return self

    def contents(self) -> tuple[Part, ...]:
        """The request's parts in order: the text, then ``parts``."""
        return (Part(text=self.text), *self.parts)

    @field_validator("keep")
    @classmethod
    def _small(cls, value: JsonValue | None) -> JsonValue | None:
        if value is not None:
            size = len(orjson.dumps(value))
            if size > KEEP_MAX_BYTES:
                raise ValueError(
                    f"keep is {size} bytes as JSON, the limit is {KEEP_MAX_BYTES}: keep ids,"
                    " not the item"
                )
        return value


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
    # The answers' model. An embedding pipeline (``embedding=``) leaves it out: its answers
    # are ``ledger.Vector`` values, checked by the core (length, finite numbers).
    output: type[BaseModel] = None  # type: ignore[assignment]
    load_items: Callable[..., Iterable[Item]]  # (day) or (day, run)
    key_of: Callable[..., str]  # (item, day) or (item, day, run)
    build_prompt: Callable[..., Prompt]  # (item) or (item, run)
    on_result: Callable[..., None]  # (key, result) or (key, result, kept)
    # Sent with every request; an item's Prompt.settings override them field by field.
    # Part of the recorded definition: a change is a new revision (flows.identity).
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    # Declares the result kind: with it, each row's result is a vector (embed_content on the
    # direct channel, an embeddings batch job on the batch channel). Part of the recorded
    # definition, like ``generation``.
    embedding: EmbeddingSettings | None = None
    # A long shared start of every request (system instruction, reference parts), sent once
    # a night as a context cache (flows.prefix). Part of the recorded definition too.
    cached_prefix: CachedPrefix | None = None
    attempt_cap: int = 4
    unknown_cap: int = 2
    batch_size_limit: int = 50_000
    # The API takes input files of up to 2 GB; a reservation whose file would be larger is
    # split, the rows that did not fit going out in the next batch job.
    batch_bytes_limit: int = 2_000_000_000
    # The most a night of this pipeline may spend, in USD, at the price table's estimate
    # (flows.run._budget): rows that would pass it wait, pending, for a night with room.
    # Not part of the recorded definition: it changes how many rows go out tonight, never
    # what an answer is, so a new cap is no new revision (and a tick's budget_usd parameter
    # overrides it for one deployment).
    budget_usd: float | None = None
    # A morning deadline (batch channel): rows still out when the time left is no more than
    # the fallback channel needs for them go out on it (flows.channels._deadline). A
    # ``flows.Deadline`` or "07:00 Europe/Paris"; not part of the recorded definition.
    deadline: Deadline | str | None = None
    # The channel that meets the deadline: direct (the only one, and the default with one).
    fallback: Channel | None = None
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
        if self.budget_usd is not None and not (
            math.isfinite(self.budget_usd) and self.budget_usd >= 0
        ):
            raise ValueError(f"budget_usd must be a finite number >= 0, got {self.budget_usd}")
        Policy(attempt_cap=self.attempt_cap, unknown_cap=self.unknown_cap)
        self._check_deadline()
        if isinstance(self.generation, Mapping):  # a plain dict of settings is taken too
            object.__setattr__(
                self, "generation", GenerationSettings.model_validate(self.generation)
            )
        if not isinstance(self.generation, GenerationSettings):
            raise ValueError("generation must be a flows.GenerationSettings")
        if isinstance(self.embedding, Mapping):
            object.__setattr__(self, "embedding", EmbeddingSettings.model_validate(self.embedding))
        if self.embedding is not None:
            self._check_embedding()
        elif self.output is None:
            raise ValueError("output is required (or embedding=, for a pipeline of vectors)")
        check_settings(self.generation, model=self.model, channel=Channel(self.channel).value)
        if isinstance(self.cached_prefix, Mapping):
            object.__setattr__(
                self, "cached_prefix", CachedPrefix.model_validate(self.cached_prefix)
            )
        if self.cached_prefix is not None:
            if not isinstance(self.cached_prefix, CachedPrefix):
                raise ValueError("cached_prefix must be a flows.CachedPrefix")
            if self.embedding is not None:
                raise ValueError("an embedding pipeline takes no cached_prefix")
            self.cached_prefix.check(self.channel)

    def _check_deadline(self) -> None:
        if self.deadline is None:
            if self.fallback is not None:
                raise ValueError("a fallback channel is for a deadline: give deadline= too")
            return
        object.__setattr__(self, "deadline", Deadline.of(self.deadline))
        if Channel(self.channel) is not Channel.BATCH:
            raise ValueError(
                f"a deadline is met by falling back from the batch channel, not"
                f" {Channel(self.channel).value}"
            )
        fallback = Channel(self.fallback or Channel.DIRECT)
        if fallback is not Channel.DIRECT:
            raise ValueError(f"the fallback channel is direct, not {fallback.value}")
        object.__setattr__(self, "fallback", fallback)

    def _check_embedding(self) -> None:
        if not isinstance(self.embedding, EmbeddingSettings):
            raise ValueError("embedding must be a flows.EmbeddingSettings")
        if self.output is not None and self.output is not Vector:
            raise ValueError("an embedding pipeline's results are vectors: leave output out")
        if Channel(self.channel) not in (Channel.DIRECT, Channel.BATCH):
            # The background channel is the Interactions API, which has no embeddings.
            raise ValueError(
                "embedding pipelines run on the direct or batch channel, not"
                f" {Channel(self.channel).value}: the Interactions API has no embeddings"
            )
        if self.generation.given():
            raise ValueError("generation settings do not apply to an embedding pipeline")
        object.__setattr__(self, "output", Vector)

    @property
    def is_embedding(self) -> bool:
        """Whether the pipeline's results are vectors (see ``embedding``)."""
        return self.embedding is not None

    @property
    def policy(self) -> Policy:
        return Policy(attempt_cap=self.attempt_cap, unknown_cap=self.unknown_cap)

    def prompt_of(self, payload: str) -> Prompt:
        """The prompt stored as a job's payload."""
        return Prompt.model_validate_json(payload)

    def settings_for(self, prompt: Prompt) -> GenerationSettings:
        """The settings one request is sent with: the pipeline's, then the item's own."""
        return effective_settings(prompt, self.generation)

    # --- the hooks, called with the run when they take it ----------------------------------

    def items_of(self, run: Run) -> Iterable[Item]:
        if _takes(self.load_items, 2):
            return self.load_items(run.day, run)
        return self.load_items(run.day)

    def key_for(self, item: Item, run: Run) -> str:
        if _takes(self.key_of, 3):
            return self.key_of(item, run.day, run)
        return self.key_of(item, run.day)

    def prompt_for(self, item: Item, run: Run) -> Prompt:
        """The item's prompt, its settings checked against the model and channel."""
        prompt = (
            self.build_prompt(item, run)
            if _takes(self.build_prompt, 2)
            else self.build_prompt(item)
        )
        if not isinstance(prompt, Prompt):
            raise TypeError(f"build_prompt returned a {type(prompt).__name__}, not a Prompt")
        if prompt.settings is not None and self.is_embedding:
            raise ValueError("generation settings do not apply to an embedding pipeline")
        if prompt.parts and self.is_embedding:
            # Embeddings are sent as text only: media parts would be dropped unseen.
            raise ValueError("an embedding pipeline embeds text: its prompts take no parts")
        if prompt.system is not None and self.cached_prefix is not None:
            # A request naming a cache cannot set a system instruction too (the API refuses
            # it): the pipeline's instruction is the prefix's.
            raise ValueError(
                "a pipeline with a cached_prefix takes its system instruction from the"
                " prefix: leave Prompt.system out"
            )
        if prompt.settings is not None:
            check_settings(
                self.settings_for(prompt), model=self.model, channel=Channel(self.channel).value
            )
        return prompt

    @property
    def wants_kept(self) -> bool:
        """Whether ``on_result`` takes the item's kept data (a third argument)."""
        return _takes(self.on_result, 3)

    def deliver(self, key: str, result: Any, kept: JsonValue | None = None) -> None:
        if _takes(self.on_result, 3):
            self.on_result(key, result, kept)
        else:
            self.on_result(key, result)


def effective_settings(prompt: Prompt, base: GenerationSettings | None) -> GenerationSettings:
    """The settings a request for ``prompt`` is sent with: ``base`` (the pipeline's), then
    the prompt's own settings over them, then its ``temperature`` if it gives one. Every
    channel renders this same value."""
    merged = (base or _NO_SETTINGS).merged(prompt.settings)
    if prompt.temperature is not None:
        merged = merged.model_copy(update={"temperature": prompt.temperature})
    return merged


_NO_SETTINGS = GenerationSettings()


def _takes(fn: Callable[..., Any], n: int) -> bool:
    """Whether ``fn`` can be called with ``n`` positional arguments (its signature says so);
    a callable whose signature cannot be read gets the usual arguments."""
    try:
        return _takes_cached(fn, n)
    except TypeError:  # an unhashable callable object: read its signature every time
        return _arity_at_least(fn, n)


@functools.lru_cache(maxsize=256)
def _takes_cached(fn: Callable[..., Any], n: int) -> bool:
    return _arity_at_least(fn, n)


def _arity_at_least(fn: Callable[..., Any], n: int) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = 0
    for p in params:
        if p.kind is inspect.Parameter.VAR_POSITIONAL:
            return True
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD):
            positional += 1
    return positional >= n
