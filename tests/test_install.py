"""The installable command: a wheel built from the working tree, installed (not editable) into a new
virtualenv without network, and `xmc-lab` run from a folder outside the repository.

The new venv sees the project venv's packages through a .pth line (its dependencies; the line adds
the folder without running that folder's own .pth files, so the project's editable install stays
out), and the wheel is installed with --no-deps --no-index."""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
TINY = ["--data", "sample", "--epochs", "1", "--hidden", "16", "--fanin", "8"]


def sh(*cmd, cwd, env=None, ok=True):
    out = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if ok:
        assert out.returncode == 0, f"{cmd}: {out.returncode}\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}"
    return out


def source_tree(dest):
    """The files git would commit (tracked, and new ones it does not ignore), copied to `dest`."""
    listed = sh("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", cwd=REPO).stdout
    for name in filter(None, listed.split("\0")):
        src = REPO / name
        if not os.path.lexists(src):
            continue                                       # deleted in the working tree
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / name, follow_symlinks=False)
    return dest


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(bin folder of the new venv, environment to run it in, a work folder outside the repository)."""
    tmp = tmp_path_factory.mktemp("install")
    src = source_tree(tmp / "src")
    sh(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
       "-w", tmp / "dist", src, cwd=tmp)
    (wheel,) = (tmp / "dist").glob("xmc_lab-*.whl")
    sh(sys.executable, "-m", "venv", "--without-pip", tmp / "venv", cwd=tmp)
    py = tmp / "venv" / "bin" / "python"
    site = sh(py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=tmp).stdout.strip()
    Path(site, "project-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    sh(sys.executable, "-m", "pip", "--python", py, "install", "--no-deps", "--no-index", wheel, cwd=tmp)
    work = tmp / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "XMC_RUNS_DIR", "VIRTUAL_ENV")}
    env.update(XMC_DATA_HOME=str(tmp / "cache"), PATH=f"{py.parent}{os.pathsep}{env.get('PATH', '')}")
    return py.parent, env, work


def test_help_lists_the_commands(installed):
    bin_, env, work = installed
    out = sh(bin_ / "xmc-lab", "--help", cwd=work, env=env).stdout
    assert out.startswith("usage: xmc-lab")
    for command in ("app", "train", "eval", "export", "fetch", "bench", "results"):
        assert command in out, command


def test_an_unknown_dataset_is_exit_2(installed):
    bin_, env, work = installed
    out = sh(bin_ / "xmc-lab", "fetch", "no-such-set", cwd=work, env=env, ok=False)
    assert out.returncode == 2 and "unknown dataset 'no-such-set'" in out.stderr


def test_the_package_is_the_wheels_and_carries_its_files(installed):
    # imported from the new venv, not the repository; the app, its server options, the kernels
    # and the sample are there
    bin_, env, work = installed
    code = ("import json, engine, app, app.server as s; from pathlib import Path; "
            "from engine import resolve_dataset; from engine.cuda import CUDA_DIR; "
            "print(json.dumps({'engine': engine.__file__, 'home': str(Path(app.__file__).parent / 'Home.py'), "
            "'views': str(Path(app.__file__).parent / 'views' / 'data.py'), 'flags': s.flags(), "
            "'cu': str(CUDA_DIR / 'group_shared.cu'), 'sample': str(resolve_dataset('sample') / 'train.txt')}))")
    found = json.loads(sh(bin_ / "python", "-c", code, cwd=work, env=env).stdout)
    assert not Path(found.pop("engine")).is_relative_to(REPO)
    assert "--server.address=127.0.0.1" in found.pop("flags")
    for what, path in found.items():
        assert Path(path).is_file() and not Path(path).is_relative_to(REPO), what


def test_train_export_eval_from_outside_the_repository(installed):
    bin_, env, work = installed
    sh(bin_ / "xmc-lab", "train", *TINY, cwd=work, env=env)
    (run,) = (work / "runs").iterdir()
    sh(bin_ / "xmc-lab", "export", "--run", run, "--to", work / "bundle", cwd=work, env=env)
    other = work / "other"
    other.mkdir()
    out = sh(bin_ / "xmc-lab", "eval", "--run", work / "bundle", cwd=other, env=env).stdout
    assert "P@1" in out
