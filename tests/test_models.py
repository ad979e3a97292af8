"""The stored-model record: rebuilding a model, and the errors for a record that cannot be read."""

import numpy as np
import pytest
import torch

import scdgm as dgm


def _error():
    from scdgm._models import ModelRecordError

    return ModelRecordError


def test_get_model_leaves_the_torch_random_state_alone(trained):
    torch.manual_seed(0)
    state = torch.get_rng_state()
    module = dgm.get_model(trained, "vae")
    assert torch.equal(torch.get_rng_state(), state)
    assert not module.training


def test_a_record_without_weights_is_damaged(trained):
    del trained.uns["vae"]["model"]["state_dict"]
    with pytest.raises(_error(), match=r"\.uns\['vae'\]\['model'\] is damaged: it lacks \['state_dict'\]\. Train"):
        dgm.get_model(trained, "vae")


def test_a_record_with_empty_weights_is_damaged(trained):
    trained.uns["vae"]["model"]["state_dict"] = {}
    with pytest.raises(_error(), match="its state_dict holds no weights"):
        dgm.get_model(trained, "vae")


def test_a_record_whose_weights_do_not_fit_is_damaged(trained):
    state = trained.uns["vae"]["model"]["state_dict"]
    name = next(iter(state))
    state[name] = np.zeros((1, 1), dtype=np.float32)
    with pytest.raises(_error(), match=r"\.uns\['vae'\]\['model'\] is damaged and cannot be rebuilt"):
        dgm.get_model(trained, "vae")


def test_a_record_of_a_newer_scdgm_asks_for_an_upgrade(trained):
    trained.uns["vae"]["model"]["schema_version"] = 99
    with pytest.raises(_error(), match=r"written by a newer scdgm \(record version 99; .*`pip install -U scdgm`"):
        dgm.get_model(trained, "vae")


def test_an_unknown_module_class_asks_for_an_upgrade(trained):
    trained.uns["vae"]["model"]["class_name"] = "FutureModule"
    with pytest.raises(_error(), match=r"holds a 'FutureModule', which this scdgm version does not know"):
        dgm.get_model(trained, "vae")


def test_a_record_that_is_not_a_mapping_is_refused(trained):
    trained.uns["vae"]["model"] = np.zeros(3)
    with pytest.raises(_error(), match=r"is not a model record \(found ndarray\)"):
        dgm.get_model(trained, "vae")


def test_a_record_error_is_a_value_error():
    assert issubclass(_error(), ValueError)
