"""A command's outputs checked against everything it reads, before anything is loaded.

A model named on the command line reads more files than its own path: a ``.caffemodel`` reads its
``--prototxt`` or the ``.prototxt`` beside it (else the zoo definitions it is matched against), a zoo
name reads the zoo's files. :func:`model_files` lists them as :func:`compress.modelfile.load_model`
resolves them, and :func:`check_outputs` refuses an output that is one of them (writing it would
destroy the input: ``compress export m.pt -o m.pt``), an unwritable output, or two outputs that are
one file (``converters.atomic.check_output_paths``).
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

PathLike = str | os.PathLike


def model_files(spec: PathLike, prototxt: PathLike | None = None) -> list[Path]:
    """The files loading ``spec`` (model file, ``.caffemodel``, ``.prototxt`` or zoo name) may read."""
    import zoo

    path = Path(spec)
    files = [path] + ([Path(prototxt)] if prototxt is not None else [])
    if not path.exists() and str(spec) in zoo.ZOO:
        entry = zoo.ZOO[str(spec)]
        files += [entry.prototxt, entry.weights]
    elif path.suffix.lower() == ".caffemodel" and prototxt is None:
        files.append(path.with_suffix(".prototxt"))
        files += [entry.prototxt for entry in zoo.ZOO.values()]  # matched by layer names and shapes
    return files


def check_outputs(outputs: Iterable[PathLike | None], *,
                  models: Iterable[tuple[PathLike, PathLike | None]] = (),
                  files: Iterable[PathLike | None] = ()) -> list[Path]:
    """Check every output (None entries skipped) against the files of ``models`` (``(spec, prototxt)``
    pairs) and the other input ``files``; returns the outputs as Paths. Raises OutputPathError."""
    from converters.atomic import check_output_paths

    inputs: list[PathLike | None] = list(files)
    for spec, prototxt in models:
        inputs += model_files(spec, prototxt)
    return check_output_paths(outputs, inputs=inputs)
