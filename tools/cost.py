"""Compute cost of each algorithm and network size (the paper's Table 2): parameters, FLOPs, peak memory and time of a
gradient update, from the scripts' own network classes and update functions and the masks of saved models.

Sources
  runs        every `runs/{run_name}/{exp_name}.cleanrl_model` (written by --save-model) under the given folders,
              with its args.json: rows per (exp_name, env_id, network_size, population_size), nonzero counts and
              sparse FLOPs averaged over the row's models.
  --script    no saved model: the script's networks at --network-size; the sparse columns use --sparsity with the
              script's own make_mask applied to the initial weights (global magnitude threshold), or stay empty.

Conventions
  FLOPs       a multiply-add is 2 FLOPs; only the kernels' multiply-adds are counted (biases, activations, the loss,
              the optimizer and the mask are not). A layer applied at P positions per sample (a Dense: 1, a
              convolution: its output height x width) costs 2 x P x (kernel weights); at a sparsity it costs
              2 x P x (nonzero kernel weights): zeros are skipped.
  forward     one forward pass of the pruned network for one sample: the Q-network (DQN, CQL), the critic pair
              (SAC: both critics).
  action      one action: a Q-network forward (EauDeDQN: the drawn member, assumed at the saved sparsity); SAC: one
              forward of the actor, which is never pruned.
  update      one gradient update on a batch of B samples (--batch-size, else the run's), backward = 2 x forward:
              DQN/CQL: B (F_target + 3 K F_online), K = 1 for PolyPrune, the target at the saved sparsity.
              SAC: B (F_actor + F_target + 3 K F_critic + 3 F_actor + 2 F_critic): next actions, the Polyak target
              (never masked: counted dense), K critic pairs forward + backward, the actor forward + backward, and the
              critic forward + input gradient in the actor loss. EauDe members are all assumed at the saved
              member's sparsity (only the saved member's mask is in the file).
  memory      peak memory of the compiled update from XLA's memory analysis: arguments + outputs + temporaries -
              donated (aliased) buffers, in MB.
  time        median wall time of --repeats calls of the script's jitted update (make_update) on random inputs,
              after a compile and a warm-up call; dense compute (XLA does not skip zeros), on this machine's device.

Usage:
  python tools/cost.py runs                                   # every saved model under runs/
  python tools/cost.py --script eaudedqn_atari_jax polyprune_dqn_atari_jax --network-size small medium large
  python tools/cost.py --script eaudesac_mujoco_jax --env-id Humanoid-v4 --population-size 5 --sparsity 0.9 --out table2.md
"""
import argparse
import glob
import importlib
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import flax.linen as nn  # noqa: E402
import flax.serialization  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

SCRIPTS = {
    "polyprune_dqn_atari_jax": "dqn", "eaudedqn_atari_jax": "dqn", "polyprune_cql_atari_jax": "dqn",
    "eaudecql_atari_jax": "dqn", "polyprune_sac_mujoco_jax": "sac", "eaudesac_mujoco_jax": "sac",
}
POPULATION = {"eaudedqn_atari_jax", "eaudecql_atari_jax", "eaudesac_mujoco_jax"}


