"""The Prefect automations beside the deployments: ``gemini-ledger automations apply``.

Each file of ``automations/`` (next to ``prefect.yaml``) declares one Prefect automation in
the shape of Prefect's ``AutomationCore`` (what ``prefect automation create --from-file``
reads). ``apply`` creates each one on the server of ``PREFECT_API_URL``, or updates the one
with its name, or leaves it alone when it is already as declared: applying twice gives the
same automations.

A folder is the whole declaration of its automations: one that apply put on the server from
a folder of that name, and that no file there declares any more (its file deleted, or its
name changed), is deleted, so it stops firing. Each carries the tag of its folder,
``managed-by:gemini-ledger/<folder name>`` (:func:`folder_tag`), which ``apply`` puts on each
one it writes; so applying ``--dir ops/alerts`` never deletes the shipped ones, nor the
reverse. The ones earlier versions wrote from the shipped folder carry no tag and are known
by the names those versions shipped (pruned by an apply of a folder named ``automations``).
Every other automation on the server (one made by hand in the UI) is never touched.

A ``send-notification`` action declares no ``block_document_id``: ``--block TYPE/NAME``
names a notification block saved on that server (Slack webhook, email, custom webhook, ...)
and fills it in. Without ``--block``, the automations that notify are skipped (and said so),
the others (marking a run Crashed when its heartbeats stopped) are applied.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import yaml

from flows.errors import UsageError

__all__ = [
    "AUTOMATIONS_DIR",
    "MARKER_TAG",
    "AppliedAutomation",
    "Declared",
    "apply_automations",
    "declared",
    "folder_tag",
]

AUTOMATIONS_DIR = Path(__file__).resolve().parents[2] / "automations"
_NOTIFY = "send-notification"
# The tag apply puts on every automation it writes, followed by "/<folder name>": what makes
# one ours, and of which folder, to delete once no file there declares it (a user's own
# automation never has it unless they add it themselves).
MARKER_TAG = "managed-by:gemini-ledger"
# The names the versions before MARKER_TAG applied, untagged (git log -- automations/): the
# one way to know those as ours. A user's file of another name applied by such a version is
# recognised once this version has applied it (tagged) while its file still exists.
_SHIPPED_UNTAGGED = frozenset(
    {
        "gemini-ledger budget reached",
        "gemini-ledger channel halted",
        "gemini-ledger crash runs whose heartbeats stopped",
        "gemini-ledger parked jobs rising",
        "gemini-ledger run failed or crashed",
        "gemini-ledger run over its bound",
    }
)


@dataclass(frozen=True)
class Declared:
    """One automation as a file declares it (``automation``: Prefect's ``AutomationCore``;
    None when it notifies and no block was given)."""

    path: Path
    name: str
    automation: Any | None

    @property
    def needs_block(self) -> bool:
        return self.automation is None


@dataclass(frozen=True)
class AppliedAutomation:
    """What ``apply`` did with one declared automation, or with one of ours no file declares."""

    name: str
    action: str  # created, updated, unchanged, skipped, deleted
    id: UUID | None = None

    def describe(self) -> str:
        if self.action == "skipped":
            return f"skipped: {self.name} (it notifies: give --block TYPE/NAME)"
        return f"{self.action}: {self.name} ({self.id})"


def _files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise UsageError(f"no automations folder at {folder}")
    files = sorted(p for p in folder.iterdir() if p.suffix in {".yaml", ".yml"})
    if not files:
        raise UsageError(f"no automation files (*.yaml) in {folder}")
    return files


def folder_tag(folder: Path) -> str:
    """The tag of the automations ``apply`` writes from ``folder``: they are that folder's."""
    return f"{MARKER_TAG}/{folder.resolve().name}"


