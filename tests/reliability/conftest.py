"""Settings of the reliability suite: reproducible property tests, and the slow job kept out of default runs.

``pytest tests/reliability`` runs the default seeds; ``pytest -m slow tests/reliability`` runs the long sweeps
(any ``-m`` expression given on the command line or in addopts takes over from the default deselection).
Hypothesis runs derandomized here: the examples follow from the test itself, so CI failures replay locally.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# The support module sits next to the tests, as tests/sandbox does it.
sys.path.insert(0, str(Path(__file__).parent))

settings.register_profile(
    "reliability",
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("markexpr"):
        return  # the caller chose which marks run
    slow = [item for item in items if item.get_closest_marker("slow") and _HERE in Path(item.path).parents]
    if slow:
        config.hook.pytest_deselected(items=slow)
        dropped = set(map(id, slow))
        items[:] = [item for item in items if id(item) not in dropped]
