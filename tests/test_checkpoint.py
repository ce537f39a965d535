"""Checkpoint and exact resume (every script): a run stopped by a signal (or killed) and resumed with --resume auto ends
bit-identical to an uninterrupted run (params and masks of the saved model, every logged scalar but charts/SPS, no
point logged twice); writes are atomic under kill -9; resume refuses what it cannot continue, touching nothing."""
import glob
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tyro
from conftest import SMOKE
from test_smoke import read_scalars

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, JAX_PLATFORMS="cpu", WANDB_MODE="disabled")
# checkpoint frequency (env or gradient steps) of the interrupted run, about a quarter of the smoke run; the signal that
# stops it (SLURM's two, Ctrl-C's)
CUT = {"polyprune_dqn_atari_jax": (100, signal.SIGUSR1), "eaudedqn_atari_jax": (200, signal.SIGTERM),
       "polyprune_sac_mujoco_jax": (80, signal.SIGINT), "eaudesac_mujoco_jax": (150, signal.SIGUSR1),
       "polyprune_cql_atari_jax": (60, signal.SIGTERM), "eaudecql_atari_jax": (100, signal.SIGUSR1)}


def argv(script, tmp_path):
    setup = SMOKE[script].get("setup")
    return [sys.executable, os.path.join(ROOT, f"{script}.py"), *SMOKE[script]["argv"], *(setup(tmp_path) if setup else [])]


def run(cmd, cwd, env=ENV):
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=280)


def checkpoints(run_dir):
    return sorted(glob.glob(os.path.join(run_dir, "checkpoint", "step_" + "[0-9]" * 12)))


def start_then_stop(cmd, cwd, run_dir, how, env=ENV):
    """Starts the run, waits for its first complete checkpoint, then sends `how` (a signal). Returns the exit status."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 240
    while not checkpoints(run_dir) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    if proc.poll() is None:
        proc.send_signal(how)
    out, _ = proc.communicate(timeout=240)
    return proc.returncode, out


def without_sps(scalars):
    return {tag: points for tag, points in scalars.items() if tag != "charts/SPS"}


def assert_same_run(straight_dir, resumed_dir, script):
    a, b = without_sps(read_scalars(str(straight_dir))), without_sps(read_scalars(str(resumed_dir)))
    assert sorted(a) == sorted(b)
    for tag in a:
        assert a[tag] == b[tag], f"{tag}: {a[tag][:4]}... != {b[tag][:4]}..."  # equal lists: no point logged twice
    model = f"{script}.cleanrl_model"
    with open(os.path.join(straight_dir, model), "rb") as f, open(os.path.join(resumed_dir, model), "rb") as g:
        assert f.read() == g.read(), "the saved models (params and masks) differ"


@pytest.mark.parametrize("script", list(SMOKE))
def test_stopped_and_resumed_run_is_bit_identical(script, smoke):
    straight = smoke(script)  # the uninterrupted run (shared with test_smoke)
    cmd, tmp_path = straight.cmd, straight.cwd
    frequency, how = CUT[script]
    assert not os.path.exists(os.path.join(straight.run_dir, "checkpoint"))

    cut = [*cmd, "--run-name", "cut", "--checkpoint-frequency", str(frequency)]
    status, out = start_then_stop(cut, tmp_path, str(tmp_path / "runs" / "cut"), how)
    assert status in (75, 0), out[-2000:]  # 0: the run ended before the signal came; it is resumed all the same
    if status == 75:
        assert f"{signal.Signals(how).name}: writing a checkpoint" in out
    assert len(checkpoints(tmp_path / "runs" / "cut")) == 1, "only the newest complete checkpoint is kept"
    resumed = run([*cut, "--resume", "auto"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming cut at step" in resumed.stdout
    assert_same_run(straight.run_dir, tmp_path / "runs" / "cut", script)


def test_kill_9_mid_run_then_resume_finishes_identically(smoke, tmp_path):
    script = "polyprune_sac_mujoco_jax"
    straight = smoke(script)
    cut = [*straight.cmd, "--run-name", "cut", "--checkpoint-frequency", "60"]
    status, _ = start_then_stop(cut, tmp_path, str(tmp_path / "runs" / "cut"), signal.SIGKILL)
    assert status in (-signal.SIGKILL, 0)
    resumed = run([*cut, "--resume", "auto"], tmp_path)
    assert resumed.returncode == 0 and "resuming cut at step" in resumed.stdout, resumed.stderr[-2000:]
    assert_same_run(straight.run_dir, tmp_path / "runs" / "cut", script)


# ---------------------------------------------------------------- atomic writes: kill -9 at every point of a write
FAULT = r"""
import json, os, pickle, shutil, signal, sys
import numpy as np, tyro
sys.path.insert(0, {root!r})
import polyprune_sac_mujoco_jax as m
args = tyro.cli(m.Args, args=[])
run_dir, kill_at = sys.argv[1], int(sys.argv[2])
if kill_at == 0:  # the previous complete checkpoint
    m.save_checkpoint(run_dir, 100, "polyprune_sac_mujoco_jax.py", args, {{"step": 100}}, {{"a": np.arange(100)}})
    sys.exit(0)
