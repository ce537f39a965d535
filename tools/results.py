"""Curves, final numbers and plots of a folder of EauDeQN runs (TensorBoard events + args.json), IQM over seeds with
95% stratified bootstrap CIs (rliable).

Reads every run folder under the given folders (a folder holding args.json; `ALE/...` ids add one folder level) and,
with --wandb-project, runs of a W&B project through wandb.Api (needs network and `wandb login`). Runs are grouped by
script family, algorithm (exp_name: every exp_name is its own algorithm), env id, network size and every --group-by
flag of args.json.

Metrics
  return   online Atari: charts/episodic_return (training episodes, as Dopamine and the paper report); offline CQL:
           eval/episodic_return; both human-normalized, (x - random) / (human - random), with the Atari-57 random and
           human scores (DQN Zoo's table, as in the Agent57 paper). MuJoCo: raw eval/episodic_return.
  sparsity sparsity/network (the delivered network), falling back to the keys runs logged before it existed:
           eaudesac sparsity/selected, polyprune_sac sparsity/online, DQN/CQL sparsity/target.
  nonzero  charts/nonzero_params (final value, in the table only).

Step grid (per group: --points buckets of equal width from 0 to total_timesteps, or epochs x steps_per_epoch
offline; a point is the right edge of its bucket)
  returns  mean of the run's points inside the bucket (training episodes or evaluations); an empty bucket repeats
           the previous bucket's value; buckets before the first point have none.
  sparsity the last value logged at or before the point (sparsity is piecewise constant).
  A run has no value past its last logged step. A grid point is drawn only where every run of the group has a
  value, so curves start at the first evaluation and, with --include-unfinished, stop where the shortest run stops.
  Final numbers are the values at the last such point (for a finished run: the last bucket, the last 1/--points
  of training; with --points 40 and 10M Atari steps, the mean training return of the last 250,000-step epoch).

Aggregation: IQM (25% trimmed mean) over seeds per env, and for Atari over seeds x games after normalization
(games with more seeds than others are cut to the smallest seed count, reported); 95% CIs from rliable's
stratified bootstrap (runs resampled within each game), --reps replications, seeded by --seed.

A run that is unfinished (last logged step below total_timesteps, rounded down to the 100-step log interval, or a
launch_status.json of tools/launch.py that does not say it exited with code 0: the final evaluation is logged after
the last periodic step), misses the tag a metric needs, has no args.json or events, or comes from no known script is
reported with one line and skipped; --include-unfinished keeps unfinished runs. A path that does not exist, or a
malformed compact run, is an error (one `error:` line, exit status 2).

Compact runs (--export-compact DIR): DIR/<run name>.json per run summarized, a few KB of JSON holding only what the
metrics above read, so that this tool gives the same numbers from them as from the event files:
  {"format": 1, "name": run name, "args": args.json, "last_step": last logged step of any tag, "finished": bool,
   "scalars": {tag: [[step, value], ...]}}
with the return tag (every point), the sparsity tags (with their fallbacks) and charts/nonzero_params, the last two
piecewise constant and kept at their change points plus their last point. Keys sorted and floats written as Python's
shortest round-trip repr: exporting the same runs again gives the same bytes. A .json path given to this tool, or the
.json files of a folder given to it (outside run folders; args.json and launch_status.json apart), are read as compact
runs, alongside event-file run folders.

Writes to --out: {family}_returns, {family}_sparsity, {family}_final_sparsity, {family}_pareto (one file per
--formats, default png; families: atari, atari_offline, mujoco), final.md and final.csv (IQM and CI per group),
runs.md and runs.csv (every run's own final return and sparsity, at its group's final step: with few seeds, read
them beside the IQM).

Comparison (--compare BASE, an exp_name): every other algorithm against BASE on the same env(s), network size and
--group-by values, on the final return (per env; and pooled over games for Atari), written to compare.md / .csv:
  ratio    IQM(algorithm) / IQM(BASE), with a 95% CI from rliable's stratified independent bootstrap (the two
           algorithms' runs resampled separately within each env); n/a when BASE's IQM is not positive.
  diff     IQM(algorithm) - IQM(BASE), same bootstrap.
  P(X>Y)   rliable's probability of improvement (Mann-Whitney U / (n_x n_y), averaged over envs), same bootstrap.
  With few seeds a CI that holds 1 (ratio), 0 (diff) or 0.5 (P) means "no difference detected", not "equal".

Usage:
  python tools/results.py runs --out results
  python tools/results.py runs --group-by population_size --points 40 --reps 50000 --formats png pdf
  python tools/results.py runs --compare sac_mujoco_jax --out results
  python tools/results.py runs --export-compact compact_runs --out results   # then: tools/results.py compact_runs
  python tools/results.py --wandb-project eaudeqn --wandb-entity me --out results_wandb
"""
import argparse
import csv
import json
import math
import os
import sys
from dataclasses import dataclass, field

import numpy as np

LOG_INTERVAL = 100  # every script logs its periodic scalars every 100 steps

