"""tools/export_sparse.py and tools/sparse_agent.py: the exported agent acts as the dense model with its masks applied
(smoke-run EauDe and PolyPrune models, a synthetic 0.99-sparse one), the file holds exactly the masks' kept weights,
and bad files are refused with one `error:` line."""
import json
import os
import subprocess
import sys

import flax.serialization
import jax
import numpy as np
import pytest

import polyprune_dqn_atari_jax as dqn
from tools import benchmark_sparse_inference as bench
from tools import export_sparse, sparse_agent

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE_Q = ["eaudedqn_atari_jax", "polyprune_dqn_atari_jax"]


@pytest.fixture(scope="module")
def observations():
    """300 frame stacks: 240 of Pong played at random through the scripts' make_env, and 60 of uniform noise (which
    spread the greedy actions more than Pong's near-identical screens)."""
    env = dqn.make_env("ALE/Pong-v5", 0, 0, False, "test-export", 100)()
    obs, _ = env.reset(seed=0)
    frames = [obs]
    while len(frames) < 240:
        obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
        frames.append(obs)
        if terminated or truncated:
            obs, _ = env.reset()
    env.close()
    noise = np.random.default_rng(0).integers(0, 256, (60, 4, 84, 84), dtype=np.uint8)
    return np.concatenate([np.stack(frames).astype(np.uint8), noise])


def dense_q(mod, model_path, obs):
    """Q-values of the model as the script's evaluate reads it: from_bytes into the QNetwork's template, masks applied."""
    with open(model_path, "rb") as f:
        raw = f.read()
    shapes = flax.serialization.msgpack_restore(raw)["params"]["params"]
    net = mod.QNetwork(action_dim=shapes["Dense_1"]["kernel"].shape[1], hidden=shapes["Dense_0"]["kernel"].shape[1])
    template = jax.eval_shape(net.init, jax.random.key(0), obs[:1])  # the structure init makes (no compile)
    saved = flax.serialization.from_bytes({"params": template, "masks": mod.dense_mask(template)}, raw)
    params = jax.jit(mod.apply_mask)(saved["params"], saved["masks"])
    return np.asarray(jax.jit(net.apply)(params, obs)), saved["masks"]


def assert_same_policy(q, q_dense):
    """Q-values equal to float tolerance; greedy actions equal except where the dense top-2 Q-values tie within it."""
    tol = 1e-6 + 1e-4 * float(np.abs(q_dense).max())  # float32 sums in another order (smoke Q-values are ~0.005)
    np.testing.assert_allclose(q, q_dense, rtol=0, atol=tol)
    top2 = np.sort(q_dense, axis=-1)[:, -2:]
    tie = top2[:, 1] - top2[:, 0] <= tol
    differ = np.argmax(q, axis=-1) != np.argmax(q_dense, axis=-1)
    assert not np.any(differ & ~tie), np.flatnonzero(differ & ~tie)
    assert np.mean(tie) < 0.5  # the check is not vacuous


def assert_counts_match(path, masks):
    """The file's kernels hold exactly the masks' kept weights, layer by layer, in arrays of the smallest index dtype."""
    meta, arrays = sparse_agent.read_container(path)
    layers = [layer for layer in meta["layers"] if layer["type"] != "flatten"]
    assert [layer["name"] for layer in layers] == ["Conv_0", "Conv_1", "Conv_2", "Dense_0", "Dense_1"]
    total = 0
    for layer in layers:
        kept = int(np.count_nonzero(np.asarray(masks["params"][layer["name"]]["kernel"])))
        data, indptr, indices = (arrays[layer[k]] for k in ("kernel_data", "kernel_indptr", "kernel_indices"))
        assert layer["nonzero"] == kept == data.size == indices.size == int(indptr[-1])
        assert indices.dtype == sparse_agent.index_dtype(layer["kernel_shape"][-1] - 1)
        assert indptr.dtype == sparse_agent.index_dtype(kept)
        total += kept
    assert meta["nonzero"] == total
    sparsity, _ = dqn.mask_stats(masks)
    assert meta["sparsity"] == pytest.approx(sparsity, abs=1e-12)
    return meta


def one_error_line(out):
    assert out.returncode != 0
    assert out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    return lines[0]


def run_tool(tool, *argv):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, os.path.join(ROOT, "tools", tool), *map(str, argv)], capture_output=True,
                          text=True, env=env, timeout=120)


