"""EauDeSAC with one member is dense SAC: from the same key, its init equals PolyPruneSAC's (at --final-sparsity 0,
where PolyPrune never prunes) bit for bit, and every update takes the same step up to float32 rounding (the population
update vmaps over one member, which XLA may fuse differently): a per-step statement, stronger than comparing returns
over seeds."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import tyro
from adapters import SAC_ACTION_DIM, SAC_OBS_DIM

import eaudesac_mujoco_jax as eaude
import polyprune_sac_mujoco_jax as dense


def batch(rng, n=16):
    return (rng.normal(size=(n, SAC_OBS_DIM)).astype(np.float32),
            rng.uniform(-1, 1, (n, SAC_ACTION_DIM)).astype(np.float32), rng.normal(size=n).astype(np.float32),
            (rng.random(n) < 0.2).astype(np.float32), rng.normal(size=(n, SAC_OBS_DIM)).astype(np.float32))


def max_relative_difference(a, b):
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))) / (np.max(np.abs(np.asarray(y))) + 1e-12))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_eaudesac_with_one_member_is_dense_sac():
    nets = {}
    for name, mod, argv in (("dense", dense, ["--final-sparsity", "0"]), ("eaude", eaude, ["--population-size", "1"])):
        args = tyro.cli(mod.Args, args=argv)
        actor, critic, optimizer = mod.Actor(action_dim=SAC_ACTION_DIM, hidden=(32, 32)), \
            mod.VectorCritic(hidden=(32, 32)), optax.adam(3e-3)
        nets[name] = (mod.make_update(args, actor, critic, optimizer), actor, critic, optimizer)
    key = jax.random.key(7)
    d_state = dense.init_state(key, *nets["dense"][1:], SAC_OBS_DIM, SAC_ACTION_DIM, 0.5)
    e_state, pop = eaude.init_state(key, *nets["eaude"][1:], SAC_OBS_DIM, SAC_ACTION_DIM, 1, 0.5)
    member = lambda: eaude.join_ensemble(eaude.member(pop["params"], 0))  # noqa: E731
    for a, b in zip(jax.tree.leaves(d_state.critic_params), jax.tree.leaves(member())):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(jax.tree.leaves(d_state.actor_params), jax.tree.leaves(e_state.actor_params)):
        np.testing.assert_array_equal(a, b)
    rng, cum = np.random.default_rng(0), jnp.zeros(1)
    for i in range(20):
        b, k = batch(rng), jax.random.fold_in(key, i)
        d_state, d_metrics = nets["dense"][0](d_state, b, k)
        pop, e_state, cum, e_metrics = nets["eaude"][0](pop, e_state, b, k, 0, cum)
        assert max_relative_difference(member(), d_state.critic_params) < 1e-5, i
        assert max_relative_difference(e_state.target_params, d_state.target_params) < 1e-5, i
        assert max_relative_difference(e_state.actor_params, d_state.actor_params) < 1e-5, i
        np.testing.assert_allclose(float(e_state.log_alpha), float(d_state.log_alpha), rtol=1e-5, atol=1e-7)
        for name in ("qf_loss", "actor_loss", "alpha_loss"):
            np.testing.assert_allclose(float(e_metrics[name]), float(d_metrics[name]), rtol=1e-4, atol=1e-6)
    assert float(jnp.abs(d_state.log_alpha - np.log(0.5))) > 1e-3, "the temperature moved: the comparison covers it"
