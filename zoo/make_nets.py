"""The Fashion-MNIST zoo nets as Caffe files: MobileNet-v1 (width 0.25, 0.5) and a CIFAR-style ResNet-20.

    python -m zoo.make_nets [--check]

writes, for each net, the deploy ``zoo/<name>.prototxt`` (an ``Input`` of 1x1x28x28) and the training
recipe ``zoo/train/<name>/train_val.prototxt`` + ``solver.prototxt``, the files ``compress train`` reads
(run from the repository root, as Caffe's own examples run from Caffe's root). ``--check`` writes nothing and
fails when a committed file differs from what this script makes.

Choices (the README's Fashion-MNIST section says why):

- **MobileNet-v1** (Howard et al. 2017) at width multiplier alpha: a 3x3 convolution of ``32 alpha`` filters,
  then the paper's 13 depthwise-separable blocks (a 3x3 depthwise Convolution with ``group`` = channels, then
  a 1x1 pointwise Convolution), every convolution followed by BatchNorm + Scale + ReLU as Caffe MobileNets are
  written, global average pooling and a 10-way InnerProduct. For 28x28 grey input the first convolution has
  stride 1 (ImageNet's has 2): the four stride-2 blocks take 28 to 14, 7, 4 and 2.
- **ResNet-20** (He et al. 2016, section 4.2): a 3x3 convolution of 16 filters, three stages of three basic
  blocks (16, 32, 64 filters; the first block of stages 2 and 3 has stride 2), global average pooling, a
  10-way InnerProduct; BatchNorm + Scale after every convolution, Eltwise SUM shortcuts. Where a block changes
  the shape, the shortcut is **option B**: a 1x1 stride-2 convolution + BatchNorm + Scale (a projection, as
  Caffe's ResNets are written); elsewhere the identity. 28x28 becomes 14x14 and 7x7.
- Convolutions have no bias (the Scale after BatchNorm holds it); weights start from ``msra`` (He et al.'s
  initialisation), InnerProduct from ``xavier``.
- **Data**: Caffe's DataTransformer has no padded random crop, so the training LMDB holds each 28x28 image
  zero-padded to 32x32 (``python -m compress.data.caffe.mnist_lmdb data/fashion-mnist --dataset
  fashion-mnist``, which writes ``fashion_mnist_train_pad2_lmdb``) and the TRAIN layer takes a random
  28x28 crop of it (``crop_size: 28``) and mirrors half of the images (``mirror: true``): exactly a padded
  random crop of up to 2 pixels with a left-right flip. The TEST layer reads the plain 28x28 test LMDB,
  uncropped and unmirrored. Pixels are scaled by 1/256 as Caffe's MNIST nets do (no mean: BatchNorm
  follows the first convolution).
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

ZOO_DIR = Path(__file__).resolve().parent
LMDB_DIR = "data/fashion-mnist"
TRAIN_LMDB = f"{LMDB_DIR}/fashion_mnist_train_pad2_lmdb"
TEST_LMDB = f"{LMDB_DIR}/fashion_mnist_test_lmdb"
MOBILENET_BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
                    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))


class Net:
    """Prototxt text built layer by layer; ``deploy`` and ``train_val`` differ only in the head and tail."""

    def __init__(self) -> None:
        self.layers: list[str] = []

    def add(self, name: str, type_: str, bottoms: list[str], tops: list[str], body: str = "") -> str:
        lines = [f'  name: "{name}"', f'  type: "{type_}"']
        lines += [f'  bottom: "{b}"' for b in bottoms] + [f'  top: "{t}"' for t in tops]
        if body:
            lines += ["  " + line for line in body.strip("\n").split("\n")]
        self.layers.append("layer {\n" + "\n".join(lines) + "\n}\n")
        return tops[0]

    def conv(self, name: str, bottom: str, num_output: int, kernel: int, stride: int = 1,
             group: int = 1) -> str:
        pad = kernel // 2
        body = (f"param {{ lr_mult: 1 decay_mult: {0 if group > 1 else 1} }}\n"
                f"convolution_param {{\n  num_output: {num_output}\n  bias_term: false\n"
                f"  kernel_size: {kernel}\n  pad: {pad}\n  stride: {stride}\n"
                + (f"  group: {group}\n" if group > 1 else "")
                + '  weight_filler { type: "msra" }\n}')
        return self.add(name, "Convolution", [bottom], [name], body)

    def bn_scale(self, name: str, x: str) -> str:
        """BatchNorm (statistics from the phase: batch in TRAIN, stored in TEST) and Scale, in place."""
        self.add(f"{name}/bn", "BatchNorm", [x], [x],
                 "param { lr_mult: 0 decay_mult: 0 }\n" * 3)
        self.add(f"{name}/scale", "Scale", [x], [x],
                 "param { lr_mult: 1 decay_mult: 0 }\nparam { lr_mult: 1 decay_mult: 0 }\n"
                 "scale_param { bias_term: true }")
        return x

    def relu(self, name: str, x: str) -> str:
        return self.add(f"{name}/relu", "ReLU", [x], [x])

    def conv_bn(self, name: str, bottom: str, num_output: int, kernel: int, stride: int = 1,
                group: int = 1, relu: bool = True) -> str:
        x = self.bn_scale(name, self.conv(name, bottom, num_output, kernel, stride, group))
        return self.relu(name, x) if relu else x

    def head(self, bottom: str, classes: int = 10) -> str:
        self.add("pool", "Pooling", [bottom], ["pool"], "pooling_param { pool: AVE global_pooling: true }")
        return self.add("fc", "InnerProduct", ["pool"], ["fc"],
                        "param { lr_mult: 1 decay_mult: 1 }\nparam { lr_mult: 2 decay_mult: 0 }\n"
                        f"inner_product_param {{\n  num_output: {classes}\n"
                        '  weight_filler { type: "xavier" }\n  bias_filler { type: "constant" }\n}')


def mobilenet_v1(net: Net, x: str, alpha: float) -> str:
    def width(c: int) -> int:
        return max(8, int(c * alpha))

    x = net.conv_bn("conv1", x, width(32), 3)
    channels = width(32)
    for i, (out, stride) in enumerate(MOBILENET_BLOCKS, start=2):
        x = net.conv_bn(f"conv{i}/dw", x, channels, 3, stride, group=channels)
        x = net.conv_bn(f"conv{i}/sep", x, width(out), 1)
        channels = width(out)
    return net.head(x)


def resnet20(net: Net, x: str) -> str:
    x = net.conv_bn("conv1", x, 16, 3)
    channels = 16
    for stage, width in enumerate((16, 32, 64), start=1):
        for block in range(1, 4):
            name = f"res{stage}_{block}"
            stride = 2 if stage > 1 and block == 1 else 1
            y = net.conv_bn(f"{name}/conv1", x, width, 3, stride)
            y = net.conv_bn(f"{name}/conv2", y, width, 3, relu=False)
            shortcut = x
            if stride != 1 or width != channels:
                shortcut = net.conv_bn(f"{name}/proj", x, width, 1, stride, relu=False)
            x = net.add(f"{name}/sum", "Eltwise", [shortcut, y], [name],
                        "eltwise_param { operation: SUM }")
            x = net.relu(name, x)
            channels = width
    return net.head(x)


@dataclass(frozen=True)
class Recipe:
    """A net and its solver: SGD with momentum, a linear (``poly``, power 1) decay to 0 over the run."""

    name: str
    caffe_name: str
    build: object  # (Net, bottom) -> the logits blob
    epochs: int
    base_lr: float
    weight_decay: float
    batch_size: int = 128

    @property
    def max_iter(self) -> int:
        return self.epochs * 60000 // self.batch_size

    def net(self, phase: str) -> str:
        n = Net()
        if phase == "deploy":
            n.add("data", "Input", [], ["data"], "input_param { shape: { dim: 1 dim: 1 dim: 28 dim: 28 } }")
        else:
            train = "scale: 0.00390625\n  mirror: true\n  crop_size: 28"
            for ph, source, batch, transform in (("TRAIN", TRAIN_LMDB, self.batch_size, train),
                                                 ("TEST", TEST_LMDB, 100, "scale: 0.00390625")):
                n.add("data", "Data", [], ["data", "label"],
                      f"include {{ phase: {ph} }}\ntransform_param {{\n  {transform}\n}}\n"
                      f'data_param {{\n  source: "{source}"\n  batch_size: {batch}\n  backend: LMDB\n}}')
        logits = self.build(n, "data")
        if phase == "deploy":
            n.add("prob", "Softmax", [logits], ["prob"])
        else:
            n.add("loss", "SoftmaxWithLoss", [logits, "label"], ["loss"])
            n.add("accuracy", "Accuracy", [logits, "label"], ["accuracy"], "include { phase: TEST }")
        return f'name: "{self.caffe_name}"\n' + "".join(n.layers)

    def solver(self) -> str:
        folder = f"zoo/train/{self.name}"
        return (f'# {self.name} on Fashion-MNIST: {self.epochs} epochs of {self.batch_size} images '
                f'({self.max_iter} iterations), linear decay\n'
                f'net: "{folder}/train_val.prototxt"\n'
                f"test_iter: 100\ntest_interval: {60000 // self.batch_size * 5}\n"
                "test_initialization: false  # BatchNorm has no statistics before the first iteration\n"
                f"base_lr: {self.base_lr}\nmomentum: 0.9\nweight_decay: {self.weight_decay}\n"
                f'lr_policy: "poly"\npower: 1.0\n'
                f"display: 100\nmax_iter: {self.max_iter}\n"
                f"snapshot: {60000 // self.batch_size * 5}\n"
                f'snapshot_prefix: "runs/{self.name}/{self.name}"\n'
                f"random_seed: 1\nsolver_mode: CPU\n")


RECIPES = {
    r.name: r for r in (
        Recipe("mobilenet_v1_0.5", "MobileNet-v1-0.5-FashionMNIST",
               lambda n, x: mobilenet_v1(n, x, 0.5), epochs=40, base_lr=0.1, weight_decay=5e-4),
        Recipe("mobilenet_v1_0.25", "MobileNet-v1-0.25-FashionMNIST",
               lambda n, x: mobilenet_v1(n, x, 0.25), epochs=40, base_lr=0.1, weight_decay=5e-4),
        Recipe("resnet20", "ResNet-20-FashionMNIST", resnet20, epochs=40, base_lr=0.1, weight_decay=5e-4),
    )
}


# Element-pruning presets (issue targets): ``name -> (overall ratio, description)``. The first convolution
# (a few hundred weights on the grey input), every depthwise convolution (2.7% of MobileNet's weights, 9 per
# filter: pruning them saves little and cuts whole channels' receptive fields) and ResNet's classifier
# (640 weights) stay dense; every other Convolution/InnerProduct keeps one ratio, chosen so that the whole
# net keeps 1/overall of its weights. BatchNorm/Scale hold no prunable weights (they scale channels:
# removing those is channel pruning, docs/STRUCTURED.md).
PRESETS = {"mobilenet_v1_0.5": {"admm-5x": 5.0}, "mobilenet_v1_0.25": {"admm-5x": 5.0},
           "resnet20": {"admm-10x": 10.0}}


def preset_keep(name: str, overall: float) -> dict[str, float]:
    """``{layer: keep ratio}`` for ``overall``x fewer weights under the rule above (3 decimals, rounded
    down so that the preset reaches at least ``overall``)."""
    import math

    from converters.caffe.prototxt import parse_net_text
    from converters.caffe.shapes.plan import plan_shapes

    plan = plan_shapes(parse_net_text(RECIPES[name].net("deploy")))
    grouped = {layer.name for layer in plan.layers
               if layer.type == "Convolution" and layer.convolution_param.group > 1}
    sizes = {n.name: math.prod(n.blob_shapes[0]) for n in plan.nodes
             if n.type in ("Convolution", "InnerProduct")}
    dense = {n for n in sizes if n in grouped or n == "conv1" or (name == "resnet20" and n == "fc")}
    kept_dense = sum(sizes[n] for n in dense)
    rest = sum(v for n, v in sizes.items() if n not in dense)
    ratio = math.floor((sum(sizes.values()) / overall - kept_dense) / rest * 1000) / 1000
    return {n: ratio for n in sizes if n not in dense}


def presets_text(name: str) -> str:
    import json

    out = {}
    for preset, overall in PRESETS[name].items():
        keep = preset_keep(name, overall)
        out[preset] = {"description": f"{name} on Fashion-MNIST, {overall:g}x fewer weights: every "
                                      f"convolution and inner product keeps {next(iter(keep.values())):.1%} "
                                      "but the first convolution, the depthwise ones and ResNet's "
                                      "classifier (dense); zoo/make_nets.py says why",
                       "keep": keep}
    return json.dumps(out, indent=2) + "\n"


def files() -> dict[Path, str]:
    """Every file this script makes: path -> text."""
    out = {}
    for r in RECIPES.values():
        out[ZOO_DIR / f"{r.name}.prototxt"] = r.net("deploy")
        out[ZOO_DIR / "train" / r.name / "train_val.prototxt"] = r.net("train_val")
        out[ZOO_DIR / "train" / r.name / "solver.prototxt"] = r.solver()
        if r.name in PRESETS:
            out[ZOO_DIR / "presets" / f"{r.name}.json"] = presets_text(r.name)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zoo.make_nets", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="compare with the committed files, write nothing")
    args = parser.parse_args(argv)
    stale = []
    for path, text in files().items():
        if args.check:
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                stale.append(str(path))
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path}")
    if stale:
        print("out of date (run python -m zoo.make_nets): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
