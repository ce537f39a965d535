# EauDeSAC: SAC whose critic is a population of K sparse critic pairs that discovers its own sparsity schedule. Docs: README.md
import atexit
import contextlib
import copy
import glob
import hashlib
import json
import os
import pickle
import random
import shutil
import signal
import sys
import time
import types
from dataclasses import dataclass
from functools import partial
from typing import Literal, Optional, Sequence

import flax
import flax.linen as nn
import gymnasium as gym
import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import optax
import tyro
from tensorboard.summary import Writer


@dataclass
class Args:
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """the name of this experiment (W&B and openrlbenchmark group runs by it)"""
    seed: int = 1
    """seed of the experiment (python, numpy, jax and the environment)"""
    track: bool = False
    """if toggled, this experiment will be tracked with Weights and Biases"""
    wandb_project_name: str = "eaudeqn"
    """the wandb's project name"""
    wandb_entity: Optional[str] = None
    """the entity (team) of wandb's project"""
    capture_video: bool = False
    """whether to capture videos of the agent performances (check out `videos` folder)"""
    save_model: bool = False
    """whether to save params and masks into `runs/{run_name}` and evaluate the saved model"""
    run_name: Optional[str] = None
    """the run folder runs/{run_name} (default {env_id}__{exp_name}__{seed}__{unix time}); give one to resume by name"""
    checkpoint_frequency: int = 50_000
    """steps between checkpoints into runs/{run_name}/checkpoint (0: none; a SIGTERM, SIGUSR1 or Ctrl-C still writes one)"""
    checkpoint_replay: bool = True
    """keep the replay buffer in checkpoints (without it a resumed run refills it first and is no longer exact)"""
    resume: Optional[str] = None
    """auto (this run's newest checkpoint, else start fresh) or a checkpoint or run folder; the run goes on exactly"""

    env_id: str = "HalfCheetah-v4"
    """the id of the environment (a gymnasium MuJoCo id, v4 or v5; the default is v4 as in the paper's era)"""
    total_timesteps: int = 1_000_000
    """total environment steps of the experiment (T of Eq. 3)"""
    learning_rate: float = 3e-4
    """the learning rate of the Adam optimizers of the actor, the critics and the temperature"""
    buffer_size: int = 1_000_000
    """the replay memory buffer size (rows: one per env step plus one per episode end)"""
    gamma: float = 0.99
    """the discount factor gamma"""
    tau: float = 0.005
    """target smoothing coefficient: the target critics move this fraction toward member k*'s after every update"""
    batch_size: int = 256
    """the batch size of sample from the replay memory (one batch shared by every member)"""
    learning_starts: int = 100
    """environment steps with uniform random actions before learning starts (one gradient step per env step after)"""
    eval_frequency: int = 10_000
    """environment steps between two evaluations; a value above --total-timesteps leaves only the final one"""
    eval_episodes: int = 10
    """episodes of each evaluation (deterministic mean action, the env's own horizon); 0 disables evaluation"""
    network_size: str = "small"
    """width of both hidden layers of each critic: small (256), medium (512), large (1024) or a positive integer"""
    ent_coef: float = 1.0
    """initial entropy coefficient alpha, learned with SBX's loss alpha * (H + dim(A)); fixed with --no-autotune"""
    autotune: bool = True
    """automatic tuning of the entropy coefficient"""

    population_size: int = 5
    """K, the number of critic pairs (members); 1 runs a single dense critic pair (no tournament, sparsity stays 0)"""
    tournament_size: int = 3
    """members drawn (without replacement) in each tournament that refills the population; at most K"""
    alpha: float = 3.0
    """max multiple of the "reach sparsity 1 at the end of training" step sampled for a copy's new sparsity (Eq. 3)"""
    beta: float = 0.01
    """max fraction of the remaining weights a copy may prune at one population update (Eq. 3)"""
    selection_period: int = 1_000
    """environment steps between two population updates (T_bar of Eq. 3): the lowest-loss member becomes k*"""
    prune_scope: Literal["global", "erk"] = "global"
    """global: one magnitude threshold over all kernels of a member's two critics; erk: per-layer ERK top-k"""
    member_init: Literal["shared", "independent"] = "shared"
    """shared: one dense init copied K times (the target blends relatives only); independent: K inits (docs/mujoco.md)"""


# >>> mujoco: environment
NETWORK_SIZES = {"small": 256, "medium": 512, "large": 1024}


def hidden_width(network_size):
    """Width of both hidden layers of each critic: a preset name or a positive integer given as text."""
    check(network_size in NETWORK_SIZES or (network_size.isdigit() and int(network_size) > 0),
          f"--network-size must be small, medium, large or a positive integer, got {network_size!r}")
    return NETWORK_SIZES[network_size] if network_size in NETWORK_SIZES else int(network_size)


def make_env(env_id, seed, idx, capture_video, run_name):
    """The env as registered (its TimeLimit truncates: targets bootstrap), RecordEpisodeStatistics, no normalisation."""

    def thunk():
        env = gym.make(env_id, render_mode="rgb_array" if capture_video and idx == 0 else None)
        if capture_video and idx == 0:
            env = gym.wrappers.RecordVideo(env, f"videos/{run_name}")
        env = gym.wrappers.RecordEpisodeStatistics(env)
        env.action_space.seed(seed + idx)
        return env

    return thunk


def scale_action(action_space, action):
    """Maps a policy action in [-1, 1] (what the actor outputs and the buffer stores) to the env's bounds."""
    return action_space.low + 0.5 * (np.asarray(action) + 1.0) * (action_space.high - action_space.low)


def unscale_action(action_space, action):
    """Maps an env action (e.g. a uniform warm-up sample) back to [-1, 1]."""
    return 2.0 * (np.asarray(action) - action_space.low) / (action_space.high - action_space.low) - 1.0


def env_core_state(env):
    """The MuJoCo integration state (time, qpos, qvel, actuators, warm start, controls, forces): exact next steps."""
    spec = mujoco.mjtState.mjSTATE_INTEGRATION
    state = np.empty(mujoco.mj_stateSize(env.model, spec))
    mujoco.mj_getState(env.model, env.data, state, spec)
    return state


def set_env_core_state(env, state):
    mujoco.mj_setState(env.model, env.data, state, mujoco.mjtState.mjSTATE_INTEGRATION)
    mujoco.mj_forward(env.model, env.data)


# <<< mujoco: environment


# >>> mujoco: network
class Critic(nn.Module):
    """Q(s, a): a ReLU MLP on the concatenated observation and action."""

    hidden: Sequence[int] = (256, 256)

    @nn.compact
    def __call__(self, obs, action):
        x = jnp.concatenate([obs, action], axis=-1)
        for width in self.hidden:
            x = nn.relu(nn.Dense(width)(x))
        return nn.Dense(1)(x)[..., 0]


class VectorCritic(nn.Module):
    """`n_critics` independent critics, one vmapped module: params stacked on a leading axis, output (n_critics, B)."""

    hidden: Sequence[int] = (256, 256)
    n_critics: int = 2

    @nn.compact
    def __call__(self, obs, action):
        ensemble = nn.vmap(Critic, variable_axes={"params": 0}, split_rngs={"params": True}, in_axes=None, out_axes=0,
                           axis_size=self.n_critics)
        return ensemble(hidden=self.hidden)(obs, action)


