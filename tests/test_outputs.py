"""Outputs are checked before any work: never over an input, never into a directory that takes no
files, the format matches the extension, errors name the user's path, and nothing is written."""
from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

import onnx
import pytest

from compress.cli import main
from compress.outputs import model_files
from converters.atomic import atomic_open, atomic_write_bytes, check_output_path, check_output_paths
from converters.errors import OutputPathError

# --- converters/atomic.py --------------------------------------------------------------------------


def test_refuses_an_input_by_path_symlink_and_hard_link(tmp_path):
    src = tmp_path / "m.pt"
    src.write_bytes(b"model")
    (tmp_path / "link.pt").symlink_to(src)
    os.link(src, tmp_path / "hard.pt")
    for out, match in ((src, r"refusing to overwrite the input .*m\.pt; write the output"),
                       (tmp_path / "sub" / ".." / "m.pt", "same file as the input"),
                       (tmp_path / "link.pt", "same file as the input"),
                       (tmp_path / "hard.pt", "same file as the input")):
        (tmp_path / "sub").mkdir(exist_ok=True)
        with pytest.raises(OutputPathError, match=match):
            check_output_path(out, inputs=[None, "lenet", src])
    check_output_path(tmp_path / "other.pt", inputs=[src, "lenet"])  # a zoo name is no file
    assert src.read_bytes() == b"model"


def test_missing_directory_directory_and_device_outputs(tmp_path):
    with pytest.raises(OutputPathError, match=r"output directory does not exist: .*missing$"):
        check_output_path(tmp_path / "missing" / "m.onnx")
    with pytest.raises(OutputPathError, match="output path is a directory"):
        check_output_path(tmp_path)
    if Path("/dev/null").exists():
        with pytest.raises(OutputPathError, match="not a regular file"):
            check_output_path("/dev/null")


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="no /proc")
def test_proc_is_refused_naming_the_users_path():
    with pytest.raises(OutputPathError) as e:
        check_output_path("/proc/m.onnx")
    assert str(e.value).startswith("cannot write /proc/m.onnx: its directory /proc does not accept new files")
    assert ".tmp" not in str(e.value) and ".probe" not in str(e.value)


def test_read_only_directory_is_refused_unless_root(tmp_path):
    """A directory's mode stops a user, not root (whom CI runs as): the probe, not the mode bits, decides,
    and it leaves nothing behind either way. The two tests below are refused for root too."""
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            assert check_output_path(ro / "m.onnx") == ro / "m.onnx"
        else:
            with pytest.raises(OutputPathError, match=r"cannot write .*m\.onnx: its directory .* does not"):
                check_output_path(ro / "m.onnx")
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o755)


def test_a_file_in_place_of_the_directory_is_refused_for_every_user(tmp_path, capsys):
    blocker = tmp_path / "models"
    blocker.write_bytes(b"a file")
    with pytest.raises(OutputPathError) as e:
        check_output_path(blocker / "m.onnx")
    assert str(e.value) == f"output directory is not a directory: {blocker}"
    with pytest.raises(OutputPathError, match="output directory is not a directory"):
        atomic_write_bytes(blocker / "m.onnx", b"x")
    assert main(["export", "lenet", "-o", str(blocker / "m.onnx")]) == 1
    assert capsys.readouterr().err == f"Error: output directory is not a directory: {blocker}\n"
    assert blocker.read_bytes() == b"a file" and list(tmp_path.iterdir()) == [blocker]


def test_a_removed_working_directory_is_refused_by_the_probe_for_every_user(tmp_path, monkeypatch):
    """Removed under the command, the working directory still is a directory, but it takes no new files,
    not even root's (ENOENT): the probe's refusal, where a read-only mode would not stop root."""
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()
    with pytest.raises(OutputPathError) as e:
        check_output_path("m.onnx")
    assert str(e.value) == ("cannot write m.onnx: its directory . does not accept new files "
                            f"({os.strerror(errno.ENOENT)})")
    with pytest.raises(OutputPathError, match=r"cannot write m\.onnx: its directory \. does not accept"):
        atomic_write_bytes("m.onnx", b"x")


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES])
def test_a_directory_that_refuses_new_files_is_found_by_the_probe(tmp_path, monkeypatch, code):
    def mkstemp(*a, **kw):  # what a read-only mount or a read-only directory (as non-root) answers
        raise OSError(code, os.strerror(code), str(tmp_path / ".m.onnx.abc.probe"))

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    with pytest.raises(OutputPathError) as e:
        check_output_path(tmp_path / "m.onnx")
    assert str(e.value) == (f"cannot write {tmp_path / 'm.onnx'}: its directory {tmp_path} does not accept "
                            f"new files ({os.strerror(code)})")


def test_failures_inside_atomic_open_name_the_target_and_leave_nothing(tmp_path, monkeypatch):
    target = tmp_path / "m.onnx"
    with pytest.raises(OutputPathError, match=r"cannot write .*m\.onnx: No space left on device"):
        with atomic_open(target) as f:
            f.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert list(tmp_path.iterdir()) == []
    real = tempfile.mkstemp
    calls = []

    def mkstemp(*a, **kw):  # the probe passes, then the directory turns read-only
        calls.append(kw.get("suffix"))
        if kw.get("suffix") == ".tmp":
            raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / ".m.onnx.x.tmp"))
        return real(*a, **kw)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    with pytest.raises(OutputPathError) as e:
        atomic_write_bytes(target, b"x")
    assert "m.onnx: its directory" in str(e.value) and ".tmp" not in str(e.value)
    assert calls == [".probe", ".tmp"] and list(tmp_path.iterdir()) == []


