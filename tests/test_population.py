"""EauDe population invariants, for every script with a population: Eq. 3 sampling, tournament selection,
copies and fresh optimizer states, the vmapped update equal to per-member updates, exact mask counts throughout."""
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tyro
from adapters import TRAINERS
from conftest import SCRIPTS, scripts_with

POP_SCRIPTS = scripts_with("select_population")


@pytest.fixture(params=POP_SCRIPTS, scope="module")
def pmod(request):
    return importlib.import_module(request.param)


@pytest.fixture(params=POP_SCRIPTS, scope="module")
def trainer(request):
    mod = importlib.import_module(request.param)
    return TRAINERS[SCRIPTS[request.param]["kind"]](mod, population_size=4)


def kernels(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree) if x.ndim > 1]


def zeros_for(n, s):
    return n - max(1, round(n * (1 - s)))


# ---- Eq. 3 ----------------------------------------------------------------------------------------------------
def test_eq3_stays_in_bounds_including_the_last_updates(pmod):
    rng = np.random.default_rng(0)
    horizon, period = 10_000_000, 8_000
    for parent in [0.0, 0.3, 0.9, 0.999, 0.999999]:
        # steps early, mid, and at/after the horizon (slimDQN epochs can overrun T): no division error
        for step in [8_000, 5_000_000, horizon - 2 * period, horizon - period, horizon - 1, horizon, horizon + 8_000]:
            for _ in range(200):
                s = pmod.sample_sparsity(rng, parent, step, horizon, period, 3.0, 0.01)
                assert parent <= s <= parent + 0.01 * (1 - parent) + 1e-15
                assert s < 1.0
                assert np.isfinite(s)


def test_eq3_reaches_alpha_times_the_line_step_when_the_cap_does_not_bind(pmod):
    rng = np.random.default_rng(1)
    parent, step, horizon, period, alpha = 0.3, 2_000, 10_000, 100, 3.0
    line = (1 - parent) * period / (horizon - step)  # step that would reach sparsity 1 at the horizon
    jumps = np.array([pmod.sample_sparsity(rng, parent, step, horizon, period, alpha, 1.0) - parent for _ in range(20_000)])
    assert jumps.min() >= 0.0
    assert jumps.max() <= alpha * line + 1e-12
    assert jumps.max() >= 0.99 * alpha * line
    assert abs(jumps.mean() - alpha * line / 2) < 0.02 * alpha * line  # uniform xi


def test_eq3_cap_binds_near_the_horizon(pmod):
    rng = np.random.default_rng(2)
    jumps = [pmod.sample_sparsity(rng, 0.5, 9_950, 10_000, 100, 3.0, 0.01) - 0.5 for _ in range(2_000)]
    assert max(jumps) == pytest.approx(0.01 * 0.5)


# ---- tournament ------------------------------------------------------------------------------------------------
def test_tournament_keeps_the_best_and_its_counts_match(pmod):
    rng = np.random.default_rng(3)
    for _ in range(200):
        losses = rng.uniform(0, 10, size=5)
        k_star, selected = pmod.tournament(rng, losses, 3)
        assert k_star == int(np.argmin(losses)) and selected[0] == k_star
        assert len(selected) == 5
        pairs = pmod.copy_pairs(selected, 5)
        counts = np.bincount(selected, minlength=5)
        assert [f for f, _ in pairs] == sorted(j for j in range(5) if counts[j] == 0)
        assert sorted(p for _, p in pairs) == sorted(j for j in range(5) for _ in range(counts[j] - 1))
        # a tournament of 3 out of 5 is never won by one of the two worst members
        worst_two = set(np.argsort(losses)[-2:].tolist())
        assert not worst_two & set(selected)


def test_non_finite_losses_are_never_selected_nor_copied(pmod):
    """Four of six members have a non-finite loss (NaN, +inf, -inf): one tournament of 3 in 5 draws only such members,
    and must still elect a finite one; -inf must not pass for the best loss."""
    rng = np.random.default_rng(4)
    losses = np.array([1.0, np.nan, np.inf, np.nan, 2.0, -np.inf])
    for _ in range(300):
        k_star, selected = pmod.tournament(rng, losses, 3)
        assert k_star == 0
        assert set(selected) <= {0, 4}, selected
        assert {p for _, p in pmod.copy_pairs(selected, 6)} <= {0, 4}
    for bad in ([np.nan] * 4, [np.inf, np.nan, -np.inf]):
        with pytest.raises(pmod.Diverged):
            pmod.tournament(rng, np.array(bad), 2)


