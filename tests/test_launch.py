"""tools/launch.py: grid expansion and run names, the sbatch script (parsed, and run by bash with stand-in SLURM
commands), dry runs, the status view, the local pool with a stand-in script (requeue, stop, failure), and a local
pool end to end: a 4-run grid of the real scripts on 2 workers, one run preempted with SIGUSR1 mid-run, which resumes;
re-submitting skips them all. The real-SLURM end to end is tests/slurm_e2e.py (not run by CI)."""
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tools import launch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH = os.path.join(ROOT, "tools", "launch.py")
TINY = ["--env-id", "Hopper-v4", "--total-timesteps", "300", "--learning-starts", "100", "--batch-size", "32",
        "--buffer-size", "400", "--eval-episodes", "1", "--eval-frequency", "200", "--checkpoint-frequency", "100"]

# a stand-in script with the scripts' contract: --run-name NAME --resume auto, progress in runs/NAME, a checkpoint and
# exit 75 on SIGUSR1 / SIGTERM, one `error: ...` line and exit 1 on failure
FAKE = r'''
import argparse, os, signal, sys, time
p = argparse.ArgumentParser()
p.add_argument("--steps", type=int, default=20)
p.add_argument("--seed", type=int, default=1)
p.add_argument("--fail", action="store_true")
p.add_argument("--run-name")
p.add_argument("--resume")
a = p.parse_args()
d = os.path.join("runs", a.run_name)
os.makedirs(d, exist_ok=True)
ckpt = os.path.join(d, "checkpoint", "step_%012d")
os.makedirs(os.path.dirname(ckpt), exist_ok=True)
step = max([int(s[5:]) for s in os.listdir(os.path.dirname(ckpt))] + [0])
if step:
    print(f"resuming {a.run_name} at step {step}", flush=True)
if a.fail:
    print("error: --fail: this run fails", file=sys.stderr)
    sys.exit(1)
stop = []
signal.signal(signal.SIGUSR1, lambda s, f: stop.append(s))
signal.signal(signal.SIGTERM, lambda s, f: stop.append(s))
open(os.path.join(d, "started"), "w").close()
while step < a.steps:
    step += 1
    time.sleep(0.01)
    if stop:
        os.makedirs(ckpt % step)
        print(f"checkpoint at step {step}", flush=True)
        sys.exit(75)
open(os.path.join(d, "affinity"), "w").write(",".join(map(str, sorted(os.sched_getaffinity(0)))))
print("finished", flush=True)
'''


@pytest.fixture
def fake(tmp_path):
    path = tmp_path / "fake_run.py"
    path.write_text(FAKE)
    return str(path)


def expand(tokens):
    return launch.expand(launch.parse_grid(tokens), "python")


def flags_of(run):
    argv = run["argv"][2:]
    return dict(zip(argv[::2], argv[1::2]))


