"""Clients over TLS, as a user's would: they trust only the deployment CA that
``terraform output`` gives (the broker's ``ca_certificate``) and check the broker's address
against its certificate.

A test calls ``trust(out["ca_certificate"])`` once it has applied a broker; ``context()`` (for
pika and urllib) and ``ca_file()`` (for stomp.py, which takes a path) use that CA.
"""

from __future__ import annotations

import os
import ssl
import tempfile

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
