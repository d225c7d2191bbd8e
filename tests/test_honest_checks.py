"""What a write reports about its own verification: every check passed, failed or skipped
with its reason, counts of what was checked, and "verified" only when every check that
applies ran and passed."""

from __future__ import annotations

from conftest import FIXTURES, run_cli

MIXED = FIXTURES / "k3_functional_mixed.keras"
WEIGHTS_ONLY = FIXTURES / "k2_functional_mixed_weights_only.h5"
FULL = FIXTURES / "k2_functional_mixed.h5"


def _by_name(checks):
    out = {}
    for c in checks:
        out.setdefault(c["check"], []).append(c)
    return out


def test_every_check_has_a_status_and_counts_what_it_checked(tmp_path):
    run = run_cli("init", MIXED, "-o", tmp_path / "o.keras", "--init",
                  "recurrent_kernel=orthogonal", "--seed", "1", "--json")  # fmt: skip
    doc = run.json()
    assert doc["verified"] is True
    checks = _by_name(doc["checks"])
    for c in doc["checks"]:
        assert set(c) == {"where", "check", "status", "ok", "detail", "checked", "applies"}
        assert c["status"] == "passed" and c["ok"] is True
    # Six recurrent kernels: 4 LSTM, 3 GRU and 1 SimpleRNN gate blocks in each direction.
    assert sum(c["checked"] for c in checks["orthogonal blocks"]) == 2 * (4 + 3 + 1)
    assert checks["written weights read back"][0]["checked"] == 6
    assert "everything else unchanged" in checks


def test_table_counts_blocks_not_weights(tmp_path):
    run = run_cli("init", MIXED, "-o", tmp_path / "o.keras", "--init",
                  "recurrent_kernel=orthogonal", "--seed", "1")  # fmt: skip
    row = next(line for line in run.stdout.splitlines() if line.startswith("orthogonal blocks"))
    assert "16/16 passed" in row


def test_a_check_that_cannot_apply_is_skipped_not_passed(tmp_path):
    out = tmp_path / "o.h5"
    doc = run_cli("transplant", WEIGHTS_ONLY, FULL, "-o", out, "--json").json()
    forward = [c for c in doc["checks"] if c["check"] == "forward pass"]
    assert forward and all(c["status"] == "skipped" and not c["ok"] for c in forward)
    assert all(not c["applies"] and "weights-only" in c["detail"] for c in forward)
    # What moved is still proved bit for bit, so the result is verified, and says how.
    assert doc["verified"] is True
    assert all(c["status"] == "passed" for c in doc["checks"] if c["check"] == "equals donor")
    text = run_cli("transplant", WEIGHTS_ONLY, FULL, "-o", out, "--force").stdout
    row = next(line for line in text.splitlines() if line.startswith("forward pass"))
    assert "skipped" in row and "passed" not in row and "ok" not in row.split()
