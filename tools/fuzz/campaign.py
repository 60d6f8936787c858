"""A fuzz campaign: N seeded cases, each generated, loaded in a forked child, checked and classified.

Case ``i`` of seed ``S`` draws everything from ``random.Random(f"{S}:{i}")``, so ``--seed S --case i``
replays it alone. In the child, the input goes through ``compress.modelfile.load_model`` (what every
command calls). A loaded net must then run: a forward pass on its declared input shapes whose every
blob has the shape the loader inferred, and a model-file round trip (``save_model``, then
``read_model_file``) giving the same definition and bit-identical blobs. A case that names a command
(quantized models, ONNX files, training inputs) runs it instead (``commands.py``). Whatever ends
otherwise is reported (``runner.py``'s outcomes); after an error the case directory must hold nothing
but the input (nothing written; a training run's snapshots excepted), and a payload's marker file must
not exist (no code ran).
"""
from __future__ import annotations

import os
import random
import re
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tools.fuzz import caffemodels, lowbit, modelfiles, notmodels, prototxts, quantized, records, training
from tools.fuzz.case import MARKER, Case
from tools.fuzz.runner import CLEAN, OUTCOMES, Child, Limits, Mismatch, Verdict, start

# target -> (share of the cases, generator(rng, case directory)); the shares are relative weights
TARGETS: dict[str, tuple[float, Callable[[random.Random, Path], Case]]] = {
    "caffemodel": (0.20, lambda rng, d: caffemodels.generate(rng, v1=False)),
    "caffemodel-v1": (0.14, lambda rng, d: caffemodels.generate(rng, v1=True)),
    "prototxt": (0.22, lambda rng, d: prototxts.generate(rng)),
    "modelfile": (0.08, lambda rng, d: modelfiles.generate(rng)),
    "pickle": (0.04, lambda rng, d: modelfiles.generate_pickle(rng, str(d))),
    "not-a-model": (0.04, lambda rng, d: notmodels.generate(rng)),
    "quantized": (0.06, lambda rng, d: quantized.generate(rng)),
    "lowbit-onnx": (0.06, lambda rng, d: lowbit.generate(rng)),
    "solver": (0.04, lambda rng, d: training.generate_solver(rng)),
    "train-val": (0.04, lambda rng, d: training.generate_train_val(rng)),
    "lmdb": (0.04, lambda rng, d: records.generate(rng)),
    "solverstate": (0.04, lambda rng, d: training.generate_state(rng)),
}


@dataclass(frozen=True)
class CaseResult:
    index: int
    target: str
    mutation: str
    outcome: str
    detail: str
    seconds: float


def case_rng(seed: int, index: int) -> random.Random:
    return random.Random(f"{seed}:{index}")


def make_case(seed: int, index: int, directory: Path, targets: tuple[str, ...] | None = None) -> Case:
    """Case ``index`` of ``seed``, its files written into ``directory``."""
    rng = case_rng(seed, index)
    names = [t for t in TARGETS if targets is None or t in targets]
    target = rng.choices(names, weights=[TARGETS[t][0] for t in names])[0]
    case = TARGETS[target][1](rng, directory)
    case.write(directory)
    return case


def run_campaign(cases: int, seed: int = 0, *, limits: Limits = Limits(), jobs: int = 1,
                 targets: tuple[str, ...] | None = None, only: int | None = None,
                 keep: Path | None = None, progress: Callable[[int, int], None] | None = None
                 ) -> list[CaseResult]:
    """Run cases ``0..cases-1`` (or case ``only``), ``jobs`` children at a time. Inputs of non-clean
    cases are copied to ``keep/<index>/`` when ``keep`` is given."""
    _prepare()
    indices = [only] if only is not None else list(range(cases))
    results: list[CaseResult] = []
    running: dict[int, tuple[Child, Case, Path]] = {}
    root = Path(tempfile.mkdtemp(prefix="compress-fuzz-"))
    try:
        pending = list(reversed(indices))
        while pending or running:
            while pending and len(running) < max(1, jobs):
                i = pending.pop()
                directory = root / str(i)
                directory.mkdir()
                case = make_case(seed, i, directory, targets)
                child = start(lambda c=case, d=directory: load_and_check(c, d), limits)
                running[i] = (child, case, directory)
            for i, (child, case, directory) in list(running.items()):
                verdict = child.poll()
                if verdict is None:
                    continue
                del running[i]
                verdict = _after(verdict, case, directory)
                results.append(CaseResult(i, case.target, case.mutation, verdict.outcome, verdict.detail,
                                          verdict.seconds))
                if keep is not None and verdict.outcome not in CLEAN:
                    shutil.copytree(directory, Path(keep) / str(i), dirs_exist_ok=True)
                shutil.rmtree(directory, ignore_errors=True)
                if progress:
                    progress(len(results), len(indices))
            time.sleep(0.002)
    finally:
        for child, _, _ in running.values():
            os.kill(child.pid, 9)
            os.waitpid(child.pid, 0)
        shutil.rmtree(root, ignore_errors=True)
    return sorted(results, key=lambda r: r.index)


