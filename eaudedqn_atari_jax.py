# EauDeDQN: DQN whose population of sparse online networks discovers its own sparsity schedule (Eau De Q-Network). Docs: README.md
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
from typing import Literal, Optional

import ale_py
import flax
import flax.linen as nn
import gymnasium as gym
import jax
import jax.numpy as jnp
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
    checkpoint_frequency: int = 250_000
    """steps between checkpoints into runs/{run_name}/checkpoint (0: none; a SIGTERM, SIGUSR1 or Ctrl-C still writes one)"""
    checkpoint_replay: bool = True
    """keep the replay buffer in checkpoints (without it a resumed run refills it first and is no longer exact)"""
    resume: Optional[str] = None
    """auto (this run's newest checkpoint, else start fresh) or a checkpoint or run folder; the run goes on exactly"""

    env_id: str = "ALE/Pong-v5"
    """the id of the environment (a gymnasium ALE v5 id)"""
    total_timesteps: int = 10_000_000
    """total environment steps of the experiment (agent steps, 4 frames each; 10M = 40M frames)"""
    learning_rate: float = 6.25e-5
    """the learning rate of the Adam optimizer"""
    adam_eps: float = 1.5e-4
    """the epsilon of the Adam optimizer"""
    buffer_size: int = 1_000_000
    """the replay memory buffer size (frames; about 7.1 KB each)"""
    gamma: float = 0.99
    """the discount factor gamma"""
    batch_size: int = 32
    """the batch size of sample from the replay memory"""
    learning_starts: int = 20_000
    """environment step to start learning (minimum replay size)"""
    train_frequency: int = 4
    """environment steps between two gradient steps"""
    target_update_period: int = 8_000
    """environment steps between two target updates; each one selects the best member and refills the population"""
    start_e: float = 1.0
    """the starting epsilon for exploration"""
    end_e: float = 0.01
    """the ending epsilon for exploration"""
    exploration_steps: int = 250_000
    """environment steps over which epsilon decays linearly from start-e to end-e (from step 0)"""
    max_episode_steps: int = 27_000
    """agent steps after which an episode is truncated (bootstrapped, not terminal)"""
    network_size: str = "medium"
    """width of the Q-network's hidden dense layer: small (32), medium (512), large (2048) or a positive integer"""
    eval_episodes: int = 10
    """episodes run by the evaluation of the saved model (with --save-model)"""
    eval_epsilon: float = 0.01
    """epsilon of the epsilon-greedy evaluation policy"""

    population_size: int = 5
    """K, the number of online networks; 1 runs a single dense network (no tournament, sparsity stays 0)"""
    tournament_size: int = 3
    """members drawn (without replacement) in each tournament that refills the population; at most K"""
    alpha: float = 3.0
    """max multiple of the "reach sparsity 1 at the end of training" step sampled for a copy's new sparsity (Eq. 3)"""
    beta: float = 0.01
    """max fraction of the remaining weights a copy may prune at one population update (Eq. 3)"""
    prune_scope: Literal["global", "erk"] = "global"
    """global: one magnitude threshold over all kernels; erk: per-layer top-k with Erdos-Renyi-Kernel allocation"""
    member_init: Literal["independent", "shared"] = "independent"
    """independent: K inits (AdaDQN's, the spec's); shared: one dense init copied K times (docs/atari.md)"""
    population_step: Literal["auto", "vmap", "unrolled"] = "auto"
    """how the update runs the K members: vmap, or unrolled (same results); auto: unrolled on CPU, else vmap"""


# >>> atari: environment
NETWORK_SIZES = {"small": 32, "medium": 512, "large": 2048}


def hidden_width(network_size):
    """Width of the first dense layer: a preset name or a positive integer given as text."""
    if network_size in NETWORK_SIZES:
        return NETWORK_SIZES[network_size]
    check(network_size.isdigit() and int(network_size) > 0,
          f"--network-size must be small, medium, large or a positive integer, got {network_size!r}")
    return int(network_size)


