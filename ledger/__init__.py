"""gemini-ledger's domain core: the ledger, its states, the classifier and output-line parsing.

Nothing here knows about Prefect or HTTP; ``flows`` composes it.
"""

from ledger._classify import Failure, Verdict, classify, classify_response
from ledger._db import DEFAULT_DATABASE_URL, database_url, make_engine, upgrade
from ledger._errors import InvalidTransition, LedgerConfigError, LedgerError, UnknownJob
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
from ledger._redact import redact, register_secret
from ledger._setup import SetupFault, SetupKind, setup_fault
from ledger._store import (
    DELIVERY_CLASS_PREFIX,
    BatchRecord,
    Counts,
    FailureRow,
    JobView,
    Ledger,
    NewJob,
    Policy,
    Reserved,
    ResultRow,
    fingerprint_of,
)

__all__ = [
    "DEFAULT_DATABASE_URL",
    "DELIVERY_CLASS_PREFIX",
    "BatchRecord",
    "Channel",
    "Counts",
    "Failure",
    "FailureRow",
    "InvalidTransition",
    "JobView",
    "Ledger",
    "LedgerConfigError",
    "LedgerError",
    "LineFailure",
    "LineSuccess",
    "NewJob",
    "Outcome",
    "ParkedClass",
    "PipelineMorning",
    "Policy",
    "Reserved",
    "ResultRow",
    "SetupFault",
    "SetupKind",
    "Status",
    "UnknownJob",
    "Usage",
    "Verdict",
    "classify",
    "classify_response",
    "database_url",
    "extract_text",
    "fingerprint_of",
    "make_engine",
    "morning_view",
    "parse_output_line",
    "redact",
    "register_secret",
    "setup_fault",
    "upgrade",
    "validate_answer",
]
