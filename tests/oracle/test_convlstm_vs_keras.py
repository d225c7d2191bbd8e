"""Oracle: Bidirectional ConvLSTM1D/2D/3D against Keras 3 itself.

What the tool reads equals what Keras holds; what ``init`` writes is what Keras loads, value for
value; the fans of the strategies on convolution kernels are Keras' own; the NumPy reference
forward computes what Keras computes (padding same and valid, strides, dilation, go_backwards,
every merge mode); a transplant into a ConvLSTM layer runs in Keras as the donor did.
"""

from __future__ import annotations

import math
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np
import pytest
from conftest import FIXTURES, run_cli

import bilstm_cli as bl
from bilstm_cli import strategies
from bilstm_cli.cells import conv_forward
from bilstm_cli.ops.plan_init import parse_ops, seed_for, weight_info
from oracle.keras_truth import (
    cell_weights,
    find_bidirectional,
    load,
    load_weights_into,
    run_bidirectional,
    to_numpy,
)

keras = pytest.importorskip("keras")

pytestmark = pytest.mark.keras

CONV = FIXTURES / "convlstm"
MODELS = {
    "bi_convlstm1d.keras": "bi_conv1d",
    "bi_convlstm2d.keras": "bi_conv2d",
    "bi_convlstm2d.h5": "bi_conv2d",
    "bi_convlstm3d.keras": "bi_conv3d",
}
ARCHITECTURE = {"bi_convlstm2d.weights.h5": "bi_convlstm2d.keras"}


def _keras_model(path):
    name = os.path.basename(str(path))
    if name.endswith(".weights.h5"):
        return load_weights_into(path, "keras3", architecture=CONV / ARCHITECTURE[name])
    return load_weights_into(path, "keras3")


def _keras_layer(model, name):
    return find_bidirectional(model, name)


@pytest.mark.parametrize("file", [*MODELS, *ARCHITECTURE])
def test_inspect_agrees_with_keras(file):
    path = CONV / file
    model = _keras_model(path)
    layer_name = MODELS.get(file, "bi_conv2d")
    keras_layer = _keras_layer(model, layer_name)
    with bl.open_model(str(path)) as ours:
        (layer,) = ours.layers
        for direction, sub in (
            ("forward", keras_layer.forward_layer),
            ("backward", keras_layer.backward_layer),
        ):
            settings = layer.settings[direction]
            assert settings.cell == type(sub).__name__
            assert settings.units == sub.filters
            assert settings.conv is not None
            assert settings.conv.kernel_size == tuple(sub.kernel_size)
            if layer.config_known:
                assert settings.conv.strides == tuple(sub.strides)
                assert settings.conv.padding == sub.padding
                assert settings.conv.dilation_rate == tuple(sub.dilation_rate)
                assert settings.go_backwards == sub.go_backwards
            truth = cell_weights(sub)
            assert set(truth) == {"kernel", "recurrent_kernel", "bias"}
            for role, values in truth.items():
                w = layer.weight(direction, role)
                assert w is not None and w.shape == values.shape
                np.testing.assert_array_equal(w.read(), values)


@pytest.mark.parametrize(
    "file",
    ["bi_convlstm1d.keras", "bi_convlstm2d.h5", "bi_convlstm2d.weights.h5", "bi_convlstm3d.keras"],
)
def test_init_output_loads_in_keras_with_the_intended_values(file, tmp_path):
    src = CONV / file
    suffix = ".weights.h5" if file.endswith(".weights.h5") else os.path.splitext(file)[1]
    out = tmp_path / f"out{suffix}"
    texts = ["kernel=he_uniform:per_gate=true", "recurrent_kernel=orthogonal", "bias=zeros"]
    args = [a for t in texts for a in ("--init", t)]
    run = run_cli("init", src, "-o", out, *args, "--init", "bias[f]=ones", "--seed", "21")
    assert run.exit_code == 0, run.stderr
    ops = parse_ops(texts)
    if file in ARCHITECTURE:
        model = load_weights_into(out, "keras3", architecture=CONV / ARCHITECTURE[file])
    else:
        model = _keras_model(out)
    keras_layer = _keras_layer(model, MODELS.get(file, "bi_conv2d"))
    with bl.open_model(str(src)) as model:
        layer = model.layers[0]
        for ref in layer.weights:
            op = next(o for o in ops if o.target.role == ref.role)
            info = weight_info(layer, ref)
            intended = strategies.generate(op.spec, info, seed_for(21, layer, ref, op), np.float32)
            if ref.role == "bias":
                intended[info.units : 2 * info.units] = 1.0
            sub = getattr(keras_layer, f"{ref.direction}_layer")
            np.testing.assert_array_equal(cell_weights(sub)[ref.role], intended)


