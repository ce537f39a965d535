# PolyPruneCQL: offline CQL on the DQN Replay Dataset with gradual magnitude pruning (cubic schedule). Docs: README.md
import atexit
import collections
import contextlib
import copy
import glob
import gzip
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
import zlib
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
    """whether to save params and masks (the target network, evaluated after each epoch) into `runs/{run_name}`"""
    run_name: Optional[str] = None
    """the run folder runs/{run_name} (default {env_id}__{exp_name}__{seed}__{unix time}); give one to resume by name"""
    checkpoint_frequency: int = 62_500
    """steps between checkpoints into runs/{run_name}/checkpoint (0: none; a SIGTERM, SIGUSR1 or Ctrl-C still writes one)"""
    resume: Optional[str] = None
    """auto (this run's newest checkpoint, else start fresh) or a checkpoint or run folder; the run goes on exactly"""

    env_id: str = "ALE/Pong-v5"
    """the id of the game the dataset was recorded on (a gymnasium ALE v5 id); the evaluation plays it"""
    dataset_dir: str = "dqn-replay/Pong/1/replay_logs"
    """a DQN Replay Dataset run's replay_logs folder (files $store$_observation_ckpt.{i}.gz, ...)"""
    epochs: int = 50
    """number of epochs; each loads its checkpoints, takes steps-per-epoch gradient steps, then evaluates"""
    steps_per_epoch: int = 62_500
    """gradient steps per epoch (50 x 62,500 = 3,125,000 in all)"""
    learning_rate: float = 5e-5
    """the learning rate of the Adam optimizer"""
    adam_eps: float = 3.125e-4
    """the epsilon of the Adam optimizer"""
    checkpoints_per_epoch: int = 5
    """dataset checkpoints loaded at each epoch, drawn without replacement (all of them when there are fewer)"""
    transitions_per_checkpoint: int = 50_000
    """rows kept from the start of each loaded checkpoint (50,000 of 1M = 5% of the data)"""
    gamma: float = 0.99
    """the discount factor gamma"""
    batch_size: int = 32
    """the batch size; every batch comes from one loaded checkpoint drawn uniformly"""
    target_update_period: int = 2_000
    """gradient steps between two target network updates (hard copy)"""
    cql_alpha: float = 0.1
    """weight of the CQL term mean(logsumexp_a Q(s, a) - Q(s, a_data)) added to the squared TD error"""
    max_episode_steps: int = 27_000
    """agent steps after which an evaluation episode is cut"""
    network_size: str = "medium"
    """width of the Q-network's hidden dense layer: small (32), medium (512), large (2048) or a positive integer"""
    eval_episodes: int = 10
    """episodes played by the target network after each epoch (0: no evaluation)"""
    eval_epsilon: float = 0.01
    """epsilon of the epsilon-greedy evaluation policy"""

    final_sparsity: float = 0.95
    """final fraction of zero kernel weights; 0 gives the dense CQL baseline"""
    pruning_start: float = 0.2
    """fraction of the total gradient steps (epochs x steps-per-epoch) at which pruning starts"""
    pruning_end: float = 0.8
    """fraction of the total gradient steps at which the final sparsity is reached"""
    pruning_frequency: int = 1_000
    """gradient steps between two mask recomputations during pruning"""
    prune_scope: Literal["global", "erk"] = "global"
    """global: one magnitude threshold over all kernels; erk: per-layer top-k with Erdos-Renyi-Kernel allocation"""


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


# >>> atari_offline: dataset
class DatasetError(ValueError):
    """Missing or malformed data: one `error:` line naming the file and exit status 1."""

    one_line = True


REPLAY_ARRAYS = ("observation", "action", "reward", "terminal")  # stored as $store$_{name}_ckpt.{suffix}.gz
REPLAY_FILES = REPLAY_ARRAYS + ("add_count", "invalid_range")  # a checkpoint's 6 files (a 7th, episode_end_indices, is unused)


def replay_file(dataset_dir, name, suffix):
    """Dopamine's file name: the four arrays carry the literal `$store$_` prefix, add_count and invalid_range none."""
    prefix = "$store$_" if name in REPLAY_ARRAYS else ""
    return os.path.join(dataset_dir, f"{prefix}{name}_ckpt.{suffix}.gz")


