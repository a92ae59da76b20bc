"""Worked example with media on the batch channel: fields from receipts and invoices.

Each document in ``data/receipts/`` becomes one job keyed ``receipts:<day>:<document>:v1``:
the receipts are small PNG images sent inline with their request, the invoice is a PDF
uploaded through the Files API. Every row also reads ``policy.pdf`` (the expense policy the
fields are read against: which currency to assume, how to name a merchant), a local file
uploaded once and shared by all the rows that read it: the ledger keeps one upload per
content hash and deletes it from the Files API when every row using it is final.

The answer must validate against :class:`ReceiptFields` (merchant, date, total, currency,
line items); ``on_result`` writes it into the day's file ``<RECEIPTS_DIR>/<day>.jsonl``
(default ``var/receipts``), one line per document (``{"document", "key", "fields"}``),
overwritten by document: a repeated delivery changes nothing, a new key version replaces
the line. The file is rewritten whole under an exclusive lock (a temporary file, then
``os.replace``), so concurrent deliveries never lose a line.

The inputs are made by this module (:func:`write_inputs`, no download, no dependency): the
PNGs are drawn with ``zlib`` and ``struct`` (a receipt's printed lines as dark bars: there
is no font to draw text with, so a real model finds little to read in them; the PDFs carry
real text), the PDFs are written by hand. ``tests/examples/test_receipts.py`` checks the
shipped files are what :func:`write_inputs` makes.
"""

from __future__ import annotations

import datetime as dt
import os
import struct
import zlib
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from flows.contents import Part
from flows.examples.keyed_jsonl import read_rows, upsert_row
from flows.pipeline import Pipeline, Prompt, Run
from ledger import Channel

__all__ = [
    "DATA_DIR",
    "RECEIPTS_DIR_ENV",
    "LineItem",
    "ReceiptFields",
    "build_prompt",
    "load_documents",
    "pipeline",
    "read_fields",
    "results_file",
    "write_fields",
    "write_inputs",
]

DATA_DIR = Path(__file__).with_name("data") / "receipts"
RECEIPTS_DIR_ENV = "RECEIPTS_DIR"
DEFAULT_DIR = Path("var") / "receipts"
MODEL = "gemini-2.5-flash"
POLICY = "policy.pdf"

SYSTEM = (
    "You read expense documents (a photographed receipt or a PDF invoice) for an accounts"
    " team. Answer with JSON only: the merchant, the document's date, its total, the"
    " ISO 4217 currency and its line items (description, quantity, amount). Read them"
    " against the attached expense policy."
)

Currency = Literal["EUR", "USD", "GBP", "CHF", "JPY"]


class LineItem(BaseModel):
    """One line of a receipt or invoice."""

    model_config = ConfigDict(extra="forbid")

    description: str = Field(min_length=1)
    quantity: int = Field(ge=1)
    amount: float = Field(ge=0)


class ReceiptFields(BaseModel):
    """The structured answer for one document."""

    model_config = ConfigDict(extra="forbid")

    merchant: str = Field(min_length=1)
    date: dt.date
    total: float = Field(ge=0)
    currency: Currency
    line_items: list[LineItem]


# -- the inputs (made here, shipped in data/receipts/) ---------------------------------------