def _load(path: Path, block_id: UUID | None) -> Declared:
    from prefect.events.schemas.automations import AutomationCore
    from pydantic import ValidationError

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise UsageError(f"{path.name}: cannot read it: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        raise UsageError(f"{path.name}: not an automation (a mapping with a name)")
    notifies = [a for a in data.get("actions") or [] if a.get("type") == _NOTIFY]
    if notifies and block_id is None:
        return Declared(path, data["name"], None)
    for action in notifies:
        action["block_document_id"] = str(block_id)
    tags = data.get("tags") or []
    if isinstance(tags, list):  # not a list: the validation says so
        # Its folder's tag only: a file moved to another folder belongs to that one now.
        own = folder_tag(path.parent)
        data["tags"] = [*(t for t in tags if not str(t).startswith(MARKER_TAG)), own]
    try:
        automation = AutomationCore.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise UsageError(f"{path.name}: not a Prefect automation: {where}: {first['msg']}") from exc
    return Declared(path, automation.name, automation)


def declared(folder: Path = AUTOMATIONS_DIR, block_id: UUID | None = None) -> list[Declared]:
    """Every automation the folder declares, the notification block filled in."""
    found = [_load(path, block_id) for path in _files(folder)]
    names = [d.name for d in found]
    if twice := sorted({n for n in names if names.count(n) > 1}):
        raise UsageError(f"two automation files in {folder} share the name {twice[0]!r}")
    return found


def _block_id(client: Any, block: str) -> UUID:
    from prefect.exceptions import ObjectNotFound

    block_type, _, name = block.partition("/")
    if not block_type or not name:
        raise UsageError(
            f"--block must be TYPE/NAME (e.g. slack-webhook/ops-alerts), got {block!r}"
        )
    try:
        found: UUID = client.read_block_document_by_name(name, block_type_slug=block_type).id
    except ObjectNotFound as exc:
        raise UsageError(
            f"no {block_type} block named {name!r} on the Prefect server: create it first"
            " (the UI's Blocks page, or .save() on a block of prefect.blocks.notifications),"
            " then apply again"
        ) from exc
    return found


def _same(existing: Any, wanted: Any) -> bool:
    """The automation on the server is already as declared (ids and server fields aside)."""
    from prefect.events.schemas.automations import AutomationCore

    fields = set(AutomationCore.model_fields)
    have = AutomationCore.model_validate(existing.model_dump(include=fields))
    # Compared as Python values, not JSON: a trigger's `expect` and `after` are sets, which JSON
    # dumps as lists in iteration order, and two equal sets built in a different order can
    # iterate differently (the same automation then looked changed, now and then).
    return bool(have.model_dump() == wanted.model_dump())


def apply_automations(
    folder: Path = AUTOMATIONS_DIR, *, block: str | None = None
) -> list[AppliedAutomation]:
    """Create, update or leave alone each declared automation on the Prefect server; delete
    ours that no file declares any more (hand-made ones are left alone)."""
    from prefect.client.orchestration import get_client
    from prefect.settings import get_current_settings

    from flows._prefect_api import check_api

    _files(folder)  # a wrong folder is refused before the server is asked anything
    url = get_current_settings().api.url
    if not url:
        raise UsageError(
            "no Prefect API configured: set PREFECT_API_URL to the server the deployments are on"
        )
    check_api(url)
    done: list[AppliedAutomation] = []
    with get_client(sync_client=True) as client:
        block_id = _block_id(client, block) if block is not None else None
        items = declared(folder, block_id)
        for item in items:
            if item.automation is None:
                done.append(AppliedAutomation(item.name, "skipped"))
                continue
            existing = client.read_automations_by_name(item.name)
            if not existing:
                new_id = client.create_automation(item.automation)
                done.append(AppliedAutomation(item.name, "created", new_id))
                continue
            first, *extra = existing
            for duplicate in extra:  # an earlier script may have created it twice
                client.delete_automation(duplicate.id)
            if _same(first, item.automation):
                done.append(AppliedAutomation(item.name, "unchanged", first.id))
            else:
                client.update_automation(first.id, item.automation)
                done.append(AppliedAutomation(item.name, "updated", first.id))
        wanted = {item.name for item in items}  # a skipped one is still declared: kept
        for gone in _ours(client, folder):
            if gone.name not in wanted:
                client.delete_automation(gone.id)
                done.append(AppliedAutomation(gone.name, "deleted", gone.id))
    return done


def _ours(client: Any, folder: Path) -> list[Any]:
    """The automations on the server apply wrote from a folder of ``folder``'s name: tagged
    :func:`folder_tag`, or, for the shipped folder's name, untagged and named as an earlier
    version shipped one."""
    from prefect.events.filters import AutomationFilter, AutomationFilterName, AutomationFilterTags

    tag = folder_tag(folder)
    tagged = [
        a
        for a in client.read_automations(
            automations=AutomationFilter(tags=AutomationFilterTags(all_=[tag]))
        )
        if tag in a.tags
    ]
    if folder.resolve().name != AUTOMATIONS_DIR.name:
        return tagged
    shipped = client.read_automations(
        automations=AutomationFilter(name=AutomationFilterName(any_=sorted(_SHIPPED_UNTAGGED)))
    )
    untagged = [
        a
        for a in shipped
        if a.name in _SHIPPED_UNTAGGED and not any(t.startswith(MARKER_TAG) for t in a.tags)
    ]
    return [*tagged, *untagged]
