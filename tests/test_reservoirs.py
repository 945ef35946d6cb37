"""Reservoir construction: graphs, spectral radius (vs torch.linalg.eigvals), matrices, Hebbian
adaptation, bad input."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from bpalts._checks import DivergenceError
from bpalts.reservoirs import (
    _draw,
    hebbian_adapt,
    input_matrix,
    random_graph,
    reservoir_matrix,
    scale_spectral_radius,
    spectral_radius,
)


def _rho(W: torch.Tensor) -> float:
    W = W.to_dense() if W.layout == torch.sparse_csr else W
    return torch.linalg.eigvals(W.double()).abs().max().item()


@pytest.mark.parametrize("kind", ["erdos_renyi", "scale_free"])
@pytest.mark.parametrize("n,density", [(1, 1.0), (7, 0.5), (61, 0.2), (211, 0.05)])
def test_spectral_radius_matches_eigvals(kind, n, density):
    g = torch.Generator().manual_seed(n)
    A = random_graph(n, density, kind, generator=g)
    W = torch.randn(n, n, generator=g, dtype=torch.float64) * A
    want = _rho(W)
    if want == 0.0:  # no cycles (scale-free with n=1 has no edges)
        assert spectral_radius(W) == 0.0
    else:
        assert spectral_radius(W) == pytest.approx(want, rel=1e-6)


def test_spectral_radius_complex_dominant_pair():
    # Eigenvalues 0.9 e^{+-i 2.0} (dominant complex pair), 0.85, -0.5, small ones: a real
    # non-symmetric matrix on which real power iteration oscillates forever.
    g = torch.Generator().manual_seed(3)
    n = 40
    D = torch.zeros(n, n, dtype=torch.float64)
    r, th = 0.9, 2.0
    D[0, 0], D[0, 1], D[1, 0], D[1, 1] = r * math.cos(th), -r * math.sin(th), r * math.sin(th), r * math.cos(th)
    D[2, 2], D[3, 3] = 0.85, -0.5
    D[4:, 4:] = torch.diag(torch.linspace(-0.3, 0.3, n - 4, dtype=torch.float64))
    S = torch.randn(n, n, generator=g, dtype=torch.float64)
    W = S @ D @ torch.linalg.inv(S)
    assert torch.linalg.eigvals(W).abs().max().item() == pytest.approx(0.9, rel=1e-9)
    assert spectral_radius(W, krylov_dim=8) == pytest.approx(0.9, rel=1e-6)


def test_spectral_radius_sparse_csr_and_float32():
    g = torch.Generator().manual_seed(0)
    W = (torch.randn(150, 150, generator=g) * (torch.rand(150, 150, generator=g) < 0.1)).float()
    want = _rho(W)
    assert spectral_radius(W.to_sparse_csr()) == pytest.approx(want, rel=1e-5)
    assert spectral_radius(W) == pytest.approx(want, rel=1e-5)


def test_spectral_radius_nilpotent_is_zero():
    assert spectral_radius(torch.zeros(5, 5)) == 0.0
    # A nilpotent Jordan-like matrix: its zero eigenvalue is defective, so any floating-point
    # method sees it perturbed by ~eps**(1/n); the estimate must still be tiny.
    W = torch.triu(torch.ones(6, 6, dtype=torch.float64), diagonal=1)
    assert spectral_radius(W) == 0.0  # detected exactly (acyclic graph), not estimated
    with pytest.raises(ValueError, match="spectral radius 0"):
        scale_spectral_radius(torch.zeros(4, 4), 0.9)


@pytest.mark.parametrize("graph", ["erdos_renyi", "scale_free"])
@pytest.mark.parametrize("layout", ["dense", "csr"])
def test_reservoir_matrix(graph, layout):
    W = reservoir_matrix(97, spectral_radius=0.8, density=0.1, graph=graph, layout=layout, seed=1)
    assert W.shape == (97, 97) and W.dtype == torch.float32
    assert W.layout == (torch.sparse_csr if layout == "csr" else torch.strided)
    assert _rho(W) == pytest.approx(0.8, rel=1e-5)
    dense = W.to_dense() if layout == "csr" else W
    assert 0.05 < (dense != 0).float().mean().item() < 0.15
    # reproducible from the seed
    W2 = reservoir_matrix(97, spectral_radius=0.8, density=0.1, graph=graph, layout=layout, seed=1)
    assert torch.equal(dense, W2.to_dense() if layout == "csr" else W2)


def test_scale_free_degrees_are_heavy_tailed():
    A = random_graph(400, 0.05, "scale_free", seed=0)
    indeg = A.sum(1).float()  # edges j -> i received by i
    er = random_graph(400, 0.05, "erdos_renyi", seed=0).sum(1).float()
    # preferential attachment: the largest in-degree is far above the mean, unlike Erdos-Renyi
    assert indeg.max() / indeg.mean() > 2 * (er.max() / er.mean())
    assert 0.03 < A.float().mean().item() < 0.06


def test_input_matrix():
    W = input_matrix(50, 30, scaling=0.25, density=0.2, seed=0)
    assert W.shape == (50, 30)
    assert W.abs().max().item() <= 0.25
    assert 0.1 < (W != 0).float().mean().item() < 0.3
    Wn = input_matrix(200, 100, scaling=2.0, distribution="normal", seed=0)
    assert Wn.std().item() == pytest.approx(2.0, rel=0.05)


@pytest.mark.parametrize("layout", ["dense", "csr"])
def test_hebbian_adapt_matches_formula(layout):
    g = torch.Generator().manual_seed(0)
    n, B = 23, 9
    W0 = reservoir_matrix(n, 0.9, 0.3, seed=2, dtype=torch.float64)
    pre = torch.randn(B, n, generator=g, dtype=torch.float64).tanh()
    post = torch.randn(B, n, generator=g, dtype=torch.float64).tanh()
    dW = (post.T @ pre - (post * post).sum(0)[:, None] * W0) * (W0 != 0)
    W = W0.clone() if layout == "dense" else W0.to_sparse_csr()
    out = hebbian_adapt(W, pre, post, lr=0.01, rule="anti_oja")
    assert out is W
    got = W.to_dense() if layout == "csr" else W
    torch.testing.assert_close(got, W0 - 0.01 / B * dW, rtol=1e-12, atol=1e-12)
    # pattern kept
    assert torch.equal(got != 0, W0 != 0)
    # Oja sign, and spectral radius restored
    W = W0.clone()
    hebbian_adapt(W, pre, post, lr=0.1, rule="oja", spectral_radius=0.9)
    assert _rho(W) == pytest.approx(0.9, rel=1e-6)
    # without keep_pattern the zeros fill in
    W = W0.clone()
    hebbian_adapt(W, pre, post, lr=0.01, rule="oja", keep_pattern=False)
    assert (W != 0).sum() > (W0 != 0).sum()


def test_bad_input():
    with pytest.raises(ValueError, match="spectral_radius must be > 0"):
        reservoir_matrix(10, spectral_radius=0.0)
    with pytest.raises(ValueError, match="spectral_radius must be > 0"):
        reservoir_matrix(10, spectral_radius=-1.0)
    with pytest.raises(ValueError, match=r"density must be in \(0, 1\]"):
        reservoir_matrix(10, density=0.0)
    with pytest.raises(ValueError, match=r"density must be in \(0, 1\]"):
        random_graph(10, density=1.5)
    with pytest.raises(ValueError, match=r"density must be in \(0, 1\]"):
        input_matrix(10, 3, density=-0.1)
    with pytest.raises(ValueError, match="n must be >= 1"):
        reservoir_matrix(0)
    with pytest.raises(TypeError, match="n must be an int"):
        reservoir_matrix(10.5)
    with pytest.raises(ValueError, match="d must be >= 1"):
        input_matrix(10, 0)
    with pytest.raises(ValueError, match="scaling must be > 0"):
        input_matrix(10, 3, scaling=0.0)
    with pytest.raises(ValueError, match="kind must be one of"):
        random_graph(10, 0.5, "small_world")
    with pytest.raises(ValueError, match="layout must be one of"):
        reservoir_matrix(10, layout="coo")
    with pytest.raises(ValueError, match="square"):
        spectral_radius(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="W contains NaN"):
        spectral_radius(torch.full((3, 3), float("nan")))
    with pytest.raises(TypeError, match="W must be a torch.Tensor"):
        spectral_radius([[1.0]])
    W = reservoir_matrix(8, seed=0)
    with pytest.raises(ValueError, match=r"pre and post must both be \(batch, 8\)"):
        hebbian_adapt(W, torch.zeros(2, 8), torch.zeros(2, 7))
    with pytest.raises(ValueError, match="rule must be one of"):
        hebbian_adapt(W, torch.zeros(2, 8), torch.zeros(2, 8), rule="bcm")
    with pytest.raises(ValueError, match="pre has an empty batch"):
        hebbian_adapt(W, torch.zeros(0, 8), torch.zeros(0, 8))


@pytest.mark.parametrize("n", [4, 40, 100])
@pytest.mark.parametrize("layout", ["dense", "csr"])
def test_spectral_radius_nilpotent_exact_and_scale_raises(n, layout):
    # Strictly upper triangular: a defective zero eigenvalue that Arnoldi + eig alone sees as
    # 6e-5 (n=4) .. 2.2 (n=100); the acyclic-graph test returns 0 exactly, and scaling raises.
    W = torch.triu(torch.ones(n, n), diagonal=1)
    W = W.to_sparse_csr() if layout == "csr" else W
    assert spectral_radius(W) == 0.0
    with pytest.raises(ValueError, match="spectral radius 0"):
        scale_spectral_radius(W, 0.9)


def test_spectral_radius_zero_detection_is_not_too_eager():
    # nilpotent through cancellation (its graph has cycles): W^2 v is exactly 0
    assert spectral_radius(torch.tensor([[1.0, 1.0], [-1.0, -1.0]])) == 0.0
    with pytest.raises(ValueError, match="spectral radius 0"):
        scale_spectral_radius(torch.tensor([[1.0, 1.0], [-1.0, -1.0]]), 0.9)
    # an acyclic part next to a cycle: radius 1 from the cycle
    W = torch.zeros(7, 7, dtype=torch.float64)
    W[:5, :5] = torch.triu(torch.ones(5, 5, dtype=torch.float64), 1)
    W[5, 6] = W[6, 5] = 1.0
    W[5, 0] = 3.0  # the chain feeds the cycle
    assert spectral_radius(W) == pytest.approx(1.0, rel=1e-9)
    # rho = 1e-10, far below sqrt(eps) ||W||: the estimate is rounding noise, which is an error
    with pytest.raises(ValueError, match="indistinguishable from 0"):
        scale_spectral_radius(torch.tensor([[0.0, 1e10], [1e-30, 0.0]], dtype=torch.float64), 0.9)


def test_int_seed_and_flag_arguments():
    W = reservoir_matrix(8, seed=0)
    with pytest.raises(TypeError, match="max_restarts must be an int, got str"):
        spectral_radius(W, max_restarts="x")
    with pytest.raises(TypeError, match="max_restarts must be an int, got float"):
        spectral_radius(W, max_restarts=float("nan"))
    with pytest.raises(TypeError, match="max_restarts must be an int, got bool"):
        spectral_radius(W, max_restarts=True)
    with pytest.raises(ValueError, match="max_restarts must be >= 1"):
        spectral_radius(W, max_restarts=0)
    with pytest.raises(ValueError, match="krylov_dim must be >= 1"):
        spectral_radius(W, krylov_dim=0)
    assert spectral_radius(W, max_restarts=np.int64(5)) == pytest.approx(_rho(W), rel=1e-5)
    for seed in (2**70, -1):
        with pytest.raises(ValueError, match=r"seed must be in 0\.\.18446744073709551615"):
            random_graph(5, seed=seed)
    with pytest.raises(TypeError, match="seed must be an int"):
        reservoir_matrix(5, seed="1")
    assert torch.equal(random_graph(5, seed=np.int64(3)), random_graph(5, seed=3))
    random_graph(5, seed=2**64 - 1)
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        input_matrix(5, 3, generator=3)
    with pytest.raises(TypeError, match="self_loops must be a bool"):
        random_graph(5, self_loops="no")
    with pytest.raises(TypeError, match="dtype must be a torch.dtype"):
        reservoir_matrix(5, dtype="float32")
    with pytest.raises(TypeError, match="dtype must be torch.float32 or torch.float64, got torch.int64"):
        input_matrix(5, 3, dtype=torch.int64)
    with pytest.raises(TypeError, match="keep_pattern must be a bool"):
        hebbian_adapt(W.clone(), torch.zeros(2, 8), torch.zeros(2, 8), keep_pattern="no")


@pytest.mark.parametrize("layout", ["dense", "csr"])
def test_hebbian_adapt_checks_before_writing(layout):
    W0 = reservoir_matrix(8, seed=0)
    g = torch.Generator().manual_seed(0)
    pre, post = torch.randn(3, 8, generator=g), torch.randn(3, 8, generator=g)

    def fresh():
        return W0.clone() if layout == "dense" else W0.to_sparse_csr()

    def unchanged(W):
        return torch.equal(W.to_dense() if layout == "csr" else W, W0)

    bad = pre.clone()
    bad[0, 0] = float("nan")
    W = fresh()
    with pytest.raises(ValueError, match="pre contains NaN"):
        hebbian_adapt(W, bad, post)
    assert unchanged(W)
    W = fresh()
    with pytest.raises(ValueError, match="post contains NaN"):
        hebbian_adapt(W, pre, bad)
    assert unchanged(W)
    W = fresh()
    with pytest.raises(ValueError, match="spectral_radius must be > 0"):
        hebbian_adapt(W, pre, post, spectral_radius=-1.0)
    assert unchanged(W)
    # finite inputs, divergent step: DivergenceError, W left as it was
    W = fresh()
    with pytest.raises(DivergenceError, match="hebbian_adapt diverged.*W is left unchanged"):
        hebbian_adapt(W, pre * 1e30, post * 1e30, lr=1e10)
    assert unchanged(W)
    # a non-finite W is reported as such, not as a divergence
    Wi = W0.clone()
    Wi[0, 1] = float("inf")
    Wi = Wi if layout == "dense" else Wi.to_sparse_csr()
    with pytest.raises(ValueError, match="W contains NaN"):
        hebbian_adapt(Wi, pre, post)
    # a step whose result cannot be rescaled (nilpotent) raises before writing
    N0 = torch.triu(torch.randn(8, 8, generator=g), 1)
    N = N0.clone() if layout == "dense" else N0.to_sparse_csr()
    with pytest.raises(ValueError, match="W after the hebbian_adapt step has spectral radius 0"):
        hebbian_adapt(N, pre, post, spectral_radius=0.9)
    assert torch.equal(N.to_dense() if layout == "csr" else N, N0)


def test_hebbian_adapt_rejects_broadcast_w():
    W = torch.ones(1, 8).expand(8, 8)
    with pytest.raises(ValueError, match="W is updated in place and must not be a broadcast"):
        hebbian_adapt(W, torch.zeros(2, 8), torch.zeros(2, 8))


def _eig_radius(W: torch.Tensor) -> float:
    return float(np.abs(np.linalg.eigvals(W.to_dense().double().numpy())).max())


@pytest.mark.parametrize("layout", ["dense", "csr"])
@pytest.mark.parametrize("scale", [1e-14, 1e-9, 1.0, 1e12])
def test_spectral_radius_is_invariant_to_the_scale_of_W(layout, scale):
    # The Arnoldi happy-breakdown test compared H[j+1, j] with an absolute 1e-12: for a W with
    # small entries every step looked invariant and the Rayleigh quotient of the start vector
    # came back as the radius (30x too small at 1e-14), so scale_spectral_radius overshot.
    g = torch.Generator().manual_seed(3)
    W0 = torch.randn(50, 50, dtype=torch.float64, generator=g) / 50**0.5
    W = W0 * scale
    if layout == "csr":
        W = W.to_sparse_csr()
    want = _eig_radius(W0) * scale
    assert spectral_radius(W) == pytest.approx(want, rel=1e-5)
    assert _eig_radius(scale_spectral_radius(W, 0.9)) == pytest.approx(0.9, rel=1e-5)


def _sparse_uniform(n, density, seed):
    W = _draw((n, n), "uniform", torch.Generator().manual_seed(seed), torch.float64)
    return W * (torch.rand(n, n, generator=torch.Generator().manual_seed(seed + 1000)) < density)


# These matrices made the single-vector-restart Arnoldi converge (residual <= tol, no warning)
# to the second-largest eigenvalue pair, 0.1% .. 0.5% below the spectral radius.
@pytest.mark.parametrize("seed", [27, 86, 91])
def test_spectral_radius_is_the_largest_modulus(seed):
    W = _sparse_uniform(300, 0.05, seed)
    true = float(torch.linalg.eigvals(W).abs().max())
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        est = spectral_radius(W)
    assert abs(est - true) <= 1e-5 * true


def test_scaled_radius_is_the_requested_one():
    W = _sparse_uniform(300, 0.05, 86)
    S = scale_spectral_radius(W, 0.9)
    assert abs(float(torch.linalg.eigvals(S).abs().max()) - 0.9) <= 1e-5


@pytest.mark.parametrize("scale", [1e-300, 1e-200, 1e160, 1e200, 1e300])
def test_spectral_radius_of_very_large_or_small_matrices(scale):
    """``spectral_radius`` took the Frobenius norm of ``W`` (and of the Krylov vectors) with
    torch's unscaled norm, which overflows to inf for entries above ~1e154 and underflows to 0
    below ~1e-154: the happy-breakdown test then fired at the first Arnoldi step and a 1 x 1
    Rayleigh quotient was returned as the radius (0.172x the true value for a 50 x 50 Gaussian
    matrix times 1e200 or 1e-200, with no warning), and ``scale_spectral_radius`` refused such
    a ``W`` as "indistinguishable from 0". The matrix is now scaled by a power of two first
    (exact, so ordinary matrices give bit-identical results)."""
    g = torch.Generator().manual_seed(0)
    W0 = torch.randn(50, 50, generator=g, dtype=torch.float64)
    want = float(torch.linalg.eigvals(W0).abs().max())
    W = W0 * scale
    assert spectral_radius(W) == pytest.approx(want * scale, rel=1e-6)
    assert spectral_radius(W.to_sparse_csr()) == pytest.approx(want * scale, rel=1e-6)
    assert spectral_radius(W0) == spectral_radius(W0 * 2.0**40) / 2.0**40  # exact scaling
    Ws = scale_spectral_radius(W, 0.9)
    assert float(torch.linalg.eigvals(Ws).abs().max()) == pytest.approx(0.9, rel=1e-6)