@pytest.fixture(scope="module")
def exported(smoke, tmp_path_factory):
    """{script: (model, export)} of the smoke runs' models, exported in-process."""
    out = {}
    for script in SMOKE_Q:
        model = os.path.join(smoke(script).run_dir, f"{script}.cleanrl_model")
        path = str(tmp_path_factory.mktemp("export") / f"{script}.sparseq")
        assert export_sparse.main([model, "--out", path]) == 0
        out[script] = (model, path)
    return out


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """A 0.99-sparse model of hidden width 128: N(0, 0.3) kernels, so that the global magnitude mask keeps about 1%
    of every layer and cuts none off, but N(0, 0.9) for the output layer, so that it keeps about 40% of it and every
    action has inputs; N(0, 0.1) biases. Saved as --save-model does, with an args.json; and its export."""
    folder = tmp_path_factory.mktemp("synthetic")
    net = dqn.QNetwork(action_dim=6, hidden=128)
    shapes = jax.eval_shape(net.init, jax.random.key(0), np.zeros((1, 4, 84, 84), np.uint8))
    rng = np.random.default_rng(1)
    params = jax.tree.map(lambda s: rng.normal(0, 0.3 if len(s.shape) > 1 else 0.1, s.shape).astype(np.float32), shapes)
    params["params"]["Dense_1"]["kernel"] *= 3
    masks = dqn.make_mask(params, 0.99)
    (folder / "args.json").write_text(json.dumps({"exp_name": "polyprune_dqn_atari_jax", "network_size": "128",
                                                  "env_id": "ALE/Pong-v5", "train_frequency": 4}))
    model = str(folder / "polyprune_dqn_atari_jax.cleanrl_model")
    with open(model, "wb") as f:
        f.write(flax.serialization.to_bytes({"params": params, "masks": masks}))
    out, meta, _, err = export_sparse.export(model)
    assert err is not None  # the exporter checked its Q-values
    assert out == str(folder / "polyprune_dqn_atari_jax.sparseq")
    assert min(layer["nonzero"] for layer in meta["layers"] if "nonzero" in layer) > 0
    return model, out


@pytest.mark.parametrize("script", SMOKE_Q)
def test_smoke_model_acts_as_its_dense_network(script, exported, observations):
    model, path = exported[script]
    mod = __import__(script)
    q_dense, masks = dense_q(mod, model, observations)
    agent = sparse_agent.load(path)
    assert agent.meta["script"] == script and agent.meta["network_size"] == "small" and agent.num_actions == 6
    assert_same_policy(agent.q_values(observations), q_dense)
    meta = assert_counts_match(path, masks)
    assert meta["sparsity"] > 0.5  # both smoke runs end sparse
    assert os.path.getsize(path) < os.path.getsize(model)


def test_synthetic_099_model_acts_as_its_dense_network(synthetic, observations):
    model, path = synthetic
    q_dense, masks = dense_q(dqn, model, observations)
    assert np.ptp(q_dense, axis=0).min() > 0  # every action's Q-value depends on the observation
    agent = sparse_agent.load(path)
    q = agent.q_values(observations)
    assert_same_policy(q, q_dense)
    assert len(set(np.argmax(q_dense, axis=-1))) > 1  # the greedy action depends on the observation
    assert np.array_equal(agent.act(observations[:30]), np.argmax(q[:30], axis=-1))
    meta = assert_counts_match(path, masks)
    assert meta["sparsity"] == pytest.approx(0.99, abs=1e-6)
    # the BCOO path computes the same Q-values (on fewer observations: it is the slow one)
    assert_same_policy(sparse_agent.load(path, backend="jax").q_values(observations[::10]), q_dense[::10])


