"""SAC on MuJoCo: only the critics are pruned, the flat replay buffer matches a naive reference, the vmapped critic
ensemble equals separate critics, the losses and the Polyak target follow the formulas."""
import dataclasses
import importlib

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import tyro
from adapters import SAC_ACTION_DIM, SAC_OBS_DIM, PolyPruneSACTrainer, mujoco_batch
from conftest import scripts_where


@pytest.fixture(params=scripts_where(family="mujoco"), scope="module")
def mujoco_mod(request):
    return importlib.import_module(request.param)


@pytest.fixture(params=scripts_where(kind="polyprune_sac"), scope="module")
def trainer(request):
    return PolyPruneSACTrainer(importlib.import_module(request.param))


def host(tree):
    return jax.tree.map(np.array, tree)


def kernels(tree):
    return [x for x in jax.tree.leaves(tree) if x.ndim > 1]


def biases(tree):
    return [x for x in jax.tree.leaves(tree) if x.ndim <= 1]


# ---------------------------------------------------------------- pruning touches the critics only
def test_only_critic_kernels_are_masked(trainer):
    mod, key = trainer.mod, jax.random.key(0)
    masks = [f.name for f in dataclasses.fields(mod.SACState) if "mask" in f.name]
    assert masks == ["critic_mask"], "the actor and the temperature must have no mask"
    state = trainer.init(key)
    for i in range(2):
        state = trainer.step(state, jax.random.fold_in(key, i))
    before = host(state)
    state = trainer.prune(state, 0.9)
    after = host(state)
    for name in ("actor_params", "actor_opt", "target_params", "log_alpha", "alpha_opt", "critic_opt"):
        for a, b in zip(jax.tree.leaves(getattr(before, name)), jax.tree.leaves(getattr(after, name))):
            np.testing.assert_array_equal(a, b, err_msg=f"pruning changed {name}")
    params, mask = mod.split_ensemble(after.critic_params), mod.split_ensemble(after.critic_mask)
    n = sum(k.size for k in kernels(params))
    assert sum(int((~m).sum()) for m in kernels(mask)) == n - max(1, round(n * 0.1))
    assert all(m.all() for m in biases(mask)), "critic biases must stay dense"
    assert all((~m).any() for m in kernels(mask)), "one global threshold over both critics prunes every layer here"
    for i in range(5):
        state = trainer.step(state, jax.random.fold_in(key, 10 + i))
    final = host(state)
    for leaf in jax.tree.leaves(final.actor_params):
        assert np.count_nonzero(leaf) == leaf.size, "the actor must never hold exact zeros"
    for old, new in zip(jax.tree.leaves(after.actor_params), jax.tree.leaves(final.actor_params)):
        assert not np.array_equal(old, new), "the actor is still trained"
    assert final.log_alpha != after.log_alpha, "the temperature is still trained"
    for p, m in zip(jax.tree.leaves(final.critic_params), jax.tree.leaves(final.critic_mask)):
        assert not p[~m].any()


