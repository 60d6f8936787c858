"""Every pruning method's name and hyperparameters, declared without torch.

``compress prune`` builds its flags from :data:`PARAMS`, so that its ``--help`` and its usage errors
(``--bogus``, a missing argument) answer before torch is imported (seconds). Each method class takes its
``params`` from here (``params = PARAMS["admm"]``) and reads nothing else; a test checks that the
registry (``compress.prune.methods``) and this table name the same methods, in the same order.
"""
from __future__ import annotations

from compress.params import Param

EPOCHS = Param("epochs", int, 1, "Method-phase epochs", low=0)  # the base Method's (and default's)

#: how the relaxed methods pull w towards u, and whether w is replaced by u at epoch ends (the seed's
#: variants, measured side by side on LeNet/MNIST in the README)
PULL = Param("pull", str, "optimizer", "How w is pulled towards u: optimizer = beta (w - u) added to the "
             "gradient (momentum carries it), seed = w -= lr beta (w - u) outside the optimizer",
             choices=("optimizer", "seed"))
RESET = Param("reset", str, "never", "Replace the dense w by the sparse u: never, or after every epoch "
              "(the seed code)", choices=("never", "epoch"))
PENALTIES = ("l0", "l1", "tl1")

PARAMS: dict[str, tuple[Param, ...]] = {
    # Measured on LeNet/MNIST at admm-71x (README "Results", bench/lenet_methods.py): the best of the
    # schedules tried, 15 iterations of 1 epoch with rho 1e-3 .. 0.05, then 45 epochs of masked retrain
    # at weight decay 1e-4 (the 6,050 kept weights underfit at 5e-4: 99.16-99.24% over three runs; at 1e-4
    # seeds 0, 1, 2 gave 99.33, 99.24, 99.30%). --progressive at admm-150x: 4 stages (the last step from
    # 51.0x to 153.8x; seeds 0, 1, 2: 99.28, 99.22, 99.30%) rather than 3 (from 34.3x: 99.30, 99.20,
    # 99.15%), see README "Past 150x".
    "admm": (
        Param("rho", float, 1e-3, "ADMM penalty per layer", low=0, low_open=True),
        Param("rho_growth", float, 1.3, "Multiplier of rho after each ADMM iteration", low=1),
        Param("admm_iters", int, 15, "ADMM iterations (of each stage with --progressive)", low=0),
        Param("epochs_per_iter", int, 1, "Epochs per ADMM iteration", low=1),
        Param("progressive", bool, False, "Prune in stages (progressive ADMM): ADMM, hard prune and masked "
              "retrain towards intermediate ratios, then ADMM again from the pruned model"),
        Param("stages", int, 4, "Stages of --progressive: stage s of S keeps RATIO**(s/S) of each layer, the "
              "last the targets", low=1),
        Param("stage_retrain", int, 5, "Masked retrain epochs after each stage of --progressive but the "
              "last (that one: --retrain-epochs)", low=0),
    ),
    "default": (EPOCHS,),
    "magnitude": (
        Param("epochs", int, 0, "Method-phase epochs", low=0),
        Param("rounds", int, 1, "Prune-retrain rounds (Han et al.): round j of N keeps RATIO**(j/N) of each "
              "layer, the last the targets; 1 = one-shot", low=1),
        Param("round_epochs", int, 10, "Masked retrain epochs after each round but the last (that one: "
              "--retrain-epochs)", low=1),
    ),
    "rgsm": (
        Param("epochs", int, 10, "Method-phase epochs", low=0),
        Param("beta1", float, 1.0, "RGSM relaxation (pull of w towards u)", low=0, low_open=True),
        Param("lamb1", float, 1e-2, "RGSM group-l0 weight", low=0),
        Param("lamb2", float, 1e-5, "RGSM group-lasso weight", low=0),
        Param("penalty", str, "l0", "Sparsity penalty (RGSM: of the group norms)", choices=("l0", "l1")),
        PULL, RESET,
    ),
    "rvsm": (
        Param("epochs", int, 10, "Method-phase epochs", low=0),
        Param("beta", float, 1e-2, "RVSM relaxation (pull of w towards u)", low=0, low_open=True),
        Param("lamb", float, 1e-6, "RVSM penalty weight", low=0),
        Param("penalty", str, "l0", "Sparsity penalty (RGSM: of the group norms)", choices=PENALTIES),
        Param("tl1_a", float, 1.0, "Transformed-l1 parameter a", low=0, low_open=True),
        PULL, RESET,
    ),
}