# Atari-57 (random, human) scores: DQN Zoo's atari_data.py, the table of the Agent57 paper (Badia et al., 2020)
ATARI_SCORES = {
    "Alien": (227.8, 7127.7), "Amidar": (5.8, 1719.5), "Assault": (222.4, 742.0), "Asterix": (210.0, 8503.3),
    "Asteroids": (719.1, 47388.7), "Atlantis": (12850.0, 29028.1), "BankHeist": (14.2, 753.1),
    "BattleZone": (2360.0, 37187.5), "BeamRider": (363.9, 16926.5), "Berzerk": (123.7, 2630.4),
    "Bowling": (23.1, 160.7), "Boxing": (0.1, 12.1), "Breakout": (1.7, 30.5), "Centipede": (2090.9, 12017.0),
    "ChopperCommand": (811.0, 7387.8), "CrazyClimber": (10780.5, 35829.4), "Defender": (2874.5, 18688.9),
    "DemonAttack": (152.1, 1971.0), "DoubleDunk": (-18.6, -16.4), "Enduro": (0.0, 860.5),
    "FishingDerby": (-91.7, -38.7), "Freeway": (0.0, 29.6), "Frostbite": (65.2, 4334.7), "Gopher": (257.6, 2412.5),
    "Gravitar": (173.0, 3351.4), "Hero": (1027.0, 30826.4), "IceHockey": (-11.2, 0.9), "Jamesbond": (29.0, 302.8),
    "Kangaroo": (52.0, 3035.0), "Krull": (1598.0, 2665.5), "KungFuMaster": (258.5, 22736.3),
    "MontezumaRevenge": (0.0, 4753.3), "MsPacman": (307.3, 6951.6), "NameThisGame": (2292.3, 8049.0),
    "Phoenix": (761.4, 7242.6), "Pitfall": (-229.4, 6463.7), "Pong": (-20.7, 14.6), "PrivateEye": (24.9, 69571.3),
    "Qbert": (163.9, 13455.0), "Riverraid": (1338.5, 17118.0), "RoadRunner": (11.5, 7845.0), "Robotank": (2.2, 11.9),
    "Seaquest": (68.4, 42054.7), "Skiing": (-17098.1, -4336.9), "Solaris": (1236.3, 12326.7),
    "SpaceInvaders": (148.0, 1668.7), "StarGunner": (664.0, 10250.0), "Surround": (-10.0, 6.5),
    "Tennis": (-23.8, -8.3), "TimePilot": (3568.0, 5229.2), "Tutankham": (11.4, 167.6), "UpNDown": (533.4, 11693.2),
    "Venture": (0.0, 1187.5), "VideoPinball": (16256.9, 17667.9), "WizardOfWor": (563.5, 4756.5),
    "YarsRevenge": (3092.9, 54576.9), "Zaxxon": (32.5, 9173.3),
}

# script -> family; the family decides the return metric and the x-axis
SCRIPTS = {
    "polyprune_dqn_atari_jax": "atari", "eaudedqn_atari_jax": "atari",
    "polyprune_cql_atari_jax": "atari_offline", "eaudecql_atari_jax": "atari_offline",
    "polyprune_sac_mujoco_jax": "mujoco", "eaudesac_mujoco_jax": "mujoco",
}
RETURN_TAG = {"atari": "charts/episodic_return", "atari_offline": "eval/episodic_return", "mujoco": "eval/episodic_return"}
X_LABEL = {"atari": "environment steps", "atari_offline": "gradient steps", "mujoco": "environment steps"}
# the delivered network's sparsity, then the keys of runs logged before sparsity/network existed
SPARSITY_TAGS = {
    "eaudesac_mujoco_jax": ["sparsity/network", "sparsity/selected"],
    "polyprune_sac_mujoco_jax": ["sparsity/network", "sparsity/online"],
}
DEFAULT_SPARSITY_TAGS = ["sparsity/network", "sparsity/target"]
NONZERO_TAG = "charts/nonzero_params"
# exp_name prefixes, for args.json files that do not tell the script by their flags (longest first)
EXP_PREFIXES = [("polyprune_dqn", "polyprune_dqn_atari_jax"), ("polyprune_cql", "polyprune_cql_atari_jax"),
                ("polyprune_sac", "polyprune_sac_mujoco_jax"), ("eaudedqn", "eaudedqn_atari_jax"),
                ("eaudecql", "eaudecql_atari_jax"), ("eaudesac", "eaudesac_mujoco_jax"), ("dqn", "polyprune_dqn_atari_jax"),
                ("cql", "polyprune_cql_atari_jax"), ("sac", "polyprune_sac_mujoco_jax")]


class InputError(Exception):
    """Bad input (a path that does not exist, a malformed compact run): one `error:` line, exit status 2."""


@dataclass
class Run:
    name: str  # where it was read from (run folder, compact file, W&B path)
    args: dict
    script: str
    family: str
    total: int  # steps of a finished run (env steps online, gradient steps offline)
    scalars: dict = field(repr=False)  # tag -> (steps int64 array, values float64 array), sorted by step
    last_step: int = 0
    finished: bool = True
    run_name: str = ""  # the run's own name (its folder's path under the root given; a compact file's "name")
    status: str = ""  # what launch_status.json says when it does not say done

    def tag(self, tags):
        """The first of `tags` the run logged, or None."""
        return next((t for t in tags if t in self.scalars and len(self.scalars[t][0])), None)


def identify_script(args):
    """The script that wrote args.json: told by its flags (offline: dataset_dir; SAC: tau/ent_coef; online DQN:
    train_frequency; EauDe: population_size), else by the exp_name prefix (sac_mujoco_jax -> polyprune_sac). None if
    neither tells."""
    keys = set(args)
    pop = "population_size" in keys
    if "dataset_dir" in keys:
        return "eaudecql_atari_jax" if pop else "polyprune_cql_atari_jax"
    if {"tau", "ent_coef"} & keys:
        return "eaudesac_mujoco_jax" if pop else "polyprune_sac_mujoco_jax"
    if {"train_frequency", "exploration_steps"} & keys:
        return "eaudedqn_atari_jax" if pop else "polyprune_dqn_atari_jax"
    name = str(args.get("exp_name", ""))
    return next((script for prefix, script in EXP_PREFIXES if name.startswith(prefix)), None)


def total_steps(args):
    if "total_timesteps" in args:
        return int(args["total_timesteps"])
    if "epochs" in args and "steps_per_epoch" in args:
        return int(args["epochs"]) * int(args["steps_per_epoch"])
    return None


def atari_game(env_id):
    """'ALE/MsPacman-v5' -> 'MsPacman'."""
    return env_id.split("/")[-1].split("-")[0]


def human_normalized(env_id, values):
    random_score, human_score = ATARI_SCORES[atari_game(env_id)]
    return (np.asarray(values, np.float64) - random_score) / (human_score - random_score)


