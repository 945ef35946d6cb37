"""Edge cases of the comparison harness's CLI and of backend selection by environment.

A tiny learner is registered under a unique name and the harness's data loader is replaced, so
these tests need no MNIST and run in a few seconds.
"""
from __future__ import annotations

import uuid

import pytest
import torch

from bpalts import _backend, compare, registry
from bpalts.data import MNISTUnavailableError
from bpalts.learners.base import Learner
from bpalts.registry import MethodSpec


class Tiny(Learner):
    """Nearest-class-mean classifier: enough to produce rows, no training dynamics."""

    def __init__(self, sizes, backend="auto", seed=0):
        super().__init__()
        self.means = torch.nn.Parameter(torch.zeros(sizes[-1], sizes[0]), requires_grad=False)
        self.backend = "reference"

    def forward(self, x):
        return x @ self.means.T

    @torch.no_grad()
    def train_step(self, x, y=None):
        self.means.index_add_(0, y, x)
        return self._finish_step({"loss": 0.0})


def _data(device="cpu"):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(300, 784, generator=g)
    y = torch.randint(0, 10, (300,), generator=g)
    return tuple(t.to(device) for t in (x[:200], y[:200], x[200:], y[200:]))


@pytest.fixture
def method(monkeypatch):
    name = f"_edge_tiny_{uuid.uuid4().hex[:8]}"
    registry.register_method(MethodSpec(name=name, build=lambda sizes, backend="auto", seed=0:
                                        Tiny(sizes, backend, seed), description="tiny"))
    monkeypatch.setattr(compare, "load_data", _data)
    yield name
    registry._REGISTRY.pop(name, None)


def _unavailable(device):
    raise MNISTUnavailableError("MNIST 'train' split is not available (simulated); put the files in X")


def _run(out, *args):
    return compare.main(["--out", str(out), "--no-progress", "--device", "cpu", *args])


def test_cli_reports_unavailable_data_without_traceback(tmp_path, method, monkeypatch, capsys):
    monkeypatch.setattr(compare, "load_data", _unavailable)
    assert _run(tmp_path, "--methods", method) == 1
    err = capsys.readouterr().err
    assert "bpalts-compare: error: MNIST 'train' split is not available" in err
    assert "put the files in X" in err and "Traceback" not in err


def test_overwrite_keeps_old_results_when_data_cannot_load(tmp_path, method, monkeypatch):
    assert _run(tmp_path, "--methods", method, "--max-samples", "100") == 0
    before = (tmp_path / "results.csv").read_text()
    monkeypatch.setattr(compare, "load_data", _unavailable)
    with pytest.raises(MNISTUnavailableError):
        compare.compare([method], [2], out=tmp_path, device="cpu", overwrite=True, progress=False)
    assert (tmp_path / "results.csv").read_text() == before


def test_overwrite_removes_plots_of_the_replaced_results(tmp_path, method):
    assert _run(tmp_path, "--methods", method, "--layers", "2", "3", "--max-samples", "100") == 0
    assert (tmp_path / "accuracy_vs_depth.png").is_file()
    # a fresh single-depth run: no depth plot now, and the old one must not linger
    assert _run(tmp_path, "--methods", method, "--layers", "3", "--max-samples", "100",
                "--overwrite") == 0
    assert not (tmp_path / "accuracy_vs_depth.png").exists()
    assert (tmp_path / "sample_efficiency.png").is_file() and (tmp_path / "clock_time.png").is_file()


def test_overwrite_with_a_failing_run_leaves_no_stale_plots(tmp_path, method, monkeypatch):
    assert _run(tmp_path, "--methods", method, "--max-samples", "100") == 0
    assert (tmp_path / "sample_efficiency.png").is_file()

    def boom(self, x, y=None):
        raise RuntimeError("fails at its first step")

    monkeypatch.setattr(Tiny, "train_step", boom)
    assert _run(tmp_path, "--methods", method, "--max-samples", "100", "--overwrite") == 1
    assert [p.name for p in tmp_path.iterdir()] == ["results.csv"]


def test_backend_chosen_by_environment_says_so(monkeypatch):
    monkeypatch.setenv("BPALTS_BACKEND", "cpp")
    with pytest.raises(ValueError, match="cpp backend needs CPU tensors.*BPALTS_BACKEND"):
        _backend.resolve_backend("auto", "cuda")
    monkeypatch.setenv("BPALTS_BACKEND", "triton")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match=r"triton backend needs .*chosen by the environment "
                                         r"variable BPALTS_BACKEND"):
        _backend.resolve_backend("auto", "cpu")
    # an explicit backend is the caller's own choice: no mention of the variable
    with pytest.raises(ValueError) as info:
        _backend.resolve_backend("triton", "cpu")
    assert "BPALTS_BACKEND" not in str(info.value)
