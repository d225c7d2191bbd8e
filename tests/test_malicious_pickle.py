"""A PyTorch checkpoint is a pickle, and a pickle can name any function to call. Prove that
the reader imports nothing and runs nothing, whatever ``data.pkl`` asks for, and refuses it
in one line with exit 3.

Every payload would leave a file behind if it ran; each test asserts that the file is not
there. A planted module that writes a file when imported proves nothing is imported either.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
from foreign_files import (
    FOREIGN,
    Call,
    Global,
    ODict,
    Raw,
    dumps,
    read_all,
    tensor,
    write_checkpoint,
)

from bilstm_cli.errors import InputError

F32 = np.arange(24, dtype="<f4")


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / "payload-ran"
    yield path
    assert not path.exists(), "a payload ran"


@pytest.fixture
def planted(tmp_path, monkeypatch):
    """A module on sys.path that writes ``planted-imported`` when imported."""
    directory = tmp_path / "site"
    directory.mkdir()
    flag = tmp_path / "planted-imported"
    (directory / "planted_payload.py").write_text(
        f"open({str(flag)!r}, 'w').close()\ndef boom(*a):\n    open({str(flag)!r}, 'w').close()\n"
    )
    monkeypatch.syspath_prepend(str(directory))
    yield flag
    assert not flag.exists(), "a module named in the pickle was imported"
    assert "planted_payload" not in sys.modules


def _refused(path, name):
    with pytest.raises(InputError) as info:
        read_all(path)
    message = info.value.message
    assert info.value.exit_code == 3 and "\n" not in message
    assert f"refuses global {name}" in message, message
    return message


def _inside_state_dict(payload):
    """A real-looking state dict with ``payload`` as one more entry."""
    return ODict((("rnn.weight_ih_l0", tensor("0", 24, (8, 3))), ("evil", payload)))


@pytest.mark.parametrize(
    ("module", "name", "args"),
    [
        ("os", "system", "touch {marker}"),
        ("posix", "system", "touch {marker}"),
        ("builtins", "eval", "open({marker!r}, 'w')"),
        ("builtins", "exec", "open({marker!r}, 'w')"),
        ("subprocess", "Popen", None),
        ("subprocess", "check_call", None),
        ("builtins", "getattr", None),
        ("builtins", "__import__", None),
        ("torch", "load", None),
        ("numpy", "load", None),
        ("shutil", "rmtree", None),
    ],
)
def test_dangerous_global_inside_a_state_dict(tmp_path, marker, module, name, args):
    if args is None:
        call_args: tuple = (["touch", str(marker)],)
    else:
        call_args = (args.format(marker=str(marker)),)
    payload = Call(Global(module, name), call_args)
    path = write_checkpoint(tmp_path / "evil.pt", dumps(_inside_state_dict(payload)),
                            {"0": F32.tobytes()})  # fmt: skip
    _refused(path, f"{module}.{name}")


def test_python2_names_are_translated_before_the_refusal(tmp_path, marker):
    payload = Call(Global("__builtin__", "eval"), (f"open({str(marker)!r}, 'w')",))
    path = write_checkpoint(tmp_path / "py2.pt", dumps(_inside_state_dict(payload)),
                            {"0": F32.tobytes()})  # fmt: skip
    _refused(path, "builtins.eval")


def test_a_real_reduce_payload_made_by_pickle_itself(tmp_path, marker):
    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    for protocol in (2, 4, 5):
        data = pickle.dumps({"state_dict": {"w": 1}, "x": Payload()}, protocol=protocol)
        path = write_checkpoint(tmp_path / f"reduce{protocol}.pt", data)
        _refused(path, f"{os.system.__module__}.system")


def test_subprocess_popen_made_by_pickle_itself(tmp_path, marker):
    class Payload:
        def __reduce__(self):
            return (subprocess.Popen, (["touch", str(marker)],))

    path = write_checkpoint(tmp_path / "popen.pt", pickle.dumps([Payload()], protocol=2))
    _refused(path, "subprocess.Popen")


def test_a_named_module_is_never_imported(tmp_path, planted):
    payload = Call(Global("planted_payload", "boom"), ())
    path = write_checkpoint(tmp_path / "planted.pt", dumps(_inside_state_dict(payload)),
                            {"0": F32.tobytes()})  # fmt: skip
    _refused(path, "planted_payload.boom")


def test_a_global_that_is_never_called_is_still_refused(tmp_path, planted):
    obj = ODict((("w", tensor("0", 24, (24,))), ("f", Global("planted_payload", "boom"))))
    path = write_checkpoint(tmp_path / "uncalled.pt", dumps(obj), {"0": F32.tobytes()})
    _refused(path, "planted_payload.boom")


def test_stack_global_is_looked_up_the_same_way(tmp_path, planted, marker):
    # Protocol 4 spells a global as two strings on the stack and STACK_GLOBAL.
    body = b"\x8c\x0fplanted_payload\x8c\x04boom\x93)R."
    path = write_checkpoint(tmp_path / "stack.pt", b"\x80\x04" + body)
    _refused(path, "planted_payload.boom")


@pytest.mark.parametrize(
    ("opcode", "what"),
    [
        (b"iplanted_payload\nboom\n", "INST"),  # protocol 0 class instantiation
        (b"(cplanted_payload\nboom\no", "OBJ"),
        (b"\x82\x01", "EXT1"),  # extension registry
        (b"Pfoo\n", "PERSID"),  # text persistent id
        (b"\x97", "NEXT_BUFFER"),
    ],
)
def test_opcodes_that_only_serve_code_are_refused(tmp_path, planted, opcode, what):
    path = write_checkpoint(tmp_path / f"{what}.pt", b"\x80\x02" + opcode + b".")
    with pytest.raises(InputError) as info:
        read_all(path)
    assert info.value.exit_code == 3


def test_calling_an_honoured_storage_type_is_refused(tmp_path):
    # A storage type is honoured as a marker in persistent ids, never as something to call.
    obj = ODict((("w", Call(Global("torch", "FloatStorage"), (24,))),))
    path = write_checkpoint(tmp_path / "call.pt", dumps(obj))
    with pytest.raises(InputError, match="a pickle call of torch.FloatStorage"):
        read_all(path)


def test_build_on_a_tensor_with_state_is_refused(tmp_path):
    # BUILD is how a pickle sets attributes (or calls __setstate__): never on a tensor.
    body = dumps(tensor("0", 24, (24,)))[2:-1] + dumps({"__class__": 1})[2:-1] + b"b"
    obj = ODict((("w", Raw(body)),))
    path = write_checkpoint(tmp_path / "build.pt", dumps(obj), {"0": F32.tobytes()})
    with pytest.raises(InputError, match="BUILD"):
        read_all(path)


def test_persistent_id_that_is_not_a_storage(tmp_path):
    obj = ODict((("w", Raw(dumps(("module", "os", "system"))[2:-1] + b"Q")),))
    path = write_checkpoint(tmp_path / "pid.pt", dumps(obj))
    with pytest.raises(InputError, match="persistent id"):
        read_all(path)


def test_cli_refuses_a_malicious_checkpoint_and_runs_nothing(tmp_path, marker, bilstm):
    payload = Call(Global("os", "system"), (f"touch {marker}",))
    path = write_checkpoint(tmp_path / "evil.pt", dumps(_inside_state_dict(payload)),
                            {"0": F32.tobytes()})  # fmt: skip
    result = bilstm("inspect", str(path))
    assert result.exit_code == 3
    assert result.stdout == "" and "Traceback" not in result.stderr
    assert result.stderr.startswith("Error: ") and len(result.stderr.splitlines()) == 1


def test_honest_checkpoint_beside_the_payloads_still_reads():
    # The same reader, on a real file: the refusals above are not a reader that refuses all.
    tensors = read_all(FOREIGN / "checkpoint_gru.pth")
    assert len(tensors) == 8
