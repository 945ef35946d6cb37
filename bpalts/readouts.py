r"""Trained linear readouts for reservoir (and other frozen-feature) models.

Every readout maps features ``X`` (B, F) to scores ``S = X W^T + c`` (B, C). Targets are either
class indices (B,) (turned into one-hot rows) or real-valued rows (B, C). Each readout has
``partial_fit(X, Y)`` (one incremental update on a batch), ``fit(X, Y)`` (reset, then learn from
the whole set), ``forward(X)`` / ``decision_function(X)`` (scores) and ``predict(X)`` (class
indices). They are ``nn.Module`` s: their state (weights, accumulated statistics) lives in
buffers, so ``state_dict()`` round-trips and ``.to(device)`` moves it. No autograd anywhere: the
gradients below are written out.

* :class:`RidgeReadout` -- closed-form ridge regression (Tikhonov; the standard ESN readout,
  Jaeger 2001; Lukosevicius 2012, sec. 4.1): ``W = C^T (G + lambda I)^{-1}`` with the Gram matrix
  ``G = sum X^T X`` and ``C = sum X^T Y`` accumulated in float64 across batches, solved by
  Cholesky. The solve is lazy: scoring after new data re-solves once.
* :class:`SGDReadout` -- one gradient step per batch: the delta (LMS / Widrow-Hoff) rule on the
  squared error, or softmax cross-entropy with its closed-form gradient.
* :class:`HebbianWTAReadout` -- supervised Hebbian class prototypes (instar rule with the
  true class as the winner) and an optional anti-Hebbian push of a wrong winner (LVQ1).
* :class:`RLSReadout` -- recursive least squares (FORCE learning, Sussillo & Abbott 2009), in
  exact block form: with forgetting 1 and ``P_0 = I / delta`` it reproduces the ridge solution
  with ``lambda = delta`` after every batch.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from bpalts._checks import (
    FLOAT32_OR_64,
    GENERATOR_SEED_MAX,
    check_choice,
    check_dense,
    check_finite,
    check_flag,
    check_float_dtype,
    check_int,
    check_scalar,
    check_tensor,
)

SINGULAR_POLICIES = ("error", "jitter")
SGD_LOSSES = ("mse", "ce")
INDEX_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


class _Readout(nn.Module):
    """Shared checks: features (batch, n_features); targets class indices or (batch, n_outputs)."""

    _indices_only = False  # True: the readout takes class indices only, not real-valued targets
    _float64_state: tuple[str, ...] = ()  # buffers that stay float64 whatever the module's dtype
    _moves_x = False  # True: partial_fit moves X to the readout's device (else X must be there)

    def __init__(self, n_features: int, n_outputs: int, bias: bool) -> None:
        super().__init__()
        self.n_features = check_int("n_features", n_features, 1)
        self.n_outputs = check_int("n_outputs", n_outputs, 1)
        self.bias = check_flag("bias", bias)

    def _apply(self, fn, *args, **kwargs):
        """``.to()`` / ``.cuda()`` / ``.float()`` ...: the float64 statistics (``_float64_state``)
        follow a move to another device but keep float64 under a dtype cast (``model.float()``
        would otherwise round them and break the next ``partial_fit``)."""
        keep = {k: self._buffers[k] for k in self._float64_state}
        out = super()._apply(fn, *args, **kwargs)
        for k, t in keep.items():
            self._buffers[k] = t.to(self._buffers[k].device)
        return out

    def _check_x(self, X: torch.Tensor, name: str = "X", same_device: bool = True) -> torch.Tensor:
        """``same_device``: ``X`` must be on the readout's device (False where it is moved there)."""
        check_tensor(name, X, ("batch", "features"), FLOAT32_OR_64)
        if X.shape[1] != self.n_features:
            raise ValueError(f"{name} must have {self.n_features} features, got shape {tuple(X.shape)}")
        device = next(self.buffers()).device
        if same_device and X.device != device:
            raise ValueError(f"{name} is on {X.device} but the readout is on {device}; "
                             "move one of them (.to(device))")
        return X

    def _check_y(self, Y: torch.Tensor, batch: int) -> bool:
        """``Y`` holds one target per row of X: ``batch`` integer class indices in
        ``0..n_outputs-1`` (returns True) or, unless the readout takes indices only, a finite
        float (batch, n_outputs) array (returns False)."""
        if not isinstance(Y, torch.Tensor):
            raise TypeError(f"Y must be a torch.Tensor, got {type(Y).__name__}")
        check_dense("Y", Y)
        if not (Y.dtype in INDEX_DTYPES or Y.dtype.is_floating_point):
            raise TypeError(
                f"Y must hold integer class indices (int8..int64, uint8) or float targets, got dtype {Y.dtype}")
        if Y.dim() == 1 and not Y.dtype.is_floating_point:
            if Y.shape[0] != batch:
                raise ValueError(
                    f"Y must hold {batch} class indices (one per row of X), got shape {tuple(Y.shape)}")
            lo, hi = torch.stack(torch.aminmax(Y)).tolist()  # one host sync
            if lo < 0 or hi >= self.n_outputs:
                raise ValueError(f"Y must be class indices in 0..{self.n_outputs - 1}, got range {lo}..{hi}")
            return True
        if self._indices_only:
            raise ValueError(
                f"{type(self).__name__}: Y must be (batch,) integer class indices, "
                f"got shape {tuple(Y.shape)} dtype {Y.dtype}")
        if Y.dim() == 2 and Y.dtype.is_floating_point:
            if Y.shape != (batch, self.n_outputs):
                raise ValueError(f"Y must be ({batch}, {self.n_outputs}) targets, got shape {tuple(Y.shape)}")
            check_finite("Y", Y)
            return False
        raise ValueError(
            f"Y must be (batch,) integer class indices or (batch, {self.n_outputs}) float targets, "
            f"got shape {tuple(Y.shape)} dtype {Y.dtype}"
        )

    def _targets(self, Y: torch.Tensor, batch: int, dtype: torch.dtype, device) -> torch.Tensor:
        """Class indices (batch,) -> one-hot rows; real targets (batch, n_outputs) pass through."""
        if self._check_y(Y, batch):
            T = torch.zeros(batch, self.n_outputs, dtype=dtype, device=device)
            T[torch.arange(batch, device=device), Y.to(device).long()] = 1.0
            return T
        return Y.to(device=device, dtype=dtype)

    def _check_fit(self, X: torch.Tensor, Y: torch.Tensor) -> None:
        """The whole of ``(X, Y)`` is valid, checked before ``fit`` resets the state."""
        self._check_x(X, same_device=not self._moves_x)  # as partial_fit will, before the reset
        check_finite("X", X)
        self._check_y(Y, X.shape[0])

    def _augment(self, X: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        X = X.to(dtype)
        if self.bias:
            X = torch.cat([X, torch.ones(X.shape[0], 1, dtype=dtype, device=X.device)], 1)
        return X

    def decision_function(self, X: torch.Tensor) -> torch.Tensor:
        return self.forward(X)

    @torch.no_grad()
    def predict(self, X: torch.Tensor) -> torch.Tensor:
        """Class indices: ``argmax`` of the scores."""
        return self.forward(X).argmax(dim=1)

    def fit(self, X: torch.Tensor, Y: torch.Tensor, batch_size: int = 4096) -> "_Readout":
        """Reset, then ``partial_fit`` on ``(X, Y)`` in slices of ``batch_size`` rows."""
        batch_size = check_int("batch_size", batch_size, 1)
        self._check_fit(X, Y)
        self.reset()
        for i in range(0, X.shape[0], batch_size):
            self.partial_fit(X[i : i + batch_size], Y[i : i + batch_size])
        return self


class RidgeReadout(_Readout):
    r"""Closed-form ridge regression readout.

    .. math::

        G = \sum_{\text{batches}} \tilde X^\top \tilde X,\quad C = \sum \tilde X^\top Y
        \quad(\text{float64}),\qquad
        (G + \lambda \tilde I)\,\tilde W^\top = C,\quad \tilde W = [W \; c]

    with ``X~ = [X, 1]`` (the bias column is not penalised: ``I~`` has a 0 in its corner).
    Solved by a Cholesky factorisation in float64; ``W``, ``c`` are stored in float32 (or
    ``out_dtype``). If ``G + lambda I~`` is not positive definite (``lambda = 0`` and rank-
    deficient features, or no data yet), ``singular="error"`` raises ``ValueError``;
    ``singular="jitter"`` retries with ``lambda + eps * mean(diag G)``, eps = 1e-12, 1e-11, ...,
    1e-2, and records the jitter used in ``last_jitter``.

    ``product_dtype``: the dtype in which each batch's ``X~^T X~`` and ``X~^T Y`` are computed
    before being added to the float64 sums. ``torch.float64`` (default) is exact up to float64
    rounding, which is what ill-conditioned features need; ``torch.float32`` is about 2x faster
    on CPUs, and its per-batch rounding (~1e-7 of the entries' size) is harmless when ``ridge`` is
    well above that scale (the reservoir learners' setting).

    Lazy solve: ``partial_fit`` only accumulates; the first ``forward``/``predict`` after new data
    (or an explicit :meth:`solve`) solves. Before any data the scores are zeros.

    Jaeger 2001; Lukosevicius, "A practical guide to applying echo state networks", 2012, sec. 4.1.
    """

    _float64_state = ("gram", "cross")
    _moves_x = True

    def __init__(
        self,
        n_features: int,
        n_outputs: int,
        ridge: float = 1e-6,
        *,
        bias: bool = True,
        singular: str = "error",
        out_dtype: torch.dtype = torch.float32,
        product_dtype: torch.dtype = torch.float64,
    ) -> None:
        super().__init__(n_features, n_outputs, bias)
        self.ridge = check_scalar("ridge", ridge, positive=True)
        self.product_dtype = check_float_dtype("product_dtype", product_dtype)
        self.singular = check_choice("singular", singular, SINGULAR_POLICIES)
        out_dtype = check_float_dtype("out_dtype", out_dtype)
        F = n_features + int(bias)
        self.register_buffer("gram", torch.zeros(F, F, dtype=torch.float64))
        self.register_buffer("cross", torch.zeros(F, n_outputs, dtype=torch.float64))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))
        self.register_buffer("weight", torch.zeros(n_outputs, n_features, dtype=out_dtype))
        self.register_buffer("bias_vector", torch.zeros(n_outputs, dtype=out_dtype))
        self.register_buffer("solved_count", torch.zeros((), dtype=torch.long))
        self.last_jitter = 0.0

    @property
    def ridge(self) -> float:
        """The ridge penalty. Setting it (checked: finite, >= 0) makes the next ``forward`` solve
        again: weights solved under the old penalty were kept before."""
        return self._ridge

    @ridge.setter
    def ridge(self, value) -> None:
        self._ridge = check_scalar("ridge", value, positive=True)
        if "solved_count" in self._buffers:
            self.solved_count.fill_(-1)  # stale: forward re-solves when data was accumulated

    def reset(self) -> None:
        self.gram.zero_()
        self.cross.zero_()
        self.count.zero_()
        self.weight.zero_()
        self.bias_vector.zero_()
        self.solved_count.zero_()

    @torch.no_grad()
    def partial_fit(self, X: torch.Tensor, Y: torch.Tensor) -> "RidgeReadout":
        """Add ``X~^T X~`` and ``X~^T Y`` (in float64) to the running sums."""
        self._check_x(X, same_device=False)  # moved to the readout's device below
        check_finite("X", X)
        pd = self.product_dtype
        Xa = self._augment(X, pd).to(self.gram.device)
        T = self._targets(Y, X.shape[0], pd, self.gram.device)
        if pd == torch.float64:
            self.gram.addmm_(Xa.T, Xa)
            self.cross.addmm_(Xa.T, T)
        else:
            self.gram.add_(Xa.T @ Xa)
            self.cross.add_(Xa.T @ T)
        self.count += X.shape[0]
        return self

    @torch.no_grad()
    def solve(self) -> "RidgeReadout":
        """Solve the regularised normal equations for the data accumulated so far."""
        if int(self.count) == 0:
            raise ValueError("RidgeReadout.solve: no data accumulated yet (call partial_fit first)")
        F = self.gram.shape[0]
        penalty = torch.ones(F, dtype=torch.float64, device=self.gram.device)
        if self.bias:
            penalty[-1] = 0.0
        scale = float(self.gram.diagonal().mean())
        jitters = [0.0] if self.singular == "error" else [0.0] + [10.0**e for e in range(-12, -1)]
        for jitter in jitters:
            A = self.gram + torch.diag(penalty * self.ridge + jitter * scale)
            L, info = torch.linalg.cholesky_ex(A)
            if int(info) == 0:
                break
        else:
            if self.singular == "error":
                raise ValueError(
                    f"RidgeReadout: G + ridge*I is not positive definite (ridge={self.ridge}, "
                    f"{int(self.count)} samples, {self.n_features} features): the features are "
                    "rank deficient; use ridge > 0 or singular='jitter'"
                )
            raise ValueError(
                f"RidgeReadout: G + ridge*I stayed singular with jitter up to 1e-2 * mean(diag G) "
                f"(ridge={self.ridge}); the features hold non-informative columns"
            )
        self.last_jitter = jitter
        Wt = torch.cholesky_solve(self.cross, L)  # (F, C)
        if not bool(torch.isfinite(Wt).all()):
            raise ValueError("RidgeReadout: the solution is not finite (features too badly scaled)")
        if self.bias:
            self.weight.copy_(Wt[:-1].T)
            self.bias_vector.copy_(Wt[-1])
        else:
            self.weight.copy_(Wt.T)
        self.solved_count.copy_(self.count)
        return self

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        self._check_x(X)
        if int(self.count) > 0 and int(self.solved_count) != int(self.count):
            self.solve()
        W = self.weight.to(X.dtype)
        S = X @ W.T
        return S + self.bias_vector.to(X.dtype) if self.bias else S


