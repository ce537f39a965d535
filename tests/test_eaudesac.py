"""EauDeSAC: the population is K critic pairs sharing one actor, temperature and Polyak target. Only critic kernels are
masked; every member fits the one y computed per batch; the target moves toward member k* and the actor is trained on
critic k* alone."""
import dataclasses
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from adapters import TRAINERS, mujoco_batch
from conftest import scripts_where


@pytest.fixture(params=scripts_where(kind="eaudesac"), scope="module")
def trainer(request):
    return TRAINERS["eaudesac"](importlib.import_module(request.param), population_size=3)


def host(tree):
    return jax.tree.map(np.array, tree)


def kernels(tree):
    return [x for x in jax.tree.leaves(tree) if x.ndim > 1]


def biases(tree):
    return [x for x in jax.tree.leaves(tree) if x.ndim <= 1]


def trained_state(trainer, seed, steps=2):
    key = jax.random.key(seed)
    state = trainer.init(key)
    for i in range(steps):
        state = trainer.step(state, jax.random.fold_in(key, i))
    return state


def run_update(trainer, state, batch, key, k_star, cum=None):
    """The script's update on copies (it donates the population and the shared state); results on the host."""
    pop, shared = jax.tree.map(jnp.copy, state["pop"]), jax.tree.map(jnp.copy, state["shared"])
    cum = jnp.zeros(trainer.k) if cum is None else cum
    pop, shared, cum, metrics = trainer.update(pop, shared, batch, key, k_star, cum)
    return host(pop), host(shared), np.asarray(cum), jax.device_get(metrics)


# ---------------------------------------------------------------- pruning touches the critic kernels only
def test_only_critic_kernels_are_masked(trainer):
    mod, key = trainer.mod, jax.random.key(0)
    assert not [f.name for f in dataclasses.fields(mod.SACState) if "mask" in f.name], \
        "the actor, the temperature and the target must have no mask"
    state = trainer.init(key)
    assert set(state["pop"]) == {"params", "masks", "opt_state"}
    for k in range(trainer.k):  # a member is one critic pair: two per-critic trees, kernels 2-D, biases 1-D
        params, mask = mod.member(state["pop"]["params"], k), mod.member(state["pop"]["masks"], k)
        assert isinstance(params, list) and len(params) == 2
        assert jax.tree.structure(mask) == jax.tree.structure(params)
        assert all(x.ndim == 2 for x in kernels(params)) and all(x.ndim == 1 for x in biases(params))
        obs, actions = mujoco_batch(key)[:2]
        assert trainer.critic.apply(mod.join_ensemble(params), obs, actions).shape == (2, obs.shape[0])
    for i in range(2):
        state = trainer.step(state, jax.random.fold_in(key, i))
    before = host(state["shared"])
    state = trainer.prune(state, 0.9)
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(host(state["shared"]))):
        np.testing.assert_array_equal(a, b, err_msg="pruning changed the shared state")
    for params, mask in trainer.members(state):
        n = sum(x.size for x in kernels(params))
        assert sum(int((~m).sum()) for m in kernels(mask)) == n - max(1, round(n * 0.1))
        assert all(m.all() for m in biases(mask)), "critic biases must stay dense"
        assert all((~m).any() for m in kernels(mask)), "one global threshold over both critics prunes every layer here"
    pruned = host(state["shared"])
    for i in range(5):
        state = trainer.step(state, jax.random.fold_in(key, 10 + i))
    final = host(state["shared"])
    for leaf in jax.tree.leaves(final.actor_params):
        assert np.count_nonzero(leaf) == leaf.size, "the actor must never hold exact zeros"
    for old, new in zip(jax.tree.leaves(pruned.actor_params), jax.tree.leaves(final.actor_params)):
        assert not np.array_equal(old, new), "the actor is still trained"
    assert final.log_alpha != pruned.log_alpha, "the temperature is still trained"
    for params, mask in trainer.members(state):
        for p, m in zip(jax.tree.leaves(params), jax.tree.leaves(mask)):
            assert not np.asarray(p)[~np.asarray(m)].any()
    # the target is a Polyak average and is never masked: k*'s pruned weights only decay there
    assert all(np.count_nonzero(k) == k.size for k in kernels(mod.split_ensemble(final.target_params)))


