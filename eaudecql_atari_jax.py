# EauDeCQL: offline CQL whose population of sparse Q-networks discovers its own sparsity schedule (Eau De Q-Network). Docs: README.md
import collections
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
    """seed of the experiment (python, numpy, jax, the checkpoint and batch draws, the evaluation environment)"""
    track: bool = False
    """if toggled, this experiment will be tracked with Weights and Biases"""
    wandb_project_name: str = "eaudeqn"
    """the wandb's project name"""
    wandb_entity: Optional[str] = None
    """the entity (team) of wandb's project"""
    capture_video: bool = False
    """whether to capture videos of the evaluation episodes (check out `videos` folder)"""
    save_model: bool = False
    """whether to save the target network's params and masks (the last selected member, the evaluated agent) into
    `runs/{run_name}`"""
    run_name: Optional[str] = None
    """the run folder runs/{run_name} (default {env_id}__{exp_name}__{seed}__{unix time}); give one to resume by name"""
    checkpoint_frequency: int = 62_500
    """gradient steps between checkpoints of the whole training state into runs/{run_name}/checkpoint (0: none, but a
    SIGTERM, SIGUSR1 or Ctrl-C still writes one before exiting with status 75)"""
    resume: Optional[str] = None
    """auto: go on from the newest complete checkpoint of this run (--run-name, else the newest
    runs/{env_id}__{exp_name}__{seed}__*), or start fresh if there is none; or a checkpoint or run folder. A resumed
    run continues exactly as if it had never stopped (same params, loaded data, RNGs, env state
    and logged points); the dataset's files are read again"""

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
    """gradient steps between two target updates; each one selects the best member and refills the population"""
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

    population_size: int = 5
    """K, the number of online networks; 1 trains a single dense network (no tournament, sparsity stays 0)"""
    tournament_size: int = 3
    """members drawn (without replacement) in each tournament that refills the population; at most K"""
    alpha: float = 3.0
    """max multiple of the "reach sparsity 1 at the end of training" step sampled for a copy's new sparsity (Eq. 3)"""
    beta: float = 0.01
    """max fraction of the remaining weights a copy may prune at one population update (Eq. 3)"""
    prune_scope: Literal["global", "erk"] = "global"
    """global: one magnitude threshold over all kernels; erk: per-layer top-k with Erdos-Renyi-Kernel allocation"""
    member_init: Literal["independent", "shared"] = "independent"
    """independent: K inits (AdaDQN's choice, the spec's); shared: one dense init copied K times. The target is a hard
    copy of one member, so it never blends lineages, and lineages merge within a few selections (README, "One init or
    K inits")"""
    population_step: Literal["auto", "vmap", "unrolled"] = "auto"
    """how the one jitted update runs the K members: vmap, or a loop unrolled at trace time (same results); auto picks
    vmap on GPU/TPU and for K=1, unrolled on CPU, where XLA's batched (grouped) convolutions are about 2x slower"""


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
    """ALE v5 with the paper's preprocessing: sticky actions 0.25, 4-frame repeat with max-pool of the last two
    frames, 84x84 grayscale, no no-op/fire reset, game over is the only terminal, a 4-frame stack zero-padded at reset.
    Episodes are cut (truncated) after max_episode_steps agent steps; ALE's own frame limit is set just above it, so
    the step limit is the one that binds (ALE's 100,000 frames would cut at 25,000 steps, before the 27,000)."""

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
    """Missing or malformed data; main prints it as one line naming the file and exits with status 1."""


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


# >>> shared: population
class Diverged(RuntimeError):
    """No member has a finite cumulated loss and finite weights; main prints it as one line and exits with status 1."""


def tournament(rng, losses, tournament_size):
    """k* = argmin of the cumulated losses, then K - 1 tournaments of `tournament_size` members drawn without
    replacement, each won by its lowest loss. A non-finite loss (NaN or +-inf) never wins: a tournament whose
    contestants all have one is won by k*, so no such member is selected or copied; if no loss is finite the run has
    diverged (Diverged). Returns (k*, selected)."""
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
    """Eq. 3: xi ~ U(0, alpha); speed = min(xi * period / max(horizon - step, period), beta);
    s = s_p + speed * (1 - s_p). The line step period / (horizon - step) would reach sparsity 1 at the horizon."""
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
    """Population update at a target update. `pop` holds stacked (K, ...) "params", "masks" and "opt_state".
    k* and every selected member keep weights, mask, sparsity and Adam state; each free slot becomes a copy of its
    parent with a new sparsity (Eq. 3), a magnitude mask of the copied weights intersected with the parent's mask,
    and a fresh Adam state. A member whose weights are not all finite counts as a non-finite loss: it is never
    selected nor copied (see tournament); with no finite member left this raises Diverged. Returns (pop, sparsities,
    k*, pairs)."""
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
    p = jnp.nan_to_num(1.0 / (losses + 1e-6), nan=0.0, posinf=0.0, neginf=0.0)
    p = jnp.maximum(p, 0.0)
    total = p.sum()
    return jnp.where(total > 0, p / jnp.where(total > 0, total, 1.0), jnp.full_like(p, 1.0 / p.size))


