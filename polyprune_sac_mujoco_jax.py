# PolyPruneSAC: SAC whose critics are gradually magnitude-pruned (cubic schedule), the EauDeSAC baseline. Docs: README.md
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
    """env steps between checkpoints of the whole training state into runs/{run_name}/checkpoint (0: none, but a
    SIGTERM, SIGUSR1 or Ctrl-C still writes one before exiting with status 75)"""
    checkpoint_replay: bool = True
    """include the replay buffer in checkpoints; without it a resumed run refills it for --learning-starts env steps
    before training again, and is no longer identical to an uninterrupted run"""
    resume: Optional[str] = None
    """auto: go on from the newest complete checkpoint of this run (--run-name, else the newest
    runs/{env_id}__{exp_name}__{seed}__*), or start fresh if there is none; or a checkpoint or run folder. A resumed
    run continues exactly as if it had never stopped (same params, buffer, RNGs, env state and logged points)"""

    env_id: str = "HalfCheetah-v4"
    """the id of the environment (a gymnasium MuJoCo id, v4 or v5; the default is v4 as in the paper's era)"""
    total_timesteps: int = 1_000_000
    """total environment steps of the experiment"""
    learning_rate: float = 3e-4
    """the learning rate of the Adam optimizers of the actor, the critics and the temperature"""
    buffer_size: int = 1_000_000
    """the replay memory buffer size (rows: one per env step plus one per episode end)"""
    gamma: float = 0.99
    """the discount factor gamma"""
    tau: float = 0.005
    """target smoothing coefficient: the target critics move this fraction toward the critics after every update"""
    batch_size: int = 256
    """the batch size of sample from the replay memory"""
    learning_starts: int = 100
    """environment steps with uniform random actions before learning starts (one gradient step per env step after)"""
    eval_frequency: int = 10_000
    """environment steps between two evaluations; a value above --total-timesteps leaves only the final one"""
    eval_episodes: int = 10
    """episodes of each evaluation (deterministic mean action, the env's own horizon); 0 disables evaluation"""
    network_size: str = "small"
    """width of both hidden layers of each critic: small (256), medium (512), large (1024) or a positive integer;
    the actor is always (256, 256)"""
    ent_coef: float = 1.0
    """initial entropy coefficient alpha; log alpha is learned with SBX's loss alpha * (H - H_target), H_target = -dim(A);
    kept fixed with --no-autotune"""
    autotune: bool = True
    """automatic tuning of the entropy coefficient"""

    final_sparsity: float = 0.95
    """final fraction of zero kernel weights of the critics (actor never pruned); 0 gives the dense SAC baseline.
    The Polyak target is never masked: a weight pruned in the critics only decays there by a factor 1 - tau per step"""
    pruning_start: float = 0.2
    """fraction of total-timesteps at which pruning starts"""
    pruning_end: float = 0.8
    """fraction of total-timesteps at which the final sparsity is reached"""
    pruning_frequency: int = 1_000
    """environment steps between two mask recomputations during pruning"""
    prune_scope: Literal["global", "erk"] = "global"
    """global: one magnitude threshold over all kernels of both critics; erk: per-layer top-k with Erdos-Renyi-Kernel
    allocation"""


# >>> shared: cli
class ArgError(ValueError):
    """A flag value that cannot run; main prints it as one line and exits with status 2."""


def check(ok, message):
    if not ok:
        raise ArgError(message)


