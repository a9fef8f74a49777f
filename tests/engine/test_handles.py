"""The handle protocols, the host's real handles and the fakes agree on names and signatures.

Engine tests run on the fakes; this keeps them honest about the real handles. The host is
built but never loads a model, so this runs in well under a second (after torch imports).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import pytest

from reasoner.handles import HANDLES
from reasoner.testing import fake_generators


def _methods(cls: type) -> dict[str, Callable[..., object]]:
    """The public methods a class defines or inherits (attributes that are data are skipped)."""
    return {
        name: method
        for name, method in inspect.getmembers(cls, inspect.isfunction)
        if not name.startswith("_")
    }


def _parameters(method: Callable[..., object]) -> list[tuple[str, str, object]]:
    """What a caller relies on: each parameter's name, kind (positional, keyword-only...) and
    default. Annotations are left out: a fake returns its own result classes."""
    return [(p.name, p.kind.name, p.default) for p in inspect.signature(method).parameters.values()]


@pytest.fixture
async def real_handles() -> dict[str, type]:
    from generators.host import Host

    async with Host("cpu") as host:
        return {name: type(handle) for name, handle in host.handles().items()}


async def test_the_host_serves_every_handle_name(real_handles: dict[str, type]) -> None:
    assert set(real_handles) == set(HANDLES)


def test_every_fake_has_a_name() -> None:
    assert set(fake_generators()) == set(HANDLES)


@pytest.mark.parametrize("name", sorted(HANDLES))
async def test_real_handle_and_fake_match_the_protocol(
    name: str, real_handles: dict[str, type]
) -> None:
    protocol = _methods(HANDLES[name])
    assert protocol, f"the {name} protocol declares no methods"
    for side, cls in (("host", real_handles[name]), ("fake", type(fake_generators()[name]))):
        methods = _methods(cls)
        assert methods.keys() == protocol.keys(), f"{side} {cls.__name__} methods"
        for method, declared in protocol.items():
            assert _parameters(methods[method]) == _parameters(declared), (
                f"{side} {cls.__name__}.{method} differs from {HANDLES[name].__name__}.{method}"
            )