def _read_npy_header(f, path):
    """(shape, dtype) of the .npy array whose header starts the stream `f`."""
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f"unsupported .npy format version {version}")
    except (OSError, EOFError, ValueError, zlib.error) as e:
        raise DatasetError(f"{path}: not a gzip stream holding a .npy array ({e})") from None
    if dtype.hasobject:
        raise DatasetError(f"{path}: holds pickled Python objects, not a plain array")
    if fortran and len(shape) > 1:
        raise DatasetError(f"{path}: the array is stored in Fortran order; rows cannot be streamed")
    return shape, dtype


def npy_gz_header(path):
    """(shape, dtype) of a gzipped .npy file, decompressing only its header."""
    if not os.path.isfile(path):
        raise DatasetError(f"{path}: file missing")
    with gzip.open(path, "rb") as f:
        return _read_npy_header(f, path)


def read_npy_gz(path, max_rows=None, chunk_bytes=1 << 24):
    """The first `max_rows` rows (all if None) of a gzipped .npy array. Only the bytes of those rows are decompressed,
    straight into one preallocated array: peak memory is the kept rows plus one chunk, whatever the file's size."""
    if not os.path.isfile(path):
        raise DatasetError(f"{path}: file missing")
    with gzip.open(path, "rb") as f:
        shape, dtype = _read_npy_header(f, path)
        if shape:
            rows = shape[0] if max_rows is None else min(max_rows, shape[0])
            out = np.empty((rows, *shape[1:]), dtype)
        else:  # a 0-d array (add_count)
            rows, out = 1, np.empty((), dtype)
        view = memoryview(out.reshape(-1).view(np.uint8))
        pos = 0
        try:
            while pos < len(view):
                n = f.readinto(view[pos : pos + chunk_bytes])
                if not n:
                    break
                pos += n
        except (OSError, EOFError, zlib.error) as e:
            raise DatasetError(f"{path}: truncated or corrupt gzip stream while reading its first {rows} rows ({e})") from None
        if pos < len(view):
            raise DatasetError(f"{path}: truncated: the stream ends after {pos} of the {len(view)} bytes "
                               f"of its first {rows} rows")
    return out


def checkpoint_suffixes(dataset_dir):
    """(complete, incomplete) checkpoint suffixes: the suffix is the token before `.gz`; as in Dopamine's fixed replay,
    a suffix with 6 or 7 files is complete. Numeric suffixes sort numerically."""
    if not os.path.isdir(dataset_dir):
        raise DatasetError(f"{dataset_dir}: no such directory (--dataset-dir must be a DQN Replay run's replay_logs folder)")
    counts = collections.Counter(n.split(".")[-2] for n in os.listdir(dataset_dir) if n.endswith(".gz") and n.count(".") >= 2)
    order = lambda s: (0, int(s), s) if s.isdigit() else (1, 0, s)  # noqa: E731
    complete = sorted((s for s, c in counts.items() if c in (6, 7)), key=order)
    return complete, sorted((s for s in counts if s not in complete), key=order)


def missing_files(dataset_dir, suffix):
    paths = [replay_file(dataset_dir, name, suffix) for name in REPLAY_FILES]
    return [p for p in paths if not os.path.isfile(p)]


def checkpoint_rows(dataset_dir, suffix, frame_shape=(84, 84)):
    """Checks the headers of a checkpoint's 6 files (names, dtypes, shapes that agree); returns N, its number of rows."""
    path = {name: replay_file(dataset_dir, name, suffix) for name in REPLAY_FILES}
    header = {name: npy_gz_header(p) for name, p in path.items()}
    shape, dtype = header["observation"]
    if len(shape) != 3 or tuple(shape[1:]) != tuple(frame_shape) or dtype != np.uint8:
        raise DatasetError(f"{path['observation']}: expected (N, {frame_shape[0]}, {frame_shape[1]}) uint8 frames, "
                           f"got {shape} {dtype}")
    n = shape[0]
    expected = {"action": (n,), "reward": (n,), "terminal": (n,), "add_count": (), "invalid_range": "(k,)"}
    kinds = {"action": "iu", "reward": "f", "terminal": "biu", "add_count": "iu", "invalid_range": "iu"}
    for name in expected:
        shape, dtype = header[name]
        bad_shape = len(shape) != 1 if name == "invalid_range" else tuple(shape) != expected[name]
        if bad_shape:
            raise DatasetError(f"{path[name]}: shape {shape} disagrees with {expected[name]} "
                               f"(the {n} rows of {os.path.basename(path['observation'])})")
        if dtype.kind not in kinds[name]:
            raise DatasetError(f"{path[name]}: dtype {dtype} is not {'a float' if kinds[name] == 'f' else 'an integer'} type")
    return n