# ---------------------------------------------------------------- the update follows the SAC formulas
def test_critic_loss_polyak_target_and_temperature(trainer):
    mod, key = trainer.mod, jax.random.key(4)
    state = trainer.init(key)
    state = trainer.prune(trainer.step(state, jax.random.fold_in(key, 1)), 0.5)
    old = host(state)
    batch = mujoco_batch(jax.random.fold_in(key, 2))
    obs, actions, rewards, dones, next_obs = batch
    new, metrics = trainer.update(state, batch, key)
    new, metrics = host(new), jax.device_get(metrics)

    # the critic target: min over the two target critics, entropy bonus with alpha of the start of the step
    critic_key, _ = jax.random.split(key)
    alpha = np.exp(old.log_alpha)
    next_a, next_logp = mod.sample_action(*trainer.actor.apply(old.actor_params, next_obs), critic_key)
    q_next = np.asarray(trainer.critic.apply(old.target_params, next_obs, next_a)).min(axis=0)
    y = rewards + trainer.args.gamma * (1 - dones) * (q_next - alpha * np.asarray(next_logp))
    q = np.asarray(trainer.critic.apply(old.critic_params, obs, actions))
    per_critic = 0.5 * ((q - y[None]) ** 2).mean(axis=1)
    np.testing.assert_allclose([metrics["qf1_loss"], metrics["qf2_loss"]], per_critic, rtol=1e-4)
    np.testing.assert_allclose(metrics["qf_loss"], per_critic.sum(), rtol=1e-4)
    np.testing.assert_allclose([metrics["qf1_values"], metrics["qf2_values"]], q.mean(axis=1), rtol=1e-4)
    np.testing.assert_allclose(metrics["alpha"], alpha, rtol=1e-6)

    # Polyak: target <- (1 - tau) target + tau critic, from the masked critic after its update
    tau = trainer.args.tau
    for t_old, t_new, c_new in zip(jax.tree.leaves(old.target_params), jax.tree.leaves(new.target_params),
                                   jax.tree.leaves(new.critic_params)):
        np.testing.assert_allclose(t_new, (1 - tau) * t_old + tau * c_new, rtol=1e-6, atol=1e-7)
    for p, m in zip(jax.tree.leaves(new.critic_params), jax.tree.leaves(new.critic_mask)):
        assert not p[~m].any()
    # a pruned critic weight decays in the target (it is not zeroed there): the target is never masked
    assert all(np.count_nonzero(k) == k.size for k in kernels(mod.split_ensemble(new.target_params)))
    assert mod.mask_stats(mod.split_ensemble(new.critic_mask))[0] > 0.4

    # actor: mean(alpha log pi - min Q) on the updated critics; temperature (SBX): alpha (H - H_target), H_target = -dim(A)
    _, actor_key = jax.random.split(key)
    a_pi, logp = mod.sample_action(*trainer.actor.apply(old.actor_params, obs), actor_key)
    q_pi = np.asarray(trainer.critic.apply(new.critic_params, obs, a_pi)).min(axis=0)
    np.testing.assert_allclose(metrics["actor_loss"], np.mean(alpha * np.asarray(logp) - q_pi), rtol=1e-4, atol=1e-6)
    entropy = -float(np.mean(logp))
    assert old.log_alpha != 0, "one step has already moved the temperature"
    np.testing.assert_allclose(metrics["alpha_loss"], np.exp(old.log_alpha) * (entropy + SAC_ACTION_DIM), rtol=1e-4)
    assert entropy > -SAC_ACTION_DIM and new.log_alpha < old.log_alpha, "entropy above its target lowers alpha"


def test_alpha_is_fixed_without_autotune(trainer):
    mod = trainer.mod
    args = tyro.cli(mod.Args, args=["--batch-size", "4", "--no-autotune", "--ent-coef", "0.2"])
    update = mod.make_update(args, trainer.actor, trainer.critic, optax.adam(1e-3))
    state = mod.init_state(jax.random.key(5), trainer.actor, trainer.critic, optax.adam(1e-3), SAC_OBS_DIM, SAC_ACTION_DIM,
                           args.ent_coef)
    state, metrics = update(state, mujoco_batch(jax.random.key(6)), jax.random.key(7))
    np.testing.assert_allclose(float(jnp.exp(state.log_alpha)), 0.2, rtol=1e-6)
    np.testing.assert_allclose(float(metrics["alpha"]), 0.2, rtol=1e-6)


def test_tanh_gaussian_log_prob(mujoco_mod):
    mean = jnp.array([[0.3, -1.0, 2.0], [0.0, 0.5, -0.2]])
    log_std = jnp.array([[-1.0, 0.0, 0.5], [-3.0, 1.0, 0.0]])
    key = jax.random.key(8)
    action, log_prob = mujoco_mod.sample_action(mean, log_std, key)
    u = mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape)
    std = np.exp(np.asarray(log_std, np.float64))
    u = np.asarray(u, np.float64)
    naive = (-0.5 * ((u - np.asarray(mean)) / std) ** 2 - np.log(std) - 0.5 * np.log(2 * np.pi)
             - np.log(1 - np.tanh(u) ** 2)).sum(axis=-1)
    np.testing.assert_allclose(action, np.tanh(u), rtol=1e-5)
    np.testing.assert_allclose(log_prob, naive, rtol=1e-4)
    assert np.all(np.abs(action) <= 1)


