#!/usr/bin/env python3
"""FerryMQ lab: appliance hosts as Linux network namespaces on one machine.

The one place that makes appliance hosts, for the acceptance tests and for the demo:

* a bridge ``<prefix>0`` holding ``<net>.1/24`` in the root namespace;
* per host ``<prefix>-h<i>``: a network namespace, a veth pair (``<prefix>-h<i>`` on the bridge,
  ``eth0`` inside) with ``<net>.<10+i>/24``, a sparse file attached to a loop device (the host's
  blank "EBS" disk), a server certificate, and a ``ferrymq-agent`` started with
  ``nsenter --net`` (not ``ip netns exec``: the agent's mounts must live in the root mount
  namespace, visible to us and surviving an agent restart);
* one deployment PKI (``ferrymq-agent pki init``) whose client certificate Terraform's provider uses;
* on request, shared directories (``lab.shared_dir(name)``): one directory every host sees, the
  acceptance stand-in for an NFS export (Amazon MQ's EFS) of ActiveMQ active/standby. The hosts
  share the machine's filesystem and mount namespace, and this kernel has no NFS client.

Teardown kills every process in the lab's namespaces, unmounts everything under the lab
directory, detaches the lab's loop devices, deletes the namespaces, the links and the files. It
also removes the leftovers of an earlier run with the same prefix. Only interfaces, namespaces and
loop devices of this prefix / lab directory are ever touched.

Also here: ``Terraform``, a runner for the real Terraform 1.0.3 with the provider from
``target/debug`` (dev_overrides) and the lab's client certificate.

Standard library only, so ``python3 acceptance/lab.py up --hosts 1`` works with any Python 3.9+.

CLI::

    python3 acceptance/lab.py up --hosts 3 [--prefix fmqt] [--net 10.79.0]
    python3 acceptance/lab.py status|env [--prefix fmqt]
    python3 acceptance/lab.py down [--prefix fmqt]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Optional

import tls

REPO = Path(__file__).resolve().parent.parent
WORK = REPO / ".work"
TERRAFORM = Path(os.environ.get("FERRYMQ_TERRAFORM", "/opt/ferrymq/terraform-1.0.3/terraform"))
BIN_DIR = Path(os.environ.get("FERRYMQ_BIN_DIR", str(REPO / "target" / "debug")))
AGENT_BIN = "ferrymq-agent"
PROVIDER_BIN = "terraform-provider-ferrymq"
AGENT_PORT = 7443
# The agent's Prometheus metrics listener (GET /metrics): on the host's address HTTPS only, with a
# client certificate of the deployment CA (plain HTTP only on loopback).
METRICS_PORT = 9404
AMQP_PORT = 5672
CONSOLE_PORT = 15672
# What FerryMQ brokers serve: TLS only, on Amazon MQ's port numbers.
AMQPS_PORT = 5671
CONSOLE_TLS_PORT = 15671
# ActiveMQ's listeners, on Amazon MQ's port numbers.
OPENWIRE_PORT = 61617
STOMP_PORT = 61614
MQTT_PORT = 8883
ACTIVEMQ_JAR = "activemq.jar"

RESULTS_FILE = Path(__file__).resolve().parent / "results" / "results.json"

DEFAULT_PREFIX = "fmqt"
DEFAULT_NET = "10.79.0"
DEFAULT_VOLUME_MIB = 1024
AGENT_READY_TIMEOUT = 60.0

_PREFIX_RE = re.compile(r"^fmq[a-z0-9]{0,6}$")
_SHARED_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,40}$")
_NET_RE = re.compile(r"^10\.79\.\d{1,3}$")
_loop_lock = threading.Lock()
_netns_lock = threading.Lock()
_save_lock = threading.Lock()


class LabError(Exception):
    """Something the lab could not do; the message says what and why."""


def run(cmd: list, check: bool = True, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    """Runs a command, capturing its output; raises LabError with the output on failure."""
    kw.setdefault("stdin", subprocess.DEVNULL)
    try:
        cp = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, **kw)
    except FileNotFoundError as e:
        raise LabError(f"command not found: {cmd[0]} ({e})") from None
    except subprocess.TimeoutExpired:
        raise LabError(f"timed out after {timeout:.0f} s: {' '.join(map(str, cmd))}") from None
    if check and cp.returncode != 0:
        raise LabError(
            f"command failed (exit {cp.returncode}): {' '.join(map(str, cmd))}\n"
            f"{cp.stdout.strip()}\n{cp.stderr.strip()}".rstrip()
        )
    return cp


def record_result(key: str, value, path: Path = RESULTS_FILE) -> None:
    """Merges one figure into the results file (JSON object), keeping the other keys."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            data = {}
    except (OSError, json.JSONDecodeError):
        data = {}
    data[key] = value
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def tail(path: Path, lines: int = 40) -> str:
    try:
        data = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"(no {path})"
    return "\n".join(data[-lines:])


def netns_pids(netns: str) -> list[int]:
    """PIDs of the live processes in a named network namespace (zombies excluded)."""
    cp = run(["ip", "netns", "pids", netns], check=False)
    if cp.returncode != 0:
        return []
    return [int(x) for x in cp.stdout.split() if x.isdigit()]