def read_scalars(run_dir):
    """tag -> (steps, values) of every scalar in the run folder's event files (tensorboard.summary.Writer stores
    scalars as tensors; the legacy scalar events are read too)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util import tensor_util

    acc = EventAccumulator(run_dir, size_guidance={"tensors": 0, "scalars": 0})
    acc.Reload()
    points = {}
    for tag in acc.Tags().get("tensors", []):
        points[tag] = [(e.step, float(tensor_util.make_ndarray(e.tensor_proto))) for e in acc.Tensors(tag)]
    for tag in acc.Tags().get("scalars", []):
        points.setdefault(tag, []).extend((e.step, float(e.value)) for e in acc.Scalars(tag))
    return {tag: _arrays(p) for tag, p in points.items()}


def _arrays(pairs):
    pairs = sorted(pairs, key=lambda p: p[0])
    return np.array([p[0] for p in pairs], np.int64), np.array([p[1] for p in pairs], np.float64)


def make_run(name, args, scalars, report, last_step=None, finished=None, run_name=None):
    """A Run from its args and scalars, or None (reported) if no known script wrote it or it logged nothing.
    last_step and finished default to what the scalars tell (a compact run stores both)."""
    script = identify_script(args)
    if script is None:
        report(f"skipped {name}: unknown script (exp_name {args.get('exp_name')!r}; args.json matches no EauDeQN script)")
        return None
    total = total_steps(args)
    if total is None:
        report(f"skipped {name}: args.json has no total_timesteps (nor epochs and steps_per_epoch)")
        return None
    if "env_id" not in args:
        report(f"skipped {name}: args.json has no env_id")
        return None
    if not any(len(s) for s, _ in scalars.values()):
        report(f"skipped {name}: no TensorBoard scalars")
        return None
    last = int(max(int(s[-1]) for s, _ in scalars.values() if len(s))) if last_step is None else int(last_step)
    expected = total if total < LOG_INTERVAL else total - total % LOG_INTERVAL
    return Run(name=name, args=args, script=script, family=SCRIPTS[script], total=total, scalars=scalars,
               last_step=last, finished=last >= expected if finished is None else bool(finished),
               run_name=run_name if run_name is not None else os.path.basename(name))


def find_run_dirs(root):
    """Folders under root that hold args.json or TensorBoard event files."""
    found = []
    for dirpath, _, files in os.walk(root):
        if "args.json" in files or any(f.startswith("events.out.tfevents") for f in files):
            found.append(dirpath)
    return sorted(found)


def launch_state(run_dir):
    """What tools/launch.py's launch_status.json says when it does not say the run is done (exited with code 0): its
    state, e.g. 'running'; '' when it says done, or there is none, or it cannot be read."""
    try:
        with open(os.path.join(run_dir, "launch_status.json")) as f:
            status = json.load(f)
    except (OSError, ValueError):
        return ""
    if not isinstance(status, dict) or (status.get("state") == "exited" and status.get("exit_code") == 0):
        return ""
    state = str(status.get("state"))
    return state if status.get("exit_code") is None else f"{state}, exit code {status.get('exit_code')}"


def load_local_runs(roots, report):
    """Runs of the given paths: event-file run folders under a folder, compact runs (a .json file given, or the .json
    files of a folder outside its run folders). Raises InputError for a path that does not exist or a malformed
    compact run; a run folder that cannot be read is reported and skipped."""
    runs = []
    for root in roots:
        if os.path.isfile(root) and root.endswith(".json"):
            run = read_compact(root, report)
            if run is not None:
                runs.append(run)
            continue
        if not os.path.isdir(root):
            raise InputError(f"{root}: " + ("neither a folder nor a compact run (.json)" if os.path.exists(root)
                                            else "no such folder or file"))
        run_dirs = find_run_dirs(root)
        for run_dir in run_dirs:
            name = os.path.relpath(run_dir, root) if run_dir != root else os.path.basename(os.path.abspath(run_dir))
            if not os.path.exists(os.path.join(run_dir, "args.json")):
                report(f"skipped {run_dir}: no args.json")
                continue
            try:
                with open(os.path.join(run_dir, "args.json")) as f:
                    args = json.load(f)
                assert isinstance(args, dict), "not a JSON object"
            except (OSError, ValueError, AssertionError) as e:
                report(f"skipped {run_dir}: args.json unreadable ({e})")
                continue
            try:
                scalars = read_scalars(run_dir)
            except Exception as e:  # a corrupt or truncated event file: one line, never a crash
                report(f"skipped {run_dir}: event files unreadable ({type(e).__name__}: {e})")
                continue
            run = make_run(run_dir, args, scalars, report, run_name=name)
            if run is not None:
                run.status = launch_state(run_dir)
                if run.status:
                    run.finished = False
                runs.append(run)
        for path in compact_files(root, run_dirs):
            run = read_compact(path, report)
            if run is not None:
                runs.append(run)
    return runs


# ------------------------------------------------------------------------------------------------------- compact runs
COMPACT_FORMAT = 1
NOT_COMPACT = ("args.json", "launch_status.json")  # the .json files of run folders


def compact_tags(run):
    """(tags kept in full, piecewise constant tags) of the run: what the metrics read, fallbacks included."""
    return [RETURN_TAG[run.family]], [*SPARSITY_TAGS.get(run.script, DEFAULT_SPARSITY_TAGS), NONZERO_TAG]


def change_points(steps, values):
    """The points of a piecewise constant series (sorted by step) where the value differs from the previous point's,
    plus the first and the last: the last value at or before any step is the same as in the full series."""
    if len(steps) == 0:
        return steps, values
    keep = np.ones(len(steps), bool)
    keep[1:] = ~((values[1:] == values[:-1]) | (np.isnan(values[1:]) & np.isnan(values[:-1])))
    keep[-1] = True
    return steps[keep], values[keep]


def compact_run(run):
    """The run as a compact-run dict."""
    full, piecewise = compact_tags(run)
    scalars = {}
    for tag in dict.fromkeys(full + piecewise):
        if tag in run.scalars and len(run.scalars[tag][0]):
            steps, values = run.scalars[tag]
            if tag in piecewise and tag not in full:
                steps, values = change_points(steps, values)
            scalars[tag] = [[int(st), float(v)] for st, v in zip(steps, values)]
    return {"format": COMPACT_FORMAT, "name": run.run_name, "args": run.args, "last_step": int(run.last_step),
            "finished": bool(run.finished), "scalars": scalars}


def compact_text(data):
    """JSON text of a compact run: sorted keys, one line per tag (json writes floats as their shortest repr)."""
    head = {k: v for k, v in data.items() if k != "scalars"}
    lines = ["{"] + [f" {json.dumps(k)}: {json.dumps(head[k], sort_keys=True)}," for k in sorted(head)]
    tags = sorted(data["scalars"])
    lines.append(' "scalars": {' + ("" if tags else "}"))
    for i, tag in enumerate(tags):
        lines.append(f"  {json.dumps(tag)}: {json.dumps(data['scalars'][tag], separators=(',', ':'))}"
                     + ("," if i < len(tags) - 1 else ""))
    if tags:
        lines.append(" }")
    return "\n".join(lines + ["}", ""])


def export_compact(runs, out_dir):
    """Writes out_dir/<run name>.json for every run; returns the paths. Raises InputError if two runs share a name."""
    paths = {}
    for run in runs:
        name = run.run_name.replace(":", "_") or "run"
        path = os.path.join(out_dir, f"{name}.json")
        if path in paths:
            raise InputError(f"--export-compact: {paths[path].name} and {run.name} are both named {name!r}")
        paths[path] = run
    for path, run in sorted(paths.items()):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(compact_text(compact_run(run)))
    return sorted(paths)


def compact_files(root, run_dirs):
    """The .json files under root outside its run folders (args.json and launch_status.json apart)."""
    found = []
    inside = tuple(os.path.join(d, "") for d in run_dirs)
    for dirpath, _, files in os.walk(root):
        if os.path.join(dirpath, "").startswith(inside):
            continue
        found += [os.path.join(dirpath, f) for f in files if f.endswith(".json") and f not in NOT_COMPACT]
    return sorted(found)


def read_compact(path, report):
    """A Run from a compact run file (None, reported, when make_run skips it). Raises InputError if malformed."""
    def bad(why):
        return InputError(f"{path}: not a compact run ({why})")

    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise bad(f"{type(e).__name__}: {e}") from None
    if not isinstance(data, dict) or data.get("format") != COMPACT_FORMAT:
        raise bad(f'no "format": {COMPACT_FORMAT}')
    for key, kind in (("name", str), ("args", dict), ("scalars", dict), ("last_step", int), ("finished", bool)):
        if not isinstance(data.get(key), kind) or (kind is int and isinstance(data.get(key), bool)):
            raise bad(f"{key!r} missing or not a {kind.__name__}")
    scalars = {}
    for tag, points in data["scalars"].items():
        ok = isinstance(points, list) and all(
            isinstance(p, list) and len(p) == 2 and isinstance(p[0], int) and not isinstance(p[0], bool)
            and isinstance(p[1], (int, float)) and not isinstance(p[1], bool) for p in points)
        if not ok:
            raise bad(f"scalars {tag!r} is not a list of [step, value] pairs")
        steps, values = _arrays(points)
        if len(steps) and steps[-1] > data["last_step"]:
            raise bad(f"scalars {tag!r} go past last_step {data['last_step']}")
        scalars[tag] = (steps, values)
    run = make_run(path, data["args"], scalars, report, last_step=data["last_step"], finished=data["finished"],
                   run_name=data["name"])
    if run is not None and not run.finished:
        run.status = "exported unfinished"
    return run


def load_wandb_runs(project, entity, group, tag, report, api=None):
    """Runs of a W&B project (optionally one group / one tag) through wandb.Api; each run's config is its args.json
    and its history the TensorBoard scalars (sync_tensorboard logs them with a global_step column)."""
    if api is None:
        import wandb

        api = wandb.Api()
    filters = {}
    if group:
        filters["group"] = group
    if tag:
        filters["tags"] = {"$in": [tag]}
    path = f"{entity}/{project}" if entity else project
    runs = []
    for wb_run in api.runs(path, filters=filters):
        args = {k: v for k, v in dict(wb_run.config).items() if not k.startswith("_")}
        script = identify_script(args)
        family = SCRIPTS.get(script)
        tags = [RETURN_TAG.get(family, "eval/episodic_return"), NONZERO_TAG, "charts/SPS",
                *SPARSITY_TAGS.get(script, DEFAULT_SPARSITY_TAGS)]
        scalars = {}
        for t in dict.fromkeys(tags):
            rows = [(r["global_step"], r[t]) for r in wb_run.scan_history(keys=["global_step", t])
                    if r.get(t) is not None and r.get("global_step") is not None]
            if rows:
                scalars[t] = _arrays(rows)
        run = make_run(f"wandb:{path}/{wb_run.name}", args, scalars, report)
        if run is not None:
            runs.append(run)
    return runs


# ---------------------------------------------------------------------------------------------------------------- grid
def step_grid(total, points):
    """Right edges of `points` equal buckets over [0, total]."""
    return np.array([round(total * (i + 1) / points) for i in range(points)], np.int64)


def bucket_means(steps, values, grid, last_step):
    """Mean of the points in each bucket (prev edge, edge] (the first bucket includes step 0); an empty bucket repeats
    the previous value; NaN before the first point and for buckets that start at or after the run's last step."""
    out = np.full(len(grid), np.nan)
    previous, start = np.nan, -1
    for i, edge in enumerate(grid):
        inside = (steps > start) & (steps <= edge)
        if inside.any():
            previous = float(values[inside].mean())
        if start < last_step:
            out[i] = previous
        start = edge
    return out


