"""Time-series forecasting: read ``seq_len`` past values, predict the next ``horizon`` ones.

Series (``task.series``):

* ``seattle_temps`` (default): hourly Seattle temperatures labelled 2010 (°F, 8,759 points) from
  the PyPI package ``vega_datasets`` (bundled with it, no download). Daily season: 24. The series
  behaves as climate normals (the value 24 hours back is within 0.16 °F on average), so the
  seasonal-naive forecast is hard to beat.
* ``mackey_glass``: the Mackey–Glass delay equation
  dx/dt = β x(t−τ) / (1 + x(t−τ)^n) − γ x(t), β=0.2, γ=0.1, n=10, integrated with RK4 at
  dt=0.1 from x=1.2 (constant history), sampled every time unit after a washout of 1,000 time
  units; ``task.length`` points (10,000 by default). ``task.tau`` (17 by default: chaotic) is
  the long-range knob: x(t) depends on x(t−τ), and the series' autocorrelation at lag τ is
  strongly negative.
* ``/path/to/file.csv`` with ``task.column=<name>``: any numeric column (no NaNs).

The series is split chronologically 70/15/15 into train/val/test; windows (``seq_len`` inputs,
then ``horizon`` targets) lie entirely inside one part, so no target index is in two splits.
Values are standardised with the mean and standard deviation (unbiased) of the TRAINING part
only. The loss (MSE) and the metrics ``mse`` and ``mae`` (torchmetrics) are all on this
normalised scale, so they compare across series: predicting the training mean scores about 1.

Baselines, on the test windows and the same normalised scale: persistence (every target
equals the last input value: ``mse``, ``mae``) and seasonal-naive (target at time i equals the
value one season earlier, i − s·ceil(k/s) for horizon step k, so it never looks past the
window's end: ``seasonal_mse``, ``seasonal_mae``). ``task.season`` null picks 24 for the
Seattle temperatures and, for the other series, the lag of the first autocorrelation peak of
the training part after the autocorrelation first turns negative (Mackey–Glass τ=17: 49, its
quasi-period); without such a peak (no recurring pattern) the seasonal baseline is skipped,
as it is with ``task.season=0``.
"""

from __future__ import annotations

import csv
import math
from functools import lru_cache
from pathlib import Path

import torch
from torch import Tensor

from rnnlab import figures
from rnnlab.config import integer, non_negative_int, optional, positive_int, real, require
from rnnlab.tasks.base import RegressionTask, Task

SPLITS = ("train", "val", "test")
FRACTIONS = (0.7, 0.15, 0.15)
MG_BETA, MG_GAMMA, MG_N, MG_X0, MG_DT, MG_WASHOUT = 0.2, 0.1, 10, 1.2, 0.1, 1000
SEATTLE_SEASON = 24
PLOT_POINTS = 500  # test windows drawn in the actual-vs-predicted plot (the CSV has them all)


@lru_cache(maxsize=8)
def _mackey_glass(tau: float, length: int) -> tuple[float, ...]:
    delay = round(tau / MG_DT)
    every = round(1 / MG_DT)
    b, g, p, dt = MG_BETA, MG_GAMMA, MG_N, MG_DT

    def f(x, xd):
        return b * xd / (1 + xd ** p) - g * x

    # ring[i] holds x(t - tau) at the start of a step; ring[i+1] is x(t - tau + dt).
    ring = [MG_X0] * (delay + 1)
    i, x, out = 0, MG_X0, []
    for step in range((MG_WASHOUT + length) * every):
        xd0, xd1 = ring[i], ring[(i + 1) % (delay + 1)]
        xdm = 0.5 * (xd0 + xd1)  # x(t - tau + dt/2), interpolated
        k1 = f(x, xd0)
        k2 = f(x + 0.5 * dt * k1, xdm)
        k3 = f(x + 0.5 * dt * k2, xdm)
        k4 = f(x + dt * k3, xd1)
        x += dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        ring[i] = x
        i = (i + 1) % (delay + 1)
        if (step + 1) % every == 0:
            out.append(x)
    return tuple(out[MG_WASHOUT:])


def mackey_glass(tau: float = 17, length: int = 10_000) -> Tensor:
    """``length`` samples (one per time unit, after the washout) of the Mackey–Glass series."""
    return torch.tensor(_mackey_glass(float(tau), int(length)), dtype=torch.float64)


def seattle_temps() -> tuple[Tensor, list[str]]:
    from vega_datasets import local_data

    df = local_data.seattle_temps().sort_values("date")
    return (torch.tensor(df["temp"].to_numpy(), dtype=torch.float64),
            [str(d) for d in df["date"]])


