"""End to end on a real single-node SLURM (not collected by pytest, not run by CI: it starts daemons and takes minutes).

    apt-get install -y slurm-wlm munge              # Debian's slurmctld, slurmd, munge
    JAX_PLATFORMS=cpu python tests/slurm_e2e.py     # as root; --keep leaves the temporary folder

Starts munged (unless munge already works), then slurmctld and slurmd with a throwaway slurm.conf in a temporary
folder (SLURM_CONF; the system's /etc/slurm is not touched), and submits a tiny grid through tools/launch.py: 2
scripts x 2 seeds of 300 MuJoCo steps, a checkpoint every 100 steps, one CPU per task. Once a run has written its
step-100 checkpoint it is preempted:
  run 0  scancel --batch --signal=USR1 (what --signal=B:USR1@T sends before the time limit): the batch shell passes it
         on, the script checkpoints and exits 75, the task requeues itself (scontrol requeue);
  run 1  scontrol requeue (SLURM itself stops the task and puts it back in the queue).
Checks that every run ends with exit 0 and complete logs (every logged step once, up to the last), that both
preempted runs resumed from a checkpoint (attempt 2 says "resuming ... at step N", N >= 100) rather than restarted,
that the preempted attempts ended cleanly with exit 75 (not killed after KillWait), and that submitting the grid
again submits nothing. Stops the daemons it started. Exit status 0 when all hold."""
import glob
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from tools import launch  # noqa: E402

TINY = ["--env-id", "Hopper-v4", "--total-timesteps", "300", "--learning-starts", "100", "--batch-size", "32",
        "--buffer-size", "400", "--eval-episodes", "1", "--eval-frequency", "200", "--checkpoint-frequency", "100"]
GRID = ["polyprune_sac_mujoco_jax.py", "eaudesac_mujoco_jax.py", "--seed", "1,2"] + TINY
T0 = time.time()


def log(message):
    print(f"[{time.time() - T0:6.1f} s] {message}", flush=True)


def sh(cmd, check=True, show=True, **kw):
    out = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if show:
        log("$ " + " ".join(cmd) + (f"\n{out.stdout.rstrip()}" if out.stdout.strip() else "")
            + (f"\n{out.stderr.rstrip()}" if out.stderr.strip() else ""))
    if check and out.returncode != 0:
        raise SystemExit(f"FAILED: {' '.join(cmd)} exited {out.returncode}")
    return out