def check_atari_env_id(env_id):
    gym.register_envs(ale_py)  # importing ale_py registers the ALE ids; this makes the dependency explicit
    check(env_id in gym.registry, f"--env-id {env_id!r} is not a registered gymnasium environment (Atari ids look like ALE/Pong-v5)")
    check("ale_py" in str(gym.spec(env_id).entry_point), f"--env-id {env_id!r} is not an ALE (Atari) environment")


def make_env(env_id, seed, idx, capture_video, run_name, max_episode_steps=27_000):
    """ALE v5 preprocessed as in the paper (docs/atari.md), truncated after max_episode_steps (ALE's frame cap set above)."""

    def thunk():
        kwargs = dict(frameskip=1, repeat_action_probability=0.25, full_action_space=False,
                      max_num_frames_per_episode=4 * max_episode_steps + 4)
        if capture_video and idx == 0:
            env = gym.make(env_id, render_mode="rgb_array", **kwargs)
            env = gym.wrappers.RecordVideo(env, f"videos/{run_name}")
        else:
            env = gym.make(env_id, **kwargs)
        env = gym.wrappers.AtariPreprocessing(env, noop_max=0, frame_skip=4, screen_size=84, terminal_on_life_loss=False)
        env = gym.wrappers.TimeLimit(env, max_episode_steps)  # a truncation: the target bootstraps through it
        env = gym.wrappers.RecordEpisodeStatistics(env)  # raw (unclipped) return, length in agent steps
        env = gym.wrappers.FrameStackObservation(env, 4, padding_type="zero")
        env.action_space.seed(seed + idx)
        return env

    return thunk


def env_core_state(env):
    """The emulator's whole system state, its RNG (sticky actions) included."""
    return env.ale.cloneState(include_rng=True)


def set_env_core_state(env, state):
    env.ale.restoreState(state)


# <<< atari: environment


# >>> atari: network
class QNetwork(nn.Module):
    """Nature CNN with SAME padding (7744 features) and a hidden dense layer of `hidden` units."""

    action_dim: int
    hidden: int = 512

    @nn.compact
    def __call__(self, x):
        x = jnp.transpose(x, (0, 2, 3, 1)).astype(jnp.float32) / 255.0  # (B, 4, 84, 84) uint8 -> NHWC in [0, 1]
        init = nn.initializers.xavier_uniform()
        x = nn.relu(nn.Conv(32, kernel_size=(8, 8), strides=(4, 4), kernel_init=init)(x))
        x = nn.relu(nn.Conv(64, kernel_size=(4, 4), strides=(2, 2), kernel_init=init)(x))
        x = nn.relu(nn.Conv(64, kernel_size=(3, 3), strides=(1, 1), kernel_init=init)(x))
        x = x.reshape((x.shape[0], -1))
        x = nn.relu(nn.Dense(self.hidden, kernel_init=init)(x))
        return nn.Dense(self.action_dim, kernel_init=init)(x)


# <<< atari: network


