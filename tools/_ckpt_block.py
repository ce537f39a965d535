# >>> shared: checkpoint
EXIT_PREEMPTED = 75  # sysexits' EX_TEMPFAIL: a checkpoint was written on a signal; rerun with --resume auto to go on
# flags that may differ between a run and its resumption (they do not change what is computed)
OPERATIONAL_FLAGS = ("track", "wandb_project_name", "wandb_entity", "capture_video", "save_model", "checkpoint_frequency",
                     "checkpoint_replay", "resume", "run_name")
# the state of each gymnasium wrapper the scripts use, by class name (the core env's state is the family's env_core_state)
WRAPPER_STATE = {"TimeLimit": ("_elapsed_steps",), "OrderEnforcing": ("_has_reset",), "PassiveEnvChecker": (),
                 "RecordEpisodeStatistics": ("episode_returns", "episode_lengths", "episode_count", "episode_start_time",
                                             "return_queue", "length_queue", "time_queue"),
                 "AtariPreprocessing": ("obs_buffer", "game_over", "lives"), "FrameStackObservation": ("obs_queue",),
                 "RecordVideo": ()}


class CheckpointError(Exception):
    """A checkpoint that cannot be written or resumed; main prints it as one line and exits with status 1."""


class Preemption:
    """SIGTERM and SIGUSR1 (what SLURM sends before a time limit or a preemption) and SIGINT (Ctrl-C) ask for a
    checkpoint at the next step boundary; the script then exits with EXIT_PREEMPTED. A second Ctrl-C stops at once."""

    def __init__(self):
        self.signal = None
        for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signal.Signals(signum).name
        print(f"{self.signal}: writing a checkpoint at the next step boundary, then exiting", file=sys.stderr, flush=True)


def env_state(env, core_state):
    """Everything a gymnasium env chain holds between steps: each wrapper's counters and buffers, the core env's
    simulator state (core_state(unwrapped)), its np_random and the action space's RNG."""
    layers, e = [], env
    while isinstance(e, gym.Wrapper):
        name = type(e).__name__
        if name not in WRAPPER_STATE:
            raise CheckpointError(f"cannot checkpoint an env wrapped in {name} (its state is unknown to WRAPPER_STATE)")
        layers.append({a: copy.deepcopy(getattr(e, a)) for a in WRAPPER_STATE[name]})
        e = e.env
    return {"wrappers": layers, "core": core_state(e), "np_random": e.np_random.bit_generator.state,
            "action_space": env.action_space.np_random.bit_generator.state}


def set_env_state(env, state, set_core_state):
    e = env
    for layer in state["wrappers"]:
        for a, value in layer.items():
            setattr(e, a, copy.deepcopy(value))
        e = e.env
    set_core_state(e, state["core"])
    e.np_random.bit_generator.state = state["np_random"]
    env.action_space.np_random.bit_generator.state = state["action_space"]


def buffer_state(buffer, with_arrays=True):
    """(scalars, arrays) of a replay buffer object: its numpy arrays apart (written as .npy files), the rest pickled."""
    arrays = {k: v for k, v in vars(buffer).items() if isinstance(v, np.ndarray)}
    scalars = {k: copy.deepcopy(v.bit_generator.state if isinstance(v, np.random.Generator) else v)
               for k, v in vars(buffer).items() if k not in arrays}
    return scalars, (arrays if with_arrays else {})


def set_buffer_state(buffer, scalars, arrays):
    for k, v in scalars.items():
        if isinstance(getattr(buffer, k, None), np.random.Generator):
            getattr(buffer, k).bit_generator.state = v
        else:
            setattr(buffer, k, v)
    for k, v in arrays.items():
        getattr(buffer, k)[...] = v


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def complete_checkpoints(run_dir):
    """The complete checkpoints of a run folder, oldest first (a checkpoint is complete once renamed from .tmp)."""
    return sorted(glob.glob(os.path.join(run_dir, "checkpoint", "step_[0-9]*[0-9]")))