# ---------------------------------------------------------------- the vmapped ensemble
def test_vmapped_ensemble_equals_separate_critics(mujoco_mod):
    critic = mujoco_mod.VectorCritic(hidden=(16, 8))
    obs, action = jax.random.normal(jax.random.key(9), (7, 4)), jax.random.uniform(jax.random.key(10), (7, 3))
    params = jax.jit(critic.init)(jax.random.key(11), obs, action)
    q = np.asarray(jax.jit(critic.apply)(params, obs, action))
    assert q.shape == (2, 7)
    members = mujoco_mod.split_ensemble(params)
    assert all(k.ndim == 2 for k in kernels(members)) and all(b.ndim == 1 for b in biases(members))
    single = mujoco_mod.Critic(hidden=(16, 8))
    for i, member in enumerate(members):
        (inner,) = member["params"].values()
        np.testing.assert_allclose(q[i], jax.jit(single.apply)({"params": inner}, obs, action), rtol=1e-6)
    assert not np.allclose(q[0], q[1]), "the two critics must be initialised independently"
    joined = mujoco_mod.join_ensemble(members)
    for a, b in zip(jax.tree.leaves(joined), jax.tree.leaves(params)):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------- flat replay buffer
class Mirror:
    """Feeds a buffer and keeps, for every row ever written, the transition a naive buffer would serve (None for
    the extra row written at an episode end)."""

    def __init__(self, rb):
        self.rb, self.rows = rb, []

    def add(self, obs, action, reward, terminated, truncated, next_obs):
        self.rb.add(obs, action, reward, terminated, truncated, next_obs)
        f32 = np.float32
        self.rows.append((np.asarray(obs, f32), np.asarray(action, f32), f32(reward), float(terminated),
                          np.asarray(next_obs, f32)))
        if terminated or truncated:
            self.rows.append(None)

    def expected_valid(self):
        total = len(self.rows)
        oldest = total - self.rb.size
        return np.array([self.rows[g] is not None and g + 1 < total for g in range(oldest, total)])

    def check(self):
        size = self.rb.size
        assert size == min(len(self.rows), self.rb.capacity)
        expected = self.expected_valid()
        np.testing.assert_array_equal(self.rb.valid(np.arange(size)), expected)
        idx = np.flatnonzero(expected)
        if idx.size == 0:
            return
        got = self.rb.transitions(idx)
        oldest = len(self.rows) - size
        for b, l in enumerate(idx):
            for field, value in zip(got, self.rows[oldest + l]):
                np.testing.assert_array_equal(field[b], value)


def test_synthetic_episodes_match_naive_transitions(mujoco_mod):
    rng = np.random.default_rng(0)
    rb = mujoco_mod.ReplayBuffer(29, obs_dim=3, action_dim=2, seed=0)
    mirror, counter = Mirror(rb), 0
    for episode in range(50):
        length = int(rng.integers(1, 10))
        ends_terminal = bool(rng.integers(0, 2))
        observations = [np.full(3, counter + t, np.float32) for t in range(length + 1)]
        counter += length + 1
        for i in range(length):
            last = i == length - 1
            mirror.add(observations[i], rng.uniform(-1, 1, 2), float(rng.normal()), last and ends_terminal,
                       last and not ends_terminal, observations[i + 1])
            mirror.check()
    assert len(mirror.rows) > 5 * rb.capacity, "the ring must have wrapped several times"


