"""Learning without weight transport: PEPITA, feedback alignment (FA) and direct feedback
alignment (DFA).

All three train an MLP (ReLU; FA and DFA also tanh, which the registered ``fa`` and ``dfa``
use) with local updates computed from plain GEMMs under ``torch.no_grad()``; no autograd graph
is ever built (the weights are parameters with ``requires_grad=False``). The fixed random
feedback matrices are not stored in the ``state_dict``: it holds their seed (``feedback_seed``)
and they are regenerated from it, on the model's device and dtype, when the model is built or a
``state_dict`` is loaded. (PEPITA with weight mirroring changes its feedback matrix during
training, so there it is stored as a persistent buffer.)

Every learner here has ``diagnostics(x, y)``: for each layer, the angle between the method's
update and the true backprop gradient of the same loss on the same batch (the true gradient is
computed by a manual backward pass, only for the diagnostics; it never touches training).

Registered methods: ``pepita`` (fixed 784-1024-10 network), ``fa`` and ``dfa`` (the shared widths).
"""
from __future__ import annotations

import math
import numbers

import torch
import torch.nn as nn

from bpalts._backend import resolve_backend
from bpalts._checks import check_choice, check_flag, check_int, check_scalar
from bpalts.learners.base import Learner, check_batch, check_seed, check_sequence, check_sizes
from bpalts.registry import MethodSpec, register_method

#: Offset between the weight-init seed and the seed of the fixed feedback matrices.
_FEEDBACK_SEED_OFFSET = 1_000_003


# --------------------------------------------------------------------------------------------
# small helpers (plain tensor code, no autograd)


def _act(name: str, a: torch.Tensor) -> torch.Tensor:
    return torch.relu(a) if name == "relu" else torch.tanh(a)


def _act_grad(name: str, a: torch.Tensor) -> torch.Tensor:
    """``f'(a)`` for ``f`` = relu or tanh."""
    if name == "relu":
        return (a > 0).to(a.dtype)
    t = torch.tanh(a)
    return 1.0 - t * t