class Actor(nn.Module):
    """Tanh-Gaussian policy head: mean and log std (clipped to [-20, 2]) of the pre-tanh Gaussian."""

    action_dim: int
    hidden: Sequence[int] = (256, 256)

    @nn.compact
    def __call__(self, obs):
        x = obs
        for width in self.hidden:
            x = nn.relu(nn.Dense(width)(x))
        mean = nn.Dense(self.action_dim)(x)
        log_std = jnp.clip(nn.Dense(self.action_dim)(x), -20.0, 2.0)
        return mean, log_std


def sample_action(mean, log_std, key):
    """Reparameterised tanh-Gaussian sample in [-1, 1] and its log-probability (stable tanh correction)."""
    u = mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape)
    gaussian = -0.5 * ((u - mean) / jnp.exp(log_std)) ** 2 - log_std - 0.5 * jnp.log(2.0 * jnp.pi)
    log_det = 2.0 * (jnp.log(2.0) - u - jax.nn.softplus(-2.0 * u))
    return jnp.tanh(u), (gaussian - log_det).sum(axis=-1)


def split_ensemble(tree):
    """Stacked ensemble params (or masks) as per-critic trees (kernels ndim 2, biases ndim 1: the masking layout)."""
    n = jax.tree.leaves(tree)[0].shape[0]
    return [jax.tree.map(lambda x: x[i], tree) for i in range(n)]


def join_ensemble(trees):
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


# <<< mujoco: network


# >>> mujoco: replay buffer
class ReplayBuffer:
    """Ring buffer storing each float32 observation once (next_obs: the next row; an episode's end adds a "final" row)."""

    @staticmethod
    def check_memory(capacity, obs_dim, action_dim):
        """Refuses a buffer that would not fit in the memory available now (numpy would fail only once it fills)."""
        row_bytes = 4 * (obs_dim + action_dim) + 4 + 2  # obs, action, reward, 2 flags
        needed, available = capacity * row_bytes, available_memory_bytes()
        check(needed < 0.9 * available,
              f"--buffer-size {capacity} needs {needed / 1e9:.1f} GB of memory but only {available / 1e9:.1f} GB is available")

    def __init__(self, capacity, obs_dim, action_dim, seed=0):
        self.check_memory(capacity, obs_dim, action_dim)
        self.capacity = capacity
        self.obs = np.zeros((capacity, obs_dim), dtype=np.float32)
        self.actions = np.zeros((capacity, action_dim), dtype=np.float32)
        self.rewards = np.zeros(capacity, dtype=np.float32)
        self.terminals = np.zeros(capacity, dtype=bool)
        self.finals = np.zeros(capacity, dtype=bool)  # the row holds the observation after an episode's last action
        self.ptr, self.size = 0, 0
        self.rng = np.random.default_rng(seed)

    def nbytes(self):
        return sum(a.nbytes for a in (self.obs, self.actions, self.rewards, self.terminals, self.finals))

    def _write(self, obs, action, reward, terminal, final):
        p = self.ptr
        self.obs[p], self.actions[p], self.rewards[p] = obs, action, reward
        self.terminals[p], self.finals[p] = terminal, final
        self.ptr, self.size = (p + 1) % self.capacity, min(self.size + 1, self.capacity)

    def add(self, obs, action, reward, terminated, truncated, next_obs):
        """Stores one step; `next_obs` is used only when the episode ends here (otherwise the next add brings it)."""
        self._write(obs, action, reward, terminated, False)
        if terminated or truncated:
            self._write(next_obs, 0.0, 0.0, False, True)

    def _physical(self, logical):
        return (self.ptr - self.size + logical) % self.capacity

    def valid(self, logical):
        """Which logical indices (0 = oldest row) are transitions that may be sampled."""
        logical = np.asarray(logical)
        return (logical >= 0) & (logical + 1 < self.size) & ~self.finals[self._physical(logical)]

    def transitions(self, logical):
        """(obs, actions, rewards, terminals, next_obs) of valid logical indices."""
        p, n = self._physical(np.asarray(logical)), self._physical(np.asarray(logical) + 1)
        return self.obs[p], self.actions[p], self.rewards[p], self.terminals[p].astype(np.float32), self.obs[n]

    def sample(self, batch_size):
        idx = np.empty(0, dtype=np.int64)
        for _ in range(1000):
            cand = self.rng.integers(0, self.size, size=2 * batch_size)
            idx = np.concatenate([idx, cand[self.valid(cand)]])
            if idx.size >= batch_size:
                return self.transitions(idx[:batch_size])
        raise RuntimeError("the replay buffer holds no valid transition to sample")


# <<< mujoco: replay buffer


# >>> shared: masking
def prunable(x):
    """Kernels (ndim > 1) are pruned, biases never."""
    return x.ndim > 1


def erk_densities(shapes, sparsity):
    """ERK densities as jaxpruner: proportional to sum(shape) / prod(shape), (1 - sparsity) of all weights kept, none > 1."""
    sizes = np.array([np.prod(s) for s in shapes], dtype=np.float64)
    raw = np.array([np.sum(s) / np.prod(s) for s in shapes], dtype=np.float64)
    dense = np.zeros(len(shapes), dtype=bool)
    while True:
        budget = (1.0 - sparsity) * sizes.sum() - sizes[dense].sum()
        eps = budget / max((raw * sizes)[~dense].sum(), 1e-12)
        density = np.where(dense, 1.0, eps * raw)
        if not (density > 1.0).any():
            return density
        dense |= density > 1.0


def keep_counts(params, sparsity, scope="global"):
    """Kernel weights kept, max(1, round(N (1 - s))) exactly on the host: one count (global) or one per kernel (erk)."""
    shapes = [x.shape for x in jax.tree.leaves(params) if prunable(x)]
    if scope == "global":
        return [max(1, round(sum(int(np.prod(s)) for s in shapes) * (1.0 - float(sparsity))))]
    return [max(1, round(int(np.prod(s)) * d)) for s, d in zip(shapes, erk_densities(shapes, float(sparsity)))]


@jax.jit
def _top_k_mask(scores, n_keep):
    """True for the n_keep largest scores; ties keep the lower flat index."""
    order = jnp.argsort(-scores, stable=True)
    return jnp.zeros_like(order).at[order].set(jnp.arange(order.size, dtype=order.dtype)) < n_keep  # rank < n_keep


def make_mask(params, sparsity, prev_mask=None, scope="global"):
    """Magnitude mask (bool pytree, biases True) with exactly sparsity's zero count, inside prev_mask (its zeros rank last)."""
    leaves, treedef = jax.tree.flatten(params)
    prev = jax.tree.leaves(prev_mask) if prev_mask is not None else [jnp.ones(x.shape, bool) for x in leaves]
    kernels = [i for i, x in enumerate(leaves) if prunable(x)]
    scores = [jnp.where(prev[i], jnp.abs(leaves[i]), -1.0).ravel() for i in kernels]
    counts = keep_counts(params, sparsity, scope)
    if scope == "global":
        kept = jnp.split(_top_k_mask(jnp.concatenate(scores), counts[0]), np.cumsum([s.size for s in scores])[:-1])
    else:
        kept = [_top_k_mask(s, n) for s, n in zip(scores, counts)]
    masks = [jnp.ones(x.shape, bool) for x in leaves]
    for i, k in zip(kernels, kept):
        masks[i] = k.reshape(leaves[i].shape) & prev[i]
    return jax.tree.unflatten(treedef, masks)