def test_sampling_probabilities(pmod):
    p = np.asarray(pmod.sampling_probabilities(jnp.array([1.0, 3.0, np.nan])))
    assert p[2] == 0.0
    assert p[0] == pytest.approx(3 * p[1], rel=1e-4) and p.sum() == pytest.approx(1.0)
    assert np.allclose(pmod.sampling_probabilities(jnp.zeros(4)), 0.25)
    assert np.allclose(pmod.sampling_probabilities(jnp.full(4, jnp.nan)), 0.25)


# ---- population update on the script's real members --------------------------------------------------------------
class ScriptedRng:
    """Stands in for numpy's Generator: the tournaments' contestants come from a script, Eq. 3's draws from a real one."""

    def __init__(self, contestants, seed):
        self.contestants, self.real, self.calls = [np.array(c) for c in contestants], np.random.default_rng(seed), []

    def choice(self, a, size, replace):
        self.calls.append((a, size, replace))
        return self.contestants.pop(0)

    def uniform(self, low, high):
        return self.real.uniform(low, high)


def adam_moments(opt_state, k):
    """Adam's (count, mu, nu) leaves of member k."""
    return [np.asarray(x[k]) for x in jax.tree.leaves(opt_state)]


def test_select_population_copies_prunes_and_resets_exactly_the_copies(trainer):
    mod, k = trainer.mod, trainer.k
    key = jax.random.key(5)
    state = trainer.init(key)
    for i in range(2):
        state = trainer.step(state, jax.random.fold_in(key, i))
    pop = state["pop"]
    before = jax.tree.map(np.asarray, pop)
    sparsities = np.array([0.0, 0.2, 0.5, 0.3])
    losses = np.array([4.0, 1.0, 3.0, 2.0])  # k* = 1
    # tournaments of 2 with scripted contestants: [1, 2] -> 1, [3, 0] -> 3, [3, 2] -> 3, so selected = [1, 1, 3, 3];
    # slots 0 and 2 were won by nobody and take copies of the members won twice, in ascending order: 0 <- 1, 2 <- 3
    assert trainer.args.tournament_size == 2 and k == 4
    rng = ScriptedRng([[1, 2], [3, 0], [3, 2]], seed=6)
    new_pop, new_s, k_star, pairs = mod.select_population(rng, losses, pop, sparsities, 5_000, 10_000, 100,
                                                        trainer.args, trainer.optimizer)
    assert rng.calls == [(4, 2, False)] * 3, "K - 1 tournaments of 2 distinct members out of 4"
    assert k_star == 1 and pairs == [(0, 1), (2, 3)]
    assert jax.tree.structure(new_pop) == jax.tree.structure(before)
    assert all(x.shape[0] == k for x in jax.tree.leaves(new_pop))
    copies = {f: p for f, p in pairs}
    assert len(copies) >= 1, "this tournament outcome should produce copies"
    for slot in range(k):
        leaves_new = [np.asarray(x[slot]) for x in jax.tree.leaves(new_pop["params"])]
        masks_new = [np.asarray(x[slot]) for x in jax.tree.leaves(new_pop["masks"])]
        if slot not in copies:  # every selected member (k* included) is untouched
            for a, b in zip(jax.tree.leaves(new_pop), jax.tree.leaves(before)):
                np.testing.assert_array_equal(np.asarray(a[slot]), b[slot])
            assert new_s[slot] == sparsities[slot]
            continue
        parent = copies[slot]
        assert sparsities[parent] <= new_s[slot] <= sparsities[parent] + trainer.args.beta * (1 - sparsities[parent])
        parent_params = [x[parent] for x in jax.tree.leaves(before["params"])]
        parent_masks = [x[parent] for x in jax.tree.leaves(before["masks"])]
        for p_new, m_new, p_old, m_old in zip(leaves_new, masks_new, parent_params, parent_masks):
            assert not (m_new & ~m_old).any(), "a copy's mask must be inside its parent's"
            np.testing.assert_array_equal(p_new[m_new], p_old[m_new])  # an exact copy where kept
            assert not p_new[~m_new].any()
        n = sum(m.size for m in masks_new if m.ndim > 1)
        assert sum(int((~m).sum()) for m in masks_new if m.ndim > 1) == zeros_for(n, new_s[slot])
        for leaf in adam_moments(new_pop["opt_state"], slot):
            assert not leaf.any(), "a copy's Adam state must be fresh (zero moments, count 0)"
    for slot in set(range(k)) - set(copies):
        assert all(leaf.any() for leaf in adam_moments(new_pop["opt_state"], slot) if leaf.ndim > 0)


