"""Run a grid of EauDeQN experiments: on a local pool of workers, or as one SLURM job array, with checkpoint, requeue
and resume; `status` shows every run's state. Stdlib only.

    python tools/launch.py local  [OPTIONS] GRID     # N workers on this machine (--workers, --gpus, --pin-cpus)
    python tools/launch.py slurm  [OPTIONS] GRID     # one sbatch --array job (--dry-run prints the script)
    python tools/launch.py status [OPTIONS] GRID     # done / running / preempted / failed / interrupted / pending

GRID (after the launcher's options) is one or more groups `SCRIPT [SCRIPT ...] [--flag VALUE ...]`: every script
of a group runs with every combination of its flags' values; a value `a,b,c` is swept (`\\,` is a literal comma).
Values may use {script} (its name without .py), {game} (ALE/Pong-v5 -> Pong), {env_id}, {seed} and {flag_name} (any
flag of the run, dashes as underscores), e.g. --exp-name '{script}_{network_size}' --dataset-dir 'data/{game}/1/replay_logs'.

    python tools/launch.py local --workers 2 polyprune_sac_mujoco_jax.py eaudesac_mujoco_jax.py \\
        --env-id Hopper-v4,Walker2d-v4 --seed 1,2,3 --network-size small,large

Runs. Each run is named `{env}__{exp_name}__s{seed}__{hash}` (hash: of the script and every flag except the
operational ones, OPERATIONAL_FLAGS; so the same run gets the same name in any grid, and runs differing in any other
flag differ in name) and is started as `SCRIPT FLAGS --run-name NAME --resume auto`, with cwd --workdir: it writes
runs/NAME. The launcher adds runs/NAME/launch_status.json (state, exit code, attempts, host, SLURM job, heartbeat),
stdout.log and stderr.log (appended, one header per attempt) and launch.lock.

Skip / resume. A run whose last attempt exited 0 is done and skipped; one running (lock held, or a fresh heartbeat
from another host) is skipped; any other starts or resumes from its newest complete checkpoint (--resume auto), so a
grid is re-submitted with the same command. A run that never wrote a checkpoint restarts from scratch (the event
files of its earlier attempt are removed, so no step is logged twice).

Preemption. SIGTERM / SIGUSR1 make a script checkpoint at the next step and exit 75 ("requeue me"). The local pool
puts such a run back in its queue; in SLURM the job asks for USR1 before its time limit (--signal-before), the batch
shell passes USR1 / TERM on to the run, and on exit 75 requeues the array task (scontrol requeue), which resumes.
Ctrl-C (or SIGTERM) of the local pool stops every running run that way (they exit 75) and starts no other; a second
Ctrl-C kills them.

W&B: every run of the grid gets WANDB_RUN_GROUP (--wandb-group, default the grid name) and WANDB_TAGS (--wandb-tags,
default $WANDB_TAGS, else `git describe` of this repository; plus the grid name), which wandb reads at init (--track).
"""
import argparse
import datetime
import fcntl
import hashlib
import itertools
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEMPLATE = os.path.join(REPO, "tools", "launch_sbatch.template")
EXIT_PREEMPTED = 75  # the scripts' exit status after a checkpoint written on a signal
HEARTBEAT_SECONDS = 30  # launch_status.json's heartbeat period; a heartbeat older than STALE_SECONDS is a dead run
STALE_SECONDS = 120
# flags that may differ between a run and its resumption (the scripts' OPERATIONAL_FLAGS): not part of a run's identity
OPERATIONAL_FLAGS = {"--track", "--no-track", "--wandb-project-name", "--wandb-entity", "--capture-video",
                     "--no-capture-video", "--save-model", "--no-save-model", "--checkpoint-frequency",
                     "--checkpoint-replay", "--no-checkpoint-replay"}
LAUNCHER_FLAGS = {"--run-name", "--resume"}  # set by the launcher
# SLURM requests per script family (a grid mixing families asks for the largest of each)
RESOURCES = {
    "atari": {"gpus": 1, "cpus": 4, "mem": "32G", "time": "24:00:00"},  # 1M-frame replay: 7 GB, and its checkpoint
    "atari_offline": {"gpus": 1, "cpus": 4, "mem": "32G", "time": "24:00:00"},
    "mujoco": {"gpus": 1, "cpus": 4, "mem": "16G", "time": "24:00:00"},
}
STATES = ("done", "running", "preempted", "failed", "interrupted", "pending")


class GridError(Exception):
    """A grid or an option that cannot be used; main prints it as one `error: ...` line and exits with status 2."""


_PRINT = threading.Lock()


def say(message):
    with _PRINT:
        print(f"[{datetime.datetime.now():%H:%M:%S}] {message}", flush=True)


