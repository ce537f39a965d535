"""What sparsity buys at inference: the export's file size, the acting process's peak memory and the time of one action,
dense JAX against the sparse paths of tools/sparse_agent.py, for the scripts' QNetwork at several sizes and sparsities.

Cases: each --sizes network (a random init of polyprune_dqn_atari_jax's QNetwork with --actions actions) at each
--sparsities, masks from the script's own make_mask at --scope (sparsity 0: the dense mask), saved as --save-model does
({"params", "masks"}) and exported with tools/export_sparse.py (which checks the export's Q-values). The default scope
is ERK: the global magnitude scope ranks a random init's layers by their Xavier scale and at small >= 0.9 and medium
0.99 keeps no weight of Dense_0, a network whose Q-values ignore the observation ("severed" in the tables; XLA then
drops the convolutions as dead code). Trained masks are neither; the per-layer kept fractions are printed.

Paths (each reads only its own file and imports only what it acts with):
  dense   JAX, jitted: reads the .cleanrl_model (flax msgpack), applies the masks, acts with the QNetwork's dense
          convolutions and matmuls (jax.lax, the same layers; XLA multiplies the zeros too)
  scipy   tools/sparse_agent.py, numpy + scipy.sparse (im2col and CSR products), from the export alone
  bcoo    tools/sparse_agent.py --backend jax, jax.experimental.sparse BCOO products, jitted, from the export alone;
          skipped above --bcoo-max-nonzero kept weights
Memory: per case and path, a fresh process imports, loads and acts twice at batch 1; its peak resident memory (VmHWM,
the process's own high-water mark) after the imports alone and at the end.
Time: per case, one fresh process loads every path and times rounds of one action per path (Q-values and argmax,
observations in host memory, the action back on the host), the paths in turn, rotating which goes first, so that a
shared machine's load falls on them alike; after a warm-up call (which compiles), up to --repeats rounds or
--max-seconds per batch size (at least 3 rounds), batch 1 and batch 32; the median. The paths' Q-values on the same
observations are compared ("Q-values agree").

Usage:
  python tools/benchmark_sparse_inference.py                                  # the table of docs/deployment.md
  python tools/benchmark_sparse_inference.py --sizes small --sparsities 0 0.9 --paths dense scipy
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

PATHS = ("dense", "scipy", "bcoo")
SCRIPT = "polyprune_dqn_atari_jax"


def peak_mb():
    """Peak resident memory of this process in MB: VmHWM (Linux), else ru_maxrss. VmHWM is the high-water mark of this
    process's own address space; ru_maxrss of a subprocess also counts the parent's resident memory at the fork."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024 if sys.platform == "darwin" else 1024)  # bytes on macOS, kilobytes on Linux


# ------------------------------------------------------------------------------------------------ dense reference
CONVS = (("Conv_0", 4), ("Conv_1", 2), ("Conv_2", 1))  # the QNetwork's strides (tests check this against the script)


