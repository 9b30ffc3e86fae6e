"""Files a configuration names are checked before MD code is imported, with what to give instead."""

import subprocess
import sys

from jaxatom.cli import main


def test_a_missing_structure_file_is_named_with_how_to_make_one(tmp_path, capsys):
    (tmp_path / "model").mkdir()
    (tmp_path / "md.yaml").write_text("model: model\nstructure: aspirin.xyz\nsteps: 10\n")
    assert main(["md", str(tmp_path / "md.yaml")]) == 2
    error = capsys.readouterr().err
    assert f"structure: {tmp_path / 'aspirin.xyz'} does not exist" in error
    assert "load_builtin('aspirin').to_atoms(0).write('aspirin.xyz')" in error


def test_a_missing_model_is_refused_before_the_md_code_is_imported(tmp_path):
    (tmp_path / "md.yaml").write_text("model: runs/quickstart/best_model\nstructure: a.xyz\n")
    code = ("import sys; from jaxatom.cli import main; code = main(['md', sys.argv[1]]); "
            "print('jaxatom.md' in sys.modules); sys.exit(code)")  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path / "md.yaml")], capture_output=True, text=True)
    assert result.returncode == 2 and result.stdout.strip() == "False"
    assert "runs/quickstart/best_model does not exist" in result.stderr and "jaxatom quickstart writes" in result.stderr
