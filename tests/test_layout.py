"""Project rules checked on every script: shared blocks byte-identical, only requirements imported, no side effects."""
import ast
import os
import re
import subprocess
import sys

import pytest
from conftest import SCRIPTS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REQUIRED_EVERYWHERE = ["shared: infrastructure", "shared: masking"]
LAST_LINE = 'if __name__ == "__main__":\n    main(parse_or_exit(Args, validate))\n'
THIRD_PARTY = {"ale_py", "flax", "gymnasium", "jax", "mujoco", "numpy", "optax", "tensorboard", "tyro", "wandb", "cv2"}


def blocks(script):
    text = open(os.path.join(ROOT, f"{script}.py")).read()
    found = {}
    for m in re.finditer(r"^# >>> (.+?)\n(.*?)^# <<< \1\n", text, flags=re.S | re.M):
        assert m.group(1) not in found, f"{script}: block {m.group(1)!r} appears twice"
        found[m.group(1)] = m.group(2)
    opened = re.findall(r"^# >>> (.+)$", text, flags=re.M)
    assert sorted(opened) == sorted(found), f"{script}: unbalanced block markers"
    return found


def test_shared_blocks_are_identical_across_scripts():
    per_script = {s: blocks(s) for s in SCRIPTS}
    for s, b in per_script.items():
        for name in REQUIRED_EVERYWHERE:
            assert name in b, f"{s} lacks the block {name!r}"
    names = {n for b in per_script.values() for n in b}
    for name in names:
        holders = {s: b[name] for s, b in per_script.items() if name in b}
        reference_script, reference = next(iter(holders.items()))
        for s, text in holders.items():
            assert text == reference, f"block {name!r} differs between {reference_script} and {s}"


@pytest.mark.parametrize("script", list(SCRIPTS))
def test_imports_only_stdlib_and_requirements(script):
    tree = ast.parse(open(os.path.join(ROOT, f"{script}.py")).read())
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name.split(".")[0] for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module.split(".")[0]]
        for name in names:
            assert name in sys.stdlib_module_names or name in THIRD_PARTY, f"{script} imports {name}"
            assert name not in SCRIPTS, f"{script} imports another script"


def test_import_is_side_effect_free_and_framework_free(tmp_path):
    code = ("import sys, os\n" + "".join(f"import {s}\n" for s in SCRIPTS) +
            "assert not any(m.split('.')[0] in ('torch', 'tensorflow') for m in sys.modules), 'torch or tensorflow imported'\n"
            "assert os.listdir('.') == [], os.listdir('.')\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu"))
    assert out.returncode == 0, out.stderr[-2000:]


@pytest.mark.parametrize("script", list(SCRIPTS))
def test_algorithm_first_then_one_infrastructure_tail(script):
    """The algorithm (ending with `def main`) comes first; one banner; then only the shared infrastructure block, the
    family's flag checks and the script's `validate`; the file ends with main(parse_or_exit(Args, validate))."""
    text = open(os.path.join(ROOT, f"{script}.py")).read()
    banner = "# INFRASTRUCTURE:"
    assert text.count(banner) == 1, f"{script}: one infrastructure banner expected"
    head, tail = text.split(banner)
    assert re.search(r"^def main\(args\):", head, flags=re.M), f"{script}: main(args) must come before the banner"
    assert tail.index("# >>> shared: infrastructure") < 400, f"{script}: the shared infrastructure block opens the tail"
    assert text.endswith(LAST_LINE), f"{script}: the last lines must be {LAST_LINE!r}"
    defined = re.findall(r"^(?:def|class) (\w+)", tail.split("# <<< shared: infrastructure")[1], flags=re.M)
    assert all(name == "validate" or name.startswith("check_") for name in defined), f"{script}: {defined} after the block"
