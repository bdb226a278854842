"""count_params: closed form vs. the numbers in the notes vs. real nn modules."""

from __future__ import annotations

import pytest

from rnnlab.cells import SPECS
from rnnlab.cells.factory import build
from rnnlab.cells.params import count_params, forward_flops, main, train_step_flops

# The cells PyTorch fuses store two bias vectors per gate block; the "single" layout drops one.
FUSED = [name for name, s in SPECS.items() if s.torch_fused]


@pytest.mark.parametrize(
    "cell,single,pytorch",
    [("rnn", 54_912, 55_040), ("gru", 164_736, 165_120), ("lstm", 219_648, 220_160)],
)
def test_counts_for_input_300_hidden_128(cell, single, pytorch):
    assert count_params(cell, 300, 128, bias="single") == single
    assert count_params(cell, 300, 128, bias="pytorch") == pytorch
    assert count_params(cell, 300, 128) == pytorch  # the default layout is PyTorch's


@pytest.mark.parametrize("cell", FUSED)
@pytest.mark.parametrize(
    "input_size,hidden_size,num_layers",
    [(300, 128, 1), (1, 1, 1), (5, 7, 2), (64, 32, 3), (10, 200, 2)],
)
def test_both_bias_layouts_count_a_fused_module(cell, input_size, hidden_size, num_layers):
    module = SPECS[cell].cls("fused")(input_size, hidden_size, num_layers=num_layers)
    params = dict(module.named_parameters())
    pytorch = sum(p.numel() for p in params.values())
    # single layout: the same module with one bias vector (bias_hh) removed from every layer
    single = sum(p.numel() for name, p in params.items() if not name.startswith("bias_hh"))
    assert count_params(cell, input_size, hidden_size, num_layers, bias="pytorch") == pytorch
    assert count_params(cell, input_size, hidden_size, num_layers, bias="single") == single
    assert pytorch - single == SPECS[cell].gate_blocks * hidden_size * num_layers


def test_rejects_unknown_cell_and_layout():
    with pytest.raises(ValueError):
        count_params("transformer", 3, 4)
    with pytest.raises(ValueError):
        count_params("lstm", 3, 4, bias="none")


def test_cli_prints_table(capsys):
    main(["--input-size", "300", "--hidden-size", "128"])
    out = capsys.readouterr().out
    for number in ("54,912", "55,040", "164,736", "165,120", "219,648", "220,160"):
        assert number in out
    lines = {line.split()[0]: line for line in out.splitlines() if line.split()}
    assert "219,648" in lines["lstm"] and "220,160" in lines["lstm"]
    assert "54,912" in lines["rnn"] and "164,736" in lines["gru"]


# -- matmul FLOPs ---------------------------------------------------------------------------
@pytest.mark.parametrize("cell", list(SPECS))
@pytest.mark.parametrize("num_layers", [1, 3])
def test_recurrence_flops_are_two_per_weight_entry_per_row(cell, num_layers):
    """Each time step multiplies B rows by every weight matrix of the stack (input, recurrent,
    the LRU's B, C, D and W): 2 FLOPs per entry per row. Counted on the built module, so the
    spec's closed form is held to the cell's real matrices."""
    B, T, E, H = 3, 5, 7, 11
    f = forward_flops(cell, B, T, H, E, 9, 4, "tokens", "seq", num_layers)
    weights = sum(p.numel() for p in build(cell, E, H, num_layers).parameters() if p.dim() >= 2)
    assert f["recurrence"] == 2 * B * T * weights


def test_encoder_head_and_training_step_by_hand():
    # B=2, T=3, E=5, H=4, 6 real inputs -> linear encoder; one output per sequence (G=4 LSTM).
    f = forward_flops("lstm", 2, 3, 4, 5, 6, 1, "real", "last")
    assert f["encoder"] == 2 * 2 * 3 * 6 * 5  # 360
    assert f["recurrence"] == 2 * 2 * 3 * 4 * 4 * (5 + 4)  # 1728
    assert f["head"] == 2 * 2 * 4 * 1  # 16
    assert f["forward"] == 360 + 1728 + 16
    assert train_step_flops("lstm", 2, 3, 4, 5, 6, 1, "real", "last") == 3 * f["forward"]
    tokens = forward_flops("lstm", 2, 3, 4, 5, 6, 7)  # an embedding lookup costs no matmul
    assert tokens["encoder"] == 0 and tokens["head"] == 2 * 2 * 3 * 4 * 7


def test_flops_reject_unknown_cell():
    with pytest.raises(ValueError, match="unknown cell"):
        forward_flops("transformer", 1, 1, 1, 1, 1, 1)


@pytest.mark.parametrize("task,budget", [("adding", 50_000), ("char_lm", 50_000),
                                         ("sentiment", 1_000_000)])  # its embedding alone is ~640k
def test_param_budget_gives_every_cell_the_same_size_within_2_percent(task, budget):
    """model.param_budget picks each cell's hidden size: every built model (counted by torch,
    not by the formula) is within 2% of the budget, and among the fused cells more gate blocks
    leave less width (RNN 1, GRU 3, LSTM 4)."""
    from conftest import compose
    from rnnlab.run import _apply_param_budget, build_model, build_task

    hidden = {}
    for cell in SPECS:
        cfg = compose(f"task={task}", f"cell={cell}", f"model.param_budget={budget}", "seq_len=20")
        built = build_task(cfg)
        _apply_param_budget(cfg, built)
        n = sum(p.numel() for p in build_model(cfg, built, "x").parameters())
        assert abs(n - budget) <= 0.02 * budget, (cell, cfg.cell.hidden_size, n)
        hidden[cell] = cfg.cell.hidden_size
    by_gates = sorted(FUSED, key=lambda c: SPECS[c].gate_blocks or 0)
    widths = [hidden[c] for c in by_gates]
    assert widths == sorted(widths, reverse=True) and len(set(widths)) == len(widths), hidden


def test_an_impossible_param_budget_is_a_config_error():
    from conftest import compose
    from rnnlab.config import ConfigError
    from rnnlab.run import _apply_param_budget, build_task

    cfg = compose("task=char_lm", "model.param_budget=10", "seq_len=20")
    with pytest.raises(ConfigError, match="model.param_budget=10: no hidden size gives 10 parameters"):
        _apply_param_budget(cfg, build_task(cfg))
