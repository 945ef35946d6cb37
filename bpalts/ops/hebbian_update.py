r"""Batched Hebbian weight update in the FastHebb form, in place on ``W``.

For a batch ``X`` (B x D) and weights ``W`` (N x D), every rule here is

.. math::

    U = X \tilde W^\top,\quad Y = g(U),\quad G = s(Y),\quad
    \Delta W = \frac{\mathrm{lr}}{B}\,\bigl(G^\top X - D\,W\bigr)

built from four choices, a rule being one row of :data:`HEBBIAN_RULES`:

* the *current* ``U``: ``linear`` (``W~ = W``) or ``pnorm`` (``W~ = sign(W)|W|^(p-1)``, the
  p-norm currents of Krotov & Hopfield; ``p = 2`` is linear);
* the *gate* ``g``: ``identity`` or ``tanh``;
* the *selection* ``s``, which turns the activity ``Y`` into the postsynaptic factor ``G``:

  - ``all``: ``G = Y`` (every unit learns);
  - ``bcm``: ``G = Y * (Y - theta)`` with a per-unit sliding threshold ``theta`` (op state);
  - ``topk``: hard winner-take-all, ``G_bk = 1`` for the ``k`` largest ``U_bk`` of each sample;
  - ``rank``: ``G_bk = +1`` for the largest ``U_bk``, ``-delta`` for the ``k``-th largest;

  ranking is by value, ties going to the lower unit index, on every backend;
* the *decay* ``D``: ``tril(G^T G)`` (hierarchical), ``G^T G`` (symmetric/subspace), ``none``,
  ``diag_g`` = ``diag(sum_b G)``, ``diag_gu`` = ``diag(sum_b G * U)``.

=============  ========  ======  =========  ========  =============================================
rule           current   gate    selection  decay     what it is
=============  ========  ======  =========  ========  =============================================
``gha``        linear    ident.  all        tril      Sanger's generalized Hebbian algorithm (1989)
``oja``        linear    ident.  all        full      Oja's subspace rule (Oja 1989)
``hpca``       linear    tanh    all        tril      nonlinear hierarchical PCA (Karhunen &
                                                      Joutsensalo 1995; the comparison's "ICA")
``nlpca_sym``  linear    tanh    all        full      symmetric nonlinear PCA / nonlinear subspace
                                                      rule (Oja 1995; Karhunen & Joutsensalo 1994)
``bcm``        linear    ident.  bcm        none      BCM with a sliding threshold (Bienenstock,
                                                      Cooper & Munro 1982; Intrator & Cooper 1992)
``instar``     linear    ident.  topk       diag_g    hard winner-take-all competitive learning /
                                                      Grossberg's instar: winners move toward x
``krotov``     pnorm     ident.  rank       diag_gu   Krotov & Hopfield, "Unsupervised learning by
                                                      competing hidden units", PNAS 2019
=============  ========  ======  =========  ========  =============================================

Rule parameters (keyword arguments of :func:`hebbian_update`; passing one to a rule that does not
use it is an error):

* ``bcm``: ``theta_rate`` in [0, 1] (default 0.1) and ``state``, the threshold, updated in place
  after the weights as a running average of ``y^2``:
  ``theta <- theta + theta_rate * (mean_b Y_b^2 - theta)``. ``G`` uses the threshold from before
  the call. Create it with :func:`hebbian_state`. The op has no weight-decay term: BCM is
  stabilised by its sliding threshold alone (a learner wanting decay scales ``W`` itself).
* ``instar``: ``k`` winners per sample, 1..units (default 1). ``dW_k = sum_{b won by k} x_b -
  wins_k w_k``: each winner moves toward the inputs it won.
* ``krotov``: ``k`` in 2..units (default 2), the rank of the unit pushed away; ``delta`` (default
  0.4), its strength; ``p >= 1`` (default 2), the norm of the currents. ``dw_k = g_k (x -
  <w_k, x>_p w_k)`` summed over the batch, as in the paper with R = 1. (The paper's code also
  divides each update by its max-abs entry; here it is divided by the batch size like every rule.)
  The currents grow as ``|W|^(p-1)``: in float32 ``W~`` overflows once ``max|W|`` passes
  ``3.4e38^(1/(p-1))`` (9.7 at p = 40, 1.9e4 at p = 10), the currents and the decay term
  somewhat before, and the update is then inf / NaN on every backend, as the formula is. The
  rule drives each row towards unit p-norm (R = 1), so this only happens with weights far from
  that: start them small, as the paper does (learners report the divergence).

The batched matrix form (one GEMM per term instead of a per-sample outer product) is FastHebb:
Lagani, Gennaro, Falchi, Amato, "FastHebb: Scaling Hebbian Training of Deep Neural Networks to
ImageNet Level", arXiv 2207.03172 (2022). Adding a rule means adding a row to the table (and, for
a new gate, selection or decay, that piece to the three backends), not another copy of the op.

Backends
--------
``reference``: the formula above, in plain PyTorch, densely (the specification; float32 and
float64). The competitive rules build the dense ``G`` with its zeros and run the full ``G^T X``.

``cpp``: the GEMMs run in PyTorch (MKL), the rest is fused in C++ (``csrc/hebbian_update.cpp``);
float32 and float64.

* ``tril``: reorganised around the residual ``R = X - sum_{j<i} G_j W_j`` (Sanger's per-sample
  form ``dw_i = g_i (x - sum_{j<=i} g_j w_j)``, in blocks of units):
  ``dW_i = G_i^T R_i - tril(G_i^T G_i) W_i``. This skips the N x N decay matrix and the N x N x D
  product altogether (about 2.4x fewer flops at 784->1024 and 4096->4096).
* ``full``: ``dW = G^T (X - G W)``, no N x N matrix at all, accumulated into ``W`` by the GEMM.
* ``bcm``: one C++ pass turns ``Y`` into ``G`` and updates ``theta``; ``G^T X`` is accumulated
  into ``W`` by the GEMM.
* ``topk`` / ``rank`` (sparse): after the forward GEMM, one C++ call picks each sample's winners
  (and k-th ranked unit), groups the samples by unit (a counting sort, so sums run in sample
  order: deterministic) and updates only the touched rows: ``O(B k D)`` instead of the dense
  ``G^T X`` (``O(B N D)``).

``triton``: float32; CUDA tensors, or CPU tensors under ``TRITON_INTERPRET=1``
(``kernels/hebbian_update.py``). Dense rules: the gate (and the BCM modulation with its
``sum_b y^2`` partials) in the epilogue of the forward GEMM, ``G^T G`` for the lower triangle only
when it is ``tril``, and one fused apply kernel. Competitive rules: the forward GEMM (p-norm
transform of ``W`` on load), a row-wise ranking kernel, a stable ``torch.argsort`` of the selected
(sample, unit) pairs by unit (plus ``bincount``/``cumsum`` for the segment offsets), and a scatter
kernel in which each program owns one unit's row: only touched rows are written, no atomics,
deterministic. Dense updates other than BCM's of at least ``B * N * F`` multiply-adds, 256 * 1024
* 784 at fp32 (``CUBLAS_MIN_MACS``) or 1024 * 4096 * 4096 at tf32 (``CUBLAS_MIN_MACS_TF32``; both
in ``kernels/hebbian_update.py``; tf32x3 never), take a cuBLAS path instead (cuBLAS GEMMs, the
hierarchical decay in the residual form by blocks of units, ``TRIL_FORM``): on an H100 1.9x
(fp32) to 2.4x (GHA at tf32) faster at B1024 4096->4096 than the Triton GEMMs, and at B256
784->1024 (fp32) faster with the call replayed from a CUDA graph (kernels/hebbian_update.py has
the figures).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from bpalts._backend import cpp_module, resolve_backend
from bpalts._precision import TRITON_INPUT_PRECISION, check_precision, mm, operand_rounder
from bpalts._checks import (
    check_in_place,
    check_weights_and_batch,
    FLOAT32_ONLY,
    check_choice,
    check_dense,
    check_device,
    check_finite,
    check_float_dtype,
    check_int,
    check_same,
    check_scalar,
    check_tensor,
    one_finite_sync,
)

CURRENTS = ("linear", "pnorm")
GATES = ("identity", "tanh")
SELECTIONS = ("all", "bcm", "topk", "rank")
DECAYS = ("tril", "full", "none", "diag_g", "diag_gu")
SPARSE_SELECTIONS = ("topk", "rank")

# Keyword parameters a rule may take, with their defaults (k's default depends on the rule).
PARAM_DEFAULTS = {"k": None, "delta": 0.4, "p": 2.0, "theta_rate": 0.1}


@dataclass(frozen=True)
class HebbianRule:
    """A Hebbian rule as a (current, gate, selection, decay) choice: ``dW = G^T X - D W``."""

    name: str
    gate: str  # one of GATES
    decay: str  # one of DECAYS
    description: str
    select: str = "all"  # one of SELECTIONS
    current: str = "linear"  # one of CURRENTS
    params: tuple = ()  # keyword parameters the rule takes (besides lr)
    k_min: int = 1  # smallest valid k for rules that take one

    def __post_init__(self):
        assert self.gate in GATES and self.decay in DECAYS, self
        assert self.select in SELECTIONS and self.current in CURRENTS, self
        # Competitive rules rank the raw current and use it in their decay.
        assert self.select not in SPARSE_SELECTIONS or self.gate == "identity", self

    @property
    def sparse(self) -> bool:
        """Only the selected units' rows change (``topk`` / ``rank``)."""
        return self.select in SPARSE_SELECTIONS

    @property
    def stateful(self) -> bool:
        return self.select == "bcm"