def read_column(path_str: str, column: str | None) -> tuple[Tensor, str]:
    import pandas as pd

    path = Path(path_str).expanduser()
    Task.check("task.series", path_str, path.is_file(),
               "must be seattle_temps, mackey_glass or the path of an existing CSV file")
    try:
        df = pd.read_csv(path, skip_blank_lines=False)  # a blank line is a missing value
    except Exception as e:  # noqa: BLE001 - any parse failure is a bad file
        Task.check("task.series", path_str, False, f"is not a readable CSV ({type(e).__name__}: {e})")
    available = ", ".join(map(str, df.columns)) or "(none)"
    if column is None:
        numeric = [c for c in df.columns if pd.api.types.is_numeric_dtype(df[c])]
        Task.check("task.column", column, len(numeric) == 1,
                   f"must name the column of {path_str} to forecast; available: {available}")
        column = numeric[0]
    Task.check("task.column", column, column in df.columns,
               f"is not a column of {path_str}; available: {available}")
    values = pd.to_numeric(df[column], errors="coerce").astype("float64")
    bad = ~values.apply(math.isfinite)
    if bad.any():
        rows = [int(r) for r in df.index[bad.to_numpy()][:10]]
        more = " ..." if bad.sum() > len(rows) else ""
        Task.check("task.column", column, False,
                   f"column of {path_str} has {int(bad.sum())} NaN/missing/non-numeric value(s) "
                   f"of {len(values)}, at data rows {rows}{more} (0-based, header excluded); "
                   "fill or drop them first")
    return torch.tensor(values.to_numpy(), dtype=torch.float64), str(column)


def estimate_season(z: Tensor, max_lag: int) -> int | None:
    """Lag of the first autocorrelation peak after the autocorrelation first turns negative."""
    n = len(z)
    max_lag = min(max_lag, n - 2)
    if max_lag < 3:
        return None
    c = z - z.mean()
    spec = torch.fft.rfft(c, n=2 * n)
    acf = torch.fft.irfft(spec.abs() ** 2, n=2 * n)[: max_lag + 2]
    acf = acf / acf[0]
    neg = (acf < 0).nonzero()
    if len(neg) == 0:
        return None
    mid = acf[1:-1]  # lags 1..max_lag, each compared with its neighbours
    lags = ((mid > acf[:-2]) & (mid >= acf[2:]) & (mid > 0)).nonzero().squeeze(1) + 1
    lags = lags[lags > int(neg[0])]
    return int(lags[0]) if len(lags) else None