def test_grid_expansion_and_names():
    runs = expand(["polyprune_sac_mujoco_jax.py", "eaudesac_mujoco_jax.py", "--env-id", "Hopper-v4,Ant-v4",
                   "--seed", "1,2,3", "--network-size", "small,large", "--exp-name", "{network_size}_x",
                   "eaudedqn_atari_jax.py", "--env-id", "ALE/Pong-v5", "--alpha", "1,3,6", "--track"])
    assert len(runs) == 2 * 2 * 3 * 2 + 3
    names = [r["name"] for r in runs]
    assert len(set(names)) == len(names)
    assert all("/" not in n for n in names)
    first = runs[0]
    assert first["name"].startswith("Hopper-v4__small_x__s1__") and first["script"].endswith("polyprune_sac_mujoco_jax.py")
    assert first["argv"][-4:] == ["--run-name", first["name"], "--resume", "auto"]
    assert flags_of(first)["--exp-name"] == "small_x"  # a placeholder filled from a later flag
    assert runs[-1]["name"].startswith("Pong-v5__eaudedqn_atari_jax__")
    assert runs[-1]["argv"][2:].count("--track") == 1  # a boolean flag goes through as is
    # stable: the same run has the same name in any grid (flag order, other values, operational flags)
    again = expand(["eaudedqn_atari_jax.py", "--alpha", "3", "--env-id", "ALE/Pong-v5", "--save-model"])
    assert again[0]["name"] == runs[-2]["name"]
    assert expand(["eaudedqn_atari_jax.py", "--alpha", "3", "--env-id", "ALE/Pong-v5", "--beta", "0.1"])[0]["name"] \
        != runs[-2]["name"]  # any other flag makes another run
    offline = expand(["polyprune_cql_atari_jax.py", "--env-id", "ALE/Pong-v5,ALE/Breakout-v5", "--dataset-dir",
                      "data/{game}/1/replay_logs", "--seed", "4"])
    assert [flags_of(r)["--dataset-dir"] for r in offline] == ["data/Pong/1/replay_logs", "data/Breakout/1/replay_logs"]
    assert expand(["eaudedqn_atari_jax.py", "--exp-name", "a\\,b"])[0]["argv"][3] == "a,b"
    assert expand(["eaudedqn_atari_jax.py", "--exp-name", "{script}_x"])[0]["argv"][3] == "eaudedqn_atari_jax_x"
    # duplicates collapse
    assert len(expand(["eaudedqn_atari_jax.py", "--seed", "1,1"])) == 1


@pytest.mark.parametrize("tokens, message", [
    (["--seed", "1"], "a grid starts with a script"),
    (["nope_jax.py"], "no such script"),
    (["eaudedqn_atari_jax.py", "--run-name", "x"], "--run-name is set by the launcher"),
    (["eaudedqn_atari_jax.py", "--seed", "1", "--seed", "2"], "given twice"),
    (["eaudedqn_atari_jax.py", "--exp-name", "{nope}"], "cannot fill"),
])
def test_grid_errors(tokens, message, capsys, tmp_path):
    assert launch.main(["local", "--dry-run", "--workdir", str(tmp_path)] + tokens) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err


def sbatch_options(script):
    return [line[len("#SBATCH "):] for line in script.splitlines() if line.startswith("#SBATCH ")]


def test_sbatch_script(tmp_path, capsys):
    grid = ["polyprune_sac_mujoco_jax.py", "eaudesac_mujoco_jax.py", "--seed", "1,2", "--env-id", "Hopper-v4"]
    assert launch.main(["slurm", "--dry-run", "--workdir", str(tmp_path), "--grid", "g", "--throttle", "3",
                        "--wandb-tags", "v1"] + grid) == 0
    out = capsys.readouterr().out
    assert not os.listdir(tmp_path)  # a dry run writes nothing
    script = out[out.index("#!/bin/bash"):out.index("\n==> ", out.index("#!/bin/bash"))]
    opts = sbatch_options(script)
    sub_dir = re.search(r"--output=(\S+)/logs/%A_%a.out", script).group(1)
    assert sub_dir.startswith(str(tmp_path / "launch" / "g") + "/")
    assert opts == ["--job-name=g", "--array=0-3%3", f"--output={sub_dir}/logs/%A_%a.out",
                    f"--error={sub_dir}/logs/%A_%a.err", "--open-mode=append", "--gres=gpu:1", "--cpus-per-task=4",
                    "--mem=16G", "--time=24:00:00", "--signal=B:USR1@600", "--requeue"]  # no empty partition line
    assert "export WANDB_RUN_GROUP=g WANDB_TAGS=v1,g" in script
    assert f"task {sub_dir}/manifest.json \"$SLURM_ARRAY_TASK_ID\" &" in script
    assert 'scontrol requeue "$SLURM_JOB_ID"' in script
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0
    commands = re.findall(r"^(\d+): (.*)$", out, re.M)
    assert [int(i) for i, _ in commands] == [0, 1, 2, 3]
    assert all(c.endswith("--resume auto") and "--run-name" in c for _, c in commands)
    # options, and the largest defaults of a grid mixing families (Atari needs more memory)
    assert launch.main(["slurm", "--dry-run", "--workdir", str(tmp_path), "--partition", "gpu", "--gpus", "0", "--time",
                        "2-00:00:00", "--signal-before", "300", "--sbatch-arg=--constraint=a100", "--setup",
                        "module load cuda", "polyprune_sac_mujoco_jax.py", "polyprune_dqn_atari_jax.py"]) == 0
    out = capsys.readouterr().out
    opts = sbatch_options(out)
    assert "--partition=gpu" in opts and "--mem=32G" in opts and "--time=2-00:00:00" in opts
    assert "--signal=B:USR1@300" in opts and "--constraint=a100" in opts and not any("gres" in o for o in opts)
    assert "\nmodule load cuda\n" in out
    assert launch._minutes("2-00:00:00") == 2880 and launch._minutes("90") == 90 and launch._minutes("1:30:00") == 90


