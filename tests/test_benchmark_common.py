"""The benchmark scaffolding: cost-analysis normalisation of loops, roofline arithmetic, tables and the RESULTS.md
marker rewriting (no timings are asserted)."""

import functools
import sys
from pathlib import Path

import jax.numpy as jnp
import pytest
from jax import lax

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import _common  # noqa: E402
import _roofline  # noqa: E402
import suite  # noqa: E402

N = 16
PRODUCT_FLOPS = 2.0 * N**3


def _chunk(x, a, frames, stride):
    """The MD driver's loop shape: a scan over frames around a fori_loop over the stride, one product per step."""

    def frame(c, _):
        return lax.fori_loop(0, stride, lambda i, s: a @ s, c), None

    return lax.scan(frame, x, None, length=frames)[0]


def test_cost_analysis_of_a_scan_normalises_to_one_step():
    a = jnp.eye(N, dtype=jnp.float32)
    one = _roofline.compiled_cost(lambda x: a @ x, a)
    assert one["flops"] == pytest.approx(PRODUCT_FLOPS, rel=0.01)
    for frames, stride in ((2, 3), (5, 7)):
        chunk = _roofline.compiled_cost(functools.partial(_chunk, a=a, frames=frames, stride=stride), a)
        step = _roofline.per_step(chunk, frames * stride)
        assert step["flops"] == pytest.approx(PRODUCT_FLOPS, rel=0.01)


def test_loops_counted_once_matches_a_direct_count():
    a = jnp.eye(N, dtype=jnp.float32)
    eight = _roofline.compiled_cost(lambda x: lax.fori_loop(0, 8, lambda i, s: a @ s, x), a)["flops"]
    assert _roofline.loops_counted_once() == (eight < 2 * PRODUCT_FLOPS)


def test_cost_reads_a_dict_or_a_list_of_dicts():
    class Fake:
        def __init__(self, analysis):
            self.analysis = analysis

        def cost_analysis(self):
            return self.analysis

    assert _roofline.cost(Fake({"flops": 4.0, "bytes accessed": 2.0})) == {"flops": 4.0, "bytes": 2.0}
    assert _roofline.cost(Fake([{"flops": 4.0, "bytes accessed": 2.0}, {"flops": 1.0}])) == {"flops": 5.0, "bytes": 2.0}


def test_roofline_picks_the_binding_roof():
    limits = {"peak_gflops": 100.0, "bandwidth_gbs": 10.0}
    memory = _roofline.roofline(flops=1e9, nbytes=1e9, seconds=0.1, limits=limits)  # 1 flop/byte: 10 GFLOP/s roof
    assert memory["bound"] == "memory"
    assert memory["attainable_gflops"] == pytest.approx(10.0)
    assert memory["pct_attainable"] == pytest.approx(100.0)
    compute = _roofline.roofline(flops=1e9, nbytes=1e6, seconds=0.1, limits=limits)
    assert compute["bound"] == "compute"
    assert compute["pct_peak"] == pytest.approx(10.0)
    assert _roofline.roofline(None, None, 0.1, limits) == {}


def test_markdown_table_formats_and_aligns():
    columns = [_common.Column("name", "name", numeric=False), _common.Column("ms", "ms", ".1f")]
    text = _common.markdown_table(columns, [{"name": "a", "ms": 1.25}, {"name": "b", "ms": None}])
    assert text.splitlines() == ["| name | ms |", "|---|---:|", "| a | 1.2 |", "| b | — |"]


def test_replace_section_rewrites_only_between_markers():
    text = (
        "head\n<!-- suite:cpu:md -->\nold\n<!-- /suite:cpu:md -->\n"
        "<!-- suite:gpu:md -->\nkeep\n<!-- /suite:gpu:md -->\n"
    )
    new = suite.replace_section(text, "cpu", "md", "| a |\n")
    assert new == text.replace("\nold\n", "\n| a |\n")
    assert suite.replace_section(new, "cpu", "md", "x\\1").count("x\\1") == 1  # no regex escapes in the content
    with pytest.raises(KeyError):
        suite.replace_section(text, "cpu", "inference", "x")


def test_results_file_has_every_suite_section():
    text = suite.RESULTS.read_text()
    for device in ("cpu", "gpu"):
        for name in ("environment", *suite.BENCHMARKS):
            start, end = suite.marker(device, name)
            assert text.count(start) == 1 and text.count(end) == 1, (device, name)


def test_md_chunk_costs_are_captured_from_the_driver():
    """The MD roofline reads the cost where ``simulate`` compiles its chunk (a private hook: this catches a change)."""
    from ase import Atoms

    from jaxatom.md import from_energy, simulate

    atoms = Atoms("H2", positions=[[0.0, 0.0, 0.0], [0.0, 0.0, 0.8]])
    field = from_energy(lambda x: 0.5 * jnp.sum((jnp.linalg.norm(x[1] - x[0]) - 0.74) ** 2))
    with _roofline.capture_md_chunks() as chunks:
        simulate(field, atoms, steps=4, stride=2, output=None, progress=False)
    assert chunks and chunks[0]["stride"] == 2 and chunks[0]["flops"] > 0
    assert _roofline.md_step_cost(chunks)["flops"] > 0
