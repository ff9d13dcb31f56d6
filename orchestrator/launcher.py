"""Make `python SWEEP.yaml ARGS` start the sweep: the hook behind `ray submit cluster.yaml sweeps/x.yaml`.

`ray submit` copies the one named file to the head node's home directory and runs `python ~/x.yaml ARGS`
there. `install_launcher` writes a `.pth` file into the environment's site-packages; Python executes its
line at every interpreter start (site import), and when `sys.argv[0]` names a sweep file (a YAML file with
a top-level `sweep:` key) the process is replaced (`os.execv`) by `ardm sweep FILE ARGS`, run as an
ordinary program. Everything else starts exactly as before.

Why exec rather than running the sweep inside the `.pth` line: code there runs while the `site` module
is still being imported. A `SystemExit` raised at that point is reported as "Fatal Python error:
init_import_site" with exit status 1 (the sweep's own status would be lost), and a long Ray driver would
run with `site`'s import lock held and no `__main__` script set up.

Keep this module import-light: it is imported at every start of `python *.yaml` in the environment.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

PTH_NAME = "ardm-sweep-launcher.pth"

# The `.pth` line. Python executes lines that start with "import"; everything must fit on that one line.
# The suffix test happens inline, so other programs never even import this module, and a failure (say
# the project was uninstalled but the `.pth` left behind) is swallowed instead of printed at every start.
PTH_LINE = (
    "import sys; exec(\"try:\\n if str(sys.argv[0]).endswith(('.yaml', '.yml')):\\n"
    "  import orchestrator.launcher as _l; _l.run_if_sweep_file()\\nexcept Exception: pass\")\n"
)

# A top-level `sweep:` mapping key (optionally quoted), at the start of a line, not indented.
_SWEEP_KEY = re.compile(r"""^(?:sweep|"sweep"|'sweep')[ \t]*:(?:[ \t]|$)""", re.MULTILINE)
_MAX_BYTES = 1 << 20  # sweep files are small; never read a big file at interpreter start

# What the replacement interpreter runs: `ardm sweep FILE ARGS`. The current directory ('' on sys.path
# for -c) is dropped first: under `ray submit` it is the home directory, where a folder named like one of
# our packages would otherwise shadow the installed package as a namespace package.
_BOOT = (
    "import sys\n"
    "if sys.path and sys.path[0] == '':\n"
    "    del sys.path[0]\n"
    "from orchestrator.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)

_launched = False  # the `.pth` is processed once per site dir, and site dirs can repeat (lib, lib64)


def is_sweep_file(path: str | os.PathLike[str]) -> bool:
    """Whether `path` is a readable .yaml/.yml file with a top-level `sweep:` key (no YAML parsing)."""
    name = os.fspath(path)
    if not name.endswith((".yaml", ".yml")) or not os.path.isfile(name):
        return False
    with open(name, "rb") as f:
        text = f.read(_MAX_BYTES).decode("utf-8", errors="replace")
    return _SWEEP_KEY.search(text) is not None


def sweep_command(argv: list[str], orig_argv: list[str] | None = None,
                  executable: str | None = None) -> list[str]:
    """The command line that replaces `python [OPTIONS] SWEEP.yaml ARGS`: `python [OPTIONS] -c BOOT sweep FILE ARGS`.

    `ray submit` puts the script's arguments after the file (`python ~/x.yaml --set a.b=1`), which is also
    where `ardm sweep FILE [--set ...] [--resume] [--dry-run]` takes them. Interpreter options given before
    the file (`-u`, `-X ...`, `-W ...`) are kept.
    """
    executable = executable or sys.executable
    options: list[str] = []
    if orig_argv and len(orig_argv) > len(argv) and orig_argv[len(orig_argv) - len(argv):] == argv:
        options = list(orig_argv[1:len(orig_argv) - len(argv)])
    return [executable, *options, "-c", _BOOT, "sweep", argv[0], *argv[1:]]


def run_if_sweep_file() -> None:
    """At interpreter start: if the script is a sweep file, become `ardm sweep SCRIPT ARGS`; else do nothing.

    Never raises from the check itself; once the sweep is handed over, its exit status is the process's.
    """
    global _launched
    try:
        argv = list(getattr(sys, "argv", None) or [])
        if _launched or not argv or not is_sweep_file(argv[0]):
            return
        _launched = True
        command = sweep_command(argv, list(getattr(sys, "orig_argv", None) or []))
    except Exception:
        return
    _replace_process(command)


def _replace_process(command: list[str]) -> None:
    import contextlib

    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    if os.name == "nt":  # execv on Windows starts a new process and loses its exit status
        import subprocess

        os._exit(subprocess.call(command))
    try:
        os.execv(command[0], command)
    except OSError as err:
        # Without this, Python would go on to run the YAML file as a script and fail with a SyntaxError.
        print(f"ardm: error: cannot start the sweep ({command[0]}: {err})", file=sys.stderr)
        os._exit(1)


def _default_site_dir() -> Path:
    import sysconfig

    return Path(sysconfig.get_paths()["purelib"])


def install_launcher(site_dir: str | os.PathLike[str] | None = None) -> Path:
    """Write the launcher `.pth` into `site_dir` (default: this interpreter's site-packages). Idempotent."""
    directory = Path(site_dir) if site_dir is not None else _default_site_dir()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / PTH_NAME
    if not path.is_file() or path.read_text() != PTH_LINE:
        tmp = path.with_name(f".{PTH_NAME}.{os.getpid()}.tmp")  # no .pth suffix: never half-read by site
        tmp.write_text(PTH_LINE)
        os.replace(tmp, path)
    return path


def uninstall_launcher(site_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """Remove the launcher `.pth` from `site_dir` (default: this interpreter's site-packages).

    Returns the removed path, or None when there was none.
    """
    directory = Path(site_dir) if site_dir is not None else _default_site_dir()
    path = directory / PTH_NAME
    if not path.exists():
        return None
    path.unlink()
    return path


def add_install_launcher_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `ardm install-launcher`."""
    parser.add_argument("--site-dir", help="site-packages folder (default: this interpreter's)")
    parser.add_argument("--uninstall", action="store_true", help="remove the hook instead")


def run_install_launcher(args: argparse.Namespace) -> int:
    """`ardm install-launcher [--site-dir DIR] [--uninstall]`: print what was done; exit status."""
    if args.uninstall:
        removed = uninstall_launcher(args.site_dir)
        print(f"removed {removed}" if removed else "no sweep launcher installed")
    else:
        path = install_launcher(args.site_dir)
        print(f"installed {path}: `python SWEEP.yaml ARGS` now runs `ardm sweep SWEEP.yaml ARGS`")
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m orchestrator.launcher [--site-dir DIR] [--uninstall]` (same as `ardm install-launcher`)."""
    parser = argparse.ArgumentParser(prog="python -m orchestrator.launcher",
                                     description="install the `python SWEEP.yaml` hook used by `ray submit`")
    add_install_launcher_arguments(parser)
    return run_install_launcher(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
