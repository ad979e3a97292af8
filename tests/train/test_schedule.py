import pytest

from scdgm.train import KLWarmup, default_kl_warmup_epochs, default_max_epochs


def test_warmup_rises_linearly_and_reaches_beta():
    warmup = KLWarmup(beta=4.0, warmup_steps=10)
    weights = [warmup.weight(s) for s in range(12)]
    assert weights[0] == pytest.approx(0.4)
    assert weights[4] == pytest.approx(2.0)
    assert weights[9] == pytest.approx(4.0)  # the last warm-up step trains at full beta
    assert weights[11] == pytest.approx(4.0)
    assert all(b >= a for a, b in zip(weights, weights[1:], strict=False))
    assert not warmup.done(8)
    assert warmup.done(9)


def test_no_warmup_means_full_weight_from_the_start():
    warmup = KLWarmup(beta=0.5, warmup_steps=0)
    assert warmup.weight(0) == 0.5
    assert warmup.done(0)


@pytest.mark.parametrize("n_cells", [500, 20_000, 200_000, 2_000_000])
def test_default_warmup_ends_within_the_run(n_cells):
    max_epochs = default_max_epochs(n_cells)
    warm = default_kl_warmup_epochs(max_epochs)
    assert 1 <= warm < max_epochs


def test_default_max_epochs_scales_with_cells():
    assert default_max_epochs(700) == 400
    assert default_max_epochs(200_000) == 40
    assert default_max_epochs(10_000_000) == 20
    with pytest.raises(ValueError, match="at least one"):
        default_max_epochs(0)


@pytest.mark.parametrize(("beta", "steps"), [(-1.0, 5), (float("nan"), 5), (1.0, -1)])
def test_bad_schedule_arguments(beta, steps):
    with pytest.raises(ValueError, match="beta|warm-up"):
        KLWarmup(beta=beta, warmup_steps=steps)
