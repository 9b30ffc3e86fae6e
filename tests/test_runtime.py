import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc allocator settings are Linux-only")


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, check=False)


def test_tune_cpu_allocator_applies_before_jax_starts_and_warns_after():
    result = _run(
        """
        import warnings
        import jax.numpy as jnp
        from jaxatom.runtime import tune_cpu_allocator
        assert tune_cpu_allocator() is True
        jnp.ones(3).block_until_ready()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert tune_cpu_allocator() is False
        assert "after JAX started" in str(caught[0].message)
        print("ok")
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_importing_jaxatom_tunes_the_allocator_unless_opted_out_or_jax_started_first():
    check = "import jaxatom, jaxatom.runtime as r; print(r.cpu_allocator_tuned())"
    assert _run(check).stdout.strip() == "True"
    opted_out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=False,
                               env={**os.environ, "JAXATOM_TUNE_CPU_ALLOCATOR": "0"})  # fmt: skip
    assert opted_out.stdout.strip() == "False"
    started = _run("import warnings, jax.numpy as jnp; jnp.ones(2); warnings.simplefilter('error'); " + check)
    assert started.returncode == 0, started.stderr  # no warning: jaxatom only skips it
    assert started.stdout.strip() == "False"
