import numpy as np

from scdgm.tl._rotation import orient_and_order, varimax


def _sparse_truth(seed=0, n_genes=200, k=4):
    rng = np.random.default_rng(seed)
    truth = np.zeros((n_genes, k))
    for j in range(k):
        genes = rng.choice(n_genes, 25, replace=False)
        truth[genes, j] = rng.uniform(1, 2, 25)
    return truth + rng.normal(0, 0.05, truth.shape)


def _match(a, b):
    r = np.abs(np.corrcoef(a.T, b.T)[: a.shape[1], a.shape[1] :])
    return r.max(axis=1).mean()


def test_varimax_undoes_a_random_rotation():
    truth = _sparse_truth()
    hadamard = np.array([[1, 1, 1, 1], [1, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]]) / 2.0
    mixed = truth @ hadamard  # every factor an equal mix of all four programs
    assert _match(mixed, truth) < 0.8
    rotation = varimax(mixed)
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(4), atol=1e-10)
    assert _match(mixed @ rotation, truth) > 0.99


def test_orient_and_order():
    loadings = np.array([[0.1, -3.0], [0.2, -0.1], [0.0, 0.5]])
    order, signs = orient_and_order(loadings)
    np.testing.assert_array_equal(order, [1, 0])
    np.testing.assert_array_equal(signs, [-1.0, 1.0])
    fixed = loadings[:, order] * signs
    assert fixed[0, 0] == 3.0
