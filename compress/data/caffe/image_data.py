"""``ImageData``: images named in a list file, through ``transform_param`` (BVLC ``image_data_layer.cpp``).

``image_data_param.source`` is a text file of ``PATH LABEL`` lines (split at the last space; blank
lines are skipped). Each image is ``root_folder + PATH`` (plain concatenation, as Caffe does, so
``root_folder`` usually ends with ``/``), read with ``cv::imread`` in colour (BGR) or grey
(``is_color``), resized to ``new_height`` x ``new_width`` when both are set (OpenCV's bilinear), then
transformed. Without ``shuffle`` the list is read in order and wraps at the end; with it the list is
shuffled once at set-up and again every time the cursor wraps (``ShuffleImages``). ``rand_skip``
starts at a random line below it. Under torchrun each rank reads its share of the lines
(:meth:`Feeder.shard`; Caffe 1.0's ImageData has none: every GPU read every image). Decoded images
are kept in memory up to ``memory_limit`` bytes, so later epochs need not decode them again (the images are
identical either way).
"""
from __future__ import annotations

import numpy as np
import torch

from compress.data.caffe.feeder import Feeder, register_feeder
from compress.data.caffe.image import imread, resize, to_chw
from compress.data.caffe.rng import CaffeRng
from compress.data.caffe.transform import Transformer, transform_config
from compress.errors import CompressError
from compress.savedstate import Fields
from converters.caffe.names import shown, shown_path


def read_image_list(source: str, where: str) -> list[tuple[str, int]]:
    """``(path, label)`` per line of an ImageData list file."""
    try:
        with open(source, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise CompressError(f"{where}: image_data_param.source: cannot read the image list "
                            f"{shown_path(source)} ({reason})") from None
    lines = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        path, _, label = line.rstrip("\r").rpartition(" ")
        try:
            lines.append((path, int(label)))
        except ValueError:
            raise CompressError(f"{source}:{number}: expected 'PATH LABEL' with an integer label, "
                                f"found {shown(line)}") from None
        if not path:
            raise CompressError(f"{source}:{number}: expected 'PATH LABEL', found {shown(line)}")
    if not lines:
        raise CompressError(f"{where}: image_data_param.source: the image list {shown_path(source)} is empty")
    return lines


@register_feeder("ImageData")
class ImageDataFeeder(Feeder):
    """An ``ImageData`` layer: a list file of image paths and labels."""

    top_counts = (2, 2)

    def _setup(self, layer, memory_limit: int) -> None:
        p = layer.image_data_param
        if (p.new_height == 0) != (p.new_width == 0):
            raise CompressError(f"{self.where}: image_data_param new_height and new_width must be set "
                                f"together, found {p.new_height} and {p.new_width}")
        self.batch_size = self._positive(p.batch_size, "image_data_param.batch_size")
        self.size = (int(p.new_height), int(p.new_width))
        self.color, self.root, self.shuffle = bool(p.is_color), p.root_folder, bool(p.shuffle)
        self.lines = read_image_list(p.source, self.where)
        self.source = p.source
        # Caffe seeds the shuffling generator and picks rand_skip from its global generator: here
        # both come from the layer's seed, the transformer's draws from self.rng.
        self.shuffle_rng = CaffeRng(int(self.rng.raw(1)[0]))
        self.order = list(range(len(self.lines)))
        if self.shuffle:
            self.shuffle_rng.shuffle(self.order)
        self.cursor = 0
        if p.rand_skip:
            skip = int(self.rng.rand(p.rand_skip))
            if skip >= len(self.lines):
                raise CompressError(f"{self.where}: rand_skip drew {skip}, but {shown_path(p.source)} has "
                                    f"only {len(self.lines)} images")
            self.cursor = skip
        self.transformer = Transformer(transform_config(layer, self.where), self.phase, self.where)
        self._cache: dict[int, np.ndarray] = {}
        self._budget = memory_limit
        first = self._image(self.order[self.cursor])
        chw = self.transformer.setup(first.shape, self._where(self.order[self.cursor]))
        self.shapes = {self.tops[0]: (self.batch_size, *chw), self.tops[1]: (self.batch_size,)}

    def _next(self) -> list[np.ndarray]:
        images, labels = [], np.empty(self.batch_size, np.int64)
        for i in range(self.batch_size):
            index = self.order[self.cursor]
            img = self._image(index)
            self.transformer.check(img.shape, self._where(index))
            images.append(img)
            labels[i] = self.lines[index][1]
            self._skip(self.world)  # the images of other ranks are not decoded
        uniform = all(img.shape == images[0].shape for img in images)
        return [self.transformer(np.stack(images) if uniform else images, self.rng), labels]

    def _skip(self, count: int) -> None:
        for _ in range(count):
            self.cursor += 1
            if self.cursor >= len(self.lines):
                self.cursor = 0
                if self.shuffle:
                    self.shuffle_rng.shuffle(self.order)

    def _image(self, index: int) -> np.ndarray:
        """Line ``index``'s image, (C, H, W) uint8, decoded and resized (or from the cache)."""
        img = self._cache.get(index)
        if img is None:
            where = self._where(index)
            img = imread(self.root + self.lines[index][0], self.color, where)
            if self.size != (0, 0):
                img = resize(img, *self.size)
            img = np.ascontiguousarray(to_chw(img))
            if img.nbytes <= self._budget:
                self._cache[index] = img
                self._budget -= img.nbytes
        return img

    def _where(self, index: int) -> str:
        path = self.root + self.lines[index][0]
        return f"{self.where}: image {shown_path(path)} (entry {index + 1} of {shown_path(self.source)})"

    def _state(self) -> dict:
        return {"cursor": self.cursor, "lines": len(self.lines),
                "order": torch.tensor(self.order, dtype=torch.int64),
                "shuffle_rng": self.shuffle_rng.state_dict()}

    def _load_state(self, state: Fields) -> None:
        lines = state.integer("lines", 1)
        if lines != len(self.lines):
            raise CompressError(f"{state.where}: {self.where}: the saved data state is for a list of {lines} "
                                f"images, {shown_path(self.source)} has {len(self.lines)}")
        order = state.tensor("order", (lines,), torch.int64, 0, lines - 1)
        if len(set(order.tolist())) != lines:
            raise CompressError(f"{state.at('order')}: expected an order of the {lines} images, found "
                                "repeats")
        cursor = state.integer("cursor", 0, lines - 1)
        self.shuffle_rng.load_state_dict(state.get("shuffle_rng"), state.at("shuffle_rng"))
        self.cursor, self.order = cursor, order.tolist()
