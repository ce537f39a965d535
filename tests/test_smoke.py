"""Smoke run of every script in a subprocess (tiny steps, compressed schedules), checked against the metric table
(docs/metrics.md): each script logs exactly its keys; each key means the same in every script (values checked
against the saved masks, or recomputed from the run's flags); and the training loop does what its flags say (when
selections, target updates and pruning happen, epsilon's schedule, evaluations on the global_step axis)."""
import glob
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import flax.serialization
import numpy as np
import pytest
from conftest import SCRIPTS, SMOKE
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.util import tensor_util

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPARSITY_TOL = 5e-7  # scalars are float32; one weight of the smallest smoke network is 7e-6


def read_scalars(run_dir):
    acc = EventAccumulator(run_dir, size_guidance={"tensors": 0})
    acc.Reload()
    return {tag: [(e.step, float(tensor_util.make_ndarray(e.tensor_proto))) for e in acc.Tensors(tag)]
            for tag in acc.Tags()["tensors"]}


def run_smoke(script, tmp_path, extra=(), returncode=0):
    env = dict(os.environ, JAX_PLATFORMS="cpu", WANDB_MODE="disabled")
    setup = SMOKE[script].get("setup")  # e.g. an offline script's dataset, written into tmp_path first
    pre = setup(tmp_path) if setup else []
    out = subprocess.run([sys.executable, os.path.join(ROOT, f"{script}.py"), *SMOKE[script]["argv"], *pre, *extra],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=280)
    assert out.returncode == returncode, out.stdout[-3000:] + out.stderr[-3000:]
    run_dirs = [os.path.dirname(p) for p in glob.glob(str(tmp_path / "runs" / "**" / "args.json"), recursive=True)]
    assert len(run_dirs) == 1, run_dirs
    return out, run_dirs[0]


def load_run(script, tmp_path, extra=()):
    return read_run(script, run_smoke(script, tmp_path, extra)[1])


def read_run(script, run_dir):
    args = json.load(open(os.path.join(run_dir, "args.json")))
    assert args["exp_name"] == script
    model_path = os.path.join(run_dir, f"{script}.cleanrl_model")
    saved = flax.serialization.msgpack_restore(open(model_path, "rb").read()) if args["save_model"] else None
    return SimpleNamespace(script=script, args=args, scalars=read_scalars(run_dir), saved=saved, **SCRIPTS[script])


@pytest.fixture(params=list(SMOKE), scope="module")
def run(request, smoke):
    return read_run(request.param, smoke(request.param).run_dir)


def _leaves(tree):
    if isinstance(tree, dict):
        for k in sorted(tree):
            yield from _leaves(tree[k])
    else:
        yield np.asarray(tree)


def series(run, tag):
    return dict(run.scalars[tag])


def exact_sparsity(n, s):
    """The zero fraction of a mask at sparsity s over n kernel weights (ALGORITHMS.md 2: n_keep = max(1, round(n (1-s))))."""
    return (n - max(1, round(n * (1 - s)))) / n


def last_at_or_before(steps, t):
    earlier = [u for u in steps if u <= t]
    return earlier[-1] if earlier else None


# ---------------------------------------------------------------- the metric table
def expected_keys(run):
    """The keys of the metric table (docs/metrics.md) that this script logs (with its smoke flags)."""
    keys = {"charts/SPS", "sparsity/network", "sparsity/online", "charts/nonzero_params", "eval/episodic_return"}
    if run.family == "atari":
        keys |= {"charts/episodic_return", "charts/episodic_length", "charts/epsilon", "losses/td_loss", "losses/q_values",
                 "eval/final_episodic_return"}
    elif run.family == "atari_offline":
        keys |= {"losses/td_loss", "losses/q_values", "losses/cql_loss", "eval/episodic_length"}
    else:
        keys |= {"charts/episodic_return", "charts/episodic_length"}
        keys |= {f"losses/{k}" for k in ("qf1_loss", "qf2_loss", "qf_loss", "qf1_values", "qf2_values", "actor_loss",
                                          "alpha", "alpha_loss")}
    if "population_size" in run.args:
        k = run.args["population_size"]
        keys |= {"population/selected", "population/n_copies"}
        keys |= {f"population/loss_{j}" for j in range(k)} | {f"sparsity/member_{j}" for j in range(k)}
    return keys


def test_logs_exactly_the_metric_table(run):
    assert set(run.scalars) == expected_keys(run), (f"not logged: {sorted(expected_keys(run) - set(run.scalars))}; "
                                                    f"not in the table: {sorted(set(run.scalars) - expected_keys(run))}")
    for tag, values in run.scalars.items():
        assert np.isfinite([v for _, v in values]).all(), tag


# ---------------------------------------------------------------- what the keys say about the saved (delivered) network
def saved_counts(saved):
    """(kernel weights n, pruned kernel weights, parameters outside the kernels: biases, plus the dense actor for SAC)."""
    masks = list(_leaves(saved["masks"]))
    n = sum(m.size for m in masks if m.ndim > 1)
    pruned = sum(int((m == 0).sum()) for m in masks if m.ndim > 1)
    dense = sum(m.size for m in masks if m.ndim <= 1)
    if "actor_params" in saved:
        dense += sum(x.size for x in _leaves(saved["actor_params"]))
    return n, pruned, dense


