"""A prompt's media made sendable: every part to upload goes through the Files API once, and
every ``files/...`` name becomes the file's URI.

``Uploads.resolve(prompt)`` returns the prompt with no part left to upload, as the three
renderings of ``flows.contents`` need it. The same bytes are uploaded once however many rows
use them (by their content hash, ``flows.contents.content_hash``), under the display name
``gl-upload-<hash>`` so that an upload whose answer was lost is found again. A file is used
only while it is ``ACTIVE`` and far enough from its expiry (48 h after upload) to outlive the
request; otherwise the bytes are uploaded again.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.genai import types

from flows.contents import Part, content_hash
from flows.crash import crash_point
from flows.gemini._errors import classify, describe, http_code, setup_fault
from flows.pipeline import Pipeline, Prompt
from flows.run._api_time import epoch_of
from ledger import Failure, Ledger, Verdict

__all__ = [
    "EXPIRY_MARGIN_S",
    "FileUnusable",
    "RowUploads",
    "UploadBusy",
    "Uploaded",
    "Uploads",
    "display_name_of",
]

# A file this close to its expiry is uploaded again: a batch job may wait up to a day before
# it reads its inputs (the batch target), so a row must not be sent with less left.
EXPIRY_MARGIN_S = 26 * 3600
# How long a file may stay PROCESSING (video) before the row is sent on a later tick.
_ACTIVE_WAIT_S = 120.0
_PREFIX = "gl-upload-"


def display_name_of(digest: str, pipeline: str = "") -> str:
    """The display name an upload of these bytes carries (found again by it): per
    pipeline, since each pipeline deletes its own uploads."""
    return f"{_PREFIX}{pipeline}-{digest}" if pipeline else f"{_PREFIX}{digest}"


class UploadBusy(Exception):
    """Another live pass is uploading these bytes: the row is sent on a later tick."""


class FileUnusable(Exception):
    """A file a part names cannot be used: missing, FAILED, or expiring before it is read."""


@dataclass(frozen=True)
class Uploaded:
    """A file at the Files API: its name, its URI, when it expires (epoch seconds)."""

    name: str
    uri: str
    expires_at: float


def _epoch(value: Any) -> float:
    # kept 48 h when the answer leaves it out (https://ai.google.dev/gemini-api/docs/files)
    return epoch_of(value, time.time() + 48 * 3600)


def _state(file: Any) -> str:
    # google-genai types.FileState: STATE_UNSPECIFIED, PROCESSING, ACTIVE, FAILED.
    state = getattr(file, "state", None)
    return str(getattr(state, "value", state) or "ACTIVE")


def described(file: Any) -> Uploaded:
    return Uploaded(name=str(file.name), uri=str(file.uri), expires_at=_epoch(file.expiration_time))


class Uploads:
    """One pass's uploads: the client, and the files already resolved in this pass.

    ``store`` (``flows.run._upload_rows``) keeps every upload as a ledger row; without it
    uploads are shared within the pass only."""

    def __init__(
        self,
        client: Any,
        *,
        clock: Callable[[], float] = time.time,
        store: Any = None,
        pipeline: str = "",
    ) -> None:
        self.client = client
        self.pipeline = pipeline
        self.clock = clock
        self.store = store
        self._by_hash: dict[str, Uploaded] = {}
        self._by_name: dict[str, Uploaded] = {}
        self.uploaded = 0
        # Calls of one run resolve in threads: one upload of the same bytes at a time.
        self._lock = threading.RLock()

    def resolve(self, prompt: Prompt, *, key: str | None = None) -> Prompt:
        """The prompt with every upload done and every ``files/`` name made a URI."""
        if not prompt.parts:
            return prompt
        parts = tuple(self._part(p, key) for p in prompt.parts)
        return prompt.model_copy(update={"parts": parts})

    def _usable(self, up: Uploaded | None) -> bool:
        return up is not None and up.expires_at - self.clock() > EXPIRY_MARGIN_S

    def _part(self, part: Part, key: str | None) -> Part:
        if part.needs_upload:
            data = part.raw()
            digest = content_hash(data)
            with self._lock:
                up = self._by_hash.get(digest)
                fresh = not self._usable(up)
                if fresh:
                    up = self._upload(digest, data, str(part.mime_type), key)
                    self._by_hash[digest] = up
            if not fresh and self.store is not None and key is not None:
                self.store.use(digest, key)  # another row of the same bytes
            assert up is not None
            return Part(uri=up.uri, mime_type=part.mime_type)
        if part.uri is not None and part.uri.startswith("files/"):
            return Part(uri=self._named(part.uri).uri, mime_type=part.mime_type)
        return part

    def _named(self, name: str) -> Uploaded:
        up = self._by_name.get(name)
        if up is None:
            up = self._by_name[name] = self._active(self.client.files.get(name=name))
        if not self._usable(up):
            raise FileUnusable(f"{name} expires too soon to be read (upload it again)")
        return up

    def _active(self, file: Any) -> Uploaded:
        """The file once ACTIVE (a video is PROCESSING for a while after its upload)."""
        deadline = time.monotonic() + _ACTIVE_WAIT_S
        while _state(file) == "PROCESSING" and time.monotonic() < deadline:
            time.sleep(1.0)  # the Files API's own pace: nothing to wait on but its state
            file = self.client.files.get(name=file.name)
        state = _state(file)
        if state != "ACTIVE" and state != "STATE_UNSPECIFIED":
            raise FileUnusable(f"{file.name} is {state}, not ACTIVE")
        return described(file)

    def _upload(self, digest: str, data: bytes, mime_type: str, key: str | None) -> Uploaded:
        if self.store is not None:
            return self.store.upload(self, digest, data, mime_type, key)
        return self.send(digest, data, mime_type)

    def send(self, digest: str, data: bytes, mime_type: str) -> Uploaded:
        """One ``files.upload`` of the bytes under their display name."""
        file = self.client.files.upload(
            file=io.BytesIO(data),
            config=types.UploadFileConfig(
                mime_type=mime_type, display_name=display_name_of(digest, self.pipeline)
            ),
        )
        crash_point("upload.after_upload")
        self.uploaded += 1
        return self._active(file)

    def find(self, digest: str) -> Uploaded | None:
        """A live file of these bytes uploaded earlier (its answer lost in a crash)."""
        wanted = display_name_of(digest, self.pipeline)
        for file in self.client.files.list(config=types.ListFilesConfig(page_size=100)):
            if getattr(file, "display_name", None) == wanted and _state(file) == "ACTIVE":
                up = described(file)
                if self._usable(up):
                    return up
        return None


class RowUploads:
    """Resolves the prompts of one reservation's rows and remembers, per row, what to do
    with one whose uploads failed; :meth:`settle` does it once the sending is over.

    An upload is never a row's attempt: a row whose upload failed for a reason that may
    pass (5xx, 429, a dropped connection) is given back with its attempt; one whose file
    cannot be used (a ``files/`` name that is gone or FAILED, a local file that is not
    there, a 4xx for the upload) is the row's own fault and recorded as such; a fault of
    the setup (a full storage, a refused key) gives every row back and halts."""

    def __init__(self, uploads: Uploads) -> None:
        self.uploads = uploads
        self.failed: dict[str, Failure] = {}
        self.later: list[str] = []
        self.fault: BaseException | None = None

    def __call__(self, prompt: Prompt, key: str) -> Prompt | None:
        if self.fault is not None:
            self.later.append(key)
            return None
        try:
            return self.uploads.resolve(prompt, key=key)
        except UploadBusy:
            self.later.append(key)
        except (FileUnusable, OSError) as exc:
            self.failed[key] = Failure(Verdict.PERMANENT, "file_unusable", str(exc))
        except Exception as exc:
            if http_code(exc) is None and describe(exc) is None:
                raise  # our own bug keeps its traceback
            fault = setup_fault(exc)
            if fault is not None:
                fault.__cause__ = exc
                self.fault = fault
                self.later.append(key)
                return None
            failure = classify(exc)
            if failure.verdict is Verdict.PERMANENT:
                self.failed[key] = failure
            else:
                self.later.append(key)
        return None

    def settle(
        self,
        ledger: Ledger,
        pipeline: Pipeline[Any],
        reservation: str,
        *,
        give_back: Callable[[list[str]], Any] | None = None,
    ) -> dict[str, int]:
        """Record the rows' upload failures and give back the rows to send later (with
        ``give_back``, else ``Ledger.release(keys=...)``); raise the fault of the setup."""
        for key, failure in self.failed.items():
            ledger.record_failure(key, failure, policy=pipeline.policy, reservation=reservation)
        if self.later:
            if give_back is not None:
                give_back(self.later)
            else:
                ledger.release(reservation, keys=self.later)
        if self.fault is not None:
            raise self.fault
        return {"upload_failed": len(self.failed), "upload_later": len(self.later)}