def load_and_check(case: Case, directory: Path) -> dict:
    """The child's work: the case's command (``commands.py``), or: load the case's input, then check
    the loaded net (forward, round trip)."""
    import logging
    import warnings

    from compress.modelfile import load_model

    for name in ("converters", "compress"):  # warnings (weights initialized...) are not outcomes
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.simplefilter("ignore")
    if case.argv:
        from tools.fuzz.commands import run_command

        return run_command(case, directory)
    model = load_model(str(directory / case.model),
                       str(directory / case.prototxt) if case.prototxt else None)
    check_forward(model.net)
    check_round_trip(model, directory / "roundtrip.pt")
    return {"layers": len(model.net.nodes)}


def check_forward(net) -> None:
    """Every layer its own module, and a forward pass on the declared input shapes in which every
    blob has the shape the loader inferred."""
    import torch

    modules = {id(getattr(net, node.attr)) for node in net.nodes}
    if len(modules) != len(net.nodes) or len(dict(net.named_children())) != len(net.nodes):
        raise Mismatch(f"{len(net.nodes)} layers share {len(modules)} modules")

    gen = torch.Generator().manual_seed(0)
    inputs = {name: torch.randn(shape, generator=gen) for name, shape in net.inputs.items()}
    with torch.no_grad():
        blobs = net.forward_blobs(**inputs)
    wrong = {k: (tuple(v.shape), net.blob_shapes.get(k)) for k, v in blobs.items()
             if tuple(v.shape) != tuple(net.blob_shapes.get(k, ()))}
    missing = [k for k in net.outputs if k not in blobs]
    if wrong or missing:
        raise Mismatch(f"forward blob shapes differ from the inferred ones: {dict(list(wrong.items())[:4])}"
                       f"{'; outputs missing: ' + str(missing[:4]) if missing else ''}")


def check_round_trip(model, path: Path) -> None:
    """``save_model`` then ``read_model_file``: the same definition, bit-identical blobs."""
    from compress.modelfile import read_model_file, save_model
    from converters.caffe import caffe_blobs

    save_model(path, model.net, model.meta)
    again = read_model_file(path)
    if again.net.netdef != model.net.netdef:
        raise Mismatch("the model file round trip changed the net definition")
    a, b = caffe_blobs(model.net), caffe_blobs(again.net)
    same = a.keys() == b.keys() and all(
        len(a[k]) == len(b[k]) and all(x.shape == y.shape and x.tobytes() == y.tobytes()
                                       for x, y in zip(a[k], b[k], strict=True)) for k in a)
    if not same:
        raise Mismatch("the model file round trip changed the blobs")


def _after(verdict: Verdict, case: Case, directory: Path) -> Verdict:
    """Checks made by the parent once the child is gone: code ran? anything written?"""
    if (directory / MARKER).exists():
        return Verdict("code", f"the payload ran: {MARKER} was written", verdict.seconds)
    written = {"roundtrip.pt", *case.writes} if verdict.outcome == "ok" else set()
    present = (p.relative_to(directory).as_posix() for p in directory.rglob("*") if not p.is_dir())
    expected = set(case.files) | written
    left = sorted(p for p in present if p not in expected
                  and not (case.may_leave and re.fullmatch(case.may_leave, p, re.DOTALL)))
    if left and verdict.outcome in CLEAN:
        return Verdict("other", f"left files behind: {left[:5]}", verdict.seconds)
    return verdict


def _prepare() -> None:
    """Import what children use and build the seeds once, before any fork; one thread for torch."""
    import torch

    from compress.modelfile import load_model  # noqa: F401 - imported here so children inherit it
    from tools.fuzz import commands, seeds

    torch.set_num_threads(1)
    seeds.lenet_v1()
    seeds.lenet_model_file()
    commands.prepare()


# -- the summary -----------------------------------------------------------------------------------

def summary_table(results: list[CaseResult]) -> str:
    """Counts by target (rows) and outcome (columns), with totals."""
    counts = Counter((r.target, r.outcome) for r in results)
    targets = [t for t in TARGETS if any(r.target == t for r in results)]
    header = ["target", *OUTCOMES, "total"]
    rows = [[t, *(str(counts[t, o]) for o in OUTCOMES), str(sum(counts[t, o] for o in OUTCOMES))]
            for t in targets]
    rows.append(["total", *(str(sum(counts[t, o] for t in targets)) for o in OUTCOMES), str(len(results))])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(r):
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths,
                                                                                              strict=True)))

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(r) for r in rows[:-1]), rule, line(rows[-1])]) + "\n"


def failures(results: list[CaseResult]) -> list[CaseResult]:
    return [r for r in results if r.outcome not in CLEAN]