def apply_mask(params, mask):
    return jax.tree.map(lambda p, m: jnp.where(m, p, jnp.zeros_like(p)), params, mask)


def dense_mask(params):
    return jax.tree.map(lambda p: jnp.ones(p.shape, bool), params)


def mask_stats(mask):
    """(sparsity of the kernels, number of unpruned parameters in the whole network) as python numbers."""
    kernels = [m for m in jax.tree.leaves(mask) if prunable(m)]
    kernel_kept = sum(int(m.sum()) for m in kernels)
    bias_total = sum(m.size for m in jax.tree.leaves(mask) if not prunable(m))
    return 1.0 - kernel_kept / sum(m.size for m in kernels), kernel_kept + bias_total


# <<< shared: masking


# >>> shared: population
def tournament(rng, losses, tournament_size):
    """k* = argmin of the cumulated losses, then K - 1 tournaments of `tournament_size` members drawn without replacement,
    each won by its lowest loss. A non-finite loss never wins: such a tournament goes to k*, so no such member is selected
    or copied; with no finite loss, Diverged. Returns (k*, selected)."""
    losses = np.asarray(losses, dtype=np.float64)
    k = losses.size
    finite = np.isfinite(losses)
    if not finite.any():
        raise Diverged(f"no member has a finite cumulated loss (losses {losses.tolist()})")
    fitness = np.where(finite, losses, np.inf)
    k_star = int(np.argmin(fitness))
    selected = [k_star]
    for _ in range(k - 1):
        contestants = rng.choice(k, size=tournament_size, replace=False)
        winner = int(contestants[np.argmin(fitness[contestants])])
        selected.append(winner if finite[winner] else k_star)
    return k_star, selected


def copy_pairs(selected, population_size):
    """Slots nobody won (ascending) receive copies of members won more than once: [(free slot, parent), ...]."""
    counts = np.bincount(selected, minlength=population_size)
    free = [j for j in range(population_size) if counts[j] == 0]
    parents = [j for j in range(population_size) for _ in range(counts[j] - 1)]
    return list(zip(free, parents))


def sample_sparsity(rng, parent_sparsity, step, horizon, period, alpha, beta):
    """Eq. 3: s = s_p + min(xi * period / max(horizon - step, period), beta) * (1 - s_p), with xi ~ U(0, alpha)."""
    xi = rng.uniform(0.0, alpha)
    speed = min(xi * period / max(horizon - step, period), beta)
    return parent_sparsity + speed * (1.0 - parent_sparsity)


def member(tree, k):
    return jax.tree.map(lambda x: x[k], tree)


def finite_members(params):
    """(K,) bool: whether every weight of each member (stacked on the leading axis) is finite."""
    ok = np.ones(jax.tree.leaves(params)[0].shape[0], dtype=bool)
    for x in jax.tree.leaves(params):
        ok &= np.asarray(jnp.isfinite(x).reshape(x.shape[0], -1).all(axis=1))
    return ok


def select_population(rng, losses, pop, sparsities, step, horizon, period, args, optimizer):
    """Population update of the stacked (K, ...) pop "params", "masks", "opt_state": selected members keep all; each free
    slot gets a copy of its parent with a new sparsity (Eq. 3), a magnitude mask inside the parent's and a fresh Adam
    state. Non-finite weights count as a non-finite loss (see tournament). Returns (pop, sparsities, k*, pairs)."""
    losses = np.where(finite_members(pop["params"]), np.asarray(losses, dtype=np.float64), np.nan)
    if not np.isfinite(losses).any():
        raise Diverged(f"step {step}: every member has a non-finite cumulated loss or non-finite weights "
                       f"(losses {losses.tolist()}): training diverged")
    k_star, selected = tournament(rng, losses, args.tournament_size)
    pairs = copy_pairs(selected, len(sparsities))
    if not pairs:
        return pop, sparsities, k_star, pairs
    source = np.arange(len(sparsities))
    for free, parent in pairs:
        source[free] = parent
    pop = jax.tree.map(lambda x: x[source], pop)  # copies are exact copies of their parents
    is_copy = jnp.asarray(source != np.arange(len(sparsities)))
    fresh = jax.vmap(optimizer.init)(pop["params"])
    pop["opt_state"] = jax.tree.map(lambda f, o: jnp.where(is_copy.reshape((-1,) + (1,) * (o.ndim - 1)), f, o),
                                    fresh, pop["opt_state"])
    sparsities = np.array(sparsities, dtype=np.float64)
    for free, parent in pairs:
        sparsities[free] = sample_sparsity(rng, sparsities[parent], step, horizon, period, args.alpha, args.beta)
        mask = make_mask(member(pop["params"], free), sparsities[free], member(pop["masks"], free), args.prune_scope)
        params = apply_mask(member(pop["params"], free), mask)
        pop["masks"] = jax.tree.map(lambda x, y: x.at[free].set(y), pop["masks"], mask)
        pop["params"] = jax.tree.map(lambda x, y: x.at[free].set(y), pop["params"], params)
    return pop, sparsities, k_star, pairs


def sampling_probabilities(losses):
    """p_k proportional to 1 / (L_k + 1e-6), NaN -> 0; uniform if every p is 0."""
    p = jnp.maximum(jnp.nan_to_num(1.0 / (losses + 1e-6), nan=0.0, posinf=0.0, neginf=0.0), 0.0)
    total = p.sum()
    return jnp.where(total > 0, p / jnp.where(total > 0, total, 1.0), jnp.full_like(p, 1.0 / p.size))


# <<< shared: population


# ALGO LOGIC: the state the members share, the population, the update (K critic pairs, then target, actor, temperature)
@flax.struct.dataclass
class SACState:
    """What the K members share: actor, temperature, Polyak target (the masked critic pairs are the population)."""

    actor_params: dict
    actor_opt: optax.OptState
    target_params: dict  # stacked (2, ...) ensemble layout: Polyak average of the selected members, never masked itself
    log_alpha: jax.Array
    alpha_opt: optax.OptState


@partial(jax.jit, static_argnums=(1, 2, 3, 4, 5, 6), static_argnames=("member_init",))
def init_state(key, actor, critic, optimizer, obs_dim, action_dim, population_size, ent_coef=1.0, member_init="shared"):
    """Fresh dense (state, pop): pop = {"params", "masks", "opt_state"} of K critic pairs (one init copied K times, or K
    inits) in the split layout stacked on a K axis; the target a copy of member 0's critics; log alpha = log ent_coef."""
    actor_key, critic_key = jax.random.split(key)
    obs, action = jnp.zeros((1, obs_dim)), jnp.zeros((1, action_dim))
    actor_params = actor.init(actor_key, obs)
    critic_keys = (jnp.stack([critic_key] * population_size) if member_init == "shared"
                   else jax.random.split(critic_key, population_size))
    ensembles = jax.vmap(critic.init, in_axes=(0, None, None))(critic_keys, obs, action)
    params = jax.vmap(split_ensemble)(ensembles)
    pop = {"params": params, "masks": jax.vmap(dense_mask)(params), "opt_state": jax.vmap(optimizer.init)(params)}
    log_alpha = jnp.log(jnp.asarray(ent_coef, jnp.float32))
    return SACState(actor_params=actor_params, actor_opt=optimizer.init(actor_params), log_alpha=log_alpha,
                    alpha_opt=optimizer.init(log_alpha), target_params=join_ensemble(member(params, 0))), pop


