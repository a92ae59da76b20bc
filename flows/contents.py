"""A prompt's contents: its text and media parts, in order, and their one rendering per
wire shape.

A :class:`Part` is one of:

- text (``Part.of_text``);
- inline bytes (``Part.from_bytes``: a small image, a short audio clip), sent in the request;
- a local file or bytes to upload (``Part.from_file``, ``Part.from_bytes(..., upload=True)``):
  sent through the Files API first (``flows.uploads``), then referred to by its URI;
- a URI the API takes (``Part.from_uri``): an uploaded ``files/...`` name (looked up before
  sending: google-genai ``types.py`` ``Part.from_uri`` says "Resource names such as
  ``files/abc123`` are not URIs", the request carries the file's ``uri``), the file's own
  ``https://generativelanguage.googleapis.com/.../files/...`` URI, a public ``https://`` URL,
  a YouTube URL or a ``gs://`` object (https://ai.google.dev/gemini-api/docs/file-input-methods).

A prompt whose inline parts would make the request larger than :data:`INLINE_REQUEST_LIMIT`
(the API's 20 MB for a whole request, https://ai.google.dev/gemini-api/docs/files: "Always
use the Files API when the total request size ... is larger than 20 MB") has them uploaded
instead (:func:`fit_inline`): a request is never sent oversize.

The three renderings, one per channel, each of the same list of parts (resolved: no part
left to upload) and tested to agree (``tests/test_contents.py``):

- :func:`rest_parts`: a batch input line's ``contents[0].parts`` (camelCase ``inlineData``
  ``{mimeType, data: base64}``, ``fileData`` ``{mimeType, fileUri}``: google-genai
  ``models.py`` ``_Part_to_mldev`` / ``_Blob_to_mldev`` / ``_FileData_to_mldev``);
- :func:`sdk_parts`: ``types.Part`` values for ``models.generate_content``;
- :func:`interaction_input`: ``interactions.create``'s ``input`` as a list of content blocks
  (google-genai ``_gaos/types/interactions/textcontent.py``, ``imagecontent.py``,
  ``audiocontent.py``, ``videocontent.py``, ``documentcontent.py``: ``{"type", "data"
  (base64) | "uri", "mime_type"}``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import mimetypes
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "INLINE_REQUEST_LIMIT",
    "Part",
    "content_hash",
    "fit_inline",
    "interaction_input",
    "modality_of",
    "rest_parts",
    "sdk_parts",
]

# The API refuses a request over 20 MB (text, inline data and instructions together); base64
# makes inline bytes a third larger. Kept a little under, for the request's other fields.
INLINE_REQUEST_LIMIT = 20 * 1024 * 1024
_HEADROOM = 256 * 1024

# URI schemes the API documents for fileData (file-input-methods above).
_URI_PREFIXES = ("files/", "https://", "http://", "gs://")


class Part(BaseModel):
    """One part of a prompt, in the order the prompt gives them. Exactly one of ``text``,
    ``data`` (base64 bytes), ``path`` (a local file to upload) or ``uri`` is given."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    text: str | None = Field(default=None, min_length=1)
    data: str | None = None  # base64 (standard alphabet, no newlines)
    path: str | None = None
    uri: str | None = None
    mime_type: str | None = None
    # Send ``data`` through the Files API rather than inline (set by fit_inline over the
    # inline limit, or asked for).
    upload: bool = False

    @model_validator(mode="after")
    def _one_kind(self) -> Part:
        given = [n for n in ("text", "data", "path", "uri") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError("a part is one of text, data, path or uri")
        if self.data is not None:
            try:
                base64.b64decode(self.data, validate=True)
            except binascii.Error as exc:
                raise ValueError("a part's data is base64") from exc
        if (self.data is not None or self.path is not None) and not self.mime_type:
            raise ValueError("a media part needs its mime_type")
        if self.uri is not None and not self.uri.startswith(_URI_PREFIXES):
            raise ValueError(
                f"uri {self.uri[:60]!r}: give an uploaded files/... name or its URI,"
                " an https:// URL or a gs:// object"
            )
        if self.upload and self.data is None:
            raise ValueError("upload=True is for data parts (a path is always uploaded)")
        return self

    # --- constructors ----------------------------------------------------------------------

    @classmethod
    def of_text(cls, text: str) -> Part:
        return cls(text=text)

    @classmethod
    def from_bytes(cls, data: bytes, mime_type: str, *, upload: bool = False) -> Part:
        """Bytes sent inline (or uploaded first with ``upload=True``)."""
        return cls(data=base64.b64encode(data).decode("ascii"), mime_type=mime_type, upload=upload)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], mime_type: str | None = None) -> Part:
        """A local file, uploaded through the Files API before the row is sent (one upload
        for every row that reads the same bytes)."""
        path = os.fspath(path)
        mime = mime_type or mimetypes.guess_type(path)[0]
        if not mime:
            raise ValueError(f"{path}: give its mime_type (it cannot be guessed from the name)")
        return cls(path=str(Path(path).resolve()), mime_type=mime)

    @classmethod
    def from_uri(cls, uri: str, mime_type: str | None = None) -> Part:
        return cls(uri=uri, mime_type=mime_type)

    # --- what it holds ---------------------------------------------------------------------

    @property
    def needs_upload(self) -> bool:
        """Whether the part goes through the Files API before it can be sent."""
        return self.path is not None or self.upload

    def raw(self) -> bytes:
        """The bytes of a data or path part."""
        if self.data is not None:
            return base64.b64decode(self.data)
        if self.path is not None:
            return Path(self.path).read_bytes()
        raise ValueError("a text or uri part has no bytes")