def exit_diverged(e, logger):
    print(f"error: {e}", file=sys.stderr)
    logger.close()
    sys.exit(1)


# <<< shared: population


# ALGO LOGIC: one update of all members (CQL loss) against one shared target
def make_update(args, q_network, optimizer):
    """Returns the jitted population step (params, opt_state, masks, target_params, batch, cum_losses) ->
    (params, opt_state, cum_losses, losses, td_loss, q_values, cql_loss), per member on stacked (K, ...) members; the
    shared target's values are computed once. losses = td_loss + cql_alpha * cql_loss, the loss minimised and summed
    into the selection fitness L_k."""
    auto_vmap = jax.default_backend() != "cpu" or args.population_size == 1  # one member: vmap adds no batched conv
    vectorized = args.population_step == "vmap" or (args.population_step == "auto" and auto_vmap)

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

        (loss, (td_loss, q_mean, cql_loss)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = apply_mask(optax.apply_updates(params, updates), mask)
        return params, opt_state, loss, td_loss, q_mean, cql_loss

    def update(params, opt_state, masks, target_params, batch, cum_losses):
        y = td_target(target_params, batch)  # once per batch, shared by every member
        if vectorized:
            out = jax.vmap(member_step, in_axes=(0, 0, 0, None, None))(params, opt_state, masks, batch, y)
        else:
            steps = [member_step(member(params, k), member(opt_state, k), member(masks, k), batch, y)
                     for k in range(cum_losses.shape[0])]
            out = jax.tree.map(lambda *xs: jnp.stack(xs), *steps)
        params, opt_state, losses, td_loss, q_mean, cql_loss = out
        return params, opt_state, cum_losses + losses, losses, td_loss, q_mean, cql_loss

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


def check_offline_cql_args(args):
    """Checks shared by the offline CQL scripts (schedule of epochs, dataset sizes, CQL hyperparameters, evaluation)."""
    check(args.epochs >= 1, f"--epochs must be >= 1, got {args.epochs}")
    check(args.steps_per_epoch >= 1, f"--steps-per-epoch must be >= 1, got {args.steps_per_epoch}")
    check(args.learning_rate > 0, f"--learning-rate must be > 0, got {args.learning_rate}")
    check(args.adam_eps > 0, f"--adam-eps must be > 0, got {args.adam_eps}")
    check(args.checkpoints_per_epoch >= 1, f"--checkpoints-per-epoch must be >= 1, got {args.checkpoints_per_epoch}")
    check(args.transitions_per_checkpoint >= FixedReplayBuffer.STACK + 1,
          f"--transitions-per-checkpoint must be >= {FixedReplayBuffer.STACK + 1} (a 4-frame state and its next row), "
          f"got {args.transitions_per_checkpoint}")
    check(0.0 <= args.gamma <= 1.0, f"--gamma must be in [0, 1], got {args.gamma}")
    check(args.batch_size >= 1, f"--batch-size must be >= 1, got {args.batch_size}")
    check(args.target_update_period >= 1, f"--target-update-period must be >= 1, got {args.target_update_period}")
    check(args.cql_alpha >= 0.0, f"--cql-alpha must be >= 0, got {args.cql_alpha}")
    check(args.max_episode_steps >= 1, f"--max-episode-steps must be >= 1, got {args.max_episode_steps}")
    check(args.eval_episodes >= 0, f"--eval-episodes must be >= 0, got {args.eval_episodes}")
    check(0.0 <= args.eval_epsilon <= 1.0, f"--eval-epsilon must be in [0, 1], got {args.eval_epsilon}")
    hidden_width(args.network_size)
    check(bool(args.dataset_dir), "--dataset-dir must name a replay_logs folder")
    check_atari_env_id(args.env_id)
    FixedReplayBuffer.check_memory(args.checkpoints_per_epoch, args.transitions_per_checkpoint)


def exit_on_dataset_error(e, logger=None):
    print(f"error: {e}", file=sys.stderr)
    if logger is not None:
        logger.close()
    sys.exit(1)


# <<< atari_offline: cql


def validate(args):
    check_offline_cql_args(args)
    check_checkpoint_args(args)
    check(args.population_size >= 1, f"--population-size must be >= 1, got {args.population_size}")
    check(args.population_size == 1 or 1 <= args.tournament_size <= args.population_size,
          f"--tournament-size must be between 1 and --population-size ({args.population_size}), got {args.tournament_size}")
    check(args.alpha >= 0.0, f"--alpha must be >= 0, got {args.alpha}")
    check(0.0 <= args.beta <= 1.0, f"--beta must be in [0, 1], got {args.beta}")


if __name__ == "__main__":
    args = parse_or_exit(Args, validate)
    run_name, checkpoint = start_run(args, os.path.basename(__file__))
    total_steps = args.epochs * args.steps_per_epoch

    # TRY NOT TO MODIFY: seeding
    random.seed(args.seed)
    np.random.seed(args.seed)
    rng = np.random.default_rng(args.seed)  # tournaments and Eq. 3 sampling (host side)
    key = jax.random.key(args.seed)
    key, q_key = jax.random.split(key)

    env = make_env(args.env_id, args.seed, 0, args.capture_video, run_name, args.max_episode_steps)()
    assert isinstance(env.action_space, gym.spaces.Discrete), "only discrete action space is supported"
    env.reset(seed=args.seed)

    # the dataset is checked, and the first epoch's rows read, before anything is written
    try:
        rb = FixedReplayBuffer(args.dataset_dir, args.checkpoints_per_epoch, args.transitions_per_checkpoint,
                               num_actions=env.action_space.n, seed=args.seed)
        if checkpoint is None:
            loaded = rb.reload()
        else:
            rb.restore(checkpoint[1]["rb"])
            loaded = checkpoint[1]["rb"]["suffixes"]
    except DatasetError as e:
        exit_on_dataset_error(e)
    logger = Logger(args, run_name, restored=checkpoint[1]["logger"] if checkpoint else None)
    print(f"dataset {args.dataset_dir}: {len(rb.suffixes)} checkpoints; loaded {loaded} ({rb.nbytes() / 1e6:.0f} MB)")

    K = args.population_size
    q_network = QNetwork(action_dim=env.action_space.n, hidden=hidden_width(args.network_size))
    optimizer = optax.adam(learning_rate=args.learning_rate, eps=args.adam_eps)
    dummy_obs = np.zeros((1, FixedReplayBuffer.STACK, *FixedReplayBuffer.FRAME_SHAPE), np.uint8)
    q_keys = jax.random.split(q_key, K) if args.member_init == "independent" else jnp.stack([q_key] * K)
    params = jax.jit(jax.vmap(q_network.init, in_axes=(0, None)))(q_keys, dummy_obs)
    pop = {"params": params, "masks": jax.vmap(dense_mask)(params), "opt_state": jax.vmap(optimizer.init)(params)}
    target_params = member(pop["params"], 0)
    target_mask = member(pop["masks"], 0)
    sparsities = np.zeros(K)  # sampled sparsity of each member (Eq. 3 parents)
    cum_losses = jnp.zeros(K)  # L_k since the last target update
    update = make_update(args, q_network, optimizer)
    greedy = jax.jit(lambda p, o: q_network.apply(p, o).argmax(axis=-1))
    eval_rng = np.random.default_rng(args.seed)

    member_sparsity = [0.0] * K  # achieved (exact count) sparsity of each member
    network_sparsity, nonzero = mask_stats(target_mask)  # the delivered network: the target (member k*), evaluated and saved
    progress = Progress(total_steps)
    last_return, out = None, None
    global_step, start_epoch, first = 0, 1, 0

    def snapshot():
        """The whole training state between two gradient steps (the data: which checkpoints are loaded)."""
        return {"step": global_step, "epoch": epoch, "rb": rb.state(), "eval_rng": eval_rng.bit_generator.state,
                "pop": jax.device_get(pop), "target": jax.device_get((target_params, target_mask)),
                "population": (sparsities, np.asarray(cum_losses), rng.bit_generator.state),
                "key": np.asarray(jax.random.key_data(key)), "env": env_state(env, env_core_state),
                "random": random.getstate(), "np_random": np.random.get_state(), "logger": logger.state(),
                "shown": (last_return, None if out is None else jax.device_get(out))}

    if checkpoint is not None:
        meta, saved, _ = checkpoint
        pop = jax.tree.map(jnp.asarray, saved["pop"])
        target_params, target_mask = jax.tree.map(jnp.asarray, saved["target"])
        sparsities, cum_losses, rng.bit_generator.state = saved["population"]
        cum_losses, key = jnp.asarray(cum_losses), jax.random.wrap_key_data(jnp.asarray(saved["key"]))
        set_env_state(env, saved["env"], set_env_core_state)
        eval_rng.bit_generator.state = saved["eval_rng"]
        random.setstate(saved["random"])
        np.random.set_state(saved["np_random"])
        last_return, out = saved["shown"]
        global_step, start_epoch = meta["step"], saved["epoch"]
        first = global_step - (start_epoch - 1) * args.steps_per_epoch
        member_sparsity = [mask_stats(member(pop["masks"], k))[0] for k in range(K)]
        network_sparsity, nonzero = mask_stats(target_mask)
        del checkpoint
    preemption = Preemption()
    start_time, sps_step, sps_time = time.time(), global_step, time.time()

    for epoch in range(start_epoch, args.epochs + 1):
        if epoch > start_epoch:
            try:
                rb.reload()
            except DatasetError as e:
                exit_on_dataset_error(e, logger)
            sps_step, sps_time = global_step, time.time()

        for _ in range(first if epoch == start_epoch else 0, args.steps_per_epoch):
            global_step += 1
            # ALGO LOGIC: training, one gradient step of every member every iteration
            pop["params"], pop["opt_state"], cum_losses, *out = update(
                pop["params"], pop["opt_state"], pop["masks"], target_params, rb.sample(args.batch_size), cum_losses)
            if global_step % args.target_update_period == 0:
                # ALGO LOGIC: the best member becomes the target; tournaments refill the population
                host_losses = np.asarray(jax.device_get(cum_losses))
                try:
                    pop, sparsities, k_star, pairs = select_population(
                        rng, host_losses, pop, sparsities, global_step, total_steps, args.target_update_period, args,
                        optimizer)
                except Diverged as e:
                    exit_diverged(e, logger)
                target_params = jax.tree.map(jnp.copy, member(pop["params"], k_star))
                target_mask = member(pop["masks"], k_star)
                cum_losses = jnp.zeros(K)
                member_sparsity = [mask_stats(member(pop["masks"], k))[0] for k in range(K)]
                network_sparsity, nonzero = mask_stats(target_mask)
                logger.scalars(global_step, **{f"population/loss_{k}": host_losses[k] for k in range(K)},
                               **{"population/selected": k_star, "population/n_copies": len(pairs)})

            if global_step % 100 == 0:
                now = time.time()
                sps = int((global_step - sps_step) / max(now - sps_time, 1e-9))
                sps_step, sps_time = global_step, now
                losses, td_loss, q_mean, cql_loss = jax.device_get(out)
                logger.scalars(global_step, **{
                    "charts/SPS": sps, "losses/td_loss": np.mean(td_loss), "losses/q_values": np.mean(q_mean),
                    "losses/cql_loss": np.mean(cql_loss), "sparsity/online": float(np.mean(member_sparsity)),
                    "sparsity/network": network_sparsity, "charts/nonzero_params": nonzero,
                    **{f"sparsity/member_{k}": member_sparsity[k] for k in range(K)}})
                progress.update(global_step, SPS=sps, epoch=epoch, **{"return": last_return, "sparsity": network_sparsity})

            if preemption.signal or (args.checkpoint_frequency and global_step % args.checkpoint_frequency == 0
                                     and global_step < total_steps):
                path, size, seconds = save_checkpoint(logger.dir, global_step, os.path.basename(__file__), args,
                                                      snapshot(), {})
                print(f"checkpoint {path}: {size / 1e6:.1f} MB in {seconds:.1f} s", flush=True)
                if preemption.signal:
                    logger.close()
                    sys.exit(EXIT_PREEMPTED)

        # evaluation of the target network (the last selected member) in the real game after each epoch
        if args.eval_episodes > 0:
            returns, lengths = evaluate(target_params, greedy, env, args.eval_episodes, args.eval_epsilon, eval_rng)
            last_return = float(np.mean(returns))
            logger.scalars(global_step, **{"eval/episodic_return": last_return, "eval/episodic_length": np.mean(lengths)})
        sps_step, sps_time = global_step, time.time()
    progress.update(total_steps, final=True, SPS=int(total_steps / (time.time() - start_time)),
                    **{"return": last_return, "sparsity": network_sparsity})

    if args.save_model:
        model_path = f"runs/{run_name}/{args.exp_name}.cleanrl_model"
        with open(model_path, "wb") as f:
            f.write(flax.serialization.to_bytes({"params": target_params, "masks": target_mask}))
        print(f"model saved to {model_path} (the target network: the last selected member)")

    env.close()
    logger.close()
