"""Plots a scientist would publish: titled with the model and data, panel titles with units and errors, no offset
text on any axis (energies relative to a stated reference), log-scale error histograms, target temperatures drawn,
legends placed. Checked on the matplotlib objects, not on pixels."""

from __future__ import annotations

import numpy as np
import pytest

from jaxatom.data.dataset import Dataset
from jaxatom.learn.report import report_figure
from jaxatom.md.analysis import energies_figure, temperature_figure
from jaxatom.plotting import offset_texts
from jaxatom.spectra import Spectrum
from jaxatom.spectra.export import spectra_figure
from jaxatom.train.calibration import calibration_figure
from jaxatom.train.evaluation import parity_figure, plot_parity
from jaxatom.vibrations.report import broaden, sticks_figure


@pytest.fixture(scope="module")
def aspirin_like():
    """21-atom structures with energies near −1077 eV (where matplotlib would print an offset) and predictions with
    known errors: energy 10 meV, forces 50 meV/Å with a few large outliers."""
    rng = np.random.default_rng(0)
    n_structures, n_atoms = 40, 21
    energy = -1077.17 + rng.normal(0, 0.05, n_structures)
    forces = rng.normal(0, 1.0, (n_structures, n_atoms, 3))
    positions = rng.normal(0, 2.0, (n_structures, n_atoms, 3))
    units = {"energy": "eV", "forces": "eV/Ang"}
    dataset = Dataset.from_arrays(np.full(n_atoms, 6), positions, {"energy": energy, "forces": forces}, units)
    force_error = rng.normal(0, 0.05, forces.shape)
    force_error.flat[:5] = 1.5  # the tail a log histogram must show
    predictions = {"energy": energy + rng.normal(0, 0.01, n_structures),
                   "forces": (forces + force_error).reshape(-1, 3)}  # fmt: skip
    return dataset, predictions


def test_parity_panels_state_rmse_and_unit_without_offsets(aspirin_like, tmp_path):
    dataset, predictions = aspirin_like
    figure = parity_figure(predictions, dataset, title="PaiNN on aspirin (GFN2-xTB)")
    energy, forces, histogram = figure.axes
    assert figure.get_suptitle() == "PaiNN on aspirin (GFN2-xTB)"
    assert "RMSE" in energy.get_title() and "meV" in energy.get_title()
    assert "RMSE" in forces.get_title() and "meV/Å" in forces.get_title()
    assert energy.get_xlabel() == "reference E − E₀ (eV)" and "− -" not in energy.get_xlabel()
    assert any("E₀ = -1077" in text.get_text() for text in energy.texts)  # the reference is stated
    rmse = np.sqrt(np.mean((predictions["energy"] - dataset.properties["energy"]) ** 2))
    assert f"{1000 * rmse:.3g} meV" in energy.get_title()
    assert histogram.get_yscale() == "log" and "error" in histogram.get_xlabel()
    assert offset_texts(figure) == []
    assert plot_parity(predictions, dataset, tmp_path / "parity.png").stat().st_size > 0  # title optional


def test_md_plots_relative_to_the_start_with_the_target_temperature():
    t = np.linspace(0.0, 1000.0, 201)
    potential = -1077.17 + 0.01 * np.sin(t / 20)
    figure = energies_figure(t, potential, 0.5 + 0.01 * np.cos(t / 20), potential + 0.5 + 1e-6 * t, title="NVE")
    assert offset_texts(figure) == [] and "meV/ps" in figure.axes[1].get_title()
    temperature = temperature_figure(t, 300 + np.sin(t), target_K=300.0, title="Langevin 300 K")
    labels = [line.get_label() for line in temperature.axes[0].get_lines()]
    assert "target 300 K" in labels and temperature.axes[0].get_legend() is not None
    assert offset_texts(temperature) == []


def test_spectra_vibrations_calibration_and_learning_plots_are_titled_without_offsets():
    grid = np.linspace(0.0, 4000.0, 401)
    spectrum = Spectrum(frequency_cm1=grid, intensity=1e-3 + np.exp(-(((grid - 3000) / 30) ** 2)), kind="ir",
                        unit="km/mol/cm⁻¹", dt_fs=0.5, resolution_cm1=10.0, nyquist_cm1=8000.0, window="hann",
                        quantum_correction="harmonic", temperature_K=300.0, n_replicas=1, n_segments=1)  # fmt: skip
    frequencies = np.array([-50.0, 1000.0, 3000.0])
    sticks = np.array([0.0, 10.0, 40.0])
    from jaxatom.vibrations.report import BroadenedSpectrum

    broadened = BroadenedSpectrum(*broaden(frequencies, sticks), "ir", "km/mol")
    rows = [{"output": "forces", "bin": b, "count": 10, "predicted_rms": 0.01 * (b + 1),
             "observed_rms": 0.012 * (b + 1)} for b in range(5)]  # fmt: skip
    learning = [{"labels": n, "test_forces_mae_eV_per_A": 0.1 / n, "test_forces_rmse_eV_per_A": 0.15 / n,
                 "visited_uncertainty_mean": 0.2, "visited_uncertainty_max": 0.5, "selected_uncertainty_mean": 0.4}
                for n in (50, 100, 200)]  # fmt: skip
    figures = [spectra_figure([spectrum], title="PaiNN, ethanol"), sticks_figure(frequencies, [("IR (km/mol)", sticks,
               broadened)], title="PaiNN, ethanol"), calibration_figure(rows, title="ensemble of 4"),
               report_figure(learning, title="ethanol, GFN2-xTB")]  # fmt: skip
    for figure in figures:
        assert figure.get_suptitle() and offset_texts(figure) == []
    assert figures[3].axes[0].get_yscale() == "log"
