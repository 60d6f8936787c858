"""compress: Caffe-compatible model compression (ADMM, RVSM, RGSM pruning; sparse ONNX export)."""
from __future__ import annotations

from setuptools import find_packages, setup

setup(
    name="compress",
    version="0.1.0",
    description="Caffe-compatible CNN compression: Caffe import, ADMM/RVSM/RGSM pruning, sparse ONNX",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["compress*", "converters*", "zoo*"]),
    package_data={"zoo": ["*.prototxt", "*.caffemodel", "presets/*.json", "presets/*.yaml",
                          "train/*/*.prototxt"],
                  "converters.caffe.proto": ["*.proto"]},
    install_requires=[
        # The upper bound makes a fresh install take the local CPU wheel instead of the newest
        # CUDA build; any torch a user already has in this range (CUDA builds included) is kept.
        "torch>=2.2,<2.14",
        "onnx>=1.20",  # INT2/UINT2 tensors and opset 25 (2-bit weights); INT4 from opset 21
        "ml_dtypes>=0.5",  # int2/int4 numpy types that onnx.numpy_helper packs into raw_data
        # measured on the packed exports: 1.24.1 runs IR 13 / opset 25 (INT2 DequantizeLinear, UINT2 Cast);
        # 1.23 runs the 4-bit ones (Cast from INT4/UINT4 in the sparse decoding) but not IR 13;
        # 1.19-1.22 only dense INT4 DequantizeLinear
        "onnxruntime>=1.24.1",
        "protobuf>=7.34",  # fast repeated-float access via np.array(field); see README
        "numpy>=1.24",
        "click>=8.1",
        "PyYAML>=6",  # --targets FILE.yaml
        "lmdb>=1.4",  # Caffe Data layers (backend: LMDB)
    ],
    extras_require={
        # both image decoders; h5py for the HDF5Data layer tests
        "test": ["pytest>=7", "opencv-python-headless>=4.5,<5", "ruff", "Pillow", "h5py"],
        "plot": ["matplotlib"],
        "images": ["Pillow"],  # image-folder datasets (cv2 is used instead when installed)
    },
    entry_points={"console_scripts": ["compress=compress.cli:main"]},
)
