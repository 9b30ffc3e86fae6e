"""The figure style of every jaxatom plot: matplotlib ``Figure`` objects (never pyplot, so no GUI and nothing to
close), plain tick numbers (no offset text such as "−1077.17" above an axis: energies are drawn relative to a
stated reference instead), legends placed where they cover the fewest points, and the figure titled with what it
shows (model, data). Helpers only; each plot lives beside the quantity it shows."""

from __future__ import annotations

from pathlib import Path

__all__ = ["new_figure", "finish", "save", "legend", "offset_texts", "with_unit", "scaled"]


def new_figure(n_rows: int = 1, n_cols: int = 1, width: float = 6.4, row_height: float = 2.0, sharex: bool = False):
    """A figure of ``n_rows × n_cols`` axes (returned ``[n_rows, n_cols]``) with constrained layout."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, 1.2 + row_height * n_rows), layout="constrained")
    return figure, figure.subplots(n_rows, n_cols, sharex=sharex, squeeze=False)


def finish(figure, title: str | None = None):
    """Title the figure (``title``, e.g. ``"PaiNN on aspirin (GFN2-xTB)"``) and turn off offset text on every
    linear axis; returns the figure."""
    from matplotlib.ticker import ScalarFormatter

    if title:
        figure.suptitle(title, fontsize="medium")
    for axes in figure.axes:
        for axis in (axes.xaxis, axes.yaxis):
            formatter = axis.get_major_formatter()
            if isinstance(formatter, ScalarFormatter):
                formatter.set_useOffset(False)
            elif axis.get_scale() == "log":
                _plain_log_ticks(axis)
    return figure


def _plain_log_ticks(axis) -> None:
    """Log-axis ticks at 1, 2 and 5 per decade written as plain numbers (``0.02``), not overlapping ``3×10⁻²``."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    plain = FuncFormatter(lambda value, _: f"{value:g}")
    axis.set_major_formatter(plain)
    axis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))
    axis.set_minor_formatter(plain)
    low, high = sorted(abs(v) for v in axis.get_view_interval())
    if low > 0 and high / low > 1e3:  # many decades: label the decades only
        axis.set_minor_formatter(NullFormatter())


def save(figure, path: str | Path, title: str | None = None) -> Path:
    """:func:`finish` the figure and write it (PNG, or any format its suffix names) to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    finish(figure, title).savefig(path, dpi=120)
    return path


def legend(axes, outside: bool = False, **options) -> None:
    """A legend where it covers the fewest points (``loc="best"``), or outside the axes on the right."""
    if outside:
        options = {"loc": "upper left", "bbox_to_anchor": (1.01, 1.0), "frameon": False, **options}
    axes.legend(**{"loc": "best", "fontsize": "small", "framealpha": 0.85, **options})


def offset_texts(figure) -> list[str]:
    """The offset texts (e.g. ``"−1.077e3"``) matplotlib would print beside an axis after drawing; empty when every
    tick label is a plain number."""
    figure.canvas.draw()
    return [text for axes in figure.axes for axis in (axes.xaxis, axes.yaxis)
            if (text := axis.get_offset_text().get_text())]  # fmt: skip


def with_unit(value: float, unit: str) -> str:
    """``value`` with 3 significant digits and its unit, eV-based quantities below 0.1 in meV (``"12.3 meV/Å"``)."""
    if unit.startswith("eV") and abs(value) < 0.1:
        return f"{1000.0 * value:.3g} m{unit}"
    return f"{value:.3g} {unit}".rstrip()


def scaled(unit: str, values) -> tuple[str, object]:
    """``(unit, values)`` as written by :func:`with_unit` for a quantity of this size (meV for small eV errors)."""
    import numpy as np

    values = np.asarray(values)
    if unit.startswith("eV") and values.size and np.nanmax(np.abs(values)) < 0.1:
        return f"m{unit}", 1000.0 * values
    return unit, values


def model_label(model) -> str:
    """A short name of a :class:`~jaxatom.Potential` or :class:`~jaxatom.PotentialEnsemble` for figure titles:
    ``"PaiNN 64×3"``, ``"ensemble of 4 SchNet 16×2"``."""
    representation = model.model.representation
    size = f" {representation.n_atom_basis}×{representation.n_interactions}"
    name = f"{type(representation).__name__}{size if hasattr(representation, 'n_interactions') else ''}"
    members = getattr(model, "size", None)
    return f"ensemble of {members} {name}" if members else name


def data_label(dataset) -> str:
    """A short name of a :class:`~jaxatom.data.Dataset` for figure titles: the shipped set or file it came from and
    the reference method where the file records one."""
    origin = dataset.origin
    where = "data in memory" if origin is None else origin.data.get("builtin") or Path(
        str(origin.data.get("path") or origin.data.get("source"))).name  # fmt: skip
    method = dataset.metadata.get("method")
    return f"{where} ({method})" if isinstance(method, str) and method else where