def wait_for(what, predicate, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise SystemExit(f"FAILED: timed out after {timeout} s waiting for {what}")


def slurm_conf(tmp):
    host = socket.gethostname().split(".")[0]
    mem = int(re.search(r"MemTotal:\s+(\d+)", open("/proc/meminfo").read()).group(1)) // 1024 * 8 // 10
    for d in ("state", "spool", "log"):
        os.makedirs(os.path.join(tmp, d))
    conf = f"""ClusterName=e2e
SlurmctldHost={host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=16917
SlurmdPort=16918
AuthType=auth/munge
# a requeued job waits cred_expire seconds before it may start again (default 120)
AuthInfo=cred_expire=10
StateSaveLocation={tmp}/state
SlurmdSpoolDir={tmp}/spool
SlurmctldPidFile={tmp}/slurmctld.pid
SlurmdPidFile={tmp}/slurmd.pid
SlurmctldLogFile={tmp}/log/slurmctld.log
SlurmdLogFile={tmp}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
InactiveLimit=0
MinJobAge=600
KillWait=30
JobRequeue=1
NodeName={host} CPUs={os.cpu_count()} RealMemory={mem} State=UNKNOWN
PartitionName=e2e Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""
    path = os.path.join(tmp, "slurm.conf")
    with open(path, "w") as f:
        f.write(conf)
    return path


def start_daemons(tmp):
    started = []
    if subprocess.run("munge -n | unmunge", shell=True, capture_output=True).returncode != 0:
        for d in ("/run/munge", "/var/log/munge", "/var/lib/munge"):
            os.makedirs(d, exist_ok=True)
            shutil.chown(d, "munge", "munge")
        sh(["munged", "--force"])
        started.append(("munged", "/run/munge/munged.pid"))
        wait_for("munge", lambda: subprocess.run("munge -n | unmunge", shell=True, capture_output=True).returncode == 0, 20)
    os.environ["SLURM_CONF"] = slurm_conf(tmp)
    sh(["slurmctld", "-i"])
    started.append(("slurmctld", os.path.join(tmp, "slurmctld.pid")))
    wait_for("slurmctld", lambda: subprocess.run(["scontrol", "ping"], capture_output=True, text=True).stdout.count("UP"), 30)
    sh(["slurmd"])
    started.append(("slurmd", os.path.join(tmp, "slurmd.pid")))
    wait_for("an idle node", lambda: "idle" in subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True,
                                                             text=True).stdout, 60)
    sh(["sinfo"])
    return started


def stop_daemons(started):
    for name, pid_file in reversed(started):
        try:
            pid = int(open(pid_file).read())
            os.kill(pid, signal.SIGTERM)
            log(f"stopped {name} (pid {pid})")
        except (OSError, ValueError) as e:
            log(f"could not stop {name}: {e}")


def running_with_checkpoint(run_dir):
    """The run is running and has written a checkpoint (so the next signal comes mid-run)."""
    status = launch.read_status(run_dir) or {}
    return status.get("state") == "running" and launch.checkpoint_step(run_dir) is not None


def read_steps(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(run_dir, size_guidance={"tensors": 0})
    acc.Reload()
    return {tag: [e.step for e in acc.Tensors(tag)] for tag in acc.Tags()["tensors"]}


def main():
    tmp = tempfile.mkdtemp(prefix="slurm-e2e-")
    work = os.path.join(tmp, "work")
    os.makedirs(work)
    os.environ.update(JAX_PLATFORMS="cpu", WANDB_MODE="disabled")  # sbatch exports the environment to the tasks
    log(f"temporary folder {tmp}")
    started = start_daemons(tmp)
    log(sh(["sbatch", "--version"], show=False).stdout.strip())
    ok = False
    try:
        submit = [sys.executable, os.path.join(ROOT, "tools", "launch.py"), "slurm", "--workdir", work, "--grid", "e2e",
                  "--gpus", "0", "--cpus", "1", "--mem", "1500M", "--time", "15", "--signal-before", "120"] + GRID
        out = sh(submit)
        job = re.search(r"submitted job array (\d+)", out.stdout).group(1)
        (sub_dir,) = glob.glob(os.path.join(work, "launch", "e2e", "*"))
        log("job.sbatch:\n" + open(os.path.join(sub_dir, "job.sbatch")).read())
        runs = json.load(open(os.path.join(sub_dir, "manifest.json")))["runs"]
        dirs = [os.path.join(work, "runs", r["name"]) for r in runs]
        sh(["squeue", "-r"])

        # scancel --batch of slurm 22.05 delivers the signal but may be told "Job can not be altered now, try again
        # later" and then retries every few seconds, which would signal the resumed task too: it runs in the
        # background and is stopped once run 0 has exited 75
        wait_for("run 0's first checkpoint", lambda: running_with_checkpoint(dirs[0]), 300)
        log(f"$ scancel --batch --signal=USR1 {job}_0 &")
        scancel = subprocess.Popen(["scancel", "--batch", "--signal=USR1", f"{job}_0"])
        wait_for("run 0 to checkpoint and exit 75", lambda: (launch.read_status(dirs[0]) or {}).get("exit_code") == 75, 120)
        if scancel.poll() is None:
            scancel.terminate()
        log(f"run 0 exited 75; scancel {'stopped' if scancel.wait() < 0 else 'returned'}")
        wait_for("run 1's first checkpoint", lambda: running_with_checkpoint(dirs[1]), 300)
        sh(["scontrol", "requeue", f"{job}_1"])
        time.sleep(3)
        sh(["squeue", "-r", "-o", "%i %T %r %S"])
        sh([sys.executable, os.path.join(ROOT, "tools", "launch.py"), "status", "--workdir", work, "--grid", "e2e"] + GRID)

        wait_for("the array to leave the queue", lambda: not subprocess.run(
            ["squeue", "-h", "-r", "-j", job], capture_output=True, text=True).stdout.strip(), 600)
        sh([sys.executable, os.path.join(ROOT, "tools", "launch.py"), "status", "--workdir", work, "--grid", "e2e"] + GRID)
        shown = sh(["scontrol", "show", "job", job], check=False, show=False).stdout
        log("$ scontrol show job " + job + " | grep -E 'JobId|JobState'\n" + "\n".join(
            line.strip() for line in shown.splitlines() if "JobId=" in line or "JobState=" in line))

        problems = []
        for i, (run, run_dir) in enumerate(zip(runs, dirs)):
            status = launch.read_status(run_dir)
            steps = read_steps(run_dir)
            stdout = open(os.path.join(run_dir, "stdout.log")).read()
            resumed = re.findall(r"resuming \S+ at step (\d+)", stdout)
            log(f"run {i} {run['name']}: exit {status['exit_code']}, attempts {status['attempts']}, SLURM "
                f"{status['slurm_job']} restarts {status['slurm_restarts']}, resumed at step(s) {resumed or '-'}, "
                f"charts/SPS steps {steps.get('charts/SPS')}, eval steps {steps.get('eval/episodic_return')}")
            if status["state"] != "exited" or status["exit_code"] != 0:
                problems.append(f"run {i} did not end with exit 0")
            if steps.get("charts/SPS") != [100, 200, 300] or steps.get("eval/episodic_return") != [200, 300]:
                problems.append(f"run {i}: incomplete or duplicated logs")
            if i < 2 and (status["attempts"] < 2 or not resumed or min(int(r) for r in resumed) < 100):
                problems.append(f"run {i} was preempted but did not resume from a checkpoint")
            task_out = open(os.path.join(sub_dir, "logs", f"{job}_{i}.out")).read()
            if i < 2 and f"preempted {run['name']} (exit 75)" not in task_out:
                problems.append(f"run {i}: the wrapper did not end cleanly after the signal (killed after KillWait?)")
            if i >= 2 and (status["attempts"] != 1 or resumed):
                problems.append(f"run {i} should have run once")
        out0 = open(glob.glob(os.path.join(sub_dir, "logs", f"{job}_0.out"))[0]).read()
        log(f"{job}_0.out (the task's stdout, both attempts):\n" + out0)
        log(f"{job}_0.err:\n" + open(os.path.join(sub_dir, "logs", f"{job}_0.err")).read())
        log(f"{job}_1.out, launcher lines:\n" + "".join(
            line for line in open(os.path.join(sub_dir, "logs", f"{job}_1.out")).readlines()
            if line.startswith("[") or "resuming" in line))
        log(f"{job}_1.err:\n" + open(os.path.join(sub_dir, "logs", f"{job}_1.err")).read())
        again = sh(submit)
        if "0 of 4 runs to submit" not in again.stdout:
            problems.append("a re-submission of the finished grid submitted runs")
        for p in problems:
            log(f"PROBLEM: {p}")
        ok = not problems
    finally:
        subprocess.run(["scancel", "--name", "e2e"], capture_output=True)
        stop_daemons(started)
        if "--keep" not in sys.argv:
            shutil.rmtree(tmp, ignore_errors=True)
    log("SLURM end to end: " + ("PASSED" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
