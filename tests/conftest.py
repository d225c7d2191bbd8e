"""Shared test helpers: the committed fixtures, their manifest, and a CLI runner."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from bilstm_cli.cli import cli

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"


def manifest() -> list[dict[str, Any]]:
    doc = json.loads((FIXTURES / "manifest.json").read_text())
    return doc["fixtures"] if isinstance(doc, dict) else doc


def fixture_entries(**where: Any) -> list[dict[str, Any]]:
    """Manifest entries whose fields equal every given value (``loader="keras3"``, …)."""
    return [e for e in manifest() if all(e.get(k) == v for k, v in where.items())]


def fixture_ids(entries: list[dict[str, Any]]) -> list[str]:
    return [e["file"] for e in entries]


@dataclass
class Run:
    exit_code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


def run_cli(*args: str) -> Run:
    """Run ``bilstm ARGS`` in-process, the way a shell would see it."""
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    return Run(result.exit_code, result.stdout, result.stderr)


@pytest.fixture
def bilstm():
    return run_cli
