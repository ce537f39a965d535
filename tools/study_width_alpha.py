"""The HalfCheetah-v4 width and alpha study (benchmark/halfcheetah_width_alpha_cpu.sh): does EauDeSAC discover more
sparsity in larger critics and under a bolder alpha (Eq. 3)? Figures and one table from its runs.

Reads compact runs (tools/results.py --export-compact) or event-file run folders, through tools/results.py: the
same run selection (unfinished runs reported and left out), step grid, IQM over seeds and 95% stratified bootstrap
CIs. Groups: (algorithm, critic width, alpha); EauDeSAC's exp_names eaudesac_mujoco_jax and
eaudesac_alpha0_mujoco_jax are both EauDeSAC (told apart by alpha), sac_mujoco_jax (PolyPruneSAC with
--final-sparsity 0) is dense SAC.

Writes to --out (figures in each of --formats, default png):
  width_final_sparsity  final sparsity of the delivered critic against critic width, EauDeSAC alpha 3 (log2 axis)
  width_schedules       sparsity/network over env steps, one curve per width (EauDeSAC alpha 3), with Eq. 3's cap
  alpha_width64         final sparsity and final return against alpha at width 64 (EauDeSAC; dense SAC's return)
  pareto                final return against final sparsity: every EauDeSAC (width, alpha), PolyPruneSAC, dense SAC
  table.md, table.csv   per group: finished seeds, final return and sparsity (IQM [95% CI]), nonzero critic
                        parameters, return as a fraction of dense SAC of the same width, Eq. 3's cap
  runs.md, runs.csv     every run's own final return and sparsity (tools/results.py's per-run table)
and prints the table, the Eq. 3 cap of each EauDeSAC group, and which groups of the grid are missing or incomplete.

Final numbers are read at the last point of a --points grid (default 10: the final return is eval/episodic_return
at step 100,000, the mean of 10 episodes of the final actor); the schedules on a --schedule-points grid (default 100:
one point per selection period of 1,000 steps).

Nonzero critic parameters: charts/nonzero_params counts the delivered critic pair's unpruned kernel weights, all its
biases and the dense actor (both SAC scripts log it so); the table subtracts the actor, (256, 256) hidden as in both
scripts, sized from the env's observation and action spaces (gymnasium), and checks the difference against the dense
critic pair's count where a run logged it dense.

Eq. 3's cap: a copy prunes at most beta of its parent's remaining weights, once per selection, so after n selections
(multiples of --selection-period in (learning_starts, total_timesteps]) a lineage reaches at most 1 - (1 - beta)^n:
1 - 0.99^100 = 0.634 at 100,000 steps and T-bar 1,000. The network delivered at the last selection is its winner, a
member made at an earlier one: at most 1 - (1 - beta)^(n - 1) = 0.630.

Reproduce (RUNS: the runs folder of the grid, WORKDIR/runs of benchmark/halfcheetah_width_alpha_cpu.sh):
  python tools/results.py RUNS --points 10 --export-compact docs/halfcheetah_width_alpha/compact_runs --out RESULTS_TMP
  python tools/study_width_alpha.py docs/halfcheetah_width_alpha/compact_runs --out docs/halfcheetah_width_alpha
The first command exports only finished runs (it leaves out unfinished ones, as it does from its own tables) and
writes results.py's generic figures and tables to RESULTS_TMP; the second one needs only the compact runs. (The
folder is compact_runs, not runs: .gitignore ignores every runs/ folder.)
"""
import argparse
import csv
import math
import os
import sys
from dataclasses import dataclass

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tools import results  # noqa: E402

# the grid of benchmark/halfcheetah_width_alpha_cpu.sh: (algorithm, exp_name, width, alpha) -> seeds
EXPECTED = {
    **{("EauDeSAC", "eaudesac_mujoco_jax", w, 3.0): (1, 2, 3) for w in (32, 64, 128, 256)},
    **{("EauDeSAC", "eaudesac_mujoco_jax", 64, a): (1, 2, 3) for a in (6.0, 12.0)},
    **{("EauDeSAC", "eaudesac_alpha0_mujoco_jax", w, 0.0): (1,) for w in (32, 64, 128, 256)},
    **{("dense SAC", "sac_mujoco_jax", w, None): (1, 2, 3) for w in (64, 256)},
    ("PolyPruneSAC", "polyprune_sac_mujoco_jax", 64, None): (1, 2, 3),
}
NAMED_WIDTHS = {"small": 256, "medium": 512, "large": 1024}  # the scripts' --network-size names
ACTOR_HIDDEN = (256, 256)  # both SAC scripts' actor, whatever --network-size
ALGORITHM_ORDER = {"EauDeSAC": 0, "PolyPruneSAC": 1, "dense SAC": 2}


