"""Bad inputs found by an input audit: sparse (COO / CSR) tensors where dense ones are expected,
a tensor on another device (the ``meta`` device stands in for one) reaching a finite check, and
``hebbian_state``'s dtype / device arguments. Each is a ValueError / TypeError naming the
argument, not a torch error from inside the op."""
from __future__ import annotations

import pytest
import torch

from bpalts.ops import (
    ff_layer_step,
    hebbian_state,
    hebbian_update,
    image_sequence,
    pc_relax,
    pc_weight_update,
    reservoir_run,
    softwta_update,
)
from bpalts.readouts import RidgeReadout, RLSReadout, SGDReadout


def _g():
    return torch.Generator().manual_seed(0)


@pytest.mark.parametrize("layout", ["coo", "csr"])
def test_sparse_inputs_to_ops_named(layout):
    g = _g()
    sp = (lambda t: t.to_sparse()) if layout == "coo" else (lambda t: t.to_sparse_csr())
    W, X = torch.randn(5, 6, generator=g), torch.randn(4, 6, generator=g)
    with pytest.raises(TypeError, match=r"^X must be a dense \(strided\) tensor"):
        hebbian_update(W.clone(), sp(X), "gha", 0.1, backend="reference")
    with pytest.raises(TypeError, match=r"^W must be a dense \(strided\) tensor"):
        softwta_update(sp(W), X, 0.1, backend="reference")
    with pytest.raises(TypeError, match=r"^x_pos must be a dense"):
        ff_layer_step(W, torch.zeros(5), sp(X), X, 2.0, backend="reference")
    Ws = [torch.randn(7, 6, generator=g), torch.randn(3, 7, generator=g)]
    with pytest.raises(TypeError, match=r"^target must be a dense"):
        pc_relax(Ws, X, sp(torch.randn(4, 3, generator=g)), 2, backend="reference")
    with pytest.raises(TypeError, match=r"^feedback\[1\] must be a dense"):
        pc_relax(Ws, X, torch.randn(4, 3, generator=g), 2, backend="reference",
                 feedback=[None, sp(torch.randn(3, 7, generator=g))])
    with pytest.raises(TypeError, match=r"^states\[0\] must be a dense"):
        pc_weight_update(Ws, X, [sp(torch.randn(4, 7)), torch.randn(4, 3)],
                         [torch.randn(4, 7), torch.randn(4, 3)], backend="reference")
    with pytest.raises(TypeError, match=r"^W_in must be a dense"):
        reservoir_run(torch.eye(6) * 0.5, sp(torch.randn(6, 3, generator=g)), torch.randn(2, 1, 3),
                      backend="reference")


def test_sparse_misc_named():
    with pytest.raises(TypeError, match=r"^biases\[0\] must be a dense"):
        pc_relax([torch.randn(7, 6), torch.randn(3, 7)], torch.randn(4, 6), torch.randn(4, 3), 2,
                 backend="reference", biases=[torch.zeros(7).to_sparse(), torch.zeros(3)])
    with pytest.raises(TypeError, match=r"^leak must be a dense"):
        reservoir_run(torch.eye(6) * 0.5, torch.randn(6, 3), torch.randn(2, 1, 3),
                      torch.full((6,), 0.5).to_sparse(), backend="reference")
    with pytest.raises(TypeError, match=r"^images must be a dense"):
        image_sequence(torch.rand(2, 784).to_sparse())
    with pytest.raises(TypeError, match=r"^state\['theta'\] must be a dense"):
        hebbian_update(torch.randn(5, 6), torch.randn(4, 6), "bcm", 0.1, backend="reference",
                       state={"theta": torch.zeros(5).to_sparse()})


def test_meta_x_is_a_device_mismatch_in_pc_ops():
    """x on another device than the weights was checked for NaN first (a torch error)."""
    Ws = [torch.randn(7, 6), torch.randn(3, 7)]
    xm = torch.empty(4, 6, device="meta")
    with pytest.raises(ValueError, match=r"^weights\[0\] is on cpu but x is on meta"):
        pc_relax(Ws, xm, torch.randn(4, 3), 2, backend="reference")
    with pytest.raises(ValueError, match=r"^weights\[0\] is on cpu but x is on meta"):
        pc_weight_update(Ws, xm, [torch.randn(4, 7), torch.randn(4, 3)],
                         [torch.randn(4, 7), torch.randn(4, 3)], backend="reference")


def test_finite_check_of_a_meta_tensor_names_it():
    with pytest.raises(ValueError, match=r"^X is on the meta device"):
        RidgeReadout(5, 3).partial_fit(torch.empty(4, 5, device="meta"), torch.zeros(4, dtype=torch.long))


