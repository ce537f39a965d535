"""Polynomial (cubic) sparsity schedule invariants, for every script that prunes on a schedule."""
import importlib

import pytest
from conftest import scripts_with


@pytest.fixture(params=scripts_with("polynomial_sparsity"), scope="module")
def sched_mod(request):
    return importlib.import_module(request.param)


def test_polynomial_schedule_values(sched_mod):
    s = sched_mod.polynomial_sparsity
    assert s(0, 0.95, 200, 800) == 0.0
    assert s(200, 0.95, 200, 800) == 0.0
    assert s(800, 0.95, 200, 800) == pytest.approx(0.95)
    assert s(500, 0.95, 200, 800) == pytest.approx(0.95 * (1 - 0.5**3))
    values = [s(t, 0.95, 200, 800) for t in range(0, 1001)]
    assert all(b >= a for a, b in zip(values, values[1:])), "the schedule must be monotone"
    assert all(v == pytest.approx(0.95) for v in values[800:]), "constant after the end"
    assert all(0.0 <= v <= 0.95 for v in values)


def test_pruning_steps_hit_the_end(sched_mod):
    t_s, t_e = sched_mod.pruning_steps(1_000, 0.2, 0.8)
    assert (t_s, t_e) == (200, 800)
    steps = [t for t in range(1, 1_001) if sched_mod.is_pruning_step(t, 300, t_s, t_e)]
    assert steps == [300, 600, 800], "every frequency inside [t_s, t_e], plus t_e itself"
    t_s, t_e = sched_mod.pruning_steps(10_000_000, 0.2, 0.8)
    steps = [t for t in range(1, 10_000_001, 1_000) if sched_mod.is_pruning_step(t - 1, 4_000, t_s, t_e)]
    assert len(steps) == (8_000_000 - 2_000_000) // 4_000 + 1
