"""Developer tools run from the repository root (``python -m tools.<name>``); not installed with the package.

    imports        the import graph of compress/ and converters/, and the check that it has no circle
    same_outputs   the LeNet smoke runs of every method and compress train, compared bit for bit
    fuzz           the fuzz campaign (``make fuzz``): mutated inputs run in forked children
"""
