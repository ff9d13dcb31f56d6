"""The `python SWEEP.yaml` hook behind `ray submit` (orchestrator/launcher.py): in process, and in real
interpreters as `ray submit` runs them."""

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from orchestrator import launcher

ROOT = Path(__file__).resolve().parents[2]
DEMO_SWEEP = ROOT / "sweeps" / "demo.yaml"  # 2 trials (branching 256 and 4)


# ------------------------------------------------------------------------------------ launcher: in process


@pytest.mark.parametrize(("text", "expected"), [
    ("sweep:\n  name: x\n", True),
    ("# a sweep\ndata: {spec: digits}\nsweep: {name: x}\n", True),
    ('"sweep":\n  name: x\n', True),
    ("sweep:", True),
    ("data:\n  sweep:\n    name: x\n", False),  # not top level
    ("# sweep: x\ndata: 1\n", False),
    ("sweeps:\n  - x\n", False),
    ("", False),
])
def test_is_sweep_file(tmp_path, text, expected):
    path = tmp_path / "s.yaml"
    path.write_text(text)
    assert launcher.is_sweep_file(path) is expected


def test_is_sweep_file_needs_a_yaml_file(tmp_path):
    (tmp_path / "s.txt").write_text("sweep:\n  name: x\n")
    (tmp_path / "d.yaml").mkdir()
    (tmp_path / "s.yml").write_text("sweep:\n  name: x\n")
    assert not launcher.is_sweep_file(tmp_path / "s.txt")
    assert not launcher.is_sweep_file(tmp_path / "d.yaml")
    assert not launcher.is_sweep_file(tmp_path / "missing.yaml")
    assert launcher.is_sweep_file(tmp_path / "s.yml")


def test_sweep_command_puts_ray_submit_arguments_after_the_file():
    argv = ["/home/u/x.yaml", "--set", "a.b=1", "--dry-run"]
    cmd = launcher.sweep_command(argv, ["/venv/bin/python", "-u", "-X", "dev", *argv], "/venv/bin/python")
    assert cmd[:5] == ["/venv/bin/python", "-u", "-X", "dev", "-c"]
    assert cmd[6:] == ["sweep", "/home/u/x.yaml", "--set", "a.b=1", "--dry-run"]
    assert launcher.sweep_command(["x.yaml"], None, "py")[:2] == ["py", "-c"]


@pytest.fixture
def replaced(monkeypatch):
    """Record the command run_if_sweep_file would exec instead of replacing the test process."""
    calls = []
    monkeypatch.setattr(launcher, "_replace_process", calls.append)
    monkeypatch.setattr(launcher, "_launched", False)
    return calls


def test_run_if_sweep_file_hands_over_once(tmp_path, monkeypatch, replaced):
    sweep = tmp_path / "x.yaml"
    sweep.write_text("sweep:\n  name: x\n")
    monkeypatch.setattr(sys, "argv", [str(sweep), "--set", "train.steps=5"])
    launcher.run_if_sweep_file()
    launcher.run_if_sweep_file()  # the .pth is processed again when site dirs repeat
    assert len(replaced) == 1
    assert replaced[0][-4:] == ["sweep", str(sweep), "--set", "train.steps=5"]


def test_run_if_sweep_file_leaves_other_programs_alone(tmp_path, monkeypatch, replaced):
    plain = tmp_path / "plain.yaml"
    plain.write_text("data: photos:8\n")
    for argv in [[str(plain)], ["-c"], ["-m"], [], [str(tmp_path / "missing.yaml")], ["script.py", "x.yaml"]]:
        monkeypatch.setattr(sys, "argv", argv)
        launcher.run_if_sweep_file()
    monkeypatch.delattr(sys, "argv")
    launcher.run_if_sweep_file()
    assert replaced == []


def test_run_if_sweep_file_swallows_errors_of_the_check(tmp_path, monkeypatch, replaced):
    def broken(path):
        raise PermissionError(path)

    monkeypatch.setattr(launcher, "is_sweep_file", broken)
    monkeypatch.setattr(sys, "argv", [str(tmp_path / "x.yaml")])
    launcher.run_if_sweep_file()
    assert replaced == []


def test_install_launcher_is_idempotent(tmp_path):
    site = tmp_path / "site"
    path = launcher.install_launcher(site)
    assert path == site / launcher.PTH_NAME
    text = path.read_text()
    assert text.startswith("import ") and text.count("\n") == 1  # one line that site executes
    assert launcher.install_launcher(str(site)) == path and path.read_text() == text
    assert [p.name for p in site.iterdir()] == [launcher.PTH_NAME]
    assert launcher.uninstall_launcher(site) == path and not path.exists()
    assert launcher.uninstall_launcher(site) is None