# What each receipt image stands for: its printed lines, drawn as bars of their length.
_RECEIPTS: dict[str, list[str]] = {
    "receipt-01": ["CAFE LUMEN", "2026-12-05", "ESPRESSO 2 5.00", "CROISSANT 1 2.80", "TOTAL 7.80"],
    "receipt-02": ["TAXI ZUERI", "2026-12-05", "RIDE 1 38.50", "TOTAL CHF 38.50"],
    "receipt-03": ["HOTEL MARE", "2026-12-04", "ROOM 2 240.00", "CITY TAX 2 6.00", "TOTAL 246"],
    "receipt-04": ["BOOKS & CO", "2026-12-03", "NOTEBOOK 3 13.50", "TOTAL GBP 13.50"],
    "receipt-05": ["RAMEN ICHI", "2026-12-02", "RAMEN 2 2400", "TEA 2 600", "TOTAL JPY 3000"],
    "receipt-06": ["PARKING P3", "2026-12-01", "PARKING 1 12.00", "TOTAL USD 12.00"],
    "receipt-07": ["BAKERY SOL", "2026-12-01", "BREAD 1 3.20", "TOTAL 3.20"],
    "receipt-08": ["FUEL STOP", "2026-11-30", "DIESEL 41 70.11", "TOTAL EUR 70.11"],
    "receipt-09": ["TRAIN SBB", "2026-11-30", "TICKET 1 64.00", "TOTAL CHF 64.00"],
    "receipt-10": ["PHARMACY 9", "2026-11-29", "PLASTERS 1 4.50", "TOTAL 4.50"],
    "receipt-11": ["DELI ROSA", "2026-11-28", "SANDWICH 2 11.00", "WATER 2 3.00", "TOTAL 14.00"],
    "receipt-12": ["PRINT HUB", "2026-11-27", "POSTERS 4 32.00", "TOTAL USD 32.00"],
}
_INVOICE = [
    "INVOICE 2026-118  Northwind Office Supply",
    "Date: 2026-12-01",
    "Desk lamp      2 x 34.90 EUR = 69.80 EUR",
    "Paper A4 box   1 x 21.50 EUR = 21.50 EUR",
    "Total due: 91.30 EUR",
]
_POLICY = [
    "Expense policy (example)",
    "Amounts are in the currency printed; assume EUR when none is printed.",
    "Name the merchant as printed at the top of the document.",
    "A line item is one printed line with a quantity and an amount.",
]


# A 3x5 pixel font (each glyph five rows of three bits), enough for a receipt's capitals,
# digits and signs: the images carry their text, drawn at twice the size.
_FONT = {
    "A": "010101111101101",
    "B": "110101110101110",
    "C": "011100100100011",
    "D": "110101101101110",
    "E": "111100110100111",
    "F": "111100110100100",
    "G": "011100101101011",
    "H": "101101111101101",
    "I": "111010010010111",
    "J": "001001001101010",
    "K": "101101110101101",
    "L": "100100100100111",
    "M": "101111111101101",
    "N": "110101101101101",
    "O": "010101101101010",
    "P": "110101110100100",
    "Q": "010101101110011",
    "R": "110101110101101",
    "S": "011100010001110",
    "T": "111010010010010",
    "U": "101101101101111",
    "V": "101101101101010",
    "W": "101101111111101",
    "X": "101101010101101",
    "Y": "101101010010010",
    "Z": "111001010100111",
    "0": "111101101101111",
    "1": "010110010010111",
    "2": "110001010100111",
    "3": "110001010001110",
    "4": "101101111001001",
    "5": "111100110001110",
    "6": "011100111101111",
    "7": "111001010010010",
    "8": "111101111101111",
    "9": "111101111001110",
    ".": "000000000000010",
    "-": "000000111000000",
    "&": "010101010101011",
    ":": "000010000010000",
    " ": "000000000000000",
}
_SCALE = 2


def _png(lines: list[str]) -> bytes:
    """A grayscale PNG of a receipt: its printed lines in black on white paper."""
    glyph_w, glyph_h = 4 * _SCALE, 5 * _SCALE  # a column of space after each glyph
    line_h = glyph_h + 2 * _SCALE
    width = 8 + glyph_w * max(len(line) for line in lines) + 8
    height = 8 + line_h * len(lines) + 8
    pixels = [bytearray(b"\xff" * width) for _ in range(height)]
    for n, line in enumerate(lines):
        for c, char in enumerate(line):
            bits = _FONT[char]
            for gy in range(5):
                for gx in range(3):
                    if bits[gy * 3 + gx] == "1":
                        for dy in range(_SCALE):
                            y = 8 + n * line_h + gy * _SCALE + dy
                            x = 8 + c * glyph_w + gx * _SCALE
                            pixels[y][x : x + _SCALE] = b"\x00" * _SCALE
    rows = [b"\x00" + bytes(row) for row in pixels]  # filter type 0 per scanline

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body))
            + kind
            + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"".join(rows), 9))
        + chunk(b"IEND", b"")
    )


