"""Is EauDeSAC with K=1 dense SAC over a whole run, not only over the 20 steps of tests/test_k1_is_dense.py?

Feeds one stream of random batches to three learners built from the same key, with the real sizes (critic 256x256,
batch 256, Adam 3e-4, paper defaults otherwise):
  A  dense SAC            (polyprune_sac_mujoco_jax.py --final-sparsity 0)
  B  EauDeSAC, one member (eaudesac_mujoco_jax.py --population-size 1)
  C  dense SAC again, its critics' init multiplied by (1 + 1e-7): a float-rounding-sized perturbation
and prints, at a few steps, how far B and C have drifted from A (max over leaves of max|x - y| / max|y|) and their
losses and temperatures. If B drifts from A no faster than C does, B and A differ only by float rounding, which SAC
amplifies like any other perturbation: a gap between K=1 and dense runs is then seed noise, not a bug.
No environment: with MuJoCo in the loop a rounding difference also changes the actions, hence the data.

    python tools/sac_k1_drift.py [--steps 5000]
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import tyro  # noqa: E402

import eaudesac_mujoco_jax as eaude  # noqa: E402
import polyprune_sac_mujoco_jax as dense  # noqa: E402

OBS_DIM, ACTION_DIM = 17, 6  # HalfCheetah's


def random_batch(rng, n):
    return (rng.normal(size=(n, OBS_DIM)).astype(np.float32), rng.uniform(-1, 1, (n, ACTION_DIM)).astype(np.float32),
            rng.normal(size=n).astype(np.float32), (rng.random(n) < 0.01).astype(np.float32),
            rng.normal(size=(n, OBS_DIM)).astype(np.float32))


def drift(a, b):
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))) / (np.max(np.abs(np.asarray(y))) + 1e-12))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5000, help="updates on the shared batch stream")
    parser.add_argument("--seed", type=int, default=3)
    opts = parser.parse_args()
    learners = {}  # name -> (update, init_state arguments after the key, Args)
    for name, mod, argv in (("dense", dense, ["--final-sparsity", "0"]), ("eaude", eaude, ["--population-size", "1"])):
        args = tyro.cli(mod.Args, args=argv)
        actor = mod.Actor(action_dim=ACTION_DIM)
        critic = mod.VectorCritic(hidden=(mod.hidden_width(args.network_size),) * 2)
        optimizer = optax.adam(args.learning_rate)
        learners[name] = (mod.make_update(args, actor, critic, optimizer), (actor, critic, optimizer, OBS_DIM, ACTION_DIM),
                          args)
    (dense_update, dense_nets, args), (eaude_update, eaude_nets, _) = learners["dense"], learners["eaude"]
    key = jax.random.key(opts.seed)
    a = dense.init_state(key, *dense_nets, args.ent_coef)
    b, pop = eaude.init_state(key, *eaude_nets, 1, args.ent_coef)
    c = dense.init_state(key, *dense_nets, args.ent_coef)
    c = c.replace(critic_params=jax.tree.map(lambda x: x * (1 + 1e-7), c.critic_params))
    b_critic = lambda: eaude.join_ensemble(eaude.member(pop["params"], 0))  # noqa: E731
    rng, cum, start = np.random.default_rng(opts.seed), jnp.zeros(1), time.time()
    report = sorted({s for s in (1, 10, 100, 300, 1000, 2000, 3000, 5000, 10000) if s < opts.steps} | {opts.steps})
    print("step | drift K=1 vs dense: critic target actor | drift perturbed dense vs dense: critic target actor "
          "| qf_loss dense K=1 perturbed | log_alpha dense K=1 perturbed")
    for step in range(1, opts.steps + 1):
        batch, k = random_batch(rng, args.batch_size), jax.random.fold_in(key, step)
        a, am = dense_update(a, batch, k)
        pop, b, cum, bm = eaude_update(pop, b, batch, k, 0, cum)
        c, cm = dense_update(c, batch, k)
        if step in report:
            print(f"{step} | {drift(b_critic(), a.critic_params):.1e} {drift(b.target_params, a.target_params):.1e} "
                  f"{drift(b.actor_params, a.actor_params):.1e} | {drift(c.critic_params, a.critic_params):.1e} "
                  f"{drift(c.target_params, a.target_params):.1e} {drift(c.actor_params, a.actor_params):.1e} | "
                  f"{float(am['qf_loss']):.4f} {float(bm['qf_loss']):.4f} {float(cm['qf_loss']):.4f} | "
                  f"{float(a.log_alpha):.5f} {float(b.log_alpha):.5f} {float(c.log_alpha):.5f}", flush=True)
    print(f"# {opts.steps} updates x 3 learners in {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