def make_update(args, actor, critic, optimizer):
    """Jitted (pop, state, batch, key, k_star, cum_losses) -> (pop, state, cum_losses, metrics): every member's critic
    step against one shared y (L_k += loss_k), Polyak target toward member k_star, then actor and alpha on k_star."""
    target_entropy = -float(actor.action_dim)

    def td_target(state, batch, alpha, key):
        obs, actions, rewards, dones, next_obs = batch
        next_actions, next_log_prob = sample_action(*actor.apply(state.actor_params, next_obs), key)
        q_next = critic.apply(state.target_params, next_obs, next_actions).min(axis=0)
        return rewards + args.gamma * (1.0 - dones) * (q_next - alpha * next_log_prob)

    def member_step(params, opt_state, mask, batch, y):
        """One member's critic step: params, mask and Adam state in the split layout (the critics are joined to apply)."""
        obs, actions = batch[0], batch[1]

        def loss_fn(p):
            q = critic.apply(join_ensemble(p), obs, actions)  # (2, B)
            per_critic = 0.5 * jnp.mean((q - y[None]) ** 2, axis=1)
            return per_critic.sum(), (per_critic, q.mean(axis=1))

        (loss, (per_critic, q_means)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = apply_mask(optax.apply_updates(params, updates), mask)
        return params, opt_state, loss, per_critic, q_means

    def critic_step(pop, state, batch, alpha, key, k_star):
        y = td_target(state, batch, alpha, key)  # once per batch, shared by every member
        params, opt_state, losses, per_critic, q_means = jax.vmap(member_step, in_axes=(0, 0, 0, None, None))(
            pop["params"], pop["opt_state"], pop["masks"], batch, y)
        target_params = optax.incremental_update(join_ensemble(member(params, k_star)), state.target_params, args.tau)
        metrics = {"qf1_loss": per_critic[:, 0].mean(), "qf2_loss": per_critic[:, 1].mean(), "qf_loss": losses.mean(),
                   "qf1_values": q_means[:, 0].mean(), "qf2_values": q_means[:, 1].mean()}
        return dict(pop, params=params, opt_state=opt_state), state.replace(target_params=target_params), losses, metrics

    def actor_step(state, critic_params, obs, alpha, key):
        def loss_fn(p):
            actions, log_prob = sample_action(*actor.apply(p, obs), key)
            q = critic.apply(critic_params, obs, actions).min(axis=0)
            return jnp.mean(alpha * log_prob - q), -log_prob.mean()

        (loss, entropy), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.actor_params)
        updates, actor_opt = optimizer.update(grads, state.actor_opt, state.actor_params)
        return state.replace(actor_params=optax.apply_updates(state.actor_params, updates), actor_opt=actor_opt), loss, entropy

    def alpha_step(state, entropy):
        # SBX's temperature loss: alpha * (H - H_target) with alpha = exp(log_alpha), so d/dlog_alpha = alpha * (H - H_target)
        loss, grad = jax.value_and_grad(lambda log_alpha: jnp.exp(log_alpha) * (entropy - target_entropy))(state.log_alpha)
        if not args.autotune:
            return state, loss
        updates, alpha_opt = optimizer.update(grad, state.alpha_opt, state.log_alpha)
        return state.replace(log_alpha=optax.apply_updates(state.log_alpha, updates), alpha_opt=alpha_opt), loss

    def update(pop, state, batch, key, k_star, cum_losses):
        critic_key, actor_key = jax.random.split(key)
        alpha = jnp.exp(state.log_alpha)
        pop, state, losses, metrics = critic_step(pop, state, batch, alpha, critic_key, k_star)
        selected = join_ensemble(member(pop["params"], k_star))  # the updated critics of member k*
        state, actor_loss, entropy = actor_step(state, selected, batch[0], alpha, actor_key)
        state, alpha_loss = alpha_step(state, entropy)
        return pop, state, cum_losses + losses, dict(metrics, actor_loss=actor_loss, alpha=alpha, alpha_loss=alpha_loss)

    return jax.jit(update, donate_argnums=(0, 1))


# >>> mujoco: online sac
def make_act(actor):
    """Jitted policies in [-1, 1]: explore(params, obs, key) -> (sample, key); exploit(params, obs) -> tanh(mean)."""

    def explore(params, obs, key):
        key, sample_key = jax.random.split(key)
        return sample_action(*actor.apply(params, obs), sample_key)[0], key

    return jax.jit(explore), jax.jit(lambda params, obs: jnp.tanh(actor.apply(params, obs)[0]))


def episode_returns(env, exploit, actor_params, episodes, seed):
    """Raw returns of `episodes` episodes of the mean action; the first reset is seeded (the same initial states)."""
    obs, _ = env.reset(seed=seed)
    returns = []
    while len(returns) < episodes:
        action = np.asarray(exploit(actor_params, obs[None].astype(np.float32))[0])
        obs, _, terminated, truncated, info = env.step(scale_action(env.action_space, action))
        if terminated or truncated:
            returns.append(float(info["episode"]["r"]))
            obs, _ = env.reset()
    return returns


def evaluate(model_path, make_env, env_id, eval_episodes, run_name, Model, capture_video=False, seed=1):
    """Runs eval_episodes episodes of the saved actor's deterministic (mean) action; returns their raw returns."""
    env = make_env(env_id, seed, 0, capture_video, run_name)()
    actor = Model(action_dim=int(np.prod(env.action_space.shape)))
    template = actor.init(jax.random.key(0), jnp.zeros((1, *env.observation_space.shape)))
    with open(model_path, "rb") as f:
        saved = flax.serialization.msgpack_restore(f.read())
    actor_params = flax.serialization.from_state_dict(template, saved["actor_params"])
    returns = episode_returns(env, make_act(actor)[1], actor_params, eval_episodes, seed)
    env.close()
    return returns


# <<< mujoco: online sac