HEBBIAN_RULES: dict[str, HebbianRule] = {
    r.name: r
    for r in (
        HebbianRule("gha", "identity", "tril", "Sanger's generalized Hebbian algorithm"),
        HebbianRule("oja", "identity", "full", "Oja's subspace rule"),
        HebbianRule("hpca", "tanh", "tril", "nonlinear hierarchical PCA (tanh gate)"),
        HebbianRule("nlpca_sym", "tanh", "full", "symmetric nonlinear PCA (tanh gate, subspace decay)"),
        HebbianRule("bcm", "identity", "none", "BCM rule with a sliding threshold",
                    select="bcm", params=("theta_rate", "state")),
        HebbianRule("instar", "identity", "diag_g", "hard winner-take-all (Grossberg instar)",
                    select="topk", params=("k",)),
        HebbianRule("krotov", "identity", "diag_gu", "Krotov & Hopfield competing hidden units",
                    select="rank", current="pnorm", params=("k", "delta", "p"), k_min=2),
    )
}

DEFAULT_K = {"instar": 1, "krotov": 2}

# Units per block in the C++ path's residual formulation (MKL GEMMs of this width stay efficient
# while the triangular part, done in C++, stays small).
CPP_BLOCK = 128


@dataclass
class RuleParams:
    """Validated rule parameters (defaults filled in); ``theta`` is the BCM threshold tensor."""

    k: int = 1
    delta: float = 0.4
    p: float = 2.0
    theta_rate: float = 0.1
    theta: torch.Tensor | None = None


