"""The ledger's tables.

Timestamps are stored as epoch seconds (float): the same on SQLite and PostgreSQL, cheap to
write in bulk, and compared with an injectable clock rather than the database's ``now()``.
Payloads and results are JSON text, written once and never queried inside.
"""

from __future__ import annotations

import enum

from sqlalchemy import BigInteger, Column, Index, Text, text
from sqlmodel import Field, SQLModel

__all__ = [
    "ApiSettingsRow",
    "BatchFile",
    "BatchJob",
    "BatchMember",
    "Cache",
    "Channel",
    "FileRole",
    "Job",
    "ParkedSnapshot",
    "PipelineRow",
    "PlanRow",
    "Status",
    "WebhookDelivery",
]


class Status(enum.StrEnum):
    """A job is in exactly one of these states (docs/architecture.md has the diagram)."""

    PENDING = "pending"
    RESERVING = "reserving"
    SUBMITTED = "submitted"
    DONE = "done"
    CONSUMED = "consumed"
    RETRYABLE = "retryable"
    PARKED = "parked"


class Channel(enum.StrEnum):
    """How a job reaches Gemini."""

    BATCH = "batch"
    BACKGROUND = "background"
    DIRECT = "direct"


# The handle a row sent by a direct call is bound under (``direct:<reservation>``, set by
# ``flows.channels.direct``): the mark that the row was sent, and billed, on the direct channel,
# whatever its own channel (a batch row a deadline sent directly). The night's spend prices
# such rows at the direct rate (``PlanVerbs.night_spend``).
DIRECT_HANDLE_PREFIX = "direct:"


class FileRole(enum.StrEnum):
    """What a file of ``batch_files`` was to its batch job."""

    INPUT = "input"  # the request JSONL we uploaded: deletable once the job is terminal
    OUTPUT = "output"  # the job's responses file: deletable once reconciled


class Job(SQLModel, table=True):
    """One logical job, keyed by the caller's idempotency key."""

    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_claim", "pipeline", "status", "due_at"),
        # Partial indexes: a freshly enrolled row touches only the primary key and the claim
        # index, which is what keeps bulk enrollment fast.
        Index(
            # Handle only, not status: moving a row to done must not touch this index.
            "ix_jobs_handle",
            "handle",
            sqlite_where=text("handle IS NOT NULL"),
            postgresql_where=text("handle IS NOT NULL"),
        ),
        Index(
            "ix_jobs_reservation",
            "reservation",
            sqlite_where=text("reservation IS NOT NULL"),
            postgresql_where=text("reservation IS NOT NULL"),
        ),
        Index(
            "ix_jobs_delivery_claim",
            "delivery_claim",
            sqlite_where=text("delivery_claim IS NOT NULL"),
            postgresql_where=text("delivery_claim IS NOT NULL"),
        ),
        Index(
            "ix_jobs_parked",
            "error_class",
            "first_failure_at",
            sqlite_where=text(f"status = '{Status.PARKED.value}'"),
            postgresql_where=text(f"status = '{Status.PARKED.value}'"),
        ),
        Index(
            # The rows a night's budget paid for (ledger._plans): a night's spend is read
            # from them; rows reserved before plans were kept have none.
            "ix_jobs_plan_day",
            "pipeline",
            "plan_day",
            sqlite_where=text("plan_day IS NOT NULL"),
            postgresql_where=text("plan_day IS NOT NULL"),
        ),
        Index(
            "ix_jobs_parked_fingerprint",
            "fingerprint",
            sqlite_where=text(f"status = '{Status.PARKED.value}'"),
            postgresql_where=text(f"status = '{Status.PARKED.value}'"),
        ),
    )

    key: str = Field(primary_key=True, max_length=512)
    pipeline: str = Field(max_length=128)
    channel: str = Field(max_length=16)
    model: str = Field(max_length=128)
    payload: str = Field(sa_column=Column(Text, nullable=False))
    fingerprint: str = Field(max_length=64)
    status: str = Field(default=Status.PENDING, max_length=16)
    # Batch job name or interaction id once bound; the reservation token before that.
    handle: str | None = Field(default=None, max_length=256)
    reservation: str | None = Field(default=None, max_length=128)
    # attempts = submissions = what was billed, for the life of the key.  The caps count the
    # attempts since the last replay (attempts - attempts_base), so a replay does not
    # rewrite history.
    attempts: int = 0
    attempts_base: int = 0
    unknown_failures: int = 0
    # Failed deliveries (on_result raising, or the stored result no longer validating) since
    # the result was recorded or replayed; at the cap the row is parked as delivery:<Error>.
    delivery_failures: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    prompt_tokens: int = 0
    candidates_tokens: int = 0
    total_tokens: int = 0
    # What the answers reported beside those, summed over every attempt like them: thinking
    # tokens (inside total_tokens, billed at the output rate), prompt tokens served from a
    # context cache (inside prompt_tokens, billed at the cache rate) and prompt tokens of the
    # audio modality (inside prompt_tokens, billed at the audio rate where a model has one).
    thoughts_tokens: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    cached_tokens: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    audio_tokens: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    # The model version that produced the last answer (``modelVersion``; an interaction's
    # ``model``): behind an alias such as ``gemini-flash-latest``, what actually ran. The
    # answer's ``responseId`` beside it, to find it in Google's logs.
    model_version: str | None = Field(default=None, max_length=128)
    response_id: str | None = Field(default=None, max_length=128)
    result: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    error_class: str | None = Field(default=None, max_length=96)
    error_message: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    first_failure_at: float | None = None
    last_failure_at: float | None = None
    due_at: float = 0.0
    possible_duplicates: int = 0
    replayed: int = 0
    created_at: float = 0.0
    updated_at: float = 0.0
    reserved_at: float | None = None
    submitted_at: float | None = None
    done_at: float | None = None
    consumed_at: float | None = None
    parked_at: float | None = None
    # The pipeline's revision (pipelines.revision) when the job was last reserved: a result
    # of an earlier revision that the current output schema refuses is the setup's change,
    # not the row's fault (NULL: reserved before revisions were recorded, or unrecorded).
    schema_revision: int | None = None
    # A done row's delivery claim: the claiming tick's token and when it claimed, so two
    # ticks never both run the side effect and a dead tick's claim is taken over once stale.
    delivery_claim: str | None = Field(default=None, max_length=128)
    claimed_at: float | None = None
    # The night (a tick's day, YYYY-MM-DD) whose budget paid for the row's last reservation:
    # its answer's tokens count in that night's spend (``ledger._plans``).
    plan_day: str | None = Field(default=None, max_length=10)