def save_checkpoint(run_dir, step, script, args, state, arrays):
    """Writes runs/{run}/checkpoint/step_{step}: state.pkl (the pickled training state), one .npy per array and
    meta.json (script, flags, sizes and SHA-256 of every file), into a temporary folder whose files and folder are
    fsynced before it is renamed: a checkpoint is visible only when complete. Older checkpoints are deleted after.
    Returns (path, bytes, seconds)."""
    start, root = time.time(), os.path.join(run_dir, "checkpoint")
    final = os.path.join(root, f"step_{step:012d}")
    tmp = f"{final}.tmp{os.getpid()}"
    os.makedirs(tmp, exist_ok=True)
    files = {"state.pkl": None, **{f"{name}.npy": value for name, value in arrays.items()}}
    for name, value in files.items():
        with open(os.path.join(tmp, name), "wb") as f:
            if value is None:
                pickle.dump(state, f, protocol=5)
            else:
                np.save(f, value, allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
    meta = {"format": 1, "script": script, "step": step, "args": vars(args),
            "files": {name: {"bytes": os.path.getsize(os.path.join(tmp, name)), "sha256": _sha256(os.path.join(tmp, name))}
                      for name in files}}
    with open(os.path.join(tmp, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    _fsync(tmp)
    if os.path.exists(final):  # the same step again (a signal right after a resume): the state is the same
        shutil.rmtree(tmp)
    else:
        os.rename(tmp, final)
        _fsync(root)
    for old in complete_checkpoints(run_dir)[:-1] + glob.glob(os.path.join(root, "*.tmp*")):
        shutil.rmtree(old, ignore_errors=True)
    return final, sum(m["bytes"] for m in meta["files"].values()), time.time() - start


def find_checkpoint(resume, run_dir_pattern):
    """The checkpoint folder --resume names: `auto` = the newest complete checkpoint of the newest run folder
    matching run_dir_pattern that has one (None if there is none: the run starts fresh); else a checkpoint folder
    or a run folder (its newest complete checkpoint), which must exist."""
    if resume == "auto":
        for run_dir in sorted(glob.glob(run_dir_pattern), key=os.path.getmtime, reverse=True):
            if complete_checkpoints(run_dir):
                return complete_checkpoints(run_dir)[-1]
        return None
    if os.path.isfile(os.path.join(resume, "meta.json")):
        return resume.rstrip("/")
    if os.path.isdir(resume) and complete_checkpoints(resume):
        return complete_checkpoints(resume)[-1]
    raise CheckpointError(f"--resume {resume}: no complete checkpoint there (a checkpoint folder holds meta.json; a run "
                          f"folder holds checkpoint/step_*)")


def read_checkpoint(path, script, args):
    """Checks that the checkpoint at `path` is complete, intact, from `script` and from compatible flags, then
    returns (meta, state, arrays). Raises CheckpointError naming the file and the problem; touches nothing."""
    meta_path = os.path.join(path, "meta.json")
    try:
        with open(meta_path) as f:
            meta = json.load(f)
        files = meta["files"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{meta_path}: unreadable checkpoint metadata ({type(e).__name__}: {e})") from None
    if meta.get("script") != script:
        raise CheckpointError(f"{meta_path}: a checkpoint of {meta.get('script')}, not of {script}")
    saved, now = meta.get("args", {}), vars(args)
    differ = sorted(k for k in set(saved) | set(now) if k not in OPERATIONAL_FLAGS and saved.get(k) != now.get(k))
    if differ:
        raise CheckpointError(f"{meta_path}: flags differ from the checkpoint's: " +
                              ", ".join(f"--{k.replace('_', '-')} {saved.get(k)!r} (now {now.get(k)!r})" for k in differ))
    for name, info in files.items():
        file = os.path.join(path, name)
        if not os.path.isfile(file) or os.path.getsize(file) != info["bytes"] or _sha256(file) != info["sha256"]:
            raise CheckpointError(f"{file}: missing, truncated or corrupt (size or SHA-256 differs from meta.json)")
    with open(os.path.join(path, "state.pkl"), "rb") as f:
        state = pickle.load(f)
    arrays = {name[:-len(".npy")]: np.load(os.path.join(path, name), allow_pickle=False)
              for name in files if name.endswith(".npy")}
    return meta, state, arrays


def check_checkpoint_args(args):
    check(args.checkpoint_frequency >= 0, f"--checkpoint-frequency must be >= 0, got {args.checkpoint_frequency}")
    check(args.run_name is None or (args.run_name and "/" not in args.run_name and args.run_name not in (".", "..")),
          f"--run-name must be a folder name (no '/'), got {args.run_name!r}")
    check(args.resume is None or args.resume == "auto" or os.path.exists(args.resume),
          f"--resume {args.resume}: no such checkpoint or run folder (use auto, or a path)")


def start_run(args, script):
    """(run_name, checkpoint) of this invocation. With --resume: the run folder of the checkpoint it names and the
    loaded (meta, state, arrays), after every check; with `auto` and no checkpoint yet, or without --resume: a fresh
    run (--run-name, else {env_id}__{exp_name}__{seed}__{unix time}) and None. A checkpoint that cannot be resumed
    ends the program with one line on stderr (status 1) before anything is written."""
    try:
        path = None
        if args.resume is not None:
            pattern = f"runs/{args.run_name}" if args.run_name else f"runs/{args.env_id}__{args.exp_name}__{args.seed}__*"
            path = find_checkpoint(args.resume, pattern)
        if path is None:
            return args.run_name or f"{args.env_id}__{args.exp_name}__{args.seed}__{int(time.time())}", None
        checkpoint = read_checkpoint(path, script, args)
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    run_name = os.path.basename(os.path.dirname(os.path.dirname(os.path.abspath(path))))
    print(f"resuming {run_name} at step {checkpoint[0]['step']:,} from {path}", flush=True)
    return run_name, checkpoint


def tensorboard_files(run_dir):
    """{event file name: size} after a flush: what rewind_tensorboard keeps on resume."""
    return {os.path.basename(p): os.path.getsize(p) for p in glob.glob(os.path.join(run_dir, "events.out.tfevents.*"))}


def rewind_tensorboard(run_dir, kept):
    """Cuts the run folder's event files back to what they held at the checkpoint: files written later are deleted,
    the others truncated to their recorded size, so a resumed run logs no point twice."""
    for p in glob.glob(os.path.join(run_dir, "events.out.tfevents.*")):
        name = os.path.basename(p)
        if name not in kept:
            os.remove(p)
        elif os.path.getsize(p) > kept[name]:
            os.truncate(p, kept[name])


# <<< shared: checkpoint
