"""``--plot FILE.png``: a bar chart of the weights kept per layer (matplotlib, the ``plot`` extra)."""
from __future__ import annotations

import io
import os

from compress.errors import CompressError
from compress.report.render import format_percent, format_ratio
from compress.report.rows import Report
from converters.atomic import atomic_write_bytes, check_output_path


def plot_kept(report: Report, path: str | os.PathLike) -> None:
    """Write a PNG with one bar per prunable layer: percent of weights kept (log scale when a layer
    keeps under 1%, as LeNet's ip1 does at 0.9%)."""
    check_output_path(path)
    try:
        from matplotlib.figure import Figure  # the OO API: no pyplot state, no GUI backend
    except ImportError:
        raise CompressError(
            "--plot needs matplotlib; install the plot extra: pip install 'compress[plot]'"
        ) from None
    names = [r.name for r in report.rows]
    kept = [r.kept * 100 for r in report.rows]
    fig = Figure(figsize=(max(4.0, 0.6 * len(names) + 2), 3.5))
    ax = fig.add_subplot(1, 1, 1)
    bars = ax.bar(names, kept, color="tab:blue")
    for bar, r in zip(bars, report.rows, strict=True):
        ax.annotate(format_percent(r.kept), (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center", va="bottom", fontsize=8)
    if kept and 0 < min(kept) < 1:
        ax.set_yscale("log")
    ax.set_ylabel("weights kept (%)")
    title = f"{report.model or 'model'}: {format_ratio(report.compression)}"
    if report.method:
        title += f" ({report.method})"
    ax.set_title(title)
    ax.tick_params(axis="x", labelrotation=45)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    atomic_write_bytes(path, buf.getvalue())
