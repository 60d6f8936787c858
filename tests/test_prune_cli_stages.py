"""``compress prune`` with the stepwise schedules, as typed: progressive ADMM to the ``admm-150x`` preset
(fixed spelling), iterative magnitude rounds, the seed's variants as flags, and their one-line errors.
The AlexNet test runs progressive ADMM on full-size AlexNet (one step of synthetic data per epoch, about 20 s
on one core) and checks the ratios of every stage."""
from __future__ import annotations

import json

import pytest

from compress.cli import main
from compress.modelfile import load_model
from compress.prune.targets import load_presets
from tests.test_prune_cli import SMOKE, run


def kept(path) -> dict[str, int]:
    net = load_model(str(path)).net
    return {n: int((net.layer(n).weight != 0).sum()) for n in ("conv1", "conv2", "ip1", "ip2")}


def test_admm_150x_preset_is_at_least_150x():
    keep = load_presets("lenet")["admm-150x"]["keep"]
    sizes = {"conv1": 500, "conv2": 25000, "ip1": 400000, "ip2": 5000}
    assert sum(sizes.values()) / sum(round(keep[n] * s) for n, s in sizes.items()) >= 150


def test_progressive_admm_as_typed_hits_the_150x_preset(tmp_path, capsys):
    out = tmp_path / "p.pt"
    code, stdout, err = run(capsys, "prune", "lenet", "--method", "admm", "--progressive", "--targets",
                            "admm-150x", "--admm-iters", "1", "--stage-retrain", "1", "--retrain-epochs", "1",
                            "-o", str(out), *SMOKE)
    assert code == 0, err
    keep = load_presets("lenet")["admm-150x"]["keep"]
    sizes = {"conv1": 500, "conv2": 25000, "ip1": 400000, "ip2": 5000}
    assert kept(out) == {n: round(keep[n] * s) for n, s in sizes.items()}
    meta = load_model(str(out)).meta
    assert meta["hyperparameters"]["progressive"] is True and meta["hyperparameters"]["stages"] == 4
    log = [json.loads(line) for line in (tmp_path / "p.log.jsonl").read_text().splitlines()]
    assert [(e["phase"], e.get("stage"), e.get("part")) for e in log] == [
        ("method", 1, "admm"), ("method", 1, "retrain"), ("method", 2, "admm"), ("method", 2, "retrain"),
        ("method", 3, "admm"), ("method", 3, "retrain"), ("method", 4, "admm"), ("retrain", None, None)]


def test_magnitude_rounds_as_typed(tmp_path, capsys):
    out = tmp_path / "m.pt"
    code, _, err = run(capsys, "prune", "lenet", "--method", "magnitude", "--targets", "admm-71x",
                       "--rounds", "3", "--round-epochs", "1", "--retrain-epochs", "1", "-o", str(out),
                       *SMOKE)
    assert code == 0, err
    assert kept(out) == {"conv1": 100, "conv2": 2000, "ip1": 3600, "ip2": 350}
    log = [json.loads(line) for line in (tmp_path / "m.log.jsonl").read_text().splitlines()]
    assert [e.get("round") for e in log] == [1, 2, None]


@pytest.mark.parametrize("args,message", [
    (["--method", "admm", "--stages", "3"], "admm: --stages applies only with --progressive"),
    (["--method", "rvsm", "--progressive"], "--progressive does not apply to rvsm (it is a flag of admm)"),
    (["--method", "magnitude", "--round-epochs", "2"], "--round-epochs applies only with --rounds 2 or more"),
    (["--method", "admm", "--pull", "seed"], "--pull does not apply to admm (it is a flag of rgsm, rvsm)"),
    (["--method", "rvsm", "--reset", "always"], "Invalid value for '--reset'"),
    (["--method", "rgsm", "--penalty", "tl1"], "rgsm: --penalty must be one of l0, l1, got 'tl1'"),
])
def test_stepwise_and_seed_flags_errors(tmp_path, capsys, args, message):
    code, _, err = run(capsys, "prune", "lenet", "--data", "synthetic", "-o", str(tmp_path / "x.pt"), *args)
    assert code != 0 and message in err and "Traceback" not in err


def test_seed_variants_are_recorded(tmp_path, capsys):
    out = tmp_path / "r.pt"
    code, _, err = run(capsys, "prune", "lenet", "--method", "rvsm", "--epochs", "1", "--pull", "seed",
                       "--reset", "epoch", "--penalty", "tl1", "-o", str(out), *SMOKE)
    assert code == 0, err  # tl1 is RVSM's own choice of --penalty (RGSM, declared first, has l0 and l1)
    hp = load_model(str(out)).meta["hyperparameters"]
    assert hp["pull"] == "seed" and hp["reset"] == "epoch" and hp["penalty"] == "tl1"


ALEXNET_21X = {"conv1": 0.81, "conv2": 0.20, "conv3": 0.19, "conv4": 0.20, "conv5": 0.20,
               "fc6": 0.028, "fc7": 0.059, "fc8": 0.093}


def test_alexnet_full_size_progressive_hits_every_stage_exactly(tmp_path):
    out = tmp_path / "alexnet_progressive.pt"
    assert main(["prune", "alexnet", "--method", "admm", "--progressive", "--targets", "admm-21x",
                 "--data", "synthetic", "--max-steps", "1", "--batch-size", "1", "--admm-iters", "1",
                 "--stage-retrain", "1", "--retrain-epochs", "1", "--quiet", "--no-checkpoint",
                 "-o", str(out)]) == 0
    net = load_model(str(out)).net
    log = [json.loads(line) for line in (tmp_path / "alexnet_progressive.log.jsonl").read_text().splitlines()]
    assert [(e["phase"], e.get("stage")) for e in log] == [("method", 1), ("method", 1), ("method", 2),
                                                          ("method", 2), ("method", 3), ("method", 3),
                                                          ("method", 4), ("retrain", None)]
    sizes = {name: net.layer(name).weight.numel() for name in ALEXNET_21X}
    for name, ratio in ALEXNET_21X.items():
        assert int((net.layer(name).weight != 0).sum()) == round(ratio * sizes[name]), name
    # stages 1 to 3 (ratio ** (s/4)) were exact too: the sparsity logged after their hard prunes
    for entry, s in ((log[0], 1), (log[2], 2), (log[4], 3)):
        kept = sum(round(r ** (s / 4) * sizes[n]) for n, r in ALEXNET_21X.items())
        assert entry["sparsity"] == pytest.approx(1 - kept / sum(sizes.values()), abs=1e-12), s
    out.unlink()  # 244 MB, not to be kept with pytest's last three temporary directories
