r"""Reservoir construction for echo state networks: random graphs, spectral-radius scaling, input
matrices and an optional Hebbian (Oja / anti-Oja) adaptation of the recurrent weights.

The reservoir update these matrices feed (:func:`bpalts.ops.reservoir_run`), with row vectors::

    x_t = (1 - a) x_{t-1} + a tanh(u_t W_in^T + x_{t-1} W^T + b)

``W`` is (N, N): ``W[i, j]`` is the weight of the connection from unit ``j`` to unit ``i``.
``W_in`` is (N, D).

* :func:`random_graph` -- boolean adjacency (N, N) of a directed Erdos-Renyi graph
  (Erdos & Renyi 1959) or a directed scale-free graph grown by preferential attachment
  (Barabasi & Albert 1999; the directed variant of Bollobas, Borgs, Chayes & Riordan 2003).
* :func:`spectral_radius` -- ``max |lambda_i(W)|`` by restarted Arnoldi iteration (matrix-vector
  products only; no full eigendecomposition), with an exact test for a nilpotent ``W``. A real non-symmetric matrix's dominant eigenvalues
  are often a complex-conjugate pair, where plain power iteration on a real vector never settles;
  the small Hessenberg matrix of the Krylov space holds such pairs exactly, and every estimate is
  checked by the residual ``||W z - lambda z|| / (|lambda| ||z||)`` of its Ritz vector.
* :func:`reservoir_matrix` -- random weights on a random graph, scaled to a spectral radius
  (Jaeger 2001: the echo state property in practice asks for ``rho(W) < 1`` with ``tanh`` units),
  dense or sparse CSR.
* :func:`input_matrix` -- ``W_in`` with entries uniform in ``[-scaling, scaling]`` (or normal with
  standard deviation ``scaling``) on a random fraction ``density`` of the entries.
* :func:`hebbian_adapt` -- one local Oja (Oja 1982) or anti-Oja (Babinec & Pospichal 2007,
  "Improving the prediction accuracy of echo state neural networks by anti-Oja's learning") step
  on ``W`` from pre/post reservoir states, optionally keeping the sparsity pattern and the
  spectral radius.

Every function draws its randomness from a ``torch.Generator`` (``generator=`` or ``seed=``), so
a construction is reproducible. Lukosevicius, "A practical guide to applying echo state
networks", Neural Networks: Tricks of the Trade, 2012, discusses each of these choices.
"""
from __future__ import annotations

import math
import warnings

import torch

from bpalts._checks import (
    FLOAT32_OR_64,
    GENERATOR_SEED_MAX,
    DivergenceError,
    check_choice,
    check_finite,
    check_flag,
    check_float_dtype,
    check_in_place,
    check_int,
    check_same,
    check_scalar,
    check_tensor,
)

GRAPHS = ("erdos_renyi", "scale_free")
DISTRIBUTIONS = ("uniform", "normal")
LAYOUTS = ("dense", "csr")
ADAPT_RULES = ("oja", "anti_oja")
_EPS64 = torch.finfo(torch.float64).eps
ZERO_RTOL = math.sqrt(_EPS64)  # a spectral radius <= ZERO_RTOL * ||W||_F counts as 0 (see _zero_radius)


# --------------------------------------------------------------------------------------------
# argument checks


def check_density(value, name: str = "density") -> float:
    """A fraction of nonzero entries in ``(0, 1]``, returned as a float (errors name ``name``)."""
    value = check_scalar(name, value)
    if not (0.0 < value <= 1.0):
        raise ValueError(f"{name} must be in (0, 1], got {value}")
    return value


def _check_radius(value) -> float:
    value = check_scalar("spectral_radius", value)
    if value <= 0.0:
        raise ValueError(f"spectral_radius must be > 0, got {value}")
    return value


def _generator(generator: torch.Generator | None, seed) -> torch.Generator:
    """``generator`` if given (``seed`` is then ignored), else a new one seeded with ``seed``, an
    int in ``0..2**64 - 1``."""
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        return generator
    seed = check_int("seed", seed, 0, GENERATOR_SEED_MAX)
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------------------------
# graphs