# ---------------------------------------------------------------- grid: expansion and names
def split_values(value):
    """'a,b\\,c' -> ['a', 'b,c']: the values a flag sweeps."""
    return [v.replace("\\,", ",") for v in re.split(r"(?<!\\),", value)]


def parse_grid(tokens):
    """[(scripts, [(flag, [values] or None for a boolean flag)])]: the groups of GRID tokens."""
    groups, i = [], 0
    while i < len(tokens):
        if not tokens[i].endswith(".py") or tokens[i].startswith("-"):
            raise GridError(f"expected a script (NAME.py) before {tokens[i]!r}; the launcher's options go before the "
                            f"first script")
        scripts, flags = [], []
        while i < len(tokens) and tokens[i].endswith(".py") and not tokens[i].startswith("-"):
            scripts.append(tokens[i])
            i += 1
        while i < len(tokens) and tokens[i].startswith("--"):
            flag, value = tokens[i], None
            if "=" in flag:
                flag, value = flag.split("=", 1)
            elif i + 1 < len(tokens) and not tokens[i + 1].startswith("--") and not tokens[i + 1].endswith(".py"):
                value, i = tokens[i + 1], i + 1
            i += 1
            if flag in LAUNCHER_FLAGS:
                raise GridError(f"{flag} is set by the launcher (--run-name NAME --resume auto); leave it out")
            if any(f == flag for f, _ in flags):
                raise GridError(f"{flag} given twice in one group; give its values as one list: {flag} a,b")
            flags.append((flag, None if value is None else split_values(value)))
        if i < len(tokens) and not tokens[i].endswith(".py"):
            raise GridError(f"{tokens[i]!r}: a flag's value must follow a --flag")
        groups.append((scripts, flags))
    if not groups:
        raise GridError("no grid: give at least one script, e.g. polyprune_sac_mujoco_jax.py --seed 1,2")
    return groups


def resolve_script(script):
    for path in (script, os.path.join(REPO, script)):
        if os.path.isfile(path):
            return os.path.abspath(path)
    raise GridError(f"{script}: no such script (here or in {REPO})")


def game_of(env_id):
    """ALE/Pong-v5 -> Pong; Hopper-v4 -> Hopper."""
    return re.sub(r"-v\d+$", "", env_id.split("/")[-1])


def fill(value, flags, script):
    """A flag value with its {placeholders} filled from the run's script and flags."""
    if value is None or "{" not in value:
        return value
    fields = {f[2:].replace("-", "_"): v for f, v in flags if v is not None and "{" not in v}
    fields["script"] = os.path.basename(script)[:-len(".py")]
    if "env_id" in fields:
        fields["game"] = game_of(fields["env_id"])
    try:
        return value.format_map(fields)
    except (KeyError, ValueError, IndexError) as e:
        raise GridError(f"{value!r}: cannot fill {e} (placeholders: {{script}}, {{game}}, {{env_id}}, {{seed}} or a flag "
                        f"of the run such as {{network_size}})") from None


def run_name(script, flags):
    """{env}__{exp_name}__s{seed}__{hash}: stable (only the run's own flags) and unique (hash of every flag that
    changes what is computed)."""
    values = dict(flags)
    identity = [os.path.basename(script)] + sorted(f"{f}={v}" if v is not None else f for f, v in flags
                                                   if f not in OPERATIONAL_FLAGS)
    digest = hashlib.sha1("\n".join(identity).encode()).hexdigest()[:6]
    parts = []
    if values.get("--env-id"):
        parts.append(values["--env-id"].split("/")[-1])
    parts.append(values.get("--exp-name") or os.path.basename(script)[:-len(".py")])
    if values.get("--seed"):
        parts.append(f"s{values['--seed']}")
    name = "__".join(parts + [digest])
    return re.sub(r"[^A-Za-z0-9_.+=-]", "-", name)


def expand(groups, python):
    """The grid's runs, in order (groups, scripts, then the flags' values, first flag slowest), without duplicates:
    dicts with name, script (absolute path) and argv (the command)."""
    runs, seen = [], set()
    for scripts, flags in groups:
        choices = [[(f, v) for v in values] if values is not None else [(f, None)] for f, values in flags]
        for script in scripts:
            path = resolve_script(script)
            for combo in itertools.product(*choices):
                run_flags = [(f, fill(v, combo, path)) for f, v in combo]
                name = run_name(path, run_flags)
                if name in seen:
                    continue
                seen.add(name)
                argv = [python, path] + [x for f, v in run_flags for x in ((f,) if v is None else (f, v))]
                runs.append({"name": name, "script": path, "argv": argv + ["--run-name", name, "--resume", "auto"]})
    return runs