# ------------------------------------------------------------------------------------------------------------ counting
def layer_applications(module, params, *inputs):
    """{module path: positions per sample} of every Dense and Conv of `module` (a Dense: 1 per sample, a convolution:
    its output height x width), from one abstract forward pass on a batch of 1 (inputs must have batch size 1).
    Modules lifted by nn.vmap (the SAC critic pair) report one member's shapes, under the same path as their params."""
    positions = {}

    def interceptor(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if context.method_name == "__call__" and isinstance(context.module, (nn.Dense, nn.Conv)):
            positions[tuple(context.module.path)] = int(np.prod(out.shape[:-1]))
        return out

    with nn.intercept_methods(interceptor):
        jax.eval_shape(module.apply, params, *inputs)
    return positions


def leaves_with_paths(tree, path=()):
    """(path of string keys, leaf) of a nested dict/list tree (flax params, a msgpack-restored model, a list of trees)."""
    if isinstance(tree, dict) or hasattr(tree, "items"):
        for k in sorted(tree.keys(), key=str):
            yield from leaves_with_paths(tree[k], path + (str(k),))
    elif isinstance(tree, (list, tuple)):
        for i, t in enumerate(tree):
            yield from leaves_with_paths(t, path + (str(i),))
    else:
        yield path, tree


def module_path(path):
    """('0', 'params', 'VmapCritic_0', 'Dense_1', 'kernel') -> ('VmapCritic_0', 'Dense_1'): list indices and the
    'params' collection dropped, the leaf name removed."""
    return tuple(p for p in path[:-1] if p != "params" and not p.isdigit())


def forward_flops(tree, positions):
    """(dense, sparse) FLOPs of one forward pass for one sample: 2 x positions x kernel weights, summed over the
    kernels of `tree` (params, or a bool mask: then sparse counts its True entries). Leaves other than kernels
    (ndim <= 1) cost nothing."""
    dense = sparse = 0
    for path, leaf in leaves_with_paths(tree):
        abstract = isinstance(leaf, jax.ShapeDtypeStruct)  # shapes only (jax.eval_shape): counted dense
        leaf = leaf if abstract else np.asarray(leaf)
        if len(leaf.shape) <= 1 or path[-1] != "kernel":
            continue
        where = module_path(path)
        if where not in positions:
            raise ValueError(f"kernel {'/'.join(path)} belongs to no Dense or Conv of the network ({sorted(positions)})")
        size = int(np.prod(leaf.shape))
        dense += 2 * positions[where] * size
        sparse += 2 * positions[where] * (size if abstract else int(np.count_nonzero(leaf)))
    return dense, sparse


def param_counts(params, mask=None):
    """(total parameters, nonzero parameters): nonzero = the mask's True entries (biases are never masked), or the
    params' nonzero entries without a mask."""
    leaves = [x for _, x in leaves_with_paths(params)]
    total = sum(int(np.prod(x.shape)) for x in leaves)
    if mask is None:  # shapes only (jax.eval_shape) count as dense
        return total, sum(int(np.prod(x.shape)) if isinstance(x, jax.ShapeDtypeStruct) else int(np.count_nonzero(x))
                          for x in leaves)
    return total, sum(int(np.count_nonzero(np.asarray(m))) for _, m in leaves_with_paths(mask))


# -------------------------------------------------------------------------------------------------- networks per family
@dataclass
class Setup:
    """What the cost of one (script, env, size, K, batch) needs: the module, the script's Args, dimensions."""

    script: str
    mod: object
    args: object
    dims: tuple  # DQN: (num_actions,); SAC: (obs_dim, action_dim)

    @property
    def family(self):
        return SCRIPTS[self.script]

    @property
    def population(self):
        return int(getattr(self.args, "population_size", 1)) if self.script in POPULATION else 1

    def pruned_net(self, concrete=False):
        """(module, init params, init params in the saved layout, example inputs of batch 1) of the pruned network;
        the params are shapes only (jax.eval_shape) unless concrete."""
        width = self.mod.hidden_width(self.args.network_size)
        init = (lambda f, *a: jax.jit(f)(*a)) if concrete else jax.eval_shape
        if self.family == "dqn":
            net = self.mod.QNetwork(action_dim=self.dims[0], hidden=width)
            x = jnp.zeros((1, 4, 84, 84), jnp.uint8)
            params = init(net.init, jax.random.key(0), x)
            return net, params, params, (x,)
        obs_dim, action_dim = self.dims
        net = self.mod.VectorCritic(hidden=(width, width))
        inputs = (jnp.zeros((1, obs_dim)), jnp.zeros((1, action_dim)))
        params = init(net.init, jax.random.key(0), *inputs)
        split = [jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), params)] * 2 if not concrete else \
            self.mod.split_ensemble(params)
        return net, params, split, inputs  # saved layout: one tree per critic

    def actor(self):
        if self.family != "sac":
            return None
        actor = self.mod.Actor(action_dim=self.dims[1])
        x = jnp.zeros((1, self.dims[0]))
        return actor, jax.eval_shape(actor.init, jax.random.key(0), x), (x,)


def make_setup(script, env_id, network_size, population_size, batch_size, args_dict=None):
    """Imports the script and parses its Args (from a run's args.json when given, else its defaults and the flags)."""
    import tyro

    mod = importlib.import_module(script)
    argv = ["--network-size", str(network_size), "--batch-size", str(batch_size)]
    if env_id:
        argv += ["--env-id", env_id]
    if script in POPULATION and population_size:
        argv += ["--population-size", str(population_size), "--tournament-size", str(min(3, int(population_size)))]
    known = {f.name for f in mod.Args.__dataclass_fields__.values()}
    base = dict(args_dict or {})
    args = tyro.cli(mod.Args, args=argv, default=mod.Args(**{k: v for k, v in base.items() if k in known}))
    mod.hidden_width(args.network_size)  # the script's own check (ArgError, a ValueError)
    return Setup(script, mod, args, env_dims(mod, SCRIPTS[script], args.env_id))


