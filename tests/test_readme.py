"""The README's quick-start commands and CI stay in step."""
from pathlib import Path
import re

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands():
    text = (ROOT / "README.md").read_text()
    quick = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.*?)\n```", quick, flags=re.S)


def test_quick_start_has_two_commands():
    cmds = _readme_commands()
    assert len(cmds) == 2
    assert "bpalts-compare" in cmds[0]
    assert "pytest" in cmds[1] and ".[test]" in cmds[1]


def test_ci_runs_the_readme_test_command_verbatim():
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert _readme_commands()[1] in ci_lines


def _python_api_blocks():
    text = (ROOT / "README.md").read_text()
    section = text.split("## Python API", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)\n```", section, flags=re.S)


def test_python_api_examples_run_and_do_what_they_say(monkeypatch):
    """The README's Python examples run as written (MNIST from the cache, fetched if needed),
    and their results are what the text around them says."""
    import torch

    import bpalts.ops

    learner_block, ops_block = _python_api_blocks()

    ns: dict = {"print": lambda *a, **k: None}
    exec(compile(learner_block, "README.md (Python API, learner)", "exec"), ns)
    assert set(ns["metrics"]) >= {"energy", "output_error"}
    assert 0.85 < ns["accuracy"] <= 1.0  # "about 0.91" in the text

    real_update, seen = bpalts.ops.hebbian_update, {}

    def recording_update(W, *args, **kwargs):  # "W updated in place (returned too)"
        before = W.clone()
        out = real_update(W, *args, **kwargs)
        seen.update(same=out is W, changed=bool((W != before).any()))
        return out

    monkeypatch.setattr(bpalts.ops, "hebbian_update", recording_update)
    ns = {"print": lambda *a, **k: None}
    exec(compile(ops_block, "README.md (Python API, ops)", "exec"), ns)
    assert seen == {"same": True, "changed": True}
    assert ns["W"].shape == (1024, 784) and torch.isfinite(ns["W"]).all()
    res = ns["res"]
    assert [tuple(s.shape) for s in res.states] == [(256, 500), (256, 10)]
    assert res.energy.shape == (20,) and res.energy[-1] < res.energy[0]
    assert tuple(ns["u"].shape) == (28, 8, 28)
    assert tuple(ns["last"].shape) == (1, 8, 500) and torch.isfinite(ns["last"]).all()
