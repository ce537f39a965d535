"""Smoke run of every script in a subprocess (tiny steps, compressed schedules): asserts on what it logged and saved."""
import glob
import json
import os
import subprocess
import sys

import flax.serialization
import numpy as np
import pytest
from conftest import SMOKE
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.util import tensor_util

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read_scalars(run_dir):
    acc = EventAccumulator(run_dir, size_guidance={"tensors": 0})
    acc.Reload()
    return {tag: [(e.step, float(tensor_util.make_ndarray(e.tensor_proto))) for e in acc.Tensors(tag)]
            for tag in acc.Tags()["tensors"]}


def run_smoke(script, tmp_path, extra=()):
    env = dict(os.environ, JAX_PLATFORMS="cpu", WANDB_MODE="disabled")
    setup = SMOKE[script].get("setup")  # e.g. an offline script's dataset, written into tmp_path first
    pre = setup(tmp_path) if setup else []
    out = subprocess.run([sys.executable, os.path.join(ROOT, f"{script}.py"), *SMOKE[script]["argv"], *pre, *extra],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=280)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    run_dirs = [os.path.dirname(p) for p in glob.glob(str(tmp_path / "runs" / "**" / "args.json"), recursive=True)]
    assert len(run_dirs) == 1, run_dirs
    return out, run_dirs[0]


def kernel_leaves(tree):
    return [np.asarray(x) for x in _leaves(tree) if np.ndim(x) > 1]


def _leaves(tree):
    if isinstance(tree, dict):
        for k in sorted(tree):
            yield from _leaves(tree[k])
    else:
        yield tree


@pytest.mark.parametrize("script", list(SMOKE))
def test_smoke_run_logs_and_saves_exact_sparsity(script, tmp_path):
    out, run_dir = run_smoke(script, tmp_path)
    spec = SMOKE[script]
    args = json.load(open(os.path.join(run_dir, "args.json")))
    assert args["exp_name"] == script
    scalars = read_scalars(run_dir)
    missing = [t for t in spec["tags"] if t not in scalars]
    assert not missing, f"tags not logged: {missing}; logged {sorted(scalars)}"
    model_path = os.path.join(run_dir, f"{script}.cleanrl_model")
    saved = flax.serialization.msgpack_restore(open(model_path, "rb").read())
    params, masks = kernel_leaves(saved["params"]), kernel_leaves(saved["masks"])
    n = sum(k.size for k in params)
    zeros = sum(int((m == 0).sum()) for m in masks)
    if spec["final_sparsity"] is not None:  # a schedule: the saved model holds exactly the final sparsity
        assert zeros == n - max(1, round(n * (1 - spec["final_sparsity"])))
    assert sum(int((p == 0).sum()) for p in params) >= zeros
    for p, m in zip(params, masks):
        assert not p[m == 0].any(), "a masked weight is non-zero in the saved model"
    assert all(np.all(m) for m in _leaves(saved["masks"]) if np.ndim(m) <= 1), "biases must stay dense"
    # the logged sparsity is the achieved one: the exact zero fraction (float32 in the event file)
    tag = spec.get("sparsity_tag", "sparsity/online" if spec["final_sparsity"] is not None else "sparsity/target")
    logged = scalars[tag]
    assert logged[-1][1] == pytest.approx(zeros / n, abs=1e-6)
    if "population/selected" in spec["tags"]:  # EauDe: population updates happened and the selected member got sparser
        assert len(scalars["population/selected"]) >= 1
        assert logged[-1][1] > 0.0, f"the discovered sparsity ({tag}) never rose above 0"
    else:
        assert all(b[1] >= a[1] - 1e-9 for a, b in zip(logged, logged[1:])), "sparsity must never decrease"
    assert np.isfinite([v for _, v in scalars["losses/td_loss" if "losses/td_loss" in scalars else "losses/qf_loss"]]).all()
    assert len(scalars["eval/episodic_return"]) >= 1


@pytest.mark.parametrize("script", [s for s in SMOKE if "--final-sparsity" in SMOKE[s]["argv"] and "polyprune" in s])
def test_final_sparsity_zero_is_the_dense_baseline(script, tmp_path):
    out, run_dir = run_smoke(script, tmp_path, extra=["--final-sparsity", "0", "--eval-episodes", "0"])
    scalars = read_scalars(run_dir)
    assert {v for _, v in scalars["sparsity/online"]} == {0.0}
    saved = flax.serialization.msgpack_restore(open(os.path.join(run_dir, f"{script}.cleanrl_model"), "rb").read())
    assert all(np.all(m) for m in _leaves(saved["masks"]))
    assert all(np.count_nonzero(p) == p.size for p in kernel_leaves(saved["params"]))


def test_track_sends_the_scalars_to_wandb(tmp_path):
    """--track with WANDB_MODE=offline: W&B's tensorboard sync must record the TensorBoard scalars."""
    script = "polyprune_dqn_atari_jax"
    argv = ["--total-timesteps", "200", "--learning-starts", "100", "--buffer-size", "200", "--batch-size", "4",
            "--network-size", "small", "--track"]
    env = dict(os.environ, JAX_PLATFORMS="cpu", WANDB_MODE="offline", WANDB_DIR=str(tmp_path), WANDB_SILENT="true")
    out = subprocess.run([sys.executable, os.path.join(ROOT, f"{script}.py"), *argv], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=280)
    assert out.returncode == 0, out.stderr[-3000:]
    files = glob.glob(str(tmp_path / "wandb" / "offline-run-*" / "*.wandb"))
    assert len(files) == 1, files
    raw = open(files[0], "rb").read()
    for tag in ["charts/SPS", "losses/td_loss", "sparsity/online", "sparsity/target", "charts/nonzero_params"]:
        assert tag.encode() in raw, f"{tag} did not reach W&B"
    assert b"final_sparsity" in raw, "the run config (args) must reach W&B"