def test_hebbian_state_dtype_and_device_checked():
    with pytest.raises(TypeError, match=r"^dtype must be torch.float32 or torch.float64"):
        hebbian_state("bcm", 4, dtype=torch.float16)
    with pytest.raises(TypeError, match=r"^dtype must be a torch.dtype"):
        hebbian_state("bcm", 4, dtype=None)
    with pytest.raises(ValueError, match=r"^device must be a device string"):
        hebbian_state("bcm", 4, device="bogus")
    with pytest.raises(TypeError, match=r"^device must be a torch.device"):
        hebbian_state("bcm", 4, device=0.5)


@pytest.mark.parametrize("cls", [RidgeReadout, SGDReadout, RLSReadout])
def test_readout_predict_on_another_device_and_sparse_targets(cls):
    r = cls(5, 3)
    r.fit(torch.randn(10, 5), torch.arange(10) % 3)
    with pytest.raises(ValueError, match=r"^X is on meta but the readout is on cpu"):
        r.predict(torch.empty(4, 5, device="meta"))
    with pytest.raises(TypeError, match=r"^Y must be a dense"):
        r.partial_fit(torch.randn(4, 5), (torch.arange(4) % 3).to_sparse())


def test_learner_sparse_batch_named():
    from bpalts.learners import BackpropMLP
    m = BackpropMLP([784, 8, 10])
    x, y = torch.rand(4, 784), torch.arange(4)
    with pytest.raises(TypeError, match=r"^x must be a dense"):
        m.train_step(x.to_sparse(), y)
    with pytest.raises(TypeError, match=r"^y must be a dense"):
        m.train_step(x, y.to_sparse())
    with pytest.raises(TypeError, match=r"^x must be a dense"):
        m.evaluate(x.to_sparse_csr(), y)


@pytest.mark.parametrize("kw, exc, match", [
    (dict(input_scaling=0.0), ValueError, r"^input_scaling must be > 0"),
    (dict(input_density=2.0), ValueError, r"^input_density must be in \(0, 1\]"),
    (dict(readout_lr="fast"), TypeError, r"^readout_lr must be a real number"),
    (dict(readout_lr=float("nan")), ValueError, r"^readout_lr must be finite"),
    (dict(readout_loss="hinge"), ValueError, r"^readout_loss must be one of"),
])
def test_echo_state_network_arguments_named(kw, exc, match):
    from bpalts.learners import EchoStateNetwork
    with pytest.raises(exc, match=match):
        EchoStateNetwork([784, 10], n_reservoir=8, steps=4, **kw)


# ---- entry points: data, compare, registry, widths, backend, generate (second audit)

def test_mnist_bad_device_root_split_named(tmp_path):
    from bpalts.data import mnist
    (tmp_path / "afile").write_text("")
    with pytest.raises(ValueError, match=r"^device must be a device string"):
        mnist("test", root=tmp_path, device="gpu")
    with pytest.raises(TypeError, match=r"^device must be a torch.device"):
        mnist("test", root=tmp_path, device=0)
    with pytest.raises(TypeError, match=r"^root must be a path"):
        mnist("test", root=5)
    with pytest.raises(ValueError, match=r"^root .* exists and is not a folder"):
        mnist("test", root=tmp_path / "afile")
    with pytest.raises(ValueError, match=r"^split must be one of"):
        mnist(["train"], root=tmp_path)


def test_compare_methods_and_device_named(tmp_path):
    from bpalts import compare
    for methods, exc, match in [(3, TypeError, r"^methods must be a list"), ([], ValueError, r"^methods must name"),
                                ([3], TypeError, r"^methods must hold method names")]:
        with pytest.raises(exc, match=match):
            compare.compare(methods, [2], out=tmp_path, device="cpu")
    with pytest.raises(ValueError, match=r"^device must be one of"):
        compare.compare(["backprop"], [2], out=tmp_path, device="gpu")
    with pytest.raises(TypeError, match=r"^out must be a folder path"):
        compare.compare(["backprop"], [2], out=5, device="cpu")
    with pytest.raises(ValueError, match=r"^out must name a folder, got an empty path ''"):
        compare.compare(["backprop"], [2], out="", device="cpu")