def available_memory_bytes():
    """Memory this process can still allocate without swapping (MemAvailable on Linux)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def parse_or_exit(args_cls, validate, argv=None):
    """Parses the CLI with tyro, then validates; a bad value ends the program with one line on stderr."""
    args = tyro.cli(args_cls, args=argv)
    try:
        validate(args)
    except ArgError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    return args


# <<< shared: cli


# >>> mujoco: environment
NETWORK_SIZES = {"small": 256, "medium": 512, "large": 1024}


def hidden_width(network_size):
    """Width of both hidden layers of each critic: a preset name or a positive integer given as text."""
    if network_size in NETWORK_SIZES:
        return NETWORK_SIZES[network_size]
    check(network_size.isdigit() and int(network_size) > 0,
          f"--network-size must be small, medium, large or a positive integer, got {network_size!r}")
    return int(network_size)


def check_mujoco_env_id(env_id):
    """Refuses ids that are not gymnasium MuJoCo environments with flat observations and bounded Box actions;
    returns (observation size, action size)."""
    check(env_id in gym.registry, f"--env-id {env_id!r} is not a registered gymnasium environment (MuJoCo ids look like Hopper-v4)")
    check("mujoco" in str(gym.spec(env_id).entry_point), f"--env-id {env_id!r} is not a MuJoCo environment")
    try:
        env = gym.make(env_id)
    except Exception as e:  # e.g. the v2/v3 ids, which need the retired mujoco-py
        check(False, f"--env-id {env_id!r} cannot be created (use a v4 or v5 id): {(str(e).splitlines() or [type(e).__name__])[0]}")
    obs_space, action_space = env.observation_space, env.action_space
    env.close()
    check(isinstance(action_space, gym.spaces.Box) and np.isfinite(action_space.low).all()
          and np.isfinite(action_space.high).all(), f"--env-id {env_id!r} has no bounded continuous (Box) action space")
    check(isinstance(obs_space, gym.spaces.Box) and len(obs_space.shape) == 1,
          f"--env-id {env_id!r} has no flat (1-D Box) observation space")
    return obs_space.shape[0], int(np.prod(action_space.shape))


def make_env(env_id, seed, idx, capture_video, run_name):
    """The gymnasium MuJoCo env as registered: its own TimeLimit (1,000 steps; a truncation, so the target
    bootstraps through it), then RecordEpisodeStatistics (raw returns). No observation or reward normalisation."""

    def thunk():
        if capture_video and idx == 0:
            env = gym.make(env_id, render_mode="rgb_array")
            env = gym.wrappers.RecordVideo(env, f"videos/{run_name}")
        else:
            env = gym.make(env_id)
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
    """The MuJoCo env's full integration state (time, qpos, qvel, actuator state, warm start, controls, applied
    forces): restored, the next mj_step is the one an uninterrupted run would take."""
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
    """`n_critics` independent critics as one vmapped module: params are stacked on a leading axis of size
    n_critics (kernels (n, in, out), biases (n, out)) and the output is (n_critics, batch)."""

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
    """Reparameterised tanh-Gaussian sample in [-1, 1] and its log-probability (tanh correction in the stable
    form log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)))."""
    u = mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape)
    gaussian = -0.5 * ((u - mean) / jnp.exp(log_std)) ** 2 - log_std - 0.5 * jnp.log(2.0 * jnp.pi)
    log_det = 2.0 * (jnp.log(2.0) - u - jax.nn.softplus(-2.0 * u))
    return jnp.tanh(u), (gaussian - log_det).sum(axis=-1)


def split_ensemble(tree):
    """The ensemble's stacked params (or masks) as a list of per-critic trees, where kernels have ndim 2 and biases
    ndim 1, the layout the shared masking code expects (on the stacked tree a bias would look like a kernel)."""
    n = jax.tree.leaves(tree)[0].shape[0]
    return [jax.tree.map(lambda x: x[i], tree) for i in range(n)]


def join_ensemble(trees):
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


# <<< mujoco: network


# >>> mujoco: replay buffer
class ReplayBuffer:
    """Ring buffer of flat observations that stores each observation once; next_obs is read from the next row.

    Row j holds the observation o_j in which action a_j was taken, with r_j and terminal_j. When an episode ends
    (terminated or truncated) one extra "final" row holds the observation after the last action, so the last
    transition keeps its next state (truncations bootstrap, terminal_j is set only for terminations). A transition j
    is sampled only if row j+1 is still in the ring (not past the write head) and row j is not a final row.
    Observations and actions (in [-1, 1]) are stored as float32.
    """

    @staticmethod
    def check_memory(capacity, obs_dim, action_dim):
        """Refuses a buffer that would not fit in the memory available now (numpy would only fail once it fills)."""
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
    """Erdos-Renyi-Kernel densities (as jaxpruner): density_l proportional to sum(shape_l) / prod(shape_l),
    scaled so that the kept weights total (1 - sparsity) of all kernel weights, layers above 1 set dense."""
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
    """Number of kernel weights kept: one count for the global scope, one per kernel for ERK.
    n_keep = max(1, round(N (1 - s))), computed in float64 on the host so counts are exact."""
    shapes = [x.shape for x in jax.tree.leaves(params) if prunable(x)]
    if scope == "global":
        return [max(1, round(sum(int(np.prod(s)) for s in shapes) * (1.0 - float(sparsity))))]
    return [max(1, round(int(np.prod(s)) * d)) for s, d in zip(shapes, erk_densities(shapes, float(sparsity)))]


@jax.jit
def _top_k_mask(scores, n_keep):
    """True for the n_keep largest scores; ties keep the lower flat index."""
    order = jnp.argsort(-scores, stable=True)
    rank = jnp.zeros_like(order).at[order].set(jnp.arange(order.size, dtype=order.dtype))
    return rank < n_keep


def make_mask(params, sparsity, prev_mask=None, scope="global"):
    """Magnitude mask (a bool pytree shaped like params, biases all True) with exactly the zero count of
    `sparsity`. Weights already pruned by `prev_mask` rank last and the result is intersected with it."""
    leaves, treedef = jax.tree.flatten(params)
    prev = jax.tree.leaves(prev_mask) if prev_mask is not None else [jnp.ones(x.shape, bool) for x in leaves]
    kernels = [i for i, x in enumerate(leaves) if prunable(x)]
    scores = [jnp.where(prev[i], jnp.abs(leaves[i]), -1.0).ravel() for i in kernels]
    counts = keep_counts(params, sparsity, scope)
    if scope == "global":
        flat = _top_k_mask(jnp.concatenate(scores), counts[0])
        split = np.cumsum([s.size for s in scores])[:-1]
        kept = jnp.split(flat, split)
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
    leaves = jax.tree.leaves(mask)
    kernel_total = sum(m.size for m in leaves if prunable(m))
    kernel_kept = sum(int(m.sum()) for m in leaves if prunable(m))
    bias_total = sum(m.size for m in leaves if not prunable(m))
    return 1.0 - kernel_kept / kernel_total, kernel_kept + bias_total


# <<< shared: masking


# >>> shared: polynomial schedule
def polynomial_sparsity(step, final_sparsity, start_step, end_step):
    """Zhu & Gupta cubic schedule: s(t) = s_F (1 - (1 - p)^3), p = clip((t - t_s) / (t_e - t_s), 0, 1)."""
    if end_step <= start_step:
        return final_sparsity if step >= end_step else 0.0
    p = min(max((step - start_step) / (end_step - start_step), 0.0), 1.0)
    return final_sparsity * (1.0 - (1.0 - p) ** 3)


def pruning_steps(total_timesteps, start_fraction, end_fraction):
    return int(start_fraction * total_timesteps), int(end_fraction * total_timesteps)


def is_pruning_step(step, frequency, start_step, end_step):
    """The mask is recomputed every `frequency` steps inside [t_s, t_e], and at t_e so the final value is reached."""
    return start_step <= step <= end_step and (step % frequency == 0 or step == end_step)


# <<< shared: polynomial schedule


# >>> shared: logging
class Progress:
    """One status line for people: redrawn in place on a terminal, one line a minute (and at the end) otherwise."""

    def __init__(self, total, stream=sys.stderr):
        self.total, self.stream = total, stream
        self.tty = hasattr(stream, "isatty") and stream.isatty()
        self.interval = 0.5 if self.tty else 60.0
        self.last = time.time()

    def update(self, step, final=False, **fields):
        now = time.time()
        if not final and now - self.last < self.interval:
            return
        self.last = now
        parts = [f"{step:,}/{self.total:,} steps ({100.0 * step / self.total:.1f}%)"]
        parts += [f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in fields.items() if v is not None]
        line = " | ".join(parts)
        if self.tty:
            self.stream.write("\r" + line[:200].ljust(120) + ("\n" if final else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


class Logger:
    """Scalars to runs/{run_name} (TensorBoard events, mirrored to W&B with --track) and args.json. `restored` is what
    state() returned when a checkpoint was written: the event files are cut back to it and the same W&B run goes on."""

    def __init__(self, args, run_name, restored=None):
        self.dir = f"runs/{run_name}"
        os.makedirs(self.dir, exist_ok=True)
        self.wandb_id = None
        if restored is not None:
            rewind_tensorboard(self.dir, restored["event_files"])
            self.wandb_id = restored["wandb_id"]
        if args.track:
            import wandb

            run = wandb.init(project=args.wandb_project_name, entity=args.wandb_entity, sync_tensorboard=True,
                             config=vars(args), name=run_name, monitor_gym=True, save_code=True, id=self.wandb_id,
                             resume="allow" if self.wandb_id else None)
            self.wandb_id = run.id
        self.writer = Writer(self.dir)
        with open(f"{self.dir}/args.json", "w") as f:
            json.dump(vars(args), f, indent=2)

    def scalars(self, step, **values):
        for tag, value in values.items():
            self.writer.add_scalar(tag, float(value), int(step))

    def state(self):
        self.writer.flush()
        return {"event_files": tensorboard_files(self.dir), "wandb_id": self.wandb_id}

    def close(self):
        self.writer.close()


# <<< shared: logging


# >>> shared: checkpoint
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


class CheckpointError(Exception):
    """A checkpoint that cannot be written or resumed; main prints it as one line and exits with status 1."""


class Preemption:
    """SIGTERM and SIGUSR1 (what SLURM sends before a time limit or a preemption) and SIGINT (Ctrl-C) ask for a
    checkpoint at the next step boundary; the script then exits with EXIT_PREEMPTED. A second Ctrl-C stops at once."""

    def __init__(self):
        self.signal = None
        for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signal.Signals(signum).name
        print(f"{self.signal}: writing a checkpoint at the next step boundary, then exiting", file=sys.stderr, flush=True)


def env_state(env, core_state):
    """Everything a gymnasium env chain holds between steps: each wrapper's counters and buffers, the core env's
    simulator state (core_state(unwrapped)), its np_random and the action space's RNG."""
    layers, e = [], env
    while isinstance(e, gym.Wrapper):
        name = type(e).__name__
        if name not in WRAPPER_STATE:
            raise CheckpointError(f"cannot checkpoint an env wrapped in {name} (its state is unknown to WRAPPER_STATE)")
        layers.append({a: copy.deepcopy(getattr(e, a)) for a in WRAPPER_STATE[name]})
        e = e.env
    return {"wrappers": layers, "core": core_state(e), "np_random": e.np_random.bit_generator.state,
            "action_space": env.action_space.np_random.bit_generator.state}