def main(args):
    # INIT RUN: the run folder (a resumed run goes on in its own), logging, seeding
    run_name, checkpoint = start_run(args)
    logger = Logger(args, run_name, checkpoint)
    random.seed(args.seed)
    np.random.seed(args.seed)
    key, init_key = jax.random.split(jax.random.key(args.seed))

    # INIT ENV: the training env, and an evaluation env (reset with the seed at every evaluation: nothing to save)
    env = make_env(args.env_id, args.seed, 0, args.capture_video, run_name)()
    eval_env = make_env(args.env_id, args.seed, 1, False, run_name)()
    assert isinstance(env.action_space, gym.spaces.Box), "only continuous action space is supported"
    obs_dim, action_dim = env.observation_space.shape[0], int(np.prod(env.action_space.shape))
    obs, _ = env.reset(seed=args.seed)

    # INIT POPULATION: K dense critic pairs with their own masks and Adam states; shared actor, temperature, Polyak target
    K, width = args.population_size, hidden_width(args.network_size)
    actor, critic = Actor(action_dim=action_dim), VectorCritic(hidden=(width, width))
    optimizer = optax.adam(learning_rate=args.learning_rate)
    sac, pop = init_state(init_key, actor, critic, optimizer, obs_dim, action_dim, K, args.ent_coef,
                          member_init=args.member_init)
    update, (explore, exploit) = make_update(args, actor, critic, optimizer), make_act(actor)
    actor_size = sum(x.size for x in jax.tree.leaves(sac.actor_params))

    # TRAINING STATE: what a checkpoint holds (sparsities: the sampled ones of Eq. 3; cum_losses: L_k since selection)
    network_sparsity, nonzero = mask_stats(member(pop["masks"], 0))
    s = TrainState(step=0, sac=sac, pop=pop, sparsities=np.zeros(K), cum_losses=jnp.zeros(K), k_star=0,
                   rng=np.random.default_rng(args.seed), key=key, env=env, obs=obs,
                   rb=ReplayBuffer(args.buffer_size, obs_dim, action_dim, seed=args.seed), learn_after=args.learning_starts,
                   member_sparsity=[0.0] * K, network_sparsity=network_sparsity, nonzero=nonzero, last_return=None,
                   metrics=None, eval_return=None)
    restore(s, checkpoint)
    if checkpoint and not checkpoint[2]:  # no replay buffer in the checkpoint: the episode goes on, the buffer restarts
        s.rb.ptr, s.rb.size, s.learn_after = 0, 0, s.step + args.learning_starts
        print(f"the checkpoint holds no replay buffer: refilling it, training again after step {s.learn_after:,}")
    checkpointer, progress = Checkpointer(args, logger, args.total_timesteps), Progress(args.total_timesteps, s.step)

    # TRAINING LOOP
    for global_step in range(s.step + 1, args.total_timesteps + 1):
        s.step = global_step
        # ALGO LOGIC: uniform random actions until learning starts, then the actor's samples (in [-1, 1])
        if global_step <= s.learn_after:
            action = unscale_action(s.env.action_space, s.env.action_space.sample())
        else:
            action, s.key = explore(s.sac.actor_params, s.obs[None].astype(np.float32), s.key)
            action = np.asarray(action[0])

        # TRY NOT TO MODIFY: execute the game and log data.
        next_obs, reward, terminated, truncated, info = s.env.step(scale_action(s.env.action_space, action))
        s.rb.add(s.obs, action, reward, terminated, truncated, next_obs)
        if terminated or truncated:
            s.last_return = float(info["episode"]["r"])
            logger.scalars(global_step, **{"charts/episodic_return": s.last_return,
                                           "charts/episodic_length": int(info["episode"]["l"])})
            next_obs, _ = s.env.reset()
        s.obs = next_obs

        # ALGO LOGIC: training: every member's critic step against one shared target, then actor and temperature on k*
        if global_step > s.learn_after:
            s.key, update_key = jax.random.split(s.key)
            s.pop, s.sac, s.cum_losses, s.metrics = update(s.pop, s.sac, s.rb.sample(args.batch_size), update_key,
                                                           s.k_star, s.cum_losses)
            if global_step % args.selection_period == 0:
                # ALGO LOGIC: the best member becomes k* (the actor's critic, the target's source); tournaments refill
                host_losses = np.asarray(jax.device_get(s.cum_losses))
                s.pop, s.sparsities, s.k_star, pairs = select_population(
                    s.rng, host_losses, s.pop, s.sparsities, global_step, args.total_timesteps, args.selection_period,
                    args, optimizer)
                s.cum_losses = jnp.zeros(K)
                s.member_sparsity = [mask_stats(member(s.pop["masks"], k))[0] for k in range(K)]
                s.network_sparsity, s.nonzero = mask_stats(member(s.pop["masks"], s.k_star))
                logger.scalars(global_step, **{f"population/loss_{k}": host_losses[k] for k in range(K)},
                               **{"population/selected": s.k_star, "population/n_copies": len(pairs)})

        # ALGO LOGIC: evaluation of the mean action (its time does not count in charts/SPS)
        if args.eval_episodes > 0 and global_step % args.eval_frequency == 0 and global_step < args.total_timesteps:
            with progress.paused():
                s.eval_return = float(np.mean(episode_returns(eval_env, exploit, s.sac.actor_params, args.eval_episodes,
                                                              args.seed)))
            logger.scalars(global_step, **{"eval/episodic_return": s.eval_return})

        # TRY NOT TO MODIFY: metrics every 100 steps, the progress line, checkpoints (periodic, or on a signal)
        if global_step % 100 == 0:
            values = {"charts/SPS": progress.sps(global_step), "sparsity/online": float(np.mean(s.member_sparsity)),
                      "sparsity/network": s.network_sparsity, "charts/nonzero_params": s.nonzero + actor_size,
                      **{f"sparsity/member_{k}": s.member_sparsity[k] for k in range(K)}}
            if s.metrics is not None:
                values.update({f"losses/{k}": v for k, v in jax.device_get(s.metrics).items()})
            logger.scalars(global_step, **values)
            progress.update(global_step, SPS=values["charts/SPS"],
                            **{"return": s.last_return, "eval": s.eval_return, "sparsity": s.network_sparsity})
        checkpointer(s)
    progress.update(args.total_timesteps, final=True,
                    **{"return": s.last_return, "eval": s.eval_return, "sparsity": s.network_sparsity})

    # SAVE AND EVALUATE member k*'s critics (per-critic trees) with its masks and the actor; evaluate the saved file
    if args.save_model:
        model_path = f"runs/{run_name}/{args.exp_name}.cleanrl_model"
        with open(model_path, "wb") as f:
            f.write(flax.serialization.to_bytes({"params": member(s.pop["params"], s.k_star),
                                                 "masks": member(s.pop["masks"], s.k_star),
                                                 "actor_params": s.sac.actor_params}))
        print(f"model saved to {model_path} (member k* = {s.k_star}, the last selected critic pair, and the actor)")
    if args.eval_episodes > 0:
        if args.save_model:
            episodic_returns = evaluate(model_path, make_env, args.env_id, args.eval_episodes, f"{run_name}-eval", Actor,
                                        capture_video=args.capture_video, seed=args.seed)
        else:
            episodic_returns = episode_returns(eval_env, exploit, s.sac.actor_params, args.eval_episodes, args.seed)
        logger.scalars(args.total_timesteps, **{"eval/episodic_return": float(np.mean(episodic_returns))})
        print(f"eval/episodic_return {np.mean(episodic_returns):.1f} (mean of {len(episodic_returns)} episodes)")
    s.env.close()
    eval_env.close()


# ======================================================================================================================
# INFRASTRUCTURE: flag checks, logging and progress, checkpoint / resume / preemption. Nothing below changes what is
# computed; the block is identical in every script (tests/test_layout.py). A reader may stop here.
# ======================================================================================================================
# >>> shared: infrastructure
SCRIPT = os.path.basename(__file__)
EXIT_PREEMPTED = 75  # sysexits' EX_TEMPFAIL: a checkpoint was written on a signal; rerun with --resume auto to go on
# flags that may differ between a run and its resumption (they do not change what is computed)
OPERATIONAL_FLAGS = ("track", "wandb_project_name", "wandb_entity", "capture_video", "save_model", "checkpoint_frequency",
                     "checkpoint_replay", "resume", "run_name")