# ---------------------------------------------------------------- launcher: real interpreters, as ray submit


def _venv_purelib(venv: Path) -> Path:
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    out = subprocess.run([str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True, check=True)
    return Path(out.stdout.strip())


def _make_venv(root: Path, with_project: bool) -> Path:
    """A throwaway venv (no pip: milliseconds) that sees this environment's packages, the project included,
    through a .pth that adds our site-packages as a site dir (so its own .pth files, e.g. the editable
    install's finder, run too). Its name sorts before the launcher's, as site processes .pth files sorted."""
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    if with_project:
        parent = sysconfig.get_paths()["purelib"]
        (_venv_purelib(venv) / "_parent_env.pth").write_text(f"import site; site.addsitedir({parent!r})\n")
    return venv


@pytest.fixture(scope="module")
def launcher_venv(tmp_path_factory):
    """A venv in which `ardm install-launcher`'s default (this interpreter's site-packages) got the hook."""
    venv = _make_venv(tmp_path_factory.mktemp("launcher"), with_project=True)
    python = str(venv / "bin" / "python")
    out = subprocess.run([python, "-m", "orchestrator.launcher"], capture_output=True, text=True, check=True)
    pth = _venv_purelib(venv) / launcher.PTH_NAME
    assert pth.is_file() and str(pth) in out.stdout
    return python


@pytest.fixture
def head_home(tmp_path):
    """A stand-in for the head node's home directory, the working directory of `ray submit`'s command. Folders
    there named like our packages (a project mounted at ~/ardm, say) become namespace packages when the
    working directory is on sys.path, and their files shadow the editable install's modules: the sweep must
    not import them."""
    home = tmp_path / "home"
    for package in ("ardm", "orchestrator"):
        (home / package).mkdir(parents=True)
        (home / package / "config.py").write_text('raise ImportError("shadowed by the home directory")\n')
    return home


def _python(python: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([python, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_python_sweep_yaml_runs_the_sweep_dry_run(launcher_venv, head_home):
    """`ray submit cluster.yaml sweeps/demo.yaml -- --dry-run --set sweep.name=launch-test` on the head.

    Needs `ardm sweep --dry-run` and sweeps/demo.yaml (the lead's orchestrator/cli.py and config.py)."""
    copied = head_home / "demo.yaml"
    shutil.copy(DEMO_SWEEP, copied)  # the one file ray submit uploads
    result = _python(launcher_venv, str(copied), "--dry-run", "--set", "sweep.name=launch-test", cwd=head_home)
    assert result.returncode == 0, result.stderr
    assert "sweep 'launch-test', 2 trial(s)" in result.stdout
    assert "branching=256" in result.stdout and "branching=4" in result.stdout


def test_python_sweep_yaml_passes_on_the_exit_status(launcher_venv, head_home):
    """The sweep's exit status is the process's (running it inside site would always give 1)."""
    copied = head_home / "x.yml"
    copied.write_text("sweep:\n  name: x\n")
    result = _python(launcher_venv, str(copied), "--no-such-option", cwd=head_home)
    assert result.returncode == 2
    assert "usage: ardm" in result.stderr and "--no-such-option" in result.stderr  # argparse of orchestrator.cli


def test_yaml_without_sweep_section_runs_as_python(launcher_venv, tmp_path):
    plain = tmp_path / "config.yaml"
    plain.write_text("data: photos:8\nsweep_like:\n  sweep: 1\n")
    result = _python(launcher_venv, str(plain), cwd=tmp_path)
    assert result.returncode == 1 and "SyntaxError" in result.stderr


def test_other_programs_are_unaffected(launcher_venv, tmp_path):
    result = _python(launcher_venv, "-c", "print(1)", cwd=tmp_path)
    assert (result.returncode, result.stdout, result.stderr) == (0, "1\n", "")


def test_stale_launcher_without_the_project_is_silent(tmp_path):
    """`pip uninstall ardm` leaves the .pth behind: every interpreter must still start quietly."""
    venv = _make_venv(tmp_path, with_project=False)
    launcher.install_launcher(_venv_purelib(venv))
    python = str(venv / "bin" / "python")
    sweep = tmp_path / "x.yaml"
    sweep.write_text("sweep:\n  name: x\n")
    assert _python(python, "-c", "print(1)", cwd=tmp_path).stderr == ""
    result = _python(python, str(sweep), cwd=tmp_path)  # no hook any more: Python runs the YAML as a script
    assert result.returncode == 1 and "SyntaxError" in result.stderr and ".pth" not in result.stderr
