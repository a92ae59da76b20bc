"""The batch channel's I/O: request JSONL rows, upload, create, find, poll, download.

Everything here talks to Gemini through the google-genai client built by ``flows.gemini.gateway``;
nothing here touches the ledger's state (``flows.channels.batch`` decides, this module carries).

The request file is written row by row from the ledger's reserved jobs, and the output
file is downloaded to disk and read back line by line, so neither side ever holds a whole
file in memory.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import orjson
from google.genai import types

from flows.contents import rest_parts
from flows.embedding import EmbeddingSettings
from flows.generation import GenerationSettings, rest_config
from flows.pipeline import Prompt, effective_settings
from flows.prefix import CachedPrefix

__all__ = [
    "JSONL_MIME",
    "RequestWriter",
    "batch_request",
    "cancel_batch_job",
    "create_batch_job",
    "create_embeddings_job",
    "download_output",
    "find_batch_job",
    "get_batch_job",
    "iter_lines",
    "job_state",
    "operation_error",
    "output_ended_at",
    "output_file_of",
    "upload_requests",
    "write_embed_requests",
    "write_requests",
]

JSONL_MIME = "application/jsonl"
_loads = orjson.loads
_dumps = orjson.dumps
_LIST_PAGE_SIZE = 100
_UNSET = object()  # never equal to a prompt's shared part
# Stands for the prompt text while a request is rendered once to find its shared tail.
_MARK = "\x00gemini-ledger-text\x00"


def batch_request(
    prompt: Prompt,
    schema: Mapping[str, Any],
    base: GenerationSettings | None = None,
    *,
    prefix: CachedPrefix | None = None,
    cached_content: str | None = None,
) -> dict[str, Any]:
    """One GenerateContentRequest (camelCase, as a batch input line carries it) for a prompt
    sent with the pipeline's settings ``base`` and the prompt's own over them.

    The settings are rendered by ``flows.generation.rest_config``; the direct channel sends
    the same contents, system instruction and settings through ``models.generate_content``
    (``flows.generation.sdk_config``), the background channel through
    ``interactions.create`` (``flows.generation.interaction_config``). The contents are
    rendered by ``flows.contents.rest_parts`` (its parts resolved: nothing left to upload).

    A pipeline's cached ``prefix`` is named by ``cached_content`` (the request's
    ``cachedContent``: google-genai ``batches.py`` ``_GenerateContentConfig_to_mldev`` puts
    ``cached_content`` there as ``cachedContent``, a GenerateContentRequest field), or, when
    no cache could be had, carried inline: its system instruction, its parts first.
    """
    settings = effective_settings(prompt, base)
    head = prefix.contents() if prefix is not None and cached_content is None else ()
    request: dict[str, Any] = {
        "contents": [{"role": "user", "parts": rest_parts((*head, *prompt.contents()))}]
    }
    system = prompt.system
    if prefix is not None and cached_content is None:
        system = prefix.system
    if system:
        request["systemInstruction"] = {"parts": [{"text": system}]}
    extra, safety = rest_config(settings)
    request["generationConfig"] = {
        "responseMimeType": "application/json",
        "responseJsonSchema": dict(schema),
        **extra,
    }
    if safety:
        request["safetySettings"] = safety
    if cached_content is not None:
        request["cachedContent"] = cached_content
    return request


class RequestWriter:
    """Writes ``{"key", "request"}`` lines fast: the same JSON as :func:`batch_request`.

    A nightly file has tens of thousands of rows that share one schema and usually one
    system instruction and set of settings, so everything after the prompt text is
    rendered once per distinct (system, temperature, settings) by :func:`batch_request`
    itself and spliced in; only each row's key and text are encoded per row.
    """

    _CACHE_LIMIT = 256
    _HEAD = b'{"key":'
    _REQUEST = b'{"contents":[{"role":"user","parts":[{"text":'  # how batch_request begins
    _MID = b',"request":' + _REQUEST

    def __init__(
        self,
        schema: Mapping[str, Any],
        base: GenerationSettings | None = None,
        *,
        prefix: CachedPrefix | None = None,
        cached_content: str | None = None,
    ) -> None:
        self._schema = dict(schema)
        self._base = base
        self._prefix = prefix
        self._cached_content = cached_content
        self._tails: dict[tuple[Any, ...], bytes] = {}
        self._last: tuple[Any, ...] | None = None
        self._last_tail = b""

    def _tail(self, shared: tuple[Any, ...]) -> bytes:
        found = self._tails.get(shared)
        if found is None:
            system, temperature, settings = shared
            prompt = Prompt(
                text=_MARK,
                system=system,
                temperature=temperature,
                settings=None if settings is None else _loads(settings),
            )
            rendered = _dumps(
                batch_request(
                    prompt,
                    self._schema,
                    self._base,
                    prefix=self._prefix,
                    cached_content=self._cached_content,
                )
            )
            head, _, rest = rendered.partition(_dumps(_MARK))
            if head != self._REQUEST:
                raise AssertionError(f"a request must start with its contents: {head[:80]!r}")
            found = rest + b"}\n"
            if len(self._tails) < self._CACHE_LIMIT:
                self._tails[shared] = found
        return found

    def line(self, key: str, payload: str | bytes) -> bytes:
        """One JSONL line (with its newline) for a job's key and stored payload (a Prompt)."""
        prompt = _loads(payload)
        shared = _shared(prompt)
        if shared == self._last:  # the usual case: every row shares them
            tail = self._last_tail
        else:
            tail = self._last_tail = self._tail(shared)
            self._last = shared
        return b"".join((self._HEAD, _dumps(key), self._MID, _dumps(prompt["text"]), tail))


