"""What a user meets around a pruning run (issue 12, items 9, 10, 12, 13): a resumed run must be the
same run, the checkpoint is named on Ctrl-C and removed after success, flags of other methods and
missing data are clear errors, meaningless accuracy is not presented as a result, and progress off a
terminal is one informative line per epoch."""
from __future__ import annotations

import io
import re

import pytest
import torch

from compress.cli import main
from compress.errors import TrainingInterrupted
from compress.train.checkpoint import load_checkpoint
from compress.train.progress import Progress
from compress.train.trainer import TrainConfig, train
from tests.nets import ctrl_c_after_saves
from tests.test_prune_train import loader, make

SMOKE = ["--data", "synthetic", "--max-steps", "2", "--batch-size", "16", "--limit", "64", "--device", "cpu"]
BASE = ["--method", "admm", "--admm-iters", "2", "--retrain-epochs", "1"]
ADMM = [*BASE, "--targets", "admm-71x"]


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def interrupted_run(tmp_path, capsys, *extra):
    """Start a LeNet ADMM run, kill it after its first epoch's checkpoint; return the checkpoint path."""
    out = tmp_path / "m.pt"
    ckpt = tmp_path / "m.pt.ckpt"
    with ctrl_c_after_saves(1):
        code, _, err = run(capsys, "prune", "lenet", *ADMM, "-o", str(out), "--checkpoint-every", "0",
                           "--quiet", *SMOKE, *extra)
    assert code == 130, err
    assert err.strip().splitlines()[-1] == (f"Interrupted: stopped in epoch 2 of 3 (step 2); to continue: "
                                            f"compress prune --resume {ckpt}")
    assert "Traceback" not in err
    assert ckpt.is_file() and not out.exists()
    return ckpt


def test_ctrl_c_names_the_checkpoint_and_resume_finishes_the_run(tmp_path, capsys):
    ckpt = interrupted_run(tmp_path, capsys)
    code, out, err = run(capsys, "prune", "lenet", *ADMM, "-o", str(tmp_path / "m.pt"), "--resume", str(ckpt),
                         "--quiet", *SMOKE)
    assert code == 0, err
    assert (tmp_path / "m.pt").is_file() and not ckpt.exists()  # removed once the model is saved


@pytest.mark.parametrize("change,message", [
    (["--targets", "han-12x"], "targets.conv1 was 0.2, now 0.66"),
    (["--lr", "0.02"], "hyperparameters.lr was 0.01, now 0.02"),
    (["--limit", "32"], "limit was 64, now 32"),
    (["--rho", "0.01"], "hyperparameters.rho was 0.001, now 0.01"),
])
def test_resume_refuses_a_different_run_naming_the_first_difference(tmp_path, capsys, change, message):
    ckpt = interrupted_run(tmp_path, capsys)
    args = BASE if "--targets" in change else ADMM
    code, _, err = run(capsys, "prune", "lenet", *args, "-o", str(tmp_path / "m.pt"), "--resume", str(ckpt),
                       "--quiet", *SMOKE, *change)
    assert code == 1 and message in err and "different run" in err, err
    assert not (tmp_path / "m.pt").exists()


def test_resume_refuses_a_checkpoint_of_another_model(tmp_path, capsys):
    from tests.nets import TINY

    ckpt = interrupted_run(tmp_path, capsys)
    (tmp_path / "tiny.prototxt").write_text(TINY)
    code, _, err = run(capsys, "prune", str(tmp_path / "tiny.prototxt"), "--method", "admm", "--admm-iters",
                       "2", "--retrain-epochs", "1", "--pcen", "50", "-o", str(tmp_path / "t.pt"),
                       "--resume", str(ckpt), "--quiet", *SMOKE)
    assert code == 1 and "started from other weights" in err and "Traceback" not in err


def test_the_trainer_refuses_foreign_state_dicts_in_one_line(tmp_path):
    ckpt = str(tmp_path / "a.ckpt")
    net, m = make("magnitude")
    train(net, m, loader(), None, TrainConfig(retrain_epochs=1, checkpoint=ckpt))
    state = load_checkpoint(ckpt)
    state["model"] = {"conv1.weight": torch.zeros(1)}
    torch.save(state, ckpt)
    net, m = make("magnitude")
    with pytest.raises(Exception, match="holds another model's weights"):
        train(net, m, loader(), None, TrainConfig(retrain_epochs=1, checkpoint=ckpt), resume=ckpt)


def test_checkpoint_options(tmp_path, capsys):
    out = tmp_path / "k.pt"
    code, _, err = run(capsys, "prune", "lenet", *ADMM, "-o", str(out), "--keep-checkpoint", "--quiet",
                       *SMOKE)
    assert code == 0, err
    assert load_checkpoint(tmp_path / "k.pt.ckpt")["epoch"] == 3
    saved = []
    from compress.train import checkpoint

    original = checkpoint.save_checkpoint
    try:
        import compress.train.trainer as trainer

        trainer.save_checkpoint = lambda path, payload: saved.append(payload["epoch"])
        assert main(["prune", "lenet", *ADMM, "-o", str(tmp_path / "a.pt"), "--quiet", *SMOKE]) == 0
        assert saved == [3]  # default: every 60 s, and after the last epoch
        saved.clear()
        assert main(["prune", "lenet", *ADMM, "-o", str(tmp_path / "b.pt"), "--checkpoint-every", "0",
                     "--quiet", *SMOKE]) == 0
        assert saved == [1, 2, 3]
        saved.clear()
        assert main(["prune", "lenet", *ADMM, "-o", str(tmp_path / "c.pt"), "--no-checkpoint", "--quiet",
                     *SMOKE]) == 0
        assert saved == []
    finally:
        trainer.save_checkpoint = original