@dataclass
class StudyGroup:
    algorithm: str  # EauDeSAC, PolyPruneSAC or dense SAC
    exp_name: str
    width: int
    alpha: float  # None for the SAC baselines
    group: object  # results.Group
    summary: object  # results.Summary on the --points grid
    schedule: object  # results.Summary on the --schedule-points grid
    dims: tuple = None  # the env's (observation, action) sizes
    actor: int = None  # the actor's parameters
    critic_nonzero: float = math.nan  # IQM of the final nonzero critic parameters

    @property
    def key(self):
        return (self.algorithm, self.exp_name, self.width, self.alpha)

    def label(self):
        return f"{self.algorithm} {self.width}" + (f" alpha {fmt_alpha(self.alpha)}" if self.alpha is not None else "")

    def seeds(self, finished=True):
        return sorted(int(r.args.get("seed", 0)) for r in self.group.runs if r.finished or not finished)


def seeds_text(n):
    return f"{n} seed" + ("" if n == 1 else "s")


def fmt_alpha(alpha):
    return "n/a" if alpha is None else f"{alpha:g}"


def width_of(network_size):
    size = str(network_size)
    return NAMED_WIDTHS[size] if size in NAMED_WIDTHS else int(size) if size.isdigit() else None


def algorithm_of(run):
    if run.script == "eaudesac_mujoco_jax":
        return "EauDeSAC"
    if run.script == "polyprune_sac_mujoco_jax":
        return "dense SAC" if float(run.args.get("final_sparsity", 1.0)) == 0.0 else "PolyPruneSAC"
    return None


def dense_params(in_dim, hidden, out_dims):
    """Parameters (kernels + biases) of an MLP with the given hidden widths and output heads."""
    total, last = 0, in_dim
    for width in hidden:
        total += (last + 1) * width
        last = width
    return total + sum((last + 1) * out for out in out_dims)


def env_dims(env_id):
    """(observation size, action size) of the env, from gymnasium; None if it cannot be made here."""
    import warnings

    sys.stderr.flush()
    saved = os.dup(2)
    try:
        import gymnasium as gym

        with open(os.devnull, "w") as null, warnings.catch_warnings():
            os.dup2(null.fileno(), 2)  # MuJoCo's model compiler warns on stderr from C
            warnings.simplefilter("ignore")
            env = gym.make(env_id)
        dims = int(np.prod(env.observation_space.shape)), int(np.prod(env.action_space.shape))
        env.close()
        return dims
    except Exception:  # no gymnasium or MuJoCo here: the critic column is n/a
        return None
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def eq3_cap(args):
    """(selections, the lineage's cap 1 - (1 - beta)^n, the delivered network's cap at the last selection)."""
    period, total = int(args["selection_period"]), int(args["total_timesteps"])
    n = total // period - int(args.get("learning_starts", 0)) // period
    beta = float(args["beta"])
    return n, 1.0 - (1.0 - beta) ** n, 1.0 - (1.0 - beta) ** max(n - 1, 0)


def build_groups(runs, points, schedule_points, reps, seed, report):
    groups = []
    for g in results.group_runs(runs, ["alpha"]):
        algorithm, width = algorithm_of(g.runs[0]), width_of(g.size)
        if algorithm is None or width is None:
            report(f"skipped {g.algorithm} ({g.size}): not an EauDeSAC or SAC run of a known width")
            continue
        alpha = float(g.extra[0]) if algorithm == "EauDeSAC" else None
        summary = results.summarize(g, points, reps, seed, report)
        schedule = results.summarize(g, schedule_points, reps, seed, report) if algorithm == "EauDeSAC" else None
        groups.append(StudyGroup(algorithm, g.algorithm, width, alpha, g, summary, schedule))
    return sorted(groups, key=lambda s: (ALGORITHM_ORDER[s.algorithm], s.width, -1 if s.alpha is None else s.alpha,
                                         s.exp_name))


