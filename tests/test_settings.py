"""``dgm.settings``: what its setters accept, and how tools resolve ``device=None`` / ``seed=None`` through it."""

import numpy as np
import pytest
import torch

import scdgm as dgm
from scdgm._settings import ScdgmConfig


@pytest.fixture
def config():
    """A fresh settings object, so that no test changes the package-wide one."""
    config = ScdgmConfig()
    verbosity = dgm.settings.verbosity
    yield config
    dgm.settings.verbosity = verbosity  # the setter of any config sets the shared logger's level


def test_numpy_integer_seeds_are_seeds(config):
    assert config.resolve_seed(np.int64(3)) == 3 and type(config.resolve_seed(np.int64(3))) is int
    config.seed = np.uint32(7)
    assert config.seed == 7 and type(config.seed) is int
    assert config.resolve_seed(None) == 7


@pytest.mark.parametrize("seed", [2**64, 2**32, -1, 1.5, True, "3"])
def test_seeds_outside_the_generators_range_are_refused(config, seed):
    with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\*\*32\)"):
        config.resolve_seed(seed)
    with pytest.raises(ValueError, match=r"settings.seed must be an integer in \[0, 2\*\*32\)"):
        config.seed = seed
    assert config.seed == 0


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has MPS")
def test_mps_is_refused_where_it_is_not_available(config):
    with pytest.raises(ValueError, match=r"device='mps' was asked for, but Apple's MPS backend is not available"):
        config.resolve_device("mps")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_cuda_without_a_gpu_is_a_value_error(config):
    with pytest.raises(ValueError, match="torch sees no CUDA GPU"):
        config.resolve_device("cuda:0")


@pytest.mark.parametrize("device", [0, "cuda:x", "auto:1"])
def test_a_device_that_is_not_a_device_name_is_named(config, device):
    with pytest.raises(ValueError, match=r"^device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"):
        config.resolve_device(device)
    with pytest.raises(ValueError, match=r"^settings.device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"):
        config.device = device
    assert config.device == "auto"


def test_settings_device_is_what_none_resolves_to(config):
    config.device = "cpu"
    assert config.resolve_device(None) == "cpu"
    if not torch.backends.mps.is_available():
        config.device = "mps"
        with pytest.raises(ValueError, match="MPS backend is not available"):
            config.resolve_device(None)


@pytest.mark.parametrize("value", ["False", 0, None])
def test_progress_bar_takes_a_bool(config, value):
    with pytest.raises(ValueError, match=r"settings.progress_bar must be True or False"):
        config.progress_bar = value
    assert config.progress_bar is True
    config.progress_bar = np.bool_(False)
    assert config.progress_bar is False


@pytest.mark.parametrize("value", [True, 1.0])
def test_verbosity_takes_a_level(config, value):
    with pytest.raises(ValueError, match=r"settings.verbosity must be one of \[0, 1, 2, 3\]"):
        config.verbosity = value
    assert config.verbosity == 2
    config.verbosity = np.int64(1)
    assert config.verbosity == 1 and type(config.verbosity) is int