def env_dims(mod, family, env_id):
    if family == "sac":
        return tuple(mod.check_mujoco_env_id(env_id))
    import ale_py
    import gymnasium as gym

    gym.register_envs(ale_py)
    env = gym.make(env_id, full_action_space=False)
    n = int(env.action_space.n)
    env.close()
    return (n,)


def load_model(path, setup):
    """(params, masks, actor params or None) of a .cleanrl_model in the script's save layout."""
    with open(path, "rb") as f:
        saved = flax.serialization.msgpack_restore(f.read())
    return saved["params"], saved["masks"], saved.get("actor_params")


# ----------------------------------------------------------------------------------------------------------- FLOPs
def update_flops(setup, f_net, f_net_dense, f_actor):
    """FLOPs of one gradient update (see the module docstring): f_net is the pruned network's forward FLOPs per
    sample at the sparsity counted, f_net_dense its dense count, f_actor the actor's (SAC)."""
    b, k = setup.args.batch_size, setup.population
    if setup.family == "dqn":
        return b * (f_net + 3 * k * f_net)
    return b * (f_actor + f_net_dense + 3 * k * f_net + 3 * f_actor + 2 * f_net)


# --------------------------------------------------------------------------------------------- measured update
def update_inputs(setup, seed=0):
    """(the script's jitted update, its arguments on random inputs, step: (compiled, arguments) -> next arguments)."""
    import optax

    mod, args = setup.mod, setup.args
    rng = np.random.default_rng(seed)
    key = jax.random.key(seed)
    b, k = args.batch_size, setup.population
    if setup.family == "dqn":
        n_actions = setup.dims[0]
        net = mod.QNetwork(action_dim=n_actions, hidden=mod.hidden_width(args.network_size))
        frames = lambda: rng.integers(0, 256, (b, 4, 84, 84), dtype=np.uint8)  # noqa: E731
        batch = (frames(), rng.integers(0, n_actions, b).astype(np.int32), rng.uniform(-1, 1, b).astype(np.float32),
                 np.zeros(b, np.float32), frames())
        optimizer = optax.adam(args.learning_rate, eps=args.adam_eps)
        update = mod.make_update(args, net, optimizer)
        if setup.script in POPULATION:  # one jit per init: one compile instead of one per eager op
            params = jax.jit(jax.vmap(net.init, in_axes=(0, None)))(jax.random.split(key, k), batch[0][:1])
            masks = jax.jit(jax.vmap(mod.dense_mask))(params)
            target = jax.tree.map(lambda x: x[0], params)
            call = [params, jax.jit(jax.vmap(optimizer.init))(params), masks, target, batch, jnp.zeros(k)]

            def step(fn, a):
                out = fn(*a)
                return [out[0], out[1], a[2], a[3], a[4], out[2]]
        else:
            params = jax.jit(net.init)(key, batch[0][:1])
            call = [params, jax.jit(optimizer.init)(params), jax.jit(mod.dense_mask)(params), jax.tree.map(jnp.copy, params),
                    batch]

            def step(fn, a):
                out = fn(*a)
                return [out[0], out[1], *a[2:]]
        return update, call, step

    obs_dim, action_dim = setup.dims
    width = mod.hidden_width(args.network_size)
    actor, critic = mod.Actor(action_dim=action_dim), mod.VectorCritic(hidden=(width, width))
    optimizer = optax.adam(learning_rate=args.learning_rate)
    obs = lambda: rng.standard_normal((b, obs_dim)).astype(np.float32)  # noqa: E731
    batch = (obs(), rng.uniform(-1, 1, (b, action_dim)).astype(np.float32), rng.standard_normal(b).astype(np.float32),
             np.zeros(b, np.float32), obs())
    update = mod.make_update(args, actor, critic, optimizer)
    if setup.script in POPULATION:
        extra = {"member_init": args.member_init} if hasattr(args, "member_init") else {}
        state, pop = mod.init_state(key, actor, critic, optimizer, obs_dim, action_dim, k, args.ent_coef, **extra)
        call = [pop, state, batch, key, 0, jnp.zeros(k)]

        def step(fn, a):
            out = fn(*a)
            return [out[0], out[1], a[2], a[3], a[4], out[2]]
    else:
        state = mod.init_state(key, actor, critic, optimizer, obs_dim, action_dim, args.ent_coef)
        call = [state, batch, key]

        def step(fn, a):
            out = fn(*a)
            return [out[0], a[1], a[2]]
    return update, call, step


