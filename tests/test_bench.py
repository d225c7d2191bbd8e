"""The benchmark is self-contained: its Keras baseline lives in bench/ and offers every job
bench/run.py asks of it, and the runner names no file outside the repository. Cheap: no
TensorFlow in this process, nothing timed."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys

from conftest import ROOT

BENCH = ROOT / "bench"
KERAS_WAY = BENCH / "keras_way.py"
RUN = BENCH / "run.py"
SUBCOMMANDS = {"inspect", "init", "recipe", "transplant", "diff"}
HEAVY = ("tensorflow", "keras", "tf_keras")


def declared_subcommands(tree: ast.Module) -> set[str]:
    """The names passed to ``add_parser("name", ...)`` anywhere in the module."""
    return {
        node.args[0].value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "add_parser"
        and node.args
        and isinstance(node.args[0], ast.Constant)
    }


def imports_at_module_level(tree: ast.Module) -> set[str]:
    """Top-level package names imported when the module loads (not inside functions)."""
    names: set[str] = set()
    pending = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
        pending.extend(ast.iter_child_nodes(node))
    return names


def load_runner():
    """bench/run.py as a module (it imports bench/measure.py, standard library only)."""
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location("bench_run_under_test", RUN)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCH))
    return module


def test_keras_way_declares_every_job():
    tree = ast.parse(KERAS_WAY.read_text(), filename=str(KERAS_WAY))
    assert SUBCOMMANDS <= declared_subcommands(tree)


def test_keras_way_help_lists_the_jobs_without_tensorflow():
    tree = ast.parse(KERAS_WAY.read_text(), filename=str(KERAS_WAY))
    if imports_at_module_level(tree) & set(HEAVY):
        return  # --help would import TensorFlow: the parse above is the check
    # Make the heavy imports fail outright, so --help passing proves it never needs them.
    code = (
        "import runpy, sys\n"
        f"for name in {HEAVY!r}: sys.modules[name] = None\n"
        f"sys.argv = [{str(KERAS_WAY)!r}, '--help']\n"
        f"runpy.run_path({str(KERAS_WAY)!r}, run_name='__main__')\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert run.returncode == 0, run.stderr
    for name in SUBCOMMANDS:
        assert name in run.stdout


def test_runner_uses_only_subcommands_the_baseline_has():
    runner = load_runner()
    used = {job.keras[0] for job in runner.JOBS}
    tree = ast.parse(KERAS_WAY.read_text(), filename=str(KERAS_WAY))
    assert used <= declared_subcommands(tree)
    names = {job.name for job in runner.JOBS}
    assert {"init recipe .keras", "diff .keras"} <= names


def test_runner_names_nothing_outside_the_repository():
    source = RUN.read_text()
    for outside in ("shared", "BILSTM_KERAS_WAY", "ROOT.parent", "../", "..\\"):
        assert outside not in source, outside
    runner = load_runner()
    for path in (runner.KERAS_WAY, runner.MAKE_MODEL, runner.DEFAULT_OUT):
        assert path.resolve().is_relative_to(ROOT.resolve()), path
    assert runner.KERAS_WAY.is_file()
