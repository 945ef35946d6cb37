"""hebbian_update: the C++ backend against the reference, and bad input on every path.

Every rule in HEBBIAN_RULES runs on every shape; the rule parameters (krotov's k, p, delta;
instar's k; bcm's threshold state and rate) have their own cases. The reference itself is checked
against per-sample loops written from the papers' equations, and on small learning problems.
The Triton backend has its own module (test_hebbian_update_triton.py), run under the interpreter.
"""
from __future__ import annotations

import math

import pytest
import torch

import bpalts
from bpalts.ops import HEBBIAN_RULES, hebbian_state, hebbian_update, hebbian_update_reference
from tests._compare_util import RTOL_REDUCTION, rel_err

CPP = pytest.mark.skipif("cpp" not in bpalts.available_backends("cpu"), reason="bpalts._C not built")

# (batch, features, units): 1s, primes, sizes that are not multiples of the C++ block (128) or
# strip (32) or the row group (4), and one of the benchmark sizes.
SHAPES = [(1, 1, 1), (1, 5, 3), (7, 13, 5), (3, 31, 129), (17, 97, 131), (64, 33, 257), (256, 784, 1024)]


def _inputs(B, D, N, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    X = torch.rand(B, D, generator=g, dtype=dtype)
    W = torch.randn(N, D, generator=g, dtype=dtype) / math.sqrt(D)
    return W, X


def min_units(rule: str) -> int:
    """krotov needs a winner and a distinct k-th ranked unit."""
    return HEBBIAN_RULES[rule].k_min if "k" in HEBBIAN_RULES[rule].params else 1


def rule_kwargs(rule: str, N: int, dtype=torch.float32, seed: int = 0, **params) -> dict:
    """Keyword arguments for ``rule``: ``params``, plus for bcm a state whose threshold is random
    around E[y^2] (so G = y (y - theta) takes both signs) and a theta_rate. Fresh tensors."""
    kw = dict(params)
    if HEBBIAN_RULES[rule].stateful and "state" not in kw:
        g = torch.Generator().manual_seed(seed + 1)
        state = hebbian_state(rule, N, dtype=dtype)
        state["theta"].copy_(torch.rand(N, generator=g, dtype=dtype) * 0.6)
        kw["state"] = state
        kw.setdefault("theta_rate", 0.3)
    return kw


def clone_kwargs(kw: dict) -> dict:
    """A copy with its own state tensors (the reference and a backend each update theirs)."""
    out = dict(kw)
    st = kw.get("state")
    if isinstance(st, dict):
        out["state"] = {k: v.clone() for k, v in st.items()}
    elif isinstance(st, torch.Tensor):
        out["state"] = st.clone()
    return out


def theta_of(kw: dict):
    st = kw.get("state")
    return st["theta"] if isinstance(st, dict) else st


def check_against_reference(W, X, rule, backend, tol, lr=0.05, **params):
    """Run ``backend`` and the reference on copies; compare the updates (and bcm's theta moves)."""
    kw = rule_kwargs(rule, W.shape[0], W.dtype, **params)
    kw_ref, kw_got = clone_kwargs(kw), clone_kwargs(kw)
    want = hebbian_update_reference(W.clone(), X, rule, lr, **kw_ref)
    got = W.clone()
    out = hebbian_update(got, X, rule=rule, lr=lr, backend=backend, **kw_got)
    assert out is got  # in place, returns W
    # Compare the updates, not the weights: the update is what the kernel computes.
    assert rel_err(got - W, want - W) <= tol, (rule, params)
    assert torch.isfinite(got).all()
    if theta_of(kw) is not None:
        th0 = theta_of(kw)
        assert rel_err(theta_of(kw_got) - th0, theta_of(kw_ref) - th0) <= tol
    return got


@CPP
@pytest.mark.parametrize("rule", sorted(HEBBIAN_RULES))
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cpp_matches_reference(rule, shape, dtype):
    W, X = _inputs(*shape, dtype, seed=hash((rule, shape)) % 2**31)
    if shape[2] < min_units(rule):
        with pytest.raises(ValueError, match=f"rule '{rule}' needs at least 2 units"):
            hebbian_update(W, X, rule=rule, backend="cpp")
        return
    tol = RTOL_REDUCTION if dtype == torch.float32 else 1e-12
    check_against_reference(W, X, rule, "cpp", tol)


# Rule parameters away from their defaults (k = units included), on odd shapes.
PARAM_CASES = [
    ("krotov", dict(p=3.0, k=3)),
    ("krotov", dict(p=1.0, k=2, delta=0.7)),
    ("krotov", dict(p=1.5, k=5, delta=-0.2)),
    ("krotov", dict(p=2.0, k="N", delta=0.0)),
    ("instar", dict(k=3)),
    ("instar", dict(k="N")),
    ("bcm", dict(theta_rate=0.0)),
    ("bcm", dict(theta_rate=1.0)),
]
PARAM_SHAPES = [(1, 5, 5), (7, 13, 6), (17, 97, 131), (64, 33, 257)]


def _params_for(params: dict, N: int) -> dict:
    return {k: (N if v == "N" else v) for k, v in params.items()}


@CPP
@pytest.mark.parametrize("rule,params", PARAM_CASES)
@pytest.mark.parametrize("shape", PARAM_SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cpp_rule_params(rule, params, shape, dtype):
    W, X = _inputs(*shape, dtype, seed=hash((rule, str(params), shape)) % 2**31)
    tol = RTOL_REDUCTION if dtype == torch.float32 else 1e-12
    check_against_reference(W, X, rule, "cpp", tol, **_params_for(params, shape[2]))


def tie_inputs(B=9, D=6, N=11, dtype=torch.float32):
    """Small integers: every product and sum is exact, so currents tie exactly on any backend."""
    g = torch.Generator().manual_seed(4)
    X = torch.randint(0, 2, (B, D), generator=g).to(dtype)
    W = torch.randint(-1, 2, (N, D), generator=g).to(dtype)
    W[3] = W[7]  # duplicate units tie on every sample
    X[0] = 0  # a sample on which every unit ties
    return W, X


@CPP
@pytest.mark.parametrize("rule,params", [("instar", {}), ("instar", dict(k=4)), ("krotov", {}),
                                         ("krotov", dict(k=6, p=3.0))])
def test_cpp_ties_go_to_the_lower_unit(rule, params):
    W, X = tie_inputs()
    want = hebbian_update_reference(W.clone(), X, rule, 0.5, **params)
    got = hebbian_update(W.clone(), X, rule, 0.5, backend="cpp", **params)
    assert torch.allclose(got, want, rtol=0, atol=1e-6)


@CPP
@pytest.mark.parametrize("rule,params", [("instar", {}), ("instar", dict(k=2)), ("krotov", {})])
def test_cpp_sparse_rules_touch_only_selected_rows(rule, params):
    W, X = _inputs(3, 40, 131, torch.float32, seed=8)
    got = hebbian_update(W.clone(), X, rule, 0.1, backend="cpp", **params)
    changed = (got != W).any(dim=1)
    per_sample = params.get("k", 1) if rule == "instar" else 2
    assert 1 <= int(changed.sum()) <= 3 * per_sample


@CPP
def test_cpp_non_contiguous_inputs():
    W, X = _inputs(40, 70, 150, torch.float32, seed=3)
    Wt = W.t().contiguous().t()  # same values, column-major storage
    Xs = torch.rand(40, 140)[:, ::2]  # strided columns
    want = hebbian_update_reference(W.clone(), Xs, "gha", lr=0.1)
    hebbian_update(Wt, Xs, rule="gha", lr=0.1, backend="cpp")
    assert not Wt.is_contiguous()
    assert rel_err(Wt - W, want - W) <= RTOL_REDUCTION


@CPP
@pytest.mark.parametrize("rule", ["bcm", "instar", "krotov"])
def test_cpp_non_contiguous_inputs_new_rules(rule):
    W, X = _inputs(40, 70, 150, torch.float32, seed=3)
    Wt = W.t().contiguous().t()  # same values, column-major storage
    Xs = torch.rand(40, 140)[:, ::2]  # strided columns
    kw = rule_kwargs(rule, 150)
    kw_ref, kw_got = clone_kwargs(kw), clone_kwargs(kw)
    if rule == "bcm":  # a strided threshold too
        kw_got["state"] = {"theta": torch.zeros(300)[::2].copy_(theta_of(kw))}
    want = hebbian_update_reference(W.clone(), Xs, rule, 0.1, **kw_ref)
    hebbian_update(Wt, Xs, rule=rule, lr=0.1, backend="cpp", **kw_got)
    assert not Wt.is_contiguous()
    assert rel_err(Wt - W, want - W) <= RTOL_REDUCTION
    if rule == "bcm":
        th0 = theta_of(kw)
        assert rel_err(theta_of(kw_got) - th0, theta_of(kw_ref) - th0) <= RTOL_REDUCTION


@CPP
@pytest.mark.parametrize("rule", sorted(HEBBIAN_RULES))
def test_cpp_is_deterministic(rule):
    W, X = _inputs(64, 100, 300, torch.float32, seed=5)
    a, b = W.clone(), W.clone()
    kw = rule_kwargs(rule, 300)
    hebbian_update(a, X, rule, backend="cpp", **clone_kwargs(kw))
    hebbian_update(b, X, rule, backend="cpp", **clone_kwargs(kw))
    assert torch.equal(a, b)


@CPP
def test_cpp_accepts_weights_that_require_grad():
    W, X = _inputs(8, 12, 10, torch.float32, seed=6)
    P = torch.nn.Parameter(W.clone())
    for rule in ("gha", "bcm", "krotov"):
        kw = rule_kwargs(rule, 10)
        want = hebbian_update_reference(P.detach().clone(), X, rule, 0.1, **clone_kwargs(kw))
        hebbian_update(P, X, rule, 0.1, backend="cpp", **kw)
        assert rel_err(P.detach(), want) <= RTOL_REDUCTION


# ---------------------------------------------------------------- the reference vs the papers


def test_reference_bcm_matches_per_sample_form():
    # dw_k = lr/B sum_b y_bk (y_bk - theta_k) x_b; theta <- theta + rate (mean_b y^2 - theta).
    W, X = _inputs(6, 5, 4, torch.float64, seed=11)
    theta = torch.tensor([0.0, 0.1, 0.5, 2.0], dtype=torch.float64)
    want_W, want_th = W.clone(), theta.clone()
    for k in range(4):
        ys = [float(W[k] @ x) for x in X]
        want_W[k] += 0.1 / 6 * sum(y * (y - theta[k]) * x for y, x in zip(ys, X))
        want_th[k] += 0.25 * (sum(y * y for y in ys) / 6 - theta[k])
    th = theta.clone()
    got = hebbian_update(W.clone(), X, "bcm", 0.1, backend="reference", state=th, theta_rate=0.25)
    assert torch.allclose(got, want_W, atol=1e-14) and torch.allclose(th, want_th, atol=1e-14)


def test_reference_instar_matches_per_sample_form():
    # Each sample's k winners move toward it: dw_k = lr/B sum_{b won by k} (x_b - w_k).
    W, X = _inputs(9, 5, 6, torch.float64, seed=12)
    want = W.clone()
    for x in X:
        for k in torch.argsort(W @ x, descending=True)[:2]:
            want[k] += 0.1 / 9 * (x - W[k])
    got = hebbian_update(W.clone(), X, "instar", 0.1, backend="reference", k=2)
    assert torch.allclose(got, want, atol=1e-14)


def test_reference_krotov_matches_paper_form():
    # Krotov & Hopfield 2019, eq. 3 with R = 1: dW_mu = g(Q_mu) (v - <W_mu, v>_mu W_mu), where
    # <W_mu, v>_mu = sum_i sign(W_mu,i) |W_mu,i|^(p-1) v_i; g = 1 for the best unit, -delta for the
    # k-th ranked one (ranked by that current), 0 otherwise; summed over the batch.
    W, X = _inputs(7, 5, 8, torch.float64, seed=13)
    p, k, delta = 3.0, 3, 0.4
    want = W.clone()
    for v in X:
        cur = torch.stack([(torch.sign(w) * w.abs() ** (p - 1) * v).sum() for w in W])
        order = torch.argsort(cur, descending=True)
        for mu, g in ((order[0], 1.0), (order[k - 1], -delta)):
            want[mu] += 0.2 / 7 * g * (v - cur[mu] * W[mu])
    got = hebbian_update(W.clone(), X, "krotov", 0.2, backend="reference", k=k, p=p, delta=delta)
    assert torch.allclose(got, want, atol=1e-14)


def test_reference_instar_finds_cluster_centres():
    # Competitive learning: with one unit started near each cluster, units converge to the means.
    g = torch.Generator().manual_seed(1)
    centres = torch.tensor([[4.0, 0.0, 0.0], [0.0, 4.0, 0.0], [0.0, 0.0, 4.0]], dtype=torch.float64)
    W = centres + torch.randn(3, 3, generator=g, dtype=torch.float64)
    for _ in range(300):
        X = centres[torch.randint(0, 3, (32,), generator=g)] + 0.3 * torch.randn(32, 3, generator=g,
                                                                                  dtype=torch.float64)
        hebbian_update(W, X, "instar", 0.3, backend="reference")
    assert torch.allclose(W, centres, atol=0.15)


def test_reference_bcm_threshold_tracks_mean_square():
    # With W frozen (lr = 0) the running average converges to E[y^2] on a fixed batch.
    W, X = _inputs(50, 10, 4, torch.float64, seed=14)
    state = hebbian_state("bcm", 4, dtype=torch.float64)
    for _ in range(60):
        hebbian_update(W, X, "bcm", 0.0, backend="reference", state=state, theta_rate=0.5)
    assert torch.allclose(state["theta"], ((X @ W.T) ** 2).mean(0), rtol=1e-9)


def test_hebbian_state():
    assert hebbian_state("gha", 5) == {} and hebbian_state("krotov", 3) == {}
    st = hebbian_state("bcm", 7, dtype=torch.float64, theta_init=0.5)
    assert set(st) == {"theta"} and st["theta"].shape == (7,) and st["theta"].dtype == torch.float64
    assert torch.all(st["theta"] == 0.5)
    with pytest.raises(ValueError, match="units must be >= 1, got 0"):
        hebbian_state("bcm", 0)
    with pytest.raises(TypeError, match="units must be an int, got float"):
        hebbian_state("bcm", 3.0)
    with pytest.raises(ValueError, match="rule must be one of"):
        hebbian_state("hebb", 3)


def test_reference_learns_principal_subspace():
    # GHA's rows converge to the leading eigenvectors of the input covariance, in order.
    g = torch.Generator().manual_seed(0)
    D = 8
    scales = torch.tensor([4.0, 3.0, 2.0, 1.0, 0.5, 0.3, 0.2, 0.1], dtype=torch.float64)
    Q, _ = torch.linalg.qr(torch.randn(D, D, generator=g, dtype=torch.float64))
    W = torch.randn(3, D, generator=g, dtype=torch.float64) * 0.1
    for step in range(3000):
        X = (torch.randn(64, D, generator=g, dtype=torch.float64) * scales) @ Q.T
        hebbian_update(W, X, rule="gha", lr=0.01 if step < 2000 else 0.001, backend="reference")
    overlap = (W @ Q[:, :3]).abs()
    assert torch.allclose(overlap, torch.eye(3, dtype=torch.float64), atol=0.05)


# ---------------------------------------------------------------- bad input

def _ok():
    return torch.randn(5, 4), torch.rand(3, 4)


@pytest.mark.parametrize("backend", ["reference", "cpp", "auto"])
def test_bad_shapes(backend):
    W, X = _ok()
    with pytest.raises(ValueError, match=r"W must be 2-D \(units, features\)"):
        hebbian_update(W[0], X, backend=backend)
    with pytest.raises(ValueError, match=r"X must be 2-D \(batch, features\)"):
        hebbian_update(W, X[None], backend=backend)
    with pytest.raises(ValueError, match="X has 3 features but W expects 4"):
        hebbian_update(W, X[:, :3], backend=backend)
    with pytest.raises(ValueError, match="X has an empty batch dimension"):
        hebbian_update(W, X[:0], backend=backend)


def test_bad_dtypes():
    W, X = _ok()
    with pytest.raises(TypeError, match="W must have dtype float32 or float64, got torch.int64"):
        hebbian_update(W.long(), X)
    with pytest.raises(TypeError, match="X must have dtype float32 or float64, got torch.float16"):
        hebbian_update(W, X.half())
    with pytest.raises(TypeError, match="X has dtype torch.float64 but W has torch.float32"):
        hebbian_update(W, X.double())
    with pytest.raises(TypeError, match="W must be a torch.Tensor"):
        hebbian_update(W.numpy(), X)


def test_mixed_devices():
    W, X = _ok()
    with pytest.raises(ValueError, match="X is on meta but W is on cpu"):
        hebbian_update(W, X.to("meta"))


def test_non_finite_values():
    W, X = _ok()
    X[1, 2] = float("nan")
    with pytest.raises(ValueError, match="X contains NaN or infinite values"):
        hebbian_update(W, X)
    W, X = _ok()
    W[0, 0] = float("inf")
    with pytest.raises(ValueError, match="W contains NaN or infinite values"):
        hebbian_update(W, X)
    W, X = _ok()
    for lr in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="lr must be finite"):
            hebbian_update(W, X, lr=lr)
    with pytest.raises(TypeError, match="lr must be a real number"):
        hebbian_update(W, X, lr="0.1")


@pytest.mark.parametrize("backend", ["reference", "cpp", "auto"])
def test_bad_rule_params(backend):
    W, X = _ok()  # 5 units
    with pytest.raises(ValueError, match=r"p must be >= 1, got 0.5"):
        hebbian_update(W, X, rule="krotov", p=0.5, backend=backend)
    with pytest.raises(ValueError, match=r"p must be finite"):
        hebbian_update(W, X, rule="krotov", p=float("inf"), backend=backend)
    with pytest.raises(ValueError, match=r"k must be in 1\.\.5 for rule 'instar'.*got 6"):
        hebbian_update(W, X, rule="instar", k=6, backend=backend)
    with pytest.raises(ValueError, match=r"k must be in 1\.\.5 for rule 'instar'.*got 0"):
        hebbian_update(W, X, rule="instar", k=0, backend=backend)
    with pytest.raises(ValueError, match=r"k must be in 2\.\.5 for rule 'krotov'.*got 1"):
        hebbian_update(W, X, rule="krotov", k=1, backend=backend)
    with pytest.raises(ValueError, match=r"k must be in 2\.\.5 for rule 'krotov'.*got 9"):
        hebbian_update(W, X, rule="krotov", k=9, backend=backend)
    with pytest.raises(TypeError, match="k must be an int, got float"):
        hebbian_update(W, X, rule="krotov", k=2.0, backend=backend)
    with pytest.raises(ValueError, match="rule 'krotov' needs at least 2 units.*W has 1"):
        hebbian_update(W[:1], X, rule="krotov", backend=backend)
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="delta must be finite"):
            hebbian_update(W, X, rule="krotov", delta=bad, backend=backend)
    with pytest.raises(ValueError, match=r"theta_rate must be in \[0, 1\].*got 1.5"):
        hebbian_update(W, X, rule="bcm", theta_rate=1.5, state=hebbian_state("bcm", 5), backend=backend)
    # A parameter the rule does not take is an error, not silently ignored.
    with pytest.raises(ValueError, match=r"p applies only to rule\(s\) \['krotov'\]; rule 'gha' takes no p"):
        hebbian_update(W, X, rule="gha", p=3.0, backend=backend)
    with pytest.raises(ValueError, match=r"k applies only to rule\(s\) \['instar', 'krotov'\]"):
        hebbian_update(W, X, rule="bcm", k=2, state=hebbian_state("bcm", 5), backend=backend)
    with pytest.raises(ValueError, match=r"delta applies only to rule\(s\) \['krotov'\]"):
        hebbian_update(W, X, rule="instar", delta=0.1, backend=backend)


