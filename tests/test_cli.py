"""CLI: every flag documented in --help, defaults parse, bad values fail at once with one line naming the flag."""
import ast
import dataclasses
import os
import subprocess
import sys

import pytest
import tyro
from conftest import BAD_FLAGS, SCRIPTS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_defaults_parse_and_validate(mod):
    args = tyro.cli(mod.Args, args=[])
    mod.validate(args)


@pytest.mark.parametrize("case", [(s, i) for s in SCRIPTS for i in range(len(BAD_FLAGS[s]))],
                         ids=lambda c: f"{c[0]}-{BAD_FLAGS[c[0]][c[1]][0][0]}")
def test_bad_flags_are_refused_with_the_flag_named(case):
    script, i = case
    mod = __import__(script)
    argv, needle = BAD_FLAGS[script][i]
    args = tyro.cli(mod.Args, args=argv)
    with pytest.raises(mod.ArgError) as err:
        mod.validate(args)
    assert needle in str(err.value)
    assert "\n" not in str(err.value)


def field_docs(script):
    """Docstrings under each Args field, read from the source (what tyro turns into --help)."""
    tree = ast.parse(open(os.path.join(ROOT, f"{script}.py")).read())
    args_cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Args")
    docs = {}
    for a, b in zip(args_cls.body, args_cls.body[1:]):
        if isinstance(a, ast.AnnAssign) and isinstance(b, ast.Expr) and isinstance(b.value, ast.Constant):
            docs[a.target.id] = b.value.value
    return docs


@pytest.mark.parametrize("script", list(SCRIPTS))
def test_help_documents_every_flag(script):
    out = subprocess.run([sys.executable, f"{script}.py", "--help"], cwd=ROOT, capture_output=True, text=True,
                         env=dict(os.environ, COLUMNS="400"), timeout=120)
    assert out.returncode == 0, out.stderr
    help_text = " ".join(out.stdout.split())
    docs = field_docs(script)
    for field in dataclasses.fields(__import__(script).Args):
        flag = "--" + field.name.replace("_", "-")
        assert flag in help_text, f"{flag} missing from --help"
        assert docs.get(field.name, "").strip(), f"{flag} has no docstring"
        assert " ".join(docs[field.name].split()[:4]) in help_text, f"{flag}: its docstring is not in --help"


@pytest.mark.parametrize("script", list(SCRIPTS))
def test_bad_flag_exits_nonzero_with_one_line_and_no_run_dir(script, tmp_path):
    argv, needle = BAD_FLAGS[script][0]
    out = subprocess.run([sys.executable, os.path.join(ROOT, f"{script}.py"), *argv], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120, env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert out.returncode == 2
    lines = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and needle in lines[0], out.stderr
    assert not (tmp_path / "runs").exists(), "a refused run must not create anything"


@pytest.mark.parametrize("script", list(SCRIPTS))
def test_new_user_mistakes_end_in_one_line(script, tmp_path):
    """A negative seed, --track without a W&B login (HOME without credentials), and for the SAC scripts an Atari id: each
    ends with exit status 2 and one `error:` line naming the problem and what to do, before anything is created."""
    cases = [(["--seed", "-1"], "--seed"), (["--track"], "WANDB_MODE=offline")]
    if SCRIPTS[script]["family"] == "mujoco":
        cases.append((["--env-id", "ALE/Pong-v5"], "Atari"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(JAX_PLATFORMS="cpu", HOME=str(tmp_path))
    for argv, needle in cases:
        out = subprocess.run([sys.executable, os.path.join(ROOT, f"{script}.py"), *argv], cwd=tmp_path,
                             capture_output=True, text=True, timeout=120, env=env)
        lines = [line for line in out.stderr.splitlines() if line.startswith("error:")]
        assert out.returncode == 2 and len(lines) == 1 and needle in lines[0], (argv, out.returncode, out.stderr[-2000:])
        assert "Traceback" not in out.stderr, out.stderr[-2000:]
        assert sorted(os.listdir(tmp_path)) == [], f"{argv}: a refused run created {os.listdir(tmp_path)}"