def _theta_from_state(state, rule: str) -> torch.Tensor:
    if state is None:
        raise ValueError(
            f"rule {rule!r} needs its sliding threshold: pass state=hebbian_state({rule!r}, units) "
            "(a dict holding 'theta', shape (units,)) or a theta tensor of shape (units,); "
            "it is updated in place"
        )
    if isinstance(state, dict):
        if "theta" not in state:
            raise ValueError(
                f"state must hold 'theta' for rule {rule!r} (got keys {sorted(state)}); "
                f"create it with hebbian_state({rule!r}, units)"
            )
        theta = state["theta"]
        name = "state['theta']"
    else:
        theta, name = state, "state"
    if not isinstance(theta, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or a dict holding one, got {type(theta).__name__}")
    return theta


def resolve_params(rule: HebbianRule, W: torch.Tensor, *, k=None, delta=None, p=None,
                   theta_rate=None, state=None) -> RuleParams:
    """Check the rule's keyword parameters against ``rule`` and ``W`` and fill in defaults.

    Raises ``ValueError``/``TypeError`` naming the argument.
    """
    given = {"k": k, "delta": delta, "p": p, "theta_rate": theta_rate}
    for name, value in given.items():
        if value is not None and name not in rule.params:
            users = sorted(r.name for r in HEBBIAN_RULES.values() if name in r.params)
            raise ValueError(f"{name} applies only to rule(s) {users}; rule {rule.name!r} takes no {name}")
    if state is not None and not rule.stateful and not (isinstance(state, dict) and not state):
        raise ValueError(
            f"state applies only to rule 'bcm'; rule {rule.name!r} keeps no state (pass None)"
        )
    out = RuleParams()
    N = W.shape[0]
    if "k" in rule.params:
        kk = check_int("k", DEFAULT_K[rule.name] if k is None else k)
        if N < rule.k_min:
            raise ValueError(
                f"rule {rule.name!r} needs at least {rule.k_min} units (the winner and the k-th "
                f"ranked unit), but W has {N}"
            )
        if not rule.k_min <= kk <= N:
            what = "winners per sample" if rule.select == "topk" else "rank of the unit pushed away"
            raise ValueError(
                f"k must be in {rule.k_min}..{N} for rule {rule.name!r} (the {what}; W has {N} units), "
                f"got {kk}"
            )
        out.k = int(kk)
    if "delta" in rule.params:
        out.delta = check_scalar("delta", PARAM_DEFAULTS["delta"] if delta is None else delta, dtype=W.dtype)
    if "p" in rule.params:
        pp = check_scalar("p", PARAM_DEFAULTS["p"] if p is None else p)
        if pp < 1:
            raise ValueError(f"p must be >= 1, got {pp}")
        out.p = pp
    if "theta_rate" in rule.params:
        tr = check_scalar("theta_rate", PARAM_DEFAULTS["theta_rate"] if theta_rate is None else theta_rate)
        if not 0.0 <= tr <= 1.0:
            raise ValueError(f"theta_rate must be in [0, 1] (a running-average rate), got {tr}")
        out.theta_rate = tr
    if rule.stateful:
        theta = _theta_from_state(state, rule.name)
        name = "state['theta']" if isinstance(state, dict) else "state"
        check_dense(name, theta)
        if theta.dim() != 1 or theta.shape[0] != N:
            raise ValueError(f"{name} must have shape (units,) = ({N},), got {tuple(theta.shape)}")
        if theta.device != W.device:
            raise ValueError(f"{name} is on {theta.device} but W is on {W.device}; they must match")
        if theta.dtype != W.dtype:
            raise TypeError(f"{name} has dtype {theta.dtype} but W has {W.dtype}; they must match")
        check_in_place(name, theta)
        out.theta = theta
    return out


def hebbian_state(rule: str, units: int, *, dtype: torch.dtype = torch.float32, device=None,
                  theta_init: float = 0.0) -> dict:
    """The state a rule keeps between updates, to pass as ``state=`` to :func:`hebbian_update`.

    ``bcm``: ``{"theta": tensor of shape (units,)}`` filled with ``theta_init``; every other rule:
    ``{}`` (stateless, so a learner can create and pass the state whatever the rule).
    """
    check_choice("rule", rule, tuple(HEBBIAN_RULES))
    check_int("units", units, 1)
    if not HEBBIAN_RULES[rule].stateful:
        return {}
    theta_init = check_scalar("theta_init", theta_init)
    dtype = check_float_dtype("dtype", dtype)
    device = check_device("device", device)
    return {"theta": torch.full((units,), theta_init, dtype=dtype, device=device)}


# ------------------------------------------------------------------------------ reference pieces

def apply_gate(gate: str, U: torch.Tensor) -> torch.Tensor:
    """``g(U)`` for a gate name (``U`` itself for the identity)."""
    if gate == "identity":
        return U
    if gate == "tanh":
        return torch.tanh(U)
    raise AssertionError(gate)


def current_weights(W: torch.Tensor, rule: HebbianRule, p: float) -> torch.Tensor:
    """``W~`` with ``U = X W~^T``: ``W`` itself, or ``sign(W) |W|^(p-1)`` for p-norm currents."""
    if rule.current == "linear" or p == 2.0:
        return W
    return W.sign() * W.abs().pow(p - 1.0)


def ranked_units(U: torch.Tensor, k: int) -> torch.Tensor:
    """(B, k) int64: each row's k largest entries' indices, largest first, ties to the lower index.

    Repeated ``argmax`` (whose first-occurrence rule makes the tie order well defined); ``U`` is
    assumed finite.
    """
    idx = U.argmax(dim=1, keepdim=True)
    if k == 1:
        return idx
    V = U.clone()
    out = [idx]
    for _ in range(k - 1):
        V.scatter_(1, out[-1], float("-inf"))
        out.append(V.argmax(dim=1, keepdim=True))
    return torch.cat(out, dim=1)


def hebbian_update_reference(W: torch.Tensor, X: torch.Tensor, rule: str = "gha", lr: float = 1e-3, *,
                             k=None, delta=None, p=None, theta_rate=None, state=None,
                             precision: str = "fp32", currents=None):
    """The specification: ``W += lr/B * (G^T X - D W)``, all dense. In place; returns ``W``.

    For ``bcm`` the threshold in ``state`` is updated in place too. ``precision="tf32"`` rounds
    every GEMM's operands to TF32 (:mod:`bpalts._precision`); ``currents`` replaces the forward
    GEMM ``U = X W~^T`` by a given (batch, units) tensor.
    """
    r = HEBBIAN_RULES[rule]
    prm = resolve_params(r, W, k=k, delta=delta, p=p, theta_rate=theta_rate, state=state)
    U = mm(X, current_weights(W, r, prm.p).T, precision) if currents is None else currents
    return reference_from_currents(W, X, U, r, prm, lr, precision)


def reference_from_currents(W: torch.Tensor, X: torch.Tensor, U: torch.Tensor, r: HebbianRule,
                            prm: RuleParams, lr: float, precision: str = "fp32") -> torch.Tensor:
    """The reference after the forward GEMM, given the currents ``U`` (B x N). In place on W."""
    Y = apply_gate(r.gate, U)
    if r.select == "all":
        G = Y
    elif r.select == "bcm":
        G = Y * (Y - prm.theta)
    elif r.select == "topk":
        G = torch.zeros_like(U).scatter_(1, ranked_units(U, prm.k), 1.0)
    elif r.select == "rank":
        idx = ranked_units(U, prm.k)
        G = torch.zeros_like(U).scatter_(1, idx[:, :1], 1.0).scatter_(1, idx[:, -1:], -prm.delta)
    else:
        raise AssertionError(r.select)
    dW = mm(G.T, X, precision)
    if r.decay in ("tril", "full"):
        D = mm(G.T, G, precision)
        if r.decay == "tril":
            D = torch.tril(D)
        dW = dW - mm(D, W, precision)
    elif r.decay == "diag_g":
        dW = dW - G.sum(0)[:, None] * W
    elif r.decay == "diag_gu":
        dW = dW - (G * U).sum(0)[:, None] * W
    W.add_(dW, alpha=lr / X.shape[0])
    if r.select == "bcm":
        prm.theta.add_((Y * Y).mean(0) - prm.theta, alpha=prm.theta_rate)
    return W


# ------------------------------------------------------------------------------ C++ backend

SPARSE_MODE = {"topk": 0, "rank": 1}


def sparse_from_currents_cpp(W: torch.Tensor, X: torch.Tensor, U: torch.Tensor, r: HebbianRule,
                             prm: RuleParams, lr: float) -> None:
    """The C++ sparse path after the forward GEMM (C-contiguous W, X, U; W in place)."""
    cpp_module().hebbian_sparse_apply(W.numpy(), X.numpy(), U.numpy(), SPARSE_MODE[r.select],
                                      prm.k, prm.delta, lr / X.shape[0])


def _hebbian_update_cpp(W: torch.Tensor, X: torch.Tensor, rule: HebbianRule, lr: float,
                        prm: RuleParams, precision: str = "fp32", currents=None) -> None:
    C = cpp_module()
    # TF32 is emulated on the CPU: every GEMM operand goes through t() (identity for fp32).
    t = operand_rounder(precision)
    # .detach(): numpy() refuses tensors that require grad; the storage is shared either way.
    Wc = (W if W.is_contiguous() else W.contiguous()).detach()
    Xc = X.contiguous().detach()
    B, N = Xc.shape[0], Wc.shape[0]
    scale = lr / B
    if rule.sparse:
        # Forward GEMM in MKL; ranking, grouping by unit and the sparse row updates in C++.
        if currents is None:
            U = torch.mm(t(Xc), t(current_weights(Wc, rule, prm.p).T))
        else:
            U = currents.detach().contiguous()
        sparse_from_currents_cpp(Wc, Xc, U, rule, prm, lr)
    elif rule.select == "bcm":
        assert rule.decay == "none", rule  # BCM has no decay term here (see the module docs)
        # Units-major, as every dense rule here: U^T = W X^T and the plain product G^T X run
        # faster in MKL than X W^T and the transposed-A product (bcm: 4-9% of the op at B256
        # 784->1024, two threads; the products of oja and gha: 4-7%).
        Yt = apply_gate(rule.gate, torch.mm(t(Wc), t(Xc.T)))  # fresh (N, B)
        theta = prm.theta.detach()
        th = theta if theta.is_contiguous() else theta.contiguous()
        C.hebbian_bcm_modulate(Yt.numpy(), th.view(1, N).numpy(), prm.theta_rate)  # Yt <- G^T; theta
        Wc.addmm_(t(Yt), t(Xc), alpha=scale)  # W += lr/B G^T X, accumulated by the GEMM
        if th is not theta:
            theta.copy_(th)
    elif rule.decay == "full":
        Gt = apply_gate(rule.gate, torch.mm(t(Wc), t(Xc.T)))  # G^T, units-major (as bcm)
        # dW = G^T (X - G W): the subspace rule needs no N x N matrix at all.
        R = torch.addmm(Xc, t(Gt.T), t(Wc), alpha=-1.0)
        Wc.addmm_(t(Gt), t(R), alpha=scale)
    elif rule.decay == "tril":
        Gt = apply_gate(rule.gate, torch.mm(t(Wc), t(Xc.T)))  # G^T: block i is rows s:e
        # Hierarchical: block i of units sees the residual of the blocks before it.
        R = Xc.clone()
        for s in range(0, N, CPP_BLOCK):
            e = min(N, s + CPP_BLOCK)
            Gti, Wi = Gt[s:e], Wc[s:e]
            H = t(Gti) @ t(R)  # k x D Hebbian term against the residual
            Cii = t(Gti) @ t(Gti.T)  # G_i^T G_i, k x k, only its lower triangle is used
            if e < N:
                R.addmm_(t(Gti.T), t(Wi), alpha=-1.0)  # uses the old Wi: before the apply below
            C.hebbian_tril_apply(Wi.numpy(), H.numpy(), Cii.numpy(), scale)
    else:
        raise AssertionError(rule)
    if Wc.data_ptr() != W.data_ptr():
        W.copy_(Wc)


def _hebbian_update_triton(W, X, rule: HebbianRule, lr: float, prm: RuleParams,
                           precision: str = "fp32", currents=None) -> None:
    from bpalts.kernels import hebbian_update as tk

    prec = TRITON_INPUT_PRECISION[precision]
    if rule.sparse:
        tk.hebbian_sparse_update(W, X, select=rule.select, k=prm.k, delta=prm.delta,
                                 p=prm.p if rule.current == "pnorm" else 2.0, lr=lr,
                                 precision=prec, currents=currents)
    elif rule.select == "bcm":
        tk.hebbian_update(W, X, gate=rule.gate, decay=rule.decay, lr=lr, theta=prm.theta,
                          theta_rate=prm.theta_rate, precision=prec)
    else:
        tk.hebbian_update(W, X, gate=rule.gate, decay=rule.decay, lr=lr, precision=prec)


def unaliased_input(X: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """``X``, or a copy of it when it shares memory with ``W``, which an op updates in place:
    the fast backends write rows of ``W`` while later parts of the update still read ``X``
    (a sparse rule's winners, a Triton tile of another unit block), so an ``X`` that is ``W``
    itself or a view of it would be read half-updated. (Sharing a storage is enough to copy:
    cheap, and only ever the case for such a caller.)"""
    if X.untyped_storage().data_ptr() == W.untyped_storage().data_ptr():
        return X.clone()
    return X


def hebbian_update(
    W: torch.Tensor,
    X: torch.Tensor,
    rule: str = "gha",
    lr: float = 1e-3,
    backend: str = "auto",
    check_finite_input: bool = True,
    *,
    k: int | None = None,
    delta: float | None = None,
    p: float | None = None,
    theta_rate: float | None = None,
    state=None,
    precision: str = "fp32",
    currents: torch.Tensor | None = None,
) -> torch.Tensor:
    """One batched Hebbian update, **in place** on ``W`` (N units x D inputs); returns ``W``.

    Args:
        W: weights, (units, features), float32 (float64 on the reference and C++ backends).
        X: a batch of inputs, (batch, features), same dtype and device as ``W`` (it may share
            memory with ``W``: it is then copied first, so the update reads ``W`` as it was).
        rule: a name in :data:`HEBBIAN_RULES` (``"gha"``, ``"oja"``, ``"hpca"``, ``"nlpca_sym"``,
            ``"bcm"``, ``"instar"``, ``"krotov"``); see the module docstring for the math.
        lr: learning rate; the update is ``lr / batch * (G^T X - D W)``.
        backend: ``"auto"``, ``"reference"``, ``"triton"`` or ``"cpp"`` (see :mod:`bpalts._backend`).
        check_finite_input: reject NaN/inf in ``X``, ``W`` (and the BCM threshold) before running.
        k: ``instar``: winners per sample, 1..units (default 1); ``krotov``: rank of the unit
            pushed away, 2..units (default 2).
        delta: ``krotov``: strength of the push on the k-th ranked unit (finite; default 0.4).
        p: ``krotov``: norm of the currents, ``>= 1`` (default 2: ``U = X W^T``).
        theta_rate: ``bcm``: running-average rate of the threshold, in [0, 1] (default 0.1).
        state: ``bcm``: the threshold, ``hebbian_state("bcm", units)`` (a dict holding
            ``"theta"``) or a tensor of shape (units,); **updated in place**. Required for bcm.
        precision: ``"fp32"``, ``"tf32"`` or ``"tf32x3"`` for the GEMMs (the last two on tensor
            cores on the Triton backend; ``"tf32"`` emulated by operand rounding on the reference
            and C++ backends, ``"tf32x3"`` fp32 there; see :mod:`bpalts._precision`).
        currents: ``instar`` / ``krotov`` only: the currents ``U = X W~^T`` (batch, units) when
            the caller already has them (a learner's forward pass), so the op skips its forward
            GEMM and touches only the winners' rows. They must come from the current ``W``.
    """
    check_weights_and_batch(W, X)
    check_in_place("W", W)
    check_choice("rule", rule, tuple(HEBBIAN_RULES))
    lr = check_scalar("lr", lr, dtype=W.dtype)
    r = HEBBIAN_RULES[rule]
    prm = resolve_params(r, W, k=k, delta=delta, p=p, theta_rate=theta_rate, state=state)
    which = resolve_backend(backend, W.device)
    precision = check_precision(precision, W.dtype)
    if which == "triton":
        check_tensor("W", W, ("units", "features"), FLOAT32_ONLY)
    if currents is not None:
        if not r.sparse:
            sparse = sorted(n for n, q in HEBBIAN_RULES.items() if q.sparse)
            raise ValueError(f"currents applies only to rules {sparse}; rule {rule!r} computes its own")
        check_tensor("currents", currents, ("batch", "units"))
        if currents.shape != (X.shape[0], W.shape[0]):
            raise ValueError(
                f"currents must be (batch, units) = {(X.shape[0], W.shape[0])} (X W~^T), "
                f"got {tuple(currents.shape)}"
            )
        check_same(("W", "currents"), (W, currents))
    if check_finite_input:
        with one_finite_sync():  # one host sync for every finiteness check below
            check_finite("X", X)
            check_finite("W", W)
            if currents is not None:
                check_finite("currents", currents)
            if prm.theta is not None:
                check_finite("state['theta']" if isinstance(state, dict) else "state", prm.theta)
    X = unaliased_input(X, W)  # X may be W itself or a view of it: read it as it was
    with torch.no_grad():
        if which == "reference":
            hebbian_update_reference(W, X, rule, lr, k=k, delta=delta, p=p, theta_rate=theta_rate,
                                     state=state, precision=precision, currents=currents)
        elif which == "cpp":
            _hebbian_update_cpp(W, X, r, lr, prm, precision, currents)
        else:
            _hebbian_update_triton(W, X, r, lr, prm, precision, currents)
    return W
