"""``compress prune``: a smoke run on the zoo LeNet with synthetic data, and its clear errors."""
from __future__ import annotations

import json

import pytest

from compress.cli import main

SMOKE = ["--data", "synthetic", "--max-steps", "2", "--batch-size", "16", "--limit", "64", "--quiet",
         "--device", "cpu"]


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_admm_smoke_hits_the_preset_and_records_meta(tmp_path, capsys):
    from compress.modelfile import load_model

    out = tmp_path / "lenet_admm.pt"
    code, stdout, err = run(capsys, "prune", "lenet", "--method", "admm", "--targets", "admm-71x",
                            "--admm-iters", "1", "--epochs-per-iter", "1", "--retrain-epochs", "1",
                            "-o", str(out), *SMOKE)
    assert code == 0, err
    assert "6050" in stdout and "(71.2x)" in stdout
    model = load_model(str(out))
    nonzero = {n: int((model.net.layer(n).weight != 0).sum()) for n in ("conv1", "conv2", "ip1", "ip2")}
    assert nonzero == {"conv1": 100, "conv2": 2000, "ip1": 3600, "ip2": 350}
    meta = model.meta
    assert meta["method"] == "admm" and meta["targets"]["ip1"] == 0.009 and meta["sparsity"] == "elem"
    assert meta["dataset"] == "synthetic" and {"rho", "admm_iters", "lr"} <= set(meta["hyperparameters"])
    assert 0 <= meta["accuracy_before"] <= 1 and 0 <= meta["accuracy_after"] <= 1
    assert [h["phase"] for h in meta["history"]] == ["method", "retrain"]
    log = [json.loads(line) for line in (tmp_path / "lenet_admm.log.jsonl").read_text().splitlines()]
    assert len(log) == 2 and "admm_residual" in log[0]
    assert not (tmp_path / "lenet_admm.pt.ckpt").exists()  # removed once the model file is saved


def test_rgsm_channel_smoke(tmp_path, capsys):
    out = tmp_path / "r.pt"
    code, stdout, err = run(capsys, "prune", "lenet", "--method", "rgsm", "--epochs", "1", "--lamb1", "0.5",
                            "-o", str(out), *SMOKE)
    assert code == 0, err
    assert out.is_file() and "accuracy" in stdout


@pytest.mark.parametrize("args,message", [
    (["--keep", "conv1=1.5"], "keep ratio of layer 'conv1' must be in [0, 1], got 1.5"),
    (["--keep", "conv9=0.5"],
     "unknown layer(s) conv9 in targets (--keep); prunable layers: conv1, conv2, ip1, ip2"),
    (["--targets", "nowhere.yaml"], "targets file not found: nowhere.yaml"),
    (["--targets", "admm-99x"], "no targets file or preset named 'admm-99x'"),
    (["--pcen", "80", "--keep", "conv1=0.2"], "give either --pcen or --targets/--keep"),
    (["--device", "tpu"], "--device must be auto, cpu or cuda"),
])
def test_clear_one_line_errors(tmp_path, capsys, args, message):
    code, _, err = run(capsys, "prune", "lenet", "--data", "synthetic", "-o", str(tmp_path / "x.pt"), *args)
    assert code == 1
    assert err.startswith("Error: ") and message in err and "Traceback" not in err
    assert not (tmp_path / "x.pt").exists()


def test_missing_model_file_and_resume(tmp_path, capsys):
    code, _, err = run(capsys, "prune", str(tmp_path / "none.caffemodel"), "-o", str(tmp_path / "x.pt"))
    assert code == 1 and "none.caffemodel" in err
    code, _, err = run(capsys, "prune", "lenet", "--resume", str(tmp_path / "c.ckpt"),
                       "-o", str(tmp_path / "x.pt"))
    assert code == 1 and "checkpoint not found" in err
    code, _, err = run(capsys, "prune", "lenet", "-o", str(tmp_path / "no" / "x.pt"))
    assert code == 1 and "output directory does not exist" in err


def test_distill_and_augment_are_recorded_and_validated(tmp_path, capsys):
    from compress.modelfile import load_model

    out = tmp_path / "kd.pt"
    code, _, err = run(capsys, "prune", "lenet", "--method", "magnitude", "--targets", "admm-71x",
                       "--retrain-epochs", "1", "--distill", "0.5", "--distill-temperature", "2",
                       "--augment", "shift", "-o", str(out), *SMOKE)
    assert code == 0, err
    hp = load_model(str(out)).meta["hyperparameters"]
    assert hp["distill"] == 0.5 and hp["distill_temperature"] == 2.0 and hp["augment"] == ["shift"]
    code, _, err = run(capsys, "prune", "lenet", "--distill", "1.5", "-o", str(tmp_path / "x.pt"), *SMOKE)
    assert code == 2 and "Invalid value for '--distill'" in err and "Traceback" not in err
    assert not (tmp_path / "x.pt").exists()
    code, _, err = run(capsys, "prune", "lenet", "--augment", "rotate", "-o", str(tmp_path / "x.pt"), *SMOKE)
    assert code == 2 and "Invalid value for '--augment'" in err and not (tmp_path / "x.pt").exists()


@pytest.mark.parametrize("method,flags,retrain,augment,retrain_wd", [
    ("admm", [], 45, [], 1e-4),  # synthetic data suggests no augmentation; ADMM retrains at 1e-4
    ("admm", ["--augment", "shift", "--augment", "mirror", "--retrain-weight-decay", "0"], 45,
     ["shift", "mirror"], 0.0),
    ("magnitude", ["--augment", "none"], 10, [], None),  # None: the method phase's --weight-decay
    ("rgsm", [], 0, [], None),  # no targets: no retrain
])
def test_retrain_and_augment_defaults(tmp_path, capsys, method, flags, retrain, augment, retrain_wd):
    from compress.modelfile import load_model

    out = tmp_path / "m.pt"
    length = ["--admm-iters", "1"] if method == "admm" else ["--epochs", "1"]
    code, _, err = run(capsys, "prune", "lenet", "--method", method, *length,
                       *flags, "-o", str(out), *SMOKE, "--max-steps", "1")
    assert code == 0, err
    meta = load_model(str(out)).meta
    assert meta["hyperparameters"]["retrain_epochs"] == retrain
    assert meta["hyperparameters"]["augment"] == augment
    assert meta["hyperparameters"]["retrain_weight_decay"] == retrain_wd
    assert sum(h["phase"] == "retrain" for h in meta["history"]) == retrain


def test_augment_none_cannot_be_combined(tmp_path, capsys):
    code, _, err = run(capsys, "prune", "lenet", "--augment", "none", "--augment", "shift",
                       "-o", str(tmp_path / "x.pt"), *SMOKE)
    assert code == 2 and "'none' cannot be combined" in err and not (tmp_path / "x.pt").exists()
