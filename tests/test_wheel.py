"""The wheel: built, installed into a fresh virtual environment outside the checkout, and
`aed-tf run` there, so the notebooks are found as package data and not through the checkout."""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import nbformat

from aed_tf.runner import KERNEL_NAME, NOTEBOOKS
from tests.synth import make_ravdess_tree

REPO = Path(__file__).resolve().parents[1]
# What setuptools reads to build the wheel: copied out, so the build writes no build/ into the
# checkout and sees one state of the sources while others edit them.
BUILD_INPUTS = ("pyproject.toml", "README.md", "requirements.txt", "aed_tf")


def _run(command, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, (
        f"{' '.join(map(str, command))} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
    )
    return result


def _build_wheel(tmp_path: Path) -> Path:
    source = tmp_path / "source"
    source.mkdir()
    for name in BUILD_INPUTS:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / name, source / name)
    dist = tmp_path / "dist"
    # No build isolation and no index: the test environment's setuptools builds it, offline.
    _run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index"]
        + ["-w", str(dist), str(source)]
    )
    (wheel,) = dist.glob("aed_tf-*.whl")
    return wheel


def _fresh_environment(tmp_path: Path, wheel: Path) -> tuple[Path, dict[str, str]]:
    """A new virtual environment with the wheel installed, its dependencies importable from this
    one's site-packages (not reinstalled), and the environment variables to run it with."""
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    _run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index"]
        + [str(wheel)]
    )
    purelib = Path(
        _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    )
    # A .pth line puts a folder on sys.path after the environment's own site-packages without
    # processing the .pth files in it, so this environment's editable hook to the checkout's
    # aed_tf is not installed there.
    ours = dict.fromkeys(sysconfig.get_paths()[key] for key in ("purelib", "platlib"))
    (purelib / "dependencies.pth").write_text("".join(f"{path}\n" for path in ours))
    # pip would install nbconvert's templates (data files) into the new environment's share/.
    share = venv / "share" / "jupyter"
    share.mkdir(parents=True)
    (share / "nbconvert").symlink_to(Path(sys.prefix) / "share" / "jupyter" / "nbconvert")

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.pop("JUPYTER_PATH", None)
    env.update(
        PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        # The user's own kernel specs (a stale "aed-tf" among them) are out of sight: the runner
        # installs its kernel into the new environment.
        JUPYTER_DATA_DIR=str(tmp_path / "jupyter-data"),
        TF_CPP_MIN_LOG_LEVEL="2",
    )
    return venv, env


def test_aed_tf_run_works_from_the_wheel_installed_outside_the_checkout(tmp_path):
    assert REPO not in tmp_path.resolve().parents
    wheel = _build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        shipped = {name for name in archive.namelist() if name.startswith("aed_tf/notebooks/")}
    assert shipped == {f"aed_tf/notebooks/{name}" for name in NOTEBOOKS.values()}

    venv, env = _fresh_environment(tmp_path, wheel)
    python = venv / "bin" / "python"
    work = tmp_path / "work"
    data_root = make_ravdess_tree(work / "data")

    where = _run(
        [
            str(python),
            "-c",
            "import json, aed_tf, aed_tf.runner as r; print(json.dumps("
            "[aed_tf.__file__, str(r.NOTEBOOKS_DIR), r.PROJECT_ROOT and str(r.PROJECT_ROOT)]))",
        ],
        cwd=work,
        env=env,
    )
    package_file, notebooks_dir, project_root = json.loads(where.stdout)
    assert venv in Path(package_file).parents, package_file  # not the checkout's editable aed_tf
    assert venv in Path(notebooks_dir).parents and project_root is None

    parameters = {
        "data_roots": str(data_root),
        "cache_dir": "cache",
        "clip_seconds": "0.5",
        "n_mels": "32",
        "time_mask_width": "5",
        "freq_mask_width": "4",
        "val_fraction": "0.2",
        "test_fraction": "0.2",
    }
    command = [str(venv / "bin" / "aed-tf"), "run", "explore"]
    for name, value in parameters.items():
        command += ["-p", name, value]
    _run(command, cwd=work, env=env, timeout=300)

    # Everything is written in the working directory: the prepared data, the cache and the report.
    (record,) = (work / "reports").glob(f"*/{NOTEBOOKS['explore']}")
    executed = nbformat.read(record, as_version=4)
    assert [c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]
    outputs = [o for c in executed.cells if c.cell_type == "code" for o in c.outputs]
    assert outputs and not [o for o in outputs if o["output_type"] == "error"]
    page = record.with_suffix(".html")
    assert page.is_file() and "data:audio/wav;base64," in page.read_text(encoding="utf-8")
    assert (work / "reports" / "index.html").is_file()
    assert (work / "prepared").is_dir() and (work / "cache").is_dir()

    # The kernel that ran it is the new environment's interpreter, installed there.
    spec = _run(
        [
            str(python),
            "-c",
            "import json; from jupyter_client.kernelspec import KernelSpecManager; "
            f"s = KernelSpecManager().get_kernel_spec({KERNEL_NAME!r}); print(json.dumps([s.argv, s.resource_dir]))",
        ],
        cwd=work,
        env=env,
    )
    argv, resource_dir = json.loads(spec.stdout)
    assert argv[0] == str(python) and venv in Path(resource_dir).parents
