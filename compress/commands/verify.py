"""``compress verify model.onnx --against MODEL``: onnxruntime vs PyTorch on the same inputs."""
from __future__ import annotations

import json

import click

from compress.commands._common import threads_option


def data_batch(spec: str, net, meta: dict, batch_size: int, seed: int):
    """The first ``batch_size`` test images of ``--data`` (mnist or a directory), preprocessed as the
    model records (``meta["preprocess"]``), as a float32 NCHW array."""
    from compress.data import get_data

    shape = next(iter(net.inputs.values()))
    splits = get_data(spec, shape, batch_size=batch_size, seed=seed, preprocess=meta.get("preprocess"),
                      limit=batch_size)
    x, _ = next(iter(splits.test))
    return x.numpy()


def verify_model(onnx_path: str, against: str, *, prototxt: str | None = None, data: str | None = None,
                 batch_size: int = 8, seed: int = 0, atol: float = 1e-4, rtol: float = 1e-3,
                 repeats: int = 10, device: str = "cpu"):
    """Load ``against`` (model file, .caffemodel or zoo name) and check ``onnx_path`` against it; with a
    CUDA ``device`` PyTorch runs there and onnxruntime on its CUDA provider."""
    from compress.device import ort_providers, resolve_device
    from compress.modelfile import load_model
    from converters.onnx.verify import verify_onnx

    dev = resolve_device(device)
    providers = ort_providers(str(dev))
    model = load_model(against, prototxt)
    inputs = data_batch(data, model.net, model.meta, batch_size, seed) if data else None
    return verify_onnx(onnx_path, model.net.to(dev), batch_size=batch_size, seed=seed, inputs=inputs,
                       atol=atol, rtol=rtol, repeats=repeats, providers=providers)


def summary(result, onnx_path: str, against: str, data: str | None, seed: int, repeats: int) -> str:
    inputs = f"{result.batch_size} {'images from ' + data if data else f'random inputs (seed {seed})'}"
    top1 = "-" if result.top1_agreement is None else f"{result.top1_agreement:.1%}"
    verdict = "PASSED" if result.passed else "FAILED"
    return "\n".join([
        f"{onnx_path} (onnxruntime) vs {against} (PyTorch), {inputs}",
        f"  max abs error    {result.max_abs_err:.3g}",
        f"  max rel error    {result.max_rel_err:.3g}  (of the output's max |value|)",
        f"  top-1 agreement  {top1}",
        f"  ort latency      {result.ort_latency_ms:.3f} ms per batch of {result.batch_size} "
        f"(median of {repeats})",
        f"{verdict} (tolerance: abs error <= {result.atol:g} + {result.rtol:g} * max |output|)",
    ])


@click.command("verify")
@click.argument("onnx_file", metavar="FILE")
@click.option("--against", required=True, metavar="MODEL", help="The model FILE was exported from")
@click.option("--prototxt", metavar="FILE", help="Net definition for a .caffemodel --against")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True, metavar="N",
              help="Inputs per run")
@click.option("--seed", type=int, default=0, show_default=True, metavar="N", help="Seed of the random inputs")
@click.option("--data", metavar="SPEC", show_default="random inputs",
              help="Test images instead: mnist, synthetic or a directory")
@click.option("--atol", type=click.FloatRange(min=0), default=1e-4, show_default=True, metavar="X",
              help="Absolute tolerance")
@click.option("--rtol", type=click.FloatRange(min=0), default=1e-3, show_default=True, metavar="X",
              help="Tolerance relative to the output's max |value|")
@click.option("--repeats", type=click.IntRange(min=1), default=10, show_default=True, metavar="N",
              help="Timed onnxruntime runs (after one warm-up)")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object")
@click.option("--device", default="cpu", show_default=True, metavar="DEVICE",
              help="Where PyTorch runs (cpu, cuda or cuda:N); onnxruntime uses its CUDA provider with cuda")
@threads_option
def command(onnx_file: str, against: str, prototxt: str | None, batch_size: int, seed: int, data: str | None,
            atol: float, rtol: float, repeats: int, as_json: bool, device: str) -> None:
    """Check an ONNX file against its PyTorch model with onnxruntime.

    The same inputs go through FILE (onnxruntime) and MODEL (PyTorch): max absolute and relative
    error, top-1 agreement, onnxruntime latency.

    Exits 1 when the error exceeds the tolerance.
    """
    from compress.errors import CompressError

    result = verify_model(onnx_file, against, prototxt=prototxt, data=data, batch_size=batch_size, seed=seed,
                          atol=atol, rtol=rtol, repeats=repeats, device=device)
    if as_json:
        click.echo(json.dumps({"onnx": onnx_file, "against": against, **result.as_dict()}, indent=2))
    else:
        click.echo(summary(result, onnx_file, against, data, seed, repeats))
    if not result.passed:
        raise CompressError(f"{onnx_file} does not match {against}: max abs error {result.max_abs_err:.3g}, "
                            f"max rel error {result.max_rel_err:.3g} (atol {atol:g}, rtol {rtol:g})")
