"""task=forecast: windows, chronological splits, train-only normalisation, baselines, knobs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rnnlab.config import ConfigError
from rnnlab.tasks.forecast import Forecast, mackey_glass

T = 48


@pytest.fixture(scope="module")
def seattle():
    return Forecast(seq_len=T, batch_size=32, seed=0, horizon=3)


@pytest.fixture(scope="module")
def seattle_raw():
    from vega_datasets import local_data

    return local_data.seattle_temps().sort_values("date")["temp"].to_numpy()


def test_windows_shapes_dtypes_and_contents(seattle):
    batch = next(iter(seattle.train_dataloader()))
    assert set(batch) == {"x", "y"}
    assert batch["x"].shape == (32, T, 1) and batch["x"].dtype == torch.float32
    assert batch["y"].shape == (32, 3) and batch["y"].dtype == torch.float32
    assert seattle.input_kind == "real" and seattle.input_size == 1 and seattle.output_size == 3
    assert seattle.readout == "last" and seattle.main_metric == "val/mse" and seattle.mode == "min"
    z = seattle.z
    for split in ("train", "val", "test"):
        lo, hi = seattle.bounds[split]
        f = seattle.fields[split]
        assert len(f["x"]) == hi - lo - T - 3 + 1  # every window inside the split
        for j in (0, len(f["x"]) - 1):
            assert torch.equal(f["x"][j, :, 0], z[lo + j:lo + j + T])
            assert torch.equal(f["y"][j], z[lo + j + T:lo + j + T + 3])


def test_splits_are_chronological_70_15_15_without_shared_targets(seattle):
    n = len(seattle.raw)
    assert n == 8759
    b = seattle.bounds
    assert b["train"] == (0, int(0.7 * n)) and b["val"][0] == b["train"][1] and b["test"] == (b["val"][1], n)
    assert b["val"][1] - b["val"][0] == int(0.15 * n)
    idx = {s: seattle.target_index(s) for s in b}
    assert idx["train"].max() < idx["val"].min() and idx["val"].max() < idx["test"].min()
    for s, (lo, hi) in b.items():  # inputs and targets both stay inside their split
        assert idx[s].min() == lo + T and idx[s].max() == hi - 1


def test_normalisation_uses_the_training_part_only(tmp_path):
    rng = np.random.default_rng(0)
    values = np.cumsum(rng.normal(size=1000)) + 50
    path = tmp_path / "series.csv"
    path.write_text("t,value\n" + "".join(f"{i},{v:.17g}\n" for i, v in enumerate(values)))
    task = Forecast(seq_len=20, batch_size=8, seed=0, series=str(path), column="value")
    assert task.mean == pytest.approx(values[:700].mean()) and task.std == pytest.approx(values[:700].std(ddof=1))
    assert float(task.z[:700].mean()) == pytest.approx(0, abs=1e-5)
    changed = values.copy()
    changed[700:] = changed[700:] * 10 + 1000  # val and test parts only
    path.write_text("t,value\n" + "".join(f"{i},{v:.17g}\n" for i, v in enumerate(changed)))
    other = Forecast(seq_len=20, batch_size=8, seed=0, series=str(path), column="value")
    assert (other.mean, other.std) == (task.mean, task.std)
    assert torch.equal(other.fields["train"]["x"], task.fields["train"]["x"])
    assert not torch.equal(other.fields["test"]["y"], task.fields["test"]["y"])


def _acf(x: np.ndarray, lag: int) -> float:
    z = (x - x.mean()) / x.std()
    return float(np.mean(z[:-lag] * z[lag:]))


def test_mackey_glass_tau_moves_the_dependency():
    a, b = mackey_glass(tau=17, length=3000).numpy(), mackey_glass(tau=30, length=3000).numpy()
    assert a.shape == b.shape == (3000,) and not np.allclose(a, b)
    assert 0.2 < a.min() and a.max() < 1.5 and a.std() > 0.1  # bounded, oscillating, not settled
    # x(t) is driven by x(t - tau): strongly anti-correlated at lag tau, for either tau
    assert _acf(a, 17) < -0.3 and _acf(b, 30) < -0.3
    # each series obeys the delay equation with its own tau, and not with the other one
    for x, tau, wrong in ((a, 17, 30), (b, 30, 17)):
        dx = (x[2:] - x[:-2]) / 2  # central difference at t = 1..n-2

        def residual(d, x=x, dx=dx):
            t = np.arange(d, len(x) - 1)
            f = 0.2 * x[t - d] / (1 + x[t - d] ** 10) - 0.1 * x[t]
            return np.sqrt(np.mean((dx[t - 1] - f) ** 2))

        assert residual(tau) < 0.002 < 0.03 < residual(wrong)
    # the quasi-period (first autocorrelation peak, the automatic season) grows with tau
    ta = Forecast(seq_len=T, batch_size=32, seed=0, series="mackey_glass", tau=17, length=3000)
    tb = Forecast(seq_len=T, batch_size=32, seed=0, series="mackey_glass", tau=30, length=3000)
    assert 40 <= ta.season <= 60 and tb.season > ta.season + 20
    assert ta.describe()["data/tau"] == 17 and len(ta.raw) == 3000
    assert torch.equal(mackey_glass(tau=17, length=3000), mackey_glass(tau=17, length=3000))  # deterministic


def test_baselines_match_a_direct_computation(seattle_raw):
    train = seattle_raw[:int(0.7 * len(seattle_raw))]
    z = (seattle_raw - train.mean()) / train.std(ddof=1)
    lo = int(0.7 * len(z)) + int(0.15 * len(z))
    for H in (1, 3):
        task = Forecast(seq_len=T, batch_size=32, seed=0, horizon=H)
        sq, ab, ssq, sab = [], [], [], []
        for t in range(lo + T - 1, len(z) - H):  # t: last input of a test window
            for k in range(1, H + 1):
                sq.append((z[t + k] - z[t]) ** 2)
                ab.append(abs(z[t + k] - z[t]))
                ssq.append((z[t + k] - z[t + k - 24]) ** 2)
                sab.append(abs(z[t + k] - z[t + k - 24]))
        b = task.baselines()
        assert b["mse"] == pytest.approx(np.mean(sq), rel=1e-5)
        assert b["mae"] == pytest.approx(np.mean(ab), rel=1e-5)
        assert b["seasonal_mse"] == pytest.approx(np.mean(ssq), rel=1e-5)
        assert b["seasonal_mae"] == pytest.approx(np.mean(sab), rel=1e-5)
    assert task.season == 24


def _error(**kwargs) -> ConfigError:
    with pytest.raises(ConfigError) as e:
        Forecast(**{"seq_len": T, "batch_size": 32, "seed": 0, **kwargs})
    return e.value


def test_bad_inputs_raise_config_errors_naming_the_key(tmp_path):
    e = _error(seq_len=1313)  # the val split has 1313 points: 1312 inputs + 1 target at most
    assert e.key == "seq_len" and "<= 1312" in e.valid
    e = _error(seq_len=1310, horizon=5)
    assert e.key == "seq_len" and "<= 1308" in e.valid
    Forecast(seq_len=1312, batch_size=32, seed=0)  # the limit itself fits
    assert _error(horizon=0).key == "task.horizon"
    assert _error(series=str(tmp_path / "missing.csv")).key == "task.series"
    path = tmp_path / "s.csv"
    path.write_text("when,load,temp\n" + "".join(f"{i},{i % 7},{math.sin(i)}\n" for i in range(400)))
    e = _error(seq_len=10, series=str(path), column="price")
    assert e.key == "task.column" and "when, load, temp" in e.valid
    e = _error(seq_len=10, series=str(path))  # several numeric columns: must choose
    assert e.key == "task.column" and "load" in e.valid
    holes = tmp_path / "holes.csv"
    holes.write_text("v\n" + "".join(("" if i in (3, 250) else f"{i % 5}") + "\n" for i in range(400)))
    e = _error(seq_len=10, series=str(holes), column="v")
    assert e.key == "task.column" and "2 NaN" in e.valid and "[3, 250]" in e.valid
    short = tmp_path / "short.csv"
    short.write_text("v\n" + "".join(f"{i % 3}\n" for i in range(8)))
    assert _error(seq_len=1, series=str(short)).key == "task.series"


@pytest.mark.slow
def test_end_to_end_forecast_run(store):
    store.train("task=forecast", "task.horizon=2")
    run = store.only_run("forecast")
    assert run.info.status == "FINISHED"
    m = run.data.metrics
    for key in ["train/loss", "val/mse", "val/mae", "test/mse", "test/mae", "baseline/mse", "baseline/mae",
                "baseline/seasonal_mse", "baseline/seasonal_mae"]:
        assert key in m, f"{key} not logged; have {sorted(m)}"
    assert run.data.params["data/season"] == "24"
    plots = {a.path for a in store.client.list_artifacts(run.info.run_id, "plots")}
    data = {a.path for a in store.client.list_artifacts(run.info.run_id, "data")}
    assert "plots/forecast_test.png" in plots and "data/forecast_test.csv" in data
    csv_file = store.client.download_artifacts(run.info.run_id, "data/forecast_test.csv")
    lines = open(csv_file).read().splitlines()
    assert lines[0] == "index,time,actual_t+1,predicted_t+1,actual_t+2,predicted_t+2"
    assert len(lines) == 1 + 1315 - 20 - 2 + 1  # every test window (TINY seq_len=20)


def test_config_error_fails_before_any_mlflow_run(store):
    with pytest.raises(ConfigError) as caught:
        store.train_in_process("task=forecast", "seq_len=5000")
    assert "seq_len" in str(caught.value) and "1312" in str(caught.value)
    assert store.runs() == []