def _pdf(lines: list[str]) -> bytes:
    """A one-page PDF of text lines in Helvetica (objects and xref written by hand)."""

    def escape(s: str) -> str:
        return s.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")

    text = "BT /F1 11 Tf 50 780 Td 14 TL " + " ".join(f"({escape(s)}) '" for s in lines) + " ET"
    stream = text.encode("latin-1")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842]"
        b" /Resources << /Font << /F1 4 0 R >> >> /Contents 5 0 R >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for n, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % n + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


def write_inputs(folder: Path = DATA_DIR) -> list[Path]:
    """Write the example's documents (the same bytes every time) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {f"{name}.png": _png(lines) for name, lines in _RECEIPTS.items()}
    files["invoice-01.pdf"] = _pdf(_INVOICE)
    files[POLICY] = _pdf(_POLICY)
    written = []
    for name, data in sorted(files.items()):
        path = folder / name
        path.write_bytes(data)
        written.append(path)
    return written


def load_documents(day: date) -> Iterator[dict[str, Any]]:
    """Today's expense documents: the shipped files stand for whatever arrived on ``day``."""
    for path in sorted(DATA_DIR.iterdir()):
        if path.name != POLICY and path.suffix in (".png", ".pdf"):
            yield {"document": path.stem, "path": str(path)}


def document_key(item: dict[str, Any], day: date) -> str:
    return f"receipts:{day.isoformat()}:{item['document']}:v1"


def build_prompt(item: dict[str, Any], run: Run) -> Prompt:
    path = Path(item["path"])
    # A receipt image is a few hundred bytes: inline. A PDF goes through the Files API
    # (Part.from_file), once per content: the policy is uploaded once for every row.
    document = (
        Part.from_bytes(path.read_bytes(), "image/png")
        if path.suffix == ".png"
        else Part.from_file(path, "application/pdf")
    )
    return Prompt(
        text=f"Read the fields of {item['document']}.",
        parts=(document, Part.from_file(DATA_DIR / POLICY, "application/pdf")),
        system=SYSTEM,
        temperature=0.0,
        keep={"document": item["document"], "day": run.day.isoformat()},
    )


# -- the side effect -------------------------------------------------------------------------


def results_file(day: str) -> Path:
    """The day's fields file."""
    return Path(os.environ.get(RECEIPTS_DIR_ENV) or DEFAULT_DIR) / f"{day}.jsonl"


def read_fields(day: str) -> dict[str, dict[str, Any]]:
    """The day's lines by document (empty when none were written)."""
    return read_rows(results_file(day), "document")


def write_fields(
    key: str, result: ReceiptFields | dict[str, Any], kept: dict[str, Any] | None = None
) -> None:
    """Upsert one document's fields into its day's file by document (see the module doc)."""
    fields = result if isinstance(result, ReceiptFields) else ReceiptFields.model_validate(result)
    parts = key.split(":")
    document = str(kept["document"]) if kept else parts[2]
    day = str(kept["day"]) if kept else parts[1]
    row = {"document": document, "key": key, "fields": fields.model_dump(mode="json")}
    upsert_row(results_file(day), "document", row)


pipeline: Pipeline[dict[str, Any]] = Pipeline(
    name="receipts",
    model=MODEL,
    channel=Channel.BATCH,
    output=ReceiptFields,
    load_items=load_documents,
    key_of=document_key,
    build_prompt=build_prompt,
    on_result=write_fields,
    attempt_cap=4,
    unknown_cap=2,
    description="Fields of receipts (PNG) and an invoice (PDF), read against a shared policy.",
)
