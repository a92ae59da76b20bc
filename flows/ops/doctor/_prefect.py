"""Checks against the Prefect server: reachable, deployments, upcoming scheduled runs, workers.

The deployments are the ones ``prefect.yaml`` declares; a scheduled one must have scheduled
runs ahead of now (the server's scheduler creates them; a server started with
``--no-services``, or a scheduler that fails, creates none), and each work pool named must have
a worker that has sent a heartbeat recently (the server marks it ONLINE).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from flows.ops.doctor._report import Check

__all__ = ["DeclaredDeployment", "check_prefect", "deployed_pipelines", "read_prefect_yaml"]

_ROOT = Path(__file__).resolve().parents[3]
DEPLOY_FIX = "prefect --no-prompt deploy --all  (from the directory holding prefect.yaml)"
# The state name Prefect gives a run held back by its deployment's concurrency_limit.
AWAITING_SLOT = "AwaitingConcurrencySlot"


@dataclass(frozen=True)
class DeclaredDeployment:
    name: str
    pool: str
    scheduled: bool


def default_prefect_yaml() -> Path:
    here = Path("prefect.yaml")
    return here if here.is_file() else _ROOT / "prefect.yaml"


def read_prefect_yaml(path: Path) -> list[DeclaredDeployment]:
    """The deployments a prefect.yaml declares, with their pool and whether one is scheduled."""
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from None
    found = []
    for dep in config.get("deployments") or []:
        pool = (dep.get("work_pool") or {}).get("name") or ""
        schedules = [s for s in dep.get("schedules") or [] if s.get("active", True)]
        found.append(DeclaredDeployment(str(dep["name"]), str(pool), bool(schedules)))
    return found


def deployed_pipelines() -> dict[str, list[str]]:
    """The pipelines the server's deployments name (their ``pipeline`` parameter), each with
    the deployments naming it; empty without a reachable Prefect API (its own check says so)."""
    from prefect.settings import get_current_settings

    if not get_current_settings().api.url:
        return {}
    from prefect.client.orchestration import get_client

    named: dict[str, list[str]] = {}
    with get_client(sync_client=True) as client:
        if client.api_healthcheck() is not None:
            return {}
        for dep in client.read_deployments():
            spec = (dep.parameters or {}).get("pipeline")
            if isinstance(spec, str) and spec:
                named.setdefault(spec, []).append(dep.name)
    return {spec: sorted(names) for spec, names in named.items()}


def check_prefect(prefect_yaml: Path | None = None) -> list[Check]:
    """The API, then each deployment, its upcoming runs, and each pool's workers."""
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    if not url:
        return [
            Check.warn(
                "prefect api",
                "no PREFECT_API_URL: each run would start a temporary local server, so nothing"
                " is scheduled and no worker runs the deployments",
                "prefect server start; export PREFECT_API_URL=http://127.0.0.1:4200/api",
            )
        ]
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        problem = client.api_healthcheck()
        if problem is not None:
            return [
                Check.fail(
                    "prefect api",
                    f"{url} is unreachable ({type(problem).__name__})",
                    "start it (prefect server start) or correct PREFECT_API_URL",
                )
            ]
        checks = [Check.ok("prefect api", url)]
        path = prefect_yaml or default_prefect_yaml()
        try:
            declared = read_prefect_yaml(path)
        except ValueError as exc:
            return [*checks, Check.fail("prefect.yaml", str(exc), "pass --prefect-file PATH")]
        deployment_checks, pools, ids = _deployments(client, declared)
        checks += deployment_checks
        live: dict[str, int] = {}
        for pool in sorted(pools | {d.pool for d in declared if d.pool}):
            check, live[pool] = _pool(client, pool)
            checks.append(check)
        checks += _held_runs(client, ids, live)
        return checks


