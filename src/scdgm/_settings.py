"""Package-wide settings: compute device, default seed, verbosity and progress bars."""

from __future__ import annotations

import logging
import numbers
from typing import Literal

logger = logging.getLogger("scdgm")
if not logger.handlers:
    _handler = logging.StreamHandler()
    _handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(_handler)
    logger.propagate = False

_VERBOSITY_LEVELS = {0: logging.ERROR, 1: logging.WARNING, 2: logging.INFO, 3: logging.DEBUG}
DeviceName = Literal["auto", "cpu", "cuda", "mps"] | str


MAX_SEED = 2**32


def check_seed(name: str, value: object) -> int:
    """``value`` as a Python int when it is an integer seed in ``[0, 2**32)``, else a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 0 <= int(value) < MAX_SEED:
        msg = f"{name} must be an integer in [0, 2**32), not {value!r}."
        raise ValueError(msg)
    return int(value)


def _check_device(name: str, value: object) -> str:
    """``value`` when it is a device string scdgm knows (``"cuda:N"`` with a number), else a ValueError naming ``name``."""
    kind, colon, index = value.partition(":") if isinstance(value, str) else ("", "", "")
    if kind not in {"auto", "cpu", "cuda", "mps"} or (colon and (kind == "auto" or not index.isdigit())):
        msg = f"{name} must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps' (a string), not {value!r}."
        raise ValueError(msg)
    return value


class ScdgmConfig:
    """Settings of scdgm, available as ``scdgm.settings``.

    Attributes
    ----------
    device
        Where models train: ``"auto"`` picks CUDA, then Apple MPS, then the CPU. Any torch device
        string (``"cuda:1"``) is accepted.
    seed
        The seed used by functions called with ``seed=None``.
    verbosity
        0 errors, 1 warnings, 2 info (default), 3 debug.
    progress_bar
        Whether training and long computations show a progress bar.
    """

    def __init__(self) -> None:
        self._device: str = "auto"
        self._seed: int = 0
        self._progress_bar: bool = True
        self.verbosity = 2

    @property
    def device(self) -> str:
        """Default compute device (``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"``)."""
        return self._device

    @device.setter
    def device(self, value: str) -> None:
        self._device = _check_device("settings.device", value)

    @property
    def seed(self) -> int:
        """Default random seed."""
        return self._seed

    @seed.setter
    def seed(self, value: int) -> None:
        self._seed = check_seed("settings.seed", value)

    @property
    def verbosity(self) -> int:
        """Logging verbosity: 0 errors, 1 warnings, 2 info, 3 debug."""
        return self._verbosity

    @verbosity.setter
    def verbosity(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value not in _VERBOSITY_LEVELS:
            msg = f"settings.verbosity must be one of {sorted(_VERBOSITY_LEVELS)}, not {value!r}."
            raise ValueError(msg)
        value = int(value)
        self._verbosity = value
        logger.setLevel(_VERBOSITY_LEVELS[value])

    @property
    def progress_bar(self) -> bool:
        """Show progress bars during training."""
        return self._progress_bar

    @progress_bar.setter
    def progress_bar(self, value: bool) -> None:
        from ._checks import check_bool

        self._progress_bar = check_bool("settings.progress_bar", value)

    def resolve_device(self, device: str | None = None) -> str:
        """Turn ``"auto"`` (or ``None``, meaning :attr:`device`) into a concrete torch device string.

        Imports torch, so it is only called where a model is about to run.
        """
        import torch

        device = self.device if device is None else _check_device("device", device)
        mps = getattr(torch.backends, "mps", None)
        mps_available = mps is not None and mps.is_available()
        if device == "auto":
            if torch.cuda.is_available():
                return "cuda"
            return "mps" if mps_available else "cpu"
        kind, _, index = device.partition(":")
        if kind == "cuda" and not torch.cuda.is_available():
            msg = f"device={device!r} was asked for, but torch sees no CUDA GPU. Use device='auto' or 'cpu'."
            raise ValueError(msg)
        if kind == "cuda" and index and int(index) >= torch.cuda.device_count():
            msg = f"device={device!r}, but torch sees {torch.cuda.device_count()} CUDA GPU(s). Pick one of them."
            raise ValueError(msg)
        if kind == "mps" and not mps_available:
            msg = f"device={device!r} was asked for, but Apple's MPS backend is not available here. Use device='auto' or 'cpu'."
            raise ValueError(msg)
        return device

    def resolve_seed(self, seed: int | None) -> int:
        """Return ``seed`` as a Python int, or the default seed where it is ``None``.

        Seeds are integers in ``[0, 2**32)`` (numpy integers too), the range every generator we seed takes.
        """
        if seed is None:
            return self.seed
        return check_seed("seed", seed)

    def __repr__(self) -> str:
        return (
            f"scdgm settings: device={self.device!r}, seed={self.seed}, "
            f"verbosity={self.verbosity}, progress_bar={self.progress_bar}"
        )


settings = ScdgmConfig()
