"""The training engine: the one loop under pruning, quantization and Caffe's solver.

    trainer.py      the loop (TrainConfig, train): segments, steps, evaluation, log, checkpoints, resume
    hooks.py        MethodHooks, what the loop calls on a method (prune/ and quant/ implement it);
                    PlainTraining, no method
    weights.py      masks on the weights and gradients, a temporary view of the weights for evaluation
    task.py         what is trained and scored (ClassifierTask: cross-entropy on (x, y) batches)
    loaders.py      the training flags' front door: the model and its data loaders (LoaderFront, DataSpec)
    schedule.py     segments and learning-rate schedules
    checkpoint.py   checkpoint files, generator states, the weights digest that names a run's model
    progress.py     what a run prints
    distributed.py  torchrun: process group, DDP, sharded data
    distill.py      knowledge distillation

Floors: the engine imports the converters, the data sources and the package's own helpers (``compress.
layers``, ``compress.logits``, ``compress.evaluate``...); never a technique (``compress.prune``,
``compress.quant``, ``compress.solver``), which all sit on top of it (``python -m tools.imports`` checks
that no import circle closes).
"""
