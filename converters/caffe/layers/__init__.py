"""Caffe layer converters, one module per layer family. ``base._load_all`` imports them (each registers
its types) when the registry is first consulted: importing the package alone imports no torch, so that
``base``, ``common``, ``io`` and ``fillers`` serve the torch-free shape inference as well."""