# the state of each gymnasium wrapper the scripts use, by class name (the core env's state is the family's env_core_state)
WRAPPER_STATE = {"TimeLimit": ("_elapsed_steps",), "OrderEnforcing": ("_has_reset",), "PassiveEnvChecker": (),
                 "RecordEpisodeStatistics": ("episode_returns", "episode_lengths", "episode_count", "episode_start_time",
                                             "return_queue", "length_queue", "time_queue"),
                 "AtariPreprocessing": ("obs_buffer", "game_over", "lives"), "FrameStackObservation": ("obs_queue",),
                 "RecordVideo": ()}


class OneLineError(Exception):
    """Printed as one `error:` line, without a traceback (the excepthook of parse_or_exit), exit status 1."""

    one_line = True  # an error class of a family block (DatasetError) that sets it is printed the same way


class ArgError(OneLineError, ValueError):
    """A flag value that cannot run: exit status 2, before anything is created."""


class CheckpointError(OneLineError):
    """A checkpoint that cannot be written or resumed; nothing is touched."""


class Diverged(OneLineError, RuntimeError):
    """Non-finite losses or weights (of every member, in a population)."""


def check(ok, message):
    if not ok:
        raise ArgError(message)


def check_ranges(args, **rules):
    """Declarative flag checks: rules ">= x", "> x", "in [a, b]", "in (a, b]"...; ArgError "--flag must be RULE, got V"."""
    for name, rule in rules.items():
        v = getattr(args, name)
        if rule.startswith("in "):
            lo, hi = (float(x) for x in rule[4:-1].split(","))
            ok = (lo <= v if rule[3] == "[" else lo < v) and (v <= hi if rule[-1] == "]" else v < hi)
        else:
            ok = v >= float(rule[3:]) if rule.startswith(">=") else v > float(rule[2:])
        check(ok, f"--{name.replace('_', '-')} must be {rule}, got {v}")


def check_run_args(args):
    """Checks every script shares: seed, run folder, resume target, W&B login."""
    check(0 <= args.seed < 2**32, f"--seed must be in [0, 2**32), got {args.seed}")
    check_ranges(args, checkpoint_frequency=">= 0")
    check(args.run_name is None or (args.run_name and "/" not in args.run_name and args.run_name not in (".", "..")),
          f"--run-name must be a folder name (no '/'), got {args.run_name!r}")
    check(args.resume is None or args.resume == "auto" or os.path.exists(args.resume),
          f"--resume {args.resume}: no such checkpoint or run folder (use auto, or a path)")
    if args.track and os.environ.get("WANDB_MODE") not in ("offline", "disabled", "dryrun"):
        import wandb

        try:
            wandb.login(verify=False)
        except wandb.errors.UsageError:
            raise ArgError("--track: not logged in to W&B; run `wandb login` (or set WANDB_API_KEY), or log offline "
                           "with WANDB_MODE=offline") from None


def available_memory_bytes():
    """Memory this process can still allocate without swapping (MemAvailable on Linux)."""
    try:
        return next(int(line.split()[1]) * 1024 for line in open("/proc/meminfo") if line.startswith("MemAvailable:"))
    except (OSError, StopIteration):
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def parse_or_exit(args_cls, validate, argv=None):
    """tyro's CLI, validated (a bad value: one `error:` line, status 2); then errors with `one_line` print one line."""
    args = tyro.cli(args_cls, args=argv)
    try:
        validate(args)
    except ArgError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    sys.excepthook = lambda kind, e, tb: (print(f"error: {e}", file=sys.stderr) if getattr(kind, "one_line", False)
                                          else sys.__excepthook__(kind, e, tb))
    return args


def stop_if_not_finite(step, what, values, run_dir):
    """Raises Diverged on a NaN or infinite loss or weight, before it reaches a checkpoint."""
    if not all(np.all(np.isfinite(np.asarray(v))) for v in jax.tree.leaves(values)):
        kept = complete_checkpoints(run_dir)
        raise Diverged(f"non-finite {what} at step {step:,}: the run stops here; last checkpoint kept: "
                       f"{kept[-1] if kept else 'none'}")


class Progress:
    """A status line (redrawn on a terminal, else one a minute and at the end); steps/s for charts/SPS, pauses apart."""

    def __init__(self, total, start=0, stream=sys.stderr):
        self.total, self.start, self.stream, self.sps_step = total, start, stream, start
        self.tty = hasattr(stream, "isatty") and stream.isatty()
        self.started = self.last = self.sps_time = time.time()

    def sps(self, step):
        now, last_step, last_time = time.time(), self.sps_step, self.sps_time
        self.sps_step, self.sps_time = step, now
        return int((step - last_step) / max(now - last_time, 1e-9))

    @contextlib.contextmanager
    def paused(self):
        """Time spent in `with progress.paused():` (evaluation, data loading) counts in no steps/s."""
        start = time.time()
        yield
        self.started, self.sps_time = self.started + time.time() - start, self.sps_time + time.time() - start

    def update(self, step, final=False, **fields):
        now = time.time()
        if final or now - self.last >= (0.5 if self.tty else 60.0):
            self.last = now
            fields = {"SPS": int((step - self.start) / max(now - self.started, 1e-9)), **fields} if final else fields
            line = " | ".join([f"{step:,}/{self.total:,} steps ({100.0 * step / self.total:.1f}%)"] + [
                f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in fields.items() if v is not None])
            self.stream.write("\r" + line[:200].ljust(120) + ("\n" if final else "") if self.tty else line + "\n")
            self.stream.flush()


class Logger:
    """Scalars to runs/{run_name} (TensorBoard, W&B with --track) and args.json, closed at exit. On resume the event
    files are cut back to the checkpoint (no point logged twice) and the same W&B run goes on."""

    def __init__(self, args, run_name, checkpoint=None):
        self.dir, self.wandb_id = f"runs/{run_name}", None
        os.makedirs(self.dir, exist_ok=True)
        if checkpoint is not None:
            kept, self.wandb_id = checkpoint[1]["logger"]["event_files"], checkpoint[1]["logger"]["wandb_id"]
            for p in glob.glob(os.path.join(self.dir, "events.out.tfevents.*")):
                size = kept.get(os.path.basename(p))
                if size is None:
                    os.remove(p)
                elif os.path.getsize(p) > size:
                    os.truncate(p, size)
        if args.track:
            import wandb

            self.wandb_id = wandb.init(project=args.wandb_project_name, entity=args.wandb_entity, sync_tensorboard=True,
                                       config=vars(args), name=run_name, monitor_gym=True, save_code=True,
                                       id=self.wandb_id, resume="allow" if self.wandb_id else None).id
        self.writer = Writer(self.dir)
        with open(f"{self.dir}/args.json", "w") as f:
            json.dump(vars(args), f, indent=2)
        atexit.register(self.writer.close)

    def scalars(self, step, **values):
        for tag, value in values.items():
            self.writer.add_scalar(tag, float(value), int(step))

    def state(self):
        self.writer.flush()
        files = glob.glob(os.path.join(self.dir, "events.out.tfevents.*"))
        return {"event_files": {os.path.basename(p): os.path.getsize(p) for p in files}, "wandb_id": self.wandb_id}