# >>> atari: replay buffer
class ReplayBuffer:
    """Ring buffer storing each 84x84 frame once; 4-frame stacks are rebuilt at sample time, zero-padded before an episode's
    first row. Row j: the newest frame of the state where a_j was taken, r_j, terminal_j; an episode end adds a "final" row
    (the next frame: truncations bootstrap). Transition j is sampled if j is not final and its history and j+1 are stored."""

    STACK = 4

    @staticmethod
    def check_memory(capacity, frame_shape=(84, 84)):
        """Refuses a buffer that would not fit in the memory available now (numpy would only fail once it fills)."""
        row_bytes = int(np.prod(frame_shape)) + 4 + 4 + 3  # frame, action, reward, 3 flags
        needed, available = capacity * row_bytes, available_memory_bytes()
        check(needed < 0.9 * available,
              f"--buffer-size {capacity} needs {needed / 1e9:.1f} GB of memory but only {available / 1e9:.1f} GB is available")

    def __init__(self, capacity, frame_shape=(84, 84), seed=0):
        self.check_memory(capacity, frame_shape)
        self.capacity = capacity
        self.frames = np.zeros((capacity, *frame_shape), dtype=np.uint8)
        self.actions = np.zeros(capacity, dtype=np.int32)
        self.rewards = np.zeros(capacity, dtype=np.float32)
        self.terminals = np.zeros(capacity, dtype=bool)
        self.firsts = np.zeros(capacity, dtype=bool)  # the row holds an episode's first frame
        self.finals = np.zeros(capacity, dtype=bool)  # the row holds the frame after an episode's last action
        self.ptr, self.size, self.episode_open, self.rng = 0, 0, False, np.random.default_rng(seed)

    def nbytes(self):
        return sum(a.nbytes for a in (self.frames, self.actions, self.rewards, self.terminals, self.firsts, self.finals))

    def _write(self, frame, action, reward, terminal, first, final):
        p = self.ptr
        self.frames[p], self.actions[p], self.rewards[p] = frame, action, reward
        self.terminals[p], self.firsts[p], self.finals[p] = terminal, first, final
        self.ptr, self.size = (p + 1) % self.capacity, min(self.size + 1, self.capacity)

    def add(self, frame, action, reward, terminated, truncated, next_frame):
        """Stores one step by the newest frames of its state and next state (`next_frame` kept only at an episode end)."""
        self._write(frame, action, reward, terminated, not self.episode_open, False)
        if terminated or truncated:
            self._write(next_frame, 0, 0.0, False, False, True)
        self.episode_open = not (terminated or truncated)

    def _physical(self, logical):
        return (self.ptr - self.size + logical) % self.capacity

    def valid(self, logical):
        """Which logical indices (0 = oldest row) are transitions that may be sampled."""
        logical = np.asarray(logical)
        ok = (logical >= 0) & (logical + 1 < self.size) & ~self.finals[self._physical(logical)]
        history = logical >= self.STACK - 1
        for k in range(self.STACK):  # an episode start inside the window means the missing rows are padding
            history |= (logical - k >= 0) & self.firsts[self._physical(logical - k)]
        return ok & history

    def transitions(self, logical):
        """(obs, actions, rewards, terminals, next_obs) of valid logical indices; stacks are (B, 4, 84, 84)."""
        rows = self._physical(np.asarray(logical)[:, None] + np.arange(-self.STACK + 1, 2))  # (B, 5)
        frames, firsts = self.frames[rows], self.firsts[rows]
        later_first = np.flip(np.cumsum(np.flip(firsts, 1), 1), 1)  # firsts at or after each position
        keep = np.concatenate([later_first[:, 1:] == 0, np.ones_like(firsts[:, :1])], axis=1)
        frames = np.where(keep[:, :, None, None], frames, 0)
        p = rows[:, self.STACK - 1]
        return frames[:, :-1], self.actions[p], self.rewards[p], self.terminals[p].astype(np.float32), frames[:, 1:]

    def sample(self, batch_size):
        idx = np.empty(0, dtype=np.int64)
        for _ in range(1000):
            cand = self.rng.integers(0, self.size, size=2 * batch_size)
            idx = np.concatenate([idx, cand[self.valid(cand)]])
            if idx.size >= batch_size:
                return self.transitions(idx[:batch_size])
        raise RuntimeError("the replay buffer holds no valid transition to sample")


# <<< atari: replay buffer


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