class SGDReadout(_Readout):
    r"""Linear readout trained by one gradient step per ``partial_fit`` (no autograd).

    ``loss="mse"`` (delta / LMS rule, Widrow & Hoff 1960):
    ``W += lr / B * (Y - S)^T X``, ``c += lr / B * sum_b (Y - S)_b`` with ``S = X W^T + c``.

    ``loss="ce"`` (softmax cross-entropy; targets one-hot or rows of probabilities):
    ``W += lr / B * (Y - softmax(S))^T X`` (the exact negative gradient of the mean
    cross-entropy), same for ``c``. ``weight_decay`` adds ``- lr * weight_decay * W``.
    Weights start at zero.
    """

    def __init__(
        self,
        n_features: int,
        n_outputs: int,
        lr: float = 0.01,
        loss: str = "mse",
        *,
        weight_decay: float = 0.0,
        bias: bool = True,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__(n_features, n_outputs, bias)
        self.lr = check_scalar("lr", lr, positive=True, allow_zero=False)
        self.loss = check_choice("loss", loss, SGD_LOSSES)
        self.weight_decay = check_scalar("weight_decay", weight_decay, positive=True)
        dtype = check_float_dtype("dtype", dtype)
        self.register_buffer("weight", torch.zeros(n_outputs, n_features, dtype=dtype))
        self.register_buffer("bias_vector", torch.zeros(n_outputs, dtype=dtype))

    def reset(self) -> None:
        self.weight.zero_()
        self.bias_vector.zero_()

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        self._check_x(X)
        S = X @ self.weight.to(X.dtype).T
        return S + self.bias_vector.to(X.dtype) if self.bias else S

    @torch.no_grad()
    def partial_fit(self, X: torch.Tensor, Y: torch.Tensor) -> "SGDReadout":
        self._check_x(X)
        check_finite("X", X)
        X = X.to(self.weight.dtype)
        T = self._targets(Y, X.shape[0], self.weight.dtype, self.weight.device)
        S = self.forward(X)
        E = T - (torch.softmax(S, dim=1) if self.loss == "ce" else S)
        B = X.shape[0]
        # the new weights in temporaries (C x F: small), copied in only if finite
        W = self.weight * (1.0 - self.lr * self.weight_decay) if self.weight_decay else self.weight.clone()
        W.addmm_(E.T, X, alpha=self.lr / B)
        c = self.bias_vector.add(E.sum(0), alpha=self.lr / B) if self.bias else self.bias_vector
        if not bool(torch.isfinite(W).all() & torch.isfinite(c).all()):
            raise ValueError(
                f"SGDReadout diverged (the step gives non-finite weights; they are left unchanged): "
                f"lower lr (now {self.lr})")
        self.weight.copy_(W)
        if self.bias:
            self.bias_vector.copy_(c)
        return self

    def fit(self, X, Y, batch_size: int = 64, epochs: int = 1, seed: int = 0) -> "SGDReadout":
        """Reset, then ``epochs`` shuffled passes of ``partial_fit`` in batches of ``batch_size``."""
        batch_size = check_int("batch_size", batch_size, 1)
        epochs = check_int("epochs", epochs, 1)
        seed = check_int("seed", seed, 0, GENERATOR_SEED_MAX)
        self._check_fit(X, Y)
        self.reset()
        g = torch.Generator().manual_seed(seed)
        for _ in range(epochs):
            perm = torch.randperm(X.shape[0], generator=g)
            for i in range(0, X.shape[0], batch_size):
                idx = perm[i : i + batch_size]
                self.partial_fit(X[idx.to(X.device)], Y[idx.to(Y.device)])
        return self


class HebbianWTAReadout(_Readout):
    r"""Supervised Hebbian winner-take-all readout: one prototype per class.

    For a sample ``x`` of class ``k`` (the teacher forces ``k`` to be the winner) the instar rule
    (Grossberg 1976) moves its prototype toward the input:
    ``w_k += eta_k (x - w_k)``. With ``lr=None`` ``eta_k = 1 / n_k`` (``n_k``: samples of class
    ``k`` so far), so ``w_k`` is exactly the running class mean; a float ``lr`` gives an
    exponential average. With ``anti_hebbian=True`` the current (un-forced) winner
    ``j = argmax_i s_i``, if wrong, is pushed away: ``w_j -= lr_anti (x - w_j)`` (Kohonen's LVQ1,
    1990). Scores: ``s_i = x . w_i - ||w_i||^2 / 2`` (the winner is the nearest prototype).
    Class indices only (no real-valued targets). Updates use the batch in order, as a sum of
    per-sample updates computed against the weights before the batch.
    """

    _indices_only = True

    def __init__(
        self,
        n_features: int,
        n_outputs: int,
        lr: float | None = None,
        *,
        anti_hebbian: bool = False,
        lr_anti: float = 0.01,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__(n_features, n_outputs, bias=False)
        self.lr = None if lr is None else check_scalar("lr", lr, positive=True, allow_zero=False)
        if self.lr is not None and self.lr > 1:
            raise ValueError(f"lr must be in (0, 1] (or None for running class means), got {lr}")
        self.anti_hebbian = check_flag("anti_hebbian", anti_hebbian)
        self.lr_anti = check_scalar("lr_anti", lr_anti, positive=True)
        dtype = check_float_dtype("dtype", dtype)
        self.register_buffer("weight", torch.zeros(n_outputs, n_features, dtype=dtype))
        self.register_buffer("counts", torch.zeros(n_outputs, dtype=torch.float64))

    def reset(self) -> None:
        self.weight.zero_()
        self.counts.zero_()

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        self._check_x(X)
        W = self.weight.to(X.dtype)
        return X @ W.T - 0.5 * (W * W).sum(1)

    @torch.no_grad()
    def partial_fit(self, X: torch.Tensor, Y: torch.Tensor) -> "HebbianWTAReadout":
        self._check_x(X)
        check_finite("X", X)
        T = self._targets(Y, X.shape[0], self.weight.dtype, self.weight.device)  # one-hot
        X = X.to(self.weight.dtype)
        n_b = T.sum(0)  # samples per class in the batch
        push = None
        if self.anti_hebbian:
            # the wrong winners' push, against the weights before the batch (as the Hebbian part)
            wrong = self.forward(X).argmax(1)
            mask = wrong != Y.to(wrong.device)
            if bool(mask.any()):
                Xw, jw = X[mask], wrong[mask]
                P = torch.zeros(Xw.shape[0], self.n_outputs, dtype=X.dtype, device=X.device)
                P[torch.arange(Xw.shape[0], device=X.device), jw] = 1.0
                push = self.lr_anti * (P.T @ Xw - P.sum(0)[:, None] * self.weight)
        if self.lr is None:
            # exact running mean: w_k <- (n_k w_k + sum_{b in k} x_b) / (n_k + n_b,k)
            n_old = self.counts.to(self.weight.dtype)
            total = (n_old + n_b).clamp_min(1.0)
            self.weight.mul_((n_old / total)[:, None]).add_((T.T @ X) / total[:, None])
        else:
            # sum over the batch of lr (x_b - w_k) for the samples of class k
            self.weight.add_(self.lr * (T.T @ X - n_b[:, None] * self.weight))
        if push is not None:
            self.weight.sub_(push)
        self.counts += n_b.to(torch.float64)
        return self


class RLSReadout(_Readout):
    r"""Recursive least squares (FORCE) readout, exact block form, float64 state.

    With ``X~ = [X, 1]`` (B, F), targets ``Y`` (B, C), weights ``W~`` (C, F) and the inverse
    correlation estimate ``P`` (F, F), starting from ``W~ = 0``, ``P = I / delta``:

    .. math::

        K = P \tilde X^\top (\beta I_B + \tilde X P \tilde X^\top)^{-1},\quad
        \tilde W \mathrel{+}= (Y - \tilde X \tilde W^\top)^\top K^\top,\quad
        P \leftarrow (P - K \tilde X P) / \beta

    (the Woodbury identity applied to a whole batch). ``beta`` is the forgetting factor, applied
    once per ``partial_fit`` call (1: no forgetting). With ``beta = 1`` after any sequence of
    batches ``W~^T = (sum X~^T X~ + delta I)^{-1} sum X~^T Y``: ridge regression with
    ``lambda = delta`` (the bias included in the penalty). Haykin, "Adaptive Filter Theory";
    Sussillo & Abbott, "Generating coherent patterns of activity from chaotic neural networks",
    Neuron 2009 (FORCE learning: RLS on a reservoir's readout, per time step).
    """

    _float64_state = ("P", "weight_full")
    _moves_x = True

    def __init__(
        self,
        n_features: int,
        n_outputs: int,
        delta: float = 1.0,
        forgetting: float = 1.0,
        *,
        bias: bool = True,
        out_dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__(n_features, n_outputs, bias)
        self.delta = check_scalar("delta", delta, positive=True, allow_zero=False)
        self.forgetting = check_scalar("forgetting", forgetting, positive=True, allow_zero=False)
        if self.forgetting > 1.0:
            raise ValueError(f"forgetting must be in (0, 1], got {forgetting}")
        self.out_dtype = check_float_dtype("out_dtype", out_dtype)
        F = n_features + int(bias)
        self.register_buffer("P", torch.eye(F, dtype=torch.float64) / self.delta)
        self.register_buffer("weight_full", torch.zeros(n_outputs, F, dtype=torch.float64))

    def reset(self) -> None:
        self.P.copy_(torch.eye(self.P.shape[0], dtype=torch.float64, device=self.P.device) / self.delta)
        self.weight_full.zero_()

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        self._check_x(X)
        Wf = self.weight_full.to(X.dtype)
        S = X @ Wf[:, : self.n_features].T
        return S + Wf[:, -1] if self.bias else S

    @torch.no_grad()
    def partial_fit(self, X: torch.Tensor, Y: torch.Tensor) -> "RLSReadout":
        self._check_x(X, same_device=False)  # moved to the readout's device below
        check_finite("X", X)
        Xa = self._augment(X, torch.float64).to(self.P.device)
        T = self._targets(Y, X.shape[0], torch.float64, self.P.device)
        PX = self.P @ Xa.T  # (F, B)
        S = self.forgetting * torch.eye(Xa.shape[0], dtype=torch.float64, device=Xa.device) + Xa @ PX
        K = torch.linalg.solve(S, PX.T).T  # (F, B) = P X^T S^{-1}  (S symmetric)
        E = T - Xa @ self.weight_full.T  # (B, C) a-priori error
        W = self.weight_full + E.T @ K.T
        # P <- sym((P - K PX^T) / beta), with two F x F temporaries (F can be thousands)
        P = torch.addmm(self.P, K, PX.T, alpha=-1.0)
        Psym = torch.add(P, P.T).mul_(0.5 / self.forgetting)  # symmetric against rounding
        if not bool(torch.isfinite(W).all() & torch.isfinite(Psym).all()):
            raise ValueError(
                "RLSReadout diverged (the step gives non-finite weights; the state is left "
                "unchanged): increase delta or forgetting")
        del P
        self.weight_full.copy_(W)
        self.P.copy_(Psym)
        return self

    @property
    def weight(self) -> torch.Tensor:
        return self.weight_full[:, : self.n_features].to(self.out_dtype)

    @property
    def bias_vector(self) -> torch.Tensor:
        if self.bias:
            return self.weight_full[:, -1].to(self.out_dtype)
        return torch.zeros(self.n_outputs, dtype=self.out_dtype, device=self.weight_full.device)