def test_real_env_transitions_with_terminations_and_truncations(mujoco_mod):
    env = gym.wrappers.RecordEpisodeStatistics(gym.make("Hopper-v4", max_episode_steps=15))
    env.action_space.seed(0)
    rb = mujoco_mod.ReplayBuffer(40, env.observation_space.shape[0], env.action_space.shape[0], seed=0)
    mirror, ends = Mirror(rb), {"terminated": 0, "truncated": 0}
    obs, _ = env.reset(seed=0)
    for step in range(300):
        action = mujoco_mod.unscale_action(env.action_space, env.action_space.sample())
        next_obs, reward, terminated, truncated, info = env.step(mujoco_mod.scale_action(env.action_space, action))
        mirror.add(obs, action, reward, terminated, truncated, next_obs)
        if terminated or truncated:
            ends["terminated" if terminated else "truncated"] += 1
            next_obs, _ = env.reset()
        obs = next_obs
        if step % 11 == 0 or terminated or truncated:
            mirror.check()
    env.close()
    assert ends["terminated"] >= 2 and ends["truncated"] >= 2, ends
    assert len(mirror.rows) > rb.capacity


def test_sample_returns_only_valid_transitions(mujoco_mod):
    rng = np.random.default_rng(1)
    rb = mujoco_mod.ReplayBuffer(23, obs_dim=2, action_dim=1, seed=3)
    mirror, counter = Mirror(rb), 0
    for episode in range(12):
        length = int(rng.integers(1, 6))
        observations = [np.full(2, counter + t, np.float32) for t in range(length + 1)]
        counter += length + 1
        for i in range(length):
            last = i == length - 1
            mirror.add(observations[i], [0.5], 0.5, last and episode % 2 == 0, last and episode % 2 == 1, observations[i + 1])
    mirror.add(np.full(2, -1.0, np.float32), [0.5], 0.5, False, False, np.full(2, -2.0, np.float32))  # at the write head
    oldest = len(mirror.rows) - rb.size
    allowed = {(mirror.rows[oldest + l][0].tobytes(), mirror.rows[oldest + l][4].tobytes())
               for l in np.flatnonzero(mirror.expected_valid())}
    obs, actions, rewards, dones, next_obs = rb.sample(512)
    assert obs.shape == (512, 2) and actions.shape == (512, 1) and obs.dtype == np.float32 and dones.dtype == np.float32
    seen = {(o.tobytes(), n.tobytes()) for o, n in zip(obs, next_obs)}
    assert seen <= allowed
    assert len(seen) == len(allowed), "every valid transition should be reachable"
    assert not (obs == -1).any(), "the row at the write head has no next observation yet"


def test_memory_refusal_uses_the_arrays_real_size(mujoco_mod, monkeypatch):
    """check_memory refuses a buffer exactly when its arrays would take more than 90% of the available memory: the
    per-row cost it assumes must be what a row of the buffer really takes (Humanoid's dimensions)."""
    rb = mujoco_mod.ReplayBuffer(1_000, obs_dim=376, action_dim=17)
    needed = 10**6 * rb.nbytes() / rb.capacity
    monkeypatch.setattr(mujoco_mod, "available_memory_bytes", lambda: needed / 0.9 * 1.0001)
    mujoco_mod.ReplayBuffer.check_memory(10**6, 376, 17)
    monkeypatch.setattr(mujoco_mod, "available_memory_bytes", lambda: needed / 0.9 * 0.9999)
    with pytest.raises(mujoco_mod.ArgError, match="--buffer-size 1000000 needs"):
        mujoco_mod.ReplayBuffer.check_memory(10**6, 376, 17)


def test_empty_buffer_cannot_sample(mujoco_mod):
    rb = mujoco_mod.ReplayBuffer(10, obs_dim=2, action_dim=1)
    rb.add(np.zeros(2), [0.0], 0.0, False, False, np.zeros(2))
    with pytest.raises(RuntimeError, match="no valid transition"):
        rb.sample(4)


def test_env_id_check_and_action_scaling(mujoco_mod):
    assert mujoco_mod.check_mujoco_env_id("Humanoid-v4") == (376, 17)
    assert mujoco_mod.check_mujoco_env_id("HalfCheetah-v5") == (17, 6)
    space = gym.spaces.Box(low=np.array([-0.4, 0.0], np.float32), high=np.array([0.4, 2.0], np.float32))
    np.testing.assert_allclose(mujoco_mod.scale_action(space, [-1.0, 1.0]), [-0.4, 2.0])
    np.testing.assert_allclose(mujoco_mod.unscale_action(space, mujoco_mod.scale_action(space, [0.25, -0.5])), [0.25, -0.5])
