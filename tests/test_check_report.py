"""``check --report OUT.html``: one self-contained page, rendered in real headless Chromium
without console errors or network requests; a screenshot is kept as a test artifact."""

from __future__ import annotations

import json
import re
import shutil
import sys

import h5py
import pytest
from browser import chromium, file_url, visit
from conftest import FIXTURES, ROOT, run_cli

TRAINED = FIXTURES / "check" / "trained_lstm_gru.h5"
FRESH = FIXTURES / "check" / "fresh_lstm_gru.keras"
ARTIFACTS = ROOT / "build" / "test-artifacts"
INSTALL = "pip install 'bilstm-cli[report]'"


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    """The report of a trained model with a planted NaN and of a fresh model."""
    tmp = tmp_path_factory.mktemp("report")
    broken = tmp / "nan.h5"
    shutil.copyfile(TRAINED, broken)
    with h5py.File(broken, "r+") as f:
        d = f["model_weights/bi_gru/bi_gru/backward_gru/gru_cell/kernel"]
        a = d[()]
        a[1, 10] = float("nan")  # gate r: columns 8..15
        d[...] = a
    out = tmp / "report.html"
    run = run_cli("check", broken, FRESH, "--report", out, "--json")
    assert run.exit_code == 1, run.stderr
    assert run.stderr.strip() == f"wrote {out}"
    assert [json.loads(line)["ok"] for line in run.stdout.splitlines()] == [False, False]
    return out


def test_page_is_self_contained(page):
    html = page.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>")
    assert "<script" not in html and "<link" not in html and "<img" not in html
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", html)
    assert "@import" not in html and "url(http" not in html
    # Two LSTM/GRU layers per file: histograms, spectra and time scales for each.
    assert html.count("<svg") == 2 * 2 * 3
    assert html.count("<figure>") == html.count("<svg")
    # The findings table names the planted faults.
    assert "nonfinite" in html and "bi_gru/backward/kernel[r]" in html
    assert html.count("<td><code>init.fresh</code></td>") == 4
    assert "FAILED" in html


def test_page_renders_in_chromium(page, tmp_path):
    if chromium() is None:
        pytest.skip("chromium is not installed (make test installs it with apt-get where it can)")
    seen = visit(file_url(page))
    assert seen.errors == []
    assert seen.requests == [file_url(page)]  # nothing else fetched
    assert len(seen.svg_boxes) == 12
    assert all(box["w"] > 100 and box["h"] > 100 for box in seen.svg_boxes)
    assert "bi_gru/backward/kernel[r]" in seen.dom
    assert seen.screenshot.startswith(b"\x89PNG") and len(seen.screenshot) > 50_000
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for folder in (tmp_path, ARTIFACTS):
        (folder / "check-report.png").write_bytes(seen.screenshot)


def test_the_browser_check_can_fail(tmp_path):
    """The same visit does catch console errors, exceptions and failed or outside loads."""
    if chromium() is None:
        pytest.skip("chromium is not installed (make test installs it with apt-get where it can)")
    bad = tmp_path / "bad.html"
    bad.write_text(
        '<!DOCTYPE html><html><body><img src="missing.png">'
        '<img src="https://example.invalid/x.png">'
        '<script>console.error("broken"); notDefined();</script></body></html>'
    )
    seen = visit(file_url(bad))
    text = " ".join(seen.errors)
    assert "broken" in text and "Uncaught" in text and "ERR_FILE_NOT_FOUND" in text
    assert "https://example.invalid/x.png" in seen.requests


def test_missing_matplotlib_says_how_to_install(tmp_path, monkeypatch):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib → ImportError
    out = tmp_path / "r.html"
    run = run_cli("check", TRAINED, "--report", out)
    assert run.exit_code == 2 and run.stdout == ""
    assert run.stderr.startswith("Error: ") and INSTALL in run.stderr
    assert len(run.stderr.splitlines()) == 1
    assert not out.exists()
    # Without --report, matplotlib is not needed at all.
    assert run_cli("check", TRAINED).exit_code == 0


def test_unwritable_report_is_exit_4(tmp_path):
    out = tmp_path / "no" / "such" / "dir" / "r.html"
    run = run_cli("check", TRAINED, "--report", out)
    assert run.exit_code == 4 and "cannot write the report" in run.stderr
    assert run.stdout == "" and len(run.stderr.splitlines()) == 1
    assert not out.exists()