def measure_update(setup, repeats=5, seed=0):
    """(median ms per update, peak MB from XLA's memory analysis) of the script's jitted update."""
    update, call, step = update_inputs(setup, seed)
    compiled = update.lower(*call).compile()
    mem = compiled.memory_analysis()
    peak = None
    if mem is not None:
        peak = (mem.argument_size_in_bytes + mem.output_size_in_bytes - mem.alias_size_in_bytes
                + mem.temp_size_in_bytes) / 1e6
    call = step(compiled, call)  # warm-up
    jax.block_until_ready(call[0])
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call = step(compiled, call)
        jax.block_until_ready(call[0])
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times), peak


# ------------------------------------------------------------------------------------------------------------- rows
def cost_row(setup, models=(), sparsity=None, repeats=5, measure=True):
    """One Table 2 row: counts of the pruned network (mean over the saved models' masks, or --sparsity on the init
    weights), FLOPs and, with measure, the update's time and memory."""
    net, init_params, layout_params, inputs = setup.pruned_net(concrete=sparsity is not None and not models)
    positions = layer_applications(net, init_params, *inputs)
    total, _ = param_counts(layout_params)
    f_dense, _ = forward_flops(layout_params, positions)
    actor = setup.actor()
    f_actor, actor_params = 0, None
    if actor is not None:
        a_net, a_params, a_inputs = actor
        f_actor, _ = forward_flops(a_params, layer_applications(a_net, a_params, *a_inputs))
        actor_params = param_counts(a_params)[0]

    masks = []
    for path in models:
        params, mask, _ = load_model(path, setup)
        if param_counts(params)[0] != total:
            raise ValueError(f"{path}: {param_counts(params)[0]} parameters, the {setup.script} network at "
                             f"--network-size {setup.args.network_size} has {total}")
        masks.append(mask)
    if not masks and sparsity is not None:
        masks.append(setup.mod.make_mask(layout_params, sparsity))
    if masks:
        nonzero = float(np.mean([param_counts(layout_params, m)[1] for m in masks]))
        f_sparse = float(np.mean([forward_flops(m, positions)[1] for m in masks]))
        kernel_total = sum(int(np.prod(x.shape)) for p, x in leaves_with_paths(layout_params) if p[-1] == "kernel")
        kernel_kept = float(np.mean([sum(int(np.count_nonzero(np.asarray(x))) for p, x in leaves_with_paths(m)
                                         if p[-1] == "kernel") for m in masks]))
        sparsity_value = 1.0 - kernel_kept / kernel_total
    else:
        nonzero = f_sparse = sparsity_value = None

    row = {"algorithm": getattr(setup.args, "exp_name", setup.script), "script": setup.script, "env": setup.args.env_id,
           "size": str(setup.args.network_size), "K": setup.population, "batch": setup.args.batch_size,
           "models": len(models), "params": total, "nonzero": nonzero, "sparsity": sparsity_value,
           "actor_params": actor_params, "fwd_dense": f_dense, "fwd_sparse": f_sparse,
           "update_dense": update_flops(setup, f_dense, f_dense, f_actor),
           "update_sparse": None if f_sparse is None else update_flops(setup, f_sparse, f_dense, f_actor),
           "action": f_actor if setup.family == "sac" else (f_sparse if f_sparse is not None else f_dense),
           "memory_mb": None, "time_ms": None}
    if measure:
        row["time_ms"], row["memory_mb"] = measure_update(setup, repeats)
    return row


def human(n, unit=""):
    if n is None:
        return "n/a"
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= scale:
            return f"{n / scale:.3g} {suffix}{unit}"
    return f"{n:.3g} {unit}".strip()