def random_graph(
    n: int,
    density: float = 0.1,
    kind: str = "erdos_renyi",
    *,
    self_loops: bool = True,
    generator: torch.Generator | None = None,
    seed: int = 0,
) -> torch.Tensor:
    r"""Boolean adjacency ``A`` (n, n) of a random directed graph; ``A[i, j]``: edge ``j -> i``.

    ``kind="erdos_renyi"``: every ordered pair is an edge independently with probability
    ``density`` (so about ``density * n**2`` edges).

    ``kind="scale_free"``: grown by preferential attachment, one node at a time. Node ``t`` sends
    ``m`` edges to existing nodes chosen without replacement with probability proportional to
    ``in_degree + 1`` and receives ``m`` edges from existing nodes chosen proportional to
    ``out_degree + 1`` (``m = max(1, round(density * n / 2))``, capped at ``t``), which gives
    power-law in- and out-degree tails and about ``density * n**2`` edges (fewer for dense
    graphs: the first nodes have fewer predecessors than ``m``). Barabasi & Albert, "Emergence of
    scaling in random networks", Science 1999; Bollobas et al., "Directed scale-free graphs",
    SODA 2003.
    """
    n = check_int("n", n, 1)
    density = check_density(density)
    kind = check_choice("kind", kind, GRAPHS)
    self_loops = check_flag("self_loops", self_loops)
    g = _generator(generator, seed)
    if kind == "erdos_renyi":
        A = torch.rand(n, n, generator=g) < density
        if density == 1.0:
            A[:] = True
    else:
        A = torch.zeros(n, n, dtype=torch.bool)
        m = max(1, int(round(density * n / 2)))
        in_deg = torch.zeros(n, dtype=torch.float64)
        out_deg = torch.zeros(n, dtype=torch.float64)
        for t in range(1, n):
            k = min(m, t)
            targets = torch.multinomial(in_deg[:t] + 1.0, k, replacement=False, generator=g)
            sources = torch.multinomial(out_deg[:t] + 1.0, k, replacement=False, generator=g)
            A[targets, t] = True  # t -> targets
            A[t, sources] = True  # sources -> t
            in_deg[targets] += 1
            out_deg[t] += k
            out_deg[sources] += 1
            in_deg[t] += k
    if not self_loops:
        A.fill_diagonal_(False)
    return A


# --------------------------------------------------------------------------------------------
# spectral radius


def _matvec(W: torch.Tensor):
    if W.layout == torch.sparse_csr:
        return lambda v: (W @ v.unsqueeze(1)).squeeze(1)
    return lambda v: W @ v


def _acyclic(W: torch.Tensor) -> bool:
    """Whether the directed graph of ``W``'s nonzero entries (edge ``j -> i`` for ``W[i, j] != 0``)
    has no cycle, i.e. ``W`` is nilpotent whatever its values (``W^n = 0`` exactly). ``S_k``, the
    units at the end of some walk of length ``k``, shrinks monotonically (``S_1`` = units with an
    incoming edge): the graph is acyclic iff it empties, and has a cycle iff it stops shrinking
    first. Usually one step (a reservoir whose every unit has an input is done at ``S_1``)."""
    n = W.shape[0]
    if W.layout == torch.sparse_csr:
        crow, col, val = W.crow_indices(), W.col_indices(), W.values()
        row = torch.repeat_interleave(torch.arange(n, device=val.device), crow[1:] - crow[:-1])
        nz = val != 0
        row, col = row[nz], col[nz]

        def step(s):
            hit = row if s is None else row[s[col]]
            return torch.zeros(n, dtype=torch.bool, device=val.device).index_fill_(0, hit, True)
    else:
        pattern = W != 0

        def step(s):
            return pattern.any(1) if s is None else pattern[:, s].any(1)

    s, count = None, n  # None: every unit
    while True:
        s = step(s)
        c = int(s.sum())
        if c == 0:
            return True
        if c == count:
            return False
        count = c


def _annihilates(mv, v: torch.Tensor, k: int) -> bool:
    """Whether ``W^k v`` evaluates to exactly zero (rescaled at each step, so it cannot underflow)."""
    u = v
    for _ in range(k):
        u = mv(u)
        top = u.abs().max()
        if top == 0:
            return True
        u = u / top
    return False


