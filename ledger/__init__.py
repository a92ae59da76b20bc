"""gemini-ledger's domain core: the ledger, its states, the classifier and output-line parsing.

Nothing here knows about Prefect or HTTP; ``flows`` composes it.
"""

from ledger._api_failure import ApiFailure, Transport
from ledger._classify import Failure, Verdict, classify, classify_response
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
    LedgerMissing,
    PipelineConflict,
    PipelineError,
    TransientError,
    UnknownJob,
    UsageError,
)
from ledger._keys import KEY_MAX, PIPELINE_NAME_MAX, key_problem, shown_key
from ledger._lines import (
    LineFailure,
    LineSuccess,
    Outcome,
    Usage,
    extract_text,
    parse_output_line,
    validate_answer,
)
from ledger._models import Channel, Status
from ledger._morning import ParkedClass, PipelineMorning, morning_view
from ledger._records import (
    DELIVERY_CLASS_PREFIX,
    PROMPT_CLASS_PREFIX,
    BatchRecord,
    Counts,
    Enrollment,
    FailureRow,
    JobView,
    NewJob,
    ParkedJob,
    PipelineChange,
    PipelineRecord,
    Policy,
    Reserved,
    ResultRow,
    SubmissionRefusals,
    fingerprint_of,
)
from ledger._redact import redact, register_secret
from ledger._setup import SetupFault, SetupKind, setup_fault
from ledger._store import Ledger
from ledger._transitions import BatchState

__all__ = [
    "DEFAULT_DATABASE_URL",
    "DELIVERY_CLASS_PREFIX",
    "KEY_MAX",
    "PIPELINE_NAME_MAX",
    "PROMPT_CLASS_PREFIX",
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
    "LedgerMissing",
    "LineFailure",
    "LineSuccess",
    "NewJob",
    "Outcome",
    "ParkedClass",
    "ParkedJob",
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
    "SubmissionRefusals",
    "TransientError",
    "Transport",
    "UnknownJob",
    "Usage",
    "UsageError",
    "Verdict",
    "classify",
    "classify_response",
    "database_url",
    "extract_text",
    "fingerprint_of",
    "key_problem",
    "ledger_exists",
    "make_engine",
    "missing_ledger_message",
    "morning_view",
    "parse_output_line",
    "redact",
    "register_secret",
    "setup_fault",
    "shown_key",
    "upgrade",
    "validate_answer",
]
