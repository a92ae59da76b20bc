"""The receipts example's inputs are made by its own code and shipped as made."""

from __future__ import annotations

from flows.examples import receipts


def test_the_shipped_inputs_are_what_the_example_makes(tmp_path) -> None:
    """data/receipts/ holds exactly the bytes write_inputs makes: valid PNG and PDF files."""
    made = {p.name: p.read_bytes() for p in receipts.write_inputs(tmp_path)}
    shipped = {p.name: p.read_bytes() for p in receipts.DATA_DIR.iterdir()}
    assert made == shipped
    assert all(d.startswith(b"\x89PNG\r\n\x1a\n") for n, d in made.items() if n.endswith(".png"))
    assert all(
        d.startswith(b"%PDF-1.4") and d.endswith(b"%%EOF\n")
        for n, d in made.items()
        if n.endswith(".pdf")
    )
    assert sum(len(d) for d in made.values()) < 16_000  # small files, shipped in the repository
