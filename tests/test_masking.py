"""Mask invariants, shared by every script: exact zero counts, monotone masks, dense biases, pruned weights stay 0."""
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from adapters import TRAINERS
from conftest import SCRIPTS


def toy_params(key):
    """A params tree with every kind of leaf the scripts have: conv and dense kernels, biases."""
    ks = jax.random.split(key, 4)
    return {"params": {
        "Conv_0": {"kernel": jax.random.normal(ks[0], (8, 8, 4, 32)), "bias": jax.random.normal(ks[1], (32,))},
        "Dense_0": {"kernel": jax.random.normal(ks[2], (300, 64)), "bias": jnp.ones((64,))},
        "Dense_1": {"kernel": jax.random.normal(ks[3], (64, 6)), "bias": jnp.zeros((6,))},
    }}


def kernels(tree):
    return [x for x in jax.tree.leaves(tree) if x.ndim > 1]


def biases(tree):
    return [x for x in jax.tree.leaves(tree) if x.ndim <= 1]


def expected_zeros(n, s):
    return n - max(1, round(n * (1 - s)))


@pytest.mark.parametrize("sparsity", [0.0, 0.1, 0.5, 0.9, 0.95, 0.999, 0.99999])
def test_global_mask_has_exact_zero_count(mod, sparsity):
    params = toy_params(jax.random.key(0))
    mask = mod.make_mask(params, sparsity)
    assert jax.tree.structure(mask) == jax.tree.structure(params)
    assert all(m.dtype == jnp.bool_ and m.shape == p.shape for m, p in zip(jax.tree.leaves(mask), jax.tree.leaves(params)))
    n = sum(k.size for k in kernels(params))
    assert sum(int((~m).sum()) for m in kernels(mask)) == expected_zeros(n, sparsity)
    assert all(bool(m.all()) for m in biases(mask)), "biases must never be pruned"
    # global magnitude: every kept weight is at least as large as every pruned one
    kept = np.concatenate([np.abs(np.asarray(p))[np.asarray(m)] for p, m in zip(kernels(params), kernels(mask))])
    pruned = np.concatenate([np.abs(np.asarray(p))[~np.asarray(m)] for p, m in zip(kernels(params), kernels(mask))])
    if pruned.size:
        assert kept.min() >= pruned.max()
    sparsity_reported, nonzero = mod.mask_stats(mask)
    assert sparsity_reported == pytest.approx(expected_zeros(n, sparsity) / n)
    assert nonzero == n - expected_zeros(n, sparsity) + sum(b.size for b in biases(params))


def test_ties_keep_lower_flat_index(mod):
    params = {"a": {"kernel": jnp.ones((4, 5))}, "b": {"kernel": jnp.ones((5, 2))}}
    mask = mod.make_mask(params, 0.5)
    flat = np.concatenate([np.asarray(mask["a"]["kernel"]).ravel(), np.asarray(mask["b"]["kernel"]).ravel()])
    assert flat.tolist() == [True] * 15 + [False] * 15


@pytest.mark.parametrize("sparsity", [0.5, 0.9, 0.95])
def test_erk_mask_counts_per_layer(mod, sparsity):
    params = toy_params(jax.random.key(1))
    mask = mod.make_mask(params, sparsity, scope="erk")
    counts = mod.keep_counts(params, sparsity, scope="erk")
    for p, m, n_keep in zip(kernels(params), kernels(mask), counts):
        assert int(m.sum()) == n_keep
        if n_keep < p.size:  # per-layer magnitude
            assert np.abs(np.asarray(p))[np.asarray(m)].min() >= np.abs(np.asarray(p))[~np.asarray(m)].max()
    total = sum(k.size for k in kernels(params))
    assert abs(sum(counts) - (1 - sparsity) * total) <= len(counts)  # the budget up to rounding
    assert all(bool(m.all()) for m in biases(mask))
    # ERK gives the small dense output layer a higher density than the big hidden layer
    densities = [n / p.size for p, n in zip(kernels(params), counts)]
    assert densities[2] > densities[1]


@pytest.mark.parametrize("scope", ["global", "erk"])
def test_masks_only_shrink_with_exact_counts(mod, scope):
    key = jax.random.key(2)
    params = toy_params(key)
    mask = mod.dense_mask(params)
    n = sum(k.size for k in kernels(params))
    for i, s in enumerate([0.2, 0.4, 0.6, 0.8, 0.95]):
        # training moves the surviving weights between recomputations; pruned ones stay exactly 0
        noise = toy_params(jax.random.fold_in(key, i))
        params = mod.apply_mask(jax.tree.map(lambda p, z: p + 0.5 * z, params, noise), mask)
        new = mod.make_mask(params, s, mask, scope=scope)
        for old_m, new_m in zip(jax.tree.leaves(mask), jax.tree.leaves(new)):
            assert not bool((new_m & ~old_m).any()), "a pruned weight came back"
        if scope == "global":
            assert sum(int((~m).sum()) for m in kernels(new)) == expected_zeros(n, s)
        else:
            assert [int(m.sum()) for m in kernels(new)] == mod.keep_counts(params, s, scope="erk")
        mask = new


@pytest.mark.parametrize("script", list(SCRIPTS))
def test_pruned_weights_stay_zero_after_adam_steps(script):
    """Adam momentum gathered before pruning would revive pruned weights unless the mask is re-applied."""
    mod = importlib.import_module(script)
    trainer = TRAINERS[SCRIPTS[script]["kind"]](mod)
    key = jax.random.key(3)
    state = trainer.init(key)
    for i in range(3):
        state = trainer.step(state, jax.random.fold_in(key, i))
    state = trainer.prune(state, 0.8)
    before = [jax.tree.map(np.asarray, p) for p, _ in trainer.members(state)]
    for i in range(5):
        state = trainer.step(state, jax.random.fold_in(key, 100 + i))
    for (params, mask), old in zip(trainer.members(state), before):
        n = sum(k.size for k in kernels(params))
        assert sum(int((~m).sum()) for m in kernels(mask)) == expected_zeros(n, 0.8)
        for p, m in zip(kernels(params), kernels(mask)):
            assert not np.asarray(p)[~np.asarray(m)].any(), "a pruned weight is non-zero after an update"
        moved = [not np.array_equal(np.asarray(p), o) for p, o in zip(jax.tree.leaves(params), jax.tree.leaves(old))]
        assert all(moved), "every layer (biases included) should still be trained"
