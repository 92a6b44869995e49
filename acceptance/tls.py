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


# ---- TLS scan: which protocols and suites a listener accepts -------------------------------------

# TLS 1.2 suites a scan offers one group at a time (OpenSSL's names); the brokers' keys are ECDSA
# P-256, a supplied certificate may be RSA, the agent's are ECDSA.
CBC_SUITES = ("ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA:ECDHE-ECDSA-AES128-SHA256:"
              "ECDHE-ECDSA-AES256-SHA384:ECDHE-RSA-AES128-SHA:ECDHE-RSA-AES256-SHA:ECDHE-RSA-AES128-SHA256:"
              "ECDHE-RSA-AES256-SHA384:AES128-SHA:AES256-SHA:AES128-SHA256:AES256-SHA256")
CCM_SUITES = "ECDHE-ECDSA-AES128-CCM8:ECDHE-ECDSA-AES256-CCM8:ECDHE-ECDSA-AES128-CCM:ECDHE-ECDSA-AES256-CCM"
AEAD_SUITES = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305"
TLS13_CCM_SUITES = "TLS_AES_128_CCM_8_SHA256:TLS_AES_128_CCM_SHA256"


def handshake(address: str, port: int, version: ssl.TLSVersion, ciphers: str = "ALL",
              client: Path | None = None) -> tuple[str, str] | None:
    """One handshake offering only `version` and (below TLS 1.3) only `ciphers`, at OpenSSL's
    security level 0 so that old protocols and suites can be offered at all. Returns the
    negotiated (protocol, suite), or None when the server refuses. `client`: a PKI directory whose
    client certificate is presented (the agent's listeners require one). The server's certificate
    is not checked here: the scan is about what the server accepts, trust is checked elsewhere."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ctx.maximum_version = version
    ctx.set_ciphers(f"{ciphers}:@SECLEVEL=0")
    if client is not None:
        ctx.load_cert_chain(str(client / "client.pem"), str(client / "client-key.pem"))
    try:
        with socket.create_connection((address, port), timeout=5) as raw:
            with ctx.wrap_socket(raw) as s:
                return s.version(), s.cipher()[0]
    except (ssl.SSLError, ConnectionError, socket.timeout):
        return None
    except OSError as e:  # a reset during the handshake
        if e.errno is None:
            raise
        return None


def handshake_tls13(address: str, port: int, ciphersuites: str, client: Path | None = None) -> str | None:
    """A TLS 1.3 handshake offering only `ciphersuites` (Python cannot choose TLS 1.3 suites:
    ``openssl s_client``). Returns the negotiated suite, or None when the server refuses."""
    cmd = ["openssl", "s_client", "-connect", f"{address}:{port}", "-tls1_3", "-ciphersuites", ciphersuites,
           "-brief"]
    if client is not None:
        cmd += ["-cert", str(client / "client.pem"), "-key", str(client / "client-key.pem")]
    # A server may neither finish nor refuse the handshake (ActiveMQ's MQTT connector keeps the
    # socket open): what s_client printed by then decides.
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = p.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        p.kill()
        out, _ = p.communicate()
    if "Ciphersuite:" not in out:
        return None
    return out.split("Ciphersuite:", 1)[1].split()[0]


def accepted_tls12_suites(address: str, port: int, client: Path | None = None) -> list[str]:
    """Every TLS 1.2 suite this OpenSSL can offer that the server accepts, one handshake each."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.set_ciphers("ALL:@SECLEVEL=0")
    names = [c["name"] for c in ctx.get_ciphers() if c["protocol"] != "TLSv1.3"]
    return [n for n in names if handshake(address, port, ssl.TLSVersion.TLSv1_2, n, client)]


def scan(address: str, port: int, client: Path | None = None) -> dict:
    """What a listener accepts: TLS 1.0 and 1.1 (any suite), TLS 1.2 with CBC suites only, with
    CCM and CCM-8 suites only, with AEAD suites; TLS 1.3 (default suites) and TLS 1.3 with CCM
    suites only. Each value is what was negotiated, or None (refused)."""
    v = ssl.TLSVersion
    return {
        "TLSv1": handshake(address, port, v.TLSv1, client=client),
        "TLSv1.1": handshake(address, port, v.TLSv1_1, client=client),
        "TLSv1.2 CBC only": handshake(address, port, v.TLSv1_2, CBC_SUITES, client),
        "TLSv1.2 ECDHE-ECDSA-AES128-SHA only": handshake(address, port, v.TLSv1_2, "ECDHE-ECDSA-AES128-SHA", client),
        "TLSv1.2 CCM/CCM-8 only": handshake(address, port, v.TLSv1_2, CCM_SUITES, client),
        "TLSv1.2 AEAD": handshake(address, port, v.TLSv1_2, AEAD_SUITES, client),
        "TLSv1.3": handshake(address, port, v.TLSv1_3, client=client),
        "TLSv1.3 CCM only": handshake_tls13(address, port, TLS13_CCM_SUITES, client),
    }


ACCEPTED = frozenset({"TLSv1.2 AEAD", "TLSv1.3"})


def assert_aead_only(address: str, port: int, client: Path | None = None, refusals_only: bool = False) -> dict:
    """The listener refuses TLS 1.0, 1.1, TLS 1.2 CBC and CCM suites and TLS 1.3 CCM suites, and
    accepts TLS 1.2 with an AEAD suite and TLS 1.3 (unless `refusals_only`: a listener known to
    accept no handshake at all). Returns the scan (for the test's output)."""
    got = scan(address, port, client)
    wrong = {k: r for k, r in got.items()
             if (r is not None and k not in ACCEPTED) or (r is None and k in ACCEPTED and not refusals_only)}
    assert not wrong, f"{address}:{port}: unexpected results {wrong} (all: {got})"
    return got
