"""The engine on a toy module: history, warm-up, early stopping, seeding, failure modes."""

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from scdgm.train import TrainingError, fit, predict, seeded


@dataclass
class _Out:
    loss: torch.Tensor
    terms: dict
    n_obs: int


class _Toy(torch.nn.Module):
    """Linear regression with a fake 'kl' term, enough to exercise the engine."""

    def __init__(self, n_in=5, poison_after=None):
        super().__init__()
        self.linear = torch.nn.Linear(n_in, 1)
        self.seen_kl_weights = []
        self.poison_after = poison_after
        self.steps = 0

    def forward(self, batch, kl_weight=1.0):
        self.seen_kl_weights.append(kl_weight)
        pred = self.linear(batch["x"]).squeeze(-1)
        rec = (pred - batch["y"]) ** 2
        kl = self.linear.weight.pow(2).sum().expand_as(rec) * 0.01
        loss = (rec + kl_weight * kl).mean()
        if self.training:
            self.steps += 1
            if self.poison_after is not None and self.steps > self.poison_after:
                loss = loss * float("nan")
        terms = {"reconstruction": rec.mean().detach(), "kl": kl.mean().detach(), "elbo": (rec + kl).mean().detach()}
        return _Out(loss, terms, batch["x"].shape[0])


class _Batches:
    def __init__(self, x, y, batch_size, seed=0, shuffle=True):
        self.x, self.y, self.batch_size, self.shuffle = x, y, batch_size, shuffle
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self):
        return (len(self.x) + self.batch_size - 1) // self.batch_size

    def __iter__(self):
        order = torch.randperm(len(self.x), generator=self.generator) if self.shuffle else torch.arange(len(self.x))
        for start in range(0, len(self.x), self.batch_size):
            idx = order[start : start + self.batch_size]
            yield {"x": self.x[idx], "y": self.y[idx]}


def _data(n=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 0.0, 3.0]) + 0.1 * torch.randn(n, generator=g)
    return x, y


def _train(seed=0, **kwargs):
    x, y = _data()
    with seeded(seed):
        module = _Toy()
        result = fit(
            module,
            _Batches(x[:160], y[:160], 32, seed=seed),
            _Batches(x[160:], y[160:], 64, shuffle=False),
            progress_bar=False,
            **kwargs,
        )
    return module, result


def test_fit_learns_and_records_history():
    module, result = _train(max_epochs=30, lr=0.05, early_stopping=False)
    hist = result.history
    assert result.n_epochs == 30
    assert len(hist["train_reconstruction"]) == 30
    assert set(hist) >= {"epoch", "kl_weight", "train_elbo", "validation_elbo", "validation_kl"}
    assert hist["validation_reconstruction"][-1] < 0.1 * hist["validation_reconstruction"][0]
    assert result.monitor == "elbo"
    assert result.train_cells_per_second > 0
    assert not module.training
    seconds = np.asarray(hist["epoch_seconds"])
    assert seconds.shape == (30,) and (seconds > 0).all()
    # the epochs' training time is the loop's, validation excluded
    assert result.train_cells_per_second == pytest.approx(30 * 160 / seconds.sum(), rel=1e-6)


def test_kl_weight_follows_warmup_and_reaches_beta():
    module, result = _train(max_epochs=6, beta=2.0, kl_warmup_epochs=3, early_stopping=False)
    train_weights = module.seen_kl_weights
    # 5 training steps per epoch: the warm-up lasts 15 steps, reaching beta on the 15th.
    steps = [w for w in train_weights if w is not None]
    assert steps[0] == pytest.approx(2.0 / 15)
    assert max(steps) == pytest.approx(2.0)
    assert result.history["kl_weight"][2] == pytest.approx(2.0)
    assert result.history["kl_weight"][0] < 2.0


def test_early_stopping_waits_for_warmup_and_restores_best():
    module, result = _train(max_epochs=200, lr=0.05, patience=3, kl_warmup_epochs=5)
    assert result.stopped_early
    assert result.n_epochs < 200
    assert result.best_epoch >= 4  # not before warm-up ended
    best = result.history["validation_elbo"][result.best_epoch]
    assert best == pytest.approx(min(result.history["validation_elbo"][4:]))


def test_restore_best_false_runs_every_epoch_and_keeps_the_last():
    module, result = _train(max_epochs=40, lr=0.05, patience=3, kl_warmup_epochs=5, restore_best=False)
    assert result.n_epochs == 40 and not result.stopped_early and result.best_epoch == 39
    assert "validation_elbo" in result.history  # still recorded
    last, _ = _train(max_epochs=40, lr=0.05, early_stopping=False, kl_warmup_epochs=5, restore_best=False)
    assert torch.equal(module.linear.weight, last.linear.weight)