def test_a_flag_of_another_method_is_an_error(tmp_path, capsys):
    code, _, err = run(capsys, "prune", "lenet", "--method", "admm", "--epochs", "5", "-o",
                       str(tmp_path / "x.pt"), *SMOKE)
    assert code == 1 and "--epochs does not apply to admm" in err and "rvsm" in err
    assert not (tmp_path / "x.pt").exists()
    code, _, err = run(capsys, "prune", "lenet", "--method", "rvsm", "--rho", "0.1", "-o",
                       str(tmp_path / "x.pt"), *SMOKE)
    assert code == 1 and "--rho does not apply to rvsm (it is a flag of admm)" in err


def test_method_flags_are_checked_against_their_declaration(tmp_path, capsys):
    code, _, err = run(capsys, "prune", "lenet", "--method", "admm", "--rho", "-1", "-o",
                       str(tmp_path / "x.pt"), *SMOKE)
    assert code == 1 and "admm: --rho must be > 0, got -1.0" in err


def test_no_data_for_a_net_mnist_does_not_fit_says_what_it_needs(tmp_path, capsys):
    from tests.nets import TINY

    (tmp_path / "tiny.prototxt").write_text(TINY)
    code, _, err = run(capsys, "prune", str(tmp_path / "tiny.prototxt"), "--pcen", "50", "--method",
                       "magnitude", "-o", str(tmp_path / "t.pt"))
    assert code == 1 and "takes 2x8x8 inputs and has 5 classes" in err and "--data" in err
    assert not (tmp_path / "t.pt").exists()


def test_synthetic_and_limited_accuracy_say_what_they_are(tmp_path, capsys):
    code, out, err = run(capsys, "prune", "lenet", *ADMM, "-o", str(tmp_path / "m.pt"), "--quiet", *SMOKE)
    assert code == 0, err
    last = out.strip().splitlines()[-1]
    assert last.startswith("accuracy n/a (synthetic data has random labels")
    assert "accuracy on the first 32 test images only (--limit, --max-steps)" in last
    assert "0.00%" not in last


def test_progress_off_a_terminal_is_one_line_per_epoch():
    stream = io.StringIO()
    cfg = TrainConfig(lr=0.05, retrain_epochs=2, progress=True)
    net, m = make("admm")
    from compress.train import trainer

    original = trainer.Progress
    trainer.Progress = lambda enabled, **kw: Progress(enabled, stream, **kw)
    try:
        train(net, m, loader(), loader(seed=2), cfg)
    finally:
        trainer.Progress = original
    lines = stream.getvalue().splitlines()
    assert len(lines) == 4  # 2 ADMM iterations + 2 retrain epochs
    pattern = (r"epoch \d/4 (admm|retrain): loss \d+\.\d{4} train \d+\.\d\d% test \d+\.\d\d% "
               r"test loss \S+ sparsity \d\.\d{3} lr \S+ \d+\.\d s")
    assert all(re.fullmatch(pattern, line) for line in lines), lines


def test_interrupt_before_any_checkpoint_says_so():
    class Boom:
        generator = None

        def __len__(self):
            return 2

        def __iter__(self):
            raise KeyboardInterrupt
            yield

    net, m = make("magnitude")
    message = r"stopped in epoch 1 of 3 \(step 0\); no checkpoint was written"
    with pytest.raises(TrainingInterrupted, match=message):
        train(net, m, Boom(), None, TrainConfig(retrain_epochs=1, checkpoint="x.ckpt"))


def test_clamped_layers_are_said_on_stderr_and_kept_in_the_meta(tmp_path, capsys):
    from compress.modelfile import load_model

    out = tmp_path / "c.pt"
    code, _, err = run(capsys, "prune", "lenet", "--method", "admm", "--pcen", "60", "--sparsity", "channel",
                       "--admm-iters", "1", "--retrain-epochs", "1", "-o", str(out), "--quiet", *SMOKE)
    assert code == 0, err
    assert "conv1: clamped, keeps 1 of 1 groups" in err
    meta = load_model(str(out)).meta
    assert [a["layer"] for a in meta["adjustments"]] == ["conv1"]
    assert int((load_model(str(out)).net.conv1.weight != 0).sum()) == 500  # its one input channel kept


def test_the_report_says_what_the_accuracy_was_measured_on(tmp_path, capsys):
    out = tmp_path / "m.pt"
    assert run(capsys, "prune", "lenet", *ADMM, "-o", str(out), "--quiet", *SMOKE)[0] == 0
    code, text, err = run(capsys, "report", str(out), "--per-layer")
    assert code == 0, err
    assert "(synthetic data has random labels: its accuracy means nothing; accuracy on the first 32" in text