def fake_slurm_bin(tmp_path):
    """sbatch and scontrol stand-ins that record their arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, reply in (("sbatch", "4242"), ("scontrol", "")):
        (bin_dir / name).write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/{name}.calls\necho {reply}\n')
        (bin_dir / name).chmod(0o755)
    return bin_dir


def test_sbatch_submission_and_requeue(tmp_path, fake):
    """Submits with a stand-in sbatch, then runs the written job.sbatch with bash as SLURM would run array task 1:
    USR1 to the batch shell reaches the script through the wrapper, the script exits 75 and the task requeues
    itself; run again (the requeued task), the run resumes and finishes; a re-submission skips it."""
    bin_dir = fake_slurm_bin(tmp_path)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}")
    work = tmp_path / "work"
    cmd = [sys.executable, LAUNCH, "slurm", "--workdir", str(work), "--grid", "fake", fake, "--seed", "1,2",
           "--steps", "200"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert out.returncode == 0 and "submitted job array 4242: 2 tasks" in out.stdout, out.stdout + out.stderr
    (sub_dir,) = (work / "launch" / "fake").iterdir()
    assert (sub_dir / "job_id").read_text().strip() == "4242"
    manifest = json.loads((sub_dir / "manifest.json").read_text())
    assert (tmp_path / "sbatch.calls").read_text().split() == ["--parsable", str(sub_dir / "job.sbatch")]
    name = manifest["runs"][1]["name"]
    run_dir = work / "runs" / name
    task_env = dict(env, SLURM_ARRAY_TASK_ID="1", SLURM_JOB_ID="4243", SLURM_ARRAY_JOB_ID="4242")
    job = subprocess.Popen(["bash", str(sub_dir / "job.sbatch")], env=task_env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 20
    while not (run_dir / "started").exists() and time.time() < deadline:
        time.sleep(0.05)
    job.send_signal(signal.SIGUSR1)  # as --signal=B:USR1@T does
    stdout, stderr = job.communicate(timeout=20)
    assert job.returncode == 75, stdout + stderr
    assert (tmp_path / "scontrol.calls").read_text().split() == ["requeue", "4243"]
    status = json.loads((run_dir / "launch_status.json").read_text())
    assert status["exit_code"] == 75 and status["signal"] == "SIGUSR1" and status["slurm_job"] == "4242_1"
    assert launch.run_state(str(work), name)[0] == "preempted"
    job = subprocess.run(["bash", str(sub_dir / "job.sbatch")], env=dict(task_env, SLURM_RESTART_COUNT="1"),
                         capture_output=True, text=True, timeout=30)
    assert job.returncode == 0, job.stdout + job.stderr
    assert "resuming" in job.stdout and "finished" in job.stdout  # the script's output is in the task's stdout too
    assert "resuming" in (run_dir / "stdout.log").read_text()
    assert launch.run_state(str(work), name)[0] == "done"
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert f"# skip (done) {name}" in out.stdout and "1 of 2 runs to submit" in out.stdout, out.stdout


def test_local_dry_run_and_status(tmp_path, fake, capsys):
    grid = [fake, "--seed", "1,2,3,4,5,6", "--steps", "5"]
    assert launch.main(["local", "--dry-run", "--workers", "2", "--gpus", "0,1", "--workdir", str(tmp_path)] + grid) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("# 6 of 6 runs to run")
    assert [re.search(r"CUDA_VISIBLE_DEVICES=(\d)", ln).group(1) for ln in lines[1:]] == ["0", "1"] * 3
    assert not (tmp_path / "runs").exists()
    names = [r["name"] for r in launch.expand(launch.parse_grid(grid), "python")]
    now = launch.now_iso()
    states = [("done", {"state": "exited", "exit_code": 0}),
              ("failed", {"state": "exited", "exit_code": 1}),
              ("preempted", {"state": "exited", "exit_code": 75, "signal": "SIGUSR1"}),
              ("running", {"state": "running", "host": launch.socket.gethostname(), "pid": os.getpid(), "heartbeat": now}),
              ("interrupted", {"state": "running", "heartbeat": "2020-01-01T00:00:00+00:00"})]
    for name, (_, status) in zip(names, states):
        os.makedirs(tmp_path / "runs" / name)
        launch.write_status(str(tmp_path / "runs" / name), {"attempts": 1, **status})
    (tmp_path / "runs" / names[1] / "stderr.log").write_text("==== launch attempt 1\nTraceback\nerror: --x bad\nmore\n")
    assert launch.main(["status", "--workdir", str(tmp_path)] + grid) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "6 runs: 1 done, 1 running, 1 preempted, 1 failed, 1 interrupted, 1 pending"
    table = {line.split()[1]: line for line in out[1:]}
    for name, state in zip(names, [s for s, _ in states] + ["pending"]):
        assert table[name].split()[0] == state
    assert "exit 1" in table[names[1]] and table[names[1]].endswith("error: --x bad")
    assert launch.main(["status", "--workdir", str(tmp_path), "--only", "failed"] + grid) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs")
def test_pinned_workers_get_disjoint_cpu_shares(tmp_path, fake, capsys):
    """--pin-cpus: each worker slot's runs are pinned to its own share of the launcher's CPUs; the shares cover all of
    them and do not overlap; the dry run prints the same pinning as a taskset prefix."""
    grid = [fake, "--seed", "1,2", "--steps", "30"]
    shares = launch.cpu_shares(2)
    assert sorted(sum(shares, [])) == sorted(os.sched_getaffinity(0)) and all(shares)
    assert launch.main(["local", "--dry-run", "--workers", "2", "--pin-cpus", "--gpus", "none",
                        "--workdir", str(tmp_path)] + grid) == 0
    lines = capsys.readouterr().out.splitlines()[1:]
    assert [re.search(r"taskset -c (\S+) ", ln).group(1) for ln in lines] == [",".join(map(str, s)) for s in shares]
    assert launch.main(["local", "--workers", "2", "--pin-cpus", "--gpus", "none", "--workdir", str(tmp_path)] + grid) == 0
    got = sorted((tmp_path / "runs" / r["name"] / "affinity").read_text() for r in expand(grid))
    assert got == sorted(",".join(map(str, s)) for s in shares)
    too_many = len(os.sched_getaffinity(0)) + 1
    assert launch.main(["local", "--workers", str(too_many), "--pin-cpus", "--workdir", str(tmp_path)] + grid) == 2
    assert "--pin-cpus needs at least one CPU per worker" in capsys.readouterr().err


def test_local_pool_stop_failure_and_resume(tmp_path, fake):
    """SIGTERM to the pool: running runs checkpoint (exit 75), no other starts, the pool exits 75; a failed run shows
    its error line; the same command again resumes the stopped runs, skips the done one and retries the failed one."""
    work = tmp_path / "work"
    cmd = [sys.executable, LAUNCH, "local", "--workers", "2", "--workdir", str(work), fake, "--seed", "1,2,3",
           "--steps", "150", fake, "--fail"]
    pool = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    names = [r["name"] for r in launch.expand(launch.parse_grid(cmd[cmd.index(fake):]), "python")]
    deadline = time.time() + 20
    while sum((work / "runs" / n / "started").exists() for n in names) < 2 and time.time() < deadline:
        time.sleep(0.05)
    pool.send_signal(signal.SIGTERM)
    out, _ = pool.communicate(timeout=30)
    assert pool.returncode == 75, out
    states = [launch.run_state(str(work), n)[0] for n in names]
    assert states == ["preempted", "preempted", "pending", "pending"], out
    subprocess.run([sys.executable, LAUNCH, "local", "--workdir", str(work), fake, "--seed", "3", "--steps", "150"],
                   check=True, capture_output=True)  # one run done before the grid resumes
    out = subprocess.run(cmd, capture_output=True, text=True)
    assert out.returncode == 1, out.stdout  # the failed run
    assert f"skip (done) {names[2]}" in out.stdout
    assert f"FAILED {names[3]} (exit 1): error: --fail: this run fails" in out.stdout
    for n in names[:2]:
        assert "resuming" in (work / "runs" / n / "stdout.log").read_text()
        assert launch.run_state(str(work), n)[0] == "done"


def read_steps(run_dir):
    acc = EventAccumulator(run_dir, size_guidance={"tensors": 0})
    acc.Reload()
    return {tag: [e.step for e in acc.Tensors(tag)] for tag in acc.Tags()["tensors"]}


def test_local_pool_end_to_end(tmp_path):
    """The 4-run tiny grid (2 scripts x 2 seeds) on 2 workers; one run gets SIGUSR1 once it has written its first
    checkpoint: it checkpoints, exits 75, is requeued and resumes. Every run ends with complete logs (each logged step
    once, up to the last); the grid submitted again starts nothing."""
    grid = ["polyprune_sac_mujoco_jax.py", "eaudesac_mujoco_jax.py", "--seed", "1,2"] + TINY
    names = [r["name"] for r in launch.expand(launch.parse_grid(grid), "python")]
    victim = tmp_path / "runs" / names[0]
    sent = []

    def preempt():  # SIGUSR1 to the first run's script, after its step-100 checkpoint (mid-run, inside the loop)
        deadline = time.time() + 60
        while time.time() < deadline and not (victim / "checkpoint" / f"step_{100:012d}").exists():
            time.sleep(0.05)
        status = launch.read_status(str(victim))
        os.kill(status["child_pid"], signal.SIGUSR1)
        sent.append(status["child_pid"])

    watcher = threading.Thread(target=preempt, daemon=True)
    watcher.start()
    env = {"WANDB_MODE": "disabled", "JAX_PLATFORMS": "cpu"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        code = launch.main(["local", "--workers", "2", "--gpus", "none", "--workdir", str(tmp_path)] + grid)
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    watcher.join()
    assert code == 0 and sent
    for name in names:
        run_dir = tmp_path / "runs" / name
        status = launch.read_status(str(run_dir))
        assert status["state"] == "exited" and status["exit_code"] == 0, (run_dir / "stderr.log").read_text()[-2000:]
        steps = read_steps(str(run_dir))
        assert steps["charts/SPS"] == [100, 200, 300] and steps["eval/episodic_return"] == [200, 300]
        assert status["attempts"] == (2 if name == names[0] else 1)
    log = (victim / "stdout.log").read_text()
    assert log.count("==== launch attempt") == 2
    assert re.search(rf"resuming {names[0]} at step 1\d\d from ", log.split("==== launch attempt 2")[1]), log
    # submitted again: everything is done, nothing starts
    t0 = time.time()
    assert launch.main(["local", "--workers", "2", "--workdir", str(tmp_path)] + grid) == 0
    assert time.time() - t0 < 5
