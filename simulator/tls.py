"""TLS material for the simulator: one CA per state directory, a server certificate for loopback names.

The CA is kept in the state directory (`simulator-ca.pem`, and its key beside it) so that a restarted simulator
on the same state directory is trusted by clients that already read the CA file. Nothing here opens sockets.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path

import trustme

CA_FILE = "simulator-ca.pem"
CA_KEY_FILE = "simulator-ca-key.pem"
SERVER_NAMES = ("127.0.0.1", "localhost", "::1")


def load_or_create_ca(state_dir: Path) -> trustme.CA:
    """The CA of `state_dir`, created (and written) on first use."""
    cert_path, key_path = state_dir / CA_FILE, state_dir / CA_KEY_FILE
    if cert_path.exists() and key_path.exists():
        return trustme.CA.from_pem(cert_path.read_bytes(), key_path.read_bytes())
    ca = trustme.CA(organization_name="Entra ID User Sync simulator")
    _write_atomic(key_path, ca.private_key_pem.bytes(), mode=0o600)
    _write_atomic(cert_path, ca.cert_pem.bytes(), mode=0o644)
    return ca


def server_ssl_context(ca: trustme.CA, extra_names: tuple[str, ...] = ()) -> ssl.SSLContext:
    """A server context presenting a certificate valid for the loopback names (and `extra_names`)."""
    names = tuple(dict.fromkeys((*SERVER_NAMES, *extra_names)))
    cert = ca.issue_cert(*names, common_name="localhost")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    return context


def _write_atomic(path: Path, data: bytes, *, mode: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
