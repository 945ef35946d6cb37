"""Tests of the comparison harness (bpalts.compare) and its plots (bpalts.plots).

A tiny logistic-regression learner is registered under unique names and the harness's data
loader is replaced by small synthetic data, so these tests need no MNIST and run in seconds.
"""
from __future__ import annotations

import csv
import time
import uuid

import pandas as pd
import pytest
import torch

from bpalts import compare, plots, registry
from bpalts.learners.base import DivergenceError, Learner
from bpalts.registry import MethodSpec

N_TRAIN, N_TEST, N_IN, N_CLASSES = 600, 200, 784, 10


class LogReg(Learner):
    """Softmax regression trained by plain SGD written out by hand (no autograd)."""

    def __init__(self, sizes, backend="auto", seed=0, lr=0.5, fail_at=None, eval_sleep=0.0,
                 error=DivergenceError):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.W = torch.nn.Parameter(0.01 * torch.randn(sizes[-1], sizes[0], generator=g),
                                    requires_grad=False)
        self.b = torch.nn.Parameter(torch.zeros(sizes[-1]), requires_grad=False)
        self.lr = lr
        self.fail_at = fail_at
        self.error = error
        self.eval_sleep = eval_sleep
        self.sizes = list(sizes)
        self.backend = "reference" if backend == "auto" else backend

    def forward(self, x):
        return x @ self.W.T + self.b

    @torch.no_grad()
    def train_step(self, x, y=None):
        if self.fail_at is not None and int(self.steps_done) + 1 >= self.fail_at:
            raise self.error(f"LogReg diverged at step {int(self.steps_done) + 1}")
        p = torch.softmax(self.forward(x), dim=1)
        onehot = torch.nn.functional.one_hot(y, self.W.shape[0]).to(p.dtype)
        loss = -(onehot * torch.log(p + 1e-12)).sum(1).mean()
        grad = (p - onehot) / x.shape[0]
        self.W -= self.lr * grad.T @ x
        self.b -= self.lr * grad.sum(0)
        return self._finish_step({"loss": float(loss)})

    def evaluate(self, x, y, batch_size=2000):
        if self.eval_sleep:
            time.sleep(self.eval_sleep)
        return super().evaluate(x, y, batch_size)


