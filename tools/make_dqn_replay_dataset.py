r"""Writes a small dataset in the DQN Replay Dataset's exact on-disk format by playing an ALE game.

Usage:
  python tools/make_dqn_replay_dataset.py --out data/Pong/1 --env-id ALE/Pong-v5 --num-checkpoints 3 \
      --rows-per-checkpoint 20000
  python tools/make_dqn_replay_dataset.py --out data/Pong/1 --epsilon 0.01 \
      --model runs/ALE/Pong-v5__polyprune_dqn_atari_jax__1__<time>/polyprune_dqn_atari_jax.cleanrl_model

For each checkpoint i it writes, into <out>/replay_logs/, the six files of a Dopamine replay checkpoint, each a gzip
stream of one .npy array (np.save, allow_pickle=False):
  $store$_observation_ckpt.i.gz  (N, 84, 84) uint8   newest frame of the state in which the row's action was taken
  $store$_action_ckpt.i.gz       (N,) int32           a_j (the game's minimal action set)
  $store$_reward_ckpt.i.gz       (N,) float32         r_j, clipped to [-1, 1]
  $store$_terminal_ckpt.i.gz     (N,) uint8           1 if the episode ended after a_j (game over, or the cut at
                                                       --max-episode-steps: Dopamine's 2019 runner marked both)
  add_count_ckpt.i.gz            () int64             N - 1
  invalid_range_ckpt.i.gz        (5,) int64           [(c - 1 + k) mod N for k = 0..4], c = add_count mod N
Each checkpoint is what a fresh Dopamine buffer of capacity N holds after N - 1 adds: every episode starts with 3
all-zero rows (action 0, reward 0, terminal 0: Dopamine's zero transitions), and the last row (index N - 1) is never
written (all zero). Every checkpoint starts a new episode; the episode running when a checkpoint is full is dropped.
Frames come from the online scripts' preprocessing (polyprune_dqn_atari_jax.make_env: sticky actions 0.25, 4-frame
repeat, max of the last two frames, 84x84 grayscale). The policy is epsilon-greedy: uniform random actions by default,
or the greedy actions of a model saved by an online script (--model; its hidden width is read from the file).
Each file is written to a hidden temporary name in the same folder, then renamed.
"""
import gzip
import os
import sys
import time
from dataclasses import dataclass
from typing import Optional

import numpy as np
import tyro

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import polyprune_dqn_atari_jax as online  # noqa: E402  (tools may reuse the scripts' env and network)

STACK = 4
ARRAY_NAMES = ("observation", "action", "reward", "terminal")


@dataclass
class Args:
    out: str = "dqn-replay/Pong/1"
    """the run folder; files go to <out>/replay_logs/"""
    env_id: str = "ALE/Pong-v5"
    """the game to play (a gymnasium ALE v5 id)"""
    num_checkpoints: int = 2
    """number of checkpoints (suffixes 0, 1, ...) to write"""
    rows_per_checkpoint: int = 10_000
    """N, the rows of every array of a checkpoint (the real dataset has 1,000,000)"""
    epsilon: Optional[float] = None
    """probability of a uniform random action (default: 1.0 without --model, 0.01 with it)"""
    model: Optional[str] = None
    """a .cleanrl_model saved by an online script (flax to_bytes of {"params", "masks"}) to act greedily with"""
    seed: int = 0
    """seed of the environment and of the policy's random draws"""
    max_episode_steps: int = 27_000
    """agent steps after which an episode is cut (the row is marked terminal, as in the 2019 dataset)"""
    compresslevel: int = 9
    """gzip compression level (9 is Dopamine's gzip.GzipFile default)"""


def invalid_range(add_count, n, stack=STACK, update_horizon=1):
    """Dopamine's invalid_range: the rows around the cursor c = add_count mod N, [(c - 1 + k) mod N for k = 0..4]."""
    cursor = add_count % n
    return np.array([(cursor - update_horizon + k) % n for k in range(stack + update_horizon)], dtype=np.int64)


def save_npy_gz(path, array, compresslevel=9):
    """np.save(allow_pickle=False) into a gzip stream, written under a hidden temporary name, then renamed."""
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, f".{name}.partial")
    with gzip.open(tmp, "wb", compresslevel=compresslevel) as f:
        np.save(f, array, allow_pickle=False)
    os.replace(tmp, path)
    return path


def checkpoint_path(replay_dir, name, suffix):
    prefix = "$store$_" if name in ARRAY_NAMES else ""
    return os.path.join(replay_dir, f"{prefix}{name}_ckpt.{suffix}.gz")


def write_checkpoint(replay_dir, suffix, observation, action, reward, terminal, add_count=None, compresslevel=9):
    """Writes one checkpoint's 6 files with the dataset's dtypes; add_count defaults to N - 1. Returns the paths."""
    n = len(observation)
    add_count = n - 1 if add_count is None else add_count
    arrays = {
        "observation": np.asarray(observation, np.uint8),
        "action": np.asarray(action, np.int32),
        "reward": np.asarray(reward, np.float32),
        "terminal": np.asarray(terminal, np.uint8),
        "add_count": np.array(add_count, dtype=np.int64),
        "invalid_range": invalid_range(add_count, n),
    }
    assert arrays["observation"].ndim == 3 and all(len(arrays[k]) == n for k in ARRAY_NAMES), "rows disagree"
    os.makedirs(replay_dir, exist_ok=True)
    return [save_npy_gz(checkpoint_path(replay_dir, name, suffix), a, compresslevel) for name, a in arrays.items()]


