"""Checks that need a CUDA GPU, run by hand on a lent device (the test suite runs without one).

`python gpu_checks.py` prints one line per check and exits non-zero when one fails.
"""

from __future__ import annotations

import sys

import numpy as np


def main() -> int:
    import torch

    import scdgm._synthetic_metrics as sm

    if not torch.cuda.is_available():
        print("no CUDA GPU: nothing checked")
        return 1
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(300, 10)), rng.normal(0.1, size=(250, 10))
    failures = 0
    cpu, gpu = (
        sm.energy_test(x, y, n_permutations=100, seed=0),
        sm.energy_test(x, y, n_permutations=100, seed=0, device="cuda"),
    )
    ok = abs(gpu[0] - cpu[0]) <= 1e-9 * abs(cpu[0]) and gpu[1] == cpu[1]
    print(f"energy test on the GPU equals the CPU's (same permutations): {ok} ({gpu} vs {cpu})")
    failures += not ok
    a, b = sm.mmd2_unbiased(x, y, bandwidth=2.0, device="cuda"), sm.mmd2_unbiased(x, y, bandwidth=2.0)
    ok = abs(a - b) <= 1e-9 * abs(b)
    print(f"MMD on the GPU equals the CPU's: {ok} ({a} vs {b})")
    failures += not ok
    return int(failures > 0)


if __name__ == "__main__":
    sys.exit(main())