def synthetic(device="cpu", seed=123):
    """Ten well-separated Gaussian classes in 784 dimensions, values in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    protos = torch.rand(N_CLASSES, N_IN, generator=g)

    def make(n):
        y = torch.randint(0, N_CLASSES, (n,), generator=g)
        x = (protos[y] + 0.3 * torch.randn(n, N_IN, generator=g)).clamp(0, 1)
        return x.float(), y.long()

    x_train, y_train = make(N_TRAIN)
    x_test, y_test = make(N_TEST)
    return tuple(t.to(device) for t in (x_train, y_train, x_test, y_test))


@pytest.fixture(autouse=True)
def fake_data(monkeypatch):
    calls = []

    def load(device):
        calls.append(str(device))
        return synthetic(device)

    monkeypatch.setattr(compare, "load_data", load)
    return calls


@pytest.fixture
def make_method():
    """Register LogReg variants under unique names; unregister them afterwards."""
    names = []

    def make(batch_size=50, full_epochs=2, fixed_depth=False, **kwargs):
        name = f"_test_logreg_{uuid.uuid4().hex[:8]}"

        def build(sizes, backend="auto", seed=0):
            return LogReg(sizes, backend=backend, seed=seed, **kwargs)

        registry.register_method(MethodSpec(
            name=name, build=build, description="test softmax regression",
            batch_size=batch_size, full_epochs=full_epochs, fixed_depth=fixed_depth,
        ))
        names.append(name)
        return name

    yield make
    for name in names:
        registry._REGISTRY.pop(name, None)


def read_rows(out):
    with open(out / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


def run(out, *args):
    return compare.main(["--out", str(out), "--no-progress", "--device", "cpu", *args])


def test_csv_rows_per_eval_point_and_plots(tmp_path, make_method, capsys, fake_data):
    name = make_method()
    rc = run(tmp_path, "--methods", name, "--max-samples", "600", "--eval-every", "200")
    assert rc == 0
    assert fake_data == ["cpu"]  # data loaded once
    with open(tmp_path / "results.csv", newline="") as f:
        header = next(csv.reader(f))
    assert header == ["method", "depth", "epoch", "samples_seen", "train_seconds",
                      "test_accuracy", "backend", "device"]
    rows = read_rows(tmp_path)
    assert [int(r["samples_seen"]) for r in rows] == [200, 400, 600]
    assert [float(r["epoch"]) for r in rows] == pytest.approx([1 / 3, 2 / 3, 1.0], abs=1e-5)
    assert all(r["method"] == name and r["depth"] == "4" for r in rows)
    assert all(r["device"] == "cpu" and r["backend"] == "reference" for r in rows)
    secs = [float(r["train_seconds"]) for r in rows]
    assert secs == sorted(secs) and secs[0] > 0
    accs = [float(r["test_accuracy"]) for r in rows]
    assert all(0.0 <= a <= 1.0 for a in accs)
    assert accs[-1] > 0.8  # separable data: far above chance (0.1)
    assert (tmp_path / "sample_efficiency.png").stat().st_size > 0
    assert (tmp_path / "clock_time.png").stat().st_size > 0
    assert not (tmp_path / "accuracy_vs_depth.png").exists()  # one depth only
    out = capsys.readouterr().out
    assert name in out and f"{100 * accs[-1]:.2f}" in out  # summary table


def test_final_eval_when_budget_is_not_an_eval_point(tmp_path, make_method):
    # batches of 64 do not land on multiples of 250: evaluate after the batch that crosses an
    # evaluation point, and once more at the end of the budget.
    name = make_method(batch_size=64)
    assert run(tmp_path, "--methods", name, "--max-samples", "550", "--eval-every", "250") == 0
    seen = [int(r["samples_seen"]) for r in read_rows(tmp_path)]
    assert seen == [256, 512, 550]


def test_full_preset_evaluates_once_per_epoch(tmp_path, make_method):
    name = make_method(full_epochs=2)
    assert run(tmp_path, "--methods", name, "--preset", "full") == 0
    rows = read_rows(tmp_path)
    assert [int(r["samples_seen"]) for r in rows] == [N_TRAIN, 2 * N_TRAIN]
    assert [float(r["epoch"]) for r in rows] == [1.0, 2.0]
    # --epochs overrides the method's budget
    assert run(tmp_path, "--methods", name, "--preset", "full", "--epochs", "1",
               "--overwrite") == 0
    assert [int(r["samples_seen"]) for r in read_rows(tmp_path)] == [N_TRAIN]


def test_quick_budget(make_method):
    spec = registry.get_method(make_method())
    total, every = compare.training_budget(spec, 60_000, preset="quick")
    assert (total, every) == (compare.QUICK_SAMPLES, compare.QUICK_EVAL_EVERY)
    assert compare.training_budget(spec, 60_000, preset="full") == (spec.full_epochs * 60_000, 60_000)
    assert compare.training_budget(spec, 60_000, preset="quick", epochs=3, max_samples=1000,
                                   eval_every=7) == (1000, 7)


def test_unknown_method_lists_registered(tmp_path, make_method, capsys):
    name = make_method()
    with pytest.raises(SystemExit) as info:
        run(tmp_path, "--methods", name, "no_such_method")
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "no_such_method" in err and name in err
    for registered in registry.method_names():
        assert registered in err
    assert not (tmp_path / "results.csv").exists()


def test_list(make_method, capsys):
    name = make_method()
    assert compare.main(["--list"]) == 0
    out = capsys.readouterr().out
    assert name in out and "test softmax regression" in out


def test_failing_run_keeps_rows_and_others_continue(tmp_path, make_method, capsys):
    bad = make_method(fail_at=10)   # batch 50: diverges in the 10th step, after 450 samples
    good = make_method()
    rc = run(tmp_path, "--methods", bad, good, "--max-samples", "600", "--eval-every", "200")
    assert rc == 1
    rows = read_rows(tmp_path)
    bad_rows = [int(r["samples_seen"]) for r in rows if r["method"] == bad]
    good_rows = [int(r["samples_seen"]) for r in rows if r["method"] == good]
    assert bad_rows == [200, 400]  # nothing recorded for the failure itself
    assert good_rows == [200, 400, 600]
    captured = capsys.readouterr()
    assert "DivergenceError" in captured.err and "step 10" in captured.err
    assert "FAILED" in captured.out
    # the failed run's summary line says what it reached: 400 samples, its last accuracy and
    # the backend it ran on (not 0, "-" and "auto")
    bad_line = next(line for line in captured.out.splitlines() if line.startswith(bad + " "))
    cells = bad_line.split()
    assert cells[1:3] != ["4", "-"] and "400" in cells and "reference" in cells, bad_line
    assert (tmp_path / "sample_efficiency.png").exists()


def test_interrupt_keeps_rows_and_stops(tmp_path, make_method, capsys):
    stopped = make_method(fail_at=10, error=KeyboardInterrupt)
    never = make_method()
    rc = run(tmp_path, "--methods", stopped, never, "--max-samples", "600", "--eval-every", "200")
    assert rc == 130
    rows = read_rows(tmp_path)
    assert [int(r["samples_seen"]) for r in rows] == [200, 400]
    assert {r["method"] for r in rows} == {stopped}  # the remaining runs did not start
    assert (tmp_path / "sample_efficiency.png").exists()
    assert "interrupted" in capsys.readouterr().err


def test_cuda_unavailable_is_an_error(tmp_path, make_method, capsys, monkeypatch, fake_data):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    name = make_method()
    with pytest.raises(SystemExit) as info:  # argparse's error: usage, message, status 2
        compare.main(["--out", str(tmp_path), "--methods", name, "--device", "cuda"])
    assert info.value.code == 2
    assert "bpalts-compare: error:" in capsys.readouterr().err
    assert fake_data == []  # rejected before any data was loaded


def test_failing_build_is_reported(tmp_path, make_method):
    name = make_method()
    spec = registry._REGISTRY[name]

    def broken(sizes, backend="auto", seed=0):
        raise ValueError("triton backend needs CUDA tensors")

    registry._REGISTRY[name] = MethodSpec(name=name, build=broken, description="x")
    try:
        assert run(tmp_path, "--methods", name, "--max-samples", "100") == 1
    finally:
        registry._REGISTRY[name] = spec
    assert not (tmp_path / "results.csv").exists() or read_rows(tmp_path) == []


def test_several_depths_and_fixed_depth(tmp_path, make_method):
    name = make_method()
    fixed = make_method(fixed_depth=True)
    rc = run(tmp_path, "--methods", name, fixed, "--layers", "2", "3",
             "--max-samples", "200", "--eval-every", "100")
    assert rc == 0
    rows = read_rows(tmp_path)
    assert sorted({r["depth"] for r in rows if r["method"] == name}) == ["2", "3"]
    assert {r["depth"] for r in rows if r["method"] == fixed} == {"2"}  # ran once
    assert len(rows) == 3 * 2
    assert (tmp_path / "accuracy_vs_depth.png").stat().st_size > 0


def test_append_across_invocations_and_latest_run_plotted(tmp_path, make_method):
    name = make_method()
    args = ("--methods", name, "--max-samples", "200", "--eval-every", "100")
    assert run(tmp_path, *args) == 0
    assert run(tmp_path, *args, "--seed", "1") == 0
    text = (tmp_path / "results.csv").read_text().splitlines()
    assert sum(line.startswith("method,") for line in text) == 1  # one header
    df = plots.load_results(tmp_path / "results.csv", latest_only=False)
    assert df["run"].tolist() == [0, 0, 1, 1]
    latest = plots.load_results(tmp_path / "results.csv")
    assert len(latest) == 2 and latest["run"].tolist() == [1, 1]


def test_deterministic_for_a_seed(tmp_path, make_method):
    name = make_method()
    args = ("--methods", name, "--max-samples", "300", "--eval-every", "100")
    assert run(tmp_path / "a", *args) == 0
    assert run(tmp_path / "b", *args) == 0
    acc = lambda d: [r["test_accuracy"] for r in read_rows(d)]  # noqa: E731
    assert acc(tmp_path / "a") == acc(tmp_path / "b")


def test_evaluation_time_excluded(tmp_path, make_method):
    name = make_method(eval_sleep=0.3)
    assert run(tmp_path, "--methods", name, "--max-samples", "300", "--eval-every", "100",
               "--no-plots") == 0
    rows = read_rows(tmp_path)
    assert len(rows) == 3
    assert float(rows[-1]["train_seconds"]) < 0.3  # three 0.3 s evaluations are not counted
    assert not (tmp_path / "sample_efficiency.png").exists()


def test_plot_functions_take_dataframe(tmp_path):
    df = pd.DataFrame({
        "method": ["a", "a", "b", "b", "a", "b"],
        "depth": [2, 2, 2, 2, 4, 4],
        "epoch": [0.5, 1.0, 0.5, 1.0, 1.0, 1.0],
        "samples_seen": [30, 60, 30, 60, 60, 60],
        "train_seconds": [0.1, 0.2, 1.0, 2.0, 0.3, 3.0],
        "test_accuracy": [0.5, 0.7, 0.4, 0.6, 0.65, 0.55],
        "backend": ["reference"] * 6,
        "device": ["cpu"] * 6,
    })
    written = plots.plot_all(df, tmp_path)
    assert {p.name for p in written} == {"sample_efficiency.png", "clock_time.png",
                                         "accuracy_vs_depth.png"}
    final = plots.final_results(df)
    assert len(final) == 4
    csv_path = tmp_path / "r.csv"
    df.to_csv(csv_path, index=False)
    assert plots.plot_sample_efficiency(csv_path, tmp_path / "s.png").exists()
    assert plots.plot_accuracy_vs_depth(df[df["depth"] == 2], tmp_path / "d.png") is None
    with pytest.raises(ValueError, match="test_accuracy"):
        plots.load_results(df.drop(columns=["test_accuracy"]))


def test_bad_depth_is_an_error(tmp_path, make_method, capsys):
    name = make_method()
    with pytest.raises(SystemExit):
        run(tmp_path, "--methods", name, "--layers", "0")
    assert "positive integer" in capsys.readouterr().err


def test_run_one_setup_hook_and_any_writer(make_method):
    # setup(learner) sees the freshly built learner before training (bench/gpu_accuracy.py sets
    # the precision there); the writer only needs write(row).
    spec = registry.get_method(make_method())
    seen = []

    def setup(learner):
        seen.append(int(learner.steps_done))
        learner.lr = 0.0  # a frozen learner: its accuracy must stay that of the initial weights

    class Rows:
        rows = []

        def write(self, row):
            self.rows.append(row)

    data = synthetic()
    res = compare.run_one(spec, 2, data, Rows(), total_samples=200, eval_every=200,
                          device=torch.device("cpu"), progress=False, setup=setup)
    untrained = LogReg([N_IN, N_CLASSES], seed=0).evaluate(data[2], data[3])
    assert seen == [0] and len(Rows.rows) == 1 and res.samples_seen == 200
    assert res.final_accuracy == pytest.approx(untrained)


# ---------------------------------------------------------------------------------------------
# options are checked before any data is loaded or file written


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(epochs=-3), ValueError, "epochs must be >= 1, got -3"),
    (dict(epochs=0), ValueError, "epochs must be >= 1, got 0"),
    (dict(epochs=1.5), TypeError, "epochs must be an int"),
    (dict(max_samples=0), ValueError, "max_samples must be >= 1, got 0"),
    (dict(max_samples=-10), ValueError, "max_samples must be >= 1"),
    (dict(eval_every=0), ValueError, "eval_every must be >= 1, got 0"),
    (dict(eval_every=-100), ValueError, "eval_every must be >= 1"),
    (dict(preset="Quick"), ValueError, r"preset must be one of \('quick', 'full'\), got 'Quick'"),
    (dict(seed=-1), ValueError, r"seed must be in 0\.\."),
    (dict(seed=10**20), ValueError, r"seed must be in 0\.\."),
    (dict(layers=4), TypeError, "layers must be a sequence"),
    (dict(layers=[0]), ValueError, "layers must be >= 1"),
])
def test_compare_checks_options_before_loading_data(tmp_path, make_method, fake_data, kwargs, error, match):
    name = make_method()
    out = tmp_path / "out"
    with pytest.raises(error, match=match):
        compare.compare([name], progress=False, out=out, **kwargs)
    assert fake_data == []  # nothing loaded
    assert not out.exists()  # nothing created


def test_training_budget_checks_its_options(make_method):
    spec = registry.get_method(make_method())
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        compare.training_budget(spec, 600, epochs=-3)
    with pytest.raises(ValueError, match="eval_every must be >= 1"):
        compare.training_budget(spec, 600, eval_every=0)
    with pytest.raises(ValueError, match="preset must be one of"):
        compare.training_budget(spec, 600, preset="Quick")


def test_depth_below_a_methods_minimum_is_refused_up_front(tmp_path, make_method, capsys, fake_data):
    name = make_method()
    spec = registry._REGISTRY[name]
    deep = MethodSpec(name=name + "_deep", build=spec.build, description="x", min_depth=2)
    registry.register_method(deep)
    try:
        with pytest.raises(SystemExit) as info:
            run(tmp_path, "--methods", name, deep.name, "--layers", "1", "4")
        assert info.value.code == 2
        err = capsys.readouterr().err
        assert f"{deep.name} needs at least 2 weight layers (got 1)" in err
        assert fake_data == [] and not (tmp_path / "results.csv").exists()
    finally:
        registry._REGISTRY.pop(deep.name, None)
    for method in ("ff", "ff-collab", "reservoir"):  # no hidden layer, nothing to parameter-match
        assert registry.get_method(method).min_depth == 2
    with pytest.raises(ValueError, match="min_depth must be an int >= 1"):
        MethodSpec(name="x", build=spec.build, description="x", min_depth=0)


def test_incompatible_csv_is_refused_before_training(tmp_path, make_method, capsys, fake_data):
    name = make_method()
    csv_path = tmp_path / "results.csv"
    csv_path.write_text("method,depth,epoch\nbackprop,4,1.0\n")
    with pytest.raises(SystemExit) as info:
        run(tmp_path, "--methods", name, "--max-samples", "100")
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert str(csv_path) in err and ",".join(compare.CSV_COLUMNS) in err and "--overwrite" in err
    assert fake_data == []
    assert csv_path.read_text() == "method,depth,epoch\nbackprop,4,1.0\n"  # untouched
    with pytest.raises(ValueError, match="has the header 'method,depth,epoch'"):
        compare.compare([name], out=tmp_path, progress=False)
    with pytest.raises(ValueError, match="has the header"):
        compare.ResultsWriter(csv_path)
    # --overwrite replaces it
    assert run(tmp_path, "--methods", name, "--max-samples", "100", "--overwrite") == 0
    assert [int(r["samples_seen"]) for r in read_rows(tmp_path)] == [100]


def test_unusable_out_is_a_usage_error(tmp_path, make_method, capsys, fake_data):
    name = make_method()
    a_file = tmp_path / "file"
    a_file.write_text("x")
    (tmp_path / "d" / "results.csv").mkdir(parents=True)
    cases = [
        (a_file, "exists and is not a folder"),
        (a_file / "sub", "cannot create the output folder"),
        (tmp_path / "d", "results.csv exists but is not a regular file"),
        ("", "out must name a folder, got an empty path"),
    ]
    for out, words in cases:
        with pytest.raises(SystemExit) as info:
            compare.main(["--out", str(out), "--methods", name, "--device", "cpu", "--no-progress"])
        assert info.value.code == 2
        err = capsys.readouterr().err
        assert "bpalts-compare: error:" in err and words in err and str(out) in err
        assert "Traceback" not in err
    assert fake_data == []


def test_backend_that_cannot_run_is_refused_up_front(tmp_path, make_method, capsys, monkeypatch, fake_data):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    name = make_method()
    with pytest.raises(SystemExit) as info:
        run(tmp_path, "--methods", name, "--backend", "triton")
    assert info.value.code == 2
    assert "triton backend needs" in capsys.readouterr().err
    assert fake_data == [] and not (tmp_path / "results.csv").exists()
    with pytest.raises(ValueError, match="triton backend needs"):
        compare.compare([name], backend="triton", device="cpu", out=tmp_path / "api", progress=False)


def test_seed_out_of_range_is_an_argparse_error(tmp_path, make_method, capsys, fake_data):
    name = make_method()
    for seed in ("99999999999999999999", "-1", "1.5"):
        with pytest.raises(SystemExit) as info:
            run(tmp_path, "--methods", name, "--seed", seed)
        assert info.value.code == 2
        assert "argument --seed" in capsys.readouterr().err
    assert fake_data == []


def test_last_batch_of_one_sample_trains(tmp_path):
    # 65 samples in batches of 64 leave a last batch of one: the learners with batch
    # normalisation (the Hebbian ones) train through it. hebbian-wta and hebbian-pca at one
    # layer are a readout on the standardised image (no hidden layer).
    rc = run(tmp_path, "--methods", "softhebb", "hebbian-wta", "hebbian-pca", "--layers", "1",
             "--max-samples", "65", "--no-plots")
    assert rc == 0
    rows = read_rows(tmp_path)
    assert [(r["method"], int(r["samples_seen"])) for r in rows] == [
        ("softhebb", 65), ("hebbian-wta", 65), ("hebbian-pca", 65)]


_ROW = dict(method="m", depth=4, epoch=0.1, samples_seen=500, train_seconds=1.0,
           test_accuracy=0.5, backend="cpp", device="cpu")


@pytest.mark.parametrize("existing", [
    ",".join(compare.CSV_COLUMNS),  # a header without its newline
    ",".join(compare.CSV_COLUMNS) + "\nm,4,0.05,250,0.5,0.4,cpp,cpu",  # a last row without one
])
def test_results_writer_appends_after_a_file_without_a_final_newline(tmp_path, existing):
    # Appending glued the new row onto the last line (a broken header, or two rows merged).
    path = tmp_path / "results.csv"
    path.write_text(existing)
    n_before = existing.count("\n")
    with compare.ResultsWriter(path) as w:
        w.write(_ROW)
    df = plots.load_results(path, latest_only=False)
    assert len(df) == n_before + 1
    last = df.iloc[-1]
    assert (last["method"], last["samples_seen"], last["device"]) == ("m", 500, "cpu")
