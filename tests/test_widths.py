import pytest

from bpalts.learners import hidden_sizes, layer_sizes


def test_design_examples():
    assert layer_sizes(4) == [784, 861, 645, 484, 10]
    twelve = layer_sizes(12)
    assert twelve[:3] == [784, 519, 390] and twelve[-2:] == [29, 10]
    assert len(twelve) == 13


@pytest.mark.parametrize("n_layers", [2, 3, 4, 5, 7, 10, 12])
def test_widths_decrease_and_sum_to_total(n_layers):
    h = hidden_sizes(n_layers)
    assert len(h) == n_layers - 1
    assert all(a >= b for a, b in zip(h, h[1:]))
    assert min(h) >= 1
    assert abs(sum(h) - 1990) <= 2  # rounding each width


def test_bad_depths():
    assert hidden_sizes(1) == []
    with pytest.raises(ValueError, match="n_layers must be >= 1"):
        hidden_sizes(0)
    with pytest.raises(TypeError, match="n_layers must be an int"):
        hidden_sizes(4.0)
