"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
import shutil
import signal
import ssl
import subprocess

import pytest

# A failed test's teardown gets a deadline too (pytest-timeout drops it on failure).
pytest_plugins = ("tests.peers.teardown_deadline",)

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# A shell without job control starts a background command (`make test &`, a CI step
# run with `&` or nohup) with SIGINT ignored, and every program the tests start
# inherits that: the tests that stop a server with SIGINT or Ctrl-C then wait in vain
# (nine of them failed so). The suite stands for an interactive user: Ctrl-C works.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def require_binary(name: str) -> str:
    """Return the path of a peer program; skip without it locally, fail in CI.

    ``make test`` installs every peer, so in CI a missing one is a broken set-up,
    not a reason to skip.
    """
    path = shutil.which(name)
    if path is None:
        message = f"{name!r} is not installed (make test installs it with apt-get)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def tls_contexts(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server, client) TLS contexts with a throw-away self-signed certificate for localhost.

    The client trusts exactly that certificate: wrap with ``server_hostname="localhost"``.
    """
    openssl = require_binary("openssl")
    directory = tmp_path_factory.mktemp("tls")
    key, cert = directory / "key.pem", directory / "cert.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
        ],
        check=True,
        capture_output=True,
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.load_verify_locations(cert)
    return server, client
