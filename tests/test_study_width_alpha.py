"""tools/study_width_alpha.py on a synthetic, partial width-and-alpha study of compact runs (no training)."""
import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tools import results
from tools import study_width_alpha as study

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOTAL, PERIOD, BETA = 100_000, 1000, 0.01
ACTOR = 73_484  # the (256, 256) actor on HalfCheetah's 17 observations and 6 actions


def critic_counts(width, n_in=23):
    """(kernel weights, biases) of the critic pair of that width."""
    kernels = 2 * (n_in * width + width * width + width)
    return kernels, 2 * (2 * width + 1)


def compact(exp_name, width, seed, final_return, prune_every=None, alpha=None, last_step=TOTAL, finished=True):
    """A compact run: evaluations every 10,000 steps (the last one the final return); the delivered critic pruned by
    beta at every prune_every-th selection (never if None)."""
    args = {"exp_name": exp_name, "seed": seed, "env_id": "HalfCheetah-v4", "total_timesteps": TOTAL, "tau": 0.005,
            "network_size": str(width), "learning_starts": 100}
    if alpha is not None:
        args.update(population_size=5, alpha=alpha, beta=BETA, selection_period=PERIOD)
    else:
        args.update(final_sparsity=0.0 if exp_name == "sac_mujoco_jax" else 0.95)
    kernels, biases = critic_counts(width)
    sparsity, spa, nz = 0.0, [], []
    for step in range(100, last_step + 1, 100):
        if prune_every and step % PERIOD == 0 and (step // PERIOD) % prune_every == 0:
            sparsity += BETA * (1 - sparsity)
        kept = round((1 - sparsity) * kernels)
        spa.append([step, 1 - kept / kernels])
        nz.append([step, float(kept + biases + ACTOR)])
    evals = [[s, final_return * s / TOTAL] for s in range(10_000, last_step + 1, 10_000)]
    runs = results.Run(name="", args=args, script=results.identify_script(args), family="mujoco", total=TOTAL,
                       scalars={"eval/episodic_return": results._arrays(evals), "sparsity/network": results._arrays(spa),
                                "charts/nonzero_params": results._arrays(nz)},
                       last_step=last_step, finished=finished, run_name=f"HalfCheetah-v4__{exp_name}__{width}_{alpha}_s{seed}")
    return runs


@pytest.fixture(scope="module")
def study_runs(tmp_path_factory):
    """Finished: EauDeSAC alpha 3 at widths 32 (3 seeds) and 64 (3), alpha 6 at 64 (2 of 3), alpha 0 at 64, dense SAC
    64 (3), PolyPruneSAC 64 (3); width 128 has one unfinished run; the rest of the grid is missing."""
    root = tmp_path_factory.mktemp("study") / "runs"
    runs = [compact("eaudesac_mujoco_jax", w, seed, 1000.0 * seed + w, prune_every=e, alpha=3.0)
            for w, e in ((32, 2), (64, 1)) for seed in (1, 2, 3)]
    runs += [compact("eaudesac_mujoco_jax", 64, seed, 900.0 * seed, prune_every=1, alpha=6.0) for seed in (1, 2)]
    runs += [compact("eaudesac_alpha0_mujoco_jax", 64, 1, 2500.0, alpha=0.0)]
    runs += [compact("sac_mujoco_jax", 64, seed, 2000.0 * seed) for seed in (1, 2, 3)]
    runs += [compact("polyprune_sac_mujoco_jax", 64, seed, 1500.0 * seed, prune_every=1) for seed in (1, 2, 3)]
    runs += [compact("eaudesac_mujoco_jax", 128, 1, 500.0, prune_every=1, alpha=3.0, last_step=45_600, finished=False)]
    results.export_compact(runs, str(root))
    return root


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_study_on_a_partial_grid(study_runs, tmp_path, capsys):
    out = tmp_path / "out"
    capsys.readouterr()
    assert study.main([str(study_runs), "--out", str(out), "--reps", "100"]) == 0
    printed = capsys.readouterr().out
    for name in ("width_final_sparsity", "width_schedules", "alpha_width64", "pareto"):
        assert (out / f"{name}.png").stat().st_size > 5000, name
    for name in ("table.md", "table.csv", "runs.md", "runs.csv"):
        assert (out / name).exists()
    rows = {(r["exp_name"], r["width"], r["alpha"]): r for r in read_csv(out / "table.csv")}
    assert sorted(rows) == sorted([("eaudesac_mujoco_jax", "32", "3"), ("eaudesac_mujoco_jax", "64", "3"),
                                   ("eaudesac_mujoco_jax", "64", "6"), ("eaudesac_alpha0_mujoco_jax", "64", "0"),
                                   ("sac_mujoco_jax", "64", "n/a"), ("polyprune_sac_mujoco_jax", "64", "n/a")])
    # 3 seeds: the IQM is their mean; the final return is the evaluation at step 100,000
    r64, dense = rows[("eaudesac_mujoco_jax", "64", "3")], rows[("sac_mujoco_jax", "64", "n/a")]
    assert float(r64["return_iqm"]) == pytest.approx(np.mean([1000.0 * s + 64 for s in (1, 2, 3)]))
    assert float(r64["return_vs_dense"]) == pytest.approx(float(r64["return_iqm"]) / float(dense["return_iqm"]))
    assert float(r64["return_vs_dense_ci_low"]) <= float(r64["return_vs_dense"]) <= float(r64["return_vs_dense_ci_high"])
    assert r64["dense_reference"] == "sac_mujoco_jax" and rows[("eaudesac_mujoco_jax", "32", "3")]["return_vs_dense"] == "nan"
    # pruned at every selection: 1 - 0.99^100 up to the exact count; the critic column is the kept kernels + biases
    kernels, biases = critic_counts(64)
    kept = round(0.99 ** 100 * kernels)
    assert float(r64["sparsity_iqm"]) == pytest.approx(1 - kept / kernels)
    assert float(r64["critic_nonzero_iqm"]) == pytest.approx(kept + biases)
    assert float(dense["critic_nonzero_iqm"]) == pytest.approx(kernels + biases) and float(dense["sparsity_iqm"]) == 0.0
    assert float(r64["actor_params"]) == ACTOR
    assert (r64["eq3_selections"], float(r64["eq3_cap"])) == ("100", pytest.approx(1 - 0.99 ** 100))
    assert float(r64["eq3_cap_delivered"]) == pytest.approx(1 - 0.99 ** 99)
    assert float(rows[("eaudesac_mujoco_jax", "32", "3")]["sparsity_of_cap"]) == pytest.approx(
        (1 - round(0.99 ** 50 * critic_counts(32)[0]) / critic_counts(32)[0]) / (1 - 0.99 ** 100))
    assert (rows[("eaudesac_mujoco_jax", "64", "6")]["finished_seeds"], rows[("eaudesac_mujoco_jax", "64", "6")]["seeds"]) == (
        "2", "1 2")
    # what is missing or incomplete, printed and in table.md
    md = (out / "table.md").read_text()
    for line in ("missing: EauDeSAC width 256 alpha 3 (eaudesac_mujoco_jax): 0 of 3 seeds finished",
                 "missing: EauDeSAC width 128 alpha 3 (eaudesac_mujoco_jax): 0 of 3 seeds finished; unfinished: seed 1 "
                 "at step 45,600",
                 "incomplete: EauDeSAC width 64 alpha 6 (eaudesac_mujoco_jax): 2 of 3 seeds finished (1, 2)",
                 "missing: dense SAC width 256 (sac_mujoco_jax): 0 of 3 seeds finished"):
        assert line in printed and line in md, line
    assert "incomplete: EauDeSAC width 64 alpha 3" not in printed and "PolyPruneSAC width 64" not in printed
    assert "| EauDeSAC | 64 | 6 | 2 of 3 (1, 2) |" in md
    assert "| dense SAC | 64 | n/a | 3 of 3 (1, 2, 3) |" in md and "| 1 (reference) |" in md
    assert "| EauDeSAC | 32 | 3 | 3 of 3 (1, 2, 3) |" in md and "n/a (no dense run of this width)" in md
    assert "minus the dense actor's 73,484 parameters" in md and "1 - (1 - beta)^100 = 0.634" in md
    assert "Eq. 3 cap, EauDeSAC width 64 alpha 3: 100 selections, cap 0.634 (delivered 0.630)" in printed
    assert "note:" not in printed  # the nonzero counts are the dense critic's plus the actor's where dense
    # runs.csv: each finished run's own numbers
    assert len(read_csv(out / "runs.csv")) == 15


def test_unfinished_runs_preview(study_runs, tmp_path, capsys):
    assert study.main([str(study_runs), "--out", str(tmp_path / "out"), "--reps", "50", "--include-unfinished"]) == 0
    assert "| EauDeSAC | 128 | 3 | 0 of 3 + unfinished 1 |" in (tmp_path / "out" / "table.md").read_text()


def test_bad_input_is_one_error_line(study_runs, tmp_path, capsys):
    assert study.main([str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")]) == 2
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.json").write_text(json.dumps({"format": 1, "name": "x"}))
    assert study.main([str(study_runs), str(bad), "--out", str(tmp_path / "out")]) == 2
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all(line.startswith("error: ") for line in lines), lines
    assert "nowhere: no such folder" in lines[0] and "x.json: not a compact run" in lines[1]


def test_help_has_the_reproduce_commands():
    out = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "study_width_alpha.py"), "--help"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    assert "--export-compact docs/halfcheetah_width_alpha/compact_runs" in out.stdout
    command = "python tools/study_width_alpha.py docs/halfcheetah_width_alpha/compact_runs --out docs/halfcheetah_width_alpha"
    assert command in out.stdout