# ALGO LOGIC: one vmapped update of all members against one shared target
def make_update(args, q_network, optimizer):
    """The jitted update of the stacked (K, ...) members; returns (params, opt_state, cum_losses + losses, losses, q)."""
    auto_vmap = jax.default_backend() != "cpu" or args.population_size == 1  # one member: vmap adds no batched conv
    vectorized = args.population_step == "vmap" or (args.population_step == "auto" and auto_vmap)

    def td_target(target_params, batch):
        obs, actions, rewards, dones, next_obs = batch
        return rewards + args.gamma * (1.0 - dones) * q_network.apply(target_params, next_obs).max(axis=-1)

    def member_step(params, opt_state, mask, batch, y):
        obs, actions = batch[0], batch[1]

        def loss_fn(p):
            q = jnp.take_along_axis(q_network.apply(p, obs), actions[:, None], axis=-1)[:, 0]
            return jnp.mean((q - y) ** 2), q.mean()

        (loss, q_mean), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = apply_mask(optax.apply_updates(params, updates), mask)
        return params, opt_state, loss, q_mean

    def update(params, opt_state, masks, target_params, batch, cum_losses):
        y = td_target(target_params, batch)  # once per batch, shared by every member
        if vectorized:
            params, opt_state, losses, q = jax.vmap(member_step, in_axes=(0, 0, 0, None, None))(params, opt_state, masks, batch, y)
        else:
            steps = [member_step(member(params, k), member(opt_state, k), member(masks, k), batch, y)
                     for k in range(cum_losses.shape[0])]
            params, opt_state, losses, q = jax.tree.map(lambda *xs: jnp.stack(xs), *steps)
        return params, opt_state, cum_losses + losses, losses, q

    return jax.jit(update, donate_argnums=(0, 1))


def make_act(q_network):
    """Jitted greedy action of one member drawn with sampling_probabilities(cum_losses); returns (action, k, key)."""

    def act(params, obs, cum_losses, key):
        key, draw_key = jax.random.split(key)
        k = jax.random.choice(draw_key, cum_losses.shape[0], p=sampling_probabilities(cum_losses))
        return q_network.apply(member(params, k), obs).argmax(axis=-1)[0], k, key

    return jax.jit(act)


# >>> atari: online dqn
def linear_schedule(start_e, end_e, duration, t):
    return max(end_e + (start_e - end_e) * (1.0 - t / duration), end_e)


def evaluate(model_path, make_env, env_id, eval_episodes, run_name, Model, epsilon=0.01, capture_video=False, seed=1,
             network_size="medium", max_episode_steps=27_000):
    """Runs eval_episodes episodes of the saved (params, masks) with an epsilon-greedy policy; returns their raw returns."""
    env = make_env(env_id, seed, 0, capture_video, run_name, max_episode_steps)()
    model = Model(action_dim=env.action_space.n, hidden=hidden_width(network_size))
    obs, _ = env.reset(seed=seed)
    template = model.init(jax.random.key(0), obs[None])
    with open(model_path, "rb") as f:
        saved = flax.serialization.from_bytes({"params": template, "masks": dense_mask(template)}, f.read())
    params = apply_mask(saved["params"], saved["masks"])
    greedy = jax.jit(lambda p, o: model.apply(p, o).argmax(axis=-1))
    rng, returns = np.random.default_rng(seed), []
    while len(returns) < eval_episodes:
        action = env.action_space.sample() if rng.random() < epsilon else int(greedy(params, obs[None])[0])
        obs, _, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            returns.append(float(info["episode"]["r"]))
            obs, _ = env.reset()
    env.close()
    return returns


# <<< atari: online dqn


