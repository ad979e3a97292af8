"""Helpers shared by the benchmark scripts: run one configuration in a fresh process and read its peak memory."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
RESULTS = HERE / "results"


def peak_rss_gb() -> float:
    """Peak resident memory of this process so far, in GiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def train_scvi(model: Any, **kwargs: Any) -> float:
    """Train a scvi-tools model on the CPU without progress bar, logger or checkpoints; return the seconds.

    Lightning's trainer changes torch's thread count. It is restored afterwards, so a model trained
    next in the same process (ours or theirs) gets the same cores as the first one.
    """
    import torch

    threads = torch.get_num_threads()
    quiet = {"accelerator": "cpu", "enable_progress_bar": False, "logger": False, "enable_checkpointing": False}
    start = time.perf_counter()
    try:
        model.train(**{**quiet, **kwargs})
    finally:
        torch.set_num_threads(threads)
    return time.perf_counter() - start


def run_isolated(script: str, *args: str, timeout: float = 3600) -> dict:
    """Run ``script args`` in its own Python process (so peak memory is its own) and parse its JSON line."""
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(HERE / script), *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{script} {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    result = json.loads(lines[-1])
    result["process_seconds"] = time.perf_counter() - start
    return result


def save(name: str, payload: dict | list) -> Path:
    """Write results to benchmarks/results/<name>.json."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, default=float))
    return path
