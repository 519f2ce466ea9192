"""Run poorconn 0.2.1's own test suite against sockwork.compat.poorconn.

``python tests/peers/run_poorconn_suite.py [PYTEST ARGS]`` (``make test`` runs it):

1. downloads poorconn's sdist with pip (``pip download --no-deps --no-binary :all:
   poorconn==0.2.1``) into ``.venv/peer-suites/`` unless it is already there;
2. unpacks it into a temporary directory and deletes its ``poorconn/`` package, so
   that nothing but the shim can answer ``import poorconn``; the tests themselves
   are not modified;
3. runs ``python -m pytest tests`` there, with ``tests/peers/poorconn_shim`` first
   on ``PYTHONPATH`` (its ``poorconn`` package is ``sockwork.compat.poorconn``), in
   a separate pytest process, so the aliasing cannot touch sockwork's own suite;
   plugin autoloading is off and ``poorconn.pytest_plugin`` is loaded by name, as
   poorconn's entry point loads it; so are pytest-timeout and
   ``tests/peers/teardown_deadline.py`` (a failed test's teardown that waits for
   ever, as the suite's ``http_server`` fixture's does, fails after 20 s instead of
   hanging the run).

poorconn's tests bind fixed ports (7999, 8000, 8080, 8380, 10009 on localhost), so
runs on one machine are serialized with a lock file in the temporary directory
of the system; the exit status is pytest's.
"""

from __future__ import annotations

import fcntl
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

VERSION = "0.2.1"
HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
CACHE = Path(os.environ.get("SOCKWORK_PEER_CACHE", REPO / ".venv" / "peer-suites"))
SHIM = HERE / "poorconn_shim"
LOCK = Path(tempfile.gettempdir()) / "sockwork-poorconn-suite.lock"
# The suite takes ~280 s. After a failing test, its http_server fixture waits for
# ever in teardown (shutdown() of a server whose serve_forever() never ran), and
# pytest-timeout does not bound a failed test's teardown (it cancels its timer when
# the test fails): teardown_deadline.py, loaded into the run, fails such a teardown
# after TEARDOWN_DEADLINE (a shutdown() that works takes < 1 s) and the run goes on
# to its report. The longest test sleeps ~38 s. RUN_TIMEOUT is the last resort.
TEST_TIMEOUT = 120
TEARDOWN_DEADLINE = 20
RUN_TIMEOUT = 900


CHECK = """
import poorconn, poorconn._cli, poorconn.pytest_plugin._impl
import sockwork.compat.poorconn as compat
assert poorconn is compat, poorconn
assert poorconn._cli is compat._cli
assert poorconn.pytest_plugin._impl is compat.pytest_plugin._impl
print("poorconn ->", poorconn.__name__, "from", poorconn.__file__)
"""


def sdist() -> Path:
    """Return the path of poorconn's sdist, downloading it with pip if needed."""
    CACHE.mkdir(parents=True, exist_ok=True)
    name = f"poorconn-{VERSION}.tar.gz"
    path = CACHE / name
    if not path.exists():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--no-binary",
                ":all:",
                f"poorconn=={VERSION}",
                "--dest",
                str(CACHE),
            ],
            check=True,
        )
    if not path.exists():
        raise SystemExit(f"pip download did not produce {path}")
    return path


def unpack(archive: Path, into: Path) -> Path:
    """Unpack the sdist into ``into``; return its root with the poorconn package removed."""
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    root = into / f"poorconn-{VERSION}"
    shutil.rmtree(root / "poorconn")
    shutil.rmtree(root / "poorconn.egg-info", ignore_errors=True)
    return root


def plugin_spec() -> str:
    """How to name poorconn's pytest plugin so that pytest loads it as autoloading would.

    An installed poorconn declares the entry point ``pytest11: poorconn =
    poorconn.pytest_plugin`` (the shim maps the module to ours). Loading it by that
    name registers it as ``poorconn``, which the suite's ``pytest_plugins =
    ("poorconn",)`` then finds; loading ``poorconn.pytest_plugin`` by module name
    would make that line register the same module a second time.
    """
    entry_points = importlib.metadata.entry_points(group="pytest11")
    if any(ep.name == "poorconn" for ep in entry_points):
        return "poorconn"
    return "poorconn.pytest_plugin"


def main(args: list[str]) -> int:
    """Run the suite; return pytest's exit status."""
    archive = sdist()
    with tempfile.TemporaryDirectory(prefix="poorconn-suite-") as tmp:
        root = unpack(archive, Path(tmp))
        env = dict(os.environ)
        path = [str(SHIM), str(HERE), env.get("PYTHONPATH")]  # HERE: teardown_deadline
        env["PYTHONPATH"] = os.pathsep.join(filter(None, path))
        env.pop("PYTEST_ADDOPTS", None)
        # Only poorconn's plugin, as its pytest11 entry point would load it (also in
        # the suite's inner pytester runs, which read the environment): no other
        # installed plugin (sockwork's, Hypothesis's) takes part or slows them down.
        env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
        env["PYTEST_PLUGINS"] = plugin_spec()
        command = [
            sys.executable,
            "-m",
            "pytest",
            "tests",
            "-c",
            str(root / "tox.ini"),
            "--rootdir",
            str(root),
            "-p",
            "no:cacheprovider",
            "-p",
            "pytest_timeout",
            "-p",
            "teardown_deadline",
            "--timeout",
            str(TEST_TIMEOUT),
            "--teardown-deadline",
            str(TEARDOWN_DEADLINE),
            "-q",
            *args,
        ]
        # The name must lead to sockwork, never to an installed poorconn.
        subprocess.run([sys.executable, "-c", CHECK], cwd=root, env=env, check=True)
        with LOCK.open("w") as lock:
            start = time.monotonic()
            fcntl.flock(lock, fcntl.LOCK_EX)  # poorconn's tests use fixed ports
            waited = time.monotonic() - start
            if waited > 1:
                print(f"waited {waited:.0f} s for another run of poorconn's suite", flush=True)
            print(f"poorconn {VERSION}'s test suite against sockwork.compat.poorconn:", flush=True)
            try:
                return subprocess.run(command, cwd=root, env=env, timeout=RUN_TIMEOUT).returncode
            except subprocess.TimeoutExpired:  # subprocess.run has killed pytest
                print(f"poorconn's suite did not finish in {RUN_TIMEOUT} s: killed", flush=True)
                return 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
