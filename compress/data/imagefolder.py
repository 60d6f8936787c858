"""Image folders with Caffe's ImageNet preprocessing (BVLC AlexNet/CaffeNet recipe).

Layouts: ``root/train/<class>/*`` with ``root/val/<class>/*`` (or ``test/``), or ``root/<class>/*``
split deterministically (every 5th file of each class, in sorted order, is a test sample; also used
when ``root/train`` has no ``val``/``test`` beside it). Classes are the sorted train folder names.

Per image, as Caffe's ``convert_imageset --resize_height=256 --resize_width=256`` plus its data layer:
decode, warp to ``resize`` x ``resize`` (256, aspect ratio not kept, bilinear), BGR order
(``channel_order`` RGB or gray on request), values 0..255, subtract the mean (per-channel values,
ImageNet's 104/117/123 by default for 3 channels, or a ``mean.binaryproto`` image of the resized size),
crop to the net's H x W (random crop and mirror for train, center crop for test), multiply by ``scale``.

Decoding uses Pillow if installed, else OpenCV, else asks for ``pip install Pillow``
(extra ``compress[images]``). The two resize slightly differently (Pillow antialiases when shrinking).
"""
from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from compress.data.base import Loaded, Preprocess, Request, check_classes, parse_preprocess, register_layout
from compress.errors import CompressError
from converters.caffe.names import shown

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".pbm", ".tif", ".tiff", ".webp"}
IMAGENET_MEAN_BGR = (104.0, 117.0, 123.0)
DEFAULT_RESIZE = 256
TEST_EVERY = 5  # single-folder layout: file i of a class is a test sample when i % 5 == 4
Decoder = Callable[[Path, int, bool], np.ndarray]  # (path, size, gray) -> (size, size[, 3]) uint8 BGR


def _decode_pillow(path: Path, size: int, gray: bool) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            a = np.array(im.convert("L" if gray else "RGB").resize((size, size), Image.BILINEAR))
    except (UnidentifiedImageError, OSError) as e:
        raise CompressError(f"{path}: cannot decode image ({e})") from None
    return a if gray else a[..., ::-1]


def _decode_cv2(path: Path, size: int, gray: bool) -> np.ndarray:
    import cv2

    a = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE if gray else cv2.IMREAD_COLOR)
    if a is None:
        raise CompressError(f"{path}: cannot decode image (OpenCV could not read it)")
    return cv2.resize(a, (size, size), interpolation=cv2.INTER_LINEAR)


DECODERS: dict[str, tuple[str, Decoder]] = {"Pillow": ("PIL", _decode_pillow), "cv2": ("cv2", _decode_cv2)}


DECODER_ORDER = ("Pillow", "cv2")


def pick_decoder() -> tuple[str, Decoder]:
    for name in DECODER_ORDER:
        module, fn = DECODERS[name]
        if importlib.util.find_spec(module) is not None:
            return name, fn
    raise CompressError("image folders need an image decoder; install one with `pip install Pillow` "
                        "(or `pip install compress[images]`)")


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file())


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _test_dir(root: Path) -> Path | None:
    return next((root / n for n in ("val", "test") if (root / n).is_dir()), None)


def is_image_folder(root: Path) -> bool:
    return (root / "train").is_dir() or any(
        p.suffix.lower() in IMAGE_EXTS for d in _class_dirs(root) for p in d.rglob("*"))


Sample = tuple[Path, int]


def _samples(root: Path) -> tuple[list[Sample], list[Sample], list[str], str]:
    """(train samples, test samples, class names, layout description)."""
    train_root, test_root = (root / "train", _test_dir(root)) if (root / "train").is_dir() else (root, None)
    classes = [d.name for d in _class_dirs(train_root)]
    if not classes:
        raise CompressError(f"{train_root}: expected one subfolder per class, found none")
    index = {c: i for i, c in enumerate(classes)}
    per_class = [[(p, index[c]) for p in _images(train_root / c)] for c in classes]
    if test_root is None:
        last = TEST_EVERY - 1
        train = [s for cls in per_class for k, s in enumerate(cls) if k % TEST_EVERY != last]
        test = [s for cls in per_class for k, s in enumerate(cls) if k % TEST_EVERY == last]
        layout = f"{train_root.name}/<class> split 1 in {TEST_EVERY} per class"
    else:
        extra = [d.name for d in _class_dirs(test_root) if d.name not in index]
        if extra:
            raise CompressError(f"{test_root}: class folder(s) {', '.join(extra[:5])} are not in "
                                f"{train_root}")
        train = [s for cls in per_class for s in cls]
        test = [(p, index[d.name]) for d in _class_dirs(test_root) for p in _images(d)]
        layout = f"train/<class> + {test_root.name}/<class>"
    for split, samples in (("train", train), ("test", test)):
        if not samples:
            raise CompressError(f"{root}: no {split} images ({', '.join(sorted(IMAGE_EXTS))}) "
                                f"in the {layout} layout")
    return train, test, classes, layout


