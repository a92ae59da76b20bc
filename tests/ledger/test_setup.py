"""``setup_fault``: which failures are about the setup (halt the channel) and which about the
row; and the ledger verbs a halt uses to give reservations back."""

from __future__ import annotations

import pickle
import socket

import httpx
import pytest
from google.genai import errors
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from flows.testing import describe, setup_fault
from ledger import KeySource, Ledger, NewJob, SetupFault, SetupKind
from ledger import setup_fault as ledger_setup_fault

KEY_INVALID = {
    "error": {
        "code": 400,
        "message": "API key not valid. Please pass a valid API key.",
        "status": "INVALID_ARGUMENT",
        "details": [
            {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}
        ],
    }
}


def _api(code: int, status: str, message: str) -> errors.APIError:
    return errors.APIError(code, {"error": {"code": code, "status": status, "message": message}})


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (errors.ClientError(400, KEY_INVALID), SetupKind.KEY_REFUSED),
        (_api(401, "UNAUTHENTICATED", "no"), SetupKind.KEY_REFUSED),
        (_api(403, "PERMISSION_DENIED", "no rights"), SetupKind.PERMISSION),
        (_api(400, "FAILED_PRECONDITION", "enable billing"), SetupKind.PRECONDITION),
        (_api(400, "INVALID_ARGUMENT", "Unsupported MIME type: x"), SetupKind.UPLOAD_REFUSED),
        (httpx.ConnectError("[Errno 111] Connection refused"), SetupKind.UNREACHABLE),
        (socket.gaierror(-2, "Name or service not known"), SetupKind.UNREACHABLE),
        (
            OperationalError("SELECT 1", {}, Exception("connection refused")),
            SetupKind.LEDGER_UNREACHABLE,
        ),
    ],
)
def test_setup_faults_are_recognised(error: BaseException, kind: SetupKind) -> None:
    """Refused key, permission, billing, MIME refusal, unreachable API or ledger: a fault."""
    fault = setup_fault(error)
    assert fault is not None and fault.kind is kind
    assert "Fix:" in str(fault) and "\n" not in str(fault)


@pytest.mark.parametrize(
    "error",
    [
        _api(400, "INVALID_ARGUMENT", "Request contains an invalid argument."),
        _api(429, "RESOURCE_EXHAUSTED", "quota"),
        _api(503, "UNAVAILABLE", "overloaded"),
        httpx.ReadError("connection reset mid-answer"),  # may have been billed
        httpx.ReadTimeout("slow"),
        ValueError("a bug of ours"),
    ],
)
def test_row_failures_are_not_setup_faults(error: BaseException) -> None:
    """A bad row, a transient answer, a dropped read or a bug is not about the setup."""
    assert setup_fault(error) is None


def test_a_wrapped_fault_is_found_and_survives_pickling() -> None:
    """The fault under a wrapper's cause chain is found; a pickled fault keeps its parts."""
    try:
        try:
            raise httpx.ConnectError("refused")
        except httpx.ConnectError as inner:
            raise RuntimeError("wrapped") from inner
    except RuntimeError as outer:
        fault = setup_fault(outer)
    assert fault is not None and fault.kind is SetupKind.UNREACHABLE
    again = pickle.loads(pickle.dumps(fault))
    assert isinstance(again, SetupFault) and str(again) == str(fault)


def test_a_key_in_the_cause_is_redacted() -> None:
    """A secret registered with the redactor never reaches the fault's line."""
    from ledger import register_secret

    register_secret("AIzaSy-test-secret-000000000000000")
    fault = SetupFault(SetupKind.KEY_REFUSED, "key AIzaSy-test-secret-000000000000000 refused")
    assert "AIzaSy-test-secret" not in str(fault)


def _jobs(ledger: Ledger, n: int) -> list[str]:
    keys = [f"halt:{i}" for i in range(n)]
    ledger.enroll(
        [NewJob(k, '{"text": "x"}') for k in keys], pipeline="halt", channel="direct", model="m"
    )
    return keys