def test_agent_acts_from_the_file_alone(synthetic, observations, tmp_path):
    """The command line acts from the export with neither the training script nor JAX nor flax imported."""
    _, path = synthetic
    np.save(tmp_path / "obs.npy", observations[:20])
    code = ("import sys; from tools import sparse_agent; a = sparse_agent.load(sys.argv[1]); import numpy as np; "
            "print(' '.join(map(str, a.act(np.load(sys.argv[2]))))); "
            "assert not {'jax', 'flax', 'polyprune_dqn_atari_jax'} & set(sys.modules), sorted(sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, path, str(tmp_path / "obs.npy")], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    cli = run_tool("sparse_agent.py", path, "--obs", tmp_path / "obs.npy")
    assert cli.returncode == 0, cli.stderr
    expected = " ".join(map(str, sparse_agent.load(path).act(observations[:20])))
    assert out.stdout.strip() == cli.stdout.strip() == expected


def test_benchmark_dense_reference_is_the_qnetwork(synthetic, observations):
    model, _ = synthetic
    q_dense, masks = dense_q(dqn, model, observations[:8])
    with open(model, "rb") as f:
        saved = flax.serialization.msgpack_restore(f.read())
    params = jax.tree.map(lambda p, m: np.where(m, p, 0), saved["params"]["params"], saved["masks"]["params"])
    np.testing.assert_allclose(np.asarray(jax.jit(bench.dense_q_values)(params, observations[:8])), q_dense, rtol=0,
                               atol=1e-6 + 1e-4 * float(np.abs(q_dense).max()))


@pytest.mark.parametrize("damage", ["header", "data", "checksum", "truncated", "half", "empty"])
def test_damaged_export_is_refused(synthetic, damage, tmp_path):
    _, path = synthetic
    raw = bytearray(open(path, "rb").read())
    if damage in ("header", "data", "checksum"):
        i = {"header": 40, "data": len(raw) // 2, "checksum": len(raw) - 1}[damage]
        raw[i] ^= 0x01
    else:
        raw = raw[:{"truncated": len(raw) - 1, "half": len(raw) // 2, "empty": 0}[damage]]
    bad = tmp_path / "bad.sparseq"
    bad.write_bytes(bytes(raw))
    with pytest.raises(sparse_agent.FormatError):
        sparse_agent.load(str(bad))
    line = one_error_line(run_tool("sparse_agent.py", bad))
    assert "checksum" in line or "not a sparse Q-network file" in line


def test_exporter_refuses_bad_input(tmp_path):
    text = tmp_path / "notes.cleanrl_model"
    text.write_text("not a model\n")
    assert "not a saved model" in one_error_line(run_tool("export_sparse.py", text))

    assert "no such file" in one_error_line(run_tool("export_sparse.py", tmp_path / "missing.cleanrl_model"))

    net = dqn.QNetwork(action_dim=6, hidden=8)
    params = jax.tree.map(np.asarray, net.init(jax.random.key(0), np.zeros((1, 4, 84, 84), np.uint8)))
    no_masks = tmp_path / "run" / "polyprune_dqn_atari_jax.cleanrl_model"
    no_masks.parent.mkdir()
    (no_masks.parent / "args.json").write_text(json.dumps({"exp_name": "polyprune_dqn_atari_jax", "network_size": "8"}))
    no_masks.write_bytes(flax.serialization.to_bytes({"params": params}))
    assert "has no masks" in one_error_line(run_tool("export_sparse.py", no_masks))

    critic = {"Dense_0": {"kernel": np.ones((14, 8), np.float32), "bias": np.zeros(8, np.float32)}}
    sac = tmp_path / "polyprune_sac_mujoco_jax.cleanrl_model"
    sac.write_bytes(flax.serialization.to_bytes({"params": [critic, critic], "masks": [critic, critic],
                                                 "actor_params": {"params": critic}}))
    line = one_error_line(run_tool("export_sparse.py", sac))
    assert "SAC" in line and "only the Q-networks that act are exported" in line
    assert not any(p.suffix == ".sparseq" for p in tmp_path.rglob("*"))


@pytest.mark.parametrize("args, script", [
    ({"exp_name": "eaudedqn_atari_jax", "population_size": 5, "train_frequency": 4}, "eaudedqn_atari_jax"),
    ({"exp_name": "polyprune_dqn_atari_jax", "train_frequency": 4}, "polyprune_dqn_atari_jax"),
    ({"exp_name": "eaudecql_atari_jax", "population_size": 5, "dataset_dir": "d"}, "eaudecql_atari_jax"),
    ({"exp_name": "polyprune_cql_atari_jax", "dataset_dir": "d"}, "polyprune_cql_atari_jax"),
    ({"exp_name": "eaudesac_mujoco_jax", "population_size": 5, "tau": 0.005}, "eaudesac_mujoco_jax"),
])
def test_the_script_is_read_from_args_json(args, script, tmp_path):
    (tmp_path / "args.json").write_text(json.dumps(args))
    assert export_sparse.identify(str(tmp_path / "renamed.cleanrl_model"))[0] == script
    bare = tmp_path / "no-args-json" / "polyprune_cql_atari_jax.cleanrl_model"
    assert export_sparse.identify(str(bare))[0] == "polyprune_cql_atari_jax"  # no args.json: the file name