def markdown(rows):
    head = ["algorithm", "env", "size", "K", "batch", "models", "params", "nonzero params", "sparsity", "actor params",
            "forward FLOPs dense", "forward FLOPs sparse", "update FLOPs dense", "update FLOPs sparse", "action FLOPs",
            "peak memory (MB)", "time / update (ms)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["algorithm"], r["env"], r["size"], r["K"], r["batch"], r["models"], f"{r['params']:,}",
                 "n/a" if r["nonzero"] is None else f"{r['nonzero']:,.0f}",
                 "n/a" if r["sparsity"] is None else f"{r['sparsity']:.3f}",
                 "-" if r["actor_params"] is None else f"{r['actor_params']:,}",
                 human(r["fwd_dense"]), human(r["fwd_sparse"]), human(r["update_dense"]), human(r["update_sparse"]),
                 human(r["action"]), "n/a" if r["memory_mb"] is None else f"{r['memory_mb']:.1f}",
                 "n/a" if r["time_ms"] is None else f"{r['time_ms']:.2f}"]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def saved_models(roots, report):
    """{(exp_name, script, env_id, network_size, population_size, batch_size): (args, [model paths])} of every saved
    model under roots; runs without a model or with an unknown script are reported and skipped."""
    from tools.results import identify_script

    groups = {}
    for root in roots:
        for args_path in sorted(glob.glob(os.path.join(root, "**", "args.json"), recursive=True)):
            run_dir = os.path.dirname(args_path)
            try:
                with open(args_path) as f:
                    args = json.load(f)
            except (OSError, ValueError) as e:
                report(f"skipped {run_dir}: args.json unreadable ({e})")
                continue
            script = identify_script(args)
            if script is None:
                report(f"skipped {run_dir}: unknown script (exp_name {args.get('exp_name')!r})")
                continue
            model = os.path.join(run_dir, f"{args.get('exp_name')}.cleanrl_model")
            if not os.path.exists(model):
                report(f"skipped {run_dir}: no saved model ({os.path.basename(model)}; run with --save-model)")
                continue
            key = (str(args.get("exp_name")), script, args.get("env_id"), str(args.get("network_size")),
                   args.get("population_size"), args.get("batch_size"))
            groups.setdefault(key, (args, []))[1].append(model)
    return groups


def main(argv=None):
    doc = __doc__.split("\n\n", 1)
    parser = argparse.ArgumentParser(description=doc[0], epilog=doc[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", nargs="*", help="folders of runs whose saved models are counted")
    parser.add_argument("--script", nargs="+", default=[], choices=sorted(SCRIPTS),
                        help="scripts to cost without a saved model")
    parser.add_argument("--network-size", nargs="+", default=["small", "medium", "large"], help="sizes for --script")
    parser.add_argument("--env-id", nargs="+", default=[],
                        help="env ids for --script: Atari scripts take the first ALE/ id, MuJoCo scripts the first other "
                             "id (default: each script's default)")
    parser.add_argument("--population-size", type=int, help="K for the EauDe scripts with --script (default: theirs)")
    parser.add_argument("--batch-size", type=int, help="batch size (default: the run's, or the script's)")
    parser.add_argument("--sparsity", type=float,
                        help="with --script: sparse columns at this sparsity (make_mask on the init weights)")
    parser.add_argument("--repeats", type=int, default=5, help="timed update calls (default 5)")
    parser.add_argument("--no-time", action="store_true", help="skip compiling and timing the update (no memory, no time)")
    parser.add_argument("--out", help="also write the markdown table to this file")
    a = parser.parse_args(argv)
    if not a.run_dirs and not a.script:
        parser.error("give folders of runs with saved models, or --script")
    rows = []
    for (_, script, env_id, size, k, batch), (args, models) in sorted(saved_models(a.run_dirs, print).items(), key=str):
        try:
            setup = make_setup(script, env_id, size, k, a.batch_size or batch, args)
            rows.append(cost_row(setup, models, repeats=a.repeats, measure=not a.no_time))
        except Exception as e:  # a corrupt model, or one that does not fit its script: one line, never a crash
            print(f"skipped {len(models)} model(s) of {script} ({env_id}, {size}): {type(e).__name__}: {e}")
    for script in a.script:
        mod = importlib.import_module(script)
        atari = SCRIPTS[script] == "dqn"
        env_id = next((e for e in a.env_id if e.startswith("ALE/") == atari), mod.Args.env_id)
        for size in a.network_size:
            try:
                setup = make_setup(script, env_id, size, a.population_size, a.batch_size or mod.Args.batch_size)
            except ValueError as e:  # the script's own check of a flag (ArgError): one line, as the scripts do
                print(f"error: {script}: {e}", file=sys.stderr)
                return 2
            rows.append(cost_row(setup, sparsity=a.sparsity, repeats=a.repeats, measure=not a.no_time))
    if not rows:
        print("no saved models found")
        return 1
    table = markdown(rows)
    print(table)
    if a.out:
        with open(a.out, "w") as f:
            f.write(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