def _deployments(
    client: Any, declared: list[DeclaredDeployment]
) -> tuple[list[Check], set[str], list[Any]]:
    """A check per deployment (and its schedule), the pools the server runs them on, and the
    ids of the deployments found."""
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterName,
        FlowRunFilter,
        FlowRunFilterDeploymentId,
        FlowRunFilterExpectedStartTime,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.types._datetime import now as prefect_now

    names = [d.name for d in declared]
    on_server = {
        d.name: d
        for d in client.read_deployments(
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=names))
        )
    }
    checks = []
    pools: set[str] = set()
    now = prefect_now("UTC")
    for dep in declared:
        name = f"deployment {dep.name}"
        found = on_server.get(dep.name)
        if found is None:
            checks.append(Check.fail(name, "not on the server", DEPLOY_FIX))
            continue
        flow_name = client.read_flow(found.flow_id).name
        full = f"{flow_name}/{dep.name}"
        if getattr(found, "paused", False):
            checks.append(Check.fail(name, "paused", f"prefect deployment resume {full}"))
            continue
        checks.append(Check.ok(name, f"on pool {found.work_pool_name}"))
        if found.work_pool_name:
            pools.add(found.work_pool_name)
        if not dep.scheduled:
            continue
        active = [s for s in found.schedules or [] if s.active]
        if not active:
            checks.append(
                Check.fail(f"schedule {dep.name}", "no active schedule on the server", DEPLOY_FIX)
            )
            continue
        upcoming = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                deployment_id=FlowRunFilterDeploymentId(any_=[found.id]),
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED])),
                # Prefect's own DateTime type, a datetime subclass at runtime.
                expected_start_time=FlowRunFilterExpectedStartTime(after_=now),  # type: ignore[arg-type]
            ),
            # The earliest one: unsorted, the server answers in its own order (a run days out).
            sort=FlowRunSort.EXPECTED_START_TIME_ASC,
            limit=1,
        )
        if not upcoming:
            checks.append(
                Check.fail(
                    f"schedule {dep.name}",
                    "no upcoming scheduled run: the server's scheduler is not creating them",
                    "run the server with its services (prefect server start, without"
                    " --no-services); its log shows why the scheduler fails",
                )
            )
        else:
            at = upcoming[0].expected_start_time
            checks.append(Check.ok(f"schedule {dep.name}", f"next run at {at:%Y-%m-%d %H:%M %Z}"))
    return checks, pools, [d.id for d in on_server.values()]


def _held_runs(client: Any, deployment_ids: list[Any], live: dict[str, int]) -> list[Check]:
    """Runs that hold up the night: Running on a pool with no live worker (a killed worker's
    run keeps the deployment's concurrency slot), and runs waiting for that slot."""
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterDeploymentId,
        FlowRunFilterState,
        FlowRunFilterStateName,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort

    if not deployment_ids:
        return []

    def runs(state: FlowRunFilterState) -> list[Any]:
        found: list[Any] = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                deployment_id=FlowRunFilterDeploymentId(any_=deployment_ids), state=state
            ),
            sort=FlowRunSort.START_TIME_ASC,
        )
        return found

    running = runs(FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING])))
    orphaned = [r for r in running if r.work_pool_name and not live.get(r.work_pool_name)]
    waiting = runs(FlowRunFilterState(name=FlowRunFilterStateName(any_=[AWAITING_SLOT])))
    checks = []
    if orphaned:
        first = orphaned[0]
        since = f" since {first.start_time:%Y-%m-%d %H:%M %Z}" if first.start_time else ""
        checks.append(
            Check.fail(
                "running runs",
                f"{len(orphaned)} Running with no live worker on their pool (oldest"
                f" {first.name!r}{since}): each keeps its deployment's concurrency slot",
                f"prefect flow-run cancel {first.id}  (or start the worker again)",
            )
        )
    else:
        checks.append(Check.ok("running runs", f"{len(running)} running, each on a live pool"))
    if waiting:
        checks.append(
            Check.warn(
                "runs awaiting a slot",
                f"{len(waiting)} waiting for their deployment's concurrency slot (oldest"
                f" {waiting[0].name!r})",
                "let the running one finish, or cancel it if its worker is gone",
            )
        )
    return checks


def _pool(client: Any, pool: str) -> tuple[Check, int]:
    """The pool's check and how many live workers it has."""
    from prefect.client.schemas.objects import WorkerStatus
    from prefect.exceptions import ObjectNotFound

    name = f"work pool {pool}"
    try:
        found = client.read_work_pool(pool)
    except ObjectNotFound:
        return (
            Check.fail(name, "does not exist", f"prefect work-pool create {pool} --type process"),
            0,
        )
    if found.is_paused:
        return Check.fail(name, "paused", f"prefect work-pool resume {pool}"), 0
    workers = client.read_workers_for_work_pool(work_pool_name=pool)
    live = [w for w in workers if w.status == WorkerStatus.ONLINE]
    if not live:
        return Check.fail(
            name,
            f"no live worker ({len(workers)} known, none online)",
            f"prefect worker start --pool {pool}  (on the machine with this checkout)",
        ), 0
    return Check.ok(name, f"{len(live)} live worker(s): {', '.join(w.name for w in live)}"), len(
        live
    )