def grid_status(groups, unfinished):
    """Lines on the groups of EXPECTED that have no finished run, or fewer finished seeds than the grid has."""
    have = {s.key: s for s in groups}
    lines = []
    for key, seeds in EXPECTED.items():
        algorithm, exp_name, width, alpha = key
        done = have[key].seeds() if key in have else []
        if set(seeds) <= set(done):
            continue
        waiting = [r for r in unfinished if r.args.get("exp_name") == exp_name and width_of(r.args.get("network_size"))
                   == width and (alpha is None or float(r.args.get("alpha", math.nan)) == alpha)]
        seen = "; unfinished: " + ", ".join(f"seed {r.args.get('seed')} at step {r.last_step:,}"
                                            for r in sorted(waiting, key=lambda r: r.args.get("seed", 0))) if waiting else ""
        name = f"{algorithm} width {width}" + (f" alpha {fmt_alpha(alpha)}" if alpha is not None else "")
        state = "missing" if not done else "incomplete"
        lines.append(f"{state}: {name} ({exp_name}): {len(done)} of {len(seeds)} seeds finished"
                     + (f" ({', '.join(map(str, done))})" if done else "") + seen)
    return lines


def critic_nonzero(s, actor, report):
    """IQM of the final charts/nonzero_params minus the actor's parameters; checks it against the dense critic pair
    count at the first point a run logged dense."""
    nz = s.summary.final.get("nonzero")
    if nz is None or actor is None:
        return math.nan
    obs_dim, action_dim = s.dims
    dense = 2 * dense_params(obs_dim + action_dim, (s.width, s.width), (1,))
    for run in s.group.runs:
        spa_tag, nz_tag = run.tag(results.SPARSITY_TAGS[run.script]), run.tag([results.NONZERO_TAG])
        if spa_tag is None or nz_tag is None:
            continue
        (nz_steps, nz_values), (sp_steps, sp_values) = run.scalars[nz_tag], run.scalars[spa_tag]
        at = np.flatnonzero(np.isin(sp_steps, nz_steps[:1]))
        if len(at) and sp_values[at[0]] == 0.0 and nz_values[0] - actor != dense:
            report(f"note: {run.name}: charts/nonzero_params at step {nz_steps[0]} is {nz_values[0]:,.0f} while the "
                   f"critic was dense: not the critic pair's {dense:,} plus the actor's {actor:,}; the critic column "
                   f"may be off")
    return nz[1] - actor


def final(s, metric):
    return s.summary.final.get(metric, (None, math.nan, math.nan, math.nan))


def table_rows(groups, points, reps, seed, report):
    dense = {}
    for s in groups:
        if s.algorithm == "dense SAC":
            dense.setdefault(s.width, s)
    rows = []
    for s in groups:
        expected = EXPECTED.get(s.key)
        ret, spa = final(s, "return"), final(s, "sparsity")
        ratio = (math.nan, math.nan, math.nan)
        base = dense.get(s.width)
        if base is s:
            ratio = (1.0, 1.0, 1.0)
        elif base is not None:
            (x, x_step), (y, y_step) = (results.final_scores(s.group, points, report),
                                        results.final_scores(base.group, points, report))
            if x is not None and y is not None and x_step == y_step:
                ratio = results.compare_final(x, y, reps, seed)["ratio"]
        unfinished = sorted(set(s.seeds(finished=False)) - set(s.seeds()))
        row = {"algorithm": s.algorithm, "exp_name": s.exp_name, "width": s.width, "alpha": fmt_alpha(s.alpha),
               "finished_seeds": len(s.seeds()), "expected_seeds": len(expected) if expected else "",
               "seeds": " ".join(map(str, s.seeds())), "unfinished_seeds": " ".join(map(str, unfinished)),
               "step": ret[0] if ret[0] is not None else spa[0],
               "return_iqm": ret[1], "return_ci_low": ret[2], "return_ci_high": ret[3],
               "sparsity_iqm": spa[1], "sparsity_ci_low": spa[2], "sparsity_ci_high": spa[3],
               "critic_nonzero_iqm": s.critic_nonzero, "actor_params": s.actor if s.actor is not None else math.nan,
               "return_vs_dense": ratio[0], "return_vs_dense_ci_low": ratio[1], "return_vs_dense_ci_high": ratio[2],
               "dense_reference": base.exp_name if base is not None else "",
               "eq3_selections": "", "eq3_cap": math.nan, "eq3_cap_delivered": math.nan, "sparsity_of_cap": math.nan,
               "sparsity_max_seed": math.nan}
        if s.algorithm == "EauDeSAC":
            n, cap, cap_delivered = eq3_cap(s.group.runs[0].args)
            if len({eq3_cap(r.args) for r in s.group.runs}) > 1:
                report(f"note: {s.label()}: its runs differ in beta, selection_period or total_timesteps")
            values = [v for v in (run_final_sparsity(s, r) for r in s.group.runs) if not math.isnan(v)]
            row.update(eq3_selections=n, eq3_cap=cap, eq3_cap_delivered=cap_delivered,
                       sparsity_of_cap=spa[1] / cap if cap > 0 else math.nan,
                       sparsity_max_seed=max(values) if values else math.nan)
        rows.append(row)
    return rows