def main(args):
    # INIT RUN: the run folder (a resumed run goes on in its own), logging, seeding
    run_name, checkpoint = start_run(args)
    logger = Logger(args, run_name, checkpoint)
    random.seed(args.seed)
    np.random.seed(args.seed)
    _, q_key, act_key = jax.random.split(jax.random.key(args.seed), 3)

    # INIT ENV
    env = make_env(args.env_id, args.seed, 0, args.capture_video, run_name, args.max_episode_steps)()
    assert isinstance(env.action_space, gym.spaces.Discrete), "only discrete action space is supported"
    obs, _ = env.reset(seed=args.seed)

    # INIT POPULATION: K dense online networks (K inits, or one copied K times) with masks and Adam states; target: member 0
    K = args.population_size
    q_network = QNetwork(action_dim=env.action_space.n, hidden=hidden_width(args.network_size))
    optimizer = optax.adam(learning_rate=args.learning_rate, eps=args.adam_eps)
    q_keys = jax.random.split(q_key, K) if args.member_init == "independent" else jnp.stack([q_key] * K)
    params = jax.vmap(q_network.init, in_axes=(0, None))(q_keys, obs[None])
    pop = {"params": params, "masks": jax.vmap(dense_mask)(params), "opt_state": jax.vmap(optimizer.init)(params)}
    update, act = make_update(args, q_network, optimizer), make_act(q_network)

    # TRAINING STATE: all a checkpoint holds (sparsities: Eq. 3's parents; cum_losses: L_k since the last target update)
    s = TrainState(step=0, pop=pop, target=(member(pop["params"], 0), member(pop["masks"], 0)), sparsities=np.zeros(K),
                   cum_losses=jnp.zeros(K), rng=np.random.default_rng(args.seed), key=act_key, env=env, obs=obs,
                   rb=ReplayBuffer(args.buffer_size, seed=args.seed), learn_after=args.learning_starts,
                   member_sparsity=[0.0] * K, network_sparsity=0.0, nonzero=mask_stats(member(pop["masks"], 0))[1],
                   last_return=None, losses=None, q_values=None)
    restore(s, checkpoint)
    if checkpoint and not checkpoint[2]:  # no replay buffer in the checkpoint: the episode goes on, the buffer restarts
        s.rb.ptr, s.rb.size, s.rb.episode_open, s.learn_after = 0, 0, False, s.step + args.learning_starts
        print(f"the checkpoint holds no replay buffer: refilling it, training again after step {s.learn_after:,}")
    checkpointer, progress = Checkpointer(args, logger, args.total_timesteps), Progress(args.total_timesteps, s.step)

    # TRAINING LOOP
    for global_step in range(s.step + 1, args.total_timesteps + 1):
        s.step = global_step
        # ALGO LOGIC: act greedily with a member drawn with probability proportional to 1 / (L_k + 1e-6)
        epsilon = linear_schedule(args.start_e, args.end_e, args.exploration_steps, global_step - 1)
        if random.random() < epsilon:
            action = s.env.action_space.sample()
        else:
            action, _, s.key = act(s.pop["params"], s.obs[None], s.cum_losses, s.key)
            action = int(action)

        # TRY NOT TO MODIFY: execute the game and log data.
        next_obs, reward, terminated, truncated, info = s.env.step(action)
        s.rb.add(s.obs[-1], action, np.clip(reward, -1.0, 1.0), terminated, truncated, next_obs[-1])
        if terminated or truncated:
            s.last_return = float(info["episode"]["r"])
            logger.scalars(global_step, **{"charts/episodic_return": s.last_return,
                                           "charts/episodic_length": int(info["episode"]["l"])})
            next_obs, _ = s.env.reset()
        s.obs = next_obs

        # ALGO LOGIC: training.
        if global_step > s.learn_after:
            if global_step % args.train_frequency == 0:
                s.pop["params"], s.pop["opt_state"], s.cum_losses, s.losses, s.q_values = update(
                    s.pop["params"], s.pop["opt_state"], s.pop["masks"], s.target[0], s.rb.sample(args.batch_size),
                    s.cum_losses)
            if global_step % args.target_update_period == 0:
                # ALGO LOGIC: the best member becomes the target; tournaments refill the population
                host_losses = np.asarray(jax.device_get(s.cum_losses))
                s.pop, s.sparsities, k_star, pairs = select_population(
                    s.rng, host_losses, s.pop, s.sparsities, global_step, args.total_timesteps,
                    args.target_update_period, args, optimizer)
                s.target = (jax.tree.map(jnp.copy, member(s.pop["params"], k_star)), member(s.pop["masks"], k_star))
                s.cum_losses = jnp.zeros(K)
                s.member_sparsity = [mask_stats(member(s.pop["masks"], k))[0] for k in range(K)]
                s.network_sparsity, s.nonzero = mask_stats(s.target[1])
                logger.scalars(global_step, **{f"population/loss_{k}": host_losses[k] for k in range(K)},
                               **{"population/selected": k_star, "population/n_copies": len(pairs)})

        # TRY NOT TO MODIFY: metrics every 100 steps, the progress line, checkpoints (periodic, or on a signal)
        if global_step % 100 == 0:
            values = {"charts/SPS": progress.sps(global_step), "charts/epsilon": epsilon,
                      "sparsity/network": s.network_sparsity, "sparsity/online": float(np.mean(s.member_sparsity)),
                      "charts/nonzero_params": s.nonzero, **{f"sparsity/member_{k}": s.member_sparsity[k] for k in range(K)}}
            if s.losses is not None:
                values.update({"losses/td_loss": float(jnp.mean(s.losses)), "losses/q_values": float(jnp.mean(s.q_values))})
            logger.scalars(global_step, **values)
            progress.update(global_step, SPS=values["charts/SPS"], **{"return": s.last_return, "sparsity": s.network_sparsity})
        checkpointer(s)
    progress.update(args.total_timesteps, final=True, **{"return": s.last_return, "sparsity": s.network_sparsity})

    # SAVE AND EVALUATE the delivered network: the target, i.e. the last selected member, with its mask
    if args.save_model:
        model_path = f"runs/{run_name}/{args.exp_name}.cleanrl_model"
        with open(model_path, "wb") as f:
            f.write(flax.serialization.to_bytes({"params": s.target[0], "masks": s.target[1]}))
        print(f"model saved to {model_path} (the target network: the last selected member)")
        if args.eval_episodes > 0:
            episodic_returns = evaluate(model_path, make_env, args.env_id, args.eval_episodes, f"{run_name}-eval", QNetwork,
                                        epsilon=args.eval_epsilon, capture_video=args.capture_video, seed=args.seed,
                                        network_size=args.network_size, max_episode_steps=args.max_episode_steps)
            logger.scalars(args.total_timesteps, **{"eval/episodic_return": float(np.mean(episodic_returns))})
            for idx, episodic_return in enumerate(episodic_returns):  # CleanRL's per-episode values (step = episode)
                logger.scalars(idx, **{"eval/final_episodic_return": episodic_return})
            print(f"eval/episodic_return {np.mean(episodic_returns):.1f} (mean of {len(episodic_returns)} episodes)")
    s.env.close()


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


