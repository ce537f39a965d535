"""Memory of the online Atari replay buffer at capacity, measured: fills a ReplayBuffer of --capacity frames
through its add() with random frames and episodes, and reports the growth of the resident set size per transition.

Usage: python tools/benchmark_replay_memory.py [--capacity 1000000] [--script polyprune_dqn_atari_jax]
"""
import argparse
import importlib
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def rss_bytes():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--capacity", type=int, default=1_000_000)
    parser.add_argument("--script", default="polyprune_dqn_atari_jax")
    a = parser.parse_args()
    mod = importlib.import_module(a.script)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(1024, 84, 84), dtype=np.uint8)  # reused: only the buffer's own memory grows
    before = rss_bytes()
    start = time.time()
    rb = mod.ReplayBuffer(a.capacity, seed=0)
    steps = 0
    while rb.size < rb.capacity or steps < a.capacity:  # fill, then keep going so the ring has wrapped
        end = rng.random() < 1 / 2000  # episodes of about 2,000 steps
        rb.add(frames[steps % 1024], steps % 6, 1.0, end, False, frames[(steps + 1) % 1024])
        steps += 1
    fill_seconds = time.time() - start
    grown = rss_bytes() - before
    batch_start = time.time()
    for _ in range(100):
        rb.sample(32)
    print(f"{a.script}.ReplayBuffer({a.capacity:,}): {steps:,} adds in {fill_seconds:.0f} s; ring full ({rb.size:,} rows)")
    print(f"  arrays: {rb.nbytes() / rb.capacity:,.0f} bytes per transition ({rb.nbytes() / 1e9:.2f} GB)")
    print(f"  resident memory grew by {grown / 1e9:.2f} GB = {grown / rb.capacity:,.0f} bytes per transition")
    print(f"  sample(32): {1e3 * (time.time() - batch_start) / 100:.2f} ms")


if __name__ == "__main__":
    main()
