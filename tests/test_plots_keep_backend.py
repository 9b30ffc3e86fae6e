"""jaxatom's PNG writers leave matplotlib's backend alone: a notebook's inline backend keeps showing figures after
``Evaluation.plot_parity``, an ensemble's calibration plot or an active-learning report (they used to switch the
whole process to Agg, after which ``plt.show()`` in a notebook showed nothing)."""

import matplotlib
import pytest

from jaxatom.data import load_builtin
from jaxatom.learn.report import plot_report
from jaxatom.train.calibration import plot_calibration
from jaxatom.train.evaluation import plot_parity


@pytest.fixture
def svg_backend():
    before = matplotlib.get_backend()
    matplotlib.use("svg")  # a non-interactive backend that is not Agg, standing in for a notebook's inline one
    yield
    matplotlib.use(before)


def test_plot_writers_keep_the_backend(svg_backend, tmp_path):
    ethanol = load_builtin("ethanol").subset(range(3))
    predictions = {name: ethanol.properties[name] * 1.01 for name in ("energy", "forces")}
    assert plot_parity(predictions, ethanol, tmp_path / "parity.png").stat().st_size > 0
    rows = [{"output": "forces", "predicted_rms": p, "observed_rms": 1.1 * p, "count": 10} for p in (0.1, 0.2, 0.4)]
    assert plot_calibration(rows, tmp_path / "calibration.png").stat().st_size > 0
    columns = ("test_forces_mae_eV_per_A", "test_forces_rmse_eV_per_A", "visited_uncertainty_mean",
               "visited_uncertainty_max", "selected_uncertainty_mean")  # fmt: skip
    plot_report([{"labels": n, **dict.fromkeys(columns, 0.1 / n)} for n in (10, 20)], tmp_path / "report.png")
    assert (tmp_path / "report.png").stat().st_size > 0
    assert matplotlib.get_backend() == "svg"
