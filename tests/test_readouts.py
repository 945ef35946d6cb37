"""Readouts: ridge vs torch.linalg.lstsq, ill-conditioned float32 features, RLS -> ridge, SGD,
Hebbian WTA, state_dict, bad input."""
from __future__ import annotations

import pytest
import torch

from bpalts.learners.reservoir import EchoStateNetwork
from bpalts.readouts import HebbianWTAReadout, RidgeReadout, RLSReadout, SGDReadout


def _lstsq_ridge(X: torch.Tensor, Y: torch.Tensor, lam: float, bias: bool) -> torch.Tensor:
    """float64 lstsq of [X 1; sqrt(lam) I~ 0] w = [Y; 0] (bias column not penalised): (C, F+1)."""
    X = X.double()
    if bias:
        X = torch.cat([X, torch.ones(X.shape[0], 1, dtype=torch.float64)], 1)
    F = X.shape[1]
    pen = torch.eye(F, dtype=torch.float64) * lam**0.5
    if bias:
        pen = pen[:-1]
    A = torch.cat([X, pen])
    B = torch.cat([Y.double(), torch.zeros(pen.shape[0], Y.shape[1], dtype=torch.float64)])
    return torch.linalg.lstsq(A, B, driver="gelsd").solution.T


def _full(r) -> torch.Tensor:
    return torch.cat([r.weight.double(), r.bias_vector.double()[:, None]], 1)


def _data(n=300, F=17, C=4, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, F, generator=g, dtype=dtype)
    Wt = torch.randn(C, F, generator=g, dtype=dtype)
    Y = X @ Wt.T + 0.1 * torch.randn(n, C, generator=g, dtype=dtype)
    return X, Y


@pytest.mark.parametrize("lam", [0.0, 0.5, 30.0])
@pytest.mark.parametrize("bias", [True, False])
def test_ridge_matches_lstsq_float64(lam, bias):
    X, Y = _data()
    r = RidgeReadout(17, 4, ridge=lam, bias=bias, out_dtype=torch.float64)
    for i in range(0, 300, 37):  # accumulated over uneven batches
        r.partial_fit(X[i : i + 37], Y[i : i + 37])
    r.solve()
    want = _lstsq_ridge(X, Y, lam, bias)
    got = _full(r) if bias else r.weight.double()
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(r(X), X @ want[:, :17].T + (want[:, 17] if bias else 0), rtol=1e-6, atol=1e-8)


