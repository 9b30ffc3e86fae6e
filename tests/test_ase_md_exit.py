"""ASE MD driven by jaxatom's calculator leaves the interpreter without errors (issue: an ``Exception ignored in
MDLogger.__del__`` was reported at exit with jax imported)."""

import subprocess
import sys
import textwrap


def test_ase_md_with_a_logger_exits_cleanly(tmp_path):
    script = textwrap.dedent(
        """
        from ase import units
        from ase.build import molecule
        from ase.md import MDLogger
        from ase.md.langevin import Langevin
        from ase.md.verlet import VelocityVerlet

        import jaxatom
        from jaxatom.calculators import JaxAtomCalculator
        from jaxatom.nn import SchNet

        atoms = molecule("CH3CH2OH")
        pot = jaxatom.Potential.create(SchNet(n_atom_basis=8, n_interactions=1, n_rbf=6), elements=[1, 6, 8])
        atoms.calc = JaxAtomCalculator(pot)
        verlet = VelocityVerlet(atoms, 0.5 * units.fs, logfile="-", trajectory="nve.traj")
        verlet.attach(MDLogger(verlet, atoms, "md.log", peratom=True), interval=2)
        verlet.run(4)
        langevin = Langevin(atoms, 0.5 * units.fs, temperature_K=300, friction=0.01, fixcm=False, logfile="nvt.log")
        langevin.run(4)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "Exception ignored" not in result.stderr and "Traceback" not in result.stderr, result.stderr