def proc_comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def proc_cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def proc_uids(pid: int) -> list[int]:
    """The real, effective, saved and filesystem uids of a process ([] once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Uid:"):
                return [int(u) for u in line.split()[1:]]
    except OSError:
        pass
    return []


def is_rabbitmq_node(comm: str, cmdline: str) -> bool:
    """A RabbitMQ node's VM, not one of the short-lived VMs on the same binary: ``rabbitmqctl``
    (an escript) or the ``epmd-starter`` a node spawns about once a minute to make sure epmd
    runs (rabbit_epmd_monitor), which lives for half a second beside the node."""
    return comm == "beam.smp" and "-escript" not in cmdline and "-sname epmd-starter-" not in cmdline


def is_activemq_broker(comm: str, cmdline: str) -> bool:
    """An ActiveMQ broker's JVM (running activemq.jar), not another java."""
    return comm == "java" and ACTIVEMQ_JAR in cmdline


def pid_alive(pid: int) -> bool:
    """True if the process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # state is the field after the parenthesised comm
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def mounts() -> list[tuple[str, str]]:
    """(source, mount point) of every mount in our mount namespace."""
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        mount_point = left.split()[4].encode().decode("unicode_escape")
        source = right.split()[1] if right else ""
        out.append((source, mount_point))
    return out


def loop_devices() -> list[tuple[str, str]]:
    """(device, backing file) of every attached loop device."""
    cp = run(["losetup", "--list", "--noheadings", "--output", "NAME,BACK-FILE"], check=False)
    out = []
    for line in cp.stdout.splitlines():
        parts = line.split(None, 1)
        if len(parts) == 2:
            back = parts[1].strip()
            if back.endswith(" (deleted)"):
                back = back[: -len(" (deleted)")]
            out.append((parts[0], back))
    return out


def wait_for_port(address: str, port: int, timeout: float, alive=lambda: True, what: str = "") -> float:
    """Polls until address:port accepts a TCP connection; returns the seconds it took."""
    start = time.monotonic()
    deadline = start + timeout
    while True:
        try:
            with socket.create_connection((address, port), timeout=1.0):
                return time.monotonic() - start
        except OSError:
            pass
        if not alive():
            raise LabError(f"{what or address} exited before {address}:{port} accepted connections")
        if time.monotonic() > deadline:
            raise LabError(f"{what or address}: {address}:{port} did not accept connections within {timeout:.0f} s")
        time.sleep(0.1)


@dataclasses.dataclass
class Host:
    index: int
    name: str  # h1, h2, ...
    netns: str  # <prefix>-h1
    veth: str  # root-side veth, same name as the namespace
    address: str
    dir: str
    loop_file: str
    loop: str = ""  # /dev/loopN, the host's blank volume
    agent_pid: int = 0

    @property
    def state_dir(self) -> Path:
        return Path(self.dir) / "state"

    @property
    def tls_dir(self) -> Path:
        return Path(self.dir) / "tls"

    @property
    def log_path(self) -> Path:
        return Path(self.dir) / "agent.log"

    @property
    def brokers_dir(self) -> Path:
        return self.state_dir / "brokers"

    @property
    def agent_endpoint(self) -> str:
        return f"{self.address}:{AGENT_PORT}"

    @property
    def metrics_url(self) -> str:
        return f"https://{self.address}:{METRICS_PORT}/metrics"

    @property
    def pki_dir(self) -> Path:
        """The lab's PKI (`Lab.pki_dir`): hosts live beside it in the lab's root."""
        return Path(self.dir).parent / "pki"

    def metrics_context(self) -> ssl.SSLContext:
        """A scraper's TLS client: the lab's client certificate (the provider's, from `pki
        init`), verifying the agent's certificate and address against the deployment CA."""
        return tls.client_context(self.pki_dir)

    def broker_dirs(self) -> list[Path]:
        d = self.brokers_dir
        return sorted(d.iterdir()) if d.is_dir() else []

    def pids(self) -> list[int]:
        return netns_pids(self.netns)

    def processes(self) -> list[tuple[int, str, str]]:
        """(pid, comm, cmdline) of every live process in the host's namespace."""
        return [(p, proc_comm(p), proc_cmdline(p)) for p in self.pids() if pid_alive(p)]

    def pids_named(self, comm: str) -> list[int]:
        return [p for p, c, _ in self.processes() if c == comm]

    def rabbitmq_pids(self) -> list[int]:
        """The RabbitMQ nodes in the host's namespace (see `is_rabbitmq_node`)."""
        return [p for p, c, cmd in self.processes() if is_rabbitmq_node(c, cmd)]

    def activemq_pids(self) -> list[int]:
        """The ActiveMQ brokers in the host's namespace: ``java`` processes running activemq.jar."""
        return [p for p, c, cmd in self.processes() if is_activemq_broker(c, cmd)]

    def java_pids(self) -> list[int]:
        return self.pids_named("java")

    def port_open(self, port: int, timeout: float = 1.0) -> bool:
        """True if the host's address accepts a TCP connection on port (from the root namespace)."""
        try:
            with socket.create_connection((self.address, port), timeout=timeout):
                return True
        except OSError:
            return False

    def agent_log_tail(self, lines: int = 60) -> str:
        return tail(self.log_path, lines)


class Lab:
    """A set of appliance hosts. ``Lab(prefix).up(n)`` makes them; ``down()`` removes everything."""

    def __init__(
        self,
        prefix: str = DEFAULT_PREFIX,
        net: str = DEFAULT_NET,
        root: Optional[Path] = None,
        volume_mib: int = DEFAULT_VOLUME_MIB,
        bin_dir: Path = BIN_DIR,
    ):
        if not _PREFIX_RE.match(prefix):
            raise LabError(f"prefix {prefix!r}: must match {_PREFIX_RE.pattern} (interface names are limited to 15 chars)")
        if not _NET_RE.match(net) or not 0 <= int(net.rsplit(".", 1)[1]) <= 255:
            raise LabError(f"net {net!r}: must be 10.79.X (a /24 of the lab's own)")
        self.prefix = prefix
        self.net = net
        self.root = Path(root) if root else WORK / f"lab-{prefix}"
        self.volume_mib = volume_mib
        self.bin_dir = Path(bin_dir)
        self.bridge = f"{prefix}0"
        self.hosts: list[Host] = []
        self._procs: dict[str, subprocess.Popen] = {}

    # ---- paths -------------------------------------------------------------------------------

    @property
    def gateway(self) -> str:
        return f"{self.net}.1"

    @property
    def pki_dir(self) -> Path:
        return self.root / "pki"

    @property
    def state_file(self) -> Path:
        return self.root / "lab.json"

    @property
    def shared_root(self) -> Path:
        return self.root / "shared"

    def shared_dir(self, name: str) -> Path:
        """A directory that every host of the lab sees at the same absolute path: what an NFS
        export mounted on each host would be (Amazon MQ's EFS for ActiveMQ active/standby).

        The hosts are network namespaces sharing the machine's filesystem (and this kernel has no
        NFS client), so a plain directory under the lab directory is shared by construction. It
        is empty and root-owned (0755) when made, like a fresh export; it goes with the lab at
        teardown. Idempotent: the same name gives the same directory."""
        if not _SHARED_NAME_RE.match(name):
            raise LabError(f"shared directory name {name!r}: must match {_SHARED_NAME_RE.pattern}")
        if not self.root.is_dir():
            raise LabError(f"the lab {self.prefix} is not up (no {self.root})")
        d = self.shared_root / name
        d.mkdir(parents=True, exist_ok=True)
        for p in (self.shared_root, d):
            os.chmod(p, 0o755)
        return d

    def shared_dirs(self) -> list[Path]:
        return sorted(self.shared_root.iterdir()) if self.shared_root.is_dir() else []

    @property
    def agent_bin(self) -> Path:
        return self.bin_dir / AGENT_BIN

    @property
    def provider_bin(self) -> Path:
        return self.bin_dir / PROVIDER_BIN

    def provider_env(self) -> dict:
        """FERRYMQ_* variables for the provider: the deployment CA and the client certificate."""
        return {
            "FERRYMQ_CA_CERT": str(self.pki_dir / "ca.pem"),
            "FERRYMQ_CLIENT_CERT": str(self.pki_dir / "client.pem"),
            "FERRYMQ_CLIENT_KEY": str(self.pki_dir / "client-key.pem"),
        }

    # ---- persistence -------------------------------------------------------------------------

    def save(self) -> None:
        data = {
            "prefix": self.prefix,
            "net": self.net,
            "bridge": self.bridge,
            "bin_dir": str(self.bin_dir),
            "pki_dir": str(self.pki_dir),
            "hosts": [dataclasses.asdict(h) for h in self.hosts],
        }
        # Hosts start in parallel threads, each saving: one writer at a time.
        with _save_lock:
            tmp = self.state_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(data, indent=2) + "\n")
            tmp.replace(self.state_file)

    @classmethod
    def load(cls, prefix: str = DEFAULT_PREFIX, root: Optional[Path] = None) -> "Lab":
        root = Path(root) if root else WORK / f"lab-{prefix}"
        try:
            data = json.loads((root / "lab.json").read_text())
        except FileNotFoundError:
            raise LabError(f"no lab with prefix {prefix!r} is up (no {root / 'lab.json'})") from None
        lab = cls(prefix=data["prefix"], net=data["net"], root=root, bin_dir=Path(data["bin_dir"]))
        lab.hosts = [Host(**h) for h in data["hosts"]]
        return lab

    # ---- checks ------------------------------------------------------------------------------

    def check_prerequisites(self, agents: bool = True) -> None:
        problems = []
        if os.geteuid() != 0:
            problems.append("must run as root (network namespaces, loop devices, mounts)")
        for tool in ("ip", "losetup", "nsenter", "blkid", "umount", "truncate"):
            if not shutil.which(tool):
                problems.append(f"missing command {tool!r} (run scripts/setup-host)")
        if agents and not os.access(self.agent_bin, os.X_OK):
            problems.append(f"missing {self.agent_bin} (run `cargo build --workspace`)")
        if agents and not Path("/usr/lib/rabbitmq/bin/rabbitmq-server").exists():
            problems.append("missing RabbitMQ (/usr/lib/rabbitmq/bin/rabbitmq-server; run scripts/setup-host)")
        if problems:
            raise LabError("cannot make the lab:\n  - " + "\n  - ".join(problems))

    def _check_subnet_free(self) -> None:
        cp = run(["ip", "-j", "-4", "addr", "show"], check=False)
        try:
            links = json.loads(cp.stdout or "[]")
        except json.JSONDecodeError:
            return
        for link in links:
            for a in link.get("addr_info", []):
                if a.get("local", "").startswith(self.net + ".") and link.get("ifname") != self.bridge:
                    raise LabError(
                        f"{self.net}.0/24 is already in use on interface {link.get('ifname')} "
                        f"(another lab? `python3 acceptance/lab.py down --prefix ...`); pick another --net"
                    )

    # ---- up ----------------------------------------------------------------------------------

    def up(self, hosts: int = 1, agents: bool = True) -> float:
        """Makes the bridge, the PKI and `hosts` hosts (in parallel); returns the seconds taken."""
        if not 1 <= hosts <= 8:
            raise LabError("hosts: 1..8 (one loop device each; few exist on these machines)")
        start = time.monotonic()
        self.check_prerequisites(agents=agents)
        self.cleanup()  # leftovers of an earlier (crashed) run with this prefix
        self._check_subnet_free()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            os.chmod(self.root, 0o755)
            self.hosts = [
                Host(
                    index=i,
                    name=f"h{i}",
                    netns=f"{self.prefix}-h{i}",
                    veth=f"{self.prefix}-h{i}",
                    address=f"{self.net}.{10 + i}",
                    dir=str(self.root / f"h{i}"),
                    loop_file=str(self.root / f"h{i}" / "volume.img"),
                )
                for i in range(1, hosts + 1)
            ]
            run(["ip", "link", "add", self.bridge, "type", "bridge"])
            run(["ip", "addr", "add", f"{self.gateway}/24", "dev", self.bridge])
            run(["ip", "link", "set", self.bridge, "up"])
            if agents:
                self.pki_dir.parent.mkdir(parents=True, exist_ok=True)
                run([self.agent_bin, "pki", "init", "--dir", self.pki_dir])
            self.save()
            with concurrent.futures.ThreadPoolExecutor(max_workers=hosts) as pool:
                futures = [pool.submit(self._make_host, h, agents) for h in self.hosts]
                errors = [f.exception() for f in futures if f.exception()]
            self.save()
            if errors:
                raise LabError("\n".join(str(e) for e in errors))
        except BaseException:
            try:
                self.down()
            except Exception as e:  # keep the original error; report the cleanup one
                print(f"lab: cleanup after a failed up also failed: {e}", file=sys.stderr)
            raise
        return time.monotonic() - start

    def add_host(self, volume: bool = False) -> Host:
        """One more host in a running lab (the next index), with an agent; without a volume
        unless asked (a load-balancer host needs none, and loop devices are few). For a test
        module that needs more hosts than the run's lab has; ``remove_host`` takes it away."""
        i = max((h.index for h in self.hosts), default=0) + 1
        h = Host(index=i, name=f"h{i}", netns=f"{self.prefix}-h{i}", veth=f"{self.prefix}-h{i}",
                 address=f"{self.net}.{10 + i}", dir=str(self.root / f"h{i}"),
                 loop_file=str(self.root / f"h{i}" / "volume.img"))
        self.hosts.append(h)
        self.save()
        try:
            self._make_host(h, agent=True, volume=volume)
        except BaseException:
            self.remove_host(h)
            raise
        self.save()
        return h

    def remove_host(self, h: Host) -> None:
        """Removes a host made by add_host: its processes, volume, namespace, link and files."""
        deadline = time.monotonic() + 30
        while (pids := [p for p in netns_pids(h.netns) if pid_alive(p)]) and time.monotonic() < deadline:
            for p in pids:
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)
        proc = self._procs.pop(h.name, None)
        if proc is not None:
            proc.wait(timeout=5)
        if h.loop:
            run(["losetup", "-d", h.loop], check=False)
        run(["ip", "netns", "delete", h.netns], check=False)
        run(["ip", "link", "delete", h.veth], check=False)
        shutil.rmtree(h.dir, ignore_errors=True)
        self.hosts = [x for x in self.hosts if x.name != h.name]
        self.save()

    def _make_host(self, h: Host, agent: bool, volume: bool = True) -> None:
        Path(h.dir).mkdir(parents=True, exist_ok=True)
        h.state_dir.mkdir(parents=True, exist_ok=True)
        with _netns_lock:
            run(["ip", "netns", "add", h.netns])
        run(["ip", "link", "add", h.veth, "type", "veth", "peer", "name", "eth0", "netns", h.netns])
        run(["ip", "link", "set", h.veth, "master", self.bridge, "up"])
        run(["ip", "-n", h.netns, "addr", "add", f"{h.address}/24", "dev", "eth0"])
        run(["ip", "-n", h.netns, "link", "set", "lo", "up"])
        run(["ip", "-n", h.netns, "link", "set", "eth0", "up"])
        # The host's disk: a sparse file on a loop device, blank (the agent formats it).
        if volume:
            run(["truncate", "-s", f"{self.volume_mib}M", h.loop_file])
            h.loop = self._attach_loop(h.loop_file)
        if agent:
            h.tls_dir.parent.mkdir(parents=True, exist_ok=True)
            self.issue_host(h)
            self.start_agent(h)

    def issue_host(self, h: Host, lifetime: Optional[str] = None) -> None:
        """Issues h's agent certificate and broker CA. The broker CA may sign, besides h's address,
        the lab's virtual IPs ({net}.96-127) and names under ``acceptance.test`` (the tests'
        ``certificate_names``), as an operator would list them (``pki issue-host --name``)."""
        cmd = [self.agent_bin, "pki", "issue-host", "--dir", self.pki_dir, "--address", h.address,
               "--out", h.tls_dir, "--name", f"{self.net}.96/27", "--name", "acceptance.test"]
        if lifetime:
            cmd += ["--lifetime", lifetime]
        run(cmd)

    def _attach_loop(self, path: str) -> str:
        last = ""
        for _attempt in range(5):
            with _loop_lock:
                cp = run(["losetup", "--find", "--show", path], check=False)
            if cp.returncode == 0 and cp.stdout.strip().startswith("/dev/loop"):
                return cp.stdout.strip()
            last = (cp.stderr or cp.stdout).strip()
            if "could not find any free loop device" in last or "No such device" in last:
                used = "\n".join(f"    {d} -> {b}" for d, b in loop_devices())
                raise LabError(
                    f"no free loop device for {path}: only /dev/loop0-7 exist here and other processes "
                    f"may hold them. In use now:\n{used or '    (none listed)'}\n"
                    "Free some (losetup -d /dev/loopN, only if they are yours) or make fewer hosts."
                )
            time.sleep(0.2)  # EBUSY race with another losetup: try again
        raise LabError(f"losetup --find --show {path} failed: {last}")

    # ---- agents ------------------------------------------------------------------------------

    def host(self, name_or_index) -> Host:
        for h in self.hosts:
            if name_or_index in (h.name, h.index, h.address, h.netns):
                return h
        raise LabError(f"no host {name_or_index!r} in the lab")

    def start_agent(self, h: Host, timeout: float = AGENT_READY_TIMEOUT) -> float:
        """Starts h's agent in its namespace; returns once its port accepts (seconds taken)."""
        env = dict(os.environ)
        env.setdefault("FERRYMQ_LOG", "info")
        env["RUST_BACKTRACE"] = env.get("RUST_BACKTRACE", "1")
        log = open(h.log_path, "ab")
        log.write(f"\n===== lab: starting agent at {time.strftime('%H:%M:%S')} =====\n".encode())
        log.flush()
        cmd = [
            "nsenter", f"--net=/run/netns/{h.netns}", "--",
            str(self.agent_bin), "serve",
            "--listen", h.agent_endpoint,
            "--state-dir", str(h.state_dir),
            "--tls-dir", str(h.tls_dir),
            "--metrics-listen", f"{h.address}:{METRICS_PORT}",
        ]
        # Own session: the agent (and the engines it starts) outlive this Python process and are
        # not hit by a Ctrl-C meant for it.
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True, cwd="/")
        log.close()
        self._procs[h.name] = proc
        h.agent_pid = proc.pid  # nsenter execs the agent: same PID
        self.save()
        try:
            return wait_for_port(h.address, AGENT_PORT, timeout, alive=lambda: proc.poll() is None,
                                 what=f"agent of {h.name} ({h.netns})")
        except LabError as e:
            raise LabError(f"{e}\n--- {h.log_path} (tail) ---\n{h.agent_log_tail()}") from None

    def kill_agent(self, h: Host, sig: int = signal.SIGKILL, timeout: float = 30) -> None:
        """Sends sig to h's agent and waits until it is gone. Its engines are left alone."""
        pid = h.agent_pid
        if not pid or not pid_alive(pid):
            return
        os.kill(pid, sig)
        proc = self._procs.pop(h.name, None)
        if proc is not None:
            proc.wait(timeout=timeout)
        else:
            deadline = time.monotonic() + timeout
            while pid_alive(pid):
                if time.monotonic() > deadline:
                    raise LabError(f"agent {pid} of {h.name} did not exit after signal {sig}")
                time.sleep(0.05)
        h.agent_pid = 0
        self.save()

    def agent_alive(self, h: Host) -> bool:
        return bool(h.agent_pid) and pid_alive(h.agent_pid)

    # ---- faults: a host's link, and where a virtual IP is --------------------------------------

    def link_down(self, h: Host) -> None:
        """Cuts h off the network (its cable pulled): the bridge-side veth goes down, so h's
        eth0 loses its carrier. Its processes live on; nothing reaches them and they reach nothing."""
        run(["ip", "link", "set", h.veth, "down"])

    def link_up(self, h: Host) -> None:
        """Plugs h back in (undoes link_down)."""
        run(["ip", "link", "set", h.veth, "master", self.bridge, "up"])

    def link_is_up(self, h: Host) -> bool:
        cp = run(["ip", "-j", "link", "show", h.veth], check=False)
        try:
            return "UP" in json.loads(cp.stdout or "[]")[0].get("flags", [])
        except (json.JSONDecodeError, IndexError):
            return False

    def address_holders(self, address: str) -> list[Host]:
        """The hosts that have `address` on one of their interfaces (a load balancer's virtual
        IP: one host normally, two for a moment while a cut-off host still holds it)."""
        out = []
        for h in self.hosts:
            cp = run(["ip", "-n", h.netns, "-j", "addr", "show"], check=False)
            try:
                links = json.loads(cp.stdout or "[]")
            except json.JSONDecodeError:
                continue
            if any(a.get("local") == address for link in links for a in link.get("addr_info", [])):
                out.append(h)
        return out

    # ---- extra volumes (storage tests) -------------------------------------------------------

    def add_volume(self, h: Host, name: str, mib: int) -> str:
        """Another blank disk for h: a sparse file ``<host dir>/volume-<name>.img`` of `mib` MiB on
        a loop device of its own; returns the device. ``remove_volume`` detaches it (the lab's
        teardown does too: the file is under the lab directory)."""
        if not _SHARED_NAME_RE.match(name):
            raise LabError(f"volume name {name!r}: must match {_SHARED_NAME_RE.pattern}")
        path = Path(h.dir) / f"volume-{name}.img"
        if path.exists():
            raise LabError(f"{path} exists already (remove_volume it first)")
        run(["truncate", "-s", f"{mib}M", path])
        try:
            return self._attach_loop(str(path))
        except BaseException:
            path.unlink(missing_ok=True)
            raise

    @staticmethod
    def volume_file(device: str) -> Path:
        """The backing file of a loop device."""
        for d, back in loop_devices():
            if d == device:
                return Path(back)
        raise LabError(f"{device} is not an attached loop device")

    def grow_volume(self, device: str, mib: int) -> None:
        """Grows a loop device's backing file to `mib` MiB and tells the kernel (``losetup -c``):
        what growing a cloud volume or a SAN LUN looks like to the host."""
        path = self.volume_file(device)
        root = str(self.root.resolve())
        if not str(path).startswith(root + "/"):
            raise LabError(f"{device} is backed by {path}, not a file of this lab")
        run(["truncate", "-s", f"{mib}M", path])
        run(["losetup", "-c", device])

    def remove_volume(self, device: str) -> None:
        """Detaches a volume made by add_volume and deletes its file (unmounted by then)."""
        path = self.volume_file(device)
        root = str(self.root.resolve())
        if not str(path).startswith(root + "/"):
            raise LabError(f"{device} is backed by {path}, not a file of this lab")
        run(["losetup", "-d", device])
        path.unlink(missing_ok=True)

    # ---- down --------------------------------------------------------------------------------

    def down(self) -> None:
        """Removes the lab: everything cleanup() finds for this prefix and lab directory."""
        self.cleanup()
        self.hosts = []

    def _our_namespaces(self) -> list[str]:
        cp = run(["ip", "netns", "list"], check=False)
        names = [line.split()[0] for line in cp.stdout.splitlines() if line.strip()]
        pat = re.compile(rf"^{re.escape(self.prefix)}-h\d+$")
        return [n for n in names if pat.match(n)]

    def _our_links(self) -> list[str]:
        cp = run(["ip", "-j", "link", "show"], check=False)
        try:
            links = json.loads(cp.stdout or "[]")
        except json.JSONDecodeError:
            links = []
        pat = re.compile(rf"^{re.escape(self.prefix)}-h\d+$")
        return [l["ifname"] for l in links if pat.match(l.get("ifname", "")) or l.get("ifname") == self.bridge]

    def cleanup(self) -> None:
        """Idempotent teardown of everything with this prefix / under this lab directory."""
        problems = []
        namespaces = self._our_namespaces()
        root = str(self.root.resolve()) if self.root.exists() else str(self.root)

        # 1. Processes: every process in our namespaces (agents, beam.smp, epmd, ...).
        for proc in self._procs.values():
            if proc.poll() is None:
                proc.kill()
        deadline = time.monotonic() + 30
        while True:
            pids = [p for ns in namespaces for p in netns_pids(ns) if pid_alive(p)]
            if not pids:
                break
            for p in pids:
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            for proc in self._procs.values():
                try:
                    proc.wait(timeout=0.05)
                except subprocess.TimeoutExpired:
                    pass
            if time.monotonic() > deadline:
                problems.append(f"processes still alive in {namespaces}: {pids}")
                break
            time.sleep(0.1)
        for proc in self._procs.values():
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self._procs.clear()

        # 2. Mounts: under the lab directory, or of a loop device backed by a file of ours.
        our_loops = {d for d, b in loop_devices() if b == root or b.startswith(root + "/")}
        for _pass in range(3):
            targets = [mp for src, mp in mounts() if mp == root or mp.startswith(root + "/") or src in our_loops]
            if not targets:
                break
            for mp in sorted(set(targets), key=lambda m: m.count("/"), reverse=True):
                if run(["umount", mp], check=False).returncode != 0:
                    run(["umount", "-l", mp], check=False)
        leftover_mounts = [mp for src, mp in mounts() if mp.startswith(root + "/") or src in our_loops]
        if leftover_mounts:
            problems.append(f"still mounted: {leftover_mounts}")

        # 3. Loop devices backed by our files.
        for dev in sorted(our_loops):
            cp = run(["losetup", "-d", dev], check=False)
            if cp.returncode != 0:
                problems.append(f"losetup -d {dev}: {cp.stderr.strip()}")

        # 4. Namespaces, veths, bridge (only ours).
        for ns in namespaces:
            cp = run(["ip", "netns", "delete", ns], check=False)
            if cp.returncode != 0:
                problems.append(f"ip netns delete {ns}: {cp.stderr.strip()}")
            etc = Path("/etc/netns") / ns
            if etc.is_dir():
                shutil.rmtree(etc, ignore_errors=True)
        for link in self._our_links():
            cp = run(["ip", "link", "delete", link], check=False)
            if cp.returncode != 0 and "Cannot find device" not in cp.stderr:
                problems.append(f"ip link delete {link}: {cp.stderr.strip()}")

        # 5. Files (never while something is still mounted below: rmtree would walk into it).
        if self.root.exists() and not leftover_mounts:
            shutil.rmtree(self.root, ignore_errors=True)
            if self.root.exists():
                problems.append(f"could not remove {self.root}")
        if problems:
            raise LabError("lab cleanup incomplete:\n  - " + "\n  - ".join(problems))

    def leftovers(self) -> list[str]:
        """What of this lab still exists (empty after a clean down)."""
        out = [f"netns {n}" for n in self._our_namespaces()]
        out += [f"link {l}" for l in self._our_links()]
        root = str(self.root)
        out += [f"loop {d} -> {b}" for d, b in loop_devices() if b.startswith(root + "/")]
        out += [f"mount {mp}" for _, mp in mounts() if mp.startswith(root + "/")]
        out += [f"netns process {p} {proc_comm(p)}" for n in self._our_namespaces() for p in netns_pids(n)
                if pid_alive(p)]
        if self.root.exists():
            out.append(f"dir {self.root}")
        return out

    def describe(self) -> str:
        lines = [f"lab {self.prefix}: bridge {self.bridge} {self.gateway}/24, dir {self.root}"]
        for h in self.hosts:
            state = "agent running" if self.agent_alive(h) else "no agent"
            lines.append(f"  {h.name}: netns {h.netns}  {h.address}  volume {h.loop}  {state} (pid {h.agent_pid or '-'})"
                         f"  log {h.log_path}")
        return "\n".join(lines)


# ---- Terraform -------------------------------------------------------------------------------


def cli_config_text(bin_dir: Path) -> str:
    """A Terraform CLI configuration that takes ferrymq/ferrymq from bin_dir (dev_overrides)."""
    return (
        "provider_installation {\n"
        "  dev_overrides {\n"
        f'    "ferrymq/ferrymq" = "{bin_dir}"\n'
        "  }\n"
        "  direct {}\n"
        "}\n"
    )


class TerraformError(Exception):
    def __init__(self, result: "TfResult"):
        self.result = result
        super().__init__(
            f"terraform {' '.join(result.args)} failed (exit {result.rc}, {result.seconds:.1f} s):\n{result.output[-6000:]}"
        )


@dataclasses.dataclass
class TfResult:
    args: list
    rc: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def output(self) -> str:
        return self.stdout + ("\n" + self.stderr if self.stderr else "")


class Terraform:
    """Runs the real Terraform 1.0.3 in ``workdir`` with the provider from ``bin_dir``.

    Terraform finds the provider through dev_overrides in a CLI config of our own, so ``init`` is
    never run (1.0.3 would ask the registry and fail). The provider's credentials come from the
    FERRYMQ_* variables pointing at the lab's PKI.
    """

    def __init__(self, workdir: Path, lab: Optional[Lab] = None, example: Optional[Path] = None,
                 bin_dir: Optional[Path] = None, terraform: Path = TERRAFORM, extra_env: Optional[dict] = None):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.terraform = Path(terraform)
        bin_dir = Path(bin_dir or (lab.bin_dir if lab else BIN_DIR))
        if example:
            for f in Path(example).glob("*.tf"):
                shutil.copy(f, self.workdir / f.name)
        self.cli_config = self.workdir / "terraform.rc"
        self.cli_config.write_text(cli_config_text(bin_dir))
        self.env = dict(os.environ)
        for k in ("TF_LOG", "TF_LOG_PATH", "TF_PLUGIN_CACHE_DIR", "TF_DATA_DIR", "TF_WORKSPACE"):
            self.env.pop(k, None)
        self.env.update({
            "TF_CLI_CONFIG_FILE": str(self.cli_config),
            "CHECKPOINT_DISABLE": "1",
            "TF_IN_AUTOMATION": "1",
            "TF_INPUT": "0",
        })
        if lab:
            self.env.update(lab.provider_env())
        if extra_env:
            self.env.update(extra_env)
        self._n = 0

    def write_vars(self, variables: dict) -> None:
        (self.workdir / "terraform.tfvars.json").write_text(json.dumps(variables, indent=2) + "\n")

    def run(self, *args: str, check: bool = True, timeout: float = 900) -> TfResult:
        cmd = [str(self.terraform), *args]
        self._n += 1
        start = time.monotonic()
        try:
            cp = subprocess.run(cmd, cwd=self.workdir, env=self.env, capture_output=True, text=True,
                                timeout=timeout, stdin=subprocess.DEVNULL)
            rc, out, err = cp.returncode, cp.stdout, cp.stderr
        except subprocess.TimeoutExpired as e:
            rc = -1
            out = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
            err = ((e.stderr or b"").decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")) + \
                f"\n(timed out after {timeout:.0f} s)"
        res = TfResult(list(args), rc, out, err, time.monotonic() - start)
        with open(self.workdir / "terraform.log", "a") as log:
            log.write(f"\n===== [{self._n}] terraform {' '.join(args)}  -> exit {rc} in {res.seconds:.2f} s\n")
            log.write(res.output)
        if check and rc != 0:
            raise TerraformError(res)
        return res

    def apply(self, *extra: str, check: bool = True) -> TfResult:
        return self.run("apply", "-auto-approve", "-input=false", "-no-color", *extra, check=check)

    def plan(self, *extra: str, check: bool = False) -> TfResult:
        """``plan -detailed-exitcode``: rc 0 no changes, 2 changes, 1 error."""
        res = self.run("plan", "-input=false", "-no-color", "-detailed-exitcode", *extra, check=False)
        if check and res.rc not in (0, 2):
            raise TerraformError(res)
        return res

    def output(self) -> dict:
        res = self.run("output", "-json", "-no-color")
        out = {k: v.get("value") for k, v in json.loads(res.stdout or "{}").items()}
        # The broker's CA from the outputs is the one CA the tests' TLS clients trust, as a
        # user's clients would.
        if out.get("ca_certificate"):
            tls.trust(out["ca_certificate"])
        return out

    def show(self) -> dict:
        return json.loads(self.run("show", "-json", "-no-color").stdout or "{}")

    def resources(self) -> list[dict]:
        """The managed resources in the state (from ``terraform show -json``)."""
        values = self.show().get("values") or {}
        return (values.get("root_module") or {}).get("resources", [])

    def import_(self, address: str, import_id: str, *extra: str, check: bool = True) -> TfResult:
        return self.run("import", "-input=false", "-no-color", *extra, address, import_id, check=check)

    def destroy(self, *extra: str, check: bool = True) -> TfResult:
        return self.run("destroy", "-auto-approve", "-input=false", "-no-color", *extra, check=check)

    def shell_env(self) -> str:
        keys = ["TF_CLI_CONFIG_FILE", "CHECKPOINT_DISABLE", "FERRYMQ_CA_CERT", "FERRYMQ_CLIENT_CERT", "FERRYMQ_CLIENT_KEY"]
        return "\n".join(f"export {k}={self.env[k]}" for k in keys if k in self.env)


# ---- CLI -------------------------------------------------------------------------------------


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="FerryMQ lab: appliance hosts as network namespaces")
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("up", "down", "status", "env"):
        p = sub.add_parser(name)
        p.add_argument("--prefix", default=DEFAULT_PREFIX, help=f"name prefix (default {DEFAULT_PREFIX})")
        p.add_argument("--dir", type=Path, default=None, help="lab directory (default .work/lab-PREFIX)")
        if name == "up":
            p.add_argument("--hosts", type=int, default=1)
            p.add_argument("--net", default=DEFAULT_NET, help=f"first three octets (default {DEFAULT_NET})")
            p.add_argument("--volume-mib", type=int, default=DEFAULT_VOLUME_MIB)
            p.add_argument("--no-agents", action="store_true", help="network and volumes only")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "up":
            lab = Lab(prefix=args.prefix, net=args.net, root=args.dir, volume_mib=args.volume_mib)
            secs = lab.up(args.hosts, agents=not args.no_agents)
            print(lab.describe())
            print(f"lab up: {args.hosts} host(s) in {secs:.1f} s")
        elif args.cmd == "down":
            root = args.dir or WORK / f"lab-{args.prefix}"
            try:
                lab = Lab.load(args.prefix, root)
            except LabError:
                lab = Lab(prefix=args.prefix, root=root)
            start = time.monotonic()
            lab.down()
            left = lab.leftovers()
            if left:
                print("left behind:\n  " + "\n  ".join(left), file=sys.stderr)
                return 1
            print(f"lab {args.prefix} down in {time.monotonic() - start:.1f} s")
        elif args.cmd == "status":
            lab = Lab.load(args.prefix, args.dir)
            print(lab.describe())
        elif args.cmd == "env":
            lab = Lab.load(args.prefix, args.dir)
            rc = lab.root / "terraform.rc"
            rc.write_text(cli_config_text(lab.bin_dir))
            for k, v in {**lab.provider_env(), "TF_CLI_CONFIG_FILE": rc, "CHECKPOINT_DISABLE": "1"}.items():
                print(f"export {k}={v}")
            print(f"# then: {TERRAFORM} plan|apply|import|destroy  (never `terraform init` with dev_overrides)")
    except LabError as e:
        print(f"lab: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