def _shared(prompt: dict[str, Any]) -> tuple[Any, ...]:
    """What a stored prompt's line shares with others beside its text (hashable)."""
    settings = prompt.get("settings")
    return (
        prompt.get("system"),
        prompt.get("temperature"),
        None if settings is None else _dumps(settings, option=orjson.OPT_SORT_KEYS),
    )


def write_requests(
    rows: Iterable[tuple[str, str]],
    schema: Mapping[str, Any],
    out: IO[bytes],
    *,
    base: GenerationSettings | None = None,
    max_bytes: int | None = None,
    left_out: list[str] | None = None,
    too_large: list[str] | None = None,
    resolve: Callable[[Prompt, str], Prompt | None] | None = None,
    prefix: CachedPrefix | None = None,
    cached_content: str | None = None,
) -> int:
    """Write one request line per ``(key, payload)`` to ``out`` (sent with the pipeline's
    settings ``base``); returns how many.

    With ``max_bytes`` the file stays within that size (the API's limit on an input file):
    once a line no longer fits, it and every later row are not written but their keys are
    appended to ``left_out`` (for the next batch job); a row whose line alone is larger than
    ``max_bytes`` can never be sent and goes to ``too_large``.

    A prompt with media parts is rendered whole by :func:`batch_request` after ``resolve``
    (``flows.run._uploads``) made its uploads; when ``resolve`` returns None the row is not
    written (it decided what becomes of the row).

    A pipeline's cached ``prefix`` is named by ``cached_content`` on every line, or carried
    inline when it is None (see :func:`batch_request`).
    """
    if max_bytes is not None and (left_out is None or too_large is None):
        raise ValueError("max_bytes needs the left_out and too_large lists")
    writer = RequestWriter(schema, base, prefix=prefix, cached_content=cached_content)
    # Parts going inline before the prompt's change how a line begins: rendered whole.
    inline_head = prefix is not None and cached_content is None and bool(prefix.parts)
    tail_of = writer._tail
    head, mid, loads, dumps, join = writer._HEAD, writer._MID, _loads, _dumps, b"".join
    # RequestWriter.line, inlined: a method call and a tuple per row were a third of the
    # per-row cost beside reading the rows from the ledger (bench/reconcile.py).
    last_system: Any = _UNSET
    last_temperature: Any = _UNSET
    last_settings: Any = _UNSET
    tail = b""
    write = out.write
    n = size = 0
    full = False
    buffer: list[bytes] = []
    for key, payload in rows:
        if full:
            left_out.append(key)  # type: ignore[union-attr]
            continue
        prompt = loads(payload)
        if prompt.get("parts") or inline_head:
            resolved: Prompt | None = Prompt.model_validate(prompt)
            if prompt.get("parts"):
                if resolve is None:
                    raise AssertionError("a prompt with parts needs resolve= (its uploads)")
                resolved = resolve(resolved, key)  # type: ignore[arg-type]
            if resolved is None:
                continue
            request = dumps(
                batch_request(resolved, schema, base, prefix=prefix, cached_content=cached_content)
            )
            data = join((head, dumps(key), b',"request":', request, b"}\n"))
            if max_bytes is not None:
                if len(data) > max_bytes:
                    too_large.append(key)  # type: ignore[union-attr]
                    continue
                if size + len(data) > max_bytes:
                    full = True
                    left_out.append(key)  # type: ignore[union-attr]
                    continue
                size += len(data)
            buffer.append(data)
            n += 1
            continue
        system = prompt.get("system")
        temperature = prompt.get("temperature")
        settings = prompt.get("settings")
        if system != last_system or temperature != last_temperature or settings != last_settings:
            tail = tail_of(_shared(prompt))
            last_system, last_temperature, last_settings = system, temperature, settings
        data = join((head, dumps(key), mid, dumps(prompt["text"]), tail))
        if max_bytes is not None:
            if len(data) > max_bytes:
                too_large.append(key)  # type: ignore[union-attr]
                continue
            if size + len(data) > max_bytes:
                full = True
                left_out.append(key)  # type: ignore[union-attr]
                continue
            size += len(data)
        buffer.append(data)
        n += 1
        if len(buffer) >= 4096:
            write(b"".join(buffer))
            buffer.clear()
    if buffer:
        write(b"".join(buffer))
    return n


