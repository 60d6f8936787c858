"""Structure of a net beyond its layers: the channel dependency graph (``graph.py``, with one rule per
Caffe layer type in ``rules.py``), exact thinning on it (``thin.py``) and BatchNorm folding (``fold.py``).
Pruning, thinning, folding and the reports all consult the same graph."""