def valid_indices(terminals, invalid_range, stack=4):
    """Rows j that start a transition (Dopamine's is_valid_transition): j >= stack - 1, j + 1 < rows used, no terminal
    in rows j-3..j-1 (the state would span two episodes), j not in invalid_range (rows around the ring's cursor)."""
    rows = len(terminals)
    ok = np.zeros(rows, bool)
    ok[stack - 1 : rows - 1] = True
    terminal = np.asarray(terminals).astype(bool)
    for k in range(1, stack):
        ok[k:] &= ~terminal[: rows - k]
    invalid = np.asarray(invalid_range, np.int64)
    ok[invalid[(invalid >= 0) & (invalid < rows)]] = False
    return np.flatnonzero(ok)


def load_checkpoint(dataset_dir, suffix, max_rows, num_actions=None, stack=4, frame_shape=(84, 84)):
    """The first rows of one checkpoint, streamed: frames, actions, rewards, terminals and `valid`, the sampleable j.
    Rows used = min(max_rows, N, add_count): a buffer saved before it filled (add_count < N) has unwritten rows."""
    n = checkpoint_rows(dataset_dir, suffix, frame_shape)
    add_count = int(read_npy_gz(replay_file(dataset_dir, "add_count", suffix)))
    rows = min(max_rows, n, add_count) if add_count >= 0 else 0
    data = {"suffix": suffix, "rows": rows}
    for name, dtype in (("observation", np.uint8), ("action", np.int32), ("reward", np.float32), ("terminal", bool)):
        data[name] = read_npy_gz(replay_file(dataset_dir, name, suffix), rows).astype(dtype, copy=False)
    actions = data["action"]
    if rows and num_actions is not None and (actions.min() < 0 or actions.max() >= num_actions):
        bad = int(np.flatnonzero((actions < 0) | (actions >= num_actions))[0])
        raise DatasetError(f"{replay_file(dataset_dir, 'action', suffix)}: action {actions[bad]} at row {bad} is not one of "
                           f"the environment's {num_actions} actions (is --env-id the dataset's game?)")
    data["valid"] = valid_indices(data["terminal"], read_npy_gz(replay_file(dataset_dir, "invalid_range", suffix)), stack)
    if data["valid"].size == 0:
        raise DatasetError(f"{replay_file(dataset_dir, 'observation', suffix)}: no valid transition in the {rows} rows used "
                           f"(add_count {add_count}, N {n})")
    return data


def stack_transitions(data, idx, stack=4):
    """(obs, actions, rewards, terminals, next_obs) of rows idx: State(j) = rows j-3..j, next state = State(j+1), stacks
    (B, 4, H, W) oldest frame first. Episode starts need no masking: the data holds 3 all-zero rows before each one."""
    window = data["observation"][np.asarray(idx)[:, None] + np.arange(1 - stack, 2)]  # (B, stack + 1, H, W)
    return (window[:, :-1], data["action"][idx], data["reward"][idx], data["terminal"][idx].astype(np.float32),
            window[:, 1:])