def spectral_radius(
    W: torch.Tensor,
    *,
    krylov_dim: int = 40,
    tol: float = 1e-6,
    max_restarts: int = 50,
    generator: torch.Generator | None = None,
    seed: int = 0,
) -> float:
    r"""``max_i |lambda_i(W)|`` of a square real matrix (dense or sparse CSR) by restarted Arnoldi.

    Each cycle builds an orthonormal basis ``Q`` (n x m) of the Krylov space
    ``span{v, W v, ..., W^{m-1} v}`` (modified Gram-Schmidt, re-orthogonalised twice, in float64),
    takes the Ritz values: eigenvalues of the small Hessenberg matrix ``H = Q^T W Q`` (m x m), and
    the Ritz vector ``z = Q y`` of the one of largest modulus. Complex-conjugate pairs of dominant
    eigenvalues, the usual case for non-symmetric reservoirs, are represented exactly by ``H``
    (real power iteration would oscillate). Converged when the residual
    ``||W z - lambda z|| / (|lambda| ||z||) <= tol``; otherwise it restarts from
    ``Re z + Im z`` (the real invariant subspace of the pair). If the Krylov space becomes
    invariant (happy breakdown, e.g. ``m >= n``) the Ritz values are the eigenvalues of ``W`` on
    that space, computed by ``torch.linalg.eig`` of ``H``: accurate to rounding for well-conditioned
    eigenvalues, but a defective one is perturbed by about ``(eps ||W||^k)^(1/k)`` for a Jordan
    block of size ``k`` (a nilpotent block's 0 comes out as 1e-4 .. 1e-1 of ``||W||``).

    A zero spectral radius is therefore detected exactly, not estimated: 0.0 is returned when
    the graph of ``W``'s nonzero entries has no cycle (``W`` is nilpotent for any values; a
    cheap structural test, run first), or when, on an invariant Krylov space built from the random
    start vector, ``W^k v`` evaluates to exactly zero (nilpotent through cancellation, e.g.
    ``[[1, 1], [-1, -1]]``). Nilpotency that rounding hides from both tests (e.g. ``S J S^-1``
    for a Jordan block ``J``) gives the perturbed small estimate above, and so can a strongly
    non-normal ``W`` with a tiny radius (``[[0, 1e10], [1e-30, 0]]``, radius 1e-10, is estimated
    at ~10: eigenvalues that sensitive are not determined by float64 matrix-vector products);
    :func:`scale_spectral_radius` treats an estimate ``<= sqrt(eps) ||W||_F`` as 0.

    Random reservoirs have spectra filling a disc (the circular law), so the dominant eigenvalue
    is barely separated from the rest; the residual check bounds the error of the value
    returned as an eigenvalue (for a normal-ish matrix ``|lambda_true - lambda| <~ residual *
    |lambda|``), but the single-vector restart can converge to a slightly smaller eigenvalue
    than the dominant one. So a converged pair is confirmed: its real invariant subspace is
    deflated and the rest of the spectrum searched the same way (start vector from a fixed seed,
    not from ``generator``); a larger eigenvalue found there replaces it and is deflated in turn
    (up to 10 times). This makes a miss much rarer, not impossible. If
    ``max_restarts`` (an int >= 1: the number of Arnoldi cycles) pass without reaching ``tol`` a
    ``RuntimeWarning`` gives the residual reached, and the best estimate is returned.
    ``krylov_dim`` (int >= 1) is ``m`` (capped at ``n``); the start vector is drawn from
    ``generator`` or a new generator seeded with ``seed`` (an int in ``0..2**64 - 1``).
    """
    if not isinstance(W, torch.Tensor):
        raise TypeError(f"W must be a torch.Tensor, got {type(W).__name__}")
    if W.dim() != 2 or W.shape[0] != W.shape[1] or W.shape[0] == 0:
        raise ValueError(f"W must be a non-empty square (N, N) matrix, got shape {tuple(W.shape)}")
    if W.layout not in (torch.strided, torch.sparse_csr):
        raise TypeError(f"W must be dense or sparse CSR, got layout {W.layout}")
    if not W.dtype.is_floating_point:
        raise TypeError(f"W must be a floating-point matrix, got dtype {W.dtype}")
    krylov_dim = check_int("krylov_dim", krylov_dim, 1)
    tol = check_scalar("tol", tol, positive=True, allow_zero=False)
    max_restarts = check_int("max_restarts", max_restarts, 1, what="Arnoldi cycles")
    g = _generator(generator, seed)
    n = W.shape[0]
    Wd = W.to(torch.float64)
    check_finite("W", _entries(Wd))
    if _acyclic(Wd):
        return 0.0  # exactly nilpotent
    # rho(W) = s rho(W / s): with s a power of two (exact) bringing max |W_ij| into [1, 2), no
    # norm below over- or underflows (torch's norms are unscaled: |1e200 x| is inf)
    s = _pow2_scale(_entries(Wd))
    if s != 1.0:
        Wd = _with_entries(Wd, _entries(Wd) / s)
    mv = _matvec(Wd)
    m = min(krylov_dim, n)
    # Happy breakdown: ``W q_j`` lies in the Krylov space up to rounding, judged relative to the
    # size of ``W`` (its Frobenius norm), not to 1, so the test is invariant to scaling ``W``.
    w_scale = float(_entries(Wd).norm())
    v = torch.randn(n, dtype=torch.float64, generator=g).to(Wd.device)
    best, best_res = 0.0, math.inf
    for cycle in range(max_restarts):
        if v.norm() == 0:
            return 0.0
        k, lam, mag, z = _arnoldi_ritz(mv, v, m, w_scale)
        if mag == 0.0:
            return 0.0
        if k < m or k == n:
            # invariant Krylov space: the Ritz values are W's eigenvalues on it (up to rounding,
            # which turns a nilpotent block's defective 0 into ~eps^(1/k): test it exactly)
            if _annihilates(mv, v, k):
                if cycle == 0:
                    return 0.0  # W^k v = 0 for a random v: W is nilpotent
                v = torch.randn(n, dtype=torch.float64, generator=g).to(Wd.device)
                continue  # a restart vector in a nilpotent invariant subspace: start afresh
            return mag * s
        res = _ritz_residual(mv, lam, mag, z)
        if res < best_res:
            best, best_res = mag, res
        if res <= tol:
            return _confirm_dominant(mv, z, mag, m, tol, max_restarts, w_scale) * s
        v = z.real + z.imag
    warnings.warn(
        f"spectral_radius: Arnoldi did not reach tol={tol} in {max_restarts} restarts "
        f"(best relative residual {best_res:.2e}); returning the best estimate {best * s:.6g}",
        RuntimeWarning,
        stacklevel=2,
    )
    return best * s