def set_env_state(env, state, set_core_state):
    e = env
    for layer in state["wrappers"]:
        for a, value in layer.items():
            setattr(e, a, copy.deepcopy(value))
        e = e.env
    set_core_state(e, state["core"])
    e.np_random.bit_generator.state = state["np_random"]
    env.action_space.np_random.bit_generator.state = state["action_space"]


def buffer_state(buffer, with_arrays=True):
    """(scalars, arrays) of a replay buffer object: its numpy arrays apart (written as .npy files), the rest pickled.
    A ring buffer that has not wrapped yet (size < capacity) holds rows 0..size-1 only: just those are written."""
    arrays = {k: v for k, v in vars(buffer).items() if isinstance(v, np.ndarray)}
    scalars = {k: copy.deepcopy(v.bit_generator.state if isinstance(v, np.random.Generator) else v)
               for k, v in vars(buffer).items() if k not in arrays}
    if getattr(buffer, "size", None) is not None and buffer.size < getattr(buffer, "capacity", 0):
        arrays = {k: v[:buffer.size] for k, v in arrays.items()}
    return scalars, (arrays if with_arrays else {})


def set_buffer_state(buffer, scalars, arrays):
    for k, v in scalars.items():
        if isinstance(getattr(buffer, k, None), np.random.Generator):
            getattr(buffer, k).bit_generator.state = v
        else:
            setattr(buffer, k, v)
    for k, v in arrays.items():
        getattr(buffer, k)[:len(v)] = v  # rows past a saved prefix are still the fresh buffer's zeros


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def complete_checkpoints(run_dir):
    """The complete checkpoints of a run folder, oldest first (complete once renamed from tmp_... to step_{12 digits})."""
    paths = glob.glob(os.path.join(run_dir, "checkpoint", "step_*"))
    return sorted(p for p in paths if len(os.path.basename(p)) == 17 and os.path.basename(p)[5:].isdigit())