def test_same_seed_same_model_and_history():
    m1, r1 = _train(seed=3, max_epochs=5, early_stopping=False)
    m2, r2 = _train(seed=3, max_epochs=5, early_stopping=False)
    m3, _ = _train(seed=4, max_epochs=5, early_stopping=False)
    assert torch.equal(m1.linear.weight, m2.linear.weight)
    assert (
        r1.history["train_loss" if "train_loss" in r1.history else "train_elbo"]
        == r2.history["train_loss" if "train_loss" in r2.history else "train_elbo"]
    )
    assert not torch.equal(m1.linear.weight, m3.linear.weight)


def test_seeded_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    with seeded(7):
        torch.rand(10)
    assert torch.equal(torch.rand(3), expected)


def test_nan_loss_raises_a_clear_error():
    x, y = _data()
    with pytest.raises(TrainingError, match="Lower lr"):
        fit(_Toy(poison_after=3), _Batches(x, y, 32), None, max_epochs=5, progress_bar=False)


def test_bad_arguments():
    x, y = _data()
    with pytest.raises(ValueError, match="max_epochs"):
        fit(_Toy(), _Batches(x, y, 32), None, max_epochs=0)
    with pytest.raises(ValueError, match="no minibatch"):
        fit(_Toy(), _Batches(x[:0], y[:0], 32), None, max_epochs=1)


def test_predict_concatenates_in_order():
    x, y = _data(50)
    module = _Toy()
    out = predict(module, _Batches(x, y, 16, shuffle=False), lambda m, b: m.linear(b["x"]).squeeze(-1))
    np.testing.assert_allclose(out, module.linear(x).squeeze(-1).detach().numpy(), rtol=1e-6)


# --------------------------------------------------------------------------------------------------
# regression tests of the reliability sweep
class _Diverging(_Toy):
    """After two steps its output distribution gets a negative scale, as a diverged model's does."""

    def forward(self, batch, kl_weight=1.0):
        out = super().forward(batch, kl_weight)
        if self.training and self.steps > 2:
            torch.distributions.Normal(torch.zeros(3), -torch.ones(3), validate_args=True)
        return out


def test_a_diverged_distribution_is_a_training_error_without_the_tensor_dump():
    x, y = _data()
    with pytest.raises(
        TrainingError, match=r"Training diverged at epoch 0 \(Expected parameter scale .*Lower lr"
    ) as info:
        fit(_Diverging(), _Batches(x, y, 32), None, max_epochs=5, progress_bar=False)
    assert "\n" not in str(info.value) and "tensor(" not in str(info.value)
    assert isinstance(info.value.__cause__, ValueError)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"lr": 0}, r"lr must be a finite number > 0, not 0"),
        ({"lr": "0.1"}, r"lr must be a finite number > 0, not '0.1'"),
        ({"beta": "1"}, r"beta must be a finite number >= 0, not '1'"),
        ({"max_epochs": "5"}, r"max_epochs must be an integer >= 1, not '5'"),
        ({"precision": "16-mixed"}, r"precision='16-mixed' needs a CUDA GPU, but the model runs on 'cpu'"),
    ],
)
def test_fit_names_a_bad_argument(kwargs, match):
    x, y = _data()
    module = _Toy()
    with pytest.raises(ValueError, match=match):
        fit(module, _Batches(x, y, 32), None, **{"max_epochs": 2, "progress_bar": False, **kwargs})
    assert module.steps == 0


def test_a_value_error_that_is_not_divergence_is_raised_as_it_is():
    import torch

    from scdgm.train import TrainingError, fit

    class Broken(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))

        def forward(self, batch, kl_weight=1.0):
            raise ValueError("shapes do not match")

    batches = [{"x": torch.zeros(2, 1)}]
    with pytest.raises(ValueError, match="shapes do not match") as caught:
        fit(Broken(), batches, max_epochs=1)
    assert not isinstance(caught.value, TrainingError)


@pytest.mark.parametrize("scale", [1e-3, 1e3])
def test_one_process_clipping_matches_torch(scale):
    """Under the norm the gradients are left as they are, over it they are scaled exactly as torch scales them."""
    from scdgm.train._fit import _OneProcess

    torch.manual_seed(0)
    ours, theirs = torch.nn.Linear(20, 7), torch.nn.Linear(20, 7)
    theirs.load_state_dict(ours.state_dict())
    inputs = torch.randn(5, 20)
    for module in (ours, theirs):
        (module(inputs).square().sum() * scale).backward()
    before = [p.grad.clone() for p in ours.parameters()]
    _OneProcess.clip_gradients(ours, None, max_norm=1.0)
    torch.nn.utils.clip_grad_norm_(theirs.parameters(), 1.0)
    for a, b, old in zip(ours.parameters(), theirs.parameters(), before, strict=True):
        assert torch.equal(a.grad, b.grad)
        assert torch.equal(a.grad, old) == (scale < 1)
    total = torch.sqrt(sum(p.grad.square().sum() for p in ours.parameters()))
    assert float(total) <= 1.0 + 1e-5
