"""The real Prefect server and prefect.yaml deployed, as tests/deploy starts them (per module)."""

from tests.deploy.test_prefect_yaml import deployed, server

__all__ = ["deployed", "server"]
