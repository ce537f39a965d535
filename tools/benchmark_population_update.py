"""Time of one EauDeDQN population update (one vmapped gradient step of all K members against the shared target)
for K members relative to K=1, in one process. The arithmetic bound with a shared target is about 4 for K=5
(each member costs a forward and a backward, ~3 forward passes; the target's forward is paid once).

Usage: python tools/benchmark_population_update.py [--sizes 1 5] [--network-size medium] [--batch-size 32] [--repeats 30]
       [--population-step auto|vmap|unrolled]
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import tyro  # noqa: E402

import eaudedqn_atari_jax as eaude  # noqa: E402


def build(k, hidden, batch_size, population_step, seed=0):
    args = tyro.cli(eaude.Args, args=["--population-size", str(k), "--batch-size", str(batch_size),
                                      "--population-step", population_step])
    net = eaude.QNetwork(action_dim=6, hidden=hidden)
    optimizer = optax.adam(args.learning_rate, eps=args.adam_eps)
    keys = jax.random.split(jax.random.key(seed), k + 1)
    params = jax.vmap(net.init, in_axes=(0, None))(keys[:k], np.zeros((1, 4, 84, 84), np.uint8))
    state = {"params": params, "opt": jax.vmap(optimizer.init)(params), "masks": jax.vmap(eaude.dense_mask)(params),
             "target": eaude.member(params, 0), "cum": jnp.zeros(k)}
    rng = np.random.default_rng(seed)
    batch = (rng.integers(0, 256, (batch_size, 4, 84, 84), dtype=np.uint8), rng.integers(0, 6, batch_size).astype(np.int32),
             rng.uniform(-1, 1, batch_size).astype(np.float32), np.zeros(batch_size, np.float32),
             rng.integers(0, 256, (batch_size, 4, 84, 84), dtype=np.uint8))
    return eaude.make_update(args, net, optimizer), state, batch


def run_once(update, state, batch):
    start = time.perf_counter()
    state["params"], state["opt"], state["cum"], loss, _ = update(state["params"], state["opt"], state["masks"],
                                                                  state["target"], batch, state["cum"])
    jax.block_until_ready(state["params"])
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--network-size", default="medium")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--population-step", default="auto", choices=["auto", "vmap", "unrolled"])
    a = parser.parse_args()
    hidden = eaude.hidden_width(a.network_size)
    setups = {k: build(k, hidden, a.batch_size, a.population_step) for k in a.sizes}
    for k, (update, state, batch) in setups.items():
        for _ in range(3):  # compile and warm up
            run_once(update, state, batch)
    times = {k: [] for k in a.sizes}
    for _ in range(a.repeats):  # interleaved, so that load changes hit every size alike
        for k, (update, state, batch) in setups.items():
            times[k].append(run_once(update, state, batch))
    base = np.median(times[a.sizes[0]])
    print(f"device {jax.devices()[0].platform}, --population-step {a.population_step}, network {a.network_size} ({hidden}), "
          f"batch {a.batch_size}, {a.repeats} repeats")
    for k in a.sizes:
        med = np.median(times[k])
        print(f"K={k}: median {1e3 * med:.2f} ms per population update, {med / base:.2f}x K={a.sizes[0]}")


if __name__ == "__main__":
    main()