# --- fans and draws against Keras' initializers on convolution shapes -------------------------

CONV_SHAPES = [(5, 8, 64), (3, 3, 6, 32), (2, 3, 2, 4, 24)]


@pytest.mark.parametrize("shape", CONV_SHAPES)
@pytest.mark.parametrize(
    "spec,keras_name,variance",
    [
        ("glorot_uniform", "GlorotUniform", lambda i, o: 2.0 / (i + o)),
        ("glorot_normal", "GlorotNormal", lambda i, o: 2.0 / (i + o)),
        ("he_uniform", "HeUniform", lambda i, o: 2.0 / i),
        ("he_normal", "HeNormal", lambda i, o: 2.0 / i),
        ("lecun_normal", "LecunNormal", lambda i, o: 1.0 / i),
    ],
)
def test_variance_of_draws_matches_keras(shape, spec, keras_name, variance):
    fan_in = int(np.prod(shape[:-1]))
    fan_out = int(np.prod(shape[:-2])) * shape[-1]
    want = variance(fan_in, fan_out)
    info = strategies.WeightInfo(f"ConvLSTM{len(shape) - 2}D", "kernel", shape, shape[-1] // 4)
    ours = strategies.generate(strategies.parse_spec(spec), info, 3, np.float64)
    init = keras.initializers.get({"class_name": keras_name, "config": {"seed": 4}})
    theirs = np.asarray(init(shape), dtype=np.float64)
    n = math.prod(shape)
    # The sample variance of n draws is within a few standard errors of the target.
    tolerance = 5 * want * math.sqrt(2.0 / n) * 1.5
    assert abs(ours.var() - want) < tolerance
    assert abs(theirs.var() - want) < tolerance
    assert abs(ours.var() - theirs.var()) < 2 * tolerance
    assert np.abs(ours).max() <= np.abs(theirs).max() * 1.2 + 1e-12


@pytest.mark.parametrize("shape", CONV_SHAPES)
def test_orthogonal_on_a_conv_kernel_is_keras_flattened_orthogonal(shape):
    theirs = np.asarray(keras.initializers.Orthogonal(seed=2)(shape), dtype=np.float64).reshape(
        -1, shape[-1]
    )
    info = strategies.WeightInfo(
        f"ConvLSTM{len(shape) - 2}D", "recurrent_kernel", shape, shape[-1] // 4
    )
    whole = strategies.parse_spec("orthogonal:per_gate=false")
    ours = strategies.generate(whole, info, 1, np.float64).reshape(-1, shape[-1])

    def gram(m):
        return m.T @ m if m.shape[0] >= m.shape[1] else m @ m.T

    for m in (ours, theirs):
        np.testing.assert_allclose(gram(m), np.eye(len(gram(m))), atol=1e-5)
    per_gate = strategies.generate(strategies.parse_spec("orthogonal"), info, 1, np.float64)
    units = shape[-1] // 4
    flat = per_gate.reshape(-1, shape[-1])
    for g in range(4):
        block = flat[:, g * units : (g + 1) * units]
        np.testing.assert_allclose(gram(block), np.eye(len(gram(block))), atol=1e-12)


# --- the reference forward against Keras ----------------------------------------------------

FORWARD_CASES = [
    # rank, spatial, kernel, strides, padding, dilation, return_sequences, merge_mode
    (1, (9,), (3,), (1,), "same", (1,), True, "concat"),
    (1, (10,), (4,), (2,), "valid", (1,), False, "sum"),
    (1, (10,), (3,), (1,), "valid", (3,), True, "mul"),
    (2, (7, 6), (3, 2), (2, 1), "valid", (1, 1), True, "ave"),
    (2, (7, 6), (2, 2), (1, 1), "same", (1, 1), False, None),
    (2, (8, 5), (3, 3), (1, 1), "same", (2, 1), True, "concat"),
    (2, (7, 7), (3, 2), (2, 3), "same", (1, 1), True, "sum"),
    (3, (5, 4, 4), (2, 2, 2), (1, 1, 1), "same", (2, 1, 1), True, "ave"),
    (3, (5, 6, 4), (2, 1, 3), (1, 2, 1), "valid", (1, 1, 1), False, "concat"),
]


def _keras_bidirectional(rank, kernel, strides, padding, dilation, seqs, merge, filters, seed):
    layer_class = getattr(keras.layers, f"ConvLSTM{rank}D")
    inner = layer_class(
        filters,
        kernel,
        strides=strides,
        padding=padding,
        dilation_rate=dilation,
        return_sequences=seqs,
    )
    return keras.layers.Bidirectional(inner, merge_mode=merge)


@pytest.mark.parametrize(
    "rank,spatial,kernel,strides,padding,dilation,seqs,merge", FORWARD_CASES, ids=str
)
def test_reference_forward_agrees_with_keras(
    rank, spatial, kernel, strides, padding, dilation, seqs, merge
):
    filters, channels = 3, 2
    keras.utils.set_random_seed(7)
    bi = _keras_bidirectional(rank, kernel, strides, padding, dilation, seqs, merge, filters, 7)
    rng = np.random.default_rng(rank * 10 + len(FORWARD_CASES))
    x = rng.standard_normal((2, 4, *spatial, channels)).astype(np.float32)
    bi.build(x.shape)
    weights = {}
    for direction in ("forward", "backward"):
        cell = getattr(bi, f"{direction}_layer").cell
        values = []
        for var in (cell.kernel, cell.recurrent_kernel, cell.bias):
            v = rng.normal(0.0, 0.4, size=tuple(var.shape)).astype(np.float32)
            var.assign(v)
            values.append(v)
        weights[direction] = values
    got = bi(x)
    cfg = conv_forward.ConvCellConfig(
        cell=f"ConvLSTM{rank}D",
        units=filters,
        kernel_size=kernel,
        strides=strides,
        padding=padding,
        dilation_rate=dilation,
    )
    back = conv_forward.ConvCellConfig(**{**cfg.__dict__, "go_backwards": True})
    ref = conv_forward.bidirectional_forward(
        x, weights["forward"], weights["backward"], cfg, back, merge, seqs
    )
    outs = got if isinstance(got, (list, tuple)) else [got]
    refs = ref if isinstance(ref, list) else [ref]
    assert len(outs) == len(refs)
    for k, r in zip(outs, refs):
        k = to_numpy(k)
        assert k.shape == r.shape
        scale = max(1.0, float(np.abs(r).max()))
        assert float(np.abs(k - r).max()) <= 1e-5 * scale


# --- a transplant into ConvLSTM, run by Keras ----------------------------------------------


def test_transplant_into_conv_lstm_runs_in_keras_as_the_donor(tmp_path):
    donor, target = CONV / "bi_convlstm2d_donor.keras", CONV / "bi_convlstm2d.keras"
    out = tmp_path / "o.keras"
    run = run_cli("transplant", donor, target, "-o", out, "--json", "--verify", "keras")
    assert run.exit_code == 0, run.stderr
    checks = {c["check"]: c["status"] for c in run.json()["checks"]}
    assert checks["Bidirectional forward pass"] == "passed"
    x = np.random.default_rng(3).standard_normal((2, 3, 7, 5, 2)).astype(np.float32)
    want = run_bidirectional(donor, "bi_conv2d", x, "keras3")
    got = run_bidirectional(out, "bi_conv2d", x, "keras3")
    np.testing.assert_array_equal(got, want)
    before = run_bidirectional(target, "bi_conv2d", x, "keras3")
    assert not np.array_equal(before, want)
    # And the reference computes what Keras computes for the written layer.
    with bl.open_model(str(out)) as model:
        layer = model.layers[0]
        cfgs = [
            conv_forward.config_for(s, 3, s.go_backwards) for s in (layer.forward, layer.backward)
        ]
        ws = [
            [layer.weight(d, r).read() for r in ("kernel", "recurrent_kernel", "bias")]
            for d in ("forward", "backward")
        ]
        ref = conv_forward.bidirectional_forward(x, ws[0], ws[1], *cfgs, "sum", False)
    assert float(np.abs(ref - got).max()) <= 1e-5 * max(1.0, float(np.abs(ref).max()))


def test_plain_conv_lstm_into_one_direction_runs_in_keras(tmp_path):
    plain, target = CONV / "plain_convlstm2d.keras", CONV / "bi_convlstm2d.keras"
    out = tmp_path / "o.keras"
    run = run_cli("transplant", plain, target, "-o", out, "--map", "plain_conv=bi_conv2d/forward")
    assert run.exit_code == 0, run.stderr
    x = np.random.default_rng(4).standard_normal((2, 3, 7, 5, 2)).astype(np.float32)
    plain_layer = load(plain, "keras3").get_layer("plain_conv")
    written = find_bidirectional(load(out, "keras3"), "bi_conv2d")
    np.testing.assert_array_equal(to_numpy(written.forward_layer(x)), to_numpy(plain_layer(x)))


def test_tf_keras_conv_lstm_file_agrees_with_tf_keras(tmp_path):
    """A Keras 2 (tf_keras) legacy .h5: weights as tf_keras holds them, and the reference with
    Keras 2's hard_sigmoid (tf_keras' ConvLSTM default) computes what tf_keras computes."""
    tf_keras = pytest.importorskip("tf_keras")
    path = CONV / "tfk_bi_convlstm2d.h5"
    keras_layer = find_bidirectional(load(path, "tf_keras"), "bi_conv2d")
    x = np.random.default_rng(6).standard_normal((2, 3, 7, 5, 2)).astype(np.float32)
    want = to_numpy(keras_layer(tf_keras.backend.constant(x)))
    with bl.open_model(str(path)) as model:
        (layer,) = model.layers
        assert model.keras_version is not None and model.keras_version.startswith("2.")
        assert layer.forward.recurrent_activation == "hard_sigmoid"
        for direction in ("forward", "backward"):
            sub = getattr(keras_layer, f"{direction}_layer")
            for role, values in cell_weights(sub).items():
                np.testing.assert_array_equal(layer.weight(direction, role).read(), values)
        cfgs = [
            conv_forward.config_for(s, 2, s.go_backwards) for s in (layer.forward, layer.backward)
        ]
        ws = [
            [layer.weight(d, r).read() for r in ("kernel", "recurrent_kernel", "bias")]
            for d in ("forward", "backward")
        ]
    ref = conv_forward.bidirectional_forward(x, ws[0], ws[1], *cfgs, "concat", True)
    assert float(np.abs(ref - want).max()) <= 1e-5 * max(1.0, float(np.abs(ref).max()))
    # init writes a file tf_keras loads with the values the tool reports.
    out = tmp_path / "o.h5"
    assert run_cli("init", path, "-o", out, "--seed", "5").exit_code == 0
    loaded = find_bidirectional(load_weights_into(out, "tf_keras"), "bi_conv2d")
    with bl.open_model(str(out)) as model:
        for direction in ("forward", "backward"):
            sub = getattr(loaded, f"{direction}_layer")
            for role, values in cell_weights(sub).items():
                np.testing.assert_array_equal(
                    model.layers[0].weight(direction, role).read(), values
                )