def check_saved_network_against_logs(run):
    """The saved model is the network behind sparsity/network and charts/nonzero_params."""
    saved = run.saved
    for p, m in zip([x for x in _leaves(saved["params"]) if x.ndim > 1], [x for x in _leaves(saved["masks"]) if x.ndim > 1]):
        assert not p[m == 0].any(), "a masked weight is non-zero in the saved model"
    assert all(m.all() for m in _leaves(saved["masks"]) if m.ndim <= 1), "biases must stay dense"
    n, pruned, dense = saved_counts(saved)
    network, nonzero = series(run, "sparsity/network"), series(run, "charts/nonzero_params")
    assert network[max(network)] == pytest.approx(pruned / n, abs=SPARSITY_TOL)
    assert nonzero[max(nonzero)] == n - pruned + dense
    for t, s in network.items():  # at every step: the unpruned parameters of the network whose sparsity is logged
        assert nonzero[t] == n - round(s * n) + dense, t
    return n


def test_saved_model_is_the_network_the_keys_describe(run):
    check_saved_network_against_logs(run)


# ---------------------------------------------------------------- the training loop, from what it logged
def timeline(run):
    """(T, period of the target updates or population updates, steps before learning) on the script's x-axis."""
    a = run.args
    if run.family == "atari_offline":
        return a["epochs"] * a["steps_per_epoch"], a["target_update_period"], 0
    return a["total_timesteps"], a.get("selection_period", a.get("target_update_period")), a["learning_starts"]


def target_updates(run):
    total, period, learning_starts = timeline(run)
    return [t for t in range(1, total + 1) if t % period == 0 and t > learning_starts]


def cubic(t, a, total):
    """The PolyPrune schedule (ALGORITHMS.md 3), written out again: s_F (1 - (1 - p)^3)."""
    t_s, t_e = int(a["pruning_start"] * total), int(a["pruning_end"] * total)
    p = min(max((t - t_s) / (t_e - t_s), 0.0), 1.0)
    return a["final_sparsity"] * (1 - (1 - p) ** 3)


def pruning_steps(a, total):
    t_s, t_e = int(a["pruning_start"] * total), int(a["pruning_end"] * total)
    return [t for t in range(1, total + 1) if t_s <= t <= t_e and (t % a["pruning_frequency"] == 0 or t == t_e)]


def test_polyprune_sparsity_follows_the_cubic_schedule(run):
    if run.kind not in ("polyprune_dqn", "polyprune_cql", "polyprune_sac"):
        pytest.skip("a population discovers its sparsity")
    n = check_saved_network_against_logs(run)
    total = timeline(run)[0]
    prunes = pruning_steps(run.args, total)

    def online_at(t):  # after the mask recomputation at the last pruning step up to t
        u = last_at_or_before(prunes, t)
        return 0.0 if u is None else exact_sparsity(n, cubic(u, run.args, total))

    online, network = series(run, "sparsity/online"), series(run, "sparsity/network")
    assert len({v for v in online.values() if v > 0}) >= 2, "the smoke run should see the schedule move"
    for t, s in online.items():
        assert s == pytest.approx(online_at(t), abs=SPARSITY_TOL), t
    if run.kind == "polyprune_sac":  # the online critic pair is the delivered network
        assert network == online
        return
    # DQN/CQL deliver the target: the online network as it was at the last target update, pruned first when a pruning
    # step is also a target update
    updates = target_updates(run)
    assert set(updates) & set(prunes), "the smoke flags should make a pruning step coincide with a target update"
    for t, s in network.items():
        u = last_at_or_before(updates, t)
        assert s == pytest.approx(0.0 if u is None else online_at(u), abs=SPARSITY_TOL), t
    assert network[max(network)] == pytest.approx(exact_sparsity(n, run.args["final_sparsity"]), abs=SPARSITY_TOL)


def test_selections_happen_at_target_updates_and_deliver_k_star(run):
    if "population_size" not in run.args:
        pytest.skip("no population")
    k = run.args["population_size"]
    updates = target_updates(run)
    selected = series(run, "population/selected")
    assert sorted(selected) == updates, "one selection at each target update after learning starts, no other"
    losses = [series(run, f"population/loss_{j}") for j in range(k)]
    copies = series(run, "population/n_copies")
    assert run.args["tournament_size"] == k, "with tournaments of all K members every winner is k*"
    for t, k_star in selected.items():
        assert k_star == int(np.argmin([loss[t] for loss in losses])), f"k* is not argmin L at step {t}"
        assert copies[t] == k - 1
    members = [series(run, f"sparsity/member_{j}") for j in range(k)]
    network, online = series(run, "sparsity/network"), series(run, "sparsity/online")
    assert len(set(network) & set(selected)) >= 2, "the logs should hold the sparsities at selection steps"
    for t, s in network.items():
        u = last_at_or_before(updates, t)
        k_star = 0 if u is None else int(selected[u])  # before any selection, the target is member 0
        assert s == members[k_star][t], f"step {t}: sparsity/network is not member k* = {k_star}'s"
        assert online[t] == pytest.approx(np.mean([m[t] for m in members]), abs=SPARSITY_TOL)
    assert network[max(network)] > 0.0, "the discovered sparsity never rose above 0"


