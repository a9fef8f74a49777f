"""morph on fake generators: a smooth sequence, and the checks that guard it."""

from __future__ import annotations

import numpy as np
import pytest

from plans.morph import plan
from reasoner import Engine, InputError
from reasoner.testing import FakeVAE, fake_generators


async def test_frames_run_from_source_to_target() -> None:
    run = await Engine(generators=fake_generators()).run(plan, {"source": 3, "target": 8,
                                                                "frames": 8})
    assert run.status == "succeeded", run.error
    frames = run.output("frames")
    assert frames.strip.shape == (28, 28 * 8)
    assert frames.readings[0] == 3 and frames.readings[-1] == 8
    assert max(frames.distances) <= frames.bound
    assert frames.target_probs[-1] > frames.target_probs[0]
    assert [c.passed for c in run.steps["frames"].checks] == [True, True, True]


async def test_a_jump_between_frames_fails_after_backtracking() -> None:
    class JumpyVAE(FakeVAE):
        async def interpolate(self, a, b, steps, labels_a, labels_b):  # noqa: ANN001, ANN201
            frames = await super().interpolate(a, b, steps, labels_a, labels_b)
            half = steps // 2
            return np.concatenate([np.repeat(frames[:1], half, 0),
                                   np.repeat(frames[-1:], steps - half, 0)])

    run = await Engine(generators=fake_generators(vae=JumpyVAE())).run(
        plan, {"source": 1, "target": 8, "frames": 6})
    assert run.status == "failed"
    assert [b.target for b in run.backtracks] == ["endpoints"] * 3
    assert "frames 2 -> 3 differ by" in run.error and "> bound" in run.error
    assert "p(target) dips" not in run.error


@pytest.mark.parametrize(
    ("data", "field"),
    [({"source": 1, "target": 2, "frames": 1}, "frames"),
     ({"source": 10, "target": 2}, "source"),
     ({"source": 1, "target": -1}, "target")],
)
async def test_bad_inputs_name_the_field(data: dict, field: str) -> None:
    with pytest.raises(InputError, match=f"field '{field}'"):
        await Engine(generators=fake_generators()).run(plan, data)