class Forecast(RegressionTask):
    name = "forecast"
    input_kind = "real"
    main_metric = "val/mse"
    mode = "min"
    readout = "last"
    input_size = 1
    length_label = "lookback seq_len"
    only_for = {"task.tau": ("task.series", "mackey_glass"), "task.length": ("task.series", "mackey_glass")}
    report_data = "data/forecast_test.csv"  # actual and predicted values of the best run

    def __init__(self, seq_len: int, batch_size: int, seed: int, series: str = "seattle_temps",
                 column: str | None = None, horizon: int = 1, season: int | None = None,
                 tau: float = 17, length: int = 10_000):
        super().__init__(seq_len, batch_size, seed)
        require("task.horizon", horizon, positive_int, "must be an integer >= 1")
        require("task.season", season, optional(non_negative_int),
                "must be null (automatic), 0 (no seasonal baseline) or an integer > 0")
        self.series_name, self.horizon, self.output_size = str(series), horizon, horizon
        self.times: list[str] | None = None
        if series == "seattle_temps":
            raw, self.times = seattle_temps()
        elif series == "mackey_glass":
            require("task.tau", tau, lambda v: real(v) and MG_DT <= v <= 1000,
                    f"must be a number in [{MG_DT}, 1000] (time units)")
            require("task.length", length, lambda v: integer(v) and 100 <= v <= 10_000_000,
                    "must be an integer in [100, 10000000]")
            raw = mackey_glass(tau, length)
        else:
            raw, column = read_column(self.series_name, column)
        self.tau = tau if series == "mackey_glass" else None
        self.column = column
        self.raw = raw

        n = len(raw)
        n_train, n_val = int(FRACTIONS[0] * n), int(FRACTIONS[1] * n)
        self.bounds = {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, n)}
        smallest = min(SPLITS, key=lambda s: self.bounds[s][1] - self.bounds[s][0])
        room = self.bounds[smallest][1] - self.bounds[smallest][0]
        self.check("task.series", self.series_name, room >= 1 + horizon,
                   f"has only {n} points; its {smallest} split ({room} points) cannot hold even one "
                   f"window of 1 input and {horizon} target(s)")
        self.check("seq_len", seq_len, seq_len + horizon <= room,
                   f"must be <= {room - horizon}: a window of seq_len inputs and horizon={horizon} "
                   f"target(s) must fit in the {smallest} split ({room} of the series' {n} points)")

        train = raw[:n_train]
        self.mean, self.std = float(train.mean()), float(train.std())
        self.check("task.series", self.series_name, self.std > 0,
                   "is constant over its training part; nothing to forecast (cannot normalise)")
        self.z = ((raw - self.mean) / self.std).float()
        self.fields = {s: self.windows(s) for s in SPLITS}
        self.check("batch_size", batch_size, batch_size <= len(self.fields["train"]["x"]),
                   f"must be <= {len(self.fields['train']['x'])}, the number of training windows")

        if season is None:
            season = SEATTLE_SEASON if series == "seattle_temps" else \
                estimate_season(self.z[:n_train].double(), max_lag=n_train // 2)
        self.check("task.season", season, not season or season < n_train,
                   f"must be < {n_train}, the length of the training part")
        self.season = season or None

    # -- data ---------------------------------------------------------------------------
    def windows(self, split: str) -> dict[str, Tensor]:
        """All windows inside ``split``: x (N, seq_len, 1) inputs, y (N, horizon) targets."""
        lo, hi = self.bounds[split]
        w = self.z[lo:hi].unfold(0, self.seq_len + self.horizon, 1)
        return {"x": w[:, : self.seq_len].unsqueeze(-1), "y": w[:, self.seq_len:]}

    def target_index(self, split: str) -> Tensor:
        """(N, horizon) positions in the whole series of each window's targets."""
        lo, _ = self.bounds[split]
        n = len(self.fields[split]["y"])
        return lo + self.seq_len + torch.arange(n).unsqueeze(1) + torch.arange(self.horizon)

    # -- objective and metrics ------------------------------------------------------------
    def baselines(self, split: str = "test"):
        """Persistence and seasonal-naive on the windows of ``split`` (normalised scale)."""
        t = self.fields[split]
        y = t["y"].double()
        err = y - t["x"][:, -1].double()  # persistence: the last input, for every step
        out = {"mse": float(err.pow(2).mean()), "mae": float(err.abs().mean())}
        if self.season:
            s = self.season
            k = torch.arange(1, self.horizon + 1)
            lag = s * torch.ceil(k / s).long()  # one season back, or more if the horizon exceeds it
            err = y - self.z.double()[self.target_index(split) - lag]
            out.update(seasonal_mse=float(err.pow(2).mean()), seasonal_mae=float(err.abs().mean()))
        return out

    def describe(self):
        n = {s: hi - lo for s, (lo, hi) in self.bounds.items()}
        return {
            "data/series": self.series_name, "data/n_points": len(self.raw),
            **{f"data/n_{s}_points": n[s] for s in SPLITS},
            **{f"data/n_{s}_windows": len(self.fields[s]["y"]) for s in SPLITS},
            "data/train_mean": round(self.mean, 6), "data/train_std": round(self.std, 6),
            "data/horizon": self.horizon, "data/season": self.season,
            **({"data/tau": self.tau} if self.tau is not None else {}),
        }

    # -- artifacts ------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, model, split: str = "test") -> Tensor:
        """The model's (N, horizon) predictions on every window of ``split`` (normalised)."""
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        fields = self.fields[split]
        try:
            outs = []
            for lo in range(0, len(fields["x"]), max(self.batch_size, 256)):
                batch = {k: v[lo:lo + max(self.batch_size, 256)].to(device) for k, v in fields.items()}
                out, _ = model(batch)
                outs.append(out.float().cpu())
            return torch.cat(outs)
        finally:
            model.train(was_training)

    def log_artifacts(self, model, stage, out_dir):
        """Actual vs predicted on the test split: a CSV of every window, a plot of the first."""
        if stage != "test":
            return []
        pred = self.predict(model, "test") * self.std + self.mean
        actual = self.fields["test"]["y"].double() * self.std + self.mean
        idx = self.target_index("test")
        H = self.horizon
        csv_path = Path(out_dir) / "forecast_test.csv"
        with csv_path.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["index", *(["time"] if self.times else []),
                        *[c for k in range(1, H + 1) for c in (f"actual_t+{k}", f"predicted_t+{k}")]])
            for i in range(len(idx)):
                first = int(idx[i, 0])
                w.writerow([first, *([self.times[first]] if self.times else []),
                            *[f"{v:.6g}" for k in range(H) for v in (float(actual[i, k]), float(pred[i, k]))]])
        plt = figures.pyplot()
        m = min(PLOT_POINTS, len(idx))
        fig, ax = plt.subplots(figsize=(9, 3.5))
        ax.plot(idx[:m, 0].numpy(), actual[:m, 0].numpy(), color="black", lw=1.2, label="actual")
        ax.plot(idx[:m, 0].numpy(), pred[:m, 0].numpy(), color="tab:orange", lw=1, label="predicted t+1")
        if H > 1:
            ax.plot(idx[:m, H - 1].numpy(), pred[:m, H - 1].numpy(), color="tab:blue", lw=1, alpha=0.8,
                    label=f"predicted t+{H}")
        unit = "temperature (°F)" if self.series_name == "seattle_temps" else self.column or self.series_name
        ax.set(xlabel="position in series (test split)", ylabel=unit,
               title=f"{model.run_label}: test forecast (first {m} windows)")
        ax.legend(loc="best", fontsize=8)
        ax.grid(alpha=0.3)
        return [str(csv_path), figures.save(fig, Path(out_dir) / "forecast_test.png")]