def test_two_outputs_may_not_be_one_file(tmp_path):
    with pytest.raises(OutputPathError, match="two outputs would be written to the same file"):
        check_output_paths([tmp_path / "a.md", None, tmp_path / "." / "a.md"])
    assert check_output_paths([tmp_path / "a.md", None, tmp_path / "b.png"]) == [tmp_path / "a.md",
                                                                                tmp_path / "b.png"]


def test_model_files_follow_load_models_resolution(tmp_path):
    import zoo

    lenet = zoo.get("lenet")
    assert model_files("lenet") == [Path("lenet"), lenet.prototxt, lenet.weights]
    cm = tmp_path / "a.caffemodel"
    cm.write_bytes(b"")
    assert model_files(cm)[:2] == [cm, tmp_path / "a.prototxt"]  # the sibling it would read
    assert lenet.prototxt in model_files(cm)  # ... else the zoo definitions it is matched against
    assert model_files(cm, "net.prototxt") == [cm, Path("net.prototxt")]


# --- the commands ----------------------------------------------------------------------------------

@pytest.fixture()
def model(tmp_path):
    from compress.modelfile import load_model, save_model

    path = tmp_path / "m.pt"
    save_model(path, load_model("lenet").net, {"method": "magnitude"})
    return path


def _fails(capsys, args, message):
    assert main([str(a) for a in args]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Error: ") and err.count("\n") == 1 and message in err, err


def _snapshot(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(root.iterdir())}


def test_no_command_writes_over_its_input(model, tmp_path, capsys):
    before = _snapshot(tmp_path)
    _fails(capsys, ["export", model, "-o", model], f"refusing to overwrite the input {model}")
    _fails(capsys, ["export", model, "-o", model, "--to", "onnx"], "refusing to overwrite the input")
    _fails(capsys, ["export", model, "-o", tmp_path / "m.caffemodel", "--deploy", model],
           "refusing to overwrite the input")
    _fails(capsys, ["convert", model, "-o", model], "refusing to overwrite the input")
    _fails(capsys, ["report", model, "-o", model], "refusing to overwrite the input")
    _fails(capsys, ["report", model, "--plot", model], "refusing to overwrite the input")
    _fails(capsys, ["report", model, "--baseline", tmp_path / "b.pt", "-o", tmp_path / "b.pt"],
           "refusing to overwrite the input")
    os.link(model, tmp_path / "hard.pt")
    _fails(capsys, ["export", model, "-o", tmp_path / "hard.pt", "--to", "onnx"], "same file as the input")
    os.unlink(tmp_path / "hard.pt")
    assert _snapshot(tmp_path) == before


def test_export_never_writes_into_the_zoo(capsys):
    import zoo

    weights = zoo.get("lenet").weights
    data = weights.read_bytes()
    _fails(capsys, ["export", "lenet", "-o", weights], "refusing to overwrite the input")
    _fails(capsys, ["export", "lenet", "-o", weights.with_name("x.caffemodel"), "--deploy",
                    zoo.get("lenet").prototxt], "refusing to overwrite the input")
    assert weights.read_bytes() == data and not weights.with_name("x.caffemodel").exists()


def test_export_format_follows_the_extension(model, tmp_path, capsys):
    from converters import caffe

    before = _snapshot(tmp_path)
    _fails(capsys, ["export", model, "-o", tmp_path / "x.onnx", "--to", "caffemodel"],
           "--to caffemodel contradicts the output's extension")
    _fails(capsys, ["export", model, "-o", tmp_path / "x.caffemodel", "--to", "onnx"],
           "--to onnx contradicts the output's extension")
    _fails(capsys, ["export", model, "-o", tmp_path / "x.bin"], "cannot tell the export format from")
    _fails(capsys, ["export", model, "-o", tmp_path / "x.caffemodel", "--dense"], "--dense applies to onnx")
    _fails(capsys, ["export", model, "-o", tmp_path / "x.onnx", "--deploy", tmp_path / "d.prototxt"],
           "--deploy applies to caffemodel")
    _fails(capsys, ["export", model, "-o", tmp_path / "x.prototxt", "--to", "caffemodel"],
           "the deploy prototxt would overwrite the output")
    assert _snapshot(tmp_path) == before
    assert main(["export", str(model), "-o", str(tmp_path / "x.caffemodel")]) == 0  # no --to: Caffe
    net = caffe.load(tmp_path / "x.prototxt", tmp_path / "x.caffemodel")
    assert [n.name for n in net.nodes][:2] == ["conv1", "pool1"]
    assert main(["export", str(model), "-o", str(tmp_path / "x.bin"), "--to", "onnx"]) == 0  # said so
    assert onnx.load(tmp_path / "x.bin").graph.node[0].name == "conv1"


def test_unwritable_output_is_noticed_before_loading(model, tmp_path, capsys, monkeypatch):
    import compress.modelfile

    def never(*a, **kw):
        raise AssertionError("the model was loaded before the output was checked")

    monkeypatch.setattr(compress.modelfile, "load_model", never)
    for where in [tmp_path / "missing"] + ([Path("/proc")] if Path("/proc/self").is_dir() else []):
        for args in (["export", model, "-o", where / "m.onnx"], ["convert", model, "-o", where / "m.pt"],
                     ["report", model, "-o", where / "m.md"], ["report", model, "--plot", where / "m.png"]):
            message = f"cannot write {args[-1]}" if where.name == "proc" else f"does not exist: {where}"
            _fails(capsys, args, message)