def write_embed_requests(
    rows: Iterable[tuple[str, str]],
    settings: EmbeddingSettings,
    out: IO[bytes],
    *,
    max_bytes: int,
    left_out: list[str],
    too_large: list[str],
) -> int:
    """Write one embed request line per ``(key, payload)`` for ``batches.create_embeddings``;
    returns how many. The file size rule is :func:`write_requests`'s.

    A line is ``{"key", "request": EmbedContentRequest}``: ``content`` (the prompt's text:
    embeddings are text only), ``taskType`` and ``outputDimensionality`` from the pipeline's
    settings (REST names, as ``batchEmbedContents`` requests carry them: google-genai 3.6.1
    ``_EmbedContentConfig_to_mldev``). The key/request line is the generate batch file's
    form; the embeddings batch docs show no file of their own (emulator/_embeddings.py).
    """
    extra = settings.rest_fields()
    n = size = 0
    full = False
    for key, payload in rows:
        if full:
            left_out.append(key)
            continue
        request = {"content": {"parts": [{"text": _loads(payload)["text"]}]}, **extra}
        data = _dumps({"key": key, "request": request}) + b"\n"
        if len(data) > max_bytes:
            too_large.append(key)
            continue
        if size + len(data) > max_bytes:
            full = True
            left_out.append(key)
            continue
        size += len(data)
        out.write(data)
        n += 1
    return n


# -- the API calls -------------------------------------------------------------------------


def upload_requests(client: Any, path: str | os.PathLike[str], *, display_name: str) -> str:
    """Upload a request JSONL file; returns its name (``files/...``)."""
    uploaded = client.files.upload(
        file=os.fspath(path),
        config=types.UploadFileConfig(mime_type=JSONL_MIME, display_name=display_name),
    )
    return str(uploaded.name)


def create_batch_job(client: Any, *, model: str, file_name: str, display_name: str) -> Any:
    """Create a batch job over an uploaded file, named for finding it again if we crash."""
    return client.batches.create(
        model=model,
        src=file_name,
        config=types.CreateBatchJobConfig(display_name=display_name),
    )