# ---------------------------------------------------------------- every member fits the one shared y
def test_every_member_steps_against_the_one_shared_y(trainer):
    mod, key = trainer.mod, jax.random.key(1)
    state = trainer.prune(trained_state(trainer, 1), 0.5)
    old_pop, old = host(state["pop"]), host(state["shared"])
    batch = mujoco_batch(jax.random.key(2))
    obs, actions, rewards, dones, next_obs = batch
    cum_in = jnp.array([1.0, 2.0, 3.0])
    new_pop, _, cum, metrics = run_update(trainer, state, batch, key, 0, cum_in)

    # y once: next actions sampled once from the actor, min of the two target critics, entropy term
    critic_key, _ = jax.random.split(key)
    alpha = np.exp(old.log_alpha)
    next_a, next_logp = mod.sample_action(*trainer.actor.apply(old.actor_params, next_obs), critic_key)
    q_next = np.asarray(trainer.critic.apply(old.target_params, next_obs, next_a)).min(axis=0)
    y = jnp.asarray(rewards + trainer.args.gamma * (1 - dones) * (q_next - alpha * np.asarray(next_logp)))

    def loss_fn(p):  # one member's loss: sum over its two critics of 1/2 MSE to the shared y
        q = trainer.critic.apply(mod.join_ensemble(p), obs, actions)
        per_critic = 0.5 * jnp.mean((q - y[None]) ** 2, axis=1)
        return per_critic.sum(), per_critic

    losses, per_critics = [], []
    for k in range(trainer.k):
        params, opt_state, mask = (mod.member(old_pop[name], k) for name in ("params", "opt_state", "masks"))
        (loss, per_critic), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = trainer.optimizer.update(grads, opt_state, params)
        params = mod.apply_mask(optax.apply_updates(params, updates), mask)
        for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(mod.member(new_pop["params"], k))):
            np.testing.assert_allclose(b, a, rtol=2e-5, atol=1e-6)
        for a, b in zip(jax.tree.leaves(opt_state), jax.tree.leaves(mod.member(new_pop["opt_state"], k))):
            a = np.asarray(a)  # Adam moments: float32 rounding of near-cancelling gradients, relative to the leaf's scale
            np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5 * float(np.abs(a).max()))
        losses.append(float(loss))
        per_critics.append(np.asarray(per_critic))
    np.testing.assert_allclose(cum, np.asarray(cum_in) + np.array(losses), rtol=1e-5)  # L_k += loss_k
    assert len(set(losses)) == trainer.k, "independent members must have different losses"
    np.testing.assert_allclose(metrics["qf_loss"], np.mean(losses), rtol=1e-5)  # losses/* are means over members
    np.testing.assert_allclose([metrics["qf1_loss"], metrics["qf2_loss"]], np.mean(per_critics, axis=0), rtol=1e-5)
    for a, b in zip(jax.tree.leaves(new_pop["masks"]), jax.tree.leaves(old_pop["masks"])):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------- k*: the target's Polyak source, the actor's critic
def test_target_moves_toward_member_k_star_by_polyak(trainer):
    mod = trainer.mod
    state = trained_state(trainer, 3)
    old = host(state["shared"])
    batch, key, tau = mujoco_batch(jax.random.key(4)), jax.random.key(5), trainer.args.tau
    results = {k: run_update(trainer, state, batch, key, k) for k in (2, 0)}
    new_pop, new, _, _ = results[2]
    selected = mod.join_ensemble(mod.member(new_pop["params"], 2))  # member 2 after its critic step
    for t_old, t_new, c in zip(jax.tree.leaves(old.target_params), jax.tree.leaves(new.target_params),
                               jax.tree.leaves(selected)):
        np.testing.assert_allclose(t_new, (1 - tau) * t_old + tau * c, rtol=1e-6, atol=1e-7)
    other = results[0][1].target_params
    assert not all(np.allclose(a, b, rtol=1e-6, atol=1e-7)
                   for a, b in zip(jax.tree.leaves(new.target_params), jax.tree.leaves(other))), "k* must matter"
    # the members' critic steps do not depend on k* (it only picks the target's source and the actor's critic)
    for a, b in zip(jax.tree.leaves(new_pop), jax.tree.leaves(results[0][0])):
        np.testing.assert_array_equal(a, b)