def test_release_some_keys_with_and_without_refund(ledger_url: str) -> None:
    """``release(keys=..., refund=False)`` keeps the attempt counted; the default gives it back;
    the other reserved rows stay reserved."""
    ledger = Ledger(ledger_url)
    keys = _jobs(ledger, 3)
    assert ledger.reserve(pipeline="halt", limit=3, reservation="r1") == 3
    assert ledger.release("r1", keys=[keys[0]]) == 1
    assert ledger.release("r1", keys=[keys[1]], refund=False) == 1
    views = {k: ledger.get(k) for k in keys}
    assert (views[keys[0]].status, views[keys[0]].attempts) == ("pending", 0)
    assert (views[keys[1]].status, views[keys[1]].attempts) == ("retryable", 1)
    assert views[keys[2]].status == "reserving"


def test_unsubmit_gives_the_attempt_back(ledger_url: str) -> None:
    """A call refused for a fault of the setup returns its row as it was, attempt refunded."""
    ledger = Ledger(ledger_url)
    (key,) = _jobs(ledger, 1)
    ledger.reserve(pipeline="halt", limit=1, reservation="r1")
    ledger.bind_handle(key, reservation="r1", handle="direct:r1")
    assert ledger.unsubmit(key, handle="direct:r1") is True
    view = ledger.get(key)
    assert (view.status, view.attempts, view.handle) == ("pending", 0, None)
    assert ledger.unsubmit(key, handle="direct:r1") is False


def test_an_unreachable_ledger_is_a_setup_fault() -> None:
    """The driver's error for a database that cannot be reached is recognised as one."""
    engine = create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")
    with pytest.raises(OperationalError) as info, engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    fault = setup_fault(info.value)
    assert fault is not None and fault.kind is SetupKind.LEDGER_UNREACHABLE
    assert "LEDGER_DATABASE_URL" in fault.fix


_BLOCK = KeySource(
    "Secret block 'gemini-api-key'",
    "gemini-ledger secret set api-key (a valid key of this project)",
)
_ENV = KeySource(
    "GEMINI_API_KEY (the worker's environment)",
    "set GEMINI_API_KEY in the worker's environment to a valid key of this project",
)


@pytest.mark.parametrize(
    ("key", "where", "fix"),
    [
        (_BLOCK, "the key in Secret block 'gemini-api-key'", "Fix: gemini-ledger secret set"),
        (_ENV, "the key in GEMINI_API_KEY (the worker's environment)", "Fix: set GEMINI_API_KEY"),
    ],
)
def test_a_refused_key_names_where_it_was_kept_and_the_fix_there(key, where, fix) -> None:
    """A refused key says which source it came from and gives that source's fix: with the key
    in the block, never "set GEMINI_API_KEY" (the block takes precedence over it)."""
    fault = ledger_setup_fault(errors.ClientError(400, KEY_INVALID), describe, key=key)
    assert fault is not None and fault.kind is SetupKind.KEY_REFUSED
    assert str(fault).startswith(f"{where} was refused by the Gemini API")
    assert fix in str(fault)
    if key is _BLOCK:
        assert "set GEMINI_API_KEY" not in str(fault)


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (_api(403, "PERMISSION_DENIED", "no rights"), SetupKind.PERMISSION),
        (_api(400, "FAILED_PRECONDITION", "enable billing"), SetupKind.PRECONDITION),
        (
            _api(403, "PERMISSION_DENIED", "Requests from an unrestricted API key are blocked."),
            SetupKind.KEY_UNRESTRICTED,
        ),
    ],
)
def test_every_fault_about_the_key_names_its_source(error, kind) -> None:
    """Permission, billing and an unrestricted key name the Secret block the key came from."""
    fault = ledger_setup_fault(error, describe, key=_BLOCK)
    assert fault is not None and fault.kind is kind
    assert "Secret block 'gemini-api-key'" in str(fault)
    assert "GEMINI_API_KEY" not in str(fault)