def _entries(W: torch.Tensor) -> torch.Tensor:
    """``W``'s stored entries: a CSR matrix's values, a dense matrix itself."""
    return W.values() if W.layout == torch.sparse_csr else W


def _with_entries(W: torch.Tensor, vals: torch.Tensor) -> torch.Tensor:
    """A matrix of ``W``'s layout holding ``vals`` (:func:`_entries`' shape): for CSR, ``W``'s own
    (already checked) index arrays with these values; dense, ``vals`` itself."""
    if W.layout != torch.sparse_csr:
        return vals
    return torch.sparse_csr_tensor(W.crow_indices(), W.col_indices(), vals, W.shape, check_invariants=False)


def _pow2_scale(vals: torch.Tensor) -> float:
    """The power of two ``s`` with ``max |vals| / s`` in ``[1, 2)`` (1.0 for all zeros): dividing
    by it is exact and keeps squares and norms of the scaled values in float64's range."""
    top = float(vals.abs().max())
    return 1.0 if top == 0.0 else math.ldexp(1.0, math.frexp(top)[1] - 1)


def _arnoldi_ritz(op, v: torch.Tensor, m: int, w_scale: float):
    """One Arnoldi cycle of (at most) ``m`` steps of the linear map ``op`` from ``v`` (nonzero,
    float64): ``(k, lam, |lam|, z)``, ``k`` the Krylov dimension reached (``k < m``: a happy
    breakdown, judged relative to ``w_scale`` = ``|W|_F``, so ``span(Q_k)`` is invariant and its
    Ritz values are eigenvalues), ``lam`` the largest-modulus Ritz value and ``z`` its Ritz
    vector (complex128)."""
    n = v.shape[0]
    Q = torch.zeros(n, m + 1, dtype=torch.float64, device=v.device)
    H = torch.zeros(m + 1, m, dtype=torch.float64, device=v.device)
    Q[:, 0] = v / v.norm()
    k = m
    for j in range(m):
        w = op(Q[:, j])
        for _rep in range(2):  # twice is enough (Kahan / Parlett)
            h = Q[:, : j + 1].T @ w
            w = w - Q[:, : j + 1] @ h
            H[: j + 1, j] += h
        H[j + 1, j] = w.norm()
        if H[j + 1, j] <= 1e-12 * max(w_scale, float(H[: j + 1, j].abs().max())):
            k = j + 1  # invariant subspace: the Ritz values are eigenvalues
            break
        Q[:, j + 1] = w / H[j + 1, j]
    evals, evecs = torch.linalg.eig(H[:k, :k].cpu())
    i = int(evals.abs().argmax())
    lam = evals[i]
    z = Q[:, :k].to(torch.complex128) @ evecs[:, i].to(v.device)
    return k, lam, float(lam.abs()), z


