"""tools/results.py: on real smoke runs of the SAC scripts (2 seeds each), on synthetic Atari runs, and its statistics
against hand computations."""
import csv
import glob
import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import SMOKE
from rliable import metrics
from tensorboard.summary import Writer

from tools import results

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEEDS = (1, 2)
TOTAL = 300
# the smoke flags, with one length and an evaluation every 100 steps so that every grid point has a return
OVERRIDES = {"--total-timesteps": str(TOTAL), "--eval-frequency": "100"}
SAC_SCRIPTS = ("polyprune_sac_mujoco_jax", "eaudesac_mujoco_jax")


def with_flags(argv, overrides):
    argv = list(argv)
    for flag, value in overrides.items():
        if flag in argv:
            argv[argv.index(flag) + 1] = value
        else:
            argv += [flag, value]
    return argv


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory):
    """runs/ of 2 seeds x (PolyPruneSAC, EauDeSAC) smoke runs: seed 1 of both scripts at once, then seed 2 of both,
    which finds its programs in the first wave's JAX compilation cache (XLA single-threaded in each process)."""
    cwd = tmp_path_factory.mktemp("smoke")
    env = dict(os.environ, JAX_PLATFORMS="cpu", WANDB_MODE="disabled",
               XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
               JAX_COMPILATION_CACHE_DIR=str(cwd / "jax_cache"), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    for seed in SEEDS:
        procs = []
        for script in SAC_SCRIPTS:
            argv = with_flags(SMOKE[script]["argv"], dict(OVERRIDES, **{"--seed": str(seed)}))
            procs.append(subprocess.Popen([sys.executable, os.path.join(ROOT, f"{script}.py"), *argv], cwd=cwd, env=env,
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        for p in procs:
            out, _ = p.communicate(timeout=280)
            assert p.returncode == 0, out[-3000:]
    run_dirs = sorted(glob.glob(str(cwd / "runs" / "*")))
    assert len(run_dirs) == 4, run_dirs
    return cwd / "runs"


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_iqm_equals_a_hand_computation():
    scores = np.array([[1.0], [2.0], [3.0], [4.0], [5.0], [6.0], [7.0], [100.0]])  # 8 runs x 1 task
    assert results.iqm(scores)[0] == pytest.approx((3 + 4 + 5 + 6) / 4)  # 2 cut at each end
    two_tasks = np.array([[0.0, 10.0], [1.0, 20.0], [2.0, 30.0], [3.0, -50.0]])  # 8 scores: -50 0 1 2 3 10 20 30
    assert results.iqm(two_tasks)[0] == pytest.approx((1 + 2 + 3 + 10) / 4)
    assert results.iqm(two_tasks)[0] == pytest.approx(metrics.aggregate_iqm(two_tasks))
    curves = np.stack([scores, 2 * scores], axis=-1)  # (runs, tasks, points): one IQM per point
    np.testing.assert_allclose(results.iqm(curves), [4.5, 9.0])


def test_ci_contains_the_iqm_and_is_reproducible():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(5, 3, 4))
    value, low, high = results.iqm_ci(scores, reps=300, seed=1)
    np.testing.assert_allclose(value, results.iqm(scores))
    assert np.all(low <= value) and np.all(value <= high) and np.all(low < high)
    again = results.iqm_ci(scores, reps=300, seed=1)
    np.testing.assert_array_equal(low, again[1])
    final = results.iqm_ci(scores[:, :, -1], reps=300, seed=1)  # final numbers: (runs, tasks)
    assert final[1][0] <= final[0][0] <= final[2][0]


def test_grid_bucket_means_and_last_values():
    grid = results.step_grid(400, 4)
    np.testing.assert_array_equal(grid, [100, 200, 300, 400])
    steps, values = np.array([150, 180, 390]), np.array([1.0, 3.0, 7.0])
    # (0,100] empty before any point; (100,200] mean 2; (200,300] empty: repeats 2; (300,400] 7
    np.testing.assert_array_equal(results.bucket_means(steps, values, grid, last_step=400), [np.nan, 2.0, 2.0, 7.0])
    # a run that stopped at step 200 has nothing in the buckets that start at or after 200
    np.testing.assert_array_equal(results.bucket_means(steps[:2], values[:2], grid, last_step=200),
                                  [np.nan, 2.0, np.nan, np.nan])
    np.testing.assert_array_equal(results.last_values(np.array([100, 300]), np.array([0.1, 0.5]), grid, last_step=400),
                                  [0.1, 0.1, 0.5, 0.5])


def test_results_on_smoke_runs(smoke_runs, tmp_path, capsys):
    out = tmp_path / "out"
    assert results.main([str(smoke_runs), "--out", str(out), "--points", "3", "--reps", "200", "--formats", "png", "svg"]) == 0
    for name in ("returns", "sparsity", "final_sparsity", "pareto"):
        for ext in ("png", "svg"):
            assert (out / f"mujoco_{name}.{ext}").stat().st_size > 1000, name
    rows = {r["algorithm"]: r for r in read_csv(out / "final.csv")}
    assert set(rows) == set(SAC_SCRIPTS)
    md = (out / "final.md").read_text()
    for script in SAC_SCRIPTS:
        r = rows[script]
        assert (r["env"], r["network_size"], r["seeds"], r["step"]) == ("Hopper-v4", "small", "2", str(TOTAL))
        assert float(r["return_ci_low"]) <= float(r["return_iqm"]) <= float(r["return_ci_high"])
        assert f"| {script} | Hopper-v4 | small | 2 | {TOTAL} |" in md
        # by hand: each run's final return is the mean of its evaluations in the last bucket (200, 300]; the IQM of
        # two runs is their mean
        finals = []
        for run_dir in glob.glob(str(smoke_runs / f"*__{script}__*")):
            steps, values = results.read_scalars(run_dir)["eval/episodic_return"]
            finals.append(values[(steps > 200) & (steps <= 300)].mean())
        assert float(r["return_iqm"]) == pytest.approx(np.mean(finals))
        # runs.csv: each run's own final return (the same by-hand value), and the IQM of final.csv is theirs
        own = [x for x in read_csv(out / "runs.csv") if x["algorithm"] == script]
        assert sorted(int(x["seed"]) for x in own) == [1, 2] and all(x["step"] == str(TOTAL) for x in own)
        assert sorted(float(x["return"]) for x in own) == pytest.approx(sorted(finals))
        assert float(r["return_iqm"]) == pytest.approx(results.iqm(np.array([[float(x["return"])] for x in own]))[0])
        assert float(r["sparsity_iqm"]) == pytest.approx(np.mean([float(x["sparsity"]) for x in own]))
        assert all(f"| {script} | Hopper-v4 | small | {x['seed']} | {TOTAL} |" in (out / "runs.md").read_text()
                   for x in own)
    # PolyPruneSAC ends at --final-sparsity 0.9 (exact zero count: within one weight)
    assert float(rows["polyprune_sac_mujoco_jax"]["sparsity_iqm"]) == pytest.approx(0.9, abs=1e-3)
    # EauDeSAC's delivered sparsity is sparsity/selected (sparsity/network once the scripts log it), never the target's
    runs = results.load_local_runs([str(smoke_runs)], print)
    eaude = [r for r in runs if r.script == "eaudesac_mujoco_jax"]
    tag = eaude[0].tag(results.SPARSITY_TAGS["eaudesac_mujoco_jax"])
    assert tag in ("sparsity/network", "sparsity/selected")
    expected = np.mean([r.scalars[tag][1][r.scalars[tag][0] <= TOTAL][-1] for r in eaude])
    assert float(rows["eaudesac_mujoco_jax"]["sparsity_iqm"]) == pytest.approx(expected)
    # the curves: three grid points, IQM inside its CI at each
    summary = results.summarize(results.group_runs(eaude, [])[0], 3, 200, 0, print)
    steps, value, low, high = summary.curves["return"]
    np.testing.assert_array_equal(steps, [100, 200, 300])
    assert np.all(low <= value) and np.all(value <= high)


def test_comparison_statistics_equal_hand_computations():
    x, y = np.array([[1.0], [2.0], [3.0]]), np.array([[0.5], [1.5], [2.5]])  # IQM of 3 runs trims none: the mean
    stats = results.compare_final(x, y, reps=500, seed=0)
    assert stats["ratio"][0] == pytest.approx(2.0 / 1.5)
    assert stats["diff"][0] == pytest.approx(0.5)
    assert stats["poi"][0] == pytest.approx(6 / 9)  # pairs with x > y: 1 > 0.5; 2 > 0.5, 1.5; 3 > all three
    for point, low, high in stats.values():
        assert low <= point <= high and low < high
    same = results.compare_final(y, y, reps=500, seed=0)
    assert same["ratio"][0] == pytest.approx(1.0) and same["diff"][0] == 0.0 and same["poi"][0] == 0.5
    two_tasks = results.compare_final(np.array([[1.0, 10.0], [2.0, 20.0]]), np.array([[0.0, 30.0], [3.0, 40.0]]), reps=200)
    assert two_tasks["poi"][0] == pytest.approx((2 / 4 + 0 / 4) / 2)  # per task, then averaged over tasks
    assert math.isnan(results.compare_final(x, -y, reps=200)["ratio"][0])  # no ratio to a non-positive base
    assert results.compare_final(x, -y, reps=200)["poi"] == (1.0, 1.0, 1.0)


def test_comparison_on_smoke_runs(smoke_runs, tmp_path):
    out = tmp_path / "out"
    argv = [str(smoke_runs), "--out", str(out), "--points", "3", "--reps", "200", "--compare", "polyprune_sac_mujoco_jax"]
    assert results.main(argv) == 0
    (row,) = read_csv(out / "compare.csv")
    assert (row["algorithm"], row["base"], row["env"], row["seeds"], row["base_seeds"], row["step"]) == (
        "eaudesac_mujoco_jax", "polyprune_sac_mujoco_jax", "Hopper-v4", "2", "2", str(TOTAL))
    final = {r["algorithm"]: float(r["return_iqm"]) for r in read_csv(out / "final.csv")}
    assert float(row["iqm"]) == pytest.approx(final["eaudesac_mujoco_jax"])
    assert float(row["base_iqm"]) == pytest.approx(final["polyprune_sac_mujoco_jax"])
    assert float(row["diff"]) == pytest.approx(float(row["iqm"]) - float(row["base_iqm"]))
    assert float(row["poi_ci_low"]) <= float(row["poi"]) <= float(row["poi_ci_high"])
    assert "| eaudesac_mujoco_jax | Hopper-v4 | small | 2 vs 2 | 300 |" in (out / "compare.md").read_text()


def test_bad_runs_are_reported_and_skipped(smoke_runs, tmp_path, capsys):
    runs = tmp_path / "runs"
    shutil.copytree(smoke_runs, runs)
    template = sorted(glob.glob(str(runs / "*__polyprune_sac_mujoco_jax__*")))[0]
    with open(os.path.join(template, "args.json")) as f:
        args = json.load(f)

    def fake_run(name, run_args, scalars):
        d = runs / name
        d.mkdir()
        if run_args is not None:
            (d / "args.json").write_text(json.dumps(run_args))
        writer = Writer(str(d))
        for tag, points in scalars.items():
            for step, value in points:
                writer.add_scalar(tag, value, step)
        writer.close()

    sparsity = [(100, 0.0), (200, 0.5), (300, 0.9)]
    fake_run("no_eval", dict(args, seed=7), {"sparsity/online": sparsity, "charts/SPS": [(300, 10.0)]})
    fake_run("unfinished", dict(args, seed=8, total_timesteps=1000),
             {"sparsity/online": sparsity, "eval/episodic_return": [(100, 1.0), (300, 2.0)]})
    fake_run("unknown", {"exp_name": "ppo_continuous_action", "env_id": "Hopper-v4", "total_timesteps": 300},
             {"charts/SPS": [(300, 1.0)]})
    fake_run("no_args", None, {"charts/SPS": [(300, 1.0)]})
    (runs / "empty_args").mkdir()
    (runs / "empty_args" / "args.json").write_text("{not json")

    capsys.readouterr()
    assert results.main([str(runs), "--out", str(tmp_path / "out"), "--points", "3", "--reps", "50"]) == 0
    lines = capsys.readouterr().out.splitlines()
    skipped = [line for line in lines if line.startswith("skipped")]
    assert len(skipped) == 5, lines
    assert any("no_eval: missing tag eval/episodic_return" in line for line in skipped)
    assert any("unfinished: unfinished (last logged step 300 of 1000)" in line for line in skipped)
    assert any("unknown: unknown script" in line for line in skipped)
    assert any("no_args: no args.json" in line for line in skipped)
    assert any("empty_args: args.json unreadable" in line for line in skipped)
    rows = {r["algorithm"]: r for r in read_csv(tmp_path / "out" / "final.csv")}
    assert rows["polyprune_sac_mujoco_jax"]["seeds"] == "2"  # the bad runs did not join the group

    assert results.main([str(runs), "--out", str(tmp_path / "out2"), "--points", "3", "--reps", "50",
                         "--include-unfinished"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("included") and "unfinished" in line for line in lines)
    rows = {r["algorithm"]: r for r in read_csv(tmp_path / "out2" / "final.csv")}
    assert rows["polyprune_sac_mujoco_jax"]["seeds"] == "3"


def write_atari_run(root, exp_name, env_id, seed, returns, sparsity_tags, total=1000):
    d = root / f"{env_id}__{exp_name}__{seed}__1"
    d.mkdir(parents=True)
    (d / "args.json").write_text(json.dumps({"exp_name": exp_name, "seed": seed, "env_id": env_id, "total_timesteps": total,
                                             "train_frequency": 4, "population_size": 5, "network_size": "medium"}))
    writer = Writer(str(d))
    for step, value in returns:
        writer.add_scalar("charts/episodic_return", value, step)
    for step in range(100, total + 1, 100):
        for tag, value in sparsity_tags.items():
            writer.add_scalar(tag, value * step / total, step)
    writer.close()


def test_atari_returns_are_human_normalized_and_pooled_over_games(tmp_path):
    runs = tmp_path / "runs"
    final = {("ALE/Pong-v5", 1): 0.0, ("ALE/Pong-v5", 2): 10.0, ("ALE/Breakout-v5", 1): 30.5, ("ALE/Breakout-v5", 2): 60.0}
    for (env_id, seed), last in final.items():
        # training episodes: the last bucket (500, 1000] holds two episodes whose mean is `last`
        write_atari_run(runs, "eaudedqn_atari_jax", env_id, seed, [(300, -100.0), (600, last - 1), (900, last + 1)],
                        {"sparsity/network": 0.8, "sparsity/target": 0.1})
    out = tmp_path / "out"
    assert results.main([str(runs), "--out", str(out), "--points", "2", "--reps", "100"]) == 0
    rows = {r["env"]: r for r in read_csv(out / "final.csv")}
    assert set(rows) == {"ALE/Pong-v5", "ALE/Breakout-v5", "all (2 games)"}
    pong = [(v - -20.7) / (14.6 - -20.7) for v in (0.0, 10.0)]
    breakout = [(v - 1.7) / (30.5 - 1.7) for v in (30.5, 60.0)]
    assert float(rows["ALE/Pong-v5"]["return_iqm"]) == pytest.approx(np.mean(pong))
    assert float(rows["ALE/Breakout-v5"]["return_iqm"]) == pytest.approx(np.mean(breakout))
    pooled = sorted(pong + breakout)  # IQM of 4 scores: the middle two
    assert float(rows["all (2 games)"]["return_iqm"]) == pytest.approx((pooled[1] + pooled[2]) / 2)
    assert rows["all (2 games)"]["return_metric"] == "human-normalized return"
    assert float(rows["all (2 games)"]["sparsity_iqm"]) == pytest.approx(0.8)  # sparsity/network before sparsity/target
    assert (out / "atari_pareto.png").exists() and (out / "atari_returns.png").exists()


def test_wandb_runs_through_the_api(tmp_path):
    """--wandb-project reads config and history through wandb.Api; a stand-in API object checks the mapping."""

    class FakeRun:
        name = "Hopper-v4__sac_mujoco_jax__1__1"
        config = {"exp_name": "sac_mujoco_jax", "seed": 1, "env_id": "Hopper-v4", "total_timesteps": 300, "tau": 0.005,
                  "final_sparsity": 0.0, "network_size": "small"}

        def scan_history(self, keys):
            data = {"eval/episodic_return": [(100, 1.0), (200, 2.0), (300, 3.0)],
                    "sparsity/online": [(100, 0.0), (200, 0.0), (300, 0.0)]}
            return [{"global_step": s, keys[1]: v} for s, v in data.get(keys[1], [])]

    class FakeApi:
        def runs(self, path, filters):
            assert path == "me/eaudeqn" and filters == {"group": "g"}
            return [FakeRun()]

    runs = results.load_wandb_runs("eaudeqn", "me", "g", None, print, api=FakeApi())
    assert len(runs) == 1 and runs[0].script == "polyprune_sac_mujoco_jax" and runs[0].finished
    summary = results.summarize(results.group_runs(runs, [])[0], 3, 50, 0, print)
    assert summary.final["return"][1] == pytest.approx(3.0)


def test_help_explains_the_grid():
    out = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "results.py"), "--help"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0
    assert "--group-by" in out.stdout and "bucket" in out.stdout and "--include-unfinished" in out.stdout


# ------------------------------------------------------------------------------------------------------- compact runs
COMPACT_TAGS = {"eval/episodic_return", "sparsity/network", "sparsity/selected", "sparsity/online", "charts/nonzero_params"}


def write_event_run(root, name, args, scalars, status=None):
    """A run folder of args.json and TensorBoard events (tag -> [(step, value)]), with a launch_status.json if given."""
    d = root / name
    d.mkdir(parents=True)
    (d / "args.json").write_text(json.dumps(args))
    if status is not None:
        (d / "launch_status.json").write_text(json.dumps(status))
    writer = Writer(str(d))
    for tag, points in scalars.items():
        for step, value in points:
            writer.add_scalar(tag, value, step)
    writer.close()
    return d


def curves_of(run, points):
    grid = results.step_grid(run.total, points)
    return {m: results.run_curve(run, m, grid) for m in ("return", "sparsity", "nonzero")}


def assert_same_runs(event_runs, compact_runs):
    ev = {r.run_name: r for r in event_runs}
    co = {r.run_name: r for r in compact_runs}
    assert sorted(ev) == sorted(co)
    for name, run in ev.items():
        other = co[name]
        assert (other.args, other.script, other.total, other.last_step, other.finished) == (
            run.args, run.script, run.total, run.last_step, run.finished)
        for points in (1, 2, 3, 7, 10, 40, 100, 1000):
            for metric, curve in curves_of(run, points).items():
                np.testing.assert_array_equal(curve, curves_of(other, points)[metric], err_msg=f"{name} {metric} {points}")


def test_compact_runs_give_the_same_numbers(smoke_runs, tmp_path, capsys):
    compact, common = tmp_path / "compact", ["--points", "3", "--reps", "200"]
    assert results.main([str(smoke_runs), "--out", str(tmp_path / "events"), "--export-compact", str(compact), *common]) == 0
    files = sorted(compact.glob("*.json"))
    assert [f.stem for f in files] == sorted(os.path.basename(d) for d in glob.glob(str(smoke_runs / "*")))
    for f in files:
        assert f.stat().st_size < 6000, f
        data = json.loads(f.read_text())
        assert data["format"] == 1 and data["finished"] and data["last_step"] == TOTAL and data["name"] == f.stem
        assert data["args"] == json.loads((smoke_runs / f.stem / "args.json").read_text())
        assert set(data["scalars"]) <= COMPACT_TAGS and "eval/episodic_return" in data["scalars"]
    assert results.main([str(compact), "--out", str(tmp_path / "from_compact"), *common]) == 0
    assert (tmp_path / "from_compact" / "final.csv").read_text() == (tmp_path / "events" / "final.csv").read_text()
    assert (tmp_path / "from_compact" / "final.md").read_text() == (tmp_path / "events" / "final.md").read_text()
    # runs.csv: the same rows; the run column names where each was read from, the same run
    ev, co = (read_csv(tmp_path / d / "runs.csv") for d in ("events", "from_compact"))
    assert [os.path.basename(r.pop("run")) for r in ev] == [os.path.basename(r.pop("run"))[:-len(".json")] for r in co]
    assert ev == co
    assert_same_runs(results.load_local_runs([str(smoke_runs)], print), results.load_local_runs([str(compact)], print))
    # exporting again, from the events or from the compact runs, gives the same bytes
    for source, again in ((smoke_runs, "again"), (compact, "from_compact_again")):
        argv = [str(source), "--out", str(tmp_path / "o"), "--export-compact", str(tmp_path / again), *common]
        assert results.main(argv) == 0
        assert [(f.name, f.read_bytes()) for f in sorted((tmp_path / again).glob("*.json"))] == [
            (f.name, f.read_bytes()) for f in files]
    # one compact file given alone is one run
    assert len(results.load_local_runs([str(files[0])], print)) == 1


def test_compact_run_of_a_full_length_sac_run_is_small_and_exact(tmp_path):
    """A 100k-step EauDeSAC-like run, periodic tags every 100 steps: the compact run keeps the sparsity and nonzero
    series at their changes (one per selection at most) and is a few KB."""
    rng = np.random.default_rng(0)
    total, sparsity, points = 100_000, 0.0, {t: [] for t in ("sparsity/network", "charts/nonzero_params", "charts/SPS",
                                                            "losses/qf_loss", "eval/episodic_return")}
    for step in range(100, total + 1, 100):
        if step % 1000 == 0 and rng.random() < 0.6:
            sparsity += 0.01 * (1 - sparsity)
        points["sparsity/network"].append((step, sparsity))
        points["charts/nonzero_params"].append((step, float(round(73484 + 11522 * (1 - sparsity)))))
        points["charts/SPS"].append((step, float(rng.integers(200, 300))))
        points["losses/qf_loss"].append((step, float(rng.random())))
        if step % 10_000 == 0:
            points["eval/episodic_return"].append((step, float(rng.normal(1000, 300))))
    args = {"exp_name": "eaudesac_mujoco_jax", "seed": 1, "env_id": "HalfCheetah-v4", "total_timesteps": total,
            "tau": 0.005, "population_size": 5, "network_size": "64", "alpha": 3.0}
    write_event_run(tmp_path / "runs", "HalfCheetah-v4__eaudesac_mujoco_jax__s1", args, points,
                    status={"state": "exited", "exit_code": 0})
    event_runs = results.load_local_runs([str(tmp_path / "runs")], print)
    assert event_runs[0].finished
    (path,) = results.export_compact(event_runs, str(tmp_path / "compact"))
    assert os.path.getsize(path) < 8000
    data = json.loads(open(path).read())
    assert set(data["scalars"]) == {"sparsity/network", "charts/nonzero_params", "eval/episodic_return"}
    assert len(data["scalars"]["sparsity/network"]) < 100 and len(data["scalars"]["eval/episodic_return"]) == 10
    assert_same_runs(event_runs, results.load_local_runs([path], print))


def test_change_points_keep_the_last_value_at_every_step():
    rng = np.random.default_rng(1)
    steps = np.sort(rng.integers(0, 60, 300)) * 10  # repeated steps too (a resumed run logs some again)
    values = np.empty(300)
    values[0] = 0.0
    for i in range(1, 300):
        values[i] = values[i - 1] if rng.random() < 0.8 else rng.choice([0.0, 0.25, 0.5, np.nan])
    kept_steps, kept_values = results.change_points(steps, values)
    assert 10 < len(kept_steps) < 150 and kept_steps[-1] == steps[-1]
    grid = np.arange(0, 610, 5)
    for last_step in (600, 300):
        np.testing.assert_array_equal(results.last_values(steps, values, grid, last_step),
                                      results.last_values(kept_steps, kept_values, grid, last_step))


def test_a_run_still_running_per_launch_status_is_unfinished(tmp_path, capsys):
    """The final evaluation is logged after the last periodic step: a run whose launch_status.json does not say it
    exited with code 0 is unfinished even when it logged step total_timesteps."""
    args = {"exp_name": "sac_mujoco_jax", "env_id": "Hopper-v4", "total_timesteps": 300, "tau": 0.005,
            "final_sparsity": 0.0}
    scalars = {"eval/episodic_return": [(100, 1.0), (300, 2.0)], "sparsity/network": [(100, 0.0), (300, 0.0)]}
    for seed, status in ((1, {"state": "running"}), (2, {"state": "exited", "exit_code": 1}),
                         (3, {"state": "exited", "exit_code": 0}), (4, None)):
        write_event_run(tmp_path / "runs", f"run{seed}", dict(args, seed=seed), scalars, status)
    capsys.readouterr()
    assert results.main([str(tmp_path / "runs"), "--out", str(tmp_path / "out"), "--points", "3", "--reps", "50"]) == 0
    skipped = [line for line in capsys.readouterr().out.splitlines() if line.startswith("skipped")]
    assert len(skipped) == 2
    assert any("run1: unfinished (last logged step 300 of 300; launch_status.json: running)" in line for line in skipped)
    assert any("run2: unfinished" in line and "launch_status.json: exited, exit code 1" in line for line in skipped)
    assert read_csv(tmp_path / "out" / "final.csv")[0]["seeds"] == "2"
    # exported with --include-unfinished, a compact run stays unfinished
    assert results.main([str(tmp_path / "runs"), "--out", str(tmp_path / "out2"), "--points", "3", "--reps", "50",
                         "--include-unfinished", "--export-compact", str(tmp_path / "compact")]) == 0
    assert json.loads((tmp_path / "compact" / "run1.json").read_text())["finished"] is False
    capsys.readouterr()
    assert results.main([str(tmp_path / "compact"), "--out", str(tmp_path / "out3"), "--points", "3", "--reps", "50"]) == 0
    assert "run1.json: unfinished (last logged step 300 of 300; exported unfinished)" in capsys.readouterr().out


def good_compact():
    return {"format": 1, "name": "r", "last_step": 300, "finished": True,
            "args": {"exp_name": "sac_mujoco_jax", "seed": 1, "env_id": "Hopper-v4", "total_timesteps": 300, "tau": 0.005},
            "scalars": {"eval/episodic_return": [[300, 1.5]], "sparsity/network": [[100, 0.0], [300, 0.0]]}}


@pytest.mark.parametrize("text, why", [
    ("{not json", "JSONDecodeError"),
    ("[1, 2]", '"format": 1'),
    (json.dumps(dict(good_compact(), format=2)), '"format": 1'),
    (json.dumps({k: v for k, v in good_compact().items() if k != "args"}), "'args'"),
    (json.dumps(dict(good_compact(), last_step="300")), "'last_step'"),
    (json.dumps(dict(good_compact(), scalars={"eval/episodic_return": [[300]]})), "[step, value] pairs"),
    (json.dumps(dict(good_compact(), scalars={"eval/episodic_return": [[400, 1.0]]})), "past last_step 300"),
])
def test_a_malformed_compact_run_is_one_error_line(tmp_path, capsys, text, why):
    (tmp_path / "compact").mkdir()
    (tmp_path / "compact" / "good.json").write_text(results.compact_text(good_compact()))
    (tmp_path / "compact" / "bad.json").write_text(text)
    for path in (tmp_path / "compact", tmp_path / "compact" / "bad.json"):
        capsys.readouterr()
        assert results.main([str(path), "--out", str(tmp_path / "out")]) == 2
        lines = capsys.readouterr().out.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and "bad.json: not a compact run" in lines[0], lines
        assert why in lines[0]
    (tmp_path / "compact" / "bad.json").unlink()
    assert results.main([str(tmp_path / "compact"), "--out", str(tmp_path / "out"), "--reps", "20"]) == 0


def test_a_path_that_does_not_exist_is_an_error(tmp_path, capsys):
    assert results.main([str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")]) == 2
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "nowhere: no such folder or file" in lines[0]