def run_final_sparsity(s, run):
    step = final(s, "sparsity")[0]
    if step is None:
        return math.nan
    curve = results.run_curve(run, "sparsity", s.summary.grid)
    return float(curve[int(np.flatnonzero(s.summary.grid == step)[0])]) if curve is not None else math.nan


def ci(value, low, high, metric="return"):
    f = lambda v: results.fmt(v, "mujoco", metric)  # noqa: E731
    return f"{f(value)} [{f(low)}, {f(high)}]"


def table_markdown(rows, env, status, n_runs):
    out = [f"# {env}: critic width and alpha", "",
           f"From {n_runs} finished run{'' if n_runs == 1 else 's'}. IQM over seeds at the final step (with 3 seeds: "
           "their mean) [95% stratified bootstrap CI].", ""]
    if status:
        out += ["Partial: groups of the grid (benchmark/halfcheetah_width_alpha_cpu.sh) missing or incomplete here:", ""]
        out += [f"- {line}" for line in status] + [""]
    head = ["algorithm", "width", "alpha", "runs (finished seeds)", "final return", "final sparsity",
            "nonzero critic params (critic pair: kernels + biases, actor excluded)", "return / dense SAC of this width"]
    out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        runs = f"{r['finished_seeds']} of {r['expected_seeds']}" if r["expected_seeds"] != "" else str(r["finished_seeds"])
        runs += f" ({r['seeds'].replace(' ', ', ')})" if r["seeds"] else ""
        runs += f" + unfinished {r['unfinished_seeds'].replace(' ', ', ')}" if r["unfinished_seeds"] else ""
        if r["algorithm"] == "dense SAC" and r["dense_reference"] == r["exp_name"]:
            ratio = "1 (reference)"
        elif not r["dense_reference"]:
            ratio = "n/a (no dense run of this width)"
        else:
            ratio = ci(r["return_vs_dense"], r["return_vs_dense_ci_low"], r["return_vs_dense_ci_high"], "sparsity")
        cells = [r["algorithm"], r["width"], r["alpha"], runs,
                 ci(r["return_iqm"], r["return_ci_low"], r["return_ci_high"]),
                 ci(r["sparsity_iqm"], r["sparsity_ci_low"], r["sparsity_ci_high"], "sparsity"),
                 results.fmt(r["critic_nonzero_iqm"], metric="nonzero"), ratio]
        out.append("| " + " | ".join(str(c) for c in cells) + " |")
    actor = sorted({r["actor_params"] for r in rows if not math.isnan(r["actor_params"])})
    out += ["", "Nonzero critic params: IQM over seeds of the final charts/nonzero_params minus the dense actor's "
            f"{' / '.join(f'{a:,.0f}' for a in actor) or 'n/a'} parameters, i.e. the delivered critic pair's unpruned "
            "kernel weights plus all its biases (biases are never pruned). Return / dense SAC: IQM ratio with a 95% "
            "stratified independent bootstrap CI; n/a where the grid has no dense run of that width (no interpolation).",
            ""]
    eaude = [r for r in rows if r["algorithm"] == "EauDeSAC"]
    if eaude:
        out += ["## Eq. 3's cap", "", cap_sentence(eaude[0]), "",
                "| width | alpha | final sparsity IQM | of the cap | best seed |", "|---|---|---|---|---|"]
        out += [f"| {r['width']} | {r['alpha']} | {results.fmt(r['sparsity_iqm'], metric='sparsity')} | "
                f"{results.fmt(r['sparsity_of_cap'], metric='sparsity')} | "
                f"{results.fmt(r['sparsity_max_seed'], metric='sparsity')} |" for r in eaude]
        out.append("")
    return "\n".join(out)