def load_policy(model_path, env):
    """greedy(obs_stack) -> action of a saved (params, masks) model; the hidden width is read from its Dense_0 kernel."""
    import flax.serialization
    import jax

    with open(model_path, "rb") as f:
        saved = flax.serialization.msgpack_restore(f.read())
    params = jax.tree.map(lambda p, m: np.where(m, p, 0).astype(p.dtype), saved["params"], saved["masks"])
    hidden = int(params["params"]["Dense_0"]["kernel"].shape[1])
    q_network = online.QNetwork(action_dim=env.action_space.n, hidden=hidden)
    greedy = jax.jit(lambda p, o: q_network.apply(p, o).argmax(axis=-1))
    return lambda obs: int(greedy(params, obs[None])[0])


def play_checkpoints(env_id, num_checkpoints, rows, epsilon=1.0, seed=0, max_episode_steps=27_000, model=None,
                     record_stacks=False):
    """Yields one dict per checkpoint: observation, action, reward, terminal (N rows, N - 1 written), returns (raw
    returns of the episodes finished in it) and, with record_stacks, `stacks`: for each written non-padding row j the
    environment's own (obs, next_obs) 4-frame stacks (FrameStackObservation, zero-padded), None for padding rows."""
    assert rows >= STACK + 1, "a checkpoint needs at least 5 rows"
    env = online.make_env(env_id, seed, 0, False, "dataset", max_episode_steps)()
    policy = load_policy(model, env) if model else None
    rng = np.random.default_rng(seed)
    for i in range(num_checkpoints):
        data = {"observation": np.zeros((rows, 84, 84), np.uint8), "action": np.zeros(rows, np.int32),
                "reward": np.zeros(rows, np.float32), "terminal": np.zeros(rows, np.uint8), "returns": []}
        stacks = [None] * rows if record_stacks else None
        obs, _ = env.reset(seed=seed) if i == 0 else env.reset()
        j, episode_start = 0, True
        while j < rows - 1:  # add_count = N - 1: row N - 1 stays unwritten
            if episode_start:  # Dopamine adds stack - 1 zero transitions before an episode's first row
                j += min(STACK - 1, rows - 1 - j)
                episode_start = False
                continue
            if policy is None or rng.random() < epsilon:
                action = env.action_space.sample()
            else:
                action = policy(obs)
            next_obs, reward, terminated, truncated, info = env.step(action)
            done = terminated or truncated
            data["observation"][j], data["action"][j] = obs[-1], action
            data["reward"][j], data["terminal"][j] = np.clip(reward, -1.0, 1.0), done
            if record_stacks:
                stacks[j] = (np.array(obs), np.array(next_obs))
            j += 1
            if done:
                data["returns"].append(float(info["episode"]["r"]))
                obs, _ = env.reset()
                episode_start = True
            else:
                obs = next_obs
        if record_stacks:
            data["stacks"] = stacks
        yield data
    env.close()


def generate(args, record_stacks=False, quiet=False):
    """Plays and writes args.num_checkpoints checkpoints; returns what was recorded (one dict per checkpoint)."""
    epsilon = args.epsilon if args.epsilon is not None else (0.01 if args.model else 1.0)
    for ok, message in ((args.num_checkpoints >= 1, f"--num-checkpoints must be >= 1, got {args.num_checkpoints}"),
                        (args.rows_per_checkpoint >= STACK + 1,
                         f"--rows-per-checkpoint must be >= {STACK + 1}, got {args.rows_per_checkpoint}"),
                        (0.0 <= epsilon <= 1.0, f"--epsilon must be in [0, 1], got {epsilon}"),
                        (args.max_episode_steps >= 1, f"--max-episode-steps must be >= 1, got {args.max_episode_steps}"),
                        (0 <= args.compresslevel <= 9, f"--compresslevel must be in 0..9, got {args.compresslevel}"),
                        (args.model is None or os.path.isfile(args.model), f"--model {args.model}: no such file")):
        if not ok:
            raise ValueError(message)
    online.check_atari_env_id(args.env_id)
    replay_dir = os.path.join(args.out, "replay_logs")
    recorded = []
    start = time.time()
    for i, data in enumerate(play_checkpoints(args.env_id, args.num_checkpoints, args.rows_per_checkpoint, epsilon,
                                              args.seed, args.max_episode_steps, args.model, record_stacks)):
        paths = write_checkpoint(replay_dir, i, data["observation"], data["action"], data["reward"], data["terminal"],
                                 compresslevel=args.compresslevel)
        recorded.append(data)
        if not quiet:
            ends = int(data["terminal"].sum())
            mean = f"{np.mean(data['returns']):.1f}" if data["returns"] else "-"
            print(f"checkpoint {i}: {args.rows_per_checkpoint} rows, {ends} episode ends, mean return {mean}, "
                  f"{sum(os.path.getsize(p) for p in paths) / 1e6:.1f} MB ({time.time() - start:.0f} s)")
            for p in paths:
                print(f"  wrote {p}")
    return recorded


if __name__ == "__main__":
    try:
        generate(tyro.cli(Args, description=__doc__))
    except ValueError as e:  # online.ArgError is a ValueError
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