class FixedReplayBuffer:
    """The DQN Replay Dataset (Dopamine's on-disk replay checkpoints) read as Dopamine's fixed replay: each `reload()`
    draws `checkpoints` complete checkpoints without replacement and streams the first `rows` rows of each; a batch
    picks one loaded checkpoint uniformly, then valid rows uniformly (with replacement). Every checkpoint's headers
    are checked at construction, so bad data stops the run before training; a loaded checkpoint's rows are checked
    as they are read."""

    STACK = 4
    FRAME_SHAPE = (84, 84)

    @staticmethod
    def check_memory(checkpoints, rows, frame_shape=(84, 84)):
        """Refuses kept rows that would not fit in the memory available now."""
        row_bytes = int(np.prod(frame_shape)) + 4 + 4 + 1  # frame, action, reward, terminal
        needed, available = checkpoints * rows * row_bytes, available_memory_bytes()
        check(needed < 0.9 * available, f"--transitions-per-checkpoint {rows} x --checkpoints-per-epoch {checkpoints} needs "
                                        f"{needed / 1e9:.1f} GB of memory but only {available / 1e9:.1f} GB is available")

    def __init__(self, dataset_dir, checkpoints, rows, num_actions=None, seed=0):
        self.dataset_dir, self.checkpoints, self.rows, self.num_actions = dataset_dir, checkpoints, rows, num_actions
        self.suffixes, incomplete = checkpoint_suffixes(dataset_dir)
        for suffix in incomplete:
            lacking = ", ".join(os.path.basename(p) for p in missing_files(dataset_dir, suffix)) or "unexpected extra files"
            print(f"warning: skipping incomplete checkpoint {suffix} of {dataset_dir} ({lacking})", file=sys.stderr)
        if not self.suffixes:
            first = missing_files(dataset_dir, incomplete[0])[:1] if incomplete else []
            reason = f"{first[0]}: file missing" if first else "no file named like $store$_observation_ckpt.0.gz"
            raise DatasetError(f"{reason} ({dataset_dir} holds no complete checkpoint: 6 or 7 files sharing a suffix)")
        self.sizes = {s: checkpoint_rows(dataset_dir, s, self.FRAME_SHAPE) for s in self.suffixes}
        self.rng = np.random.default_rng(seed)
        self.loaded = []

    def reload(self):
        """Draws and reads this epoch's checkpoints; returns their suffixes. The previous epoch's rows are freed first."""
        k = min(self.checkpoints, len(self.suffixes))
        if self.loaded and k == len(self.suffixes):
            return [c["suffix"] for c in self.loaded]  # it already holds every checkpoint
        chosen = [self.suffixes[i] for i in sorted(self.rng.choice(len(self.suffixes), size=k, replace=False))]
        self.loaded = []
        self.loaded = [load_checkpoint(self.dataset_dir, s, self.rows, self.num_actions, self.STACK, self.FRAME_SHAPE)
                       for s in chosen]
        return chosen

    def nbytes(self):
        return sum(a.nbytes for c in self.loaded for a in c.values() if isinstance(a, np.ndarray))

    def state(self):
        """What a training checkpoint keeps: the RNG and which checkpoints are loaded (their rows are read again)."""
        return {"rng": self.rng.bit_generator.state, "suffixes": [c["suffix"] for c in self.loaded]}

    def restore(self, state):
        self.rng.bit_generator.state = state["rng"]
        self.loaded = [load_checkpoint(self.dataset_dir, s, self.rows, self.num_actions, self.STACK, self.FRAME_SHAPE)
                       for s in state["suffixes"]]

    def sample(self, batch_size):
        data = self.loaded[self.rng.integers(len(self.loaded))]
        idx = data["valid"][self.rng.integers(0, data["valid"].size, size=batch_size)]
        return stack_transitions(data, idx, self.STACK)


# <<< atari_offline: dataset


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


