"""ConvLSTM1D/2D/3D: shapes and settings as read, strategies on N-d kernels, the NumPy
reference forward (against direct loops and against the LSTM reference), and the commands on
the committed ConvLSTM fixtures."""

from __future__ import annotations

import itertools
import json
import math
import shutil
import zipfile

import numpy as np
import pytest
from conftest import FIXTURES, run_cli

import bilstm_cli as bl
from bilstm_cli import cells, strategies
from bilstm_cli.cells import conv_forward
from bilstm_cli.cells.blocks import gate_blocks
from bilstm_cli.cells.forward import CellConfig, rnn_forward
from bilstm_cli.errors import InputError
from bilstm_cli.model import CellSettings, ConvSettings

CONV = FIXTURES / "convlstm"
ONE_D = CONV / "bi_convlstm1d.keras"
TWO_D = CONV / "bi_convlstm2d.keras"
THREE_D = CONV / "bi_convlstm3d.keras"
DONOR_2D = CONV / "bi_convlstm2d_donor.keras"


# --- registry and shapes ---------------------------------------------------------------------


def test_conv_cells_are_registered_with_lstm_gates() -> None:
    for rank in (1, 2, 3):
        cell = cells.get(f"ConvLSTM{rank}D")
        assert cell.gates == ("i", "f", "c", "o") and cell.spatial_dims == rank
        assert cell.tracked_group == "conv_lstm_cell" and cell.kernel_rank == rank + 2
        assert cells.conv_class_for_rank(rank) == cell.name
    assert cells.conv_class_for_rank(0) is None and cells.conv_class_for_rank(4) is None


def test_conv_shapes() -> None:
    conv = ConvSettings((3, 2), (1, 1), "same", (1, 1), "channels_last")
    s = CellSettings("ConvLSTM2D", 5, conv=conv)
    assert cells.expected_shape(s, "kernel", 7) == (3, 2, 7, 20)
    assert cells.expected_shape(s, "recurrent_kernel", 7) == (3, 2, 5, 20)
    assert cells.expected_shape(s, "bias", 7) == (20,)
    assert cells.kernel_rank(s) == 4
    with pytest.raises(InputError, match=r"ConvLSTM3D needs a kernel_size of 3 dimension"):
        cells.get("ConvLSTM3D").shape("kernel", 2, 1, kernel_size=(3, 3))


def test_settings_from_config() -> None:
    conf = {"filters": 4, "kernel_size": 3, "strides": [2], "padding": "SAME"}
    conv = cells.conv_settings("ConvLSTM1D", conf, "here")
    assert conv == ConvSettings((3,), (2,), "same", (1,), "channels_last")
    assert cells.conv_settings("LSTM", conf, "here") is None
    assert cells.conv_settings("Dense", conf, "here") is None
    for bad in ({"kernel_size": [3, "x"]}, {"kernel_size": [3]}, {"kernel_size": [3, 0]}, {}):
        with pytest.raises(InputError, match="here: "):
            cells.conv_settings("ConvLSTM2D", bad, "here")


def test_existing_cells_keep_their_settings_document() -> None:
    keys = ["cell", "units", "activation", "recurrent_activation", "use_bias"]
    keys += ["reset_after", "go_backwards"]
    assert list(CellSettings("LSTM", 3).to_dict()) == keys
    conv = CellSettings("ConvLSTM1D", 3, conv=ConvSettings((2,)))
    assert list(conv.to_dict()) == [
        *keys,
        "kernel_size",
        "strides",
        "padding",
        "dilation_rate",
        "data_format",
    ]


# --- the convolution and the reference forward -----------------------------------------------


