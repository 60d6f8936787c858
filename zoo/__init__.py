"""Models shipped with the tool: net definitions (prototxt), trained weights where they ship, presets.

An entry names its deploy prototxt, its weights file (``zoo/<name>.caffemodel``, optional: the nets
trained by this tool ship them), the Caffe preprocessing its weights expect (the model file's
``meta["preprocess"]``), and the pruning presets in ``zoo/presets/<name>.json``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

ZOO_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class ZooEntry:
    name: str
    description: str
    preprocess: dict = field(default_factory=dict)
    dataset: str | None = None  # the data its shipped weights were trained on (a --data spec)
    accuracy: float | None = None  # their top-1 on that data's whole test split, measured by compress eval
    alpha: float | None = None  # a MobileNet's width multiplier (the seed's table has a column for it)

    @property
    def prototxt(self) -> Path:
        return ZOO_DIR / f"{self.name}.prototxt"

    @property
    def weights(self) -> Path:
        """Trained weights; check :attr:`has_weights` (they do not ship for every net)."""
        return ZOO_DIR / f"{self.name}.caffemodel"

    @property
    def has_weights(self) -> bool:
        return self.weights.is_file()

    @property
    def presets_file(self) -> Path:
        return ZOO_DIR / "presets" / f"{self.name}.json"

    def presets(self) -> list[str]:
        """Names of the pruning presets shipped for this net (empty when there are none)."""
        if not self.presets_file.is_file():
            return []
        try:
            return sorted(json.loads(self.presets_file.read_text(encoding="utf-8")))
        except (ValueError, TypeError):
            return []


GRAY_256 = {"scale": 0.00390625, "mean": None, "channel_order": "gray"}  # Caffe's MNIST convention

ZOO: dict[str, ZooEntry] = {
    e.name: e
    for e in (
        ZooEntry("lenet", "Caffe's MNIST LeNet (conv 20/50 5x5, ip 500/10); input 1x1x28x28 scaled by 1/256",
                 GRAY_256, "mnist", 0.9916),
        *(ZooEntry(f"mobilenet_v1_{a}", f"MobileNet-v1 (width {a}) for 28x28 grey input: depthwise + "
                   "pointwise convolutions with BatchNorm/Scale, 10 classes; trained on Fashion-MNIST by "
                   f"compress train (zoo/train/mobilenet_v1_{a})", GRAY_256, "fashion-mnist", acc, float(a))
          for a, acc in (("0.25", 0.9279), ("0.5", 0.9320))),
        ZooEntry("resnet20", "CIFAR-style ResNet-20 (16/32/64 filters, BatchNorm/Scale, Eltwise SUM "
                 "shortcuts, 1x1 projection where the shape changes) for 28x28 grey input, 10 classes; "
                 "trained on Fashion-MNIST by compress train (zoo/train/resnet20)", GRAY_256,
                 "fashion-mnist", 0.9424),
        ZooEntry("alexnet", "BVLC AlexNet deploy (ImageNet, 1000 classes); input 10x3x227x227 BGR 0-255 "
                            "minus mean",
                 {"scale": 1.0, "mean": [104.0, 117.0, 123.0], "channel_order": "BGR", "resize": 256}),
    )
}


def names() -> list[str]:
    return list(ZOO)


def get(name: str) -> ZooEntry:
    """The entry called ``name``; an unknown name is a ValueError listing the zoo."""
    try:
        return ZOO[name]
    except KeyError:
        raise ValueError(f"no zoo model named {name!r}; the zoo has: {', '.join(ZOO)}") from None
