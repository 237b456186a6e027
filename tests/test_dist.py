"""`make dist`: the wheel of this tree is complete and runs on its own.

`make dist` (offline: the venv's setuptools, no build isolation, no index) builds the wheel into a temporary
folder; the wheel must hold every file of the `tradesys` package in the tree (modules and any package data, nothing
stale from an old build/), declare the `tradesys` console script and the project's dependencies, and, installed with
`--no-deps` into a throwaway venv that sees the project venv's third-party packages but not its editable tradesys,
import from the venv's own site-packages and run `tradesys --help` from any directory.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import tomllib
import venv
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _tree_files() -> set[str]:
    pkg = ROOT / "tradesys"
    return {p.relative_to(ROOT).as_posix() for p in pkg.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".pyo")}  # fmt: skip


def test_make_dist_builds_a_complete_wheel_that_runs_from_a_fresh_venv(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    stamp = Path(sys.prefix) / ".installed"  # `make install`'s stamp: never reinstall the venv from a test
    make = subprocess.run(["make", "-o", str(stamp), f"VENV={sys.prefix}", f"DIST={dist}", "dist"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert make.returncode == 0, make.stdout + make.stderr
    wheels = sorted(dist.glob("tradesys-*.whl"))
    assert len(wheels) == 1 and str(wheels[0]) in make.stdout
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert wheels[0].name == f"tradesys-{version}-py3-none-any.whl"

    with zipfile.ZipFile(wheels[0]) as z:
        names = set(z.namelist())
        meta = z.read(f"tradesys-{version}.dist-info/METADATA").decode()
        entry = z.read(f"tradesys-{version}.dist-info/entry_points.txt").decode()
    in_pkg = {n for n in names if n.startswith("tradesys/")}
    tree = _tree_files()
    assert tree - in_pkg == set(), "files of the package missing from the wheel"
    assert in_pkg - tree == set(), "files in the wheel that the tree no longer has (a stale build/)"
    assert "tradesys = tradesys.cli:app" in entry
    assert "Requires-Dist: ray[default,rllib,serve,tune]<2.61,>=2.60" in meta.replace("'", "")

    # a throwaway venv: its own site-packages first, then the project venv's third-party packages (a plain path
    # line: the project venv's .pth files, the editable tradesys among them, are not run)
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    py = env_dir / "bin" / "python"
    own = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    Path(own, "project-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    inst = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps", "--no-index",
                           str(wheels[0])], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert inst.returncode == 0, inst.stdout + inst.stderr

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    where = subprocess.run([str(py), "-c", "import tradesys, tradesys.cli, tradesys.storage; print(tradesys.__file__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).resolve() == Path(own, "tradesys", "__init__.py").resolve()
    helped = subprocess.run([str(env_dir / "bin" / "tradesys"), "--help"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert helped.returncode == 0, helped.stderr
    assert "Usage: tradesys" in helped.stdout and "models" in helped.stdout
