"""The CQL update of the offline scripts: its step is plain SGD on TD^2 + alpha * mean(logsumexp_a Q(s, a) - Q(s, a_data)),
with the target from the target network, no bootstrap after a terminal, and the mask re-applied."""
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import tyro
from adapters import N_ACTIONS, atari_batch
from conftest import scripts_where


@pytest.fixture(params=scripts_where(kind="polyprune_cql"), scope="module")
def cql_mod(request):
    return importlib.import_module(request.param)


def random_params(net, seed):
    """Random weights without compiling the initialisers (seconds on a 2-core CPU)."""
    shapes = jax.eval_shape(net.init, jax.random.key(0), np.zeros((1, 4, 84, 84), np.uint8))
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: jnp.asarray(rng.normal(0, 0.05, s.shape), jnp.float32), shapes)


def test_update_is_sgd_on_the_cql_loss(cql_mod):
    args = tyro.cli(cql_mod.Args, args=["--cql-alpha", "0.7", "--gamma", "0.9"])
    net = cql_mod.QNetwork(action_dim=N_ACTIONS, hidden=8)
    params, target = random_params(net, 0), random_params(net, 1)
    rng = np.random.default_rng(2)
    mask = jax.tree.map(lambda p: jnp.asarray(rng.random(p.shape) < 0.5 if p.ndim > 1 else np.ones(p.shape, bool)), params)
    params = cql_mod.apply_mask(params, mask)
    obs, actions, rewards, dones, next_obs = batch = atari_batch(jax.random.key(0), batch_size=6)
    dones[:2] = [1.0, 0.0]

    def reference_loss(p):
        q_all = net.apply(p, obs)
        q = q_all[np.arange(len(actions)), actions]
        y = rewards + 0.9 * (1.0 - dones) * net.apply(target, next_obs).max(-1)
        td = jnp.mean((q - y) ** 2)
        cql = jnp.mean(jnp.log(jnp.exp(q_all).sum(-1)) - q)
        return td + 0.7 * cql, (td, q.mean(), cql)

    (_, (td, q_mean, cql)), grads = jax.jit(jax.value_and_grad(reference_loss, has_aux=True))(params)
    lr = 1e-2
    update = cql_mod.make_update(args, net, optax.sgd(lr))
    expected = jax.tree.map(lambda p, g, m: np.where(m, p - lr * g, 0.0), params, grads, mask)
    new, _, td_loss, q_values, cql_loss = update(jax.tree.map(jnp.copy, params), optax.sgd(lr).init(params), mask, target,
                                                 batch)
    np.testing.assert_allclose([td_loss, q_values, cql_loss], [td, q_mean, cql], rtol=1e-5)
    for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(expected)):
        np.testing.assert_allclose(np.asarray(a), b, rtol=1e-4, atol=1e-7)
    assert float(cql_loss) > 0, "logsumexp exceeds the data action's Q"


@pytest.mark.parametrize("population_step", ["vmap", "unrolled"])
def test_eaudecql_members_take_the_same_cql_step(population_step):
    """Each EauDeCQL member is updated exactly as PolyPruneCQL updates its network (same loss, same target), and
    its cumulated fitness grows by its full CQL loss td + cql_alpha * cql."""
    poly, eaude = importlib.import_module("polyprune_cql_atari_jax"), importlib.import_module("eaudecql_atari_jax")
    flags = ["--cql-alpha", "0.7", "--gamma", "0.9"]
    net = poly.QNetwork(action_dim=N_ACTIONS, hidden=8)
    members = [random_params(net, seed) for seed in (3, 4)]
    target = random_params(net, 5)
    masks = [poly.make_mask(p, s) for p, s in zip(members, (0.0, 0.6))]
    members = [poly.apply_mask(p, m) for p, m in zip(members, masks)]
    batch = atari_batch(jax.random.key(1), batch_size=6)
    lr = 1e-2
    single = poly.make_update(tyro.cli(poly.Args, args=flags), net, optax.sgd(lr))
    pop_update = eaude.make_update(tyro.cli(eaude.Args, args=flags + ["--population-step", population_step]), net, optax.sgd(lr))
    stack = lambda trees: jax.tree.map(lambda *xs: jnp.stack(xs), *trees)
    params, _, cum, losses, td, q, cql = pop_update(stack(members), stack([optax.sgd(lr).init(p) for p in members]),
                                                    stack(masks), target, batch, jnp.array([1.0, 2.0]))
    for k, (p, m) in enumerate(zip(members, masks)):
        new, _, td_k, q_k, cql_k = single(jax.tree.map(jnp.copy, p), optax.sgd(lr).init(p), m, target, batch)
        for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(params)):
            np.testing.assert_allclose(np.asarray(b[k]), np.asarray(a), rtol=1e-4, atol=1e-7)
        np.testing.assert_allclose([td[k], q[k], cql[k]], [td_k, q_k, cql_k], rtol=1e-5)
        np.testing.assert_allclose(losses[k], td_k + 0.7 * cql_k, rtol=1e-5)
        np.testing.assert_allclose(cum[k], [1.0, 2.0][k] + td_k + 0.7 * cql_k, rtol=1e-5)