class BatchJob(SQLModel, table=True):
    """One batch job we asked for: reserved under a display name, then bound to its name."""

    __tablename__ = "batch_jobs"
    __table_args__ = (Index("ix_batch_jobs_pipeline_state", "pipeline", "state"),)

    # The reservation token doubles as the batch's display name, which is how an orphan
    # (created by the API but never bound here) is found again through batches.list.
    reservation: str = Field(primary_key=True, max_length=128)
    pipeline: str = Field(max_length=128)
    model: str = Field(max_length=128)
    name: str | None = Field(default=None, max_length=256, unique=True)
    state: str = Field(default="reserving", max_length=32)
    rows: int = 0
    created_at: float = 0.0
    # Renewed by whichever tick takes over a stale reservation, so only one of them re-sends.
    leased_at: float = 0.0
    submitted_at: float | None = None
    finished_at: float | None = None
    reconciled_at: float | None = None
    summary: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    # Polls of the submitted job answered 404 in a row, and since when; the same for its
    # responses file not downloadable: "lost" is decided only once they repeat over a bound.
    misses: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    missed_since: float | None = None
    output_misses: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    output_missed_since: float | None = None
    # Set before we ask the API to cancel the job to meet a deadline: whoever settles it
    # (a tick, the webhook's reconcile flow, after a crash) reads its CANCELLED end as ours.
    deadline_cancel_at: float | None = None


class BatchMember(SQLModel, table=True):
    """Which rows went into which batch job (history kept apart from the rows)."""

    __tablename__ = "batch_members"
    __table_args__ = (Index("ix_batch_members_key", "key"),)

    reservation: str = Field(primary_key=True, max_length=128)
    key: str = Field(primary_key=True, max_length=512)


class BatchFile(SQLModel, table=True):
    """A file this ledger put in (or read from) the Files API, kept until it is deleted.

    The Files API holds 20 GB per project for 48 h and deletes nothing a batch job used, so
    a batch's input file (``role`` ``input``) is deleted once its job is terminal and a
    responses file (``output``) once reconciled. A failed delete is retried on a later tick:
    ``delete_failures`` counts them (never a row's attempt), ``deleted_at`` ends the row.
    """

    __tablename__ = "batch_files"
    __table_args__ = (Index("ix_batch_files_pipeline_deleted", "pipeline", "deleted_at"),)

    name: str = Field(primary_key=True, max_length=256)  # files/...
    reservation: str = Field(max_length=128)  # the batch job's reservation (batch_jobs)
    pipeline: str = Field(max_length=128)
    role: str = Field(max_length=16)  # a FileRole
    # Up to 2 GB per file: beyond a 32-bit integer.
    size_bytes: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    recorded_at: float = 0.0
    deleted_at: float | None = None
    delete_failures: int = 0
    last_error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))


class Upload(SQLModel, table=True):
    """A file the ledger uploaded for prompts' media, keyed by its content (``ledger._uploads``).

    One row per pipeline and content hash, however many rows read the bytes
    (``upload_uses``); its ``state`` is an ``UploadState``. Reserved before the upload
    (``token``, ``reserved_at``), bound to the file after it (``name``, ``uri``,
    ``expires_at``), deleted once every row using it is final.
    """

    __tablename__ = "uploads"
    __table_args__ = (Index("ix_uploads_pipeline_state", "pipeline", "state"),)

    pipeline: str = Field(primary_key=True, max_length=128)
    content_hash: str = Field(primary_key=True, max_length=64)  # sha256 of the bytes
    state: str = Field(max_length=16)
    token: str | None = Field(default=None, max_length=64)
    reserved_at: float = 0.0
    mime_type: str = Field(default="", max_length=256)
    size_bytes: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    name: str | None = Field(default=None, max_length=256)  # files/...
    uri: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    expires_at: float | None = None
    bound_at: float | None = None
    uploads: int = 0  # how many times these bytes were uploaded (a re-upload after expiry)
    deleted_at: float | None = None
    delete_failures: int = 0
    last_error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))


