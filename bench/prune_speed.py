"""Training speed of each pruning method against plain SGD (``default``), side by side in one run.

    python bench/prune_speed.py [--steps 150] [--rounds 3] [--data mnist|synthetic] [--device cpu]
    python bench/prune_speed.py --only-alexnet [--threads 1]     # the projection timings alone

LeNet (zoo) on MNIST (synthetic if the MNIST file is missing): each method trains ``--steps``
minibatches of its method phase (no evaluation, no ADMM projection inside the timed window:
"between projections"), rotating through the methods ``--rounds`` times so that load from other
processes hits all of them alike; the median time per step is compared with ``default``'s.
Goals: ADMM <= 1.10x, RVSM/RGSM <= 1.25x. Also timed: the masked retrain step, and one ADMM
projection over all full-size AlexNet layers with random weights (``admm-21x``), element and channel
mode, both the init (Z = Proj(W), U = 0) and the Z/U update, against the floor of an exact selection
measured in the same rounds: ``torch.kthvalue`` on fc6 alone and on every layer. Goal: each projection
<= 1 s. Absolute times across runs mean little on a shared machine; ratios do.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch


def _lenet_and_data(data: str, batch: int, device: str):
    from compress.data import get_data
    from compress.modelfile import load_model

    net = load_model("lenet").net
    try:
        splits = get_data(data, (1, 1, 28, 28), batch_size=batch, seed=0, num_classes=10)
    except Exception as e:  # noqa: BLE001  (MNIST missing: fall back, say so)
        print(f"({data} unavailable: {e}; using synthetic data)")
        splits = get_data("synthetic", (1, 1, 28, 28), batch_size=batch, seed=0, num_classes=10)
    return net, splits


def time_method(name: str, net, train_data, steps: int, device: str, retrain: bool = False) -> float:
    """Seconds per step of ``steps`` steps of the method phase (or of the masked retrain)."""
    import copy

    from compress.layers import prunable_layers
    from compress.prune.methods import method_class
    from compress.prune.targets import resolve_targets
    from compress.train.trainer import TrainConfig, train

    net = copy.deepcopy(net)
    layers = prunable_layers(net)
    targets = resolve_targets(layers, targets="admm-71x", model_name="lenet")
    if name == "rgsm":
        targets = None
    m = method_class(name)(layers, targets, epochs=1, admm_iters=1, epochs_per_iter=1)
    cfg = TrainConfig(max_steps=steps, retrain_epochs=1 if retrain else 0)
    if retrain:  # time the retrain epoch only: magnitude has no method phase
        m = method_class("magnitude")(layers, targets)
    res = train(net, m, train_data, None, cfg, device)
    entry = res.history[-1]
    return entry["seconds"] / steps


def time_hooks(net, steps: int = 200) -> dict[str, float]:
    """Milliseconds per step spent in each method's own hooks (extra loss + before/after step),
    measured alone: the low-noise part of the comparison above."""
    from compress.layers import prunable_layers
    from compress.prune.methods import method_class
    from compress.prune.targets import resolve_targets

    layers = prunable_layers(net)
    targets = resolve_targets(layers, targets="admm-71x", model_name="lenet")
    out = {}
    for name in ("admm", "rvsm", "rgsm"):
        m = method_class(name)(layers, targets if name == "admm" else None)
        m.init(net)
        start = time.perf_counter()
        for _ in range(steps):
            net.zero_grad()
            extra = m.extra_loss(net)
            if extra is not None:
                extra.backward()
            for layer in layers.values():
                if layer.weight.grad is None:
                    layer.weight.grad = torch.zeros_like(layer.weight)
            m.before_step(net)
            m.after_step(net)
        out[name] = (time.perf_counter() - start) / steps * 1e3
    return out


def time_alexnet_projection(rounds: int = 3) -> dict[str, float]:
    """Median seconds over ``rounds`` of each ADMM projection over AlexNet and of the kthvalue floors."""
    from compress.layers import prunable_layers
    from compress.modelfile import load_model
    from compress.prune.methods import method_class
    from compress.prune.targets import Targets, resolve_targets

    net = load_model("alexnet").net
    layers = prunable_layers(net)
    preset = resolve_targets(layers, targets="admm-21x", model_name="alexnet")
    flat = {n: layer.weight.detach().reshape(-1) for n, layer in layers.items()}
    times: dict[str, list[float]] = {}

    def timed(key: str, fn) -> None:
        start, cpu = time.perf_counter(), time.process_time()
        fn()
        times.setdefault(key, []).append(time.perf_counter() - start)
        times.setdefault(f"{key} cpu", []).append(time.process_time() - cpu)

    for _ in range(rounds):
        timed("kthvalue fc6", lambda: torch.kthvalue(flat["fc6"], flat["fc6"].numel() // 2))
        timed("kthvalue every layer", lambda: [torch.kthvalue(f, f.numel() // 2) for f in flat.values()])
        for sparsity in ("elem", "channel"):
            m = method_class("admm")(layers, Targets(preset.keep, sparsity, "in"))
            timed(f"admm init ({sparsity})", lambda m=m: m.init(net))
            timed(f"admm Z/U update ({sparsity})", lambda m=m: m.end_iteration(net, 0))
            del m
    out = {k: statistics.median(v) for k, v in times.items()}
    out["weights"] = sum(f.numel() for f in flat.values())
    return out


def print_alexnet_projection(res: dict[str, float], rounds: int, threads: int) -> None:
    """Wall and CPU seconds of each projection, and their ratio to the kthvalue floors of the same run
    (CPU time is the steadier figure on a loaded machine; the ratios hold either way)."""
    weights = res.pop("weights")
    print(f"AlexNet ({weights / 1e6:.1f}M prunable weights, admm-21x), one projection, median of {rounds} "
          f"rounds, {threads} thread(s)")
    print(f"  {'':<28} {'wall s':>7} {'cpu s':>7} {'/ kth all':>9} {'/ kth fc6':>9}  goal <= 1 s")
    floor_fc6, floor_all = res["kthvalue fc6"], res["kthvalue every layer"]
    for k, v in res.items():
        if k.endswith(" cpu"):
            continue
        verdict = "" if k.startswith("kthvalue") else ("ok" if v <= 1.0 else "MISSED")
        print(f"  {k:<28} {v:>7.3f} {res[k + ' cpu']:>7.3f} {v / floor_all:>8.2f}x {v / floor_fc6:>8.2f}x  "
              f"{verdict}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--data", default="mnist")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--skip-alexnet", action="store_true")
    ap.add_argument("--only-alexnet", action="store_true", help="time the AlexNet projections only")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if not args.only_alexnet:
        time_lenet_methods(args)
    if not args.skip_alexnet:
        print_alexnet_projection(time_alexnet_projection(args.rounds), args.rounds, args.threads)


def time_lenet_methods(args: argparse.Namespace) -> None:
    net, splits = _lenet_and_data(args.data, args.batch_size, args.device)
    kinds = [("default", False), ("admm", False), ("rvsm", False), ("rgsm", False), ("retrain", True)]
    times: dict[str, list[float]] = {k: [] for k, _ in kinds}
    time_method("default", net, splits.train, 10, args.device)  # warm-up
    for _ in range(args.rounds):
        for k, retrain in kinds:
            times[k].append(time_method("default" if retrain else k, net, splits.train, args.steps,
                                        args.device, retrain))
    base = statistics.median(times["default"])
    goal = {"admm": 1.10, "rvsm": 1.25, "rgsm": 1.25}
    print(f"LeNet, {splits.name}, batch {args.batch_size}, {args.steps} steps x {args.rounds} rounds, "
          f"device {args.device}, {args.threads} thread(s)")
    print(f"{'method':<10} {'ms/step':>8} {'img/s':>8} {'vs default':>10} {'goal':>6}")
    for k, _ in kinds:
        med = statistics.median(times[k])
        g = goal.get(k)
        verdict = "" if g is None else ("ok" if med / base <= g else "MISSED")
        print(f"{k:<10} {med * 1e3:>8.2f} {args.batch_size / med:>8.0f} {med / base:>9.3f}x "
              f"{'' if g is None else f'<={g:.2f}':>6} {verdict}")
    hooks = time_hooks(net)
    print("hooks alone (ms/step, % of a default step): " + ", ".join(
        f"{k} {v:.2f} ({v / (base * 1e3):.1%})" for k, v in hooks.items()))


if __name__ == "__main__":
    main()
