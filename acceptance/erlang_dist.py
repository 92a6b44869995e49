"""What an attacker on the network sees of a RabbitMQ node's Erlang distribution (port 25672)
and epmd (4369), and what an unprivileged user of the host reads of a broker's data.

A single instance keeps both on loopback; a cluster node serves its distribution over TLS and
takes only peers presenting a certificate of the deployment's PKI."""

from __future__ import annotations

import os
import socket
import ssl
import stat
import struct
import subprocess
import sys
from pathlib import Path

DIST_PORT = 25672
EPMD_PORT = 4369
RABBITMQCTL = "/usr/lib/rabbitmq/bin/rabbitmqctl"

_CONNECT = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3).close()
    print("connected")
except ConnectionRefusedError:
    print("refused")
except OSError as e:
    print(f"error {e}")
"""


def connect_from(netns: str, address: str, port: int) -> str:
    """A TCP connect from inside `netns`: "connected", "refused" or "error ..."."""
    res = subprocess.run(["nsenter", f"--net=/run/netns/{netns}", sys.executable, "-c", _CONNECT,
                          address, str(port)], capture_output=True, text=True, timeout=30)
    return res.stdout.strip() or f"error {res.stderr.strip()[-200:]}"


# Distribution flags an OTP 25 node takes (its mandatory ones, DFLAG_HANDSHAKE_23 among them).
FLAGS = 0x17FFFFF


def rpc_os_cmd(netns: str, node: str, cookie: str) -> str:
    """The attack: an Erlang node in `netns` that knows the cookie asks `node` to run `id`
    (`rpc:call(Node, os, cmd, ["id"])`). Prints `uid=...` when it ran, else the failure
    (`{badrpc,nodedown}`). The attacking node neither listens nor starts an epmd."""
    expr = f'io:format("~p~n", [rpc:call(list_to_atom("{node}"), os, cmd, ["id"], 10000)]), halt().'
    res = subprocess.run(["nsenter", f"--net=/run/netns/{netns}", "erl", "-noshell", "-name",
                          f"attacker-{os.getpid()}@127.0.0.1", "-start_epmd", "false", "-dist_listen", "false",
                          "-setcookie", cookie, "-eval", expr],
                         capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin", "HOME": "/tmp"})
    return (res.stdout + res.stderr).strip()


def send_name(name: str = "attacker@10.0.0.1", length_bytes: int = 2) -> bytes:
    """An Erlang distribution handshake's first message (OTP 23+'s `N`: flags, creation, name)
    after its length: 2 bytes over plain TCP (`inet_tcp_dist`), 4 inside TLS
    (`inet_tls_dist`)."""
    body = b"N" + struct.pack(">QIH", FLAGS, 1, len(name)) + name.encode()
    return struct.pack(">H" if length_bytes == 2 else ">I", len(body)) + body


def plain_handshake_answer(address: str, port: int = DIST_PORT) -> bytes:
    """What a node answers a plain-TCP `send_name`: b"" when it closes the connection. A plain
    distribution answers a status message (`s` after the length, e.g. b"\\x00\\x03sok")."""
    with socket.create_connection((address, port), timeout=5) as s:
        s.sendall(send_name())
        s.settimeout(5)
        got = b""
        try:
            while len(got) < 64:
                chunk = s.recv(64)
                if not chunk:
                    break
                got += chunk
        except (socket.timeout, ConnectionResetError):
            pass
        return got


def tls_attempt(address: str, port: int, *, version: ssl.TLSVersion, certificate: tuple | None = None,
                ca_file: str | None = None) -> str:
    """A TLS client against a node's distribution: "refused: ..." when the handshake (or, with
    TLS 1.3, the first read after it, where a server's refusal of the client's certificate
    arrives) fails, "accepted" when the node takes the client. `certificate`: (cert, key) files
    to present; `ca_file`: verify the node against it (else no verification)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ctx.maximum_version = version
    if ca_file:
        ctx.load_verify_locations(ca_file)
        ctx.check_hostname = True
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if certificate:
        ctx.load_cert_chain(*certificate)
    with socket.create_connection((address, port), timeout=5) as raw:
        try:
            with ctx.wrap_socket(raw, server_hostname=address if ca_file else None) as s:
                s.settimeout(3)
                # A distribution handshake in TLS: a node that took the client answers it
                # (`sok`: go on with the cookie challenge).
                s.sendall(send_name(length_bytes=4))
                got = s.recv(64)
                return "accepted" if got else "refused: closed after the handshake"
        except ssl.SSLError as e:
            return f"refused: {e.reason or e}"
        except (ConnectionResetError, BrokenPipeError, socket.timeout) as e:
            return f"refused: {type(e).__name__}"


def read_as_nobody(path: Path) -> subprocess.CompletedProcess:
    """`cat` of a file as the unprivileged user nobody."""
    res = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "cat", str(path)],
                         capture_output=True, timeout=30)
    return subprocess.CompletedProcess(res.args, res.returncode, res.stdout.decode("latin-1"),
                                       res.stderr.decode(errors="replace"))


def open_to_others(root: Path) -> list[str]:
    """Files and directories under `root` (itself included) with any bit for others."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        for p in [dirpath, *(os.path.join(dirpath, n) for n in filenames)]:
            st = os.lstat(p)
            if not stat.S_ISLNK(st.st_mode) and st.st_mode & 0o007:
                found.append(f"{p} {stat.filemode(st.st_mode)}")
    return found


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def assert_private(files: list[Path], data_root: Path) -> None:
    """Each file exists, has no bit for others, and nobody cannot read it; nothing under
    `data_root` is open to others."""
    for f in files:
        assert f.is_file(), f"{f} does not exist"
        assert mode(f) & 0o007 == 0, f"{f} is {oct(mode(f))}"
        res = read_as_nobody(f)
        assert res.returncode != 0 and "Permission denied" in res.stderr, \
            f"nobody read {f}: rc {res.returncode} {res.stderr.strip()}"
    leaks = open_to_others(data_root)
    assert leaks == [], f"open to others under {data_root}: {leaks[:10]}"


def rabbitmqctl(host, broker_id: str, node: str, *args: str, clustered: bool = False) -> subprocess.CompletedProcess:
    """rabbitmqctl against a node of the host, as the agent runs it: the distribution's
    arguments of a single instance (loopback) or a cluster node (TLS with the node's
    certificate)."""
    engine_dir = host.brokers_dir / broker_id / "engine"
    ctl_args = "-kernel inet_dist_use_interface {127,0,0,1}"
    if clustered:
        ctl_args = f"-proto_dist inet_tls -ssl_dist_optfile {engine_dir / 'dist-tls.conf'} " + ctl_args
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(engine_dir), "LANG": "C.UTF-8",
           "RABBITMQ_USE_LONGNAME": "true", "RABBITMQ_CTL_ERL_ARGS": ctl_args,
           # Should the CLI find no epmd, the one it starts listens where the node's would.
           "ERL_EPMD_ADDRESS": f"127.0.0.1,{host.address}" if clustered else "127.0.0.1"}
    cmd = ["nsenter", f"--net=/run/netns/{host.netns}", "setpriv", "--reuid=rabbitmq", "--regid=rabbitmq",
           "--init-groups", RABBITMQCTL, "--longnames", "-n", node, *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
