"""Run every benchmark in bench/ in turn (each prints its own side-by-side table of ratios)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHES = ["startup.py", "caffe_load.py", "prune_speed.py", "export_size.py", "thin_latency.py",
           "train_speed.py", "solver_step.py"]

if __name__ == "__main__":
    here = Path(__file__).parent
    failed = [b for b in BENCHES if subprocess.call([sys.executable, str(here / b)]) != 0]
    if failed:
        sys.exit(f"benchmarks failed: {', '.join(failed)}")