class TrainState(types.SimpleNamespace):
    """All a checkpoint holds, made once in main: jax pytrees (keys too), host values, numpy Generators, gymnasium envs,
    replay buffers (numpy arrays saved apart; one with state()/restore() saves itself). A new variable is a field."""


def _kind(x):
    if isinstance(x, jax.Array):
        return "key" if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else "array"
    return "host"


def _rng_state(x):
    return copy.deepcopy(x.bit_generator.state if isinstance(x, np.random.Generator) else x)


def snapshot(s, with_arrays=True):
    """(state, arrays): every field of `s` and the global RNGs, picklable; buffers' numpy arrays apart (.npy files)."""
    fields, kinds, arrays = {}, {}, {}
    for name, v in vars(s).items():
        if isinstance(v, gym.Env):  # each wrapper's state, the core simulator's (env_core_state), both RNGs
            layers, e = [], v
            while isinstance(e, gym.Wrapper):
                if type(e).__name__ not in WRAPPER_STATE:
                    raise CheckpointError(f"cannot checkpoint an env wrapped in {type(e).__name__} (see WRAPPER_STATE)")
                layers.append({a: copy.deepcopy(getattr(e, a)) for a in WRAPPER_STATE[type(e).__name__]})
                e = e.env
            fields[name] = {"wrappers": layers, "core": env_core_state(e), "np_random": _rng_state(e.np_random),
                            "action_space": _rng_state(v.action_space.np_random)}
        elif hasattr(v, "restore"):
            fields[name] = v.state()
        elif hasattr(v, "sample"):  # a replay buffer: its numpy arrays are saved apart
            held = slice(v.size) if v.size < v.capacity else slice(None)  # only the rows it holds, before a ring wraps
            fields[name] = {k: _rng_state(x) for k, x in vars(v).items() if not isinstance(x, np.ndarray)}
            arrays.update({f"{name}.{k}": x[held] for k, x in vars(v).items() if isinstance(x, np.ndarray) and with_arrays})
        else:
            kinds[name] = jax.tree.map(_kind, v)
            fields[name] = jax.tree.map(lambda x: np.asarray(jax.random.key_data(x)) if _kind(x) == "key" else
                                        np.asarray(x) if _kind(x) == "array" else _rng_state(x), v)
    return {"fields": fields, "kinds": kinds, "random": random.getstate(), "np_random": np.random.get_state()}, arrays


def restore(s, checkpoint):
    """Loads a checkpoint's (meta, state, arrays) into `s`; returns `s` (unchanged without a checkpoint)."""
    if checkpoint is None:
        return s
    _, saved, arrays = checkpoint
    if sorted(saved["fields"]) != sorted(vars(s)):
        raise CheckpointError(f"the checkpoint holds {sorted(saved['fields'])}, this script's state {sorted(vars(s))}")
    for name, v in saved["fields"].items():
        current = getattr(s, name)
        if isinstance(current, gym.Env):
            e = current
            for layer in v["wrappers"]:
                vars(e).update(copy.deepcopy(layer))
                e = e.env
            set_env_core_state(e, v["core"])
            e.np_random.bit_generator.state = v["np_random"]
            current.action_space.np_random.bit_generator.state = v["action_space"]
        elif hasattr(current, "restore"):
            current.restore(v)
        elif isinstance(current, np.random.Generator):
            current.bit_generator.state = v
        elif name in saved["kinds"]:
            setattr(s, name, jax.tree.map(lambda kind, x: jax.random.wrap_key_data(jnp.asarray(x)) if kind == "key" else
                                          jnp.asarray(x) if kind == "array" else x, saved["kinds"][name], v))
        else:  # a replay buffer
            for k, x in v.items():
                if isinstance(getattr(current, k, None), np.random.Generator):
                    getattr(current, k).bit_generator.state = x
                else:
                    setattr(current, k, x)
            for k, x in arrays.items():
                if k.startswith(name + "."):
                    getattr(current, k[len(name) + 1:])[:len(x)] = x  # rows past a saved prefix stay zeros
    random.setstate(saved["random"])
    np.random.set_state(saved["np_random"])
    return s


def _synced(path, write=None):
    """Writes the file `path` with write(f) (when given), then fsyncs it (or the folder `path`): it survives a crash."""
    if write is not None:
        with open(path, "wb") as f:
            write(f)
    fd = os.open(path, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)


def _sha256(path):
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def complete_checkpoints(run_dir):
    """A run folder's complete checkpoints (renamed from tmp_... to step_{12 digits}), oldest first."""
    paths = glob.glob(os.path.join(run_dir, "checkpoint", "step_*"))
    return sorted(p for p in paths if len(os.path.basename(p)) == 17 and os.path.basename(p)[5:].isdigit())


def save_checkpoint(run_dir, step, script, args, state, arrays):
    """Writes {run_dir}/checkpoint/step_{step} (state.pkl, .npy arrays, meta.json with flags and SHA-256s) in a tmp
    folder, fsynced, then renamed: visible only when complete; older ones deleted. Returns (path, bytes, seconds)."""
    start, root = time.time(), os.path.join(run_dir, "checkpoint")
    final, tmp = os.path.join(root, f"step_{step:012d}"), os.path.join(root, f"tmp_{step:012d}_{os.getpid()}")
    os.makedirs(tmp, exist_ok=True)
    _synced(os.path.join(tmp, "state.pkl"), lambda f: pickle.dump(state, f, protocol=5))
    for name, value in arrays.items():
        _synced(os.path.join(tmp, f"{name}.npy"), lambda f: np.save(f, value, allow_pickle=False))
    meta = {"format": 2, "script": script, "step": step, "args": vars(args), "files": {
        n: {"bytes": os.path.getsize(os.path.join(tmp, n)), "sha256": _sha256(os.path.join(tmp, n))}
        for n in ["state.pkl", *(f"{name}.npy" for name in arrays)]}}
    _synced(os.path.join(tmp, "meta.json"), lambda f: f.write(json.dumps(meta, indent=1).encode()))
    _synced(tmp)
    if os.path.exists(final):  # the same step again (a signal right after a resume): the state is the same
        shutil.rmtree(tmp)
    else:
        os.rename(tmp, final)
        _synced(root)
    for old in complete_checkpoints(run_dir)[:-1] + glob.glob(os.path.join(root, "tmp_*")):
        shutil.rmtree(old, ignore_errors=True)
    return final, sum(m["bytes"] for m in meta["files"].values()), time.time() - start


def find_checkpoint(resume, run_dir_pattern):
    """--resume's checkpoint: auto = the newest of the newest matching run folder that has one (None: start fresh);
    else a checkpoint folder, or a run folder's newest."""
    if resume == "auto":
        runs = [d for d in sorted(glob.glob(run_dir_pattern), key=os.path.getmtime, reverse=True) if complete_checkpoints(d)]
        return complete_checkpoints(runs[0])[-1] if runs else None
    if os.path.isfile(os.path.join(resume, "meta.json")):
        return resume.rstrip("/")
    if not (os.path.isdir(resume) and complete_checkpoints(resume)):
        raise CheckpointError(f"--resume {resume}: no complete checkpoint there (a checkpoint folder holds meta.json; a "
                              f"run folder holds checkpoint/step_*)")
    return complete_checkpoints(resume)[-1]


