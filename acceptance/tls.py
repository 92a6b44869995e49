"""Clients over TLS, as a user's would: they trust only the deployment CA that
``terraform output`` gives (the broker's ``ca_certificate``) and check the broker's address
against its certificate. ``UserCa`` makes a CA of the user's own, for supplied certificates.

A test calls ``trust(out["ca_certificate"])`` once it has applied a broker; ``context()`` (for
pika and urllib) and ``ca_file()`` (for stomp.py, which takes a path) use that CA.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import ssl
import subprocess
import tempfile
from pathlib import Path

_CA: dict = {"pem": None, "file": None}


def trust(ca_pem: str) -> None:
    """Makes `ca_pem` (the deployment CA, PEM) the one CA the helpers' TLS clients trust."""
    if not ca_pem or "BEGIN CERTIFICATE" not in ca_pem:
        raise ValueError(f"not a PEM certificate: {ca_pem!r:.80}")
    if _CA["pem"] == ca_pem:
        return
    fd, path = tempfile.mkstemp(prefix="ferrymq-ca-", suffix=".pem")
    with os.fdopen(fd, "w") as f:
        f.write(ca_pem)
    _CA.update(pem=ca_pem, file=path)


def ca_file() -> str:
    if not _CA["file"]:
        raise RuntimeError("no CA trusted yet: call tls.trust(terraform output ca_certificate)")
    return _CA["file"]


def context() -> ssl.SSLContext:
    """A client context that verifies the broker's certificate chain and name (TLS 1.2+)."""
    ctx = ssl.create_default_context(cafile=ca_file())
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def client_context(pki_dir: Path) -> ssl.SSLContext:
    """A client of the agent's mutual-TLS listeners (agent API, metrics): the provider's
    certificate from ``pki init`` (``client.pem``, ``client-key.pem``), trusting only the
    deployment CA (``ca.pem``) and checking the agent's address against its certificate."""
    ctx = ssl.create_default_context(cafile=str(pki_dir / "ca.pem"))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(pki_dir / "client.pem"), str(pki_dir / "client-key.pem"))
    return ctx


def peer_certificate(address: str, port: int, context: ssl.SSLContext) -> dict:
    """The broker's certificate as a client with `context` sees it (verified, name checked)."""
    with socket.create_connection((address, port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=address) as s:
            return s.getpeercert()


class UserCa:
    """A CA of the user's own (not the deployment's), made with the ``openssl`` CLI, for the
    server certificates a user supplies (``server_certificate``). With a ``parent`` it is an
    intermediate CA of that one."""

    def __init__(self, workdir: Path, name: str, parent: "UserCa | None" = None):
        self.dir = workdir / name.lower().replace(" ", "-")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.parent = parent
        ext = self.dir / "ca.ext"
        ext.write_text("basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n"
                       "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n")
        if parent is None:
            _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                     "-keyout", "ca-key.pem", "-out", "ca.pem", "-days", "2", "-subj", f"/CN={name}",
                     "-addext", "basicConstraints=critical,CA:TRUE",
                     "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=self.dir)
        else:
            _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                     "-keyout", "ca-key.pem", "-out", "ca.csr", "-subj", f"/CN={name}", cwd=self.dir)
            parent.sign(self.dir / "ca.csr", self.dir / "ca.pem", ext)

    @property
    def pem(self) -> str:
        return (self.dir / "ca.pem").read_text()

    @property
    def chain_pem(self) -> str:
        """This CA and those above it, the root last: what ``ca_chain_pem`` takes."""
        return self.pem + (self.parent.chain_pem if self.parent else "")

    def sign(self, csr: Path, out: Path, ext: Path, days: int = 2) -> None:
        _openssl("x509", "-req", "-in", str(csr), "-CA", "ca.pem", "-CAkey", "ca-key.pem",
                 "-CAcreateserial", "-days", str(days), "-out", str(out), "-extfile", str(ext), cwd=self.dir)

    def issue(self, directory: Path, names: list[str], days: int = 30) -> Path:
        """A TLS server certificate for `names` (addresses and DNS names) in `directory`:
        ``cert.pem``, ``key.pem`` (PKCS#8, unencrypted) and ``chain.pem`` (this CA up to the
        root). Returns `directory`."""
        directory.mkdir(parents=True, exist_ok=True)
        sans = ",".join(("IP:" if _is_address(n) else "DNS:") + n for n in names)
        ext = directory / "server.ext"
        ext.write_text(f"subjectAltName={sans}\nextendedKeyUsage=serverAuth\n"
                       "keyUsage=critical,digitalSignature\nbasicConstraints=CA:FALSE\n")
        _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                 "-keyout", "key.pem", "-out", "server.csr", "-subj", f"/CN={names[0]}", cwd=directory)
        self.sign(directory / "server.csr", directory / "cert.pem", ext, days)
        (directory / "chain.pem").write_text(self.chain_pem)
        return directory


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


def _openssl(*args: str, cwd: Path) -> None:
    cp = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if cp.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args[:2])} failed: {cp.stderr.strip()[-800:]}")