def _ritz_residual(op, lam: torch.Tensor, mag: float, z: torch.Tensor) -> float:
    """``|op z - lam z| / (|lam| |z|)``, the relative residual of a Ritz pair (``mag = |lam|`` > 0)."""
    Wz = op(z.real).to(torch.complex128) + 1j * op(z.imag).to(torch.complex128)
    return float((Wz - lam.to(z.device) * z).norm() / (mag * z.norm()))


_CONFIRM_SEED = 0x5EED  # start vectors of the deflated searches (not drawn from the caller's generator)
_MAX_LOCKS = 10


def _orthonormal_columns(U: torch.Tensor | None, vectors) -> torch.Tensor:
    """``U`` (n, r) with orthonormal columns extended by ``vectors`` (Gram-Schmidt twice; a vector
    that adds no direction, e.g. the zero imaginary part of a real eigenvector, is dropped)."""
    cols = [] if U is None else list(U.T)
    for v in vectors:
        size = float(v.norm())
        for _rep in range(2):
            for q in cols:
                v = v - (q @ v) * q
        nv = float(v.norm())
        if nv > 1e-8 * size:
            cols.append(v / nv)
    return torch.stack(cols, 1)


def _deflated_dominant(mv, U: torch.Tensor, m: int, tol: float, max_restarts: int, w_scale: float):
    """Restarted Arnoldi on ``P W P``, ``P = I - U U^T``: for a ``W``-invariant ``span(U)`` (the
    Schur vectors of eigenvalues already found) its eigenvalues are ``W``'s others, and 0.
    Returns ``(|mu|, z)`` of its largest-modulus Ritz pair once converged (residual ``<= tol``
    or an invariant Krylov space), else ``None``."""
    n = U.shape[0]

    def op(v):
        v = v - U @ (U.T @ v)
        w = mv(v)
        return w - U @ (U.T @ w)

    m = min(m, n - U.shape[1])
    g = torch.Generator().manual_seed(_CONFIRM_SEED)
    v = torch.randn(n, dtype=torch.float64, generator=g).to(U.device)
    v = v - U @ (U.T @ v)
    for _cycle in range(max_restarts):
        if v.norm() == 0:
            return None
        k, lam, mag, z = _arnoldi_ritz(op, v, m, w_scale)
        if mag == 0.0:
            return None
        if k < m:
            return mag, z  # invariant Krylov space: an eigenvalue of P W P
        if _ritz_residual(op, lam, mag, z) <= tol:
            return mag, z
        v = z.real + z.imag
    return None