def test_ridge_ill_conditioned_float32_features():
    """X is float32 (400 x 30) with condition number 1e7 (singular values 1 .. 1e-7). A float32
    Gram matrix would have condition 1e14 > 1/eps32 and lose the solution entirely; accumulated in
    float64 (from the float32 values, exactly) and solved by Cholesky:
    * ridge = 1e-12 (regularised Gram's condition <= 1e12): the weights are within 1e-3 (relative
      Frobenius) of the float64 lstsq solution of the same regularised problem on the same
      float32 values, and the predictions within 1e-4;
    * ridge = 0: the result is finite and the predictions are within 1e-2 of float64 lstsq."""
    g = torch.Generator().manual_seed(0)
    n, F, C = 400, 30, 3
    U, _ = torch.linalg.qr(torch.randn(n, F, generator=g, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(F, F, generator=g, dtype=torch.float64))
    s = torch.logspace(0, -7, F, dtype=torch.float64)
    X32 = ((U * s) @ V.T).float()
    cond = torch.linalg.cond(X32.double()).item()
    assert 5e6 < cond < 2e7
    Y = torch.randn(n, C, generator=g, dtype=torch.float64)
    X64 = X32.double()

    r = RidgeReadout(F, C, ridge=1e-12, bias=False, out_dtype=torch.float64).partial_fit(X32, Y)
    want = _lstsq_ridge(X64, Y, 1e-12, bias=False)
    got = r.solve().weight
    assert torch.isfinite(got).all()
    assert ((got - want).norm() / want.norm()).item() < 1e-3
    pred, pred_want = X64 @ got.T, X64 @ want.T
    assert ((pred - pred_want).norm() / pred_want.norm()).item() < 1e-4

    r0 = RidgeReadout(F, C, ridge=0.0, bias=False, out_dtype=torch.float64).partial_fit(X32, Y).solve()
    want0 = _lstsq_ridge(X64, Y, 0.0, bias=False)
    assert torch.isfinite(r0.weight).all()
    pred0, pred0_want = X64 @ r0.weight.T, X64 @ want0.T
    assert ((pred0 - pred0_want).norm() / pred0_want.norm()).item() < 1e-2

    # the float32 output weights (the default) hold the same solution to float32 precision
    r32 = RidgeReadout(F, C, ridge=1e-12, bias=False).partial_fit(X32, Y)
    assert r32(X32).dtype == torch.float32
    assert ((r32.solve().weight.double() - want).norm() / want.norm()).item() < 1e-3


def test_ridge_float32_products_well_conditioned():
    X, Y = _data(n=500, F=40, C=3, seed=4, dtype=torch.float32)
    a = RidgeReadout(40, 3, ridge=1.0, product_dtype=torch.float32)
    b = RidgeReadout(40, 3, ridge=1.0)
    for i in range(0, 500, 100):
        a.partial_fit(X[i : i + 100], Y[i : i + 100])
        b.partial_fit(X[i : i + 100], Y[i : i + 100])
    want = _lstsq_ridge(X, Y, 1.0, bias=True)
    assert ((_full(a.solve()) - want).norm() / want.norm()).item() < 1e-5
    assert ((_full(b.solve()) - want).norm() / want.norm()).item() < 1e-6


def test_ridge_class_indices_and_lazy_solve():
    g = torch.Generator().manual_seed(1)
    y = torch.randint(0, 3, (200,), generator=g)
    X = torch.randn(200, 5, generator=g) + 3 * torch.nn.functional.one_hot(y, 3).float() @ torch.randn(3, 5, generator=g)
    r = RidgeReadout(5, 3, ridge=1e-3)
    assert torch.equal(r(X), torch.zeros(200, 3))  # before any data: zeros
    r.partial_fit(X[:100], y[:100])
    assert int(r.solved_count) == 0
    acc1 = (r.predict(X) == y).float().mean().item()  # solves lazily here
    assert int(r.solved_count) == 100
    r.partial_fit(X[100:], y[100:])
    r.predict(X)
    assert int(r.solved_count) == 200
    assert acc1 > 0.8
    T = torch.nn.functional.one_hot(y, 3).double()
    want = _lstsq_ridge(X, T, 1e-3, bias=True)
    torch.testing.assert_close(_full(r), want, rtol=1e-4, atol=1e-5)


def test_ridge_singular_policies():
    Y = torch.randn(50, 2, dtype=torch.float64)
    # an all-zero feature column: G is exactly singular without a ridge
    Z = torch.cat([torch.randn(50, 4, dtype=torch.float64), torch.zeros(50, 1, dtype=torch.float64)], 1)
    r = RidgeReadout(5, 2, ridge=0.0, singular="error").partial_fit(Z, Y)
    with pytest.raises(ValueError, match="not positive definite.*singular='jitter'"):
        r.solve()
    rj = RidgeReadout(5, 2, ridge=0.0, singular="jitter").partial_fit(Z, Y).solve()
    assert rj.last_jitter > 0 and torch.isfinite(rj.weight).all()
    with pytest.raises(ValueError, match="no data accumulated"):
        RidgeReadout(5, 2).solve()


def test_rls_converges_to_ridge():
    X, Y = _data(n=240, F=9, C=3, seed=2)
    delta = 0.7
    rls = RLSReadout(9, 3, delta=delta)
    for i in range(0, 240, 16):
        rls.partial_fit(X[i : i + 16], Y[i : i + 16])
    # ridge with the bias penalised too (RLS's P_0 = I / delta covers the bias column)
    Xa = torch.cat([X, torch.ones(240, 1, dtype=torch.float64)], 1)
    want = torch.linalg.solve(Xa.T @ Xa + delta * torch.eye(10, dtype=torch.float64), Xa.T @ Y).T
    torch.testing.assert_close(rls.weight_full, want, rtol=1e-8, atol=1e-9)
    # one sample at a time (classic FORCE) gives the same
    rls1 = RLSReadout(9, 3, delta=delta)
    for i in range(240):
        rls1.partial_fit(X[i : i + 1], Y[i : i + 1])
    torch.testing.assert_close(rls1.weight_full, want, rtol=1e-7, atol=1e-8)
    # and it tracks a changed target with forgetting < 1
    rf = RLSReadout(9, 3, delta=delta, forgetting=0.5)
    for i in range(0, 240, 16):
        rf.partial_fit(X[i : i + 16], -Y[i : i + 16])
    assert ((rf(X) + Y).norm() / Y.norm()).item() < 0.1


def test_sgd_readout_learns():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 4, (600,), generator=g)
    centers = 2 * torch.randn(4, 10, generator=g)
    X = centers[y] + 0.5 * torch.randn(600, 10, generator=g)
    for loss, lr in (("mse", 0.01), ("ce", 0.1)):
        r = SGDReadout(10, 4, lr=lr, loss=loss).fit(X, y, batch_size=32, epochs=3)
        assert (r.predict(X) == y).float().mean().item() > 0.95, loss
    # one CE step is the exact negative gradient of the mean cross-entropy
    r = SGDReadout(10, 4, lr=0.5, loss="ce")
    r.weight.copy_(0.1 * torch.randn(4, 10, generator=g))
    W = r.weight.clone().requires_grad_(True)
    b = r.bias_vector.clone().requires_grad_(True)
    torch.nn.functional.cross_entropy(X[:32] @ W.T + b, y[:32]).backward()
    r.partial_fit(X[:32], y[:32])
    torch.testing.assert_close(r.weight, (W - 0.5 * W.grad).detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(r.bias_vector, (b - 0.5 * b.grad).detach(), rtol=1e-5, atol=1e-6)


def test_hebbian_wta_readout():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (300,), generator=g)
    centers = 3 * torch.randn(3, 6, generator=g)
    X = centers[y] + torch.randn(300, 6, generator=g)
    r = HebbianWTAReadout(6, 3)
    for i in range(0, 300, 50):
        r.partial_fit(X[i : i + 50], y[i : i + 50])
    means = torch.stack([X[y == k].mean(0) for k in range(3)])
    torch.testing.assert_close(r.weight, means, rtol=1e-5, atol=1e-5)  # running class means
    assert (r.predict(X) == y).float().mean().item() > 0.9
    ra = HebbianWTAReadout(6, 3, lr=0.05, anti_hebbian=True).fit(X, y, batch_size=10)
    assert (ra.predict(X) == y).float().mean().item() > 0.9


