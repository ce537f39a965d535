"""Size, write time and read time of a full training checkpoint at the paper's sizes, per family, through the scripts'
own snapshot / save_checkpoint / read_checkpoint (the shared infrastructure block).

The training state is built with the scripts' own code at the default sizes: EauDeDQN (K=5 medium Q-networks,
params + Adam moments + target, a 1M-frame replay buffer filled with random frames), EauDeSAC (K=5 small critic pairs,
actor, target, a 1M-row HalfCheetah buffer), EauDeCQL (K=5 medium Q-networks; the loaded data is not written, its files
are re-read on resume). Atari is measured with and without the replay buffer (--no-checkpoint-replay).

Usage: python tools/benchmark_checkpoint.py [--dir DIR] [--atari-frames 1000000]
Needs about 8 GB of free memory and disk for the Atari case.
"""
import argparse
import os
import shutil
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import tyro

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import eaudecql_atari_jax as cql  # noqa: E402
import eaudedqn_atari_jax as dqn  # noqa: E402
import eaudesac_mujoco_jax as sac  # noqa: E402


def q_population(mod, k, width, action_dim=6):
    net = mod.QNetwork(action_dim=action_dim, hidden=width)
    optimizer = optax.adam(6.25e-5, eps=1.5e-4)
    keys = jax.random.split(jax.random.key(0), k)
    params = jax.vmap(net.init, in_axes=(0, None))(keys, jnp.zeros((1, 4, 84, 84), jnp.uint8))
    pop = {"params": params, "masks": jax.vmap(mod.dense_mask)(params), "opt_state": jax.vmap(optimizer.init)(params)}
    return {"pop": pop, "target": (mod.member(params, 0), mod.member(pop["masks"], 0))}


def measure(mod, script, args, run_dir, fields, with_arrays=True):
    """Snapshot of a TrainState holding `fields` (as the script's Checkpointer takes it), written, then read back."""
    start = time.time()
    state, arrays = mod.snapshot(mod.TrainState(**fields), with_arrays)
    path, size, write_s = mod.save_checkpoint(run_dir, 1000, script, args, state, arrays)
    read_start = time.time()
    mod.read_checkpoint(path, script, args)
    read_s = time.time() - read_start
    shutil.rmtree(os.path.join(run_dir, "checkpoint"))
    return size, write_s, read_s, time.time() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", default=None, help="where to write (default: a temporary folder)")
    parser.add_argument("--atari-frames", type=int, default=1_000_000)
    a = parser.parse_args()
    root = tempfile.mkdtemp(dir=a.dir, prefix="ckpt-bench-")
    rows = []
    try:
        # Atari online: EauDeDQN K=5 medium + replay
        args = tyro.cli(dqn.Args, args=[])
        state = q_population(dqn, 5, dqn.NETWORK_SIZES["medium"])
        rb = dqn.ReplayBuffer(a.atari_frames, seed=0)
        rng = np.random.default_rng(0)
        for start in range(0, a.atari_frames, 100_000):  # random frames (incompressible, as real ones nearly are)
            n = min(100_000, a.atari_frames - start)
            rb.frames[start:start + n] = rng.integers(0, 256, size=(n, 84, 84), dtype=np.uint8)
        rb.ptr, rb.size = 0, a.atari_frames
        for label, with_arrays in ((f"Atari EauDeDQN K=5 medium, replay of {a.atari_frames:,} frames", True),
                                   ("Atari EauDeDQN K=5 medium, --no-checkpoint-replay", False)):
            rows.append((label, *measure(dqn, "eaudedqn_atari_jax.py", args, os.path.join(root, "dqn"),
                                         {**state, "rb": rb}, with_arrays)))
        del rb
        # MuJoCo: EauDeSAC K=5 small critics + 1M-row buffer (HalfCheetah: obs 17, action 6)
        args = tyro.cli(sac.Args, args=[])
        actor, critic = sac.Actor(action_dim=6), sac.VectorCritic(hidden=(256, 256))
        shared, pop = sac.init_state(jax.random.key(0), actor, critic, optax.adam(3e-4), 17, 6, 5)
        rb = sac.ReplayBuffer(1_000_000, 17, 6, seed=0)
        rb.obs[:] = rng.normal(size=rb.obs.shape).astype(np.float32)
        rb.ptr, rb.size = 0, 1_000_000
        rows.append(("MuJoCo EauDeSAC K=5 small critics, replay of 1,000,000 rows",
                     *measure(sac, "eaudesac_mujoco_jax.py", args, os.path.join(root, "sac"),
                              {"sac": shared, "pop": pop, "rb": rb})))
        # offline: EauDeCQL K=5 medium (data re-read from the dataset on resume)
        args = tyro.cli(cql.Args, args=["--dataset-dir", root])
        rows.append(("Offline EauDeCQL K=5 medium (no data: re-read on resume)",
                     *measure(cql, "eaudecql_atari_jax.py", args, os.path.join(root, "cql"), q_population(cql, 5, 512))))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print("| checkpoint | size | write (fsync + SHA-256) | read and verify |")
    print("|---|---|---|---|")
    for label, size, write_s, read_s, _ in rows:
        print(f"| {label} | {size / 1e6:,.1f} MB | {write_s:.1f} s | {read_s:.1f} s |")


if __name__ == "__main__":
    main()