def _confirm_dominant(mv, z: torch.Tensor, mag: float, m: int, tol: float, max_restarts: int,
                      w_scale: float) -> float:
    """A converged Ritz value need not be the dominant eigenvalue: a single-vector restart can
    lock onto a slightly smaller one (the disc-filling spectra of random reservoirs barely
    separate their outermost eigenvalues). Deflate the converged pair (its real invariant
    subspace ``span{Re z, Im z}``) and search the rest (:func:`_deflated_dominant`); while that
    finds a larger eigenvalue, take it and deflate it too (at most ``_MAX_LOCKS`` times)."""
    n = z.shape[0]
    U = _orthonormal_columns(None, (z.real, z.imag))
    best = mag
    for _lock in range(_MAX_LOCKS):
        if U.shape[1] >= n:
            break
        found = _deflated_dominant(mv, U, m, tol, max_restarts, w_scale)
        if found is None or found[0] <= best * (1.0 + tol):
            break
        best, zb = found
        U = _orthonormal_columns(U, (zb.real, zb.imag))
    return best


def _zero_radius(W: torch.Tensor, rho: float) -> str:
    """Why ``rho``, the :func:`spectral_radius` of ``W``, is 0 for scaling purposes, or ``""``.

    Exactly 0 (detected, see :func:`spectral_radius`), or ``rho <= ZERO_RTOL * ||W||_F`` with
    ``ZERO_RTOL = sqrt(eps64) ~ 1.5e-8``: the Arnoldi estimate of a defective (e.g. nilpotent)
    eigenvalue is perturbed by rounding to about ``eps^(1/k) ||W||`` (``k`` >= 2 the block size),
    so an estimate below that cannot be told from 0, and dividing by it would blow ``W`` up by
    more than ``1 / ZERO_RTOL``. (A reservoir is far from this: a normal ``W`` has
    ``rho >= ||W||_F / sqrt(n)``.)"""
    if rho == 0.0:
        return "spectral radius 0 (nilpotent, e.g. the graph of its nonzero entries has no cycle)"
    vals = _entries(W).double()
    s = _pow2_scale(vals)  # ||W||_F = s ||W / s||_F without overflow or underflow
    floor = ZERO_RTOL * s * float((vals / s).norm())
    if rho <= floor:
        return (f"spectral radius {rho:.3g} <= sqrt(eps) * ||W||_F = {floor:.3g}, indistinguishable "
                "from 0 at float64 precision (nilpotent or nearly so)")
    return ""


def _check_scalable(W: torch.Tensor, rho: float, what: str = "W") -> None:
    why = _zero_radius(W, rho)
    if why:
        raise ValueError(f"{what} has {why}; it cannot be scaled to a spectral radius")


def scale_spectral_radius(W: torch.Tensor, radius: float, **kwargs) -> torch.Tensor:
    """``W * radius / spectral_radius(W)`` (a new tensor, same layout; ``kwargs`` go to
    :func:`spectral_radius`). ``radius`` must be > 0. A ``W`` whose spectral radius is 0 is a
    ``ValueError``: exactly 0 (detected as :func:`spectral_radius` describes: an acyclic graph, or
    ``W^k v`` exactly 0), or numerically 0: an estimate ``<= ZERO_RTOL * ||W||_F``
    (``ZERO_RTOL = sqrt(eps64) ~ 1.5e-8``), the size rounding alone gives a defective eigenvalue.
    A nilpotent ``W`` that the exact tests miss and whose Jordan blocks are longer (estimate
    ``~ eps^(1/k) ||W||`` for block size ``k >= 3``, above the tolerance) is not detected and is
    scaled by its estimate."""
    radius = _check_radius(radius)
    current = spectral_radius(W, **kwargs)
    _check_scalable(W, current)
    return W * (radius / current)


# --------------------------------------------------------------------------------------------
# matrices


def _draw(shape, distribution: str, g: torch.Generator, dtype) -> torch.Tensor:
    if distribution == "uniform":
        return (torch.rand(shape, generator=g, dtype=torch.float64) * 2 - 1).to(dtype)
    return torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)


