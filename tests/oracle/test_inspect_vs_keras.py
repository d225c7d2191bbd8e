"""Oracle: what `bilstm inspect --json` reports equals what Keras' own layer objects hold."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import FIXTURES, fixture_ids, manifest, run_cli

from oracle.keras_truth import bidirectional_truth

LOADABLE = [e for e in manifest() if e.get("loader")]


def _stats(values: np.ndarray) -> dict[str, float]:
    v = values.astype(np.float64)
    return {
        "mean": v.mean(),
        "std": v.std(),
        "min": v.min(),
        "max": v.max(),
        "l2": float(np.sqrt(np.dot(v.ravel(), v.ravel()))),
    }


@pytest.mark.parametrize("entry", LOADABLE, ids=fixture_ids(LOADABLE))
def test_inspect_matches_keras(entry):
    path = FIXTURES / entry["file"]
    doc = run_cli("inspect", path, "--json").json()
    truth = bidirectional_truth(str(path))
    assert len(doc["layers"]) == len(truth)
    for layer, want in zip(doc["layers"], truth):
        if doc["config_known"]:
            assert layer["name"] == want["name"]
            assert layer["merge_mode"] == want["merge_mode"]
        assert layer["cell"] == want["cell"]
        assert layer["units"] == want["units"]
        if want["cell"] == "GRU":
            assert layer["settings"]["forward"]["reset_after"] == want["reset_after"]
        if doc["config_known"]:
            for d in ("forward", "backward"):
                assert layer["settings"][d]["go_backwards"] == want["go_backwards"][d]
        got = {(w["direction"], w["role"]): w for w in layer["weights"]}
        assert set(got) == set(want["weights"])
        for key, values in want["weights"].items():
            w = got[key]
            assert tuple(w["shape"]) == values.shape, key
            expected = _stats(values)
            for stat, value in expected.items():
                assert w["stats"][stat] == pytest.approx(value, rel=1e-9, abs=1e-12), (key, stat)
