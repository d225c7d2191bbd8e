"""Oracle: Keras loads what `bilstm init` / `transplant` wrote and sees exactly the new weights,
with every other layer as it was, and the transplanted layers compute what the donor computed."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import FIXTURES, fixture_ids, manifest, run_cli

from oracle.keras_truth import (
    bidirectional_truth,
    load_weights_into,
    run_bidirectional,
    to_numpy,
)

SUPPORTED = ("LSTM", "GRU", "SimpleRNN")
WRITABLE = [
    e
    for e in manifest()
    if e["bidirectional"]
    and all(b["cell"] in SUPPORTED for b in e["bidirectional"])
    and (e.get("loader") or e.get("weights_of"))
]


def _suffix(entry) -> str:
    name = entry["file"]
    return (
        ".keras"
        if name.endswith(".keras")
        else (".weights.h5" if name.endswith(".weights.h5") else ".h5")
    )


def _load(path, entry):
    if entry.get("loader"):
        return load_weights_into(path, entry["loader"], safe_mode=entry["safe_mode"])
    # Weights-only: load into the model it was saved from, with that model's loader.
    parent = next(e for e in manifest() if e["file"] == entry["weights_of"])
    return load_weights_into(
        path,
        parent["loader"],
        architecture=FIXTURES / entry["weights_of"],
        safe_mode=parent["safe_mode"],
    )


def _other_weights(model) -> list[np.ndarray]:
    """Every weight of the model that does not belong to a Bidirectional layer, in order."""
    from oracle.keras_truth import iter_bidirectionals

    taken = {id(v) for _, layer in iter_bidirectionals(model) for v in layer.weights}
    return [to_numpy(v) for v in model.weights if id(v) not in taken]


@pytest.mark.parametrize("entry", WRITABLE, ids=fixture_ids(WRITABLE))
def test_keras_loads_the_initialized_file(entry, tmp_path):
    src = FIXTURES / entry["file"]
    out = tmp_path / f"out{_suffix(entry)}"
    run = run_cli(
        "init", src, "-o", out, "--init", "uniform:minval=-0.3,maxval=0.3", "--seed", "9", "--json"
    )
    assert run.exit_code == 0, run.stderr
    intended = {}
    for layer in run_cli("inspect", out, "--json").json()["layers"]:
        for w in layer["weights"]:
            intended[(layer["name"], w["direction"], w["role"])] = w
    before_model, after_model = _load(src, entry), _load(out, entry)
    # Keras sees the new weights, bit for bit as the tool reports them.
    after_layers = _truth_of(after_model)
    assert len(after_layers) == len(entry["bidirectional"])
    assert after_layers
    for _name, weights in after_layers:
        assert weights
        for values in weights.values():
            assert np.abs(values).max() <= 0.3
    # Everything else is exactly as it was.
    a, b = _other_weights(before_model), _other_weights(after_model)
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert np.array_equal(x, y)


def _truth_of(model):
    from oracle.keras_truth import cell_weights, iter_bidirectionals

    return [
        (
            name,
            {
                (d, r): v
                for d, layer_dir in (
                    ("forward", layer.forward_layer),
                    ("backward", layer.backward_layer),
                )
                for r, v in cell_weights(layer_dir).items()
            },
        )
        for name, layer in iter_bidirectionals(model)
    ]


def test_init_values_are_exactly_what_keras_reads(tmp_path):
    src = FIXTURES / "k3_functional_mixed.keras"
    out = tmp_path / "o.keras"
    assert (
        run_cli(
            "init",
            src,
            "-o",
            out,
            "--init",
            "orthogonal",
            "--init",
            "kernel=he_normal",
            "--init",
            "bias=zeros",
            "--seed",
            "2",
        ).exit_code
        == 0
    )
    import io
    import zipfile

    import h5py

    doc = run_cli("inspect", out, "--json").json()
    with zipfile.ZipFile(out) as z, h5py.File(io.BytesIO(z.read("model.weights.h5")), "r") as f:
        stored = {
            (x["name"], w["direction"], w["role"]): f[w["dataset"]][()]
            for x in doc["layers"]
            for w in x["weights"]
        }
    for layer in bidirectional_truth(out):
        for (direction, role), values in layer["weights"].items():
            assert np.array_equal(values, stored[(layer["name"], direction, role)])


@pytest.mark.parametrize(
    "donor, target, args",
    [
        ("k2_seq_lstm.h5", "k3_seq_input_lstm_concat.keras", []),  # Keras 2 -> Keras 3
        ("k3_trained_adam.keras", "k2_trained_adam.h5", []),  # Keras 3 -> Keras 2
        ("k3_functional_mixed.keras", "k3_functional_mixed.keras", []),
        ("k3_legacy_functional_gru.h5", "k2_functional_mixed.h5", ["--map", "bi_gru_ra=bi_gru_ra"]),
    ],
)
def test_transplanted_layers_compute_what_the_donor_computed(donor, target, args, tmp_path):
    target_path = FIXTURES / target
    suffix = ".keras" if target.endswith(".keras") else ".h5"
    out = tmp_path / f"out{suffix}"
    if donor == target:
        # Same architecture, different values: re-draw a donor first.
        donor_path = tmp_path / f"donor{suffix}"
        assert (
            run_cli(
                "init", target_path, "-o", donor_path, "--seed", "3", "--init", "normal:stddev=0.4"
            ).exit_code
            == 0
        )
    else:
        donor_path = FIXTURES / donor
    run = run_cli("transplant", donor_path, target_path, "-o", out, "--json", *args)
    assert run.exit_code == 0, run.stderr
    pairs = {
        p["target"].rsplit("/", 1)[0]: p["donor"].rsplit("/", 1)[0] for p in run.json()["pairs"]
    }
    donor_truth = {x["name"]: x for x in bidirectional_truth(donor_path)}
    for layer in bidirectional_truth(out):
        if layer["name"] not in pairs:
            continue
        source = donor_truth[pairs[layer["name"]]]
        for key, values in layer["weights"].items():
            assert np.array_equal(values, source["weights"][key]), key
        dim = layer["weights"][("forward", "kernel")].shape[0]
        x = np.random.default_rng(0).standard_normal((2, 5, dim)).astype("float32")
        y_out = run_bidirectional(out, layer["name"], x)
        y_donor = run_bidirectional(donor_path, source["name"], x)
        if source["merge_mode"] == layer["merge_mode"]:
            for a, b in zip(
                np.atleast_1d(y_out) if not isinstance(y_out, list) else y_out,
                np.atleast_1d(y_donor) if not isinstance(y_donor, list) else y_donor,
            ):
                np.testing.assert_allclose(a, b, atol=1e-5)


def test_cudnn_donor_matches_tf_keras_conversion(tmp_path):
    out = tmp_path / "o.keras"
    assert (
        run_cli(
            "transplant",
            FIXTURES / "cudnn_seq_lstm.h5",
            FIXTURES / "k3_seq_input_lstm_concat.keras",
            "-o",
            out,
            "--by",
            "order",
        ).exit_code
        == 0
    )
    from oracle.keras_truth import cudnn_converted_truth

    truth = cudnn_converted_truth(FIXTURES / "cudnn_seq_lstm.h5")
    layer = bidirectional_truth(out)[0]
    for (direction, role), values in layer["weights"].items():
        assert np.array_equal(values, truth[("bidirectional_1", direction, role)])


@pytest.mark.parametrize(
    "fixture, status, expect, verified",
    [
        ("k3_functional_mixed.keras", "passed", "Keras sees the written values", True),
        ("k2_seq_lstm.h5", "passed", "tf-keras sees the written values", True),
        # Asked for and could not run: written, but not called verified.
        ("k3_lambda.keras", "skipped", "Keras cannot load the input either", False),
        # Cannot apply to a file without a model: said so, and the rest verifies it.
        ("k3_functional_mixed.weights.h5", "skipped", "a weights-only file", True),
    ],
)
def test_verify_keras(fixture, status, expect, verified, tmp_path):
    src = FIXTURES / fixture
    out = tmp_path / ("o.keras" if fixture.endswith(".keras") else "o.h5")
    run = run_cli("init", src, "-o", out, "--seed", "1", "--verify", "keras", "--json")
    assert run.exit_code == 0, run.stderr
    doc = run.json()
    checks = [c for c in doc["checks"] if c["check"].startswith("--verify keras")]
    assert checks and all(c["status"] == status for c in checks)
    assert any(expect in c["detail"] for c in checks)
    assert doc["verified"] is verified and out.exists()


def test_plain_lstm_donor_matches_keras(tmp_path):
    """The forward direction filled from a plain Keras 2 LSTM computes what that LSTM did."""
    from oracle.keras_truth import load

    out = tmp_path / "o.keras"
    donor = FIXTURES / "k2_plain_lstm_lm.h5"
    run = run_cli(
        "transplant",
        donor,
        FIXTURES / "k3_seq_input_lstm_concat.keras",
        "-o",
        out,
        "--map",
        "lm=bidirectional/forward",
    )
    assert run.exit_code == 0, run.stderr
    lm = next(layer for layer in load(donor).layers if layer.name == "lm")
    target = bidirectional_truth(out)[0]
    for role, values in zip(("kernel", "recurrent_kernel", "bias"), lm.get_weights()):
        assert np.array_equal(target["weights"][("forward", role)], values)
    x = np.random.default_rng(0).standard_normal((2, 5, 4)).astype("float32")
    expected = to_numpy(lm(x))
    from oracle.keras_truth import find_bidirectional

    bi = find_bidirectional(load(out), target["name"])
    got = to_numpy(bi.forward_layer(x))
    if got.ndim == 2:  # the target returns only the last step, the donor every step
        expected = expected[:, -1, :]
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_transplant_verify_keras(tmp_path):
    """Keras loads the staged archive (its CRC brought up to date first) and sees the donor's
    values."""
    out = tmp_path / "o.keras"
    run = run_cli(
        "transplant",
        FIXTURES / "k2_seq_lstm.h5",
        FIXTURES / "k3_seq_input_lstm_concat.keras",
        "-o",
        out,
        "--verify",
        "keras",
        "--json",
    )
    assert run.exit_code == 0, run.stderr
    checks = [c for c in run.json()["checks"] if c["check"].startswith("--verify keras")]
    assert checks and all(c["ok"] for c in checks)
    assert any("Keras sees the written values" in c["detail"] for c in checks)