def reservoir_matrix(
    n: int,
    spectral_radius: float = 0.9,
    density: float = 0.1,
    graph: str = "erdos_renyi",
    *,
    distribution: str = "normal",
    layout: str = "dense",
    dtype: torch.dtype = torch.float32,
    generator: torch.Generator | None = None,
    seed: int = 0,
) -> torch.Tensor:
    r"""Recurrent weights ``W`` (n, n): weights drawn from ``distribution`` (``normal``: N(0, 1),
    ``uniform``: U(-1, 1)) on the edges of :func:`random_graph` ``(n, density, graph)``, then
    scaled so that ``max |lambda_i(W)| = spectral_radius`` (:func:`bpalts.reservoirs.spectral_radius`,
    computed in float64). ``layout="csr"`` returns a ``torch.sparse_csr_tensor``.
    Jaeger, "The echo state approach to analysing and training recurrent neural networks",
    GMD Report 148, 2001."""
    n = check_int("n", n, 1)
    radius = _check_radius(spectral_radius)
    density = check_density(density)
    graph = check_choice("graph", graph, GRAPHS)
    distribution = check_choice("distribution", distribution, DISTRIBUTIONS)
    layout = check_choice("layout", layout, LAYOUTS)
    dtype = check_float_dtype("dtype", dtype)
    g = _generator(generator, seed)
    A = random_graph(n, density, graph, generator=g)
    W = _draw((n, n), distribution, g, torch.float64) * A
    rho = globals()["spectral_radius"](W, generator=g)
    if _zero_radius(W, rho):
        raise ValueError(
            f"the random {graph} graph (n={n}, density={density}) gives a W with spectral radius 0 "
            "(no cycles); use a larger density or n"
        )
    W = (W * (radius / rho)).to(dtype)
    return W.to_sparse_csr() if layout == "csr" else W


