"""Torch-free shape inference of Caffe nets: what ``compress info`` and ``compress zoo list`` show, in
milliseconds and without importing torch.

``base.py`` is the registry (one pure function per layer type: top and blob shapes from the layer's
parameters and bottom shapes), one module per layer family beside it (the same families as
``converters/caffe/layers/``, whose converters call the parameter checks defined here), and
``plan.py`` walks a net as the torch builder does (``netinit.py``'s phase filtering, inputs and blob
checks, shared with it)::

    >>> from converters.caffe.prototxt import read_net_text
    >>> from converters.caffe.shapes.plan import plan_shapes
    >>> plan = plan_shapes(read_net_text("zoo/lenet.prototxt"))
    >>> plan.shapes["prob"], plan.param_count()
    ((1, 10), 431080)
"""
