"""Create (or update) the automations in this folder on the Prefect API in PREFECT_API_URL.

    python automations/create.py --block slack-webhook/ops-alerts
    python automations/create.py --block custom-webhook/ops --file other-automation.yaml

``--block TYPE/NAME`` names a notification block saved on that server; its id replaces the
placeholder ``block_document_id`` of every ``send-notification`` action. An automation with
the same name is updated rather than duplicated, so running this twice is harmless. An
automation that would still notify the placeholder block (all zeros) is refused: it would be
installed and never notify anyone.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any
from uuid import UUID

import yaml

__all__ = ["PLACEHOLDER_BLOCK_ID", "PlaceholderBlock", "install", "load_automation"]

HERE = Path(__file__).resolve().parent
DEFAULT_FILE = HERE / "parked-jobs-rising.yaml"
PLACEHOLDER_BLOCK_ID = UUID(int=0)


class PlaceholderBlock(ValueError):
    """A send-notification action still names the placeholder block id."""


def load_automation(path: Path, block_id: UUID | None) -> Any:
    """The automation in ``path`` as Prefect's AutomationCore, with the block id filled in."""
    from prefect.events.schemas.automations import AutomationCore

    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if block_id is not None:
        for action in data.get("actions", []):
            if action.get("type") == "send-notification":
                action["block_document_id"] = str(block_id)
    automation = AutomationCore.model_validate(data)
    for action in automation.actions:
        if getattr(action, "block_document_id", None) == PLACEHOLDER_BLOCK_ID:
            raise PlaceholderBlock(
                f"{path.name} still notifies the placeholder block {PLACEHOLDER_BLOCK_ID}:"
                " pass --block TYPE/NAME naming a notification block saved on your Prefect server"
                " (e.g. --block slack-webhook/ops-alerts)"
            )
    return automation


def install(path: Path = DEFAULT_FILE, block: str | None = None) -> UUID:
    """Create or update the automation; returns its id."""
    from prefect.client.orchestration import get_client

    if block is None:
        load_automation(path, None)  # refused before the server is asked anything
    with get_client(sync_client=True) as client:
        block_id = None
        if block is not None:
            block_type, _, name = block.partition("/")
            if not name:
                raise SystemExit("--block must be TYPE/NAME, e.g. slack-webhook/ops-alerts")
            block_id = client.read_block_document_by_name(name, block_type_slug=block_type).id
        automation = load_automation(path, block_id)
        existing = client.read_automations_by_name(automation.name)
        if existing:
            client.update_automation(existing[0].id, automation)
            return existing[0].id
        return client.create_automation(automation)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--block", help="notification block as TYPE/NAME")
    parser.add_argument("--file", type=Path, default=DEFAULT_FILE)
    args = parser.parse_args()
    try:
        print(f"automation {install(args.file, args.block)} is installed")
    except PlaceholderBlock as exc:
        raise SystemExit(f"error: {exc}") from None


if __name__ == "__main__":
    main()