def test_actor_and_temperature_use_critic_k_star_only(trainer):
    mod = trainer.mod
    state = trained_state(trainer, 6)
    batch, key, k_star = mujoco_batch(jax.random.key(7)), jax.random.key(8), 1
    base_pop, base, _, metrics = run_update(trainer, state, batch, key, k_star)

    def perturbed(k):
        pop = dict(state["pop"], params=jax.tree.map(lambda x: x.at[k].multiply(1.5), state["pop"]["params"]))
        return run_update(trainer, dict(state, pop=pop), batch, key, k_star)[1]

    for k in (0, 2):  # another member's critics change nothing in the actor, the temperature or the target
        changed = perturbed(k)
        for name in ("actor_params", "actor_opt", "log_alpha", "alpha_opt", "target_params"):
            for a, b in zip(jax.tree.leaves(getattr(base, name)), jax.tree.leaves(getattr(changed, name))):
                np.testing.assert_array_equal(a, b, err_msg=f"member {k} changed {name}")
    changed = perturbed(k_star)
    assert not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(base.actor_params),
                                                        jax.tree.leaves(changed.actor_params))), "critic k* drives the actor"

    # actor loss: mean(alpha log pi - min Q) on member k*'s updated critics, alpha of the start of the step
    old = host(state["shared"])
    _, actor_key = jax.random.split(key)
    obs = batch[0]
    a_pi, logp = mod.sample_action(*trainer.actor.apply(old.actor_params, obs), actor_key)
    critic = mod.join_ensemble(mod.member(base_pop["params"], k_star))
    q_pi = np.asarray(trainer.critic.apply(critic, obs, a_pi)).min(axis=0)
    alpha = np.exp(old.log_alpha)
    np.testing.assert_allclose(metrics["actor_loss"], np.mean(alpha * np.asarray(logp) - q_pi), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(metrics["alpha_loss"], alpha * (-float(np.mean(logp)) + trainer.actor.action_dim),
                               rtol=1e-4)  # SBX's temperature loss


# ---------------------------------------------------------------- one init: the target only ever blends relatives
def relative_distance(a, b):
    a, b = jax.tree.leaves(a), jax.tree.leaves(b)
    return float(np.sqrt(sum(np.sum((x - y) ** 2) for x, y in zip(a, b)) / sum(np.sum(y ** 2) for y in b)))


def test_members_start_from_one_dense_init(trainer):
    mod = trainer.mod
    shared, pop = mod.init_state(jax.random.key(12), trainer.actor, trainer.critic, trainer.optimizer, 5, 2, 3)
    for k in range(1, 3):
        for a, b in zip(jax.tree.leaves(mod.member(pop["params"], 0)), jax.tree.leaves(mod.member(pop["params"], k))):
            np.testing.assert_array_equal(a, b)
    for a, b in zip(jax.tree.leaves(shared.target_params), jax.tree.leaves(mod.join_ensemble(mod.member(pop["params"], 0)))):
        np.testing.assert_array_equal(a, b)
    _, independent = mod.init_state(jax.random.key(12), trainer.actor, trainer.critic, trainer.optimizer, 5, 2, 3,
                                    member_init="independent")
    kernel = [x for x in jax.tree.leaves(independent["params"]) if x.ndim == 3][0]  # a stacked (K, in, out) kernel
    assert not np.array_equal(kernel[0], kernel[1]), "member_init='independent' draws one init per member"


@pytest.mark.parametrize("member_init", ["shared", "independent"])
def test_target_stays_near_a_member_after_k_star_changes(trainer, member_init):
    """The Polyak target follows whichever member is k*. After a selection makes a sparser copy k*, the target
    must stay close to some network the population holds: with members from one init it does; with independent inits
    it becomes a weight-space average of two unrelated networks, far from every member, for hundreds of steps."""
    mod, key = trainer.mod, jax.random.key(13)
    shared, pop = mod.init_state(key, trainer.actor, trainer.critic, trainer.optimizer, 5, 2, 3, member_init=member_init)
    state = {"pop": pop, "shared": shared, "cum": jnp.zeros(3), "k_star": 0}
    for i in range(30):
        state = trainer.step(state, jax.random.fold_in(key, i))
    # member 2 becomes what a population update makes of a copy: pruned to a higher sparsity; then it is k*
    pop = dict(state["pop"])
    mask = mod.make_mask(mod.member(pop["params"], 2), 0.3, mod.member(pop["masks"], 2), "global")
    pop["masks"] = jax.tree.map(lambda x, y: x.at[2].set(y), pop["masks"], mask)
    pop["params"] = jax.tree.map(lambda x, y: x.at[2].set(y), pop["params"], mod.apply_mask(mod.member(pop["params"], 2), mask))
    state = dict(state, pop=pop, k_star=2)
    worst = 0.0
    for i in range(200):  # (1 - tau)^140 = 0.5: the blend is half and half around step 140
        state = trainer.step(state, jax.random.fold_in(key, 100 + i))
        if i % 20 == 19:
            target = mod.split_ensemble(host(state["shared"]).target_params)
            params = host(state["pop"]["params"])
            worst = max(worst, min(relative_distance(target, mod.member(params, k)) for k in range(3)))
    if member_init == "shared":
        assert worst < 0.1, f"the target drifted {worst:.2f} (relative) away from every member"
    else:  # independent inits: an average of unrelated networks, far from all of them
        assert worst > 0.3, worst