# ALGO LOGIC: the CQL update with a mask re-applied after every optimizer step
def make_update(args, q_network, optimizer):
    """Returns the jitted gradient step
    (params, opt_state, mask, target_params, batch) -> (params, opt_state, td_loss, q_values, cql_loss);
    the loss minimised is td_loss + cql_alpha * cql_loss."""

    def td_target(target_params, batch):
        obs, actions, rewards, dones, next_obs = batch
        q_next = q_network.apply(target_params, next_obs).max(axis=-1)
        return rewards + args.gamma * (1.0 - dones) * q_next

    def member_step(params, opt_state, mask, batch, y):
        obs, actions = batch[0], batch[1]

        def loss_fn(p):
            q_all = q_network.apply(p, obs)
            q = jnp.take_along_axis(q_all, actions[:, None], axis=-1)[:, 0]
            td_loss = jnp.mean((q - y) ** 2)
            cql_loss = jnp.mean(jax.nn.logsumexp(q_all, axis=-1) - q)
            return td_loss + args.cql_alpha * cql_loss, (td_loss, q.mean(), cql_loss)

        (_, (td_loss, q_mean, cql_loss)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = apply_mask(optax.apply_updates(params, updates), mask)
        return params, opt_state, td_loss, q_mean, cql_loss

    def update(params, opt_state, mask, target_params, batch):
        return member_step(params, opt_state, mask, batch, td_target(target_params, batch))

    return jax.jit(update, donate_argnums=(0, 1))


# >>> atari_offline: cql
def evaluate(params, greedy, env, eval_episodes, epsilon=0.01, rng=None):
    """Plays eval_episodes episodes of `params` (epsilon-greedy through the jitted `greedy`) in `env`; returns the raw
    (unclipped) returns and the lengths."""
    rng = np.random.default_rng(0) if rng is None else rng
    returns, lengths = [], []
    obs, _ = env.reset()
    while len(returns) < eval_episodes:
        if rng.random() < epsilon:
            action = env.action_space.sample()
        else:
            action = int(greedy(params, obs[None])[0])
        obs, _, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            returns.append(float(info["episode"]["r"]))
            lengths.append(int(info["episode"]["l"]))
            obs, _ = env.reset()
    return returns, lengths


# <<< atari_offline: cql


def main(args):
    # INIT RUN: the run name (a resumed run goes on in its own folder), seeding
    run_name, checkpoint = start_run(args)
    total_steps = args.epochs * args.steps_per_epoch
    random.seed(args.seed)
    np.random.seed(args.seed)
    _, q_key = jax.random.split(jax.random.key(args.seed))

    # INIT ENV: the game the dataset was recorded on, played by the evaluation
    env = make_env(args.env_id, args.seed, 0, args.capture_video, run_name, args.max_episode_steps)()
    assert isinstance(env.action_space, gym.spaces.Discrete), "only discrete action space is supported"
    env.reset(seed=args.seed)

    # INIT DATA: every dataset checkpoint's headers are checked and the first epoch's rows read (a resumed run reads
    # its checkpoint's) before anything is written
    rb = FixedReplayBuffer(args.dataset_dir, args.checkpoints_per_epoch, args.transitions_per_checkpoint,
                           num_actions=env.action_space.n, seed=args.seed)
    if checkpoint is None:
        rb.reload()

    # INIT NETWORK: a dense Q-network, its mask and Adam state; the target is a copy
    q_network = QNetwork(action_dim=env.action_space.n, hidden=hidden_width(args.network_size))
    params = jax.jit(q_network.init)(q_key, np.zeros((1, FixedReplayBuffer.STACK, *FixedReplayBuffer.FRAME_SHAPE), np.uint8))
    optimizer = optax.adam(learning_rate=args.learning_rate, eps=args.adam_eps)
    update = make_update(args, q_network, optimizer)
    greedy = jax.jit(lambda p, o: q_network.apply(p, o).argmax(axis=-1))
    t_start, t_end = pruning_steps(total_steps, args.pruning_start, args.pruning_end)

    # TRAINING STATE: everything a checkpoint holds (the delivered network is the target; the dataset buffer keeps its
    # RNG and which checkpoints are loaded)
    mask = dense_mask(params)
    s = TrainState(step=0, epoch=1, params=params, mask=mask, opt_state=optimizer.init(params),
                   target=(jax.tree.map(jnp.copy, params), mask), rb=rb, env=env, eval_rng=np.random.default_rng(args.seed),
                   online_sparsity=0.0, network_sparsity=0.0, nonzero=mask_stats(mask)[1], last_return=None)
    restore(s, checkpoint)
    logger = Logger(args, run_name, checkpoint)
    print(f"dataset {args.dataset_dir}: {len(s.rb.suffixes)} checkpoints; loaded {[c['suffix'] for c in s.rb.loaded]} "
          f"({s.rb.nbytes() / 1e6:.0f} MB)")
    # checkpoints never hold non-finite weights
    checkpointer = Checkpointer(args, logger, total_steps, check=lambda s: stop_if_not_finite(s.step, "parameters", s.params,
                                                                                           logger.dir))
    progress = Progress(total_steps, s.step)

    # TRAINING LOOP: epochs of steps-per-epoch gradient steps on the epoch's loaded checkpoints, each then evaluated
    for epoch in range(s.epoch, args.epochs + 1):
        if epoch > s.epoch:  # ALGO LOGIC: a new epoch draws and reads its dataset checkpoints
            s.epoch = epoch
            with progress.paused():  # charts/SPS counts training steps only
                s.rb.reload()
        for global_step in range(s.step + 1, epoch * args.steps_per_epoch + 1):
            s.step = global_step
            # ALGO LOGIC: pruning on the polynomial schedule (x-axis: gradient steps), at the start of the step: when it
            # is also a target update, the target copies the just-pruned network
            if args.final_sparsity > 0 and is_pruning_step(global_step, args.pruning_frequency, t_start, t_end):
                sparsity = polynomial_sparsity(global_step, args.final_sparsity, t_start, t_end)
                s.mask = make_mask(s.params, sparsity, s.mask, args.prune_scope)
                s.params = apply_mask(s.params, s.mask)
                s.online_sparsity, _ = mask_stats(s.mask)

            # ALGO LOGIC: training, one gradient step on a batch of one loaded checkpoint
            s.params, s.opt_state, td_loss, q_mean, cql_loss = update(s.params, s.opt_state, s.mask, s.target[0],
                                                                      s.rb.sample(args.batch_size))
            if global_step % args.target_update_period == 0:
                s.target = (jax.tree.map(jnp.copy, s.params), s.mask)
                s.network_sparsity, s.nonzero = mask_stats(s.mask)

            # TRY NOT TO MODIFY: metrics every 100 steps, the progress line, checkpoints (periodic, or on a signal; never
            # of non-finite parameters)
            if global_step % 100 == 0:
                stop_if_not_finite(global_step, "loss", (td_loss, cql_loss), logger.dir)
                values = {"charts/SPS": progress.sps(global_step), "losses/td_loss": float(td_loss),
                          "losses/q_values": float(q_mean), "losses/cql_loss": float(cql_loss),
                          "sparsity/online": s.online_sparsity, "sparsity/network": s.network_sparsity,
                          "charts/nonzero_params": s.nonzero}
                logger.scalars(global_step, **values)
                progress.update(global_step, SPS=values["charts/SPS"], epoch=epoch,
                                **{"return": s.last_return, "sparsity": s.online_sparsity})
            checkpointer(s)

        # EVALUATE the target network in the real game after each epoch
        if args.eval_episodes > 0:
            with progress.paused():
                returns, lengths = evaluate(s.target[0], greedy, s.env, args.eval_episodes, args.eval_epsilon, s.eval_rng)
            s.last_return = float(np.mean(returns))
            logger.scalars(s.step, **{"eval/episodic_return": s.last_return, "eval/episodic_length": np.mean(lengths)})
    progress.update(total_steps, final=True, **{"return": s.last_return, "sparsity": s.online_sparsity})

    # SAVE the delivered network: the target, with its mask
    if args.save_model:
        model_path = f"runs/{run_name}/{args.exp_name}.cleanrl_model"
        with open(model_path, "wb") as f:
            f.write(flax.serialization.to_bytes({"params": s.target[0], "masks": s.target[1]}))
        print(f"model saved to {model_path}")
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


# >>> atari_offline: cql checks
def check_offline_cql_args(args):
    """Checks shared by the offline CQL scripts (schedule of epochs, dataset sizes, CQL hyperparameters, evaluation)."""
    check_ranges(args, epochs=">= 1", steps_per_epoch=">= 1", learning_rate="> 0", adam_eps="> 0",
                 checkpoints_per_epoch=">= 1", gamma="in [0, 1]", batch_size=">= 1", target_update_period=">= 1",
                 cql_alpha=">= 0", max_episode_steps=">= 1", eval_episodes=">= 0", eval_epsilon="in [0, 1]")
    check(args.transitions_per_checkpoint >= FixedReplayBuffer.STACK + 1,
          f"--transitions-per-checkpoint must be >= {FixedReplayBuffer.STACK + 1} (a 4-frame state and its next row), "
          f"got {args.transitions_per_checkpoint}")
    hidden_width(args.network_size)
    check(bool(args.dataset_dir), "--dataset-dir must name a replay_logs folder")
    check_atari_env_id(args.env_id)
    FixedReplayBuffer.check_memory(args.checkpoints_per_epoch, args.transitions_per_checkpoint)


# <<< atari_offline: cql checks


def validate(args):
    check_run_args(args)
    check_offline_cql_args(args)
    check_ranges(args, final_sparsity="in [0, 1)", pruning_start="in [0, 1]", pruning_end="in [0, 1]",
                 pruning_frequency=">= 1")
    check(args.pruning_start < args.pruning_end,
          f"--pruning-start {args.pruning_start} must come before --pruning-end {args.pruning_end}")


if __name__ == "__main__":
    main(parse_or_exit(Args, validate))