@pytest.mark.parametrize("cls", [RidgeReadout, SGDReadout, HebbianWTAReadout, RLSReadout])
def test_state_dict_round_trip(cls):
    g = torch.Generator().manual_seed(0)
    X, y = torch.randn(40, 6, generator=g), torch.randint(0, 3, (40,), generator=g)
    a = cls(6, 3)
    a.partial_fit(X, y)
    b = cls(6, 3)
    b.load_state_dict(a.state_dict())
    assert torch.equal(a(X), b(X))


def test_bad_input():
    r = RidgeReadout(5, 3)
    with pytest.raises(ValueError, match="X must have 5 features"):
        r.partial_fit(torch.zeros(4, 6), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="X must be 2-D"):
        r.partial_fit(torch.zeros(4), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="X has an empty batch"):
        r.partial_fit(torch.zeros(0, 5), torch.zeros(0, dtype=torch.long))
    with pytest.raises(TypeError, match="X must have dtype float32 or float64"):
        r.partial_fit(torch.zeros(4, 5, dtype=torch.int64), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="X contains NaN"):
        r.partial_fit(torch.full((4, 5), float("nan")), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"class indices in 0\.\.2, got range 0\.\.3"):
        r.partial_fit(torch.zeros(4, 5), torch.tensor([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="Y must hold 4 class indices"):
        r.partial_fit(torch.zeros(4, 5), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"Y must be \(4, 3\) targets"):
        r.partial_fit(torch.zeros(4, 5), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="ridge must be >= 0"):
        RidgeReadout(5, 3, ridge=-1.0)
    with pytest.raises(ValueError, match="singular must be one of"):
        RidgeReadout(5, 3, singular="pinv")
    with pytest.raises(ValueError, match="n_features must be >= 1"):
        RidgeReadout(0, 3)
    with pytest.raises(ValueError, match="lr must be > 0"):
        SGDReadout(5, 3, lr=0.0)
    with pytest.raises(ValueError, match="loss must be one of"):
        SGDReadout(5, 3, loss="hinge")
    with pytest.raises(ValueError, match="SGDReadout diverged"):
        SGDReadout(5, 3, lr=1e30).partial_fit(torch.full((4, 5), 1e10), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"forgetting must be in \(0, 1\]"):
        RLSReadout(5, 3, forgetting=1.5)
    with pytest.raises(ValueError, match="delta must be > 0"):
        RLSReadout(5, 3, delta=0.0)
    with pytest.raises(ValueError, match="Y must be \\(batch,\\) integer class indices"):
        HebbianWTAReadout(5, 3).partial_fit(torch.zeros(4, 5), torch.zeros(4, 3))


_ALL = [RidgeReadout, SGDReadout, HebbianWTAReadout, RLSReadout]


def _state(r) -> dict:
    return {k: v.clone() for k, v in r.state_dict().items()}


def _same_state(r, state) -> bool:
    return all(torch.equal(v, state[k]) for k, v in r.state_dict().items())


@pytest.mark.parametrize("cls", _ALL)
def test_fit_checks_targets_before_reset(cls):
    g = torch.Generator().manual_seed(0)
    X, y = torch.randn(8, 5, generator=g), torch.randint(0, 3, (8,), generator=g)
    r = cls(5, 3)
    r.partial_fit(X, y)
    before = _state(r)
    with pytest.raises(ValueError, match=r"Y must hold 8 class indices \(one per row of X\), got shape \(4,\)"):
        r.fit(X, y[:4])
    bad = y.clone()
    bad[-1] = 3  # in the last batch: fit must refuse before resetting or training
    with pytest.raises(ValueError, match=r"class indices in 0\.\.2, got range 0\.\.3"):
        r.fit(X, bad, batch_size=4)
    Xn = X.clone()
    Xn[-1, 0] = float("nan")
    with pytest.raises(ValueError, match="X contains NaN"):
        r.fit(Xn, y, batch_size=4)
    with pytest.raises(TypeError, match="Y must be a torch.Tensor, got list"):
        r.fit(X, y.tolist())
    assert _same_state(r, before)
    for dt in (torch.bool, torch.uint16, torch.complex64):
        with pytest.raises(TypeError, match="Y must hold integer class indices"):
            r.partial_fit(X, y.to(dt))
    r.partial_fit(X, y.to(torch.int32))  # any int8..int64 / uint8 index dtype works


@pytest.mark.parametrize("cls,arg", [(RidgeReadout, "out_dtype"), (RidgeReadout, "product_dtype"),
                                     (SGDReadout, "dtype"), (HebbianWTAReadout, "dtype"),
                                     (RLSReadout, "out_dtype")])
def test_constructor_dtypes(cls, arg):
    for bad in (torch.int64, torch.float16):
        with pytest.raises(TypeError, match=f"{arg} must be torch.float32 or torch.float64, got {bad}"):
            cls(5, 3, **{arg: bad})
    with pytest.raises(TypeError, match=f"{arg} must be a torch.dtype .* got str 'float32'"):
        cls(5, 3, **{arg: "float32"})
    cls(5, 3, **{arg: torch.float64})


def test_rls_out_dtype_and_bias_vector():
    X, Y = _data(n=40, F=5, C=3)
    for bias in (True, False):
        r = RLSReadout(5, 3, bias=bias, out_dtype=torch.float64).partial_fit(X, Y)
        assert r.weight.dtype == torch.float64 and r.bias_vector.dtype == torch.float64
        assert r.bias_vector.shape == (3,)
    assert RLSReadout(5, 3, bias=False).bias_vector.dtype == torch.float32


def test_flags_and_seed():
    with pytest.raises(TypeError, match="bias must be a bool"):
        RidgeReadout(5, 3, bias="no")
    with pytest.raises(TypeError, match="anti_hebbian must be a bool"):
        HebbianWTAReadout(5, 3, anti_hebbian="yes")
    X, y = torch.randn(8, 5), torch.randint(0, 3, (8,))
    with pytest.raises(ValueError, match="seed must be in 0..18446744073709551615"):
        SGDReadout(5, 3).fit(X, y, seed=2**70)
    with pytest.raises(TypeError, match="seed must be an int"):
        SGDReadout(5, 3).fit(X, y, seed=1.5)


def test_divergence_leaves_state_unchanged():
    X = torch.randn(8, 5, dtype=torch.float64)
    y = torch.randint(0, 3, (8,))
    s = SGDReadout(5, 3).partial_fit(X, y)
    before = _state(s)
    s.lr = 1e30
    with pytest.raises(ValueError, match="SGDReadout diverged.*left unchanged"):
        s.partial_fit(X * 1e10, y)
    assert _same_state(s, before)
    r = RLSReadout(5, 3).partial_fit(X, y)
    before = _state(r)
    with pytest.raises(ValueError, match="RLSReadout diverged.*left unchanged"):
        r.partial_fit(X * 1e200, y)
    assert _same_state(r, before)


def test_hebbian_wta_anti_push_uses_the_weights_before_the_batch():
    # w_j -= lr_anti (x - w_j) with w_j before the batch (the class docstring); it used w_j
    # already moved by the batch's Hebbian step.
    r = HebbianWTAReadout(2, 2, lr=0.5, anti_hebbian=True, lr_anti=0.5, dtype=torch.float64)
    W0 = torch.tensor([[0.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
    r.weight.copy_(W0)
    X = torch.tensor([[3.0, 3.0], [1.0, 1.0]], dtype=torch.float64)
    Y = torch.tensor([1, 0])
    assert r(X).argmax(1).tolist() == [1, 1]  # sample 1 (class 0) is won by class 1: a push
    r.partial_fit(X, Y)
    want = W0.clone()
    want[1] += 0.5 * (X[0] - W0[1])  # instar, class 1
    want[0] += 0.5 * (X[1] - W0[0])  # instar, class 0
    want[1] -= 0.5 * (X[1] - W0[1])  # anti-Hebbian push of the wrong winner
    torch.testing.assert_close(r.weight, want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("cast", ["float", "half", "to_float32"])
def test_float64_readout_state_survives_module_dtype_casts(cast):
    """``module.float()`` (also ``.half()``, ``.to(torch.float32)``, e.g. on a whole model holding
    an echo state network, whose reservoir is float32 already) converted the ridge readout's
    float64 Gram/cross sums and the RLS readout's float64 ``P``/weights to the new dtype: the next
    ``partial_fit`` crashed with a bare RuntimeError ("self and mat2 must have the same dtype")
    and the documented float64 accumulation was lost. The float64 state now stays float64 (it
    still follows device moves); the output weights follow the cast as before."""
    g = torch.Generator().manual_seed(0)
    X = torch.randn(40, 5, generator=g)
    y = torch.randint(0, 3, (40,), generator=g)
    for r in (RidgeReadout(5, 3, ridge=0.1), RLSReadout(5, 3, delta=0.1)):
        ref = type(r)(5, 3, 0.1).partial_fit(X[:20], y[:20]).partial_fit(X[20:], y[20:])
        r.partial_fit(X[:20], y[:20])
        if cast == "to_float32":
            r.to(torch.float32)
        else:
            getattr(r, cast)()
        for name in ("gram", "cross") if isinstance(r, RidgeReadout) else ("P", "weight_full"):
            assert getattr(r, name).dtype == torch.float64, name
        r.partial_fit(X[20:], y[20:])
        torch.testing.assert_close(r(X), ref(X), rtol=1e-2, atol=1e-2)
    esn = EchoStateNetwork([16, 3], n_reservoir=10, steps=4, readout="ridge").float()
    esn.train_step(torch.rand(8, 16, generator=g), torch.randint(0, 3, (8,), generator=g))


def test_ridge_set_after_a_solve_solves_again():
    """Setting ``ridge`` after the weights were solved kept the weights of the old penalty (the
    next forward saw solved_count == count); it now solves again, as a readout built with the new
    penalty would, and the new value is checked."""
    g = torch.Generator().manual_seed(0)
    X, y = torch.randn(30, 4, generator=g), torch.randint(0, 3, (30,), generator=g)
    r = RidgeReadout(4, 3, ridge=1e-6).partial_fit(X, y)
    before = r(X).clone()
    r.ridge = 100.0
    want = RidgeReadout(4, 3, ridge=100.0).partial_fit(X, y)(X)
    torch.testing.assert_close(r(X), want, rtol=0, atol=0)
    assert (before - want).abs().max() > 0.1
    with pytest.raises(ValueError, match="ridge must be >= 0"):
        r.ridge = -1.0
    assert r.ridge == 100.0


@pytest.mark.parametrize("cls", [SGDReadout, HebbianWTAReadout])
def test_fit_refuses_x_on_another_device_before_resetting(cls, monkeypatch):
    """``fit`` checked X's device only in ``partial_fit``, after its ``reset``: X on another
    device than the readout (which these two readouts do not move) wiped the trained state
    before the error. (A meta-device readout stands in for a GPU one.)"""
    r = cls(4, 3).to("meta")
    monkeypatch.setattr(r, "reset", lambda: pytest.fail("reset before the device check"))
    with pytest.raises(ValueError, match="X is on cpu but the readout is on meta"):
        r.fit(torch.randn(10, 4), torch.randint(0, 3, (10,)))
