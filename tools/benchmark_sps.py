"""Steps per second of a script, before and after learning starts, read from the charts/SPS it logged.

Usage: python tools/benchmark_sps.py SCRIPT.py [script flags...]
Runs the script once in a temporary directory (WANDB off) and prints the mean logged SPS of the
phase before --learning-starts and of the phase after it (the first 100-step window after it is dropped:
it holds the compilation of the update). Without --learning-starts (offline scripts) it prints the mean over all
windows but the first.
"""
import glob
import os
import subprocess
import sys
import tempfile

import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.util import tensor_util


def main(argv):
    if not argv:
        print(__doc__)
        return 2
    script = os.path.abspath(argv[0])
    flags = argv[1:]
    learning_starts = int(flags[flags.index("--learning-starts") + 1]) if "--learning-starts" in flags else None
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, WANDB_MODE="disabled")
        subprocess.run([sys.executable, script, *flags], cwd=tmp, env=env, check=True)
        run_dir = os.path.dirname(glob.glob(f"{tmp}/runs/**/args.json", recursive=True)[0])
        acc = EventAccumulator(run_dir, size_guidance={"tensors": 0})
        acc.Reload()
        sps = [(e.step, float(tensor_util.make_ndarray(e.tensor_proto))) for e in acc.Tensors("charts/SPS")]
    if learning_starts is None:  # learning from the first step (offline scripts): drop the window that compiled
        print(f"{os.path.basename(script)} {' '.join(flags)}")
        print(f"  mean SPS {np.mean([v for _, v in sps[1:]]):.1f} (steps {sps[0][0] + 1}..{sps[-1][0]}, {len(sps) - 1} windows)")
        return 0
    before = [v for s, v in sps if 100 < s <= learning_starts]
    after = [v for s, v in sps if s > learning_starts + 100]
    print(f"{os.path.basename(script)} {' '.join(flags)}")
    print(f"  SPS before learning starts: {np.mean(before):.1f} (steps 101..{learning_starts}, {len(before)} windows)")
    print(f"  SPS after learning starts:  {np.mean(after):.1f} (steps {learning_starts + 101}..{sps[-1][0]}, {len(after)} windows)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