def last_values(steps, values, grid, last_step):
    """The last value logged at or before each grid point; NaN before the first and past the run's last step's bucket."""
    idx = np.searchsorted(steps, grid, side="right") - 1
    out = np.where(idx >= 0, values[np.clip(idx, 0, None)], np.nan)
    starts = np.concatenate([[-1], grid[:-1]])
    return np.where(starts < last_step, out, np.nan)


def run_curve(run, metric, grid):
    """The run's values of `metric` ('return', 'sparsity' or 'nonzero') on the grid, or None if it lacks the tag."""
    if metric == "return":
        tag = run.tag([RETURN_TAG[run.family]])
    elif metric == "sparsity":
        tag = run.tag(SPARSITY_TAGS.get(run.script, DEFAULT_SPARSITY_TAGS))
    else:
        tag = run.tag([NONZERO_TAG])
    if tag is None:
        return None
    steps, values = run.scalars[tag]
    if metric == "return":
        curve = bucket_means(steps, values, grid, run.last_step)
        return human_normalized(run.args["env_id"], curve) if run.family.startswith("atari") else curve
    return last_values(steps, values, grid, run.last_step)


# ---------------------------------------------------------------------------------------------------------- statistics
def iqm(scores):
    """Interquartile mean (25% trimmed mean, rliable's aggregate_iqm) over runs x tasks: scores (runs, tasks) -> a
    1-element array, (runs, tasks, points) -> one IQM per point."""
    from scipy.stats import trim_mean

    scores = np.asarray(scores, np.float64)
    if scores.ndim == 2:
        return np.array([trim_mean(scores, 0.25, axis=None)])
    return trim_mean(scores.reshape(-1, scores.shape[-1]), 0.25, axis=0)


