"""pytest plugin (entry point `pytest11`): pin step-wise coherence in a test suite.

Installing this package makes these fixtures available in any project:
- `reasoner_fakes`: fast deterministic fake generators (`reasoner.testing`).
- `reasoner_engine`: an Engine on a temporary SQLite store, with the fakes.
- `reasoner_models`: this project's real generators on CPU (or CUDA), loaded
  once per session; each test gets a host on its own event loop.
Assert with `reasoner.testing.assert_coherent(run, min_step=..., min_edge=...)`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import pytest_asyncio

if TYPE_CHECKING:
    from reasoner.engine import Engine
    from reasoner.handles import ProjectHandles

# The engine and the fakes are imported inside the fixtures: this module loads in every
# pytest session of every project that installs the package, and should cost nothing there.


@pytest.fixture
def reasoner_fakes() -> ProjectHandles:
    from reasoner.testing import fake_generators

    return fake_generators()


@pytest.fixture
def reasoner_engine(tmp_path: Path, reasoner_fakes: ProjectHandles) -> Iterator[Engine]:
    from reasoner.engine import Engine

    engine = Engine(tmp_path / "runs.db", generators=reasoner_fakes)
    yield engine
    engine.store.close()


@pytest.fixture(scope="session")
def _reasoner_model_cache() -> dict[str, Any]:
    return {}  # models loaded by any test's host, shared by the next ones


@pytest_asyncio.fixture
async def reasoner_models(_reasoner_model_cache: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
    from generators.host import Host

    async with Host(models=_reasoner_model_cache) as host:
        yield host.handles()
