"""Nothing about the installation is silent: setup.py says in one line why it
builds without the C++ extension, backend='auto' warns once when it falls back
to the reference, and ``python -m fusedloss`` reports what runs and checks it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import ONLY_THE_COPY, package_without_extension, run_python

import fusedloss
from fusedloss import info

ROOT = Path(fusedloss.__file__).resolve().parents[1]
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


_FALLBACK = ONLY_THE_COPY + (
    "import warnings, torch, fusedloss\n"
    "x, t = torch.randn(2, 3, 8), torch.rand(2, 3, 8)\n"
    "with warnings.catch_warnings(record=True) as caught:\n"
    "    warnings.simplefilter('always')\n"
    "    first = fusedloss.dice_loss(x, t)\n"
    "    second = fusedloss.iou_loss(x, t)\n"
    "torch.testing.assert_close(first, fusedloss.dice_loss(x, t, backend='reference'))\n"
    "messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]\n"
    "print(len(messages))\n"
    "print('\\n'.join(messages))\n"
)


@pytest.mark.parametrize(
    "cause, env, expected",
    [("jit off", dict(FUSEDLOSS_JIT="0"), "FUSEDLOSS_JIT=0 turns the build on first use off"),
     ("no compiler", dict(CXX="/nonexistent/c++"), "no C++ compiler ('/nonexistent/c++' is not on PATH")],
)
def test_auto_warns_once_when_it_falls_back_to_the_reference(tmp_path, cause, env, expected):
    root = package_without_extension(tmp_path)
    result = run_python(_FALLBACK, root, PYTHONPATH=str(root), **env)
    assert result.returncode == 0, result.stderr[-3000:]
    count, *messages = result.stdout.strip().splitlines()
    assert count == "1", result.stdout  # once, not at every call
    text = "\n".join(messages)
    assert "backend='auto' uses the reference" in text
    assert "fusedloss._C is not built" in text and expected in text
    assert "pip install --no-build-isolation" in text and "FUSEDLOSS_ALLOW_REFERENCE=1 silences this" in text


def test_the_fallback_warning_can_be_silenced(tmp_path):
    root = package_without_extension(tmp_path)
    result = run_python(_FALLBACK, root, PYTHONPATH=str(root), FUSEDLOSS_JIT="0", FUSEDLOSS_ALLOW_REFERENCE="1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[0] == "0", result.stdout


def test_a_compiled_first_call_neither_builds_nor_warns(tmp_path):
    # torch.compile(fullgraph=True) cannot trace a build or a warning: without the
    # extension, a compiled first call runs the reference and says nothing.
    root = package_without_extension(tmp_path)
    code = ONLY_THE_COPY + (
        "import warnings, torch, fusedloss\n"
        "x, t = torch.randn(2, 3, 8), torch.rand(2, 3, 8)\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    got = torch.compile(lambda a, b: fusedloss.dice_loss(a, b), fullgraph=True)(x, t)\n"
        "torch.testing.assert_close(got, fusedloss.dice_loss(x, t, backend='reference'))\n"
        "print(sum('fusedloss' in str(w.message) for w in caught))\n"
    )
    result = run_python(code, root, PYTHONPATH=str(root), FUSEDLOSS_JIT="0")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "0", result.stdout


def test_no_warning_where_a_fused_backend_runs():
    import warnings

    x, t = torch.randn(2, 3, 8), torch.rand(2, 3, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning here fails the test
        fusedloss.dice_loss(x.to(DEVICE), t.to(DEVICE))


@pytest.mark.parametrize(
    "cause, prelude, env, expected",
    [("no torch", "sys.modules['torch'] = None\n", {}, "torch is not importable at build time"),
     ("no compiler", "", dict(CXX="/nonexistent/c++"), "no C++ compiler ('/nonexistent/c++' is not on PATH")],
)
def test_setup_says_why_it_builds_without_the_extension(cause, prelude, env, expected):
    code = (
        "import runpy, sys\n" + prelude + "sys.argv = ['setup.py', '--name']\n"
        "runpy.run_path('setup.py', run_name='__main__')\n"
    )
    result = run_python(code, ROOT, **{"FUSEDLOSS_BUILD_CPU": "", **env})
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "fusedloss"
    lines = [line for line in result.stderr.splitlines() if line.startswith("fusedloss:")]
    assert len(lines) == 1 and "building without the C++ extension" in lines[0] and expected in lines[0], lines


def test_info_reports_versions_and_every_backend():
    result = run_python("import runpy; runpy.run_module('fusedloss', run_name='__main__')", ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert f"torch {torch.__version__}" in out and "fusedloss " in out and "C++ extension fusedloss._C:" in out
    for name in fusedloss.backends():
        assert f"  {name}: " in out
    assert "  reference: available on" in out


def test_info_check_passes_here():
    # Every backend the suite runs agrees with the reference on tiny inputs.
    assert info.check() == []


def test_info_check_fails_on_a_wrong_backend(monkeypatch, capsys):
    """A fused backend that is off by a factor is reported, and the exit status is 1."""
    from fusedloss import functional

    real = functional.fused_ops

    class Doubled:
        def __init__(self, ops):
            self.ops = ops

        def __getattr__(self, name):
            op = getattr(self.ops, name)
            if name != "binary_loss":
                return op
            return lambda *args, **kwargs: tuple(2 * out for out in op(*args, **kwargs))

    monkeypatch.setattr(functional, "fused_ops", lambda backend: Doubled(real(backend)))
    # One fused backend is enough to see the failure reported (the interpreter's are slow).
    fused = [name for name in fusedloss.available_backends(DEVICE) if name != "reference"][:1]
    monkeypatch.setattr(fusedloss, "available_backends", lambda device, mode="binary": fused)
    assert info.main(["--check"]) == 1
    out = capsys.readouterr().out
    assert "FAIL dice mode=binary on" in out and "FAILED" in out
