"""Exports a trained sparse Q-network (a --save-model .cleanrl_model of a DQN or CQL script) to one compact file: each
pruned kernel in CSR (reshaped to 2-D: kernel inputs x output units, the smallest unsigned index dtype that fits),
biases dense, the metadata that rebuilds the network, and a SHA-256 checksum. tools/sparse_agent.py acts from it alone;
the format is described there.

What is exported: the saved params with their masks applied (apply_mask: a weight is kept where its mask is True,
biases included), exactly the masks' kept kernel weights (a kept weight that happens to be 0.0 is stored too). The
network's layers (kernel sizes, strides, SAME padding made explicit) are read from the script's own QNetwork.

Which script wrote the model: args.json beside it (as tools/cost.py reads runs), else the model's file name
({exp_name}.cleanrl_model), else --script. Only the Q-networks that act are exported: eaudedqn_atari_jax,
polyprune_dqn_atari_jax, eaudecql_atari_jax, polyprune_cql_atari_jax. A SAC model is refused (SAC acts with its
actor, which is never pruned; its pruned networks are the critics).

After writing, the file is read back and its Q-values are checked against the script's QNetwork (dense, masks
applied) on --check random observations; a mismatch is an error and the file is removed.

Usage:
  python tools/export_sparse.py runs/Pong__eaudedqn/eaudedqn_atari_jax.cleanrl_model        # -> ...sparseq beside it
  python tools/export_sparse.py MODEL --out agent.sparseq
"""
import argparse
import hashlib
import importlib
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

from tools import sparse_agent  # noqa: E402
from tools.results import EXP_PREFIXES, identify_script  # noqa: E402

Q_SCRIPTS = ("eaudedqn_atari_jax", "polyprune_dqn_atari_jax", "eaudecql_atari_jax", "polyprune_cql_atari_jax")
SAC_SCRIPTS = ("eaudesac_mujoco_jax", "polyprune_sac_mujoco_jax")
INPUT_SHAPE = (4, 84, 84)
SUFFIX = ".sparseq"


class ExportError(ValueError):
    """Bad input: its message is the one `error:` line."""


def sac_refusal(path, why):
    return ExportError(f"{path} is a SAC model ({why}): only the Q-networks that act are exported "
                       f"({', '.join(Q_SCRIPTS)}); SAC acts with its actor, which is never pruned")


def read_model(path):
    """(the restored tree, the model file's bytes) of a .cleanrl_model; ExportError if it is none."""
    if not os.path.isfile(path):
        raise ExportError(f"{path}: no such file")
    with open(path, "rb") as f:
        raw = f.read()
    import flax.serialization

    try:
        tree = flax.serialization.msgpack_restore(raw)
    except Exception as e:  # msgpack raises several types (ExtraData, FormatError, ValueError, ...) on a non-msgpack file
        raise ExportError(f"{path} is not a saved model (a --save-model .cleanrl_model): not msgpack "
                          f"({type(e).__name__})") from None
    if not isinstance(tree, dict) or "params" not in tree:
        raise ExportError(f"{path} is not a saved model (a --save-model .cleanrl_model): no 'params' entry")
    return tree, raw


def identify(path, script=None):
    """(script, args.json dict or {}): --script, else args.json beside the model, else the file name's exp_name."""
    args_path = os.path.join(os.path.dirname(os.path.abspath(path)), "args.json")
    args = {}
    if os.path.exists(args_path):
        try:
            with open(args_path) as f:
                args = json.load(f)
        except (OSError, ValueError) as e:
            raise ExportError(f"{args_path}: unreadable ({e})") from None
    if script is None and args:
        script = identify_script(args)
    if script is None:
        stem = os.path.basename(path).split(".")[0]
        script = next((s for prefix, s in EXP_PREFIXES if stem.startswith(prefix)), None)
    if script is None:
        raise ExportError(f"cannot tell which script wrote {path}: no args.json beside it and its name names no "
                          f"script; give --script ({', '.join(Q_SCRIPTS)})")
    return script, args


def flat(tree, prefix=()):
    """{path tuple: leaf} of a nested dict."""
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(flat(v, prefix + (k,)))
        else:
            out[prefix + (k,)] = v
    return out


