"""How long members of different initial networks (lineages) coexist in an EauDe population started from K independent
inits: the evidence behind each script's --member-init default (docs/mujoco.md, "One init or K inits").

Runs the scripts' own tournament() and copy_pairs() on simulated cumulated losses and counts the population updates until
every member descends from one initial network. Two loss models: "iid" (every member's loss is fresh noise at every
update: selection is blind, the slowest case) and "lineage" (each initial network has a fixed quality and members of the
better lineages have lower losses, plus noise of the same size: what a real run, where init quality persists, is closer
to). Prints the median and 90th percentile in updates and as a fraction of each script's default run.

Usage: python tools/lineage_coalescence.py [--population-size 5] [--tournament-size 3] [--trials 10000]
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from eaudedqn_atari_jax import copy_pairs, tournament  # noqa: E402  (the shared population block)

# (script, population updates in a default run): total steps / update period, after learning starts
RUNS = {
    "eaudedqn_atari_jax (10M env steps, T_bar 8,000)": (10_000_000 - 20_000) // 8_000,
    "eaudecql_atari_jax (50 x 62,500 grad steps, T_bar 2,000)": 50 * 62_500 // 2_000,
    "eaudesac_mujoco_jax (1M env steps, T_bar 1,000)": 1_000_000 // 1_000,
}


def coalescence(rng, k, tournament_size, model, max_updates=10_000):
    lineage = np.arange(k)
    quality = rng.normal(size=k)  # per initial network (lineage model)
    for update in range(1, max_updates + 1):
        noise = rng.normal(size=k)
        losses = noise if model == "iid" else quality[lineage] + noise
        _, selected = tournament(rng, losses, tournament_size)
        new = lineage.copy()
        for free, parent in copy_pairs(selected, k):
            new[free] = lineage[parent]
        lineage = new
        if (lineage == lineage[0]).all():
            return update
    return max_updates


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--population-size", type=int, default=5)
    parser.add_argument("--tournament-size", type=int, default=3)
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    a = parser.parse_args()
    if not 1 <= a.tournament_size <= a.population_size or a.trials < 1:
        parser.error("need 1 <= --tournament-size <= --population-size and --trials >= 1")
    rng = np.random.default_rng(a.seed)
    print(f"K={a.population_size}, tournament size {a.tournament_size}, {a.trials} trials per loss model")
    for model in ("iid", "lineage"):
        n = np.array([coalescence(rng, a.population_size, a.tournament_size, model) for _ in range(a.trials)])
        med, p90 = np.median(n), np.percentile(n, 90)
        print(f"  {model:8s}: one lineage after {med:.0f} updates (median), {p90:.0f} (90th percentile), max {n.max()}")
        for run, updates in RUNS.items():
            print(f"      {run}: {100 * med / updates:.2f}% / {100 * p90 / updates:.2f}% of the run's {updates} updates")


if __name__ == "__main__":
    main()