def _mean_array(pp: Preprocess, c: int, size: int, where: str) -> np.ndarray | None:
    if pp.mean is None:
        return None
    if isinstance(pp.mean, tuple):
        if len(pp.mean) != c:
            raise CompressError(f"{where}: preprocess mean has {len(pp.mean)} values, the net's input "
                                f"has {c} channels")
        return np.asarray(pp.mean, np.float32).reshape(c, 1, 1)
    try:
        from converters.caffe.binaryproto import read_mean
    except ImportError:
        raise CompressError(f"{pp.mean}: reading a mean.binaryproto needs converters.caffe.binaryproto, "
                            "which is not available in this install") from None
    mean = np.asarray(read_mean(pp.mean), np.float32)
    if mean.shape != (c, size, size):
        raise CompressError(f"{pp.mean}: mean image is {tuple(mean.shape)}, expected ({c}, {size}, {size})"
                            f" to match images resized to {size}x{size} (set preprocess resize)")
    return mean


class ImageFolderDataset(Dataset):
    """Decodes and preprocesses one image per item; random crop/mirror draw from a seeded generator."""

    def __init__(self, samples: list[Sample], chw: tuple[int, int, int], pp: Preprocess,
                 mean: np.ndarray | None, train: bool, seed: int, decode: Decoder):
        self.samples, self.chw, self.pp, self.train, self.decode = samples, chw, pp, train, decode
        self.mean = None if mean is None else torch.from_numpy(mean)
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.samples)

    def _randint(self, high: int) -> int:
        return int(torch.randint(0, high, (1,), generator=self.generator))

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        path, label = self.samples[i]
        c, h, w = self.chw
        size = self.pp.resize or DEFAULT_RESIZE
        img = self.decode(path, size, c == 1)
        x = torch.from_numpy(np.ascontiguousarray(img)).float()
        x = x.unsqueeze(0) if c == 1 else x.permute(2, 0, 1)
        if self.pp.channel_order == "RGB":
            x = x.flip(0)
        if self.mean is not None:
            x = x - self.mean
        top, left = ((self._randint(size - h + 1), self._randint(size - w + 1)) if self.train
                     else ((size - h) // 2, (size - w) // 2))
        x = x[:, top:top + h, left:left + w]
        if self.train and self._randint(2):
            x = x.flip(2)
        return (x * self.pp.scale).contiguous(), torch.tensor(label, dtype=torch.int64)


def _reseed_worker(worker_id: int) -> None:
    """Give each loader worker its own crop stream, derived from the loader's seed."""
    ds = get_worker_info().dataset
    ds = getattr(ds, "dataset", ds)  # through a Subset (limit)
    ds.generator.manual_seed(torch.initial_seed() % (2**63))


@register_layout("imagefolder", is_image_folder, "image folder: train/<class>/ + val/<class>/, or <class>/")
def load_image_folder(root: Path, req: Request) -> Loaded:
    c, h, w = req.chw
    where = str(root)
    if c not in (1, 3):
        raise CompressError(f"{where}: image folders give 1 or 3 channels, the net's input has {c}")
    defaults = Preprocess(scale=1.0, mean=IMAGENET_MEAN_BGR if c == 3 else None,
                          channel_order="BGR" if c == 3 else "gray", resize=DEFAULT_RESIZE)
    pp = parse_preprocess(req.preprocess, defaults, where)
    if (pp.channel_order == "gray") != (c == 1):
        raise CompressError(f"{where}: channel_order {shown(pp.channel_order)} does not fit the net's {c} "
                            "input channel(s)")
    if pp.channel_order == "RGB" and pp.mean == IMAGENET_MEAN_BGR and "mean" not in (req.preprocess or {}):
        pp = Preprocess(pp.scale, IMAGENET_MEAN_BGR[::-1], pp.channel_order, pp.resize)
    size = pp.resize or DEFAULT_RESIZE
    if h > size or w > size:
        raise CompressError(f"{where}: the net's input {h}x{w} is larger than the resize {size}x{size}; "
                            "set preprocess resize")
    decoder_name, decode = pick_decoder()
    train, test, classes, layout = _samples(root)
    mean = _mean_array(pp, c, size, where)
    return Loaded(ImageFolderDataset(train, req.chw, pp, mean, True, req.seed, decode),
                  ImageFolderDataset(test, req.chw, pp, mean, False, req.seed, decode),
                  f"imagefolder:{root}", check_classes(len(classes), req.num_classes, where), pp,
                  {"source": "imagefolder", "root": str(root), "layout": layout, "classes": classes,
                   "decoder": decoder_name}, worker_init_fn=_reseed_worker, classes_found=len(classes))