def save_checkpoint(run_dir, step, script, args, state, arrays):
    """Writes runs/{run}/checkpoint/step_{step}: state.pkl (the pickled training state), one .npy per array and
    meta.json (script, flags, sizes and SHA-256 of every file), into a temporary folder whose files and folder are
    fsynced before it is renamed: a checkpoint is visible only when complete. Older checkpoints are deleted after.
    Returns (path, bytes, seconds)."""
    start, root = time.time(), os.path.join(run_dir, "checkpoint")
    final = os.path.join(root, f"step_{step:012d}")
    tmp = os.path.join(root, f"tmp_{step:012d}_{os.getpid()}")
    os.makedirs(tmp, exist_ok=True)
    files = {"state.pkl": None, **{f"{name}.npy": value for name, value in arrays.items()}}
    for name, value in files.items():
        with open(os.path.join(tmp, name), "wb") as f:
            if value is None:
                pickle.dump(state, f, protocol=5)
            else:
                np.save(f, value, allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
    meta = {"format": 1, "script": script, "step": step, "args": vars(args),
            "files": {name: {"bytes": os.path.getsize(os.path.join(tmp, name)), "sha256": _sha256(os.path.join(tmp, name))}
                      for name in files}}
    with open(os.path.join(tmp, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    _fsync(tmp)
    if os.path.exists(final):  # the same step again (a signal right after a resume): the state is the same
        shutil.rmtree(tmp)
    else:
        os.rename(tmp, final)
        _fsync(root)
    for old in complete_checkpoints(run_dir)[:-1] + glob.glob(os.path.join(root, "tmp_*")):
        shutil.rmtree(old, ignore_errors=True)
    return final, sum(m["bytes"] for m in meta["files"].values()), time.time() - start


def find_checkpoint(resume, run_dir_pattern):
    """The checkpoint folder --resume names: `auto` = the newest complete checkpoint of the newest run folder
    matching run_dir_pattern that has one (None if there is none: the run starts fresh); else a checkpoint folder
    or a run folder (its newest complete checkpoint), which must exist."""
    if resume == "auto":
        for run_dir in sorted(glob.glob(run_dir_pattern), key=os.path.getmtime, reverse=True):
            if complete_checkpoints(run_dir):
                return complete_checkpoints(run_dir)[-1]
        return None
    if os.path.isfile(os.path.join(resume, "meta.json")):
        return resume.rstrip("/")
    if os.path.isdir(resume) and complete_checkpoints(resume):
        return complete_checkpoints(resume)[-1]
    raise CheckpointError(f"--resume {resume}: no complete checkpoint there (a checkpoint folder holds meta.json; a run "
                          f"folder holds checkpoint/step_*)")


def read_checkpoint(path, script, args):
    """Checks that the checkpoint at `path` is complete, intact, from `script` and from compatible flags, then
    returns (meta, state, arrays). Raises CheckpointError naming the file and the problem; touches nothing."""
    meta_path = os.path.join(path, "meta.json")
    try:
        with open(meta_path) as f:
            meta = json.load(f)
        files = meta["files"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{meta_path}: unreadable checkpoint metadata ({type(e).__name__}: {e})") from None
    if meta.get("script") != script:
        raise CheckpointError(f"{meta_path}: a checkpoint of {meta.get('script')}, not of {script}")
    saved, now = meta.get("args", {}), vars(args)
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


def check_checkpoint_args(args):
    check(args.checkpoint_frequency >= 0, f"--checkpoint-frequency must be >= 0, got {args.checkpoint_frequency}")
    check(args.run_name is None or (args.run_name and "/" not in args.run_name and args.run_name not in (".", "..")),
          f"--run-name must be a folder name (no '/'), got {args.run_name!r}")
    check(args.resume is None or args.resume == "auto" or os.path.exists(args.resume),
          f"--resume {args.resume}: no such checkpoint or run folder (use auto, or a path)")


def start_run(args, script):
    """(run_name, checkpoint) of this invocation. With --resume: the run folder of the checkpoint it names and the
    loaded (meta, state, arrays), after every check; with `auto` and no checkpoint yet, or without --resume: a fresh
    run (--run-name, else {env_id}__{exp_name}__{seed}__{unix time}) and None. A checkpoint that cannot be resumed
    ends the program with one line on stderr (status 1) before anything is written."""
    try:
        path = None
        if args.resume is not None:
            pattern = f"runs/{args.run_name}" if args.run_name else f"runs/{args.env_id}__{args.exp_name}__{args.seed}__*"
            path = find_checkpoint(args.resume, pattern)
        if path is None:
            return args.run_name or f"{args.env_id}__{args.exp_name}__{args.seed}__{int(time.time())}", None
        # the run folder is runs/{run_name}, and Atari run names hold a folder ("ALE/Pong-v5__...")
        run_name = os.path.relpath(os.path.dirname(os.path.dirname(os.path.abspath(path))), os.path.abspath("runs"))
        if run_name.startswith(".."):
            raise CheckpointError(f"{path}: not under ./runs; resume from the folder that holds the run's runs/")
        checkpoint = read_checkpoint(path, script, args)
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    print(f"resuming {run_name} at step {checkpoint[0]['step']:,} from {path}", flush=True)
    return run_name, checkpoint


def tensorboard_files(run_dir):
    """{event file name: size} after a flush: what rewind_tensorboard keeps on resume."""
    return {os.path.basename(p): os.path.getsize(p) for p in glob.glob(os.path.join(run_dir, "events.out.tfevents.*"))}


def rewind_tensorboard(run_dir, kept):
    """Cuts the run folder's event files back to what they held at the checkpoint: files written later are deleted,
    the others truncated to their recorded size, so a resumed run logs no point twice."""
    for p in glob.glob(os.path.join(run_dir, "events.out.tfevents.*")):
        name = os.path.basename(p)
        if name not in kept:
            os.remove(p)
        elif os.path.getsize(p) > kept[name]:
            os.truncate(p, kept[name])


def stop_if_not_finite(step, what, values, run_dir):
    """Ends the run with one line when a loss or a parameter is NaN or infinite, before it can reach a checkpoint:
    the last complete checkpoint (from before the divergence) is kept."""
    if all(np.all(np.isfinite(np.asarray(v))) for v in jax.tree.leaves(values)):
        return
    kept = complete_checkpoints(run_dir)
    print(f"error: non-finite {what} at step {step:,}: the run stops here; last checkpoint kept: "
          f"{kept[-1] if kept else 'none'}", file=sys.stderr)
    sys.exit(1)


# <<< shared: checkpoint


# ALGO LOGIC: SAC state, critic pruning and the update (critic, actor, temperature, Polyak target in one jit)
@flax.struct.dataclass
class SACState:
    """Everything the update changes. Only the critics have a mask; the actor and the temperature are dense."""

    actor_params: dict
    actor_opt: optax.OptState
    critic_params: dict  # stacked (2, ...) leaves of the vmapped ensemble, masked
    critic_opt: optax.OptState
    critic_mask: dict  # bool, shaped like critic_params
    target_params: dict  # Polyak average of the masked critics, never masked itself
    log_alpha: jax.Array
    alpha_opt: optax.OptState


@partial(jax.jit, static_argnums=(1, 2, 3, 4, 5))
def init_state(key, actor, critic, optimizer, obs_dim, action_dim, alpha=1.0):
    """Fresh dense state: independent actor and critic inits, the target a copy of the critics, log alpha = log(alpha)."""
    actor_key, critic_key = jax.random.split(key)
    obs, action = jnp.zeros((1, obs_dim)), jnp.zeros((1, action_dim))
    actor_params = actor.init(actor_key, obs)
    critic_params = critic.init(critic_key, obs, action)
    log_alpha = jnp.log(jnp.asarray(alpha, jnp.float32))
    return SACState(actor_params=actor_params, actor_opt=optimizer.init(actor_params), critic_params=critic_params,
                    critic_opt=optimizer.init(critic_params), critic_mask=dense_mask(critic_params),
                    target_params=jax.tree.map(jnp.copy, critic_params), log_alpha=log_alpha,
                    alpha_opt=optimizer.init(log_alpha))


def prune_critic(state, sparsity, scope="global"):
    """Magnitude-prunes the critics to `sparsity` (one threshold over the kernels of both critics for the global
    scope, per-layer ERK otherwise); masks only shrink. The actor, the temperature and the target are untouched."""
    mask = join_ensemble(make_mask(split_ensemble(state.critic_params), sparsity, split_ensemble(state.critic_mask), scope))
    return state.replace(critic_params=apply_mask(state.critic_params, mask), critic_mask=mask)


def make_update(args, actor, critic, optimizer):
    """Returns the jitted SAC step (state, batch, key) -> (state, metrics): critic step (mask re-applied), Polyak
    target update, then actor and temperature steps, with the entropy coefficient of the start of the step."""
    target_entropy = -float(actor.action_dim)

    def critic_step(state, batch, alpha, key):
        obs, actions, rewards, dones, next_obs = batch
        next_actions, next_log_prob = sample_action(*actor.apply(state.actor_params, next_obs), key)
        q_next = critic.apply(state.target_params, next_obs, next_actions).min(axis=0)
        y = rewards + args.gamma * (1.0 - dones) * (q_next - alpha * next_log_prob)

        def loss_fn(p):
            q = critic.apply(p, obs, actions)  # (2, B)
            per_critic = 0.5 * jnp.mean((q - y[None]) ** 2, axis=1)
            return per_critic.sum(), (per_critic, q.mean(axis=1))

        (loss, (per_critic, q_means)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.critic_params)
        updates, critic_opt = optimizer.update(grads, state.critic_opt, state.critic_params)
        critic_params = apply_mask(optax.apply_updates(state.critic_params, updates), state.critic_mask)
        target_params = optax.incremental_update(critic_params, state.target_params, args.tau)
        metrics = {"qf1_loss": per_critic[0], "qf2_loss": per_critic[1], "qf_loss": loss,
                   "qf1_values": q_means[0], "qf2_values": q_means[1]}
        return state.replace(critic_params=critic_params, critic_opt=critic_opt, target_params=target_params), metrics

    def actor_step(state, obs, alpha, key):
        def loss_fn(p):
            actions, log_prob = sample_action(*actor.apply(p, obs), key)
            q = critic.apply(state.critic_params, obs, actions).min(axis=0)
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

    def update(state, batch, key):
        critic_key, actor_key = jax.random.split(key)
        alpha = jnp.exp(state.log_alpha)
        state, metrics = critic_step(state, batch, alpha, critic_key)
        state, actor_loss, entropy = actor_step(state, batch[0], alpha, actor_key)
        state, alpha_loss = alpha_step(state, entropy)
        return state, dict(metrics, actor_loss=actor_loss, alpha=alpha, alpha_loss=alpha_loss)

    return jax.jit(update, donate_argnums=(0,))


# >>> mujoco: online sac
def make_act(actor):
    """Jitted policies on a batch of observations: explore(params, obs, key) -> (sampled action, next key) for
    training, exploit(params, obs) -> tanh(mean) for evaluation; actions in [-1, 1]."""

    def explore(params, obs, key):
        key, sample_key = jax.random.split(key)
        return sample_action(*actor.apply(params, obs), sample_key)[0], key

    return jax.jit(explore), jax.jit(lambda params, obs: jnp.tanh(actor.apply(params, obs)[0]))


def episode_returns(env, exploit, actor_params, episodes, seed):
    """Raw returns of `episodes` episodes of the deterministic (mean) action; the first reset is seeded, so every
    evaluation starts from the same initial states."""
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


def check_online_sac_args(args):
    """Checks shared by the SAC scripts (SAC hyperparameters, evaluation, environment, replay)."""
    check(args.total_timesteps >= 1, f"--total-timesteps must be >= 1, got {args.total_timesteps}")
    check(args.learning_rate > 0, f"--learning-rate must be > 0, got {args.learning_rate}")
    check(0.0 <= args.gamma <= 1.0, f"--gamma must be in [0, 1], got {args.gamma}")
    check(0.0 < args.tau <= 1.0, f"--tau must be in (0, 1], got {args.tau}")
    check(args.batch_size >= 1, f"--batch-size must be >= 1, got {args.batch_size}")
    check(args.buffer_size >= args.batch_size, f"--batch-size {args.batch_size} is larger than --buffer-size {args.buffer_size}")
    check(args.buffer_size >= 2, f"--buffer-size must be >= 2 rows, got {args.buffer_size}")
    check(args.learning_starts >= 1, f"--learning-starts must be >= 1, got {args.learning_starts}")
    check(args.learning_starts < args.total_timesteps,
          f"--learning-starts {args.learning_starts} is not below --total-timesteps {args.total_timesteps}: nothing would be learned")
    check(args.eval_frequency >= 1, f"--eval-frequency must be >= 1, got {args.eval_frequency}")
    check(args.eval_episodes >= 0, f"--eval-episodes must be >= 0, got {args.eval_episodes}")
    check(args.ent_coef > 0, f"--ent-coef must be > 0, got {args.ent_coef}")
    hidden_width(args.network_size)
    obs_dim, action_dim = check_mujoco_env_id(args.env_id)
    ReplayBuffer.check_memory(args.buffer_size, obs_dim, action_dim)


# <<< mujoco: online sac


def validate(args):
    check_online_sac_args(args)
    check_checkpoint_args(args)
    check(0.0 <= args.final_sparsity < 1.0, f"--final-sparsity must be in [0, 1), got {args.final_sparsity}")
    check(0.0 <= args.pruning_start <= 1.0, f"--pruning-start must be in [0, 1], got {args.pruning_start}")
    check(0.0 <= args.pruning_end <= 1.0, f"--pruning-end must be in [0, 1], got {args.pruning_end}")
    check(args.pruning_start < args.pruning_end,
          f"--pruning-start {args.pruning_start} must come before --pruning-end {args.pruning_end}")
    check(args.pruning_frequency >= 1, f"--pruning-frequency must be >= 1, got {args.pruning_frequency}")


if __name__ == "__main__":
    args = parse_or_exit(Args, validate)
    run_name, checkpoint = start_run(args, os.path.basename(__file__))
    logger = Logger(args, run_name, restored=checkpoint[1]["logger"] if checkpoint else None)

    # TRY NOT TO MODIFY: seeding
    random.seed(args.seed)
    np.random.seed(args.seed)
    key = jax.random.key(args.seed)
    key, init_key = jax.random.split(key)

    env = make_env(args.env_id, args.seed, 0, args.capture_video, run_name)()
    eval_env = make_env(args.env_id, args.seed, 1, False, run_name)()
    assert isinstance(env.action_space, gym.spaces.Box), "only continuous action space is supported"
    obs_dim, action_dim = env.observation_space.shape[0], int(np.prod(env.action_space.shape))

    obs, _ = env.reset(seed=args.seed)
    actor = Actor(action_dim=action_dim)
    width = hidden_width(args.network_size)
    critic = VectorCritic(hidden=(width, width))
    optimizer = optax.adam(learning_rate=args.learning_rate)
    state = init_state(init_key, actor, critic, optimizer, obs_dim, action_dim, args.ent_coef)
    update = make_update(args, actor, critic, optimizer)
    explore, exploit = make_act(actor)

    rb = ReplayBuffer(args.buffer_size, obs_dim, action_dim, seed=args.seed)
    t_start, t_end = pruning_steps(args.total_timesteps, args.pruning_start, args.pruning_end)
    # the delivered network is the online critic pair (it drives the actor; the target follows it): sparsity/online and
    # sparsity/network are one number here; what --save-model writes is that pair and the dense actor
    actor_size = sum(x.size for x in jax.tree.leaves(state.actor_params))
    online_sparsity, critic_nonzero = mask_stats(split_ensemble(state.critic_mask))
    progress = Progress(args.total_timesteps)
    last_return, metrics, eval_return = None, None, None
    start_step, learn_after = 1, args.learning_starts

    def snapshot():
        """The whole training state between two steps (the replay buffer's arrays apart)."""
        rb_scalars, rb_arrays = buffer_state(rb, args.checkpoint_replay)
        return {"step": global_step, "state": jax.device_get(state), "key": np.asarray(jax.random.key_data(key)),
                "obs": obs, "env": env_state(env, env_core_state), "rb": rb_scalars, "learn_after": learn_after,
                "random": random.getstate(), "np_random": np.random.get_state(), "logger": logger.state(),
                "shown": (last_return, None if metrics is None else jax.device_get(metrics), eval_return)}, rb_arrays

    if checkpoint is not None:
        meta, saved, arrays = checkpoint
        state = jax.tree.map(jnp.asarray, saved["state"])
        key, obs = jax.random.wrap_key_data(jnp.asarray(saved["key"])), saved["obs"]
        set_env_state(env, saved["env"], set_env_core_state)
        set_buffer_state(rb, saved["rb"], arrays)
        random.setstate(saved["random"])
        np.random.set_state(saved["np_random"])
        last_return, metrics, eval_return = saved["shown"]
        start_step, learn_after = meta["step"] + 1, saved["learn_after"]
        if not arrays:
            learn_after = meta["step"] + args.learning_starts
            rb.ptr, rb.size = 0, 0
            print(f"the checkpoint holds no replay buffer: refilling it, training again after step {learn_after:,}")
        online_sparsity, critic_nonzero = mask_stats(split_ensemble(state.critic_mask))
        del checkpoint, arrays
    preemption = Preemption()
    start_time, sps_step, sps_time = time.time(), start_step - 1, time.time()

    for global_step in range(start_step, args.total_timesteps + 1):
        # ALGO LOGIC: put action logic here (actions in [-1, 1], scaled to the env's bounds when stepping)
        if global_step <= learn_after:
            action = unscale_action(env.action_space, env.action_space.sample())
        else:
            action, key = explore(state.actor_params, obs[None].astype(np.float32), key)
            action = np.asarray(action[0])

        # TRY NOT TO MODIFY: execute the game and log data.
        next_obs, reward, terminated, truncated, info = env.step(scale_action(env.action_space, action))
        rb.add(obs, action, reward, terminated, truncated, next_obs)
        if terminated or truncated:
            last_return = float(info["episode"]["r"])
            logger.scalars(global_step, **{"charts/episodic_return": last_return,
                                           "charts/episodic_length": int(info["episode"]["l"])})
            next_obs, _ = env.reset()
        obs = next_obs

        # ALGO LOGIC: pruning of the critics on the polynomial schedule
        if args.final_sparsity > 0 and is_pruning_step(global_step, args.pruning_frequency, t_start, t_end):
            sparsity = polynomial_sparsity(global_step, args.final_sparsity, t_start, t_end)
            state = prune_critic(state, sparsity, args.prune_scope)
            online_sparsity, critic_nonzero = mask_stats(split_ensemble(state.critic_mask))

        # ALGO LOGIC: training.
        if global_step > learn_after:
            key, update_key = jax.random.split(key)
            state, metrics = update(state, rb.sample(args.batch_size), update_key)

        if args.eval_episodes > 0 and global_step % args.eval_frequency == 0 and global_step < args.total_timesteps:
            eval_start = time.time()
            eval_return = float(np.mean(episode_returns(eval_env, exploit, state.actor_params, args.eval_episodes, args.seed)))
            logger.scalars(global_step, **{"eval/episodic_return": eval_return})
            eval_seconds = time.time() - eval_start
            start_time, sps_time = start_time + eval_seconds, sps_time + eval_seconds  # charts/SPS counts training only

        if global_step % 100 == 0:
            now = time.time()
            sps = int((global_step - sps_step) / max(now - sps_time, 1e-9))
            sps_step, sps_time = global_step, now
            values = {"charts/SPS": sps, "sparsity/online": online_sparsity, "sparsity/network": online_sparsity,
                      "charts/nonzero_params": critic_nonzero + actor_size}
            if metrics is not None:
                host_metrics = jax.device_get(metrics)  # one copy to the host, checked then logged
                stop_if_not_finite(global_step, "loss", host_metrics, logger.dir)
                values.update({f"losses/{k}": v for k, v in host_metrics.items()})
            logger.scalars(global_step, **values)
            progress.update(global_step, SPS=sps, **{"return": last_return, "eval": eval_return, "sparsity": online_sparsity})

        if preemption.signal or (args.checkpoint_frequency and global_step % args.checkpoint_frequency == 0
                                 and global_step < args.total_timesteps):
            stop_if_not_finite(global_step, "parameters", (state.critic_params, state.actor_params), logger.dir)
            path, size, seconds = save_checkpoint(logger.dir, global_step, os.path.basename(__file__), args, *snapshot())
            print(f"checkpoint {path}: {size / 1e6:.1f} MB in {seconds:.1f} s", flush=True)
            if preemption.signal:
                logger.close()
                sys.exit(EXIT_PREEMPTED)
    progress.update(args.total_timesteps, final=True, SPS=int(args.total_timesteps / (time.time() - start_time)),
                    **{"return": last_return, "eval": eval_return, "sparsity": online_sparsity})

    # the critics are saved as a list of per-critic trees (kernels ndim 2, biases ndim 1), as the masking code sees them
    if args.save_model:
        model_path = f"runs/{run_name}/{args.exp_name}.cleanrl_model"
        with open(model_path, "wb") as f:
            f.write(flax.serialization.to_bytes({"params": split_ensemble(state.critic_params),
                                                 "masks": split_ensemble(state.critic_mask),
                                                 "actor_params": state.actor_params}))
        print(f"model saved to {model_path}")
    # the final evaluation: of the saved model when there is one (it checks the file), else of the actor in memory
    if args.eval_episodes > 0:
        if args.save_model:
            episodic_returns = evaluate(model_path, make_env, args.env_id, args.eval_episodes, f"{run_name}-eval", Actor,
                                        capture_video=args.capture_video, seed=args.seed)
        else:
            episodic_returns = episode_returns(eval_env, exploit, state.actor_params, args.eval_episodes, args.seed)
        logger.scalars(args.total_timesteps, **{"eval/episodic_return": float(np.mean(episodic_returns))})
        print(f"eval/episodic_return {np.mean(episodic_returns):.1f} (mean of {len(episodic_returns)} episodes)")

    env.close()
    eval_env.close()
    logger.close()