def create_embeddings_job(client: Any, *, model: str, file_name: str, display_name: str) -> Any:
    """Create an embeddings batch job over an uploaded file of embed requests
    (``batches.create_embeddings``: ``POST models/{model}:asyncBatchEmbedContent``), named
    for finding it again if we crash, as :func:`create_batch_job`."""
    with warnings.catch_warnings():
        # The SDK marks the method experimental on every call; the shape is ours to check.
        warnings.simplefilter("ignore")
        return client.batches.create_embeddings(
            model=model,
            src=types.EmbeddingsBatchJobSource(file_name=file_name),
            config=types.CreateEmbeddingsBatchJobConfig(display_name=display_name),
        )


def get_batch_job(client: Any, name: str) -> Any:
    return client.batches.get(name=name)


def cancel_batch_job(client: Any, name: str) -> None:
    """``batches.cancel``: ``POST /v1beta/batches/{id}:cancel`` (google-genai 3.6.1
    ``google/genai/batches.py``, ``Batches.cancel(name=...)``: a POST to
    ``batches/{name}:cancel``, nothing read back, returns None). The API "stops processing new
    requests" (https://ai.google.dev/gemini-api/docs/batch-mode): the job ends CANCELLED
    later, and the rows answered before may be in its output."""
    client.batches.cancel(name=name)


def operation_error(client: Any, job: Any) -> dict[str, Any] | None:
    """The ``error {code, message}`` of a finished batch operation, read from the raw answer.

    For the Developer API the SDK does not map the operation's error (``BatchJob.error`` is
    None; only Vertex gets it), so a FAILED job's reason would be lost: read the operation
    as the API sent it. Vertex, or an SDK that maps it, is taken from ``job.error``.
    """
    error = getattr(job, "error", None)
    if error is not None and (getattr(error, "message", None) or getattr(error, "code", None)):
        return {"code": getattr(error, "code", None), "message": getattr(error, "message", None)}
    try:
        raw = client._api_client.request("get", str(job.name), {})  # the SDK's own transport
        body = orjson.loads(raw.body or b"{}")
    except Exception:  # a reason is a nicety: never what fails a reconcile
        return None
    found = body.get("error") if isinstance(body, dict) else None
    return found if isinstance(found, dict) else None


def output_ended_at(job: Any) -> float | None:
    """When a finished job ended (its ``end_time``, else ``update_time``), epoch seconds."""
    for name in ("end_time", "update_time"):
        when = getattr(job, name, None)
        if when is not None and hasattr(when, "timestamp"):
            return float(when.timestamp())
    return None


def find_batch_job(client: Any, display_name: str) -> Any | None:
    """The batch job with this display name, paging through ``batches.list``; None if none.

    If a re-send ever created two, the first listed (the newest) is returned: both carry the
    same rows, and the older one's output is simply never read.
    """
    for job in client.batches.list(config=types.ListBatchJobsConfig(page_size=_LIST_PAGE_SIZE)):
        if job.display_name == display_name:
            return job
    return None


def job_state(job: Any) -> str:
    """``SUCCEEDED``, ``FAILED``, ``CANCELLED``, ``EXPIRED``, ``RUNNING``, ``PENDING`` ..."""
    state = job.state
    raw = getattr(state, "value", state) or "UNSPECIFIED"
    return str(raw).rsplit("_STATE_", 1)[-1].upper()


def output_file_of(job: Any) -> str | None:
    """The responses file of a finished job, if it has one."""
    dest = getattr(job, "dest", None)
    name = getattr(dest, "file_name", None) if dest is not None else None
    return str(name) if name else None


def download_output(client: Any, file_name: str, destination: Path) -> int:
    """Stream an output file to ``destination`` (the SDK writes it in chunks); returns bytes."""
    client.files.download(file=file_name, destination=str(destination))
    return destination.stat().st_size


def iter_lines(path: str | os.PathLike[str], *, buffer_size: int = 1 << 20) -> Iterator[bytes]:
    """The non-blank lines of a file, read through a bounded buffer."""
    with open(path, "rb", buffering=buffer_size) as fh:
        for line in fh:
            if line.strip():
                yield line