def dense_q_values(params, obs):
    """The QNetwork's forward pass in plain jax.lax (params: the flax tree's "params" entry), as flax computes it."""
    import jax
    import jax.numpy as jnp

    x = jnp.transpose(obs, (0, 2, 3, 1)).astype(jnp.float32) / 255.0
    for name, stride in CONVS:
        x = jax.lax.conv_general_dilated(x, params[name]["kernel"], (stride, stride), "SAME",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        x = jax.nn.relu(x + params[name]["bias"])
    x = x.reshape((x.shape[0], -1))
    x = jax.nn.relu(x @ params["Dense_0"]["kernel"] + params["Dense_0"]["bias"])
    return x @ params["Dense_1"]["kernel"] + params["Dense_1"]["bias"]


# ------------------------------------------------------------------------------------------------------- one case
def loader(path, file):
    """Imports what the path needs and returns load(): -> q_values(obs) of the file (the model for dense, else the
    export)."""
    if path == "dense":
        import flax.serialization
        import jax
        import jax.numpy as jnp

        def load():
            with open(file, "rb") as f:
                saved = flax.serialization.msgpack_restore(f.read())
            params = jax.tree.map(lambda p, m: jnp.asarray(np.where(m, p, 0).astype(p.dtype)),
                                  saved["params"]["params"], saved["masks"]["params"])
            del saved
            q_fn = jax.jit(dense_q_values)
            return lambda o: np.asarray(q_fn(params, o))
        return load
    from tools import sparse_agent

    if path == "bcoo":
        import jax  # noqa: F401
        from jax.experimental import sparse  # noqa: F401
    else:
        import scipy.sparse  # noqa: F401
    return lambda: sparse_agent.load(file, "jax" if path == "bcoo" else "scipy").q_values


def memory_child(path, file, obs_file):
    """Fresh process, one path: peak memory after the imports, and after loading and acting at batch 1."""
    obs = np.load(obs_file)
    load = loader(path, file)
    rss_imports = peak_mb()
    start = time.perf_counter()
    q_values = load()
    load_s = time.perf_counter() - start
    np.argmax(q_values(obs[:1]), axis=-1)
    np.argmax(q_values(obs[:1]), axis=-1)
    return {"rss_imports_mb": rss_imports, "rss_b1_mb": peak_mb(), "load_s": load_s}


def timing_child(files, obs_file, repeats, max_seconds):
    """Fresh process, every path loaded: one call of each path in turn (rotating who goes first) per round, so that
    they share the machine's load alike; per batch size up to `repeats` rounds or `max_seconds` (at least 3 rounds)."""
    obs = np.load(obs_file)
    q_fns = {path: loader(path, file)() for path, file in files.items()}
    out = {path: {"q": q(obs).tolist()} for path, q in q_fns.items()}  # also the warm-up (compiles) of batch 32
    for batch in (1, 32):
        o = obs[:batch]
        for q in q_fns.values():
            q(o)  # warm-up
        times, begin, rounds = {path: [] for path in q_fns}, time.perf_counter(), 0
        order = list(q_fns)
        while rounds < repeats and (rounds < 3 or time.perf_counter() - begin < max_seconds):
            for path in order[rounds % len(order):] + order[:rounds % len(order)]:
                t = time.perf_counter()
                np.argmax(q_fns[path](o), axis=-1)
                times[path].append(time.perf_counter() - t)
            rounds += 1
        for path, ts in times.items():
            out[path][f"b{batch}_ms"], out[path][f"b{batch}_n"] = 1e3 * statistics.median(ts), len(ts)
    return out


def make_case(folder, size, sparsity, actions, seed, scope):
    """Writes the (size, sparsity) model as --save-model does, with an args.json, and its export; returns the paths
    and the export's metadata."""
    import flax.serialization
    import jax

    from tools import export_sparse

    mod = __import__(SCRIPT)
    net = mod.QNetwork(action_dim=actions, hidden=mod.hidden_width(size))
    params = jax.jit(net.init)(jax.random.key(seed), np.zeros((1, 4, 84, 84), np.uint8))
    masks = mod.dense_mask(params) if sparsity == 0 else mod.make_mask(params, sparsity, scope=scope)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "args.json"), "w") as f:
        json.dump({"exp_name": SCRIPT, "network_size": size, "env_id": "ALE/Pong-v5"}, f)
    model = os.path.join(folder, f"{SCRIPT}.cleanrl_model")
    with open(model, "wb") as f:
        f.write(flax.serialization.to_bytes({"params": params, "masks": masks}))
    out, meta, _, _ = export_sparse.export(model)
    return model, out, meta