# >>> atari: online dqn checks
def check_online_dqn_args(args):
    """Checks shared by the online DQN scripts (environment, replay, DQN hyperparameters)."""
    check_ranges(args, total_timesteps=">= 1", learning_rate="> 0", adam_eps="> 0", gamma="in [0, 1]", batch_size=">= 1",
                 buffer_size=">= 8", train_frequency=">= 1", target_update_period=">= 1", exploration_steps=">= 1",
                 max_episode_steps=">= 1", eval_episodes=">= 0", eval_epsilon="in [0, 1]")
    check(args.buffer_size >= args.batch_size, f"--batch-size {args.batch_size} is larger than --buffer-size {args.buffer_size}")
    check(args.learning_starts >= args.batch_size,
          f"--learning-starts must be >= --batch-size ({args.batch_size}), got {args.learning_starts}")
    check(args.learning_starts < args.total_timesteps,
          f"--learning-starts {args.learning_starts} is not below --total-timesteps {args.total_timesteps}: nothing would be learned")
    check(0.0 <= args.end_e <= args.start_e <= 1.0, f"need 0 <= --end-e <= --start-e <= 1, got {args.end_e} and {args.start_e}")
    hidden_width(args.network_size)
    check_atari_env_id(args.env_id)
    ReplayBuffer.check_memory(args.buffer_size)


# <<< atari: online dqn checks


def validate(args):
    check_run_args(args)
    check_online_dqn_args(args)
    check_ranges(args, population_size=">= 1", alpha=">= 0", beta="in [0, 1]")
    check(args.population_size == 1 or 1 <= args.tournament_size <= args.population_size,
          f"--tournament-size must be between 1 and --population-size ({args.population_size}), got {args.tournament_size}")
    check(args.target_update_period % args.train_frequency == 0,
          f"--target-update-period {args.target_update_period} must be a multiple of --train-frequency {args.train_frequency}")


if __name__ == "__main__":
    main(parse_or_exit(Args, validate))