def read_checkpoint(path, script, args):
    """(meta, state, arrays) of a complete, intact checkpoint of `script` with compatible flags; else CheckpointError."""
    meta_path = os.path.join(path, "meta.json")
    try:
        with open(meta_path) as f:
            meta = json.load(f)
        files, saved, now = meta["files"], meta.get("args", {}), vars(args)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{meta_path}: unreadable checkpoint metadata ({type(e).__name__}: {e})") from None
    if meta.get("format") != 2:
        raise CheckpointError(f"{meta_path}: checkpoint format {meta.get('format')}, this script reads format 2 (an older "
                              f"layout of the training state); start the run again without --resume")
    if meta.get("script") != script:
        raise CheckpointError(f"{meta_path}: a checkpoint of {meta.get('script')}, not of {script}")
    differ = sorted(k for k in set(saved) | set(now) if k not in OPERATIONAL_FLAGS and saved.get(k) != now.get(k))
    if differ:
        raise CheckpointError(f"{meta_path}: flags differ from the checkpoint's: " +
                              ", ".join(f"--{k.replace('_', '-')} {saved.get(k)!r} (now {now.get(k)!r})" for k in differ))
    for name, info in files.items():
        file = os.path.join(path, name)
        if not os.path.isfile(file) or os.path.getsize(file) != info["bytes"] or _sha256(file) != info["sha256"]:
            raise CheckpointError(f"{file}: missing, truncated or corrupt (size or SHA-256 differs from meta.json)")
    with open(os.path.join(path, "state.pkl"), "rb") as f:
        state = pickle.load(f)
    arrays = {name[:-len(".npy")]: np.load(os.path.join(path, name), mmap_mode="r", allow_pickle=False)
              for name in files if name.endswith(".npy")}  # memory-mapped: copied once, into the buffer
    return meta, state, arrays


def start_run(args):
    """(run_name, checkpoint): --resume's run and its loaded (meta, state, arrays), else a fresh run name and None."""
    pattern = f"runs/{args.run_name}" if args.run_name else f"runs/{args.env_id}__{args.exp_name}__{args.seed}__*"
    path = find_checkpoint(args.resume, pattern) if args.resume is not None else None
    if path is None:
        return args.run_name or f"{args.env_id}__{args.exp_name}__{args.seed}__{int(time.time())}", None
    # the run folder is runs/{run_name}, and Atari run names hold a folder ("ALE/Pong-v5__...")
    run_name = os.path.relpath(os.path.dirname(os.path.dirname(os.path.abspath(path))), os.path.abspath("runs"))
    if run_name.startswith(".."):
        raise CheckpointError(f"{path}: not under ./runs; resume from the folder that holds the run's runs/")
    checkpoint = read_checkpoint(path, SCRIPT, args)
    print(f"resuming {run_name} at step {checkpoint[0]['step']:,} from {path}", flush=True)
    return run_name, checkpoint


class Checkpointer:
    """checkpointer(s) saves the TrainState every --checkpoint-frequency steps, and on SIGTERM/SIGUSR1 (SLURM) or Ctrl-C
    (a second one stops at once), after which it exits with EXIT_PREEMPTED. check(s) runs before each save."""

    def __init__(self, args, logger, total, check=None):
        self.args, self.logger, self.total, self.check, self.signal = args, logger, total, check, None
        for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT):
            signal.signal(sig, self.handle)

    def handle(self, signum, frame):
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signal.Signals(signum).name
        print(f"{self.signal}: writing a checkpoint at the next step boundary, then exiting", file=sys.stderr, flush=True)

    def __call__(self, s):
        every = self.args.checkpoint_frequency
        if self.signal or (every and s.step % every == 0 and s.step < self.total):
            if self.check is not None:
                self.check(s)
            state, arrays = snapshot(s, getattr(self.args, "checkpoint_replay", True))
            path, size, seconds = save_checkpoint(self.logger.dir, s.step, SCRIPT, self.args,
                                                  dict(state, logger=self.logger.state()), arrays)
            print(f"checkpoint {path}: {size / 1e6:.1f} MB in {seconds:.1f} s", flush=True)
            if self.signal:
                sys.exit(EXIT_PREEMPTED)


# <<< shared: infrastructure


# >>> mujoco: online sac checks
def check_mujoco_env_id(env_id):
    """Refuses ids that are not MuJoCo envs with flat observations and bounded Box actions; returns their sizes."""
    atari = env_id.startswith("ALE/") or "ale_py" in str(getattr(gym.registry.get(env_id), "entry_point", ""))
    check(not atari, f"--env-id {env_id!r} is an Atari id; the Atari scripts are eaudedqn_atari_jax.py / "
                     "polyprune_dqn_atari_jax.py (online) or eaudecql_atari_jax.py / polyprune_cql_atari_jax.py (offline)")
    check(env_id in gym.registry,
          f"--env-id {env_id!r} is not a registered gymnasium environment (MuJoCo ids look like Hopper-v4)")
    check("mujoco" in str(gym.spec(env_id).entry_point), f"--env-id {env_id!r} is not a MuJoCo environment")
    try:
        env = gym.make(env_id)
    except Exception as e:  # e.g. the v2/v3 ids, which need the retired mujoco-py
        first_line = (str(e).splitlines() or [type(e).__name__])[0]
        check(False, f"--env-id {env_id!r} cannot be created (use a v4 or v5 id): {first_line}")
    obs_space, action_space = env.observation_space, env.action_space
    env.close()
    check(isinstance(action_space, gym.spaces.Box) and np.isfinite(action_space.low).all()
          and np.isfinite(action_space.high).all(), f"--env-id {env_id!r} has no bounded continuous (Box) action space")
    check(isinstance(obs_space, gym.spaces.Box) and len(obs_space.shape) == 1,
          f"--env-id {env_id!r} has no flat (1-D Box) observation space")
    return obs_space.shape[0], int(np.prod(action_space.shape))


def check_online_sac_args(args):
    """Checks shared by the SAC scripts (SAC hyperparameters, evaluation, environment, replay)."""
    check_ranges(args, total_timesteps=">= 1", learning_rate="> 0", gamma="in [0, 1]", tau="in (0, 1]", batch_size=">= 1",
                 buffer_size=">= 2", learning_starts=">= 1", eval_frequency=">= 1", eval_episodes=">= 0", ent_coef="> 0")
    check(args.buffer_size >= args.batch_size, f"--batch-size {args.batch_size} is larger than --buffer-size {args.buffer_size}")
    check(args.learning_starts < args.total_timesteps,
          f"--learning-starts {args.learning_starts} is not below --total-timesteps {args.total_timesteps}: nothing would be learned")
    hidden_width(args.network_size)
    obs_dim, action_dim = check_mujoco_env_id(args.env_id)
    ReplayBuffer.check_memory(args.buffer_size, obs_dim, action_dim)


# <<< mujoco: online sac checks


def validate(args):
    check_run_args(args)
    check_online_sac_args(args)
    check_ranges(args, population_size=">= 1")
    check(args.population_size == 1 or 1 <= args.tournament_size <= args.population_size,
          f"--tournament-size must be between 1 and --population-size ({args.population_size}), got {args.tournament_size}")
    check_ranges(args, alpha=">= 0", beta="in [0, 1]", selection_period=">= 1")


if __name__ == "__main__":
    main(parse_or_exit(Args, validate))
