"""The API guide (docs/api.md) and the examples in the public docstrings run as written."""

from __future__ import annotations

import doctest
import importlib

import pytest
from conftest import FIXTURES, ROOT

import bilstm_cli as bl

OPTIONS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


@pytest.fixture
def in_a_checkout(tmp_path, monkeypatch):
    (tmp_path / "fixtures").symlink_to(FIXTURES)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_api_guide_runs(in_a_checkout):
    failed, attempted = doctest.testfile(
        str(ROOT / "docs" / "api.md"), module_relative=False, optionflags=OPTIONS
    )
    assert attempted >= 20 and failed == 0


@pytest.mark.parametrize("name", [n for n in bl.__all__ if n != "__version__"])
def test_public_docstring_examples_run(in_a_checkout, name):
    obj = getattr(bl, name)
    module = importlib.import_module(obj.__module__)
    finder = doctest.DocTestFinder(recurse=False)
    runner = doctest.DocTestRunner(optionflags=OPTIONS)
    for test in finder.find(obj, name, module=module, globs={"bl": bl}):
        runner.run(test)
    assert runner.failures == 0


def test_readme_library_example_runs(in_a_checkout):
    import re

    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    assert blocks, "README shows the library"
    for block in blocks:
        namespace: dict[str, object] = {}
        exec(compile(block, "README.md", "exec"), namespace)
    assert namespace["result"].verified and namespace["delta"].identical is False