def network_layout(mod, num_actions, hidden):
    """(flat {path: shape} of the script's QNetwork params, [layer spec] in call order) from one abstract forward
    pass: each Conv's kernel size, strides and SAME padding made explicit, each Dense's features."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    net = mod.QNetwork(action_dim=num_actions, hidden=hidden)
    x = jax.ShapeDtypeStruct((1, *INPUT_SHAPE), jnp.uint8)
    shapes = jax.eval_shape(net.init, jax.random.key(0), x)
    specs = []

    def interceptor(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        m = context.module
        if context.method_name != "__call__" or not isinstance(m, (nn.Conv, nn.Dense)):
            return out
        spec = {"name": m.name, "activation": None}
        if isinstance(m, nn.Conv):
            plain = (m.padding == "SAME" and m.feature_group_count == 1 and m.use_bias
                     and all(d in (None, 1) or tuple(np.atleast_1d(d)) == (1,) * len(m.kernel_size)
                             for d in (m.input_dilation, m.kernel_dilation)))
            if not plain:
                raise ExportError(f"{mod.__name__}.QNetwork: {m.name} is not a plain SAME convolution; not exportable")
            in_hw, out_hw = args[0].shape[1:3], out.shape[1:3]
            strides = tuple(int(s) for s in np.broadcast_to(m.strides or 1, (2,)))
            pads = jax.lax.padtype_to_pads(in_hw, tuple(m.kernel_size), strides, "SAME")
            spec.update(type="conv", strides=list(strides), padding=[list(map(int, p)) for p in pads],
                        input_hw=list(map(int, in_hw)), output_hw=list(map(int, out_hw)))
        else:
            spec.update(type="dense")
        specs.append(spec)
        return out

    with nn.intercept_methods(interceptor):
        jax.eval_shape(net.apply, shapes, x)
    layers = []
    for spec in specs:
        if spec["type"] == "dense" and layers and layers[-1]["type"] == "conv":
            layers.append({"type": "flatten", "name": "flatten", "order": "HWC"})
        layers.append(spec)
    # the activations are the QNetwork's: ReLU after every layer but the last (checked numerically after writing)
    for spec in [s for s in layers if s["type"] != "flatten"][:-1]:
        spec["activation"] = "relu"
    return {k: tuple(v.shape) for k, v in flat(shapes).items()}, layers


def export(model_path, out_path=None, script=None, check=8, seed=0):
    """Writes the export of model_path (default: beside it, with SUFFIX); returns (out_path, meta, bytes written, the
    largest |Q difference| to the dense network on `check` random observations, or None without a check)."""
    tree, raw = read_model(model_path)
    params = tree["params"]
    if "actor_params" in tree or isinstance(params, list):
        why = "it holds actor_params" if "actor_params" in tree else "its params are a list of critics"
        raise sac_refusal(model_path, why)
    if "masks" not in tree:
        raise ExportError(f"{model_path} has no masks: a --save-model file holds {{'params', 'masks'}}; "
                          f"this one holds {sorted(tree)}")
    script, args = identify(model_path, script)
    if script in SAC_SCRIPTS:
        raise sac_refusal(model_path, f"written by {script}")
    if script not in Q_SCRIPTS:
        raise ExportError(f"--script {script!r} is not one of the Q-network scripts ({', '.join(Q_SCRIPTS)})")
    if not isinstance(params, dict) or not isinstance(tree["masks"], dict):
        raise ExportError(f"{model_path} is not a saved Q-network: params and masks must be trees of arrays")
    p, m = flat(params), flat(tree["masks"])
    try:
        num_actions = int(p[("params", "Dense_1", "kernel")].shape[1])
        hidden = int(p[("params", "Dense_0", "kernel")].shape[1])
    except (KeyError, AttributeError, IndexError):
        raise ExportError(f"{model_path} is not a saved Q-network of {script} (no params/Dense_0 and Dense_1 kernels)") \
            from None

    mod = importlib.import_module(script)
    network_size = str(args.get("network_size", next((k for k, v in mod.NETWORK_SIZES.items() if v == hidden), hidden)))
    try:
        width = mod.hidden_width(network_size)
    except ValueError as e:  # the script's own check (ArgError)
        raise ExportError(f"{model_path}: args.json: {e}") from None
    if width != hidden:
        raise ExportError(f"{model_path}: its Dense_0 has {hidden} units, but args.json says --network-size "
                          f"{network_size} ({width} units)")
    expected, layers = network_layout(mod, num_actions, hidden)
    for name, tree_ in (("params", p), ("masks", m)):
        got = {k: tuple(np.shape(v)) for k, v in tree_.items()}
        if got != expected:
            diff = sorted(set(got.items()) ^ set(expected.items()))[:3]
            raise ExportError(f"{model_path}: its {name} do not fit {script}'s QNetwork (hidden {hidden}, "
                              f"{num_actions} actions): {diff}")
    for k, v in m.items():
        v = np.asarray(v)
        if v.dtype != np.bool_ and not np.isin(v, (0, 1)).all():
            raise ExportError(f"{model_path}: mask {'/'.join(k)} is not boolean ({v.dtype})")

    arrays, total, kept, biases = {}, 0, 0, 0
    for spec in layers:
        if spec["type"] == "flatten":
            continue
        name = spec["name"]
        kernel = np.asarray(p[("params", name, "kernel")], np.float32)
        mask = np.asarray(m[("params", name, "kernel")]).astype(bool)
        bias = np.where(np.asarray(m[("params", name, "bias")]).astype(bool), np.asarray(p[("params", name, "bias")]), 0)
        w, keep = kernel.reshape(-1, kernel.shape[-1]), mask.reshape(-1, kernel.shape[-1])
        rows, cols = np.nonzero(keep)  # row-major: CSR order
        nnz = int(rows.size)
        indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=w.shape[0]))])
        arrays[f"{name}/indptr"] = indptr.astype(sparse_agent.index_dtype(nnz))
        arrays[f"{name}/indices"] = cols.astype(sparse_agent.index_dtype(max(w.shape[1] - 1, 0)))
        arrays[f"{name}/data"] = w[rows, cols].astype(np.float32)
        arrays[f"{name}/bias"] = bias.astype(np.float32)
        spec.update(kernel_shape=list(kernel.shape), nonzero=nnz, weights=int(kernel.size),
                    kernel_indptr=f"{name}/indptr", kernel_indices=f"{name}/indices", kernel_data=f"{name}/data",
                    bias=f"{name}/bias")
        total, kept, biases = total + int(kernel.size), kept + nnz, biases + int(bias.size)
    meta = {"format": sparse_agent.FORMAT, "version": sparse_agent.VERSION, "script": script,
            "exp_name": args.get("exp_name"), "env_id": args.get("env_id"), "network_size": network_size,
            "hidden": hidden, "num_actions": num_actions,
            "input": {"shape": list(INPUT_SHAPE), "dtype": "uint8", "layout": "NCHW (frame stack first)", "divide_by": 255.0},
            "layers": layers, "kernel_weights": total, "nonzero": kept, "biases": biases, "sparsity": 1.0 - kept / total,
            "source": {"file": os.path.basename(model_path), "bytes": len(raw), "sha256": hashlib.sha256(raw).hexdigest()}}

    stem = model_path[:-len(".cleanrl_model")] if model_path.endswith(".cleanrl_model") else model_path
    out_path = out_path or stem + SUFFIX
    if os.path.abspath(out_path) == os.path.abspath(model_path):
        raise ExportError(f"--out {out_path} is the model itself")
    tmp, err = out_path + ".tmp", None
    try:
        size = sparse_agent.write_container(tmp, meta, arrays)
        if check:
            err = verify(tmp, mod, params, tree["masks"], num_actions, hidden, check, seed)
        os.replace(tmp, out_path)
    except OSError as e:
        raise ExportError(f"cannot write {out_path}: {e.strerror or e}") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return out_path, meta, size, err


def verify(path, mod, params, masks, num_actions, hidden, n, seed):
    """The written file's Q-values against the script's QNetwork (dense, masks applied) on n random observations:
    the largest difference, or ExportError if it exceeds float32 rounding."""
    import jax

    obs = np.random.default_rng(seed).integers(0, 256, (n, *INPUT_SHAPE), dtype=np.uint8)
    net = mod.QNetwork(action_dim=num_actions, hidden=hidden)
    dense = np.asarray(jax.jit(net.apply)(mod.apply_mask(params, masks), obs))
    sparse = sparse_agent.load(path).q_values(obs)
    err = float(np.max(np.abs(dense - sparse)))
    if not err <= 1e-6 + 1e-4 * float(np.max(np.abs(dense))):  # float32 sums taken in another order
        raise ExportError(f"the written export does not reproduce the dense network (max |Q difference| {err:.3g} on "
                          f"{n} random observations); nothing was written")
    return err


def main(argv=None):
    doc = __doc__.split("\n\n", 1)
    parser = argparse.ArgumentParser(description=doc[0], epilog=doc[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a .cleanrl_model written by --save-model")
    parser.add_argument("--out", help=f"the export (default: the model's path with {SUFFIX})")
    parser.add_argument("--script", choices=Q_SCRIPTS + SAC_SCRIPTS, help="the script that wrote the model, when there is "
                        "no args.json beside it and its file name does not tell")
    parser.add_argument("--check", type=int, default=8, help="random observations the written file is checked on (0: none)")
    a = parser.parse_args(argv)
    if a.check < 0:
        print(f"error: --check must be >= 0, got {a.check}", file=sys.stderr)
        return 2
    try:
        out, meta, size, err = export(a.model, a.out, a.script, a.check)
    except ExportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    src = meta["source"]["bytes"]
    checked = (f"; Q-values equal the dense network's on {a.check} random observations (max |diff| "
               f"{err:.2g})") if a.check else ""
    print(f"exported {a.model} -> {out}: {meta['script']}, hidden {meta['hidden']}, {meta['num_actions']} actions, "
          f"sparsity {meta['sparsity']:.4f} ({meta['nonzero']:,} of {meta['kernel_weights']:,} kernel weights kept), "
          f"{size:,} bytes ({size / src:.3f} of the model's {src:,}){checked}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
