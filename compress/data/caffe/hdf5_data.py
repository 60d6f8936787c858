"""``HDF5Data``: rows of HDF5 datasets named by the layer's tops (BVLC ``hdf5_data_layer.cpp``).

``hdf5_data_param.source`` lists HDF5 file names (whitespace-separated). Each file holds one dataset
per top, of float or integer type, with the same number of rows; a batch takes ``batch_size`` rows,
moving to the next file after the last row of one and wrapping after the last file. Values become
float32 (Caffe's blobs). With ``shuffle`` the file order is shuffled at set-up and at every wrap, and
the rows of a file are shuffled when it is loaded and again each time its last row has been read;
Caffe draws those with ``std::random_shuffle`` (the C library's ``rand()``), here they come from the
layer's seeded generator. ``transform_param`` is refused, as Caffe refuses it. Needs ``h5py``.
"""
from __future__ import annotations

import importlib.util

import numpy as np
import torch

from compress.data.caffe.datum import chw_text
from compress.data.caffe.feeder import Feeder, register_feeder
from compress.errors import CompressError
from compress.savedstate import Fields
from converters.caffe.names import shown, shown_path


def _read_file_list(source: str, where: str) -> list[str]:
    try:
        with open(source, encoding="utf-8") as f:
            names = f.read().split()
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise CompressError(f"{where}: hdf5_data_param.source: cannot read the HDF5 file list "
                            f"{shown_path(source)} ({reason})") from None
    if not names:
        raise CompressError(f"{where}: hdf5_data_param.source: {shown_path(source)} lists no HDF5 files")
    return names


@register_feeder("HDF5Data")
class HDF5DataFeeder(Feeder):
    """An ``HDF5Data`` layer: every top is a dataset of the listed HDF5 files."""

    top_counts = (1, None)

    def _setup(self, layer, memory_limit: int) -> None:
        if importlib.util.find_spec("h5py") is None:
            raise CompressError(f"{self.where}: reading HDF5Data needs the h5py package "
                                "(`pip install h5py`)")
        if layer.HasField("transform_param"):
            raise CompressError(f"{self.where}: HDF5Data does not transform data; remove transform_param "
                                "(Caffe refuses it too)")
        p = layer.hdf5_data_param
        self.batch_size = self._positive(p.batch_size, "hdf5_data_param.batch_size")
        self.source, self.shuffle = p.source, bool(p.shuffle)
        self.files = _read_file_list(p.source, self.where)
        self.file_order = list(range(len(self.files)))
        if self.shuffle:
            self.rng.shuffle(self.file_order)
        self.current_file, self.current_row = 0, 0
        self.row_shape: dict[str, tuple[int, ...]] = {}
        self._load(self.file_order[0])
        self.row_shape = {top: blob.shape[1:] for top, blob in zip(self.tops, self.blobs, strict=True)}
        self.shapes = {top: (self.batch_size, *shape) for top, shape in self.row_shape.items()}

    def _load(self, index: int, permutation: list[int] | None = None) -> None:
        """Read file ``index`` (``LoadHDF5FileData``): its datasets and a fresh row permutation."""
        import h5py

        name = self.files[index]
        where = f"{self.where}: HDF5 file {shown_path(name)} (from {shown_path(self.source)})"
        try:
            with h5py.File(name, "r") as f:
                blobs = [self._dataset(f, top, where) for top in self.tops]
        except OSError as e:
            raise CompressError(f"{where}: cannot read it ({e})") from None
        rows = len(blobs[0])
        for top, blob in zip(self.tops, blobs, strict=True):
            if len(blob) != rows:
                raise CompressError(f"{where}: dataset {shown(top)} has {len(blob)} rows, "
                                    f"{shown(self.tops[0])} has {rows}")
            if top in self.row_shape and blob.shape[1:] != self.row_shape[top]:
                raise CompressError(f"{where}: dataset {shown(top)} rows are {chw_text(blob.shape[1:])}, "
                                    f"those of the first file are {chw_text(self.row_shape[top])}")
        if rows == 0:
            raise CompressError(f"{where}: the datasets have no rows")
        self.blobs = blobs
        if permutation is None:
            permutation = list(range(rows))
            if self.shuffle:
                self.rng.shuffle(permutation)
        self.rows = permutation

    @staticmethod
    def _dataset(f, top: str, where: str) -> np.ndarray:
        if top not in f or not hasattr(f[top], "dtype"):
            raise CompressError(f"{where}: no dataset {shown(top)} (HDF5Data reads one dataset per top)")
        data = f[top]
        if data.dtype.kind not in "fiu" or data.ndim < 1:
            raise CompressError(f"{where}: dataset {shown(top)} is {data.dtype} with {data.ndim} dimensions; "
                                "expected numbers (float or integer) with at least one dimension")
        return np.asarray(data[()], dtype=np.float32)

    def _next(self) -> list[np.ndarray]:
        picks: list[tuple[list[np.ndarray], int]] = []
        for _ in range(self.batch_size):
            picks.append((self.blobs, self.rows[self.current_row]))
            self._skip(self.world)  # past the rows of other ranks
        return [np.stack([blobs[j][row] for blobs, row in picks]) for j in range(len(self.tops))]

    def _skip(self, count: int) -> None:
        for _ in range(count):
            self._advance()

    def _advance(self) -> None:
        """Caffe's ``Next()``: next row; after a file's last row the next file (reshuffled at a wrap)."""
        self.current_row += 1
        if self.current_row < len(self.rows):
            return
        if len(self.files) > 1:
            self.current_file += 1
            if self.current_file == len(self.files):
                self.current_file = 0
                if self.shuffle:
                    self.rng.shuffle(self.file_order)
            self._load(self.file_order[self.current_file])
        self.current_row = 0
        if self.shuffle:
            self.rng.shuffle(self.rows)

    def _state(self) -> dict:
        return {"files": len(self.files), "current_file": self.current_file,
                "current_row": self.current_row,
                "file_order": torch.tensor(self.file_order, dtype=torch.int64),
                "rows": torch.tensor(self.rows, dtype=torch.int64)}

    def _load_state(self, state: Fields) -> None:
        files = state.integer("files", 1)
        if files != len(self.files):
            raise CompressError(f"{state.where}: {self.where}: the saved data state is for a list of {files} "
                                f"HDF5 files, {shown_path(self.source)} has {len(self.files)}")
        file_order = state.tensor("file_order", (files,), torch.int64, 0, files - 1).tolist()
        if len(set(file_order)) != files:
            raise CompressError(f"{state.at('file_order')}: expected an order of the {files} files, found "
                                "repeats")
        current_file = state.integer("current_file", 0, files - 1)
        rows = state.tensor("rows", None, torch.int64, 0, 2**62)
        self._load(file_order[current_file], rows.tolist())  # the file itself says how many rows it has
        if rows.dim() != 1 or len(rows) != len(self.blobs[0]) or len(set(self.rows)) != len(self.rows) \
                or max(self.rows) >= len(self.rows):
            raise CompressError(f"{state.at('rows')}: expected an order of the {len(self.blobs[0])} rows of "
                                f"{shown(self.files[file_order[current_file]])}, found {shown(rows)}")
        self.file_order, self.current_file = file_order, current_file
        self.current_row = state.integer("current_row", 0, len(self.rows) - 1)