def run_child(argv):
    """A fresh interpreter running this file's --memory-child / --timing-child; its JSON answer, or {"error": ...}."""
    env = dict(os.environ, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
    out = subprocess.run([sys.executable, os.path.abspath(__file__), *argv], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        return {"error": (out.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------------------------ table
def fmt_ms(r, key):
    return "skipped" if r is None else (f"{r[key]:.2f}" if key in r else "failed")


def fmt_mb(r):
    if r is None:
        return "skipped"
    if "rss_b1_mb" not in r:
        return "failed"
    return f"{r['rss_b1_mb']:.0f} (+{r['rss_b1_mb'] - r['rss_imports_mb']:.0f})"


def progress(r):
    if r is None:
        return "skipped"
    return " ".join(str(r.get(k, "failed")) if k == "error" else f"{r[k]:.2f}" if k in r else "failed"
                    for k in ("b1_ms", "b32_ms", "rss_b1_mb")) + (f" ({r['error']})" if "error" in r else "")


def tables(rows, paths):
    names = {"dense": "dense JAX", "scipy": "scipy CSR", "bcoo": "JAX BCOO"}
    head = ["size", "sparsity", "kept kernel weights", "kept per layer % (conv 0-2, dense 0-1)", ".cleanrl_model bytes",
            "export bytes", "export / model"]
    head += [f"peak RSS {names[p]} MB (+ over imports)" for p in paths]
    t1 = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    head2 = ["size", "sparsity"] + [f"batch 1 {names[p]} ms" for p in paths] + [f"batch 32 {names[p]} ms" for p in paths]
    head2 += ["calls timed (fewest)", "Q-values agree"]
    t2 = ["| " + " | ".join(head2) + " |", "|" + "---|" * len(head2)]
    for row in rows:
        r = row["results"]
        label = f"{row['sparsity']:g}" + (" (severed)" if min(row["kept"]) == 0 else "")
        cells = [row["size"], label, f"{row['nonzero']:,}", " / ".join(f"{100 * k:.3g}" for k in row["kept"]),
                 f"{row['model_bytes']:,}",
                 f"{row['export_bytes']:,}", f"{row['export_bytes'] / row['model_bytes']:.3f}"]
        t1.append("| " + " | ".join(cells + [fmt_mb(r[p]) for p in paths]) + " |")
        ok = [x for x in r.values() if x is not None and "b32_n" in x]
        fewest = min((min(x["b1_n"], x["b32_n"]) for x in ok), default=0)
        cells = [row["size"], label] + [fmt_ms(r[p], "b1_ms") for p in paths]
        cells += [fmt_ms(r[p], "b32_ms") for p in paths] + [str(fewest), row["agree"]]
        t2.append("| " + " | ".join(cells) + " |")
    return "\n".join(t1) + "\n\n" + "\n".join(t2) + "\n"


def main(argv=None):
    doc = __doc__.split("\n\n", 1)
    parser = argparse.ArgumentParser(description=doc[0], epilog=doc[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["small", "medium", "large"])
    parser.add_argument("--sparsities", nargs="+", type=float, default=[0.0, 0.5, 0.9, 0.95, 0.99])
    parser.add_argument("--actions", type=int, default=6)
    parser.add_argument("--paths", nargs="+", choices=PATHS, default=list(PATHS))
    parser.add_argument("--repeats", type=int, default=30, help="most timed rounds per batch size (default 30)")
    parser.add_argument("--max-seconds", type=float, default=3.0,
                        help="stop timing a batch size after this many seconds of rounds (at least 3; default 3)")
    parser.add_argument("--bcoo-max-nonzero", type=int, default=2_500_000,
                        help="skip the BCOO path above this many kept weights (it is the slowest path there by far, "
                             "seconds per call at batch 32, and gathers one row of activations per kept weight; "
                             "default 2,500,000)")
    parser.add_argument("--scope", choices=["erk", "global"], default="erk",
                        help="make_mask's scope (default erk; see above)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="also write the tables to this file")
    parser.add_argument("--memory-child", nargs=3, metavar=("PATH", "FILE", "OBS"), help=argparse.SUPPRESS)
    parser.add_argument("--timing-child", nargs=2, metavar=("FILES", "OBS"), help=argparse.SUPPRESS)
    a = parser.parse_args(argv)
    if a.memory_child:
        print(json.dumps(memory_child(*a.memory_child)))
        return 0
    if a.timing_child:
        print(json.dumps(timing_child(json.loads(a.timing_child[0]), a.timing_child[1], a.repeats, a.max_seconds)))
        return 0
    bad = [s for s in a.sparsities if not 0.0 <= s < 1.0]
    if bad or a.actions < 1 or a.repeats < 1:
        print(f"error: need 0 <= --sparsities < 1, --actions >= 1, --repeats >= 1 (got {a.sparsities}, {a.actions}, "
              f"{a.repeats})", file=sys.stderr)
        return 2
    try:
        for size in a.sizes:
            __import__(SCRIPT).hidden_width(size)
    except ValueError as e:
        print(f"error: --sizes: {e}", file=sys.stderr)
        return 2

    began, load = time.time(), os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory(prefix="sparse-inference-") as tmp:
        obs_file = os.path.join(tmp, "obs.npy")
        np.save(obs_file, np.random.default_rng(a.seed).integers(0, 256, (32, 4, 84, 84), dtype=np.uint8))
        for size in a.sizes:
            for sparsity in a.sparsities:
                folder = os.path.join(tmp, f"{size}-{sparsity:g}")
                model, export, meta = make_case(folder, size, sparsity, a.actions, a.seed, a.scope)
                files = {path: model if path == "dense" else export for path in a.paths
                         if not (path == "bcoo" and meta["nonzero"] > a.bcoo_max_nonzero)}
                results = {path: run_child(["--memory-child", path, files[path], obs_file]) if path in files else None
                           for path in a.paths}
                timing = run_child(["--timing-child", json.dumps(files), obs_file, "--repeats", str(a.repeats),
                                    "--max-seconds", str(a.max_seconds)])
                for path in files:
                    results[path].update(timing.get(path, {"error": timing.get("error")}))
                qs = [np.array(r["q"]) for r in results.values() if r is not None and "q" in r]
                tol = 1e-6 + 1e-4 * max([0.0] + [float(np.abs(q).max()) for q in qs])
                agree = "yes" if all(np.allclose(q, qs[0], rtol=0, atol=tol) for q in qs) else "NO"
                kept = [layer["nonzero"] / layer["weights"] for layer in meta["layers"] if "weights" in layer]
                rows.append({"size": size, "sparsity": sparsity, "nonzero": meta["nonzero"], "kept": kept,
                             "model_bytes": os.path.getsize(model), "export_bytes": os.path.getsize(export),
                             "results": results, "agree": agree})
                print(f"{size} {sparsity:g}: " + ", ".join(f"{p} {progress(r)}" for p, r in results.items()),
                      file=sys.stderr, flush=True)
    table = tables(rows, a.paths)
    load_end = os.getloadavg()
    footer = (f"\nmasks: make_mask scope {a.scope}, seed {a.seed}; timing: up to {a.repeats} rounds or {a.max_seconds:g} s "
              f"per batch size; {os.cpu_count()} CPUs, load average {load[0]:.1f} at the start and {load_end[0]:.1f} at "
              f"the end; {time.time() - began:.0f} s in all\n")
    print(table + footer)
    if a.out:
        with open(a.out, "w") as f:
            f.write(table + footer)
    return 0


if __name__ == "__main__":
    sys.exit(main())