def iqm_ci(scores, reps=2000, seed=0):
    """IQM and its 95% stratified bootstrap CI (rliable: runs resampled within each task). scores (runs, tasks) or
    (runs, tasks, points); returns (iqm, low, high) as arrays (one entry, or one per point)."""
    from rliable import library

    scores = np.asarray(scores, np.float64)
    state = np.random.get_state()
    np.random.seed(seed)  # rliable's StratifiedBootstrap draws its indices from numpy's global generator
    try:
        point, interval = library.get_interval_estimates({"x": scores}, iqm, reps=reps)
    finally:
        np.random.set_state(state)
    low, high = np.asarray(interval["x"], np.float64).reshape(2, -1)
    return np.asarray(point["x"], np.float64), low, high


def compare_final(x, y, reps=2000, seed=0):
    """X against Y on final scores x (runs_x, tasks), y (runs_y, tasks): {"ratio", "diff", "poi"} -> (point, low, high)
    with 95% CIs from rliable's stratified independent bootstrap; the ratio is nan when IQM(y) <= 0."""
    from rliable import library, metrics

    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    funcs = {"ratio": lambda a, b: np.array([iqm(a)[0] / iqm(b)[0] if iqm(b)[0] > 0 else math.nan]),
             "diff": lambda a, b: np.array([iqm(a)[0] - iqm(b)[0]]),
             "poi": lambda a, b: np.array([metrics.probability_of_improvement(a, b)])}
    out = {}
    state = np.random.get_state()
    try:
        for name, func in funcs.items():
            if name == "ratio" and not iqm(y)[0] > 0:
                out[name] = (math.nan, math.nan, math.nan)
                continue
            np.random.seed(seed)  # the same resamples for every statistic
            point, interval = library.get_interval_estimates({name: (x, y)}, func, reps=reps)
            low, high = np.asarray(interval[name], np.float64).reshape(2)
            out[name] = (float(np.asarray(point[name]).reshape(-1)[0]), float(low), float(high))
    finally:
        np.random.set_state(state)
    return out


# -------------------------------------------------------------------------------------------------------------- groups
@dataclass
class Group:
    family: str
    algorithm: str  # exp_name
    env: str  # env id, or "all (N games)" for the Atari aggregate
    size: str
    extra: tuple  # values of the --group-by flags
    runs: list  # aggregate: every game's runs


def group_runs(runs, group_by):
    groups = {}
    for run in runs:
        key = (run.family, str(run.args.get("exp_name")), run.args["env_id"], str(run.args.get("network_size", "n/a")),
               tuple(str(run.args.get(k, "n/a")) for k in group_by))
        groups.setdefault(key, []).append(run)
    return [Group(*key, runs=sorted(rs, key=lambda r: (r.args.get("seed", 0), r.name))) for key, rs in sorted(groups.items())]


def label(group, group_by):
    extra = "".join(f", {k}={v}" for k, v in zip(group_by, group.extra))
    return f"{group.algorithm} ({group.size}{extra})"


def score_matrix(group, metric, grid, report):
    """(runs, tasks, points) scores of the group on the grid (tasks: one per env; runs cut to the smallest number of
    seeds over the tasks), or None if no run has the metric."""
    by_env = {}
    for run in group.runs:
        curve = run_curve(run, metric, grid)
        if curve is not None:
            by_env.setdefault(run.args["env_id"], []).append(curve)
    if not by_env:
        return None
    n = min(len(c) for c in by_env.values())
    if any(len(c) > n for c in by_env.values()):
        report(f"note: {label(group, ())} {metric}: {n} runs per env used (envs have "
               f"{sorted({len(c) for c in by_env.values()})} runs)")
    return np.stack([np.stack(c[:n]) for _, c in sorted(by_env.items())], axis=1)  # (runs, tasks, points)


@dataclass
class Summary:
    group: Group
    grid: np.ndarray
    curves: dict  # metric -> (steps, iqm, low, high) at the drawn points
    final: dict  # metric -> (step, iqm, low, high)
    n_runs: int
    n_tasks: int


def summarize(group, points, reps, seed, report):
    total = min(r.total for r in group.runs)
    grid = step_grid(total, points)
    curves, final, n_runs, n_tasks = {}, {}, 0, 0
    for metric in ("return", "sparsity", "nonzero"):
        scores = score_matrix(group, metric, grid, report)
        if scores is None:
            continue
        n_runs, n_tasks = max(n_runs, scores.shape[0]), max(n_tasks, scores.shape[1])
        drawn = ~np.isnan(scores).any(axis=(0, 1))
        if not drawn.any():
            report(f"note: {label(group, ())} {metric}: no grid point where every run has a value")
            continue
        kept = scores[:, :, drawn]
        if metric == "nonzero":
            final[metric] = (int(grid[drawn][-1]), float(iqm(kept[:, :, -1:])[0]), math.nan, math.nan)
            continue
        value, low, high = iqm_ci(kept, reps, seed)
        curves[metric] = (grid[drawn], value, low, high)
        final[metric] = (int(grid[drawn][-1]), float(value[-1]), float(low[-1]), float(high[-1]))
    return Summary(group, grid, curves, final, n_runs, n_tasks)