calls = [0]
def armed(fn):
    def wrapped(*a, **k):
        calls[0] += 1
        if calls[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return fn(*a, **k)
    return wrapped
for mod, name in ((os, "fsync"), (os, "rename"), (os, "makedirs"), (np, "save"), (pickle, "dump"), (json, "dump"),
                  (shutil, "rmtree")):
    setattr(mod, name, armed(getattr(mod, name)))
m.save_checkpoint(run_dir, 200, "polyprune_sac_mujoco_jax.py", args, {{"step": 200}}, {{"a": np.arange(200)}})
print("calls", calls[0])
"""


def test_kill_9_while_writing_leaves_a_loadable_checkpoint(tmp_path):
    import polyprune_sac_mujoco_jax as m

    code = FAULT.format(root=ROOT)
    args = tyro.cli(m.Args, args=[])

    def fault(run_dir, kill_at):
        return subprocess.run([sys.executable, "-c", code, str(run_dir), str(kill_at)], env=ENV, capture_output=True,
                              text=True, timeout=120)

    probe = tmp_path / "probe"
    assert fault(probe, 0).returncode == 0
    done = fault(probe, 10 ** 6)  # never killed: counts the armed calls of one write
    assert done.returncode == 0, done.stderr
    n = int(done.stdout.split()[-1])
    assert n >= 8
    for kill_at in range(1, n + 1):
        run_dir = tmp_path / f"kill_{kill_at}"
        assert fault(run_dir, 0).returncode == 0
        assert fault(run_dir, kill_at).returncode == -signal.SIGKILL
        path = m.find_checkpoint("auto", str(run_dir))
        assert path is not None, f"killed at call {kill_at}: no complete checkpoint left"
        meta, state, arrays = m.read_checkpoint(path, "polyprune_sac_mujoco_jax.py", args)  # intact, or it raises
        assert state["step"] == meta["step"] and arrays["a"].size == meta["step"], kill_at


# ---------------------------------------------------------------- refusals: one line, non-zero, nothing touched
def folder_state(path):
    return {p: (os.path.getsize(p), os.path.getmtime(p)) for p in glob.glob(f"{path}/**", recursive=True)
            if os.path.isfile(p)}


def test_resume_refuses_what_it_cannot_continue(tmp_path):
    sac = argv("polyprune_sac_mujoco_jax", tmp_path)
    first = run([*sac, "--run-name", "a", "--checkpoint-frequency", "100"], tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    run_dir = tmp_path / "runs" / "a"
    (ckpt,) = checkpoints(run_dir)
    before = folder_state(tmp_path / "runs")

    def refused(cmd, *needles, status=1):
        out = run(cmd, tmp_path)
        assert out.returncode == status, (out.returncode, out.stderr[-2000:])
        lines = [line for line in out.stderr.splitlines() if line.startswith("error:")]
        assert len(lines) == 1 and all(n in lines[0] for n in needles), out.stderr[-2000:]
        assert folder_state(tmp_path / "runs") == before, "a refused resume changed the run folder"

    eaude = argv("eaudesac_mujoco_jax", tmp_path)
    refused([*eaude, "--run-name", "a", "--resume", "auto"], "meta.json", "polyprune_sac_mujoco_jax.py")
    refused([*sac, "--run-name", "a", "--resume", "auto", "--network-size", "medium"], "--network-size", "meta.json")
    refused([*sac, "--resume", str(tmp_path / "nowhere")], "--resume", status=2)
    # operational flags may change: W&B, video, checkpoint frequency are not part of what is computed
    assert run([*sac, "--run-name", "a", "--resume", ckpt, "--checkpoint-frequency", "0", "--no-save-model"],
               tmp_path).returncode == 0
    shutil.rmtree(run_dir)
    assert run([*sac, "--run-name", "a", "--checkpoint-frequency", "100"], tmp_path).returncode == 0
    (ckpt,) = checkpoints(run_dir)
    state = os.path.join(ckpt, "state.pkl")
    with open(state, "r+b") as f:  # one flipped byte
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 1]))
    before = folder_state(tmp_path / "runs")
    refused([*sac, "--run-name", "a", "--resume", "auto"], "state.pkl", "corrupt")
    replay = glob.glob(os.path.join(ckpt, "*.npy"))[0]
    os.truncate(replay, os.path.getsize(replay) // 2)
    before = folder_state(tmp_path / "runs")
    refused([*sac, "--run-name", "a", "--resume", ckpt], "truncated")


def test_resume_auto_without_a_checkpoint_starts_fresh(tmp_path):
    out = run([*argv("polyprune_sac_mujoco_jax", tmp_path), "--run-name", "new", "--resume", "auto"], tmp_path)
    assert out.returncode == 0 and "resuming" not in out.stdout
    assert os.path.isfile(tmp_path / "runs" / "new" / "polyprune_sac_mujoco_jax.cleanrl_model")


# ---------------------------------------------------------------- non-finite values
def rewrite_checkpoint(mod, path, script, change):
    """Loads a checkpoint, applies change(state), writes it back as a new complete checkpoint at the same step."""
    meta = json.load(open(os.path.join(path, "meta.json")))
    args = tyro.cli(mod.Args, args=[])
    vars(args).update(meta["args"])
    _, state, arrays = mod.read_checkpoint(path, script, args)
    change(state)
    shutil.rmtree(path)
    mod.save_checkpoint(os.path.dirname(os.path.dirname(path)), meta["step"], script, args, state, arrays)


def test_polyprune_stops_on_a_non_finite_loss_and_keeps_its_checkpoint(tmp_path):
    import polyprune_dqn_atari_jax as mod

    script = "polyprune_dqn_atari_jax"
    cmd = [*argv(script, tmp_path), "--run-name", "r", "--checkpoint-frequency", "150"]
    assert run(cmd, tmp_path).returncode == 0
    (ckpt,) = checkpoints(tmp_path / "runs" / "r")

    def poison(state):
        params = state["fields"]["params"]
        first = params["params"][sorted(params["params"])[0]]
        first["kernel"] = np.full_like(first["kernel"], np.nan)

    rewrite_checkpoint(mod, ckpt, f"{script}.py", poison)
    before = folder_state(tmp_path / "runs" / "r" / "checkpoint")
    out = run([*cmd, "--resume", "auto"], tmp_path)
    assert out.returncode == 1, out.stderr[-2000:]
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "non-finite" in errors[0] and os.path.basename(ckpt) in errors[0], out.stderr[-2000:]
    assert folder_state(tmp_path / "runs" / "r" / "checkpoint") == before, "the last checkpoint must be kept as it was"


def test_a_nan_member_never_becomes_the_target_and_is_replaced(smoke):
    """One member's weights are forced to NaN in a checkpoint of EauDeCQL (K=2, a population update every 50 steps);
    the resumed run must finish, never select it, and replace it by a copy at the next population update."""
    import eaudecql_atari_jax as mod

    script, base = "eaudecql_atari_jax", smoke("eaudecql_atari_jax")
    cmd, cwd = [*base.cmd, "--run-name", "nan", "--checkpoint-frequency", "100"], base.cwd
    assert run(cmd, cwd).returncode == 0
    (ckpt,) = checkpoints(cwd / "runs" / "nan")
    step = int(os.path.basename(ckpt)[5:])
    assert step == 300

    def poison(state):  # member 1: every weight NaN
        import jax

        def nan_member_1(x):
            x = np.array(x)
            x[1] = np.nan
            return x

        state["fields"]["pop"]["params"] = jax.tree.map(nan_member_1, state["fields"]["pop"]["params"])

    rewrite_checkpoint(mod, ckpt, f"{script}.py", poison)
    out = run([*cmd, "--resume", "auto"], cwd)
    assert out.returncode == 0, out.stderr[-2000:]
    scalars = read_scalars(str(cwd / "runs" / "nan"))
    after = lambda tag: {s: v for s, v in scalars[tag] if s > step}  # noqa: E731
    selected, copies, loss_1 = after("population/selected"), after("population/n_copies"), after("population/loss_1")
    assert sorted(selected) == [350, 400]
    assert np.isnan(loss_1[350]) and selected[350] == 0, "a NaN member was selected"
    assert copies[350] == 1, "the NaN member must be overwritten by a copy"
    assert np.isfinite(loss_1[400]) and np.isfinite(after("losses/td_loss")[400])
    import flax.serialization

    saved = flax.serialization.msgpack_restore(open(cwd / "runs" / "nan" / f"{script}.cleanrl_model", "rb").read())
    assert all(np.all(np.isfinite(x)) for x in jax_leaves(saved["params"]))


def jax_leaves(tree):
    import jax

    return jax.tree.leaves(tree)


def test_resumed_run_goes_on_in_the_same_wandb_run(smoke, tmp_path):
    base = smoke("polyprune_sac_mujoco_jax")
    env = dict(ENV, WANDB_MODE="offline", WANDB_DIR=str(tmp_path), WANDB_SILENT="true")
    cmd = [*base.cmd, "--run-name", "tracked", "--checkpoint-frequency", "60", "--track"]
    status, out = start_then_stop(cmd, tmp_path, str(tmp_path / "runs" / "tracked"), signal.SIGUSR1, env=env)
    assert status in (75, 0), out[-2000:]
    resumed = run([*cmd, "--resume", "auto"], tmp_path, env=env)
    assert resumed.returncode == 0 and "resuming tracked" in resumed.stdout, resumed.stderr[-2000:]
    runs = sorted(glob.glob(str(tmp_path / "wandb" / "offline-run-*")))
    assert len(runs) == 2, runs
    ids = {os.path.basename(r).rsplit("-", 1)[1] for r in runs}
    assert len(ids) == 1, f"the resumed process must log to the same W&B run, got ids {ids}"


@pytest.mark.parametrize("rows", [4, 10, 23])  # not full, exactly full, wrapped around
def test_buffer_snapshot_round_trip_before_and_after_wrap_around(rows):
    import polyprune_sac_mujoco_jax as m

    rng = np.random.default_rng(0)
    buffer = m.ReplayBuffer(10, 3, 2, seed=1)
    for i in range(rows):
        buffer.add(rng.normal(size=3), rng.uniform(-1, 1, 2), float(i), i % 7 == 6, False, rng.normal(size=3))
    buffer.sample(2)  # moves its RNG
    state, arrays = m.snapshot(m.TrainState(rb=buffer))
    assert sorted(arrays) == [f"rb.{name}" for name in ("actions", "finals", "obs", "rewards", "terminals")], arrays
    assert all(len(a) == min(buffer.size, 10) for a in arrays.values()), "only the rows it holds are written"
    restored = m.ReplayBuffer(10, 3, 2, seed=99)
    m.restore(m.TrainState(rb=restored), (None, pickle.loads(pickle.dumps(state)), arrays))
    for name in ("obs", "actions", "rewards", "terminals", "finals"):
        np.testing.assert_array_equal(getattr(restored, name), getattr(buffer, name))
    assert (restored.ptr, restored.size) == (buffer.ptr, buffer.size)
    for a, b in zip(restored.sample(5), buffer.sample(5)):
        np.testing.assert_array_equal(a, b)


def test_resume_auto_finds_an_atari_run_by_its_default_name(tmp_path):
    """Atari run names hold a folder (runs/ALE/Pong-v5__...): --resume auto without --run-name must find the run and go
    on in that same folder."""
    cmd = [*argv("polyprune_dqn_atari_jax", tmp_path), "--checkpoint-frequency", "100", "--eval-episodes", "0"]
    assert run(cmd, tmp_path).returncode == 0
    resumed = run([*cmd, "--resume", "auto"], tmp_path)
    assert resumed.returncode == 0 and "resuming ALE/Pong-v5__polyprune_dqn_atari_jax__1__" in resumed.stdout
    assert len(glob.glob(str(tmp_path / "runs" / "*" / "*" / "args.json"))) == 1
    assert not glob.glob(str(tmp_path / "runs" / "*" / "args.json")), "a second run folder was made"


def test_a_checkpoint_of_another_format_is_refused_in_one_line(tmp_path):
    """A checkpoint whose meta.json names another format (the training state's layout) is refused, naming the format."""
    import polyprune_sac_mujoco_jax as m

    args = tyro.cli(m.Args, args=[])
    path, _, _ = m.save_checkpoint(str(tmp_path), 100, "polyprune_sac_mujoco_jax.py", args, {"step": 100}, {})
    assert m.read_checkpoint(path, "polyprune_sac_mujoco_jax.py", args)[0]["format"] == 2
    meta = json.load(open(os.path.join(path, "meta.json")))
    json.dump(dict(meta, format=1), open(os.path.join(path, "meta.json"), "w"))
    with pytest.raises(m.CheckpointError, match="format 1"):
        m.read_checkpoint(path, "polyprune_sac_mujoco_jax.py", args)