class UploadUse(SQLModel, table=True):
    """A row (job key) whose prompt reads an upload: the upload stays while any is not final."""

    __tablename__ = "upload_uses"

    pipeline: str = Field(primary_key=True, max_length=128)
    content_hash: str = Field(primary_key=True, max_length=64)
    key: str = Field(primary_key=True, max_length=512)


class Cache(SQLModel, table=True):
    """A context cache of a pipeline's shared prefix (``ledger._caches``): one row per
    pipeline and prefix digest (model, system instruction, parts); its ``state`` is a
    ``CacheState``. Reserved before ``caches.create`` (``token``, ``reserved_at``), bound to
    the cache after it (``name``, ``expires_at``, ``tokens``), deleted once every row of the
    pipeline is final, created again when it expired before a row was sent.
    """

    __tablename__ = "caches"
    __table_args__ = (Index("ix_caches_pipeline_state", "pipeline", "state"),)

    pipeline: str = Field(primary_key=True, max_length=128)
    prefix_hash: str = Field(primary_key=True, max_length=64)  # sha256 of model and prefix
    state: str = Field(max_length=16)
    token: str | None = Field(default=None, max_length=64)
    reserved_at: float = 0.0
    model: str = Field(default="", max_length=128)
    name: str | None = Field(default=None, max_length=256)  # cachedContents/...
    expires_at: float | None = None
    bound_at: float | None = None
    tokens: int = 0  # the cache's usageMetadata.totalTokenCount
    creates: int = 0  # how many caches.create calls made it (more than one: it expired)
    deleted_at: float | None = None
    delete_failures: int = 0
    last_error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))


class WebhookDelivery(SQLModel, table=True):
    """Every webhook delivery we accepted, by its ``webhook-id``, so a repeat is recognised."""

    __tablename__ = "webhook_deliveries"

    webhook_id: str = Field(primary_key=True, max_length=256)
    event_type: str = Field(default="", max_length=128)
    subject: str = Field(default="", max_length=256)
    received_at: float = 0.0
    processed_at: float | None = None


class ParkedSnapshot(SQLModel, table=True):
    """Parked jobs per error class at the end of a summary run, for day-over-day change."""

    __tablename__ = "parked_snapshots"

    day: str = Field(primary_key=True, max_length=10)
    error_class: str = Field(primary_key=True, max_length=96)
    parked: int = 0
    taken_at: float = 0.0


class PipelineRow(SQLModel, table=True):
    """A pipeline's identity: the name jobs are recorded under belongs to one definition.

    ``spec`` (``module:attribute``) is what a process that only has the name loads; a tick
    of another definition under the same name is refused. ``revision`` counts the
    deliberate changes of the same definition (its channel, model or output schema).
    """

    __tablename__ = "pipelines"

    name: str = Field(primary_key=True, max_length=128)
    spec: str = Field(max_length=512)
    channel: str = Field(max_length=16)
    model: str = Field(max_length=128)
    schema_fingerprint: str = Field(max_length=64)
    revision: int = 1
    created_at: float = 0.0
    updated_at: float = 0.0


class ApiSettingsRow(SQLModel, table=True):
    """Which Gemini API a pipeline's workers bound their last batch job at: the base URL
    (without credentials, query or fragment) and a digest of the API key, never the key.

    Written when a tick binds a batch job; the webhook receiver and ``doctor`` compare their
    own settings with it, so a receiver that would poll another API (or with another key)
    is refused at start instead of calling every job of this ledger lost.
    """

    __tablename__ = "api_settings"

    pipeline: str = Field(primary_key=True, max_length=128)
    base_url: str = Field(max_length=512)
    key_digest: str = Field(max_length=64)
    recorded_at: float = 0.0


class PlanRow(SQLModel, table=True):
    """What the ticks of one pipeline's night planned to spend (``ledger._plans``).

    Each reservation adds its rows and their estimated tokens and cost (the estimate the
    tick made before sending them); ``held`` is how many due rows the last tick left
    pending because the budget had no room for them; ``reached_at`` is when the night first
    met its cap (the ``gemini-ledger.budget.reached`` event is emitted once, when it is set).
    What the night actually spent is read from its rows (``jobs.plan_day``), never stored.
    """

    __tablename__ = "plans"

    pipeline: str = Field(primary_key=True, max_length=128)
    day: str = Field(primary_key=True, max_length=10)
    channel: str = Field(max_length=16)
    rows: int = 0
    prompt_tokens: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    output_tokens: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    usd: float = 0.0
    # Where the per-row estimate came from (history, count_tokens, local, output budget).
    source: str = Field(default="", max_length=256)
    held: int = 0
    cap_usd: float | None = None
    reached_at: float | None = None
    updated_at: float = 0.0