@pytest.mark.parametrize("population_step", ["vmap", "unrolled"])
def test_population_update_equals_each_member_alone(pmod, population_step):
    trainer_cls = TRAINERS[SCRIPTS[pmod.__name__]["kind"]]
    if population_step not in trainer_cls.population_steps:
        pytest.skip(f"{pmod.__name__} runs its members one way only: {', '.join(trainer_cls.population_steps)}")
    trainer = trainer_cls(pmod, population_size=3, population_step=population_step)
    mod, k = trainer.mod, trainer.k
    key = jax.random.key(7)
    state = trainer.init(key)
    batch = trainer.batch(jax.random.key(8))
    pop = state["pop"]
    single = [jax.tree.map(lambda x: x[i:i + 1], pop) for i in range(k)]
    alone = [trainer.update_members(state, s, batch, jnp.zeros(1)) for s in single]
    together = trainer.update_members(state, pop, batch, jnp.zeros(k))  # (params, cum, losses)
    for i, res in enumerate(alone):
        for a, b in zip(jax.tree.leaves(res[0]), jax.tree.leaves(together[0])):
            np.testing.assert_allclose(np.asarray(a[0]), np.asarray(b[i]), rtol=2e-5, atol=1e-6)
        np.testing.assert_allclose(np.asarray(res[1][0]), np.asarray(together[1][i]), rtol=2e-5)
    assert len({float(l) for l in np.asarray(together[2])}) == k, "independent inits must give different losses"


def test_masks_keep_exact_counts_through_updates_and_selections(trainer):
    mod, k = trainer.mod, trainer.k
    key = jax.random.key(9)
    state = trainer.init(key)
    sparsities = np.zeros(k)
    rng = np.random.default_rng(10)
    for round_ in range(4):
        for i in range(3):
            state = trainer.step(state, jax.random.fold_in(key, 10 * round_ + i))
        losses = np.asarray(state["cum"])
        pop, sparsities, k_star, pairs = mod.select_population(rng, losses, state["pop"], sparsities, 100 * (round_ + 1),
                                                               500, 100, trainer.args, trainer.optimizer)
        state = trainer.after_selection(state, pop, k_star)
        for slot in range(k):
            masks = kernels(mod.member(pop["masks"], slot))
            params = kernels(mod.member(pop["params"], slot))
            n = sum(m.size for m in masks)
            assert sum(int((~m).sum()) for m in masks) == zeros_for(n, sparsities[slot])
            assert all(not p[~m].any() for p, m in zip(params, masks))
            assert all(bool(m.all()) for m in jax.tree.leaves(mod.member(pop["masks"], slot)) if m.ndim <= 1), "biases dense"
    assert sparsities.max() > 0, "copies must have become sparser"