def cap_sentence(r):
    return (f"A copy prunes at most beta of its parent's remaining weights per selection: after {r['eq3_selections']} "
            f"selections a lineage reaches at most 1 - (1 - beta)^{r['eq3_selections']} = {r['eq3_cap']:.3f}; the network "
            f"delivered at the last selection was made at an earlier one, at most {r['eq3_cap_delivered']:.3f}.")


def plot_all(groups, rows, env, out_dir, formats):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    widths = sorted({s.width for s in groups})
    colors = {w: plt.get_cmap("viridis")(i / max(len(widths) - 1, 1) * 0.85) for i, w in enumerate(widths)}
    row_of = {(r["exp_name"], r["width"], r["alpha"]): r for r in rows}
    eaude = [s for s in groups if s.algorithm == "EauDeSAC"]
    caps = sorted({row_of[(s.exp_name, s.width, fmt_alpha(s.alpha))]["eq3_cap"] for s in eaude})

    def save(fig, name):
        fig.tight_layout()
        for ext in formats:
            path = os.path.join(out_dir, f"{name}.{ext}")
            fig.savefig(path, dpi=120, bbox_inches="tight")
            written.append(path)
        plt.close(fig)

    def cap_line(ax):
        for cap in caps:
            ax.axhline(cap, color="k", linestyle=":", linewidth=1, label=f"Eq. 3 cap {cap:.3f}")

    def errorbar(ax, x, value, low, high, **kw):
        ax.errorbar(x, value, yerr=[[max(value - low, 0)], [max(high - value, 0)]], capsize=3, **kw)

    alpha3 = [s for s in eaude if s.alpha == 3.0 and "sparsity" in s.summary.final]
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for s in alpha3:
        _, value, low, high = s.summary.final["sparsity"]
        errorbar(ax, s.width, value, low, high, color=colors[s.width], marker="o")
        ax.annotate(seeds_text(len(s.group.runs)), (s.width, value), textcoords="offset points", xytext=(6, -10), fontsize=7)
    if len(alpha3) > 1:
        ax.plot([s.width for s in alpha3], [s.summary.final["sparsity"][1] for s in alpha3], color="grey", linewidth=1)
    cap_line(ax)
    ax.set_xscale("log", base=2)
    ax.set_xticks(widths, [str(w) for w in widths])
    ax.set_xlim(min(widths) / 1.4, max(widths) * 1.4)
    ax.set_ylim(0, max(caps + [0.1]) * 1.15)
    ax.set_xlabel("critic width (hidden units per layer)")
    ax.set_ylabel("final sparsity of the delivered critic")
    ax.set_title(f"EauDeSAC K=5, alpha 3, {env}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    save(fig, "width_final_sparsity")

    fig, ax = plt.subplots(figsize=(6, 3.8))
    for s in (s for s in eaude if s.alpha == 3.0 and "sparsity" in s.schedule.curves):
        steps, value, low, high = s.schedule.curves["sparsity"]
        ax.plot(steps, value, color=colors[s.width], label=f"width {s.width} ({seeds_text(len(s.group.runs))})")
        ax.fill_between(steps, low, high, color=colors[s.width], alpha=0.2, linewidth=0)
    if eaude:
        args = eaude[0].group.runs[0].args
        period, beta, start = int(args["selection_period"]), float(args["beta"]), int(args.get("learning_starts", 0))
        t = np.arange(period, int(args["total_timesteps"]) + 1, period)
        n = t // period - start // period
        ax.plot(t, 1 - (1 - beta) ** n, "k:", linewidth=1, label=f"Eq. 3 cap, 1 - (1 - {beta:g})^selections")
    ax.set_xlabel("environment steps")
    ax.set_ylabel("sparsity/network (IQM over seeds)")
    ax.set_title(f"EauDeSAC K=5, alpha 3: the sparsity the population discovers, {env}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    save(fig, "width_schedules")

    at64 = sorted((s for s in eaude if s.width == 64), key=lambda s: s.alpha)
    dense64 = next((s for s in groups if s.algorithm == "dense SAC" and s.width == 64 and "return" in s.summary.final), None)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, metric, ylabel in ((axes[0], "sparsity", "final sparsity of the delivered critic"),
                               (axes[1], "return", "final return (eval/episodic_return)")):
        pts = [(s.alpha, *s.summary.final[metric][1:]) for s in at64 if metric in s.summary.final]
        for (a, value, low, high), s in zip(pts, (s for s in at64 if metric in s.summary.final)):
            errorbar(ax, a, value, low, high, color="C0", marker="o")
            ax.annotate(f"{len(s.group.runs)}", (a, value), textcoords="offset points", xytext=(5, 3), fontsize=7)
        if len(pts) > 1:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], color="C0", linewidth=1, alpha=0.6)
        if metric == "sparsity":
            cap_line(ax)
            ax.set_ylim(0, max(caps + [0.1]) * 1.15)
            ax.legend(fontsize=7, loc="lower right")
        elif dense64 is not None:
            _, value, low, high = dense64.summary.final["return"]
            ax.axhline(value, color="grey", linestyle="--", linewidth=1,
                       label=f"dense SAC 64 ({seeds_text(len(dense64.group.runs))})")
            ax.axhspan(low, high, color="grey", alpha=0.15, linewidth=0)
            ax.legend(fontsize=7, loc="lower right")
        ax.set_xticks(sorted({0.0, 3.0, 6.0, 12.0} | {s.alpha for s in at64}))
        ax.set_xlim(-1, max([12.0] + [s.alpha for s in at64]) + 1)
        ax.set_xlabel("alpha (Eq. 3)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    fig.suptitle(f"EauDeSAC K=5, critic width 64, {env} (numbers: seeds)", fontsize=10)
    save(fig, "alpha_width64")

    fig, ax = plt.subplots(figsize=(7, 4.6))
    markers = {"PolyPruneSAC": "D", "dense SAC": "*"}
    alpha_markers = {0.0: "X", 3.0: "o", 6.0: "s", 12.0: "^"}
    pts, shapes = [], {}
    for s in groups:
        if "sparsity" not in s.summary.final or "return" not in s.summary.final:
            continue
        _, x, xlo, xhi = s.summary.final["sparsity"]
        _, y, ylo, yhi = s.summary.final["return"]
        pts.append((x, y))
        marker = markers.get(s.algorithm) or alpha_markers.get(s.alpha, "v")
        ax.errorbar(x, y, xerr=[[max(x - xlo, 0)], [max(xhi - x, 0)]], yerr=[[max(y - ylo, 0)], [max(yhi - y, 0)]],
                    color=colors[s.width], marker=marker, markersize=9 if marker == "*" else 6, capsize=2,
                    linestyle="none", markeredgecolor="k" if s.algorithm != "EauDeSAC" else None)
        shapes.setdefault(s.algorithm if s.algorithm != "EauDeSAC" else f"EauDeSAC alpha {fmt_alpha(s.alpha)}",
                          (marker, (ALGORITHM_ORDER[s.algorithm], s.alpha or 0)))
        short = {"EauDeSAC": f"a{fmt_alpha(s.alpha)}", "PolyPruneSAC": "PP", "dense SAC": "SAC"}[s.algorithm]
        ax.annotate(f"{s.width} {short}", (x, y), textcoords="offset points", xytext=(5, 4), fontsize=7)
    front = results.pareto_front(pts)
    if len(front) > 1:
        ax.plot([pts[i][0] for i in front], [pts[i][1] for i in front], "k--", alpha=0.5, linewidth=1)
    handles = [plt.Line2D([], [], color="grey", markeredgecolor="k", marker=m, linestyle="none", label=name,
                          markersize=9 if m == "*" else 6) for name, (m, _) in sorted(shapes.items(), key=lambda i: i[1][1])]
    handles += [plt.Line2D([], [], color=colors[w], marker="o", linestyle="none", label=f"width {w}") for w in widths]
    ax.legend(handles=handles, fontsize=7, loc="best")
    ax.set_xlabel("final sparsity of the delivered critic (IQM)")
    ax.set_ylabel("final return (IQM)")
    ax.set_title(f"{env}: final return against final sparsity, 95% CIs (dashed: Pareto front)", fontsize=9)
    ax.grid(alpha=0.3)
    save(fig, "pareto")
    return written


def write_csv(rows, path):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def main(argv=None):
    doc = __doc__.split("\n\n", 1)
    parser = argparse.ArgumentParser(description=doc[0], epilog=doc[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="compact runs (.json files or folders of them) or run folders")
    parser.add_argument("--out", default="docs/halfcheetah_width_alpha", help="output folder")
    parser.add_argument("--points", type=int, default=10, help="buckets of the step grid of the final numbers (10)")
    parser.add_argument("--schedule-points", type=int, default=100, help="grid points of the schedules (100)")
    parser.add_argument("--reps", type=int, default=2000, help="bootstrap replications (2000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    parser.add_argument("--include-unfinished", action="store_true",
                        help="keep unfinished runs (a preview: their groups' numbers stop where the shortest run stops)")
    parser.add_argument("--formats", nargs="+", default=["png"], choices=["png", "svg", "pdf"], help="figure formats")
    a = parser.parse_args(argv)
    if min(a.points, a.schedule_points, a.reps) < 1:
        parser.error("--points, --schedule-points and --reps must be >= 1")
    report = print
    try:
        runs = results.load_local_runs(a.runs, report)
    except results.InputError as e:
        print(f"error: {e}")
        return 2
    kept = [r for r in results.select_runs(runs, a.include_unfinished, report) if r.family == "mujoco"]
    envs = sorted({r.args["env_id"] for r in kept})
    if len(envs) > 1:
        print(f"error: runs of several envs ({', '.join(envs)}): give the runs of one env")
        return 2
    unfinished = [r for r in runs if not r.finished]
    groups = build_groups(kept, a.points, a.schedule_points, a.reps, a.seed, report)
    status = grid_status(groups, unfinished)
    for line in status:
        print(line)
    if not groups:
        print("no finished runs of the study to summarize")
        return 1
    env = envs[0]
    dims = env_dims(env)
    if dims is None:
        report(f"note: cannot make {env} here (gymnasium / MuJoCo): the actor's size is unknown, nonzero critic n/a")
    for s in groups:
        s.dims = dims
        s.actor = dense_params(dims[0], ACTOR_HIDDEN, (dims[1], dims[1])) if dims else None
        s.critic_nonzero = critic_nonzero(s, s.actor, report)

    os.makedirs(a.out, exist_ok=True)
    rows = table_rows(groups, a.points, a.reps, a.seed, report)
    text = table_markdown(rows, env, status, sum(len(s.seeds()) for s in groups))
    with open(os.path.join(a.out, "table.md"), "w") as f:
        f.write(text)
    write_csv(rows, os.path.join(a.out, "table.csv"))
    results.write_runs([s.summary for s in groups], ["alpha"], a.out)
    written = plot_all(groups, rows, env, a.out, a.formats)
    print()
    print(text)
    for r in (r for r in rows if r["algorithm"] == "EauDeSAC"):
        print(f"Eq. 3 cap, EauDeSAC width {r['width']} alpha {r['alpha']}: {r['eq3_selections']} selections, cap "
              f"{r['eq3_cap']:.3f} (delivered {r['eq3_cap_delivered']:.3f}); final sparsity IQM "
              f"{r['sparsity_iqm']:.3f} = {r['sparsity_of_cap']:.2f} of the cap, best seed {r['sparsity_max_seed']:.3f}")
    written += [os.path.join(a.out, n) for n in ("table.md", "table.csv", "runs.md", "runs.csv")]
    print(f"{len(kept)} runs in {len(groups)} groups; wrote {', '.join(written)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