def _direct_conv(x, w, strides, padding, dilation):
    """The definition, one output element at a time."""
    n = w.ndim - 2
    spatial = x.shape[1:-1]
    window = w.shape[:n]
    outs, before = [], []
    for size, k, s, d in zip(spatial, window, strides, dilation):
        span = (k - 1) * d + 1
        if padding == "same":
            out = math.ceil(size / s)
            before.append(max((out - 1) * s + span - size, 0) // 2)
        else:
            out = (size - span) // s + 1
            before.append(0)
        outs.append(out)
    y = np.zeros((x.shape[0], *outs, w.shape[-1]))
    for pos in itertools.product(*(range(o) for o in outs)):
        for off in itertools.product(*(range(k) for k in window)):
            src = [p * s + o * d - b for p, o, s, d, b in zip(pos, off, strides, dilation, before)]
            if all(0 <= c < size for c, size in zip(src, spatial)):
                y[(slice(None), *pos)] += x[(slice(None), *src)] @ w[off]
    return y


CONV_CASES = [
    ((9,), (3,), (1,), "same", (1,)),
    ((9,), (4,), (2,), "same", (1,)),
    ((10,), (3,), (1,), "valid", (3,)),
    ((7, 6), (3, 2), (2, 1), "valid", (1, 1)),
    ((7, 6), (2, 3), (1, 1), "same", (2, 1)),
    ((5, 6), (3, 3), (3, 2), "same", (1, 1)),
    ((5, 4, 6), (2, 3, 1), (1, 2, 1), "same", (1, 1, 1)),
    ((6, 5, 4), (2, 2, 2), (1, 1, 1), "valid", (2, 1, 2)),
]


@pytest.mark.parametrize("spatial,kernel,strides,padding,dilation", CONV_CASES)
def test_conv_matches_its_definition(spatial, kernel, strides, padding, dilation) -> None:
    rng = np.random.default_rng(len(spatial))
    x = rng.standard_normal((2, *spatial, 3))
    w = rng.standard_normal((*kernel, 3, 5))
    got = conv_forward.conv(x, w, strides, padding, dilation)
    np.testing.assert_allclose(got, _direct_conv(x, w, strides, padding, dilation), atol=1e-12)


def test_conv_refuses_an_input_smaller_than_its_window() -> None:
    with pytest.raises(InputError, match="smaller than the kernel window"):
        conv_forward.conv(np.zeros((1, 2, 1)), np.zeros((3, 1, 1)), (1,), "valid", (1,))


def _conv_cfg(rank: int, units: int, **kw) -> conv_forward.ConvCellConfig:
    ones = (1,) * rank
    base = {"kernel_size": ones, "strides": ones, "padding": "same", "dilation_rate": ones}
    return conv_forward.ConvCellConfig(cell=f"ConvLSTM{rank}D", units=units, **{**base, **kw})


@pytest.mark.parametrize("go_backwards", [False, True])
def test_a_one_by_one_conv_lstm_is_an_lstm_at_every_position(go_backwards) -> None:
    """A 1x1 window makes each position an independent LSTM: the LSTM reference must agree."""
    rng = np.random.default_rng(5)
    units, channels = 3, 2
    x = rng.standard_normal((2, 4, 3, 2, channels))
    k = rng.standard_normal((1, 1, channels, 4 * units)) * 0.5
    rk = rng.standard_normal((1, 1, units, 4 * units)) * 0.5
    b = rng.standard_normal(4 * units) * 0.5
    cfg = _conv_cfg(2, units, go_backwards=go_backwards)
    got = conv_forward.rnn_forward(x, k, rk, b, cfg)
    lstm = CellConfig("LSTM", units, go_backwards=go_backwards)
    for r, c in itertools.product(range(3), range(2)):
        want = rnn_forward(x[:, :, r, c], k[0, 0], rk[0, 0], b, lstm)
        np.testing.assert_allclose(got[:, :, r, c], want, atol=1e-12)
    last = conv_forward.rnn_forward(x, k, rk, b, cfg, return_sequences=False)
    np.testing.assert_array_equal(last, got[:, -1])


def test_the_recurrent_kernel_convolves_the_neighbours() -> None:
    """With a 3-wide recurrent window, a position's state depends on its neighbours' earlier
    outputs: an input at one position reaches the next position one step later."""
    units = 1
    cfg = _conv_cfg(1, units, kernel_size=(3,))
    x = np.zeros((1, 3, 5, 1))
    x[0, 0, 2, 0] = 1.0
    k = np.zeros((3, 1, 4))
    k[1, 0, :] = 2.0  # only the centre tap reads the input
    rk = np.zeros((3, 1, 4))
    rk[0, 0, :] = 2.0  # each position hears its left neighbour
    out = conv_forward.rnn_forward(x, k, rk, np.zeros(4), cfg)
    assert out[0, 0, 2, 0] != 0 and out[0, 0, 3, 0] == 0
    assert out[0, 1, 3, 0] != 0 and out[0, 1, 4, 0] == 0 and out[0, 1, 1, 0] == 0


def test_reference_errors() -> None:
    cfg = _conv_cfg(1, 2, kernel_size=(3,))
    x = np.zeros((1, 2, 5, 1))
    k, rk, b = np.zeros((3, 1, 8)), np.zeros((3, 2, 8)), np.zeros(8)
    with pytest.raises(InputError, match=r"kernel of shape \(2, 1, 8\) does not fit"):
        conv_forward.rnn_forward(x, k[:2], rk, b, cfg)
    with pytest.raises(InputError, match="use_bias=True but no bias"):
        conv_forward.rnn_forward(x, k, rk, None, cfg)
    with pytest.raises(InputError, match="batch, time, 1 spatial axes"):
        conv_forward.rnn_forward(x[0], k, rk, b, cfg)
    with pytest.raises(InputError, match="data_format=channels_first"):
        conv_forward.rnn_forward(x, k, rk, b, _conv_cfg(1, 2, data_format="channels_first"))
    with pytest.raises(InputError, match="both strides and dilation_rate"):
        conv_forward.rnn_forward(x, k, rk, b, _conv_cfg(1, 2, strides=(2,), dilation_rate=(2,)))
    with pytest.raises(InputError, match="opposite go_backwards"):
        conv_forward.bidirectional_forward(x, (k, rk, b), (k, rk, b), cfg, cfg, "concat")
    problem = conv_forward.conv_problem("ConvLSTM1D", ConvSettings((3,)))
    assert problem == "ConvLSTM1D without its strides, padding and dilation (the file holds none)"


# --- strategies on convolution kernels -------------------------------------------------------


def _info(role: str, shape: tuple[int, ...], units: int) -> strategies.WeightInfo:
    return strategies.WeightInfo(cell="ConvLSTM2D", role=role, shape=shape, units=units)


def test_fans_are_keras_conv_fans() -> None:
    # Keras: receptive field (3*2) times the input channels / the output width.
    assert strategies.compute_fans((3, 2, 5, 16)) == (30, 96)
    info = _info("kernel", (3, 2, 5, 16), 4)
    text = strategies.describe(strategies.parse_spec("glorot_uniform"), info)
    assert "fan_in 30, fan_out 96" in text
    per_gate = strategies.describe(strategies.parse_spec("glorot_uniform:per_gate=true"), info)
    assert "fan_in 30, fan_out 24" in per_gate
    values = strategies.generate(strategies.parse_spec("glorot_uniform"), info, 1, np.float64)
    assert np.abs(values).max() <= math.sqrt(6 / (30 + 96))


def test_orthogonal_blocks_are_the_flattened_blocks() -> None:
    info = _info("recurrent_kernel", (3, 3, 4, 16), 4)
    values = strategies.generate(strategies.parse_spec("orthogonal"), info, 3, np.float64)
    flat = values.reshape(-1, 16)
    for _, sl in gate_blocks("ConvLSTM2D", 4):
        block = flat[:, sl]  # (3*3*4, 4): orthonormal columns
        np.testing.assert_allclose(block.T @ block, np.eye(4), atol=1e-12)
    whole = strategies.parse_spec("orthogonal:per_gate=false")
    values = strategies.generate(whole, info, 3, np.float64).reshape(-1, 16)
    np.testing.assert_allclose(values.T @ values, np.eye(16), atol=1e-12)
    facts = strategies.facts(strategies.parse_spec("orthogonal"), info, flat.reshape(info.shape))
    assert all(f.ok for f in facts)


def test_bias_strategies_fit_conv_lstm_and_identity_does_not() -> None:
    bias = _info("bias", (16,), 4)
    ufb = strategies.generate(strategies.parse_spec("unit_forget_bias"), bias, 0)
    np.testing.assert_array_equal(ufb, np.r_[np.zeros(4), np.ones(4), np.zeros(8)])
    chrono = strategies.generate(strategies.parse_spec("chrono:tmax=9"), bias, 0, np.float64)
    np.testing.assert_array_equal(chrono[:4], -chrono[4:8])
    default = strategies.generate(strategies.parse_spec("keras_default"), bias, 0)
    np.testing.assert_array_equal(default, ufb)
    with pytest.raises(bl.UsageError, match=r"identity needs square \(4, 4\) gate blocks"):
        strategies.check_fit(
            strategies.parse_spec("identity"), _info("recurrent_kernel", (3, 3, 4, 16), 4)
        )


# --- the commands on the fixtures ------------------------------------------------------------


@pytest.mark.parametrize(
    "path,cell,units,kernel",
    [
        (ONE_D, "ConvLSTM1D", 3, (3, 2, 12)),
        (TWO_D, "ConvLSTM2D", 2, (3, 2, 2, 8)),
        (CONV / "bi_convlstm2d.h5", "ConvLSTM2D", 2, (3, 2, 2, 8)),
        (CONV / "bi_convlstm2d.weights.h5", "ConvLSTM2D", 2, (3, 2, 2, 8)),
        (THREE_D, "ConvLSTM3D", 2, (2, 2, 2, 1, 8)),
    ],
    ids=lambda v: getattr(v, "name", None),
)
def test_inspect_lists_true_roles(path, cell, units, kernel) -> None:
    run = run_cli("inspect", path, "--json", "--gates")
    assert run.exit_code == 0, run.stderr
    (layer,) = run.json()["layers"]
    assert (layer["cell"], layer["units"], layer["supported"]) == (cell, units, True)
    assert layer["gates"] == ["i", "f", "c", "o"]
    roles = [(w["direction"], w["role"], tuple(w["shape"])) for w in layer["weights"]]
    rk = (*kernel[:-2], units, 4 * units)
    assert roles == [
        (d, r, s)
        for d in ("forward", "backward")
        for r, s in (("kernel", kernel), ("recurrent_kernel", rk), ("bias", (4 * units,)))
    ]
    settings = layer["settings"]["forward"]
    assert settings["kernel_size"] == list(kernel[:-2])
    assert any(n.startswith(f"{cell}: units are filters") for n in layer["notes"])
    assert [g["gate"] for g in layer["weights"][0]["gate_stats"]] == ["i", "f", "c", "o"]


def test_inspect_reports_the_convolution() -> None:
    doc = run_cli("inspect", TWO_D, "--json").json()
    s = doc["layers"][0]["settings"]["backward"]
    assert s["strides"] == [2, 1] and s["padding"] == "valid" and s["dilation_rate"] == [1, 1]
    assert s["go_backwards"] is True and s["data_format"] == "channels_last"
    three = run_cli("inspect", THREE_D, "--json").json()["layers"][0]["settings"]["forward"]
    assert three["dilation_rate"] == [2, 1, 1] and three["padding"] == "same"
    text = run_cli("inspect", TWO_D).stdout
    assert "Bidirectional(ConvLSTM2D, 2 units, merge_mode=sum)" in text
    assert "kernel_size 3x2, padding valid, strides 2x1, dilation_rate 1x1" in text


@pytest.mark.parametrize("path", [ONE_D, TWO_D, THREE_D, CONV / "bi_convlstm2d.h5"])
def test_init_keras_default_verifies(path, tmp_path) -> None:
    out = tmp_path / f"out{''.join(path.suffixes)}"
    run = run_cli("init", path, "-o", out, "--seed", "4", "--json")
    assert run.exit_code == 0, run.stderr
    doc = run.json()
    assert doc["verified"] is True
    facts = {c["check"] for c in doc["checks"] if c["status"] == "passed"}
    assert {"orthogonal matrix", "forget gate 1", "within bounds"} <= facts
    with bl.open_model(str(out)) as model:
        layer = model.layers[0]
        k = layer.weight("forward", "kernel").read()
        fan_in, fan_out = strategies.compute_fans(k.shape)
        assert np.abs(k).max() <= math.sqrt(6 / (fan_in + fan_out))
        rk = layer.weight("backward", "recurrent_kernel").read().astype(np.float64)
        flat = rk.reshape(-1, rk.shape[-1])  # Keras: orthonormal columns, or rows when wide
        gram = flat.T @ flat if flat.shape[0] >= flat.shape[1] else flat @ flat.T
        np.testing.assert_allclose(gram, np.eye(len(gram)), atol=1e-5)


def test_init_by_gate_block(tmp_path) -> None:
    out = tmp_path / "o.keras"
    run = run_cli(
        "init",
        TWO_D,
        "-o",
        out,
        "--seed",
        "2",
        "--init",
        "recurrent_kernel[f,o]=orthogonal:gain=2",
        "--init",
        "bias[f]=ones",
    )
    assert run.exit_code == 0, run.stderr
    with bl.open_model(str(TWO_D)) as before, bl.open_model(str(out)) as after:
        old = before.layers[0].weight("forward", "recurrent_kernel").read()
        new = after.layers[0].weight("forward", "recurrent_kernel").read()
        f = 2
        np.testing.assert_array_equal(new[..., :f], old[..., :f])
        np.testing.assert_array_equal(new[..., 2 * f : 3 * f], old[..., 2 * f : 3 * f])
        for sl in (slice(f, 2 * f), slice(3 * f, 4 * f)):
            block = new[..., sl].reshape(-1, f).astype(np.float64) / 2
            np.testing.assert_allclose(block.T @ block, np.eye(f), atol=1e-5)
        bias_old = before.layers[0].weight("backward", "bias").read()
        bias = after.layers[0].weight("backward", "bias").read()
        np.testing.assert_array_equal(bias[f : 2 * f], 1.0)
        np.testing.assert_array_equal(bias[:f], bias_old[:f])


def test_transplant_between_conv_lstms_is_verified_by_the_forward_pass(tmp_path) -> None:
    out = tmp_path / "o.keras"
    run = run_cli("transplant", DONOR_2D, TWO_D, "-o", out, "--json")
    assert run.exit_code == 0, run.stderr
    doc = run.json()
    forward = [c for c in doc["checks"] if c["check"] == "Bidirectional forward pass"]
    assert [c["status"] for c in forward] == ["passed"]
    assert "largest output difference 0" in forward[0]["detail"]
    diff = run_cli("diff", DONOR_2D, out)
    assert diff.exit_code == 0, diff.stdout + diff.stderr


def test_a_plain_conv_lstm_fills_one_direction(tmp_path) -> None:
    out = tmp_path / "o.keras"
    plain = CONV / "plain_convlstm2d.keras"
    run = run_cli(
        "transplant", plain, TWO_D, "-o", out, "--map", "plain_conv=bi_conv2d/backward", "--json"
    )
    assert run.exit_code == 0, run.stderr
    checks = {c["check"]: c["status"] for c in run.json()["checks"]}
    assert checks["forward pass"] == "passed"


def test_a_conv_forward_pass_that_disagrees_fails_verification(tmp_path, monkeypatch) -> None:
    import bilstm_cli.ops.forward_check as forward_check

    real = forward_check.ForwardChecks.written

    def nudged(self, dataset, values):
        real(self, dataset, values + 1e-3 if dataset.endswith("vars/1") else values)

    monkeypatch.setattr(forward_check.ForwardChecks, "written", nudged)
    # Run the written cells on what reaches them, never on their donor's outputs.
    monkeypatch.setattr(forward_check._CellRun, "_mirrors_twin", lambda self: False)
    out = tmp_path / "o.keras"
    run = run_cli("transplant", DONOR_2D, TWO_D, "-o", out)
    assert run.exit_code == 1
    assert "Bidirectional forward pass" in run.stderr and "should be 0" in run.stderr
    assert not out.exists()


def test_mismatched_conv_layers_are_refused_by_name(tmp_path) -> None:
    run = run_cli("transplant", DONOR_2D, ONE_D, "--by", "order", "-o", tmp_path / "o.keras")
    assert run.exit_code == 3
    assert "a ConvLSTM2D cannot fill a ConvLSTM1D" in run.stderr
    lstm = FIXTURES / "k3_seq_input_lstm_concat.keras"
    run = run_cli("transplant", lstm, TWO_D, "--by", "order", "-o", tmp_path / "o.keras")
    assert run.exit_code == 3 and "a LSTM cannot fill a ConvLSTM2D" in run.stderr
    assert not (tmp_path / "o.keras").exists()


def _with_config(src, dst, edit) -> None:
    """Copy a .keras archive with its config.json changed by ``edit`` (a str -> str)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename == "config.json":
                data = edit(data.decode()).encode()
            zout.writestr(item, data)


def test_other_convolution_settings_are_noted_not_checked(tmp_path) -> None:
    target = tmp_path / "same.keras"
    _with_config(TWO_D, target, lambda t: t.replace('"padding": "valid"', '"padding": "same"'))
    run = run_cli("transplant", DONOR_2D, target, "-o", tmp_path / "o.keras", "--json")
    assert run.exit_code == 0, run.stderr
    doc = run.json()
    differences = [d for p in doc["pairs"] for d in p["differences"]]
    assert "padding valid (donor) vs same (target)" in differences
    forward = next(c for c in doc["checks"] if "forward pass" in c["check"])
    assert forward["status"] == "skipped" and "settings that differ" in forward["detail"]


def test_a_kernel_size_that_disagrees_with_the_weights_is_refused(tmp_path) -> None:
    bad = tmp_path / "bad.keras"
    _with_config(TWO_D, bad, lambda t: t.replace('"kernel_size": [3, 2]', '"kernel_size": [3, 3]'))
    run = run_cli("inspect", bad)
    assert run.exit_code == 3 and run.stdout == ""
    assert "kernel has shape (3, 2, 2, 8), but a ConvLSTM2D of 2 units needs" in run.stderr
    junk = tmp_path / "junk.keras"
    _with_config(TWO_D, junk, lambda t: t.replace('"kernel_size": [3, 2]', '"kernel_size": "x"'))
    run = run_cli("inspect", junk)
    assert run.exit_code == 3 and "kernel_size 'x' is not 2 non-negative integer(s)" in run.stderr


def test_channels_first_skips_the_forward_pass_saying_why(tmp_path) -> None:
    def edit(text: str) -> str:
        return text.replace('"data_format": "channels_last"', '"data_format": "channels_first"')

    donor, target = tmp_path / "d.keras", tmp_path / "t.keras"
    _with_config(DONOR_2D, donor, edit)
    _with_config(TWO_D, target, edit)
    run = run_cli("transplant", donor, target, "-o", tmp_path / "o.keras", "--json")
    assert run.exit_code == 0, run.stderr
    forward = next(c for c in run.json()["checks"] if "forward pass" in c["check"])
    assert forward["status"] == "skipped" and "channels_first" in forward["detail"]


def test_weights_only_conv_lstm_transplant(tmp_path) -> None:
    src = tmp_path / "w.weights.h5"
    shutil.copy(CONV / "bi_convlstm2d.weights.h5", src)
    out = tmp_path / "o.weights.h5"
    run = run_cli("transplant", DONOR_2D, src, "-o", out, "--json")
    assert run.exit_code == 0, run.stderr
    diff = run_cli("diff", DONOR_2D, out, "--json")
    assert diff.exit_code == 0, diff.stdout


def test_a_huge_declared_dilation_skips_the_forward_pass_instead_of_allocating(tmp_path) -> None:
    target = tmp_path / "t.keras"
    huge = '"dilation_rate": [5000000, 1, 1]'
    _with_config(THREE_D, target, lambda t: t.replace('"dilation_rate": [2, 1, 1]', huge))
    run = run_cli("transplant", target, target, "-o", tmp_path / "o.keras", "--json")
    assert run.exit_code == 0, run.stderr
    forward = next(c for c in run.json()["checks"] if "forward pass" in c["check"])
    assert forward["status"] == "skipped" and "probe of" in forward["detail"]


def test_gate_statistics_judge_conv_recurrent_blocks_flattened(tmp_path) -> None:
    """inspect --gates scores a ConvLSTM recurrent block as the orthogonal initializer draws it:
    near zero after an orthogonal init, clearly not on the file's random values."""
    src = FIXTURES / "convlstm" / "bi_convlstm2d.keras"
    out = tmp_path / "orth.keras"
    init = run_cli("init", str(src), "-o", str(out), "--init", "recurrent_kernel=orthogonal")
    assert init.exit_code == 0, init.stderr

    def errors(path):
        r = run_cli("inspect", str(path), "--gates", "--json")
        assert r.exit_code == 0, r.stderr
        doc = json.loads(r.stdout)
        return [
            g["orth_error"]
            for layer in doc["layers"]
            for w in layer["weights"]
            if w["role"] == "recurrent_kernel"
            for g in w["gate_stats"]
        ]

    before, after = errors(src), errors(out)
    assert len(after) == 8 and all(e is not None and e < 1e-5 for e in after), after
    assert min(before) > 0.1, before
