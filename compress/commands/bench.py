"""``compress bench FILE.onnx [MORE.onnx ...]``: onnxruntime speed side by side, as ratios to the first."""
from __future__ import annotations

import click

from compress.commands._common import echo_json, human_size, json_option, threads_option


def parse_batches(text: str) -> tuple[int, ...]:
    """``"1,32"`` -> ``(1, 32)``; anything but positive integers is a usage error."""
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise click.BadParameter(f"expected positive integers separated by commas, got {text!r}",
                                 param_hint="'--batch'")
    return tuple(dict.fromkeys(values))


def _versus(speedup: float, first: str) -> str:
    from compress.speedcheck import ratio_words

    words = ratio_words(speedup)
    return f"same as {first}" if words == "the same speed" else f"{words} than {first}"


def render(report) -> str:
    """Per file: size, load, memory, latency per batch against the first file, the slowest operators, and a
    warning for weights dequantized on every run."""
    n = report.threads
    lines = [f"onnxruntime {report.onnxruntime}, CPU, {n} thread{'s' if n != 1 else ''}, {report.rounds} "
             f"interleaved rounds (medians), load average {report.load_average[0]:g} on {report.cpus} CPUs"]
    first = report.files[0].path
    width = max(len(str(b)) for b in report.batches)
    for i, f in enumerate(report.files):
        load = "" if f.load_s != f.load_s else \
            (f", loads in {f.load_s:.3f} s, peak RSS {human_size(f.peak_rss)} "
             f"(session {human_size(f.session_rss)})")
        lines.append(f"{f.path}: {human_size(f.bytes)}{load}")
        for lat in f.latencies:
            versus = "" if i == 0 else f"  {_versus(lat.speedup, first)}"
            lines.append(f"  batch {lat.batch:>{width}}: p50 {lat.p50_ms:.3f} ms  p90 {lat.p90_ms:.3f} ms  "
                         f"{lat.throughput:,.0f} images/s{versus}")
        if f.ops:
            ops = ", ".join(f"{o.op_type} {o.share:.0%} ({o.top_node})" for o in f.ops)
            lines.append(f"  time by operator: {ops}")
        if f.dequantized_per_run:
            dq = f.dequantized_per_run
            names = ", ".join(dq[:4]) + (", ..." if len(dq) > 4 else "")
            lines.append(f"  warning: {len(dq)} weight(s) dequantized on every run ({names}): "
                         f"{f.dequantize_share:.0%} of its time; compress export writes a form that "
                         "onnxruntime decodes once, at load")
    return "\n".join(lines) + "\n"


@click.command("bench")
@click.argument("files", nargs=-1, required=True, metavar="FILE")
@click.option("--batch", "batch", default="1,32", show_default=True, metavar="N,N",
              help="Batch sizes to time, separated by commas")
@click.option("--rounds", type=click.IntRange(min=1), default=20, show_default=True, metavar="N",
              help="Timed runs of each file per batch size, interleaved with the other files")
@click.option("--profile/--no-profile", default=True, show_default=True,
              help="Profile each file and list the operators that take the most time")
@click.option("--memory/--no-memory", default=True, show_default=True,
              help="Measure load time and peak memory in a fresh process per file")
@threads_option
@json_option
def command(files: tuple[str, ...], batch: str, rounds: int, profile: bool, memory: bool,
            as_json: bool) -> None:
    """Time ONNX files side by side in onnxruntime, as ratios to the first.

    FILE is an .onnx file; give several to compare them. The files run in turn within every round (so
    load from other processes hits them alike) with onnxruntime's default session options and --threads
    intra-op threads. Reported per file: size, session load time and peak memory (a fresh process each),
    p50/p90 latency and throughput per batch size against the first file, the operators that take the
    most time, and the weights dequantized on every run.

    \b
    compress bench lenet.onnx lenet_q4.onnx --batch 1,32 --threads 1
    """
    import os

    from converters.onnx.speed import bench
    from converters.onnx.verify import _env_threads

    threads = _env_threads() or os.cpu_count() or 1
    report = bench(list(files), batches=parse_batches(batch), threads=threads, rounds=rounds, profile=profile,
                   memory=memory)
    if as_json:
        echo_json(report.as_dict())
    else:
        click.echo(render(report), nl=False)