def test_epsilon_follows_its_schedule(run):
    if run.family != "atari":
        pytest.skip("no epsilon-greedy exploration")
    a = run.args
    epsilon = series(run, "charts/epsilon")
    for t, e in epsilon.items():  # the action of step t is drawn with t - 1 steps of decay (linear from step 0)
        expected = max(a["end_e"] + (a["start_e"] - a["end_e"]) * (1 - (t - 1) / a["exploration_steps"]), a["end_e"])
        assert e == pytest.approx(expected, abs=1e-6), t
    assert min(epsilon.values()) == pytest.approx(a["end_e"]) and max(epsilon.values()) > a["end_e"], "decay and floor"


def test_evaluation_is_logged_against_global_step(run):
    total = timeline(run)[0]
    a = run.args
    steps = sorted(series(run, "eval/episodic_return"))
    if run.family == "atari":  # one evaluation, of the saved model, after training
        assert steps == [total]
        final = series(run, "eval/final_episodic_return")  # CleanRL's per-episode values, step = episode index
        assert sorted(final) == list(range(a["eval_episodes"]))
        assert series(run, "eval/episodic_return")[total] == pytest.approx(np.mean(list(final.values())), rel=1e-5)
    elif run.family == "atari_offline":  # after every epoch
        assert steps == [e * a["steps_per_epoch"] for e in range(1, a["epochs"] + 1)]
    else:  # every eval-frequency steps, and at the end
        assert steps == list(range(a["eval_frequency"], total, a["eval_frequency"])) + [total]


# ---------------------------------------------------------------- other settings
def test_distillqn_prunes_right_after_each_target_copy(tmp_path):
    """--distill: the mask is recomputed only at target updates (from pruning-start on), after the copy: the online
    network is a pruned version of the target, which therefore trails it by one target update."""
    run = load_run("polyprune_dqn_atari_jax", tmp_path, ["--distill"])
    n = check_saved_network_against_logs(run)
    total = timeline(run)[0]
    t_s = int(run.args["pruning_start"] * total)
    prunes = [u for u in target_updates(run) if u >= t_s]
    assert len(prunes) >= 2

    def online_at(t):
        u = last_at_or_before(prunes, t)
        return 0.0 if u is None else exact_sparsity(n, cubic(u, run.args, total))

    online, network = series(run, "sparsity/online"), series(run, "sparsity/network")
    for t, s in online.items():
        assert s == pytest.approx(online_at(t), abs=SPARSITY_TOL), t
    for t, s in network.items():  # the copy was taken just before the pruning at the same target update
        u = last_at_or_before(prunes, t)
        assert s == pytest.approx(0.0 if u is None else online_at(u - 1), abs=SPARSITY_TOL), t
    assert 0.0 < network[total] < online[total] == pytest.approx(exact_sparsity(n, run.args["final_sparsity"]))


@pytest.mark.parametrize("script", [s for s in SMOKE if SCRIPTS[s]["kind"].startswith("polyprune")])
def test_final_sparsity_zero_is_the_dense_baseline(script, tmp_path):
    run = load_run(script, tmp_path, ["--final-sparsity", "0", "--eval-episodes", "0"])
    assert {v for _, v in run.scalars["sparsity/online"]} == {v for _, v in run.scalars["sparsity/network"]} == {0.0}
    assert all(np.all(m) for m in _leaves(run.saved["masks"]))
    assert all(np.count_nonzero(p) == p.size for p in _leaves(run.saved["params"]) if p.ndim > 1)
    check_saved_network_against_logs(run)


def test_a_diverged_population_stops_with_one_line(tmp_path):
    """Once no member has a finite loss, the first population update stops the run (exit status 1, one
    `error:` line naming the step), instead of electing a NaN member."""
    script = "eaudedqn_atari_jax"
    out, run_dir = run_smoke(script, tmp_path, ["--learning-rate", "1e38", "--eval-episodes", "0"], returncode=1)
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    first = target_updates(SimpleNamespace(args=json.load(open(os.path.join(run_dir, "args.json"))), family="atari"))[0]
    assert len(errors) == 1 and f"step {first}:" in errors[0] and "diverged" in errors[0], out.stderr[-3000:]
    assert "Traceback" not in out.stderr
    assert "population/selected" not in read_scalars(run_dir)


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
    for tag in ["charts/SPS", "losses/td_loss", "sparsity/online", "sparsity/network", "charts/nonzero_params"]:
        assert tag.encode() in raw, f"{tag} did not reach W&B"
    assert b"final_sparsity" in raw, "the run config (args) must reach W&B"