def family(script):
    base = os.path.basename(script)
    return "mujoco" if "mujoco" in base else "atari_offline" if "cql" in base else "atari"


# ---------------------------------------------------------------- run folders: state
def now_iso():
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def read_status(run_dir):
    try:
        with open(os.path.join(run_dir, "launch_status.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def write_status(run_dir, status):
    tmp = os.path.join(run_dir, f".launch_status.json.{os.getpid()}.{threading.get_ident()}")
    with open(tmp, "w") as f:
        json.dump(status, f, indent=1)
    os.replace(tmp, os.path.join(run_dir, "launch_status.json"))


def checkpoint_step(run_dir):
    """Step of the newest complete checkpoint (checkpoint/step_{12 digits}, the scripts' rule), or None."""
    try:
        steps = [int(d[5:]) for d in os.listdir(os.path.join(run_dir, "checkpoint"))
                 if len(d) == 17 and d.startswith("step_") and d[5:].isdigit()]
    except OSError:
        return None
    return max(steps) if steps else None


def last_error(run_dir):
    """The last `error: ...` line of the last attempt's stderr, else its last line (a traceback's exception)."""
    try:
        with open(os.path.join(run_dir, "stderr.log"), "rb") as f:
            f.seek(max(0, os.path.getsize(f.name) - 65536))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    lines = [ln.strip() for ln in text.split("==== launch attempt")[-1].splitlines()[1:] if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    return (errors or lines or [""])[-1][:300]


def heartbeat_fresh(status):
    try:
        age = time.time() - datetime.datetime.fromisoformat(status["heartbeat"]).timestamp()
    except (KeyError, TypeError, ValueError):
        return False
    if status.get("host") == socket.gethostname() and status.get("pid"):
        try:
            os.kill(status["pid"], 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
    return age < STALE_SECONDS


def run_state(workdir, name):
    """(state, detail) of one run, from runs/NAME alone (see STATES)."""
    run_dir = os.path.join(workdir, "runs", name)
    status = read_status(run_dir)
    step = checkpoint_step(run_dir)
    where = f"checkpoint at step {step:,}" if step is not None else "no checkpoint"
    if status is None:
        return "pending", ("folder exists, not started by the launcher; " + where) if os.path.isdir(run_dir) else ""
    attempts = f"attempt {status.get('attempts', 1)}"
    job = f" SLURM {status['slurm_job']}" if status.get("slurm_job") else ""
    if status.get("state") == "running":
        if heartbeat_fresh(status):
            return "running", f"{attempts} on {status.get('host')}{job} since {status.get('started')}, {where}"
        return "interrupted", f"{attempts} on {status.get('host')}{job}: no heartbeat since {status.get('heartbeat')}, {where}"
    code = status.get("exit_code")
    if code == 0:
        return "done", f"{attempts}, ended {status.get('ended')}"
    if code == EXIT_PREEMPTED:
        return "preempted", f"{attempts}: checkpointed on {status.get('signal') or 'a signal'}, resumes, {where}"
    return "failed", f"exit {code} ({attempts}, {where}): {status.get('error') or last_error(run_dir)}"


# ---------------------------------------------------------------- one run: the wrapper both backends use
def execute(run, workdir, env=None, echo=False, started=None, cpus=None):
    """Runs one run unless it is done or running elsewhere: (outcome, exit code), outcome one of done, failed,
    preempted, skipped. Keeps runs/NAME/launch_status.json (heartbeat every HEARTBEAT_SECONDS), appends the output to
    runs/NAME/stdout.log and stderr.log (and echoes it with echo). started(proc) is called once the script runs: a
    caller that sends it a signal sets proc.forwarded, and a script killed by that signal before it could checkpoint
    counts as preempted (its newest checkpoint is intact). cpus: the CPUs the script is pinned to (set on its main thread
    as soon as it is started, so the threads it starts later inherit it, and on any thread it has started already)."""
    name, run_dir = run["name"], os.path.join(workdir, "runs", run["name"])
    os.makedirs(run_dir, exist_ok=True)
    lock = open(os.path.join(run_dir, "launch.lock"), "a")
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"skip {name}: running (locked by another process)")
            return "skipped", 0
        previous = read_status(run_dir) or {}
        if previous.get("state") == "exited" and previous.get("exit_code") == 0:
            say(f"skip {name}: done")
            return "skipped", 0
        slurm_job = slurm_task_id()
        if (previous.get("state") == "running" and heartbeat_fresh(previous) and previous.get("host") != socket.gethostname()
                and (not slurm_job or previous.get("slurm_job") != slurm_job)):
            say(f"skip {name}: running on {previous.get('host')} (heartbeat {previous.get('heartbeat')})")
            return "skipped", 0
        return _execute(run, workdir, run_dir, previous, slurm_job, env, echo, started, cpus)
    finally:
        lock.close()


def slurm_task_id():
    if os.environ.get("SLURM_ARRAY_JOB_ID"):
        return f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ.get('SLURM_ARRAY_TASK_ID')}"
    return os.environ.get("SLURM_JOB_ID")


def _execute(run, workdir, run_dir, previous, slurm_job, env, echo, started, cpus):
    name = run["name"]
    if checkpoint_step(run_dir) is None:  # nothing to resume: the events of an earlier attempt would be logged twice
        for f in os.listdir(run_dir):
            if f.startswith("events.out.tfevents."):
                os.remove(os.path.join(run_dir, f))
    status = {"name": name, "state": "running", "attempts": previous.get("attempts", 0) + 1, "host": socket.gethostname(),
              "pid": os.getpid(), "slurm_job": slurm_job, "slurm_restarts": os.environ.get("SLURM_RESTART_COUNT"),
              "started": now_iso(), "heartbeat": now_iso(), "command": shlex.join(run["argv"])}
    header = (f"==== launch attempt {status['attempts']} on {status['host']} at {status['started']}"
              f"{', SLURM ' + slurm_job if slurm_job else ''}: {status['command']}\n").encode()
    logs = [open(os.path.join(run_dir, f), "ab") for f in ("stdout.log", "stderr.log")]
    for log in logs:
        log.write(header)
        log.flush()
    write_status(run_dir, status)
    try:
        proc = subprocess.Popen(run["argv"], cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True)  # signals reach it only through the launcher
    except OSError as e:  # e.g. no such python
        logs[1].write(f"error: cannot start {run['argv'][0]}: {e}\n".encode())
        for log in logs:
            log.close()
        status.update(state="exited", exit_code=127, ended=now_iso(), error=f"error: cannot start: {e}")
        write_status(run_dir, status)
        return "failed", 127
    if cpus:
        try:
            os.sched_setaffinity(proc.pid, cpus)  # the threads it starts from now on inherit this
            tids = os.listdir(f"/proc/{proc.pid}/task")  # and any it has started already
        except (ProcessLookupError, FileNotFoundError):  # it has already exited
            tids = []
        for tid in tids:
            try:
                os.sched_setaffinity(int(tid), cpus)
            except ProcessLookupError:  # that thread has ended meanwhile; the others still get pinned
                pass
    proc.forwarded = None
    status["child_pid"] = proc.pid
    write_status(run_dir, status)
    if started:
        started(proc)
    stop = threading.Event()
    echoes = (sys.stdout.buffer, sys.stderr.buffer) if echo else (None, None)
    threads = [threading.Thread(target=_tee, args=(pipe, log, out), daemon=True)
               for pipe, log, out in zip((proc.stdout, proc.stderr), logs, echoes)]
    threads.append(threading.Thread(target=_heartbeat, args=(run_dir, status, stop), daemon=True))
    for t in threads:
        t.start()
    code = proc.wait()
    stop.set()
    for t in threads:
        t.join()
    for log in logs:
        log.close()
    if code < 0 and proc.forwarded and -code == proc.forwarded:  # killed by the signal before the handler was set
        code = EXIT_PREEMPTED
    status.update(state="exited", exit_code=code, ended=now_iso(), heartbeat=now_iso(),
                  signal=signal.Signals(proc.forwarded).name if proc.forwarded else None,
                  error=last_error(run_dir) if code not in (0, EXIT_PREEMPTED) else None)
    write_status(run_dir, status)
    outcome = "done" if code == 0 else "preempted" if code == EXIT_PREEMPTED else "failed"
    return outcome, code


def _tee(pipe, log, out):
    for line in iter(pipe.readline, b""):
        log.write(line)
        log.flush()
        if out is not None:
            out.write(line)
            out.flush()
    pipe.close()


def _heartbeat(run_dir, status, stop):
    while not stop.wait(HEARTBEAT_SECONDS):
        status["heartbeat"] = now_iso()
        write_status(run_dir, status)


def task(manifest_path, index):
    """One SLURM array task: run `index` of the manifest, with USR1 / TERM / INT passed on to the script."""
    with open(manifest_path) as f:
        manifest = json.load(f)
    run = manifest["runs"][index]
    procs, received = [], []

    # signal handlers only pass signals on: SLURM may send TERM to every process of the job while the batch shell
    # passes the same TERM on, and a handler that printed could be interrupted by the second one mid-print (deadlock)
    def forward(signum, frame):
        received.append(signum)
        for proc in procs:
            if proc.poll() is None:
                proc.forwarded = signum
                proc.send_signal(signum)

    def started(proc):  # a signal that came while the script was being started is passed on now
        procs.append(proc)
        for signum in received:
            proc.forwarded = signum
            proc.send_signal(signum)

    for sig in (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    say(f"task {index}: {run['name']}")
    outcome, code = execute(run, manifest["workdir"], echo=True, started=started)
    if received:
        say(f"received {', '.join(signal.Signals(s).name for s in received)}: passed on to the script")
    say(f"{outcome} {run['name']} (exit {code})")
    return code


# ---------------------------------------------------------------- local backend
def detect_gpus(spec):
    if spec == "none":
        return []
    if spec != "auto":
        return [g for g in spec.split(",") if g]
    if os.environ.get("CUDA_VISIBLE_DEVICES") is not None:
        return [g for g in os.environ["CUDA_VISIBLE_DEVICES"].split(",") if g and g != "-1"]
    if shutil.which("nvidia-smi"):
        out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"], capture_output=True, text=True)
        if out.returncode == 0:
            return [g.strip() for g in out.stdout.splitlines() if g.strip()]
    return []


def worker_env(base, slot, gpus, workers):
    env = dict(base)
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = gpus[slot % len(gpus)]
        if workers > len(gpus):  # several runs share a GPU: no JAX preallocation of 75% of its memory each
            env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    return env


def cpu_shares(workers):
    """The launcher's CPUs split into `workers` contiguous shares, one per worker slot (--pin-cpus)."""
    cpus = sorted(os.sched_getaffinity(0))
    if workers > len(cpus):
        raise GridError(f"--pin-cpus needs at least one CPU per worker: {workers} workers, {len(cpus)} CPUs")
    return [cpus[i * len(cpus) // workers:(i + 1) * len(cpus) // workers] for i in range(workers)]


def run_local(runs, workdir, workers, gpus, base_env, shares=None):
    """Runs the grid on `workers` processes; a run that exits 75 goes back to the queue. Returns 0 when every run is
    done, 1 when some failed, 75 when stopped (Ctrl-C / SIGTERM) with runs left."""
    queue, lock, stopping = deque(runs), threading.Lock(), threading.Event()
    running, outcomes, start = {}, {}, time.time()

    def worker(slot):
        env = worker_env(base_env, slot, gpus, workers)
        cpus = shares[slot] if shares else None
        while not stopping.is_set():
            with lock:
                if not queue:
                    return
                run = queue.popleft()
            gpu = f" (CUDA_VISIBLE_DEVICES={env['CUDA_VISIBLE_DEVICES']})" if gpus else ""
            gpu += f" (CPUs {','.join(map(str, cpus))})" if cpus else ""
            say(f"start {run['name']}{gpu}")
            t0 = time.time()
            try:
                outcome, code = execute(run, workdir, env=env, started=lambda proc: started(run["name"], proc),
                                        cpus=cpus)
            except Exception as e:  # the launcher's own failure (a full disk ...): this run fails, the others go on
                outcome, code = "failed", None
                say(f"launcher error on {run['name']}: {e!r}")
            running.pop(run["name"], None)
            took = time.time() - t0
            if outcome == "preempted" and not stopping.is_set():
                say(f"preempted {run['name']} after {took:.0f} s: requeued, it resumes from its checkpoint")
                with lock:
                    queue.append(run)
                continue
            outcomes[run["name"]] = outcome
            if outcome == "failed":
                say(f"FAILED {run['name']} (exit {code}): {last_error(os.path.join(workdir, 'runs', run['name']))}")
            elif outcome != "skipped":
                say(f"{outcome} {run['name']} in {took:.0f} s")

    def started(name, proc):
        running[name] = proc
        if stopping.is_set():  # stopped while this run was being started
            proc.forwarded = signal.SIGTERM
            proc.send_signal(signal.SIGTERM)

    def stop(signum, frame):  # no printing here (a second signal could interrupt it mid-print): the main loop says it
        signals.append(signum)
        if len(signals) > 1:
            for p in list(running.values()):
                p.forwarded = signal.SIGKILL
                p.kill()
            return
        stopping.set()
        for p in list(running.values()):
            p.forwarded = signal.SIGTERM
            p.send_signal(signal.SIGTERM)

    signals, told = [], 0
    handlers = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        threads = [threading.Thread(target=worker, args=(slot,), daemon=True) for slot in range(workers)]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            for t in threads:
                t.join(0.2)
            if len(signals) > told:
                told = len(signals)
                say(f"{signal.Signals(signals[0]).name}: the running runs checkpoint and stop; no new run starts"
                    if told == 1 else "second interrupt: the running runs are killed")
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
    counts = {o: list(outcomes.values()).count(o) for o in ("done", "failed", "preempted", "skipped")}
    left = len(runs) - len(outcomes)
    say(f"{len(runs)} runs in {time.time() - start:.0f} s: " + ", ".join(f"{n} {o}" for o, n in counts.items())
        + (f", {left} not run (stopped)" if left else ""))
    return 75 if stopping.is_set() and (left or counts["preempted"]) else 1 if counts["failed"] else 0


# ---------------------------------------------------------------- SLURM backend
def _minutes(t):
    """A SLURM time (minutes, minutes:seconds, hours:minutes:seconds, days-hours[:minutes[:seconds]]) in minutes."""
    try:
        days, rest = t.split("-", 1) if "-" in t else ("0", t)
        p = [int(x) for x in rest.split(":")]
        if "-" in t:
            h, m, s = (p + [0, 0])[:3]
        else:
            h, m, s = p if len(p) == 3 else (0, p[0], p[1] if len(p) == 2 else 0)
        return int(days) * 1440 + h * 60 + m + s / 60
    except ValueError:
        raise GridError(f"--time {t}: expected a SLURM time such as 90, 12:00:00 or 2-00:00:00") from None


def _megabytes(mem):
    m = re.fullmatch(r"(\d+)([KMGT]?)B?", mem.upper())
    if not m:
        raise GridError(f"--mem {mem}: expected e.g. 16G or 16000M")
    return int(m.group(1)) * {"K": 1 / 1024, "": 1, "M": 1, "G": 1024, "T": 1024**2}[m.group(2)]


def resources(runs, opts):
    """The array's requests: the options given, else the largest default of the grid's script families."""
    defaults = [RESOURCES[family(r["script"])] for r in runs]
    out = {
        "gpus": opts.gpus if opts.gpus is not None else max(d["gpus"] for d in defaults),
        "cpus": opts.cpus if opts.cpus is not None else max(d["cpus"] for d in defaults),
        "mem": opts.mem or max((d["mem"] for d in defaults), key=_megabytes),
        "time": opts.time or max((d["time"] for d in defaults), key=_minutes),
    }
    _megabytes(out["mem"])
    return out


def render(template, values):
    """Fills {{key}} placeholders; a line whose placeholders are all empty ('' or None) is dropped."""
    lines = []
    for line in template.splitlines():
        keys = re.findall(r"{{\s*(\w+)\s*}}", line)
        unknown = [k for k in keys if k not in values]
        if unknown:
            raise GridError(f"sbatch template: unknown placeholder {{{{{unknown[0]}}}}} (known: {', '.join(values)})")
        if keys and all(values[k] in ("", None) for k in keys):
            continue
        lines.append(re.sub(r"{{\s*(\w+)\s*}}", lambda m: str(values[m.group(1)]), line))
    return "\n".join(lines) + "\n"


def sbatch_script(runs, opts, manifest, log_dir, wandb):
    res = resources(runs, opts)
    values = {
        "job_name": opts.grid, "last_index": len(runs) - 1, "throttle": opts.throttle, "log_dir": log_dir,
        "partition": opts.partition, "account": opts.account, "qos": opts.qos,
        "gres": f"gpu:{res['gpus']}" if res["gpus"] else "", "cpus": res["cpus"], "mem": res["mem"], "time": res["time"],
        "signal_before": opts.signal_before, "extra_sbatch": "\n".join(f"#SBATCH {a}" for a in opts.sbatch_arg),
        "setup": opts.setup, "workdir": shlex.quote(opts.workdir), "python": shlex.quote(opts.python),
        "launcher": shlex.quote(os.path.abspath(__file__)), "manifest": shlex.quote(manifest),
        "wandb_group": shlex.quote(wandb["WANDB_RUN_GROUP"]), "wandb_tags": shlex.quote(wandb["WANDB_TAGS"]),
    }
    with open(opts.sbatch_template) as f:
        return render(f.read(), values)


def squeue_tasks(job_ids):
    """{"JOB_TASK": state} of the given array jobs' tasks still known to squeue ({} without squeue)."""
    if not job_ids or not shutil.which("squeue"):
        return {}
    out = subprocess.run(["squeue", "-h", "-r", "-j", ",".join(job_ids), "-o", "%i %T"], capture_output=True, text=True)
    return dict(line.split()[:2] for line in out.stdout.splitlines() if len(line.split()) >= 2)


def submissions(opts):
    """[(job id, manifest)] of this grid's earlier submissions."""
    root, found = os.path.join(opts.launch_dir, opts.grid), []
    for sub in sorted(os.listdir(root)) if os.path.isdir(root) else []:
        try:
            with open(os.path.join(root, sub, "job_id")) as f:
                job = f.read().strip()
            with open(os.path.join(root, sub, "manifest.json")) as f:
                found.append((job, json.load(f)))
        except (OSError, ValueError):
            continue
    return found


def submit_slurm(runs, opts, wandb):
    todo = []
    for run in runs:
        state, _ = run_state(opts.workdir, run["name"])
        if state in ("done", "running"):
            print(f"# skip ({state}) {run['name']}")
        else:
            todo.append(run)
    print(f"# {len(todo)} of {len(runs)} runs to submit")
    if not todo:
        return 0
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    sub_dir = os.path.join(opts.launch_dir, opts.grid, stamp)
    manifest_path, log_dir = os.path.join(sub_dir, "manifest.json"), os.path.join(sub_dir, "logs")
    script = sbatch_script(todo, opts, manifest_path, log_dir, wandb)
    if opts.dry_run:
        print(f"==> {os.path.join(sub_dir, 'job.sbatch')} <==\n{script}")
        print(f"==> {manifest_path}: task i runs command i, in {opts.workdir} <==")
        for i, run in enumerate(todo):
            print(f"{i}: {shlex.join(run['argv'])}")
        return 0
    if not shutil.which("sbatch"):
        raise GridError("sbatch not found: run this on a SLURM login node (or use `local`)")
    queued = squeue_tasks([job for job, _ in submissions(opts)])
    if queued:
        print(f"# note: {len(queued)} tasks of earlier submissions of {opts.grid} are still queued or running; "
              f"they skip runs that are done or running when they start")
    os.makedirs(log_dir, exist_ok=True)
    with open(manifest_path, "w") as f:
        json.dump({"grid": opts.grid, "workdir": opts.workdir, "runs": todo}, f, indent=1)
    with open(os.path.join(sub_dir, "job.sbatch"), "w") as f:
        f.write(script)
    out = subprocess.run(["sbatch", "--parsable", os.path.join(sub_dir, "job.sbatch")], capture_output=True, text=True)
    if out.returncode != 0:
        raise GridError(f"sbatch failed: {out.stderr.strip()}")
    job = out.stdout.strip().split(";")[0]
    with open(os.path.join(sub_dir, "job_id"), "w") as f:
        f.write(job + "\n")
    print(f"submitted job array {job}: {len(todo)} tasks, at most {opts.throttle} at a time; script, manifest and "
          f"per-task logs in {sub_dir}")
    return 0


# ---------------------------------------------------------------- status view
def show_status(runs, opts):
    queued = {}
    for job, manifest in submissions(opts):  # SLURM: a run without a folder may be waiting in the queue
        for task_id, state in squeue_tasks([job]).items():
            idx = task_id.split("_")[-1]
            if idx.isdigit() and int(idx) < len(manifest["runs"]):
                queued[manifest["runs"][int(idx)]["name"]] = f"SLURM {task_id} {state.lower()}"
    rows = []
    for run in runs:
        state, detail = run_state(opts.workdir, run["name"])
        if run["name"] in queued and state != "running":
            detail = f"{queued[run['name']]}; {detail}" if detail else queued[run["name"]]
        rows.append((state, run["name"], detail))
    counts = {s: sum(r[0] == s for r in rows) for s in STATES}
    print(f"{len(rows)} runs: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n))
    only = set(opts.only.split(",")) if opts.only else set(STATES)
    width = max([len(r[1]) for r in rows if r[0] in only] + [4])
    for state, name, detail in rows:
        if state in only:
            print(f"{state:<11} {name:<{width}}  {detail}".rstrip())
    return 0


# ---------------------------------------------------------------- CLI
def git_version():
    out = subprocess.run(["git", "-C", REPO, "describe", "--tags", "--always", "--dirty"], capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else ""


def parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    sub = p.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--workdir", default=".", help="where the runs go (runs/NAME) and the scripts run (default: .)")
    common.add_argument("--grid", help="the grid's name: SLURM job name, launch/GRID folder, default W&B group "
                                       "(default: the scripts' names)")
    common.add_argument("--launch-dir", help="SLURM submissions (sbatch script, manifest, per-task logs) go to "
                                             "LAUNCH_DIR/GRID/TIME/ (default: WORKDIR/launch)")
    common.add_argument("--python", default=sys.executable, help="the python that runs the scripts (default: this one)")
    common.add_argument("--wandb-group", help="WANDB_RUN_GROUP of every run (default: the grid name)")
    common.add_argument("--wandb-tags", help="WANDB_TAGS, comma separated (default: $WANDB_TAGS, else git describe); "
                                             "the grid name is added")
    common.add_argument("grid_tokens", nargs=argparse.REMAINDER, metavar="GRID",
                        help="SCRIPT [SCRIPT ...] [--flag V1,V2 ...], one or more groups")
    run_opts = argparse.ArgumentParser(add_help=False)
    run_opts.add_argument("--dry-run", action="store_true", help="print what would run; run and write nothing")

    loc = sub.add_parser("local", parents=[run_opts, common], help="run the grid on this machine")
    loc.add_argument("--workers", type=int, default=1, help="runs at a time (default: 1)")
    loc.add_argument("--pin-cpus", action="store_true", help="pin each worker slot's runs to its own share of this "
                     "process's CPUs (Linux), e.g. 2 workers on 2 cores: one core each")
    loc.add_argument("--gpus", default="auto", help="GPU ids handed out round-robin as CUDA_VISIBLE_DEVICES, one per "
                                                    "worker slot: auto (CUDA_VISIBLE_DEVICES, else nvidia-smi), none, "
                                                    "or a list 0,1 (default: auto)")
    sl = sub.add_parser("slurm", parents=[run_opts, common], help="submit the grid as one SLURM job array")
    sl.add_argument("--throttle", type=int, default=50, help="array tasks running at a time (%% of --array; default 50)")
    sl.add_argument("--partition")
    sl.add_argument("--account")
    sl.add_argument("--qos")
    sl.add_argument("--gpus", type=int, help="GPUs per run, as --gres=gpu:N (default: 1; 0: none)")
    sl.add_argument("--cpus", type=int, help="--cpus-per-task (default: 4)")
    sl.add_argument("--mem", help="memory per run (default: 32G Atari, 16G MuJoCo)")
    sl.add_argument("--time", help="time limit of one job (default 24:00:00); a run longer than that is requeued and "
                                   "resumes")
    sl.add_argument("--signal-before", type=int, default=600, help="seconds before the time limit at which SLURM sends "
                                                                   "USR1 so the run checkpoints (default: 600)")
    sl.add_argument("--sbatch-template", default=TEMPLATE, help=f"the sbatch script template (default: {TEMPLATE})")
    sl.add_argument("--sbatch-arg", action="append", default=[], help="an extra #SBATCH option, e.g. "
                                                                      "--sbatch-arg=--constraint=a100 (repeatable)")
    sl.add_argument("--setup", default="", help="shell lines run before the task, e.g. 'module load cuda; "
                                                ". .venv/bin/activate'")
    st = sub.add_parser("status", parents=[common], help="the state of every run of the grid")
    st.add_argument("--only", help="list only these states, comma separated (e.g. failed,running)")
    tk = sub.add_parser("task", help="(used by the sbatch script) run task INDEX of MANIFEST")
    tk.add_argument("manifest")
    tk.add_argument("index", type=int)
    return p


def main(argv=None):
    opts, unknown = parser().parse_known_args(argv)
    if opts.command == "task":
        return task(opts.manifest, opts.index)
    try:
        if unknown:
            raise GridError(f"{unknown[0]!r} is no option of `{opts.command}`, and a grid starts with a script (NAME.py)")
        opts.workdir = os.path.abspath(opts.workdir)
        groups = parse_grid(opts.grid_tokens)
        runs = expand(groups, opts.python)
        opts.grid = opts.grid or "+".join(dict.fromkeys(os.path.basename(r["script"])[:-3] for r in runs))
        opts.launch_dir = os.path.abspath(opts.launch_dir or os.path.join(opts.workdir, "launch"))
        if opts.command == "status":
            return show_status(runs, opts)
        tags = opts.wandb_tags if opts.wandb_tags is not None else os.environ.get("WANDB_TAGS") or git_version()
        wandb = {"WANDB_RUN_GROUP": opts.wandb_group or opts.grid,
                 "WANDB_TAGS": ",".join(dict.fromkeys(t for t in tags.split(",") + [opts.grid] if t))}
        if opts.command == "slurm":
            return submit_slurm(runs, opts, wandb)
        if opts.workers < 1:
            raise GridError(f"--workers must be >= 1, got {opts.workers}")
        gpus = detect_gpus(opts.gpus)
        shares = cpu_shares(opts.workers) if opts.pin_cpus else None
        todo = []
        for run in runs:
            state, _ = run_state(opts.workdir, run["name"])
            if state in ("done", "running"):
                print(f"# skip ({state}) {run['name']}")
            else:
                todo.append(run)
        if opts.dry_run:
            print(f"# {len(todo)} of {len(runs)} runs to run, {opts.workers} at a time, cd {opts.workdir}")
            for i, run in enumerate(todo):
                env = worker_env(wandb, i % opts.workers, gpus, opts.workers)
                pin = f"taskset -c {','.join(map(str, shares[i % opts.workers]))} " if shares else ""
                print(" ".join(f"{k}={shlex.quote(v)}" for k, v in env.items()) + " " + pin + shlex.join(run["argv"]))
            return 0
        return run_local(todo, opts.workdir, opts.workers, gpus, {**os.environ, **wandb}, shares)
    except GridError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # `status ... | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
