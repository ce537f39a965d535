"""Peak memory and time of the offline scripts' streaming loader on a full-size (1M-row) checkpoint.

Usage: python tools/benchmark_dataset_memory.py [--dir /tmp/dqn-replay-1m] [--rows 1000000] [--keep 50000]
                                                [--script polyprune_cql_atari_jax]
1. Writes (once; reused when present) a synthetic checkpoint 0 in the DQN Replay Dataset's exact format into
   DIR/replay_logs: the six gzipped .npy files, byte-for-byte what np.save would write, but streamed to disk in chunks
   so that writing 7 GB of frames needs little memory. Frames: a constant background, a moving block and 4 rows of
   noise, with row j's index in its first 3 pixels; episodes of 2,000 steps, each after 3 all-zero rows; add_count 2N
   (a full ring, cursor 0). gzip level 1 (the format does not depend on the level).
2. In a fresh process: imports the script, then reads the checkpoint's first KEEP rows with its `load_checkpoint`,
   and prints the resident memory before and after, the peak (VmHWM), the peak traced by tracemalloc, the time, and
   the host time of one batch of 32 from those rows; it checks the rows read are rows 0..KEEP-1.
"""
import argparse
import gzip
import io
import os
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from tools.make_dqn_replay_dataset import checkpoint_path, invalid_range, save_npy_gz  # noqa: E402

EPISODE = 2_000


def npy_header(shape, dtype):
    buf = io.BytesIO()
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": tuple(shape)}
    np.lib.format.write_array_header_1_0(buf, header)
    return buf.getvalue()


def padding(idx):
    """Rows that are one of the 3 all-zero rows before an episode."""
    return idx % (EPISODE + 3) < 3


def synthetic_frames(start, count, rng):
    idx = np.arange(start, start + count)
    frames = np.zeros((count, 84, 84), np.uint8)
    frames[:, 70:, :] = 87  # ground
    x, y = idx % 76, (idx // 76) % 50 + 10
    for dy in range(8):
        for dx in range(8):
            frames[np.arange(count), y + dy, x + dx] = 236
    frames[:, 40:44, :] = rng.integers(0, 256, (count, 4, 84), dtype=np.uint8)
    frames[:, 0, 0], frames[:, 0, 1], frames[:, 0, 2] = idx & 255, (idx >> 8) & 255, (idx >> 16) & 255
    frames[:, 0, 3] = 1  # a real row (padding rows are all zero)
    frames[padding(idx)] = 0
    return frames


def write_synthetic_checkpoint(replay_dir, n, chunk=20_000):
    os.makedirs(replay_dir, exist_ok=True)
    rng = np.random.default_rng(0)
    path = checkpoint_path(replay_dir, "observation", 0)
    tmp = os.path.join(replay_dir, ".observation.partial")
    start = time.time()
    with gzip.open(tmp, "wb", compresslevel=1) as f:
        f.write(npy_header((n, 84, 84), np.uint8))
        for s in range(0, n, chunk):
            f.write(synthetic_frames(s, min(chunk, n - s), rng).tobytes())
    os.replace(tmp, path)
    idx = np.arange(n)
    in_episode = idx % (EPISODE + 3) - 3
    terminal = (in_episode == EPISODE - 1).astype(np.uint8)
    action = np.where(padding(idx), 0, rng.integers(0, 6, n)).astype(np.int32)
    reward = np.where(padding(idx), 0, rng.choice([-1.0, 0.0, 0.0, 0.0, 1.0], n)).astype(np.float32)
    for name, array in (("action", action), ("reward", reward), ("terminal", terminal),
                        ("add_count", np.array(2 * n, np.int64)), ("invalid_range", invalid_range(2 * n, n))):
        save_npy_gz(checkpoint_path(replay_dir, name, 0), array, compresslevel=1)
    size = sum(os.path.getsize(checkpoint_path(replay_dir, k, 0)) for k in
               ("observation", "action", "reward", "terminal", "add_count", "invalid_range"))
    print(f"wrote a {n:,}-row checkpoint to {replay_dir} ({size / 1e9:.2f} GB gzipped, {n * 84 * 84 / 1e9:.2f} GB of "
          f"frames decompressed) in {time.time() - start:.0f} s")


MEASURE = r"""
import importlib, sys, time, tracemalloc
import numpy as np
sys.path.insert(0, {root!r})

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024

mod = importlib.import_module({script!r})
before = status("VmRSS:")
tracemalloc.start()
start = time.time()
data = mod.load_checkpoint({replay_dir!r}, "0", {keep}, num_actions=6)
elapsed = time.time() - start
traced_peak = tracemalloc.get_traced_memory()[1]
tracemalloc.stop()
after, peak = status("VmRSS:"), status("VmHWM:")
frames = data["observation"]
real = frames[:, 0, 3] != 0
idx = np.arange(len(frames))
decoded = frames[:, 0, :3].astype(np.int64) @ np.array([1, 256, 65536])
assert len(frames) == {keep} and (decoded[real] == idx[real]).all(), "the rows read are not rows 0..keep-1"
kept = sum(a.nbytes for a in data.values() if isinstance(a, np.ndarray))
rb = mod.FixedReplayBuffer.__new__(mod.FixedReplayBuffer)
rb.loaded, rb.rng, rb.STACK = [data], np.random.default_rng(0), 4
t = time.time()
for _ in range(200):
    rb.sample(32)
sample_ms = (time.time() - t) / 200 * 1e3
print(f"kept rows: {keep:,} of {{mod.checkpoint_rows({replay_dir!r}, '0'):,}} ({{kept / 1e6:.0f}} MB held), "
      f"{{len(data['valid']):,}} valid transitions; read in {{elapsed:.1f}} s")
print(f"RSS before load {{before / 1e6:.0f}} MB, after {{after / 1e6:.0f}} MB, peak (VmHWM) {{peak / 1e6:.0f}} MB: "
      f"peak - before = {{(peak - before) / 1e6:.0f}} MB; tracemalloc peak during the load {{traced_peak / 1e6:.0f}} MB")
print(f"one batch of 32 (stack rebuild on the host): {{sample_ms:.2f}} ms")
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", default="/tmp/dqn-replay-1m")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--keep", type=int, default=50_000)
    parser.add_argument("--script", default="polyprune_cql_atari_jax")
    args = parser.parse_args()
    replay_dir = os.path.join(args.dir, "replay_logs")
    if not os.path.exists(checkpoint_path(replay_dir, "invalid_range", 0)):
        write_synthetic_checkpoint(replay_dir, args.rows)
    code = MEASURE.format(root=ROOT, script=args.script, replay_dir=replay_dir, keep=args.keep)
    return subprocess.run([sys.executable, "-c", code], env=dict(os.environ, JAX_PLATFORMS="cpu")).returncode


if __name__ == "__main__":
    sys.exit(main())