def test_act_draws_members_by_loss_and_returns_valid_actions(pmod):
    trainer_cls = TRAINERS[SCRIPTS[pmod.__name__]["kind"]]
    if not trainer_cls.draws_members:
        pytest.skip(f"{pmod.__name__} draws no member to act (one shared actor, or offline)")
    trainer = trainer_cls(pmod, population_size=3)
    state = trainer.init(jax.random.key(11))
    act = pmod.make_act(trainer.net)
    obs = np.zeros((1, 4, 84, 84), np.uint8)
    key = jax.random.key(12)
    drawn = []
    for _ in range(300):
        action, k, key = act(state["pop"]["params"], obs, jnp.array([1.0, 1e9, np.nan]), key)
        assert 0 <= int(action) < 6
        drawn.append(int(k))
    assert set(drawn) == {0}, "member 0 has by far the lowest loss and NaN members are never drawn"
    counts = np.bincount([int(act(state["pop"]["params"], obs, jnp.zeros(3), jax.random.key(s))[1]) for s in range(300)],
                         minlength=3)
    assert counts.min() > 60, "equal losses draw members uniformly"


def with_nan(tree, k):
    """The stacked tree with one weight of member k set to NaN (its first bias)."""
    leaves, treedef = jax.tree.flatten(tree)
    i = next(i for i, x in enumerate(leaves) if x.ndim == 2)  # a stacked (K, n) bias
    leaves[i] = leaves[i].at[k, 0].set(jnp.nan)
    return jax.tree.unflatten(treedef, leaves)


def test_members_with_non_finite_weights_are_never_selected_nor_copied(trainer):
    mod, k = trainer.mod, trainer.k
    key = jax.random.key(13)
    state = trainer.init(key)
    state = trainer.step(state, key)
    pop = dict(state["pop"], params=with_nan(state["pop"]["params"], 1))
    assert mod.finite_members(pop["params"]).tolist() == [True, False, True, True]
    losses = np.array([4.0, 0.5, 3.0, 2.0])  # member 1 has the lowest loss but a NaN weight
    for seed in range(5):
        new_pop, _, k_star, pairs = mod.select_population(np.random.default_rng(seed), losses, pop, np.zeros(k), 100, 1_000,
                                                          100, trainer.args, trainer.optimizer)
        assert k_star == 3, "the best member with finite weights"
        assert 1 not in {p for _, p in pairs} and 1 in {f for f, _ in pairs}, "member 1 is overwritten, never copied"
        assert mod.finite_members(new_pop["params"]).all()
    all_bad = dict(pop)
    for j in range(k):
        all_bad["params"] = with_nan(all_bad["params"], j)
    with pytest.raises(mod.Diverged, match="step 100"):
        mod.select_population(np.random.default_rng(0), losses, all_bad, np.zeros(k), 100, 1_000, 100, trainer.args,
                              trainer.optimizer)


def test_population_of_one_keeps_its_member_untouched(pmod):
    """K = 1 (the dense baseline): the default --tournament-size is accepted, and every population update returns the
    one member as it was (no copy, no pruning, Adam state not reset), until its loss is not finite: then the run stops."""
    args = tyro.cli(pmod.Args, args=["--population-size", "1"])  # default --tournament-size 3 must not be refused
    pmod.validate(args)
    trainer = TRAINERS[SCRIPTS[pmod.__name__]["kind"]](pmod, population_size=1)
    key = jax.random.key(14)
    state = trainer.init(key)
    rng = np.random.default_rng(0)
    sparsities = np.zeros(1)
    for step in (100, 200, 300):
        state = trainer.step(state, jax.random.fold_in(key, step))
        before = jax.tree.map(np.asarray, state["pop"])
        pop, sparsities, k_star, pairs = pmod.select_population(rng, np.asarray(state["cum"]), state["pop"], sparsities,
                                                                step, 400, 100, trainer.args, trainer.optimizer)
        assert (k_star, pairs, sparsities.tolist()) == (0, [], [0.0])
        for a, b in zip(jax.tree.leaves(pop), jax.tree.leaves(before)):
            np.testing.assert_array_equal(np.asarray(a), b)
        state = trainer.after_selection(state, pop, k_star)
    counts = [np.asarray(x) for x in jax.tree.leaves(state["pop"]["opt_state"]) if np.issubdtype(x.dtype, np.integer)]
    assert counts and all(int(c[0]) == 3 for c in counts), "the Adam state went on counting through the updates"
    with pytest.raises(pmod.Diverged):
        pmod.select_population(rng, np.array([np.nan]), state["pop"], sparsities, 400, 400, 100, trainer.args,
                               trainer.optimizer)
