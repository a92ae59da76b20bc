"""Worked example pipelines shipped with gemini-ledger (reviews on the batch channel)."""

__all__: list[str] = []