def test_registry_and_widths_arguments_named():
    from bpalts import registry
    from bpalts.learners.widths import hidden_sizes, layer_sizes
    with pytest.raises(TypeError, match=r"^name must be a method name"):
        registry.get_method(["backprop"])
    with pytest.raises(TypeError, match=r"fixed_depth must be a bool"):
        registry.MethodSpec(name="x", build=lambda s, **k: None, description="d", fixed_depth="no")
    with pytest.raises(ValueError, match=r"^10{30} layers leave a hidden layer"):
        hidden_sizes(10**30)  # refused at once, not a list of 10**30 widths
    with pytest.raises(TypeError, match=r"^ratio must be a real number"):
        hidden_sizes(4, ratio="a")
    with pytest.raises(ValueError, match=r"^n_in must be >= 1"):
        layer_sizes(4, n_in=0)


def test_backend_device_and_info_flag_named():
    import bpalts
    with pytest.raises(ValueError, match=r"^device must be a device string"):
        bpalts.resolve_backend("auto", "gpu")
    with pytest.raises(ValueError, match=r"^device must be a device string"):
        bpalts.available_backends("")
    with pytest.raises(TypeError, match=r"^print_it must be a bool"):
        bpalts.info(print_it="no")


def test_generate_sparse_or_meta_labels_named():
    from bpalts.learners import BidirectionalPC
    m = BidirectionalPC([784, 16, 10])
    with pytest.raises(TypeError, match=r"^labels must be a dense"):
        m.generate(torch.tensor([1, 2]).to_sparse())
    with pytest.raises(ValueError, match=r"^labels is on the meta device"):
        m.generate(torch.empty(2, dtype=torch.long, device="meta"))


def test_scalars_beyond_the_ops_dtype_are_named():
    """A finite scalar too large for the dtype the op computes in (lr=1e300 on float32) is a
    ValueError naming it, on every CPU backend, instead of torch's overflow error from inside
    the reference or silently infinite weights from C++; float64 tensors take it."""
    import bpalts
    from bpalts.ops import (hebbian_update, pc_relax, pc_weight_update, softwta_conv_update,
                            softwta_update)
    g = torch.Generator().manual_seed(0)
    W, X = torch.randn(8, 5, generator=g), torch.rand(4, 5, generator=g)
    ws = [torch.randn(6, 5, generator=g), torch.randn(3, 6, generator=g)]
    y = torch.rand(4, 3, generator=g)
    msg = r"^{} must be within float32's range \(\|{}\| <= 3.403e\+38"
    for backend in ("reference", "cpp"):
        if backend not in bpalts.available_backends("cpu"):
            continue
        with pytest.raises(ValueError, match=msg.format("lr", "lr")):
            hebbian_update(W.clone(), X, "gha", lr=1e300, backend=backend)
        with pytest.raises(ValueError, match=msg.format("lr", "lr")):
            softwta_update(W.clone(), X, lr=-1e39, backend=backend)
        with pytest.raises(ValueError, match=msg.format("delta", "delta")):
            hebbian_update(W.clone(), X, "krotov", lr=0.1, delta=1e39, backend=backend)
        with pytest.raises(ValueError, match=msg.format("lr", "lr")):
            softwta_conv_update(torch.randn(4, 1, 3, 3, generator=g), torch.rand(2, 1, 6, 6, generator=g),
                                lr=1e300, backend=backend)
        with pytest.raises(ValueError, match=msg.format("step_size", "step_size")):
            pc_relax(ws, X, y, steps=2, step_size=1e300, backend=backend)
        res = pc_relax(ws, X, y, steps=2, step_size=0.1, backend=backend)
        with pytest.raises(ValueError, match=msg.format("lr", "lr")):
            pc_weight_update([w.clone() for w in ws], X, res.states, res.errors, lr=1e300, backend=backend)
    hebbian_update(W.double(), X.double(), "gha", lr=1e300, backend="reference")  # float64's range


def test_inference_tensor_updated_outside_inference_mode_is_named():
    """A weight made under torch.inference_mode() and updated in place outside it: the
    reference raised torch's "Inplace update to inference tensor" error while the C++ backend
    updated it silently. Every backend now gives a ValueError naming it; inside inference mode
    the update runs."""
    import bpalts
    from bpalts.ops import hebbian_update, softwta_update
    with torch.inference_mode():
        W = torch.randn(6, 4)
    X = torch.rand(3, 4)
    for backend in ("reference", "cpp"):
        if backend not in bpalts.available_backends("cpu"):
            continue
        for op in (lambda: softwta_update(W, X, lr=0.1, backend=backend),
                   lambda: hebbian_update(W, X, "gha", 0.1, backend=backend)):
            with pytest.raises(ValueError, match=r"^W is updated in place but was created under "
                                                 r"torch.inference_mode\(\)"):
                op()
        with torch.inference_mode():
            softwta_update(W, X, lr=0.1, backend=backend)
