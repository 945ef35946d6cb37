"""The backpropagation baseline every other method is compared against."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from bpalts._backend import resolve_backend
from bpalts._checks import check_choice, check_scalar
from bpalts.learners.base import Learner, check_seed, check_sizes
from bpalts.registry import MethodSpec, register_method

ACTIVATIONS = {"relu": F.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid}


class BackpropMLP(Learner):
    r"""A fully connected network trained end to end by backpropagation.

    ``h_l = f(W_l h_{l-1} + b_l)`` for the hidden layers, logits ``W_L h_{L-1} + b_L``. Loss:
    cross-entropy (default) or the original comparison's MSE against one-hot targets. Optimiser:
    Adam (default, lr 1e-3) or plain SGD (the original's lr 0.01); ``lr_decay`` multiplies the
    learning rate after every step (1.0: constant). Rumelhart, Hinton & Williams,
    "Learning representations by back-propagating errors", Nature 1986.

    This is the one learner that uses autograd by design. Its hot path is PyTorch's own GEMMs,
    so every ``backend`` runs the same code; ``self.backend`` records ``"reference"``.
    """

    def __init__(
        self,
        sizes,
        activation: str = "relu",
        optimizer: str = "adam",
        lr: float | None = None,
        loss: str = "ce",
        lr_decay: float = 1.0,
        seed: int = 0,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        self.sizes = check_sizes(sizes)
        self.activation = check_choice("activation", activation, tuple(ACTIVATIONS))
        self.optimizer_name = check_choice("optimizer", optimizer, ("adam", "sgd"))
        self.loss_name = check_choice("loss", loss, ("ce", "mse"))
        default_lr = 1e-3 if optimizer == "adam" else 0.01
        self.lr = check_scalar("lr", default_lr if lr is None else lr, positive=True, allow_zero=False)
        self.lr_decay = check_scalar("lr_decay", lr_decay, positive=True, allow_zero=False)
        if self.lr_decay > 1.0:
            raise ValueError(f"lr_decay must be in (0, 1], got {lr_decay}")
        resolve_backend(backend)  # validates the name; all backends run the same autograd code
        self.backend = "reference"
        g = torch.Generator().manual_seed(check_seed(seed))
        self.layers = nn.ModuleList()
        for n_in, n_out in zip(self.sizes[:-1], self.sizes[1:]):
            layer = nn.Linear(n_in, n_out)
            bound = 1.0 / n_in**0.5  # PyTorch's default init, drawn from our generator
            with torch.no_grad():
                layer.weight.uniform_(-bound, bound, generator=g)
                layer.bias.uniform_(-bound, bound, generator=g)
            self.layers.append(layer)
        self._make_optimizer()

    def _make_optimizer(self) -> None:
        if self.optimizer_name == "adam":
            self.optimizer = torch.optim.Adam(self.parameters(), lr=self.lr)
        else:
            self.optimizer = torch.optim.SGD(self.parameters(), lr=self.lr)

    def _apply(self, fn, *args, **kwargs):
        # .to(device) replaces the parameters' storage: rebuild the optimiser over the moved ones
        # (its state, if any, is moved by load_state_dict semantics of torch.optim).
        state = self.optimizer.state_dict() if hasattr(self, "optimizer") else None
        out = super()._apply(fn, *args, **kwargs)
        if state is not None:
            self._make_optimizer()
            self.optimizer.load_state_dict(state)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = ACTIVATIONS[self.activation]
        h = x
        for layer in self.layers[:-1]:
            h = act(layer(h))
        return self.layers[-1](h)

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> dict:
        self.check_input(x, y)
        self._check_x(x, y)
        # Made under torch.inference_mode: autograd cannot save them (the base class runs every
        # train_step outside that mode, where a clone is a normal tensor).
        x = x.clone() if x.is_inference() else x
        y = y.clone() if y.is_inference() else y
        with torch.enable_grad():  # autograd by design, also inside a caller's torch.no_grad()
            logits = self.forward(x)
            if self.loss_name == "ce":
                loss = F.cross_entropy(logits, y.long())  # int32 / uint8 labels as well
            else:
                loss = F.mse_loss(logits, F.one_hot(y.long(), self.sizes[-1]).to(logits.dtype))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if self.lr_decay != 1.0:
            for group in self.optimizer.param_groups:
                group["lr"] *= self.lr_decay
        with torch.no_grad():
            acc = (logits.argmax(1) == y).float().mean().item()
        return self._finish_step({"loss": float(loss.item()), "batch_accuracy": acc})


register_method(
    MethodSpec(
        name="backprop",
        # lr 1e-3 decaying by 0.9997 a step: halves every ~2300 batches (~2.5 epochs at batch 64).
        build=lambda sizes, backend="auto", seed=0: BackpropMLP(
            sizes, lr_decay=0.9997, backend=backend, seed=seed
        ),
        description="MLP trained by backpropagation (Adam 1e-3 decaying 0.9997/step, cross-entropy)",
        batch_size=64,
        full_epochs=10,
    )
)