def input_matrix(
    n: int,
    d: int,
    scaling: float = 1.0,
    density: float = 1.0,
    *,
    distribution: str = "uniform",
    dtype: torch.dtype = torch.float32,
    generator: torch.Generator | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """Input weights ``W_in`` (n units, d inputs): ``scaling * U(-1, 1)`` (or ``scaling * N(0, 1)``)
    on a random fraction ``density`` of the entries, zero elsewhere (Lukosevicius 2012, sec. 3.2.5:
    the input scaling is the main knob for how nonlinear the reservoir is)."""
    n = check_int("n", n, 1)
    d = check_int("d", d, 1)
    scaling = check_scalar("scaling", scaling, positive=True, allow_zero=False)
    density = check_density(density)
    distribution = check_choice("distribution", distribution, DISTRIBUTIONS)
    dtype = check_float_dtype("dtype", dtype)
    g = _generator(generator, seed)
    W = _draw((n, d), distribution, g, torch.float64) * scaling
    if density < 1.0:
        W = W * (torch.rand(n, d, generator=g, dtype=torch.float64) < density)
    return W.to(dtype)


# --------------------------------------------------------------------------------------------
# Hebbian adaptation


@torch.no_grad()
def hebbian_adapt(
    W: torch.Tensor,
    pre: torch.Tensor,
    post: torch.Tensor,
    lr: float = 1e-3,
    rule: str = "anti_oja",
    *,
    keep_pattern: bool = True,
    spectral_radius: float | None = None,
) -> torch.Tensor:
    r"""One local Hebbian step on the recurrent weights, **in place** on ``W`` (returned).

    With ``pre`` = x_{t-1} and ``post`` = x_t (both (B, N) reservoir states):

    .. math::

        \Delta W = \frac{1}{B}\Bigl(Y^\top X - \mathrm{diag}\bigl(\textstyle\sum_b Y_{bi}^2\bigr) W\Bigr),
        \qquad W \mathrel{+}= s\,\mathrm{lr}\,\Delta W

    with ``X = pre``, ``Y = post`` and ``s = +1`` for Oja's rule (Oja, "A simplified neuron model
    as a principal component analyzer", J. Math. Biol. 1982) or ``s = -1`` for anti-Oja, which
    decorrelates the reservoir units (Babinec & Pospichal 2007). ``keep_pattern``: only existing
    connections change (the update is masked by ``W != 0``; a CSR ``W`` always keeps its pattern,
    and only its stored values are updated, at O(nnz B) cost). ``spectral_radius``: rescale ``W``
    back to this radius after the step (the echo state property is otherwise not guaranteed).

    All-or-nothing: the arguments (and the finiteness of ``pre``/``post``) are checked first, the
    new weights are computed into a temporary (the (N, N) or (nnz,) buffer the step needs anyway)
    and copied into ``W`` only once they are finite and, with ``spectral_radius``, rescaled. So
    on any error ``W`` is unchanged: ``ValueError``/``TypeError`` for a bad argument (a non-finite
    ``W`` is reported as such), a ``ValueError`` if the stepped ``W`` has spectral radius 0 and
    cannot be rescaled, and :class:`bpalts._checks.DivergenceError` if finite inputs give
    non-finite weights (``lr`` too large for the states' scale).
    """
    if not isinstance(W, torch.Tensor):
        raise TypeError(f"W must be a torch.Tensor, got {type(W).__name__}")
    if W.layout not in (torch.strided, torch.sparse_csr):
        raise TypeError(f"W must be dense or sparse CSR, got layout {W.layout}")
    if W.dim() != 2 or W.shape[0] != W.shape[1]:
        raise ValueError(f"W must be a square (N, N) matrix, got shape {tuple(W.shape)}")
    if W.dtype not in FLOAT32_OR_64:
        raise TypeError(f"W must have dtype float32 or float64, got {W.dtype}")
    n = W.shape[0]
    check_tensor("pre", pre, ("batch", "units"))
    check_tensor("post", post, ("batch", "units"))
    if pre.shape != post.shape or pre.shape[1] != n:
        raise ValueError(
            f"pre and post must both be (batch, {n}) states of W's {n} units, "
            f"got {tuple(pre.shape)} and {tuple(post.shape)}"
        )
    check_same(("pre", "post"), (pre, post))
    if pre.device != W.device or pre.dtype != W.dtype:
        raise ValueError(f"pre/post ({pre.dtype} on {pre.device}) must match W ({W.dtype} on {W.device})")
    lr = check_scalar("lr", lr, positive=True)
    rule = check_choice("rule", rule, ADAPT_RULES)
    keep_pattern = check_flag("keep_pattern", keep_pattern)
    radius = None if spectral_radius is None else _check_radius(spectral_radius)
    if W.layout == torch.strided:
        check_in_place("W", W)
    if not bool(torch.isfinite(pre).all() & torch.isfinite(post).all()):  # one host sync
        check_finite("pre", pre)
        check_finite("post", post)
    sign = 1.0 if rule == "oja" else -1.0
    B = pre.shape[0]
    alpha = sign * lr / B
    decay = (post * post).sum(0)  # (N,) sum_b y_i^2
    if W.layout == torch.sparse_csr:
        crow, col, val = W.crow_indices(), W.col_indices(), W.values()
        row = torch.repeat_interleave(torch.arange(n, device=W.device), crow[1:] - crow[:-1])
        hebb = (post[:, row] * pre[:, col]).sum(0)
        new = val + alpha * (hebb - decay[row] * val)  # the new stored values, (nnz,)
        old = val
    else:
        new = post.T @ pre  # (N, N) temporary: Y^T X, then Delta W * B, then the new W
        new.sub_(decay[:, None] * W)
        if keep_pattern:
            new.mul_(W != 0)
        torch.add(W, new, alpha=alpha, out=new)
        old = W
    if not bool(torch.isfinite(new).all()):
        check_finite("W", old)  # a non-finite W is the caller's, not a divergence
        raise DivergenceError(
            f"hebbian_adapt diverged: the {rule} step with lr={lr} gives non-finite weights from "
            f"finite W, pre and post (max |post| = {float(post.abs().max()):.3g}); W is left "
            "unchanged; lower lr"
        )
    if radius is not None:
        Wn = _with_entries(W, new)
        rho = globals()["spectral_radius"](Wn)
        _check_scalable(Wn, rho, "W after the hebbian_adapt step")
        new.mul_(radius / rho)
    old.copy_(new)
    return W