def aggregate_groups(groups):
    """For Atari families, one more group per (algorithm, size, extra) pooling every game (human-normalized)."""
    pooled = {}
    for g in groups:
        if g.family.startswith("atari"):
            pooled.setdefault((g.family, g.algorithm, g.size, g.extra), []).append(g)
    out = []
    for (family, algorithm, size, extra), gs in sorted(pooled.items()):
        out.append(Group(family, algorithm, f"all ({len(gs)} games)", size, extra, [r for g in gs for r in g.runs]))
    return out


# ------------------------------------------------------------------------------------------------------------- outputs
def return_name(family):
    return "human-normalized return" if family.startswith("atari") else "return"


def fmt(value, family=None, metric="return"):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if metric == "nonzero":
        return f"{value:,.0f}"
    if metric == "sparsity" or (family or "").startswith("atari"):
        return f"{value:.3f}"
    return f"{value:.1f}"


def write_tables(summaries, group_by, out_dir):
    rows = []
    for s in summaries:
        g = s.group
        r = s.final.get("return", (None, math.nan, math.nan, math.nan))
        sp = s.final.get("sparsity", (None, math.nan, math.nan, math.nan))
        nz = s.final.get("nonzero", (None, math.nan, math.nan, math.nan))
        rows.append({"family": g.family, "algorithm": g.algorithm, "env": g.env, "network_size": g.size,
                     **dict(zip(group_by, g.extra)), "runs": s.n_runs * s.n_tasks, "seeds": s.n_runs,
                     "step": r[0] if r[0] is not None else sp[0], "return_metric": return_name(g.family),
                     "return_iqm": r[1], "return_ci_low": r[2], "return_ci_high": r[3], "sparsity_iqm": sp[1],
                     "sparsity_ci_low": sp[2], "sparsity_ci_high": sp[3], "nonzero_params_iqm": nz[1]})
    with open(os.path.join(out_dir, "final.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["family"])
        writer.writeheader()
        writer.writerows(rows)
    lines = ["# Final numbers", "",
             "IQM over seeds (Atari `all`: over seeds x games, human-normalized) at the last grid point, "
             "[95% stratified bootstrap CI].", ""]
    for family in sorted({r["family"] for r in rows}):
        lines += [f"## {family}", ""]
        head = ["algorithm", "env", "size", *group_by, "runs", "step", f"final {return_name(family)}", "final sparsity",
                "nonzero params"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in (r for r in rows if r["family"] == family):
            ret = f"{fmt(r['return_iqm'], family)} [{fmt(r['return_ci_low'], family)}, {fmt(r['return_ci_high'], family)}]"
            spa = (f"{fmt(r['sparsity_iqm'], metric='sparsity')} [{fmt(r['sparsity_ci_low'], metric='sparsity')}, "
                   f"{fmt(r['sparsity_ci_high'], metric='sparsity')}]")
            cells = [r["algorithm"], r["env"], r["network_size"], *(r[k] for k in group_by), str(r["runs"]),
                     str(r["step"]), ret, spa, fmt(r["nonzero_params_iqm"], metric="nonzero")]
            lines.append("| " + " | ".join(str(c) for c in cells) + " |")
        lines.append("")
    with open(os.path.join(out_dir, "final.md"), "w") as f:
        f.write("\n".join(lines))
    return rows


def write_runs(summaries, group_by, out_dir):
    """runs.csv / runs.md: one row per run (per-env groups only, not the Atari pools) with its own final return and
    sparsity, read at its group's final step, the point the IQM of final.md is taken at."""
    rows = []
    for s in summaries:
        g = s.group
        if g.env.startswith("all (") or "return" not in s.final:
            continue
        step = s.final["return"][0]
        at = int(np.flatnonzero(s.grid == step)[0])
        for run in sorted(g.runs, key=lambda r: (r.args.get("seed", 0), r.name)):
            values = {m: run_curve(run, m, s.grid) for m in ("return", "sparsity")}
            rows.append({"family": g.family, "algorithm": g.algorithm, "env": g.env, "network_size": g.size,
                         **dict(zip(group_by, g.extra)), "seed": run.args.get("seed"), "run": run.name, "step": step,
                         "return_metric": return_name(g.family),
                         **{m: (float(v[at]) if v is not None else math.nan) for m, v in values.items()}})
    with open(os.path.join(out_dir, "runs.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["family"])
        writer.writeheader()
        writer.writerows(rows)
    head = ["algorithm", "env", "size", *group_by, "seed", "step", "final return", "final sparsity", "run"]
    lines = ["# Every run", "", "Each run's final return and sparsity at its group's final step (final.md takes the IQM "
             "there).", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["algorithm"], r["env"], r["network_size"], *(r[k] for k in group_by), r["seed"], r["step"],
                 fmt(r["return"], r["family"]), fmt(r["sparsity"], metric="sparsity"), r["run"]]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    with open(os.path.join(out_dir, "runs.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    return rows


def final_scores(group, points, report):
    """(runs, tasks) returns of the group at the last grid point where all its runs have one, and that step."""
    grid = step_grid(min(r.total for r in group.runs), points)
    scores = score_matrix(group, "return", grid, report)
    if scores is None:
        return None, None
    drawn = np.flatnonzero(~np.isnan(scores).any(axis=(0, 1)))
    if not len(drawn):
        return None, None
    return scores[:, :, drawn[-1]], int(grid[drawn[-1]])


def write_comparison(groups, base, group_by, points, reps, seed, out_dir, report):
    """compare.md / compare.csv: every algorithm against `base` with the same family, env, size and --group-by values."""
    rows = []
    bases = {(g.family, g.env, g.size, g.extra): g for g in groups if g.algorithm == base}
    if not bases:
        report(f"--compare {base}: no group has that exp_name (have: {', '.join(sorted({g.algorithm for g in groups}))})")
    for g in groups:
        b = bases.get((g.family, g.env, g.size, g.extra))
        if b is None or g.algorithm == base:
            continue
        (x, x_step), (y, y_step) = final_scores(g, points, report), final_scores(b, points, report)
        if x is None or y is None or x_step != y_step or x.shape[1] != y.shape[1]:
            report(f"--compare: {label(g, group_by)} on {g.env} not compared with {base}: final returns at different "
                   f"steps ({x_step} and {y_step}) or envs")
            continue
        stats = compare_final(x, y, reps, seed)
        rows.append({"family": g.family, "algorithm": g.algorithm, "base": base, "env": g.env, "network_size": g.size,
                     **dict(zip(group_by, g.extra)), "seeds": x.shape[0], "base_seeds": y.shape[0], "step": x_step,
                     "iqm": float(iqm(x)[0]), "base_iqm": float(iqm(y)[0]),
                     **{f"{k}{suffix}": v[i] for k, v in stats.items() for i, suffix in enumerate(("", "_ci_low", "_ci_high"))}})
    if not rows:
        return rows
    with open(os.path.join(out_dir, "compare.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = [f"# Against {base}", "",
             "Final return (the last grid point), IQM over seeds; [95% stratified independent bootstrap CI]. "
             "With few seeds a CI that holds 1 (ratio), 0 (difference) or 0.5 (P) means no difference was detected.", ""]
    head = ["algorithm", "env", "size", *group_by, "seeds", "step", "IQM", f"IQM {base}", "ratio", "difference",
            f"P(algorithm > {base})"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        f_ = lambda v: fmt(v, r["family"])  # noqa: E731
        cells = [r["algorithm"], r["env"], r["network_size"], *(r[k] for k in group_by),
                 f"{r['seeds']} vs {r['base_seeds']}", str(r["step"]), f_(r["iqm"]), f_(r["base_iqm"]),
                 f"{fmt(r['ratio'], metric='sparsity')} [{fmt(r['ratio_ci_low'], metric='sparsity')}, "
                 f"{fmt(r['ratio_ci_high'], metric='sparsity')}]",
                 f"{f_(r['diff'])} [{f_(r['diff_ci_low'])}, {f_(r['diff_ci_high'])}]",
                 f"{r['poi']:.2f} [{r['poi_ci_low']:.2f}, {r['poi_ci_high']:.2f}]"]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    with open(os.path.join(out_dir, "compare.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    return rows


def pareto_front(points):
    """Indices of the points (sparsity, return) no other point beats on both (>= on both, > on one)."""
    front = []
    for i, (x, y) in enumerate(points):
        if not any((x2 >= x and y2 >= y) and (x2 > x or y2 > y) for j, (x2, y2) in enumerate(points) if j != i):
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def plot_family(family, summaries, group_by, out_dir, formats):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envs = sorted({s.group.env for s in summaries}, key=lambda e: (not e.startswith("all"), e))
    labels = sorted({label(s.group, group_by) for s in summaries})
    colors = {lab: plt.get_cmap("tab10" if len(labels) <= 10 else "tab20")(i % 20) for i, lab in enumerate(labels)}
    written = []

    def panels():
        cols = min(len(envs), 3)
        rows = math.ceil(len(envs) / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
        for ax in axes.flat[len(envs):]:
            ax.axis("off")
        return fig, {env: ax for env, ax in zip(envs, axes.flat)}

    def save(fig, name, handles=True):
        if handles:
            hs = [plt.Line2D([], [], color=colors[lab], marker="o", label=lab) for lab in labels]
            fig.legend(handles=hs, loc="lower center", ncol=min(len(labels), 3), fontsize=8, frameon=False,
                       bbox_to_anchor=(0.5, 0.0))
            fig.tight_layout(rect=(0, 0.04 + 0.03 * math.ceil(len(labels) / 3), 1, 1))
        else:
            fig.tight_layout()
        for ext in formats:
            path = os.path.join(out_dir, f"{family}_{name}.{ext}")
            fig.savefig(path, dpi=120, bbox_inches="tight")  # the legend can be wider than one panel
            written.append(path)
        plt.close(fig)

    for metric, ylabel in (("return", f"{return_name(family)} (IQM)"), ("sparsity", "sparsity (IQM)")):
        fig, axes = panels()
        for s in summaries:
            if metric not in s.curves:
                continue
            steps, value, low, high = s.curves[metric]
            ax, color = axes[s.group.env], colors[label(s.group, group_by)]
            ax.plot(steps, value, color=color, marker="." if len(steps) < 3 else None)
            ax.fill_between(steps, low, high, color=color, alpha=0.2, linewidth=0)
        for env, ax in axes.items():
            ax.set_title(env, fontsize=10)
            ax.set_xlabel(X_LABEL[family])
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
        save(fig, "returns" if metric == "return" else "sparsity")

    fig, axes = panels()  # final sparsity per env and size: bars with CI
    for env, ax in axes.items():
        rows = [s for s in summaries if s.group.env == env and "sparsity" in s.final]
        for i, s in enumerate(rows):
            _, value, low, high = s.final["sparsity"]
            ax.bar(i, value, color=colors[label(s.group, group_by)],
                   yerr=[[max(value - low, 0)], [max(high - value, 0)]], capsize=3)
        ax.set_xticks(range(len(rows)), [s.group.size for s in rows], fontsize=8)
        ax.set_ylim(0, 1)
        ax.set_title(env, fontsize=10)
        ax.set_ylabel("final sparsity (IQM)")
    save(fig, "final_sparsity")

    fig, axes = panels()  # Pareto: final sparsity x final return
    for env, ax in axes.items():
        rows = [s for s in summaries if s.group.env == env and "sparsity" in s.final and "return" in s.final]
        pts = []
        for s in rows:
            _, x, xlo, xhi = s.final["sparsity"]
            _, y, ylo, yhi = s.final["return"]
            pts.append((x, y))
            ax.errorbar(x, y, xerr=[[max(x - xlo, 0)], [max(xhi - x, 0)]], yerr=[[max(y - ylo, 0)], [max(yhi - y, 0)]],
                        color=colors[label(s.group, group_by)], marker="o", capsize=3)
        front = pareto_front(pts)
        if len(front) > 1:
            ax.plot([pts[i][0] for i in front], [pts[i][1] for i in front], "k--", alpha=0.5, linewidth=1)
        ax.set_title(env, fontsize=10)
        ax.set_xlabel("final sparsity (IQM)")
        ax.set_ylabel(f"final {return_name(family)} (IQM)")
        ax.grid(alpha=0.3)
    save(fig, "pareto")
    return written


def select_runs(runs, include_unfinished, report):
    """The runs to summarize: unfinished ones only with include_unfinished (reported either way); runs that miss a
    metric's tag, or Atari games without random/human scores, reported and left out."""
    kept = []
    for run in runs:
        if not run.finished:
            why = ""
            if run.status:
                why = f"; {run.status}" if run.status == "exported unfinished" else f"; launch_status.json: {run.status}"
            what = f"unfinished (last logged step {run.last_step} of {run.total}{why})"
            if not include_unfinished:
                report(f"skipped {run.name}: {what}; --include-unfinished keeps it")
                continue
            report(f"included {run.name}: {what}")
        missing = [m for m, tags in (("return", [RETURN_TAG[run.family]]),
                                     ("sparsity", SPARSITY_TAGS.get(run.script, DEFAULT_SPARSITY_TAGS)))
                   if run.tag(tags) is None]
        if missing:
            tags = {"return": RETURN_TAG[run.family],
                    "sparsity": " / ".join(SPARSITY_TAGS.get(run.script, DEFAULT_SPARSITY_TAGS))}
            report(f"skipped {run.name}: missing tag {', '.join(tags[m] for m in missing)}")
            continue
        if run.family.startswith("atari") and atari_game(run.args["env_id"]) not in ATARI_SCORES:
            report(f"skipped {run.name}: no random/human score for {run.args['env_id']} (not an Atari-57 game)")
            continue
        kept.append(run)
    return kept


def main(argv=None):
    doc = __doc__.split("\n\n", 1)
    parser = argparse.ArgumentParser(description=doc[0], epilog=doc[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", nargs="*", default=None, help="folders of runs (default: runs)")
    parser.add_argument("--out", default="results", help="output folder (default: results)")
    parser.add_argument("--group-by", nargs="*", default=[], metavar="FLAG",
                        help="more args.json flags to group by (besides exp_name, env_id, network_size), e.g. "
                             "population_size; put the run folders first")
    parser.add_argument("--points", type=int, default=40,
                        help="buckets of the step grid (default 40: the paper's 40 Atari epochs)")
    parser.add_argument("--reps", type=int, default=2000,
                        help="bootstrap replications (default 2000; 50000 for published CIs)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    parser.add_argument("--include-unfinished", action="store_true",
                        help="keep unfinished runs (reported) instead of skipping them")
    parser.add_argument("--formats", nargs="+", default=["png"], choices=["png", "svg", "pdf"],
                        help="plot formats (default png)")
    parser.add_argument("--compare", metavar="BASE",
                        help="exp_name to compare every other algorithm with (final return: IQM ratio, difference, "
                             "probability of improvement, with CIs): compare.md / compare.csv")
    parser.add_argument("--export-compact", metavar="DIR",
                        help="also write each run summarized as DIR/<run name>.json, a compact run (see above) that "
                             "this tool reads back to the same numbers")
    parser.add_argument("--wandb-project", help="also read the runs of this W&B project (online; wandb login first)")
    parser.add_argument("--wandb-entity", help="W&B entity of --wandb-project")
    parser.add_argument("--wandb-group", help="only the W&B runs of this group")
    parser.add_argument("--wandb-tag", help="only the W&B runs with this tag (the benchmark runner's WANDB_TAGS)")
    a = parser.parse_args(argv)
    if a.points < 1 or a.reps < 1:
        parser.error("--points and --reps must be >= 1")
    report = print

    roots = a.run_dirs if a.run_dirs else ([] if a.wandb_project else ["runs"])
    try:
        runs = load_local_runs(roots, report)
    except InputError as e:
        print(f"error: {e}")
        return 2
    if a.wandb_project:
        runs += load_wandb_runs(a.wandb_project, a.wandb_entity, a.wandb_group, a.wandb_tag, report)

    kept = select_runs(runs, a.include_unfinished, report)
    if not kept:
        report("no runs to summarize")
        return 1
    if a.export_compact:
        try:
            paths = export_compact(kept, a.export_compact)
        except InputError as e:
            print(f"error: {e}")
            return 2
        print(f"exported {len(paths)} compact runs to {a.export_compact}")

    os.makedirs(a.out, exist_ok=True)
    groups = group_runs(kept, a.group_by)
    groups += aggregate_groups(groups)
    summaries = [summarize(g, a.points, a.reps, a.seed, report) for g in groups]
    written = []
    for family in sorted({s.group.family for s in summaries}):
        written += plot_family(family, [s for s in summaries if s.group.family == family], a.group_by, a.out, a.formats)
    write_tables(summaries, a.group_by, a.out)
    write_runs(summaries, a.group_by, a.out)
    written += [os.path.join(a.out, n) for n in ("final.md", "final.csv", "runs.md", "runs.csv")]
    if a.compare and write_comparison(groups, a.compare, a.group_by, a.points, a.reps, a.seed, a.out, report):
        written += [os.path.join(a.out, "compare.md"), os.path.join(a.out, "compare.csv")]
    print(f"{len(kept)} runs in {len(groups)} groups; wrote {', '.join(written)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
