"""gemini-ledger's domain core: the ledger, its states, the classifier and output-line parsing.

Nothing here knows about Prefect or HTTP; ``flows`` composes it.
"""

from ledger._api_failure import ApiFailure, Transport
from ledger._classify import INTERACTION_LOST, Failure, Verdict, classify, classify_response
from ledger._db import (
    DEFAULT_DATABASE_URL,
    database_url,
    ledger_exists,
    make_engine,
    missing_ledger_message,
    upgrade,
)
from ledger._errors import (
    ConfigurationError,
    GeminiLedgerError,
    InvalidTransition,
    LedgerBusy,
    LedgerConfigError,
    LedgerError,
    PipelineConflict,
    PipelineError,
    TransientError,
    UnknownJob,
    UsageError,
)
from ledger._lines import (
    LineFailure,
    LineSuccess,
    Outcome,
    Usage,
    answer_ids,
    extract_text,
    parse_output_line,
    usage_of_metadata,
    validate_answer,
)
from ledger._models import Channel, Status
from ledger._morning import ParkedClass, PipelineMorning, morning_view
from ledger._records import (
    DELIVERY_CLASS_PREFIX,
    BatchRecord,
    Counts,
    Enrollment,
    FailureRow,
    JobView,
    ModelUsage,
    NewJob,
    PipelineChange,
    PipelineRecord,
    Policy,
    Reserved,
    ResultRow,
    fingerprint_of,
)
from ledger._redact import redact, register_secret
from ledger._setup import SetupFault, SetupKind, setup_fault
from ledger._store import Ledger
from ledger._transitions import BatchState

__all__ = [
    "DEFAULT_DATABASE_URL",
    "DELIVERY_CLASS_PREFIX",
    "INTERACTION_LOST",
    "ApiFailure",
    "BatchRecord",
    "BatchState",
    "Channel",
    "ConfigurationError",
    "Counts",
    "Enrollment",
    "Failure",
    "FailureRow",
    "GeminiLedgerError",
    "InvalidTransition",
    "JobView",
    "Ledger",
    "LedgerBusy",
    "LedgerConfigError",
    "LedgerError",
    "LineFailure",
    "LineSuccess",
    "ModelUsage",
    "NewJob",
    "Outcome",
    "ParkedClass",
    "PipelineChange",
    "PipelineConflict",
    "PipelineError",
    "PipelineMorning",
    "PipelineRecord",
    "Policy",
    "Reserved",
    "ResultRow",
    "SetupFault",
    "SetupKind",
    "Status",
    "TransientError",
    "Transport",
    "UnknownJob",
    "Usage",
    "UsageError",
    "Verdict",
    "answer_ids",
    "classify",
    "classify_response",
    "database_url",
    "extract_text",
    "fingerprint_of",
    "ledger_exists",
    "make_engine",
    "missing_ledger_message",
    "morning_view",
    "parse_output_line",
    "redact",
    "register_secret",
    "setup_fault",
    "upgrade",
    "usage_of_metadata",
    "validate_answer",
]