@pytest.mark.parametrize("backend", ["reference", "cpp", "auto"])
def test_bad_bcm_state(backend):
    W, X = _ok()  # 5 units
    with pytest.raises(ValueError, match=r"rule 'bcm' needs its sliding threshold: pass "
                                         r"state=hebbian_state\('bcm', units\)"):
        hebbian_update(W, X, rule="bcm", backend=backend)
    with pytest.raises(ValueError, match=r"state must hold 'theta'"):
        hebbian_update(W, X, rule="bcm", state={"th": torch.zeros(5)}, backend=backend)
    with pytest.raises(ValueError, match=r"state\['theta'\] must have shape \(units,\) = \(5,\), got \(4,\)"):
        hebbian_update(W, X, rule="bcm", state={"theta": torch.zeros(4)}, backend=backend)
    with pytest.raises(ValueError, match=r"state must have shape \(units,\) = \(5,\), got \(5, 1\)"):
        hebbian_update(W, X, rule="bcm", state=torch.zeros(5, 1), backend=backend)
    with pytest.raises(TypeError, match=r"state\['theta'\] has dtype torch.float64 but W has torch.float32"):
        hebbian_update(W, X, rule="bcm", state={"theta": torch.zeros(5, dtype=torch.float64)},
                       backend=backend)
    with pytest.raises(ValueError, match=r"state\['theta'\] is on meta but W is on cpu"):
        hebbian_update(W, X, rule="bcm", state={"theta": torch.zeros(5, device="meta")}, backend=backend)
    with pytest.raises(TypeError, match=r"state must be a torch.Tensor or a dict holding one, got list"):
        hebbian_update(W, X, rule="bcm", state=[0.0] * 5, backend=backend)
    theta = torch.zeros(5)
    theta[2] = float("nan")
    before = W.clone()
    with pytest.raises(ValueError, match=r"state contains NaN or infinite values"):
        hebbian_update(W, X, rule="bcm", state=theta, backend=backend)
    assert torch.equal(W, before)
    with pytest.raises(ValueError, match=r"state applies only to rule 'bcm'; rule 'oja' keeps no state"):
        hebbian_update(W, X, rule="oja", state=hebbian_state("bcm", 5), backend=backend)
    hebbian_update(W, X, rule="oja", state=hebbian_state("oja", 5), backend=backend)  # {} is fine


def test_unknown_rule_and_backend():
    W, X = _ok()
    with pytest.raises(ValueError, match=r"rule must be one of \('gha', 'hpca', 'oja'\)|rule must be one of"):
        hebbian_update(W, X, rule="sanger")
    with pytest.raises(ValueError, match="backend must be one of .*got 'cuda'"):
        hebbian_update(W, X, backend="cuda")


def test_triton_on_cpu_without_interpreter_says_why(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    W, X = _ok()
    with pytest.raises(ValueError, match="triton backend needs CUDA tensors or TRITON_INTERPRET=1"):
        hebbian_update(W, X, backend="triton")


def test_no_change_on_error():
    W, X = _ok()
    before = W.clone()
    X[0, 0] = float("nan")
    with pytest.raises(ValueError):
        hebbian_update(W, X)
    assert torch.equal(W, before)
