"""compress.data.caffe HDF5Data: rows across files in order, Caffe's shuffling structure, resume."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from compress.data.caffe import build_feeder
from compress.data.caffe.rng import CaffeRng
from compress.errors import CompressError
from tests.test_caffe_data import assert_resume_is_exact, feed, layer


def hdf5_layer(source, batch: int, extra: str = "", tops=("data", "label")):
    top_text = " ".join(f'top: "{t}"' for t in tops)
    return layer(f'name: "h5" type: "HDF5Data" {top_text} '
                 f'hdf5_data_param {{ source: "{source}" batch_size: {batch} {extra} }}')


def _files(tmp_path, rows=(3, 2)) -> str:
    """HDF5 files whose row r of file f has data = 10*f + r (shape 2x2) and label = 10*f + r."""
    h5py = pytest.importorskip("h5py")
    names = []
    for f, n in enumerate(rows):
        name = tmp_path / f"part{f}.h5"
        values = 10 * f + np.arange(n)
        with h5py.File(name, "w") as h:
            h["data"] = np.repeat(values, 4).reshape(n, 2, 2).astype(np.float64)
            h["label"] = values.astype(np.int32)
        names.append(str(name))
    (tmp_path / "list.txt").write_text("\n".join(names) + "\n")
    return str(tmp_path / "list.txt")


def test_rows_in_order_across_files_and_wrapping(tmp_path):
    f = build_feeder(hdf5_layer(_files(tmp_path), 2), "TRAIN")
    assert f.shapes == {"data": (2, 2, 2), "label": (2,)}
    batches = feed(f, 4)
    assert [b["label"].tolist() for b in batches] == [[0, 1], [2, 10], [11, 0], [1, 2]]
    for b in batches:
        assert b["data"].dtype == torch.float32 and b["label"].dtype == torch.float32  # Caffe's blobs
        assert torch.equal(b["data"][:, 1, 1], b["label"])


def _caffe_rows(sizes, shuffle: bool, rng: CaffeRng, count: int) -> list[int]:
    """HDF5DataLayer's LayerSetUp/LoadHDF5FileData/Next transcribed: the label (10*file + row) of
    each row it emits."""
    files = list(range(len(sizes)))
    if shuffle:
        rng.shuffle(files)

    def load(file):
        permutation = list(range(sizes[file]))
        if shuffle:
            rng.shuffle(permutation)
        return permutation

    current, row, permutation, out = 0, 0, load(files[0]), []
    for _ in range(count):
        out.append(10 * files[current] + permutation[row])
        row += 1
        if row == sizes[files[current]]:
            if len(files) > 1:
                current += 1
                if current == len(files):
                    current = 0
                    if shuffle:
                        rng.shuffle(files)
                permutation = load(files[current])
            row = 0
            if shuffle:
                rng.shuffle(permutation)
    return out


@pytest.mark.parametrize("sizes", [(3, 2), (4,), (2, 3, 1)])
@pytest.mark.parametrize("shuffle", [False, True])
def test_rows_follow_caffes_file_and_row_order(tmp_path, sizes, shuffle):
    spec = hdf5_layer(_files(tmp_path, sizes), 3, "shuffle: true" if shuffle else "")
    got = [x for b in feed(build_feeder(spec, "TRAIN", seed=9), 8) for x in b["label"].int().tolist()]
    assert got == _caffe_rows(sizes, shuffle, CaffeRng(9), 24)
    if shuffle and len(sizes) > 1:
        assert got != _caffe_rows(sizes, False, CaffeRng(9), 24)


def test_resume_is_exact(tmp_path):
    spec = hdf5_layer(_files(tmp_path, (3, 4, 2)), 2, "shuffle: true")
    assert_resume_is_exact(spec, 4, 7)


def test_bad_hdf5_input_is_one_clear_error(tmp_path):
    source = _files(tmp_path)
    with pytest.raises(CompressError, match="HDF5Data does not transform data; remove transform_param"):
        spec = hdf5_layer(source, 2)
        spec.transform_param.scale = 2
        build_feeder(spec, "TRAIN")
    with pytest.raises(CompressError, match=r"HDF5 file '.*part0.h5' .*: no dataset 'weights'"):
        build_feeder(hdf5_layer(source, 2, tops=("data", "weights")), "TRAIN")
    with pytest.raises(CompressError, match=r"cannot read the HDF5 file list '.*nope.txt'"):
        build_feeder(hdf5_layer(tmp_path / "nope.txt", 2), "TRAIN")
    (tmp_path / "empty.txt").write_text(" \n")
    with pytest.raises(CompressError, match=r"'.*empty.txt' lists no HDF5 files"):
        build_feeder(hdf5_layer(tmp_path / "empty.txt", 2), "TRAIN")


def test_rows_of_later_files_must_match_the_first(tmp_path):
    h5py = pytest.importorskip("h5py")
    source = _files(tmp_path)
    with h5py.File(tmp_path / "part1.h5", "w") as h:
        h["data"], h["label"] = np.zeros((2, 3, 3)), np.zeros(2)
    f = build_feeder(hdf5_layer(source, 2), "TRAIN")
    with pytest.raises(CompressError, match=r"part1.h5.*dataset 'data' rows are 3x3, those of the first "
                                            r"file are 2x2"):
        feed(f, 2)


def test_without_h5py_the_error_names_the_package(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "h5py" else real(name, *a))
    with pytest.raises(CompressError, match=r"layer 'h5' \(HDF5Data\): reading HDF5Data needs the h5py "
                                            r"package \(`pip install h5py`\)"):
        build_feeder(hdf5_layer(tmp_path / "list.txt", 2), "TRAIN")
