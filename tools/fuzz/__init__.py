"""A seeded fuzzer for everything that loads a model or trains one: caffemodels (current and V1 formats,
mutated at the wire level), prototxts (token, value and graph mutations), model files (dict, zip and
byte mutations), malicious pickles and files that are not models; quantized model files
(``quantized.py``) and their low-bit ONNX exports (``lowbit.py``); solver.prototxt files, train_val
nets and solver states (``training.py``) and LMDB records (``records.py``) in a LeNet set-up
(``lenet_setup.py``).

Every case runs in a forked child under memory and time limits (``runner.py``) and ends in one of
``ok``, ``clean`` (one clear line), ``other``, ``mismatch``, ``memory``, ``timeout``, ``signal`` or
``code``; a loaded net must also run a forward pass whose blob shapes match the inferred ones and
survive a model-file round trip (``campaign.py``), and a command (``commands.py``: ``info``, ``export``,
``eval``, ``verify``, ``train``, ``train --resume``) must print no NaN or infinite figure::

    python -m tools.fuzz --cases 3000 --seed 1     # `make fuzz`; exit status 1 on any non-clean case
    python -m tools.fuzz --seed 1 --case 1234 -v   # replay one case

    from tools.fuzz import run_campaign, summary_table
    results = run_campaign(200, seed=0, jobs=2)
"""
from __future__ import annotations

from tools.fuzz.campaign import CaseResult, failures, run_campaign, summary_table
from tools.fuzz.runner import OUTCOMES, Limits, Verdict, run_limited

__all__ = ["OUTCOMES", "CaseResult", "Limits", "Verdict", "failures", "run_campaign", "run_limited",
           "summary_table"]