def _softmax_error(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``softmax(logits) - onehot(y)``: the gradient of the summed cross-entropy wrt the logits."""
    e = torch.softmax(logits, dim=1)
    e[torch.arange(y.shape[0], device=y.device), y.long()] -= 1.0
    return e


def _cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> float:
    picked = logits.gather(1, y.long().view(-1, 1)).squeeze(1)
    return float((torch.logsumexp(logits, dim=1) - picked).mean().item())


def _angle_deg(a: torch.Tensor, b: torch.Tensor) -> float:
    """Angle in degrees between two tensors seen as flat vectors (90 if either is zero)."""
    a, b = a.reshape(-1).double(), b.reshape(-1).double()
    na, nb = a.norm().item(), b.norm().item()
    if na == 0.0 or nb == 0.0:
        return 90.0
    c = max(-1.0, min(1.0, (a @ b).item() / (na * nb)))
    return math.degrees(math.acos(c))


def _uniform(shape, bound: float, gen: torch.Generator) -> torch.Tensor:
    return (torch.rand(shape, generator=gen, dtype=torch.float64) * 2.0 - 1.0).mul_(bound).float()


class _LocalMLP(Learner):
    """Shared pieces: ReLU/tanh MLP weights (``W_l``: (n_l, n_{l-1})), optional biases, the fixed
    feedback matrices regenerated from ``feedback_seed``, the optimiser state as buffers, and the
    true backprop gradient for the diagnostics."""

    def __init__(self, sizes, *, bias: bool, init_gain: float, activation: str, seed: int, backend: str) -> None:
        super().__init__()
        self.sizes = check_sizes(sizes)
        self.activation = check_choice("activation", activation, ("relu", "tanh"))
        init_gain = check_scalar("init_gain", init_gain, positive=True, allow_zero=False)
        seed = check_seed(seed)
        resolve_backend(backend)  # validates the name; the hot path is torch GEMMs on every backend
        self.backend = "reference"
        self.use_bias = bool(bias)
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        gen = torch.Generator().manual_seed(seed)
        for n_in, n_out in zip(self.sizes[:-1], self.sizes[1:]):
            w = _uniform((n_out, n_in), init_gain * math.sqrt(3.0 / n_in), gen)  # var gain^2/n_in
            self.weights.append(nn.Parameter(w, requires_grad=False))
            if self.use_bias:
                self.biases.append(nn.Parameter(torch.zeros(n_out), requires_grad=False))
        self.register_buffer(
            "feedback_seed", torch.tensor(int(seed) + _FEEDBACK_SEED_OFFSET, dtype=torch.long), persistent=True
        )
        self.register_load_state_dict_post_hook(_LocalMLP._after_load)

    # -- parameters and optimiser -------------------------------------------------------------
    def _params(self) -> list[nn.Parameter]:
        return list(self.weights) + list(self.biases)

    def _make_feedback(self, gen: torch.Generator) -> list[torch.Tensor]:  # pragma: no cover
        raise NotImplementedError

    def _feedback_names(self) -> list[str]:  # pragma: no cover
        raise NotImplementedError

    def regenerate_feedback(self) -> None:
        """(Re)build the fixed feedback matrices from ``feedback_seed`` (CPU generator, so the
        matrices are the same on every device), on the weights' device and dtype."""
        ref = self.weights[0]
        gen = torch.Generator().manual_seed(int(self.feedback_seed))
        for name, mat in zip(self._feedback_names(), self._make_feedback(gen)):
            self.register_buffer(name, mat.to(device=ref.device, dtype=ref.dtype), persistent=False)

    @staticmethod
    def _after_load(module, incompatible_keys) -> None:
        module.regenerate_feedback()

    def _init_optimizer(self, optimizer: str) -> None:
        for i, p in enumerate(self._params()):
            self.register_buffer(f"opt_m{i}", torch.zeros_like(p), persistent=True)
            if optimizer == "adam":
                self.register_buffer(f"opt_v{i}", torch.zeros_like(p), persistent=True)

    def _apply_updates(self, grads: list[torch.Tensor], lr: float) -> None:
        """One optimiser step with the method's pseudo-gradients ``grads`` (same order as
        :meth:`_params`). Adam (Kingma & Ba 2015) or SGD with (heavy-ball) momentum
        ``v <- mu v + lr g``, ``p <- p - v`` (the PEPITA code's form)."""
        t = int(self.steps_done) + 1
        params = self._params()
        ms = [getattr(self, f"opt_m{i}") for i in range(len(params))]
        if self.optimizer_name == "adam":
            vs = [getattr(self, f"opt_v{i}") for i in range(len(params))]
            torch._foreach_lerp_(ms, grads, 1.0 - self.betas[0])
            torch._foreach_mul_(vs, self.betas[1])
            torch._foreach_addcmul_(vs, grads, grads, value=1.0 - self.betas[1])
            # torch.optim.Adam's form: p -= lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps)
            bc1, bc2 = 1.0 - self.betas[0] ** t, 1.0 - self.betas[1] ** t
            denom = torch._foreach_sqrt(vs)
            torch._foreach_div_(denom, math.sqrt(bc2))
            torch._foreach_add_(denom, self.eps)
            torch._foreach_addcdiv_([p.data for p in params], ms, denom, value=-lr / bc1)
        else:
            torch._foreach_mul_(ms, self.momentum)
            torch._foreach_add_(ms, grads, alpha=lr)
            torch._foreach_sub_([p.data for p in params], ms)

    # -- forward ------------------------------------------------------------------------------
    def _forward_all(self, x: torch.Tensor, masks=None):
        """Pre-activations ``a_l`` and outputs ``h_l`` (``h_0 = x``, ``h_L`` = logits). ``masks``:
        one (inverted) dropout mask per hidden layer, applied to ``h_l``."""
        norm = getattr(self, "input_norm", None)
        if norm is not None:
            x = (x - norm[0]) * (1.0 / norm[1])
        hs, pre = [x], []
        h = x
        n = len(self.weights)
        for l in range(n):
            a = h @ self.weights[l].t()
            if self.use_bias:
                a = a + self.biases[l]
            pre.append(a)
            if l < n - 1:
                h = _act(self.activation, a)
                if masks is not None:
                    h = h * masks[l]
            else:
                h = a
            hs.append(h)
        return pre, hs

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        check_batch(x, None, self.sizes[0], self.sizes[-1])
        return self._forward_all(x)[1][-1]

    # -- diagnostics --------------------------------------------------------------------------
    def _true_gradients(self, x, y, pre, hs, masks=None) -> list[torch.Tensor]:
        """Backprop gradient of the mean cross-entropy (manual backward pass; diagnostics only)."""
        B = x.shape[0]
        delta = _softmax_error(hs[-1], y) / B
        gw, gb = [None] * len(self.weights), [None] * len(self.weights)
        for l in range(len(self.weights) - 1, -1, -1):
            gw[l] = delta.t() @ hs[l]
            gb[l] = delta.sum(0)
            if l > 0:
                d = delta @ self.weights[l]
                if masks is not None:
                    d = d * masks[l - 1]
                delta = d * _act_grad(self.activation, pre[l - 1])
        return gw + (gb if self.use_bias else [])

    def _method_gradients(self, x, y):  # pragma: no cover
        """(pseudo-gradients in :meth:`_params` order, pre, hs, masks) for one batch."""
        raise NotImplementedError

    @torch.no_grad()
    def diagnostics(self, x: torch.Tensor, y: torch.Tensor) -> dict:
        """Per-layer metrics on a batch, without changing anything: for layer ``l`` (1-based)
        ``angle_l`` (degrees) between the method's update direction and the backprop gradient of
        the same loss with the same dropout mask, ``update_norm_l``, ``grad_norm_l``,
        ``weight_norm_l``; plus ``loss`` and ``batch_accuracy`` (no dropout)."""
        self.check_input(x, y)
        check_batch(x, y, self.sizes[0], self.sizes[-1])
        gen_state = self._rng_state()
        method, pre, hs, masks = self._method_gradients(x, y)
        self._restore_rng(gen_state)
        true = self._true_gradients(x, y, pre, hs, masks)
        out = {}
        for l in range(len(self.weights)):
            out[f"angle_{l + 1}"] = _angle_deg(method[l], true[l])
            out[f"update_norm_{l + 1}"] = float(method[l].norm().item())
            out[f"grad_norm_{l + 1}"] = float(true[l].norm().item())
            out[f"weight_norm_{l + 1}"] = float(self.weights[l].norm().item())
        logits = self._forward_all(x)[1][-1]
        out["loss"] = _cross_entropy(logits, y)
        out["batch_accuracy"] = float((logits.argmax(1) == y).float().mean().item())
        return out

    def _rng_state(self):
        return None

    def _restore_rng(self, state) -> None:
        pass


# --------------------------------------------------------------------------------------------
# FA and DFA


class FeedbackAlignmentMLP(_LocalMLP):
    r"""An MLP trained with fixed random feedback instead of the transposed forward weights.

    Forward: ``a_l = h_{l-1} W_l^T + b_l``, ``h_l = f(a_l)`` (``f`` = relu or tanh; the registered
    ``fa``/``dfa`` use tanh, as Nokland did), logits ``a_L``. Output error of
    the softmax cross-entropy ``e = softmax(a_L) - onehot(y)`` (``delta_L = e``). Hidden errors:

    * ``mode="fa"`` (feedback alignment; Lillicrap, Cownden, Tweed & Akerman, "Random synaptic
      feedback weights support error backpropagation for deep learning", Nat. Commun. 2016):
      ``delta_l = (delta_{l+1} B_{l+1}) * f'(a_l)``, with ``B_{l+1}`` a fixed random matrix of
      ``W_{l+1}``'s shape used in place of it (backprop would use ``W_{l+1}``).
    * ``mode="dfa"`` (direct feedback alignment; Nokland, "Direct feedback alignment provides
      learning in deep neural networks", NeurIPS 2016): ``delta_l = (e D_l) * f'(a_l)``, with
      ``D_l`` a fixed random (classes, n_l) matrix: every hidden layer gets the output error directly.

    ``input_norm=(mean, std)`` standardises the input first (``h_0 = (x - mean) / std``; the
    registered methods use MNIST's 0.1307, 0.3081: zero-mean inputs speed up tanh layers).
    Updates (batch mean): ``dW_l = delta_l^T h_{l-1} / B``, ``db_l = mean_b delta_l``, applied by
    Adam (default; lr decays by ``lr_decay`` each step) or SGD with momentum. Feedback entries are
    uniform in ``[-1/sqrt(fan), 1/sqrt(fan)]`` (fan: the summed dimension), regenerated from
    ``feedback_seed``. Weights uniform in ``[-g sqrt(3/n_in), g sqrt(3/n_in)]`` (``init_gain`` g,
    default 1/sqrt(3): PyTorch's default Linear init), biases zero. No autograd: everything is GEMMs under
    ``torch.no_grad()``.
    """

    def __init__(
        self,
        sizes,
        mode: str = "dfa",
        activation: str = "relu",
        optimizer: str = "adam",
        lr: float | None = None,
        lr_decay: float = 1.0,
        momentum: float = 0.9,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        init_gain: float = 1.0 / math.sqrt(3.0),
        input_norm: tuple[float, float] | None = None,
        seed: int = 0,
        backend: str = "auto",
    ) -> None:
        super().__init__(sizes, bias=True, init_gain=init_gain, activation=activation, seed=seed, backend=backend)
        self.init_gain = init_gain
        self.mode = check_choice("mode", mode, ("fa", "dfa"))
        self.optimizer_name = check_choice("optimizer", optimizer, ("adam", "sgd"))
        default_lr = 1e-3 if self.optimizer_name == "adam" else 0.01
        self.lr = check_scalar("lr", default_lr if lr is None else lr, positive=True, allow_zero=False)
        self.lr_decay = check_scalar("lr_decay", lr_decay, positive=True, allow_zero=False)
        if self.lr_decay > 1.0:
            raise ValueError(f"lr_decay must be in (0, 1], got {lr_decay}")
        self.momentum = check_scalar("momentum", momentum, positive=True)
        if self.momentum >= 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        betas = check_sequence("betas", betas, "Adam's (beta1, beta2)")
        if len(betas) != 2 or not all(0.0 <= check_scalar("betas", b) < 1.0 for b in betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {betas!r}")
        self.betas = (float(betas[0]), float(betas[1]))
        self.eps = check_scalar("eps", eps, positive=True, allow_zero=False)
        if input_norm is not None:
            input_norm = check_sequence("input_norm", input_norm, "(mean, std) or None")
            if len(input_norm) != 2:
                raise ValueError(f"input_norm must be (mean, std) with std > 0, got {input_norm!r}")
            mean = check_scalar("input_norm mean", input_norm[0])
            std = check_scalar("input_norm std", input_norm[1])
            if not std > 0:
                raise ValueError(f"input_norm must be (mean, std) with std > 0, got {input_norm!r}")
            input_norm = (mean, std)
        self.input_norm = input_norm
        self._init_optimizer(self.optimizer_name)
        self.regenerate_feedback()

    def _feedback_names(self) -> list[str]:
        return [f"feedback{l}" for l in range(len(self.sizes) - 2)]

    def _make_feedback(self, gen: torch.Generator) -> list[torch.Tensor]:
        mats = []
        n_cls = self.sizes[-1]
        for l in range(len(self.sizes) - 2):  # hidden layer l+1 (width sizes[l+1])
            if self.mode == "fa":  # B_{l+2} has W_{l+2}'s shape (sizes[l+2], sizes[l+1])
                shape, fan = (self.sizes[l + 2], self.sizes[l + 1]), self.sizes[l + 2]
            else:  # D_{l+1}: (classes, sizes[l+1])
                shape, fan = (n_cls, self.sizes[l + 1]), n_cls
            mats.append(_uniform(shape, 1.0 / math.sqrt(fan), gen))
        return mats

    def feedback(self) -> list[torch.Tensor]:
        """The fixed feedback matrices (FA: ``B_2..B_L``; DFA: ``D_1..D_{L-1}``)."""
        return [getattr(self, n) for n in self._feedback_names()]

    def _method_gradients(self, x, y):
        pre, hs = self._forward_all(x)
        B = x.shape[0]
        e = _softmax_error(hs[-1], y)
        fb = self.feedback()
        n = len(self.weights)
        deltas = [None] * n
        deltas[-1] = e
        for l in range(n - 2, -1, -1):
            back = deltas[l + 1] @ fb[l] if self.mode == "fa" else e @ fb[l]
            deltas[l] = back * _act_grad(self.activation, pre[l])
        gw = [(deltas[l] * (1.0 / B)).t() @ hs[l] for l in range(n)]
        gb = [deltas[l].mean(0) for l in range(n)]
        return gw + gb, pre, hs, None

    @torch.no_grad()
    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> dict:
        self.check_input(x, y)
        check_batch(x, y, self.sizes[0], self.sizes[-1])
        grads, pre, hs, _ = self._method_gradients(x, y)
        lr = self.lr * self.lr_decay ** int(self.steps_done)
        self._apply_updates(grads, lr)
        logits = hs[-1]
        metrics = {
            "loss": _cross_entropy(logits, y),
            "batch_accuracy": float((logits.argmax(1) == y).float().mean().item()),
            "lr": lr,
        }
        return self._finish_step(metrics)


# --------------------------------------------------------------------------------------------
# PEPITA


class PEPITA(_LocalMLP):
    r"""PEPITA: two forward passes, the second on the input modulated by the output error.

    Dellaferrera & Kreiman, "Error-driven input modulation: solving the credit assignment problem
    without a backward pass", ICML 2022. Network: ReLU hidden layers, no biases, softmax output.
    For a batch (the same dropout masks ``m_l`` on the hidden layers in both passes):

    * pass 1: ``h_0 = x``, ``h_l = relu(h_{l-1} W_l^T) * m_l``, ``e = softmax(h_{L-1} W_L^T) - onehot(y)``
    * modulated input: ``x_mod = x - e F^T`` with ``F`` a fixed random (n_in, classes) matrix,
      entries uniform in ``[-s, s]``, ``s = f_scale * sqrt(6 / n_in)`` (the paper's 0.05 x He-uniform)
    * pass 2 from ``h_0^mod = x_mod`` with the same masks: ``h_l^mod``
    * updates (batch mean): ``dW_1 = (h_1 - h_1^mod)^T x_mod / B``,
      ``dW_l = (h_l - h_l^mod)^T h_{l-1}^mod / B`` (``1 < l < L``), ``dW_L = e^T h_{L-1}^mod / B``,
      applied as ``v <- momentum v + lr dW``, ``W <- W - v`` (SGD with momentum, the paper's).

    Learning rate: ``lr`` times ``gamma`` after each epoch in ``milestones`` (epochs of
    ``epoch_samples`` training samples, counted by the learner). The paper's MNIST setting
    (784-1024-10, 98.01% test after 100 epochs): momentum 0.9, batch 64, 10% dropout on the hidden
    layer, decays x0.1 at epochs 60 and 90, lr 0.1 (the authors' MNIST command; their CIFAR-10
    tutorial uses 0.01). The registered ``pepita`` compresses the schedule into 60 epochs
    (decays at 30 and 45).

    ``mirror=True`` adds weight mirroring of ``F`` (Srinivasan, Mignacco, Sorbaro, Refinetti,
    Cooper, Kreiman & Dellaferrera, "Forward learning with top-down feedback: empirical and
    analytical characterization", ICLR 2024; after Akrout et al. 2019): each step a noise batch
    ``xi ~ N(0, mirror_noise^2)`` of inputs is sent through the linear chain
    ``y_xi = xi W_1^T ... W_L^T`` and ``F <- F + mirror_lr xi^T y_xi / B``, then ``F`` is rescaled
    to its initial Frobenius norm; ``F`` so turns towards ``(W_L ... W_1)^T``, the direction for
    which ``W_1 F e`` equals the backprop signal ``e W_2 ... `` of a linear net. ``F`` then
    changes, so it is kept in the ``state_dict``.
    """

    def __init__(
        self,
        sizes=(784, 1024, 10),
        lr: float = 0.1,
        momentum: float = 0.9,
        dropout: float = 0.1,
        f_scale: float = 0.05,
        milestones: tuple = (60, 90),
        gamma: float = 0.1,
        epoch_samples: int = 60000,
        mirror: bool = False,
        mirror_lr: float = 0.1,
        mirror_noise: float = 1.0,
        seed: int = 0,
        backend: str = "auto",
    ) -> None:
        super().__init__(sizes, bias=False, init_gain=math.sqrt(2.0), activation="relu", seed=seed, backend=backend)
        self.lr = check_scalar("lr", lr, positive=True, allow_zero=False)
        self.momentum = check_scalar("momentum", momentum, positive=True)
        if self.momentum >= 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.dropout = check_scalar("dropout", dropout, positive=True)
        if self.dropout >= 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.f_scale = check_scalar("f_scale", f_scale, positive=True, allow_zero=False)
        milestones = check_sequence("milestones", milestones, "epochs at which the rate decays, e.g. (60, 90)")
        # NumPy scalars and a tensor's elements are epoch numbers too (check_sequence takes tensors)
        milestones = tuple(m.item() if isinstance(m, torch.Tensor) and m.numel() == 1 else m for m in milestones)
        if not all(isinstance(m, numbers.Real) and not isinstance(m, bool) and math.isfinite(m) and m > 0
                   for m in milestones):
            raise ValueError(f"milestones must be positive epoch numbers, got {milestones!r}")
        self.milestones = tuple(sorted(float(m) for m in milestones))
        self.gamma = check_scalar("gamma", gamma, positive=True, allow_zero=False)
        self.epoch_samples = check_int("epoch_samples", epoch_samples, 1)
        self.mirror = check_flag("mirror", mirror)
        self.mirror_lr = check_scalar("mirror_lr", mirror_lr, positive=True, allow_zero=False)
        self.mirror_noise = check_scalar("mirror_noise", mirror_noise, positive=True, allow_zero=False)
        self.optimizer_name = "sgd"
        self._init_optimizer("sgd")
        self.register_buffer("samples_seen", torch.zeros((), dtype=torch.long), persistent=True)
        self._gen = torch.Generator().manual_seed(int(seed) + 2 * _FEEDBACK_SEED_OFFSET)
        self.regenerate_feedback()
        if self.mirror:  # F learns: keep it (persistent) and its initial norm
            F = self.F
            del self._buffers["F"]
            self.register_buffer("F", F, persistent=True)
            self.register_buffer("F_norm0", F.norm().reshape(()), persistent=True)

    def _feedback_names(self) -> list[str]:
        return ["F"]

    def _make_feedback(self, gen: torch.Generator) -> list[torch.Tensor]:
        n_in = self.sizes[0]
        return [_uniform((n_in, self.sizes[-1]), self.f_scale * math.sqrt(6.0 / n_in), gen)]

    def regenerate_feedback(self) -> None:
        if getattr(self, "mirror", False) and "F" in self._buffers:
            return  # mirrored F is state, loaded with the state_dict
        super().regenerate_feedback()

    def current_lr(self) -> float:
        epoch = int(self.samples_seen) / self.epoch_samples
        return self.lr * self.gamma ** sum(1 for m in self.milestones if epoch >= m)

    # the dropout masks come from a CPU generator owned by the learner (deterministic per seed)
    def _masks(self, B: int, ref: torch.Tensor):
        if not self.training or self.dropout == 0.0:
            return None
        keep = 1.0 - self.dropout
        return [
            (torch.rand((B, n), generator=self._gen) < keep).to(device=ref.device, dtype=ref.dtype) / keep
            for n in self.sizes[1:-1]
        ]

    def _rng_state(self):
        return self._gen.get_state()

    def _restore_rng(self, state) -> None:
        self._gen.set_state(state)

    def _method_gradients(self, x, y):
        B = x.shape[0]
        masks = self._masks(B, x)
        pre, hs = self._forward_all(x, masks)
        e = torch.softmax(hs[-1], dim=1)
        e[torch.arange(B, device=y.device), y.long()] -= 1.0
        x_mod = x - e @ self.F.t()
        _, hs_mod = self._forward_all(x_mod, masks)
        n = len(self.weights)
        gw = []
        for l in range(n):
            post = e if l == n - 1 else hs[l + 1] - hs_mod[l + 1]
            gw.append((post * (1.0 / B)).t() @ hs_mod[l])
        return gw, pre, hs, masks

    @torch.no_grad()
    def _mirror_step(self, B: int) -> None:
        ref = self.weights[0]
        xi = torch.randn((B, self.sizes[0]), generator=self._gen).to(device=ref.device, dtype=ref.dtype)
        y = xi * self.mirror_noise
        for W in self.weights:
            y = y @ W.t()
        self.F.add_((xi * self.mirror_noise).t() @ y, alpha=self.mirror_lr / B)
        self.F.mul_(self.F_norm0 / self.F.norm().clamp_min(1e-30))

    @torch.no_grad()
    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> dict:
        self.check_input(x, y)
        check_batch(x, y, self.sizes[0], self.sizes[-1])
        grads, pre, hs, _ = self._method_gradients(x, y)
        lr = self.current_lr()
        self._apply_updates(grads, lr)
        if self.mirror:
            self._mirror_step(x.shape[0])
        self.samples_seen += x.shape[0]
        logits = hs[-1]
        metrics = {
            "loss": _cross_entropy(logits, y),
            "batch_accuracy": float((logits.argmax(1) == y).float().mean().item()),
            "lr": lr,
        }
        return self._finish_step(metrics)


# --------------------------------------------------------------------------------------------
# registration

PEPITA_HIDDEN = 1024
#: MNIST training-pixel mean and std: the registered fa/dfa standardise their input with them.
MNIST_NORM = (0.1307, 0.3081)


def _build_pepita(sizes, backend="auto", seed=0):
    sizes = check_sizes(sizes)
    return PEPITA((sizes[0], PEPITA_HIDDEN, sizes[-1]), milestones=(30, 45), seed=seed, backend=backend)


register_method(
    MethodSpec(
        name="pepita",
        build=_build_pepita,
        description=(
            "PEPITA (Dellaferrera & Kreiman 2022): error-modulated second forward pass, fixed "
            "784-1024-10 ReLU net (ignores the hidden widths it is given), SGD 0.1 momentum 0.9, "
            "10% dropout, lr x0.1 at epochs 30 and 45"
        ),
        batch_size=64,
        full_epochs=60,
        fixed_depth=True,
    )
)

register_method(
    MethodSpec(
        name="fa",
        build=lambda sizes, backend="auto", seed=0: FeedbackAlignmentMLP(
            sizes, mode="fa", activation="tanh", lr=2e-3, lr_decay=0.9996, input_norm=MNIST_NORM,
            seed=seed, backend=backend
        ),
        description="feedback alignment (Lillicrap et al. 2016): fixed random B_l in place of W_l^T, "
        "tanh, softmax CE, inputs standardised, Adam 2e-3 decaying 0.9996/step, batch 128",
        batch_size=128,
        full_epochs=20,
    )
)

register_method(
    MethodSpec(
        name="dfa",
        build=lambda sizes, backend="auto", seed=0: FeedbackAlignmentMLP(
            sizes, mode="dfa", activation="tanh", lr=2e-3, lr_decay=0.9996, input_norm=MNIST_NORM,
            seed=seed, backend=backend
        ),
        description="direct feedback alignment (Nokland 2016): output error sent to every hidden layer "
        "by fixed random D_l, tanh, softmax CE, inputs standardised, Adam 2e-3 decaying 0.9996/step, batch 128",
        batch_size=128,
        full_epochs=20,
    )
)