def content_hash(data: bytes) -> str:
    """The key an upload is shared by: the sha256 of its bytes."""
    return hashlib.sha256(data).hexdigest()


def modality_of(mime_type: str | None) -> str:
    """The interactions API's content type (and the usage modality) of a mime type."""
    major = (mime_type or "").partition("/")[0]
    if major in ("image", "audio", "video"):
        return major
    return "document"


def _inline_size(text: str | None, parts: Iterable[Part]) -> int:
    size = len((text or "").encode())
    for p in parts:
        if p.text is not None:
            size += len(p.text.encode())
        elif p.data is not None and not p.upload:
            size += len(p.data)
    return size


def fit_inline(text: str | None, parts: tuple[Part, ...]) -> tuple[Part, ...]:
    """The parts, with inline data turned into uploads (largest first) while the request
    would be over :data:`INLINE_REQUEST_LIMIT`."""
    limit = INLINE_REQUEST_LIMIT - _HEADROOM
    if _inline_size(text, parts) <= limit:
        return parts
    out = list(parts)
    order = sorted(
        (i for i, p in enumerate(out) if p.data is not None and not p.upload),
        key=lambda i: -len(out[i].data or ""),
    )
    for i in order:
        out[i] = out[i].model_copy(update={"upload": True})
        if _inline_size(text, out) <= limit:
            break
    return tuple(out)


def _sendable(parts: Iterable[Part]) -> list[Part]:
    parts = list(parts)
    for p in parts:
        if p.needs_upload or (p.uri is not None and p.uri.startswith("files/")):
            # Our bug: flows.uploads resolves every upload and files/ name before rendering.
            raise AssertionError(f"a part must be resolved before it is rendered: {p!r}")
    return parts


# --- the three wire shapes ------------------------------------------------------------------


def rest_parts(parts: Iterable[Part]) -> list[dict[str, Any]]:
    """``parts`` of a REST ``Content`` (batch input line), camelCase."""
    out: list[dict[str, Any]] = []
    for p in _sendable(parts):
        if p.text is not None:
            out.append({"text": p.text})
        elif p.data is not None:
            out.append({"inlineData": {"mimeType": p.mime_type, "data": p.data}})
        else:
            file_data: dict[str, Any] = {"fileUri": p.uri}
            if p.mime_type:
                file_data["mimeType"] = p.mime_type
            out.append({"fileData": file_data})
    return out


def sdk_parts(parts: Iterable[Part]) -> list[Any]:
    """google-genai ``types.Part`` values for ``models.generate_content``."""
    from google.genai import types

    out: list[Any] = []
    for p in _sendable(parts):
        if p.text is not None:
            out.append(types.Part(text=p.text))
        elif p.data is not None:
            out.append(types.Part(inline_data=types.Blob(data=p.raw(), mime_type=p.mime_type)))
        else:
            out.append(types.Part(file_data=types.FileData(file_uri=p.uri, mime_type=p.mime_type)))
    return out


def interaction_input(parts: Iterable[Part]) -> list[dict[str, Any]]:
    """``input`` of ``interactions.create`` as content blocks."""
    out: list[dict[str, Any]] = []
    for p in _sendable(parts):
        if p.text is not None:
            out.append({"type": "text", "text": p.text})
            continue
        block: dict[str, Any] = {"type": modality_of(p.mime_type)}
        if p.data is not None:
            block["data"] = p.data
        else:
            block["uri"] = p.uri
        if p.mime_type:
            block["mime_type"] = p.mime_type
        out.append(block)
    return out
