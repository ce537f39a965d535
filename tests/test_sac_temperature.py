"""Both SAC scripts learn the temperature as SBX does: loss alpha * (H - H_target) with alpha = exp(log_alpha), so the
gradient with respect to log_alpha is alpha * (H - H_target). With plain SGD the new log_alpha shows that gradient
exactly; the other form, log_alpha * (H - H_target), has gradient H - H_target, which differs whenever alpha != 1."""
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import tyro
from adapters import SAC_ACTION_DIM, SAC_OBS_DIM, mujoco_batch
from conftest import scripts_where

LR, ENT_COEF = 0.1, 0.2  # alpha = 0.2: the two forms' gradients differ 5x


@pytest.mark.parametrize("name", scripts_where(family="mujoco"))
def test_temperature_gradient_is_sbx(name):
    mod = importlib.import_module(name)
    args = tyro.cli(mod.Args, args=["--batch-size", "4", "--population-size", "2"] if hasattr(mod.Args, "population_size")
                    else ["--batch-size", "4"])
    actor, critic = mod.Actor(action_dim=SAC_ACTION_DIM, hidden=(32, 32)), mod.VectorCritic(hidden=(32, 32))
    optimizer = optax.sgd(LR)
    update = mod.make_update(args, actor, critic, optimizer)
    key, batch = jax.random.key(3), mujoco_batch(jax.random.key(4))
    if hasattr(args, "population_size"):
        state, pop = mod.init_state(key, actor, critic, optimizer, SAC_OBS_DIM, SAC_ACTION_DIM, 2, ENT_COEF)
        old_log_alpha, actor_params = float(state.log_alpha), jax.tree.map(np.array, state.actor_params)
        _, new, _, metrics = update(pop, state, batch, key, 0, jnp.zeros(2))
    else:
        state = mod.init_state(key, actor, critic, optimizer, SAC_OBS_DIM, SAC_ACTION_DIM, ENT_COEF)
        old_log_alpha, actor_params = float(state.log_alpha), jax.tree.map(np.array, state.actor_params)
        new, metrics = update(state, batch, key)
    _, actor_key = jax.random.split(key)
    _, log_prob = mod.sample_action(*actor.apply(actor_params, batch[0]), actor_key)
    entropy = -float(np.mean(log_prob))  # of the actor at the start of the step, as SBX
    alpha = np.exp(old_log_alpha)
    np.testing.assert_allclose(alpha, ENT_COEF, rtol=1e-6)
    np.testing.assert_allclose(float(metrics["alpha_loss"]), alpha * (entropy + SAC_ACTION_DIM), rtol=1e-4)
    expected = old_log_alpha - LR * alpha * (entropy + SAC_ACTION_DIM)
    np.testing.assert_allclose(float(new.log_alpha), expected, rtol=1e-5, atol=1e-6)
    log_form = old_log_alpha - LR * (entropy + SAC_ACTION_DIM)
    assert abs(float(new.log_alpha) - log_form) > 100 * abs(float(new.log_alpha) - expected) + 1e-4
