"""Boot tests of the appliance image, under qemu with software emulation (KVM guests hang on
these machines). Run by `bash images/test` after it built the images.

Two guests on a bridge of our own (fmqi-br, 10.79.8.0/24, tap devices):
- "vm" boots the Packer-built qcow2 with a blank data disk. It boots with no join token and must
  say so on its console; then a NoCloud seed disk (token + CA) is hot-plugged and the agent,
  still waiting, finds it and serves enrollment.
- "pxe" boots from the network: the NIC's iPXE gets DHCP and boot.ipxe from dnsmasq (TFTP),
  then the kernel, the initrd and the squashfs root over HTTP; its join token and CA come on
  the kernel command line, its address from a static ip=.
Both are enrolled with `ferrymq-agent pki enroll`; Terraform 1.0.3 applies
examples/rabbitmq-single-instance on the VM; a client sends and receives a message through the
broker's endpoint on the guest. Every wait polls for readiness (ports, console lines), with
generous bounds: RabbitMQ takes about a minute to start in a software-emulated guest.
"""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "acceptance"))

import amqp  # noqa: E402
import lab as labmod  # noqa: E402
from steps import wait_until  # noqa: E402

WORK = Path(os.environ.get("FERRYMQ_IMAGE_WORK", "/var/tmp/ferrymq-images"))
RUN = WORK / "run"
BUILD = WORK / "build"
QCOW2 = WORK / "packer-out" / "ferrymq-appliance.qcow2"
PXE_DIR = BUILD / "pxe"
BIN_DIR = Path(os.environ.get("FERRYMQ_BIN_DIR", str(REPO / "target" / "debug")))
AGENT = BIN_DIR / "ferrymq-agent"
NET = os.environ.get("FERRYMQ_IMAGE_NET", "10.79.8")
BRIDGE, GATEWAY = "fmqi-br", f"{NET}.1"
HTTP_PORT = 8079
BOOT_TIMEOUT = float(os.environ.get("FERRYMQ_BOOT_TIMEOUT", "900"))
APP = {"username": "app", "password": "app-Passw0rd-2024!", "console_access": True}

S: dict = {}
DONE: set = set()


def _interrupt(_signum, _frame):
    raise KeyboardInterrupt("SIGTERM")


# A SIGTERM (a CI timeout, `kill`) runs the fixtures' teardown: guests, dnsmasq, bridge.
signal.signal(signal.SIGTERM, _interrupt)


def need(*steps: str) -> None:
    missing = [s for s in steps if s not in DONE]
    if missing:
        pytest.fail(f"not run: the earlier step(s) {', '.join(missing)} did not pass", pytrace=False)


def sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=check, capture_output=True, text=True)


def port_open(ip: str, port: int) -> bool:
    try:
        with socket.create_connection((ip, port), timeout=2):
            return True
    except OSError:
        return False


class Guest:
    def __init__(self, name: str, index: int):
        """Guest `index` (1, 2, ...) is 10.79.8.2<index> on tap fmqi-tap<index>."""
        self.name = name
        self.ip = f"{NET}.{20 + index}"
        self.mac = f"52:54:00:79:08:{20 + index:02x}"
        self.tap = f"fmqi-tap{index}"
        self.dir = RUN / name
        self.serial = self.dir / "serial.log"
        self.monitor = self.dir / "monitor.sock"
        self.proc: subprocess.Popen | None = None
        self.started = 0.0

    def console(self) -> str:
        try:
            return self.serial.read_text(errors="replace")
        except OSError:
            return ""

    def console_tail(self, lines: int = 30) -> str:
        return "\n".join(self.console().splitlines()[-lines:])

    def start(self, args: list[str]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        sh("ip", "tuntap", "add", self.tap, "mode", "tap")
        sh("ip", "link", "set", self.tap, "master", BRIDGE, "up")
        cmd = ["qemu-system-x86_64", "-accel", "tcg", "-m", "2048", "-smp", "2", "-nographic",
               "-display", "none", "-serial", f"file:{self.serial}",
               "-monitor", f"unix:{self.monitor},server,nowait",
               "-netdev", f"tap,id=n0,ifname={self.tap},script=no,downscript=no",
               "-device", f"virtio-net-pci,netdev=n0,mac={self.mac}", *args]
        self.started = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdout=open(self.dir / "qemu.log", "w"), stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)

    def hmp(self, command: str) -> str:
        """One command on the QEMU human monitor."""
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(str(self.monitor))
            s.sendall(command.encode() + b"\n")
            out = b""
            deadline = time.monotonic() + 10
            while b"(qemu)" not in out.split(b"\n", 1)[-1] and time.monotonic() < deadline:
                try:
                    out += s.recv(4096)
                except socket.timeout:
                    break
            return out.decode(errors="replace")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        sh("ip", "link", "del", self.tap, check=False)

    def wait_ready(self, what: str) -> float:
        """Waits until the agent answers on 7443; returns seconds since the guest started."""
        wait_until(lambda: port_open(self.ip, labmod.AGENT_PORT) or not self.alive(), BOOT_TIMEOUT,
                   lambda: f"{self.name}: {what}\n{self.console_tail()}", interval=1)
        assert self.alive(), f"{self.name}: qemu exited\n{self.console_tail()}"
        return time.monotonic() - self.started


def make_seed(path: Path, token: str, ca_pem: str) -> None:
    """A NoCloud seed: user-data with the token and the CA, as a small ext4 image labelled CIDATA
    (mke2fs -d fills it without mounting; real users make an ISO with cloud-localds)."""
    tree = path.with_suffix(".d")
    shutil.rmtree(tree, ignore_errors=True)
    tree.mkdir(parents=True)
    ca_b64 = base64.b64encode(ca_pem.encode()).decode()
    (tree / "user-data").write_text(f"#cloud-config\nferrymq_join_token: {token}\nferrymq_ca: {ca_b64}\n")
    (tree / "meta-data").write_text("instance-id: ferrymq-boot-test\n")
    path.unlink(missing_ok=True)
    sh("mkfs.ext4", "-q", "-F", "-L", "CIDATA", "-d", str(tree), str(path), "8M")


@pytest.fixture(scope="module")
def net():
    """Bridge, dnsmasq (DHCP for both guests, TFTP of boot.ipxe for the PXE guest) and an HTTP
    server for the PXE set, all on our own bridge only."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    for f in (QCOW2, PXE_DIR / "root.squashfs", AGENT):
        if not f.exists():
            pytest.fail(f"{f} missing: run bash images/test (it builds the images first)", pytrace=False)
    shutil.rmtree(RUN, ignore_errors=True)
    RUN.mkdir(parents=True)
    for link in ("fmqi-tap1", "fmqi-tap2", BRIDGE):
        sh("ip", "link", "del", link, check=False)
    sh("ip", "link", "add", BRIDGE, "type", "bridge")
    sh("ip", "addr", "add", f"{GATEWAY}/24", "dev", BRIDGE)
    sh("ip", "link", "set", BRIDGE, "up")
    procs = []
    try:
        tftp = RUN / "tftp"
        tftp.mkdir()
        http = RUN / "http"
        http.mkdir()
        for f in ("vmlinuz", "initrd.img", "root.squashfs"):
            os.link(PXE_DIR / f, http / f) if (PXE_DIR / f).stat().st_dev == http.stat().st_dev \
                else shutil.copy(PXE_DIR / f, http / f)
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "http.server", "--bind", GATEWAY, "--directory", str(http), str(HTTP_PORT)],
            stdout=open(RUN / "http.log", "w"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
        conf = RUN / "dnsmasq.conf"
        conf.write_text(
            f"interface={BRIDGE}\nbind-interfaces\nexcept-interface=lo\nport=0\n"
            f"dhcp-range={NET}.100,{NET}.150,255.255.255.0,1h\n"
            + "".join(f"dhcp-host=52:54:00:79:08:{20 + i:02x},{NET}.{20 + i}\n" for i in (1, 2))
            + f"dhcp-leasefile={RUN}/dnsmasq.leases\npid-file={RUN}/dnsmasq.pid\n"
            f"enable-tftp\ntftp-root={tftp}\ndhcp-boot=boot.ipxe\nlog-dhcp\n")
        procs.append(subprocess.Popen(["dnsmasq", "--keep-in-foreground", f"--conf-file={conf}",
                                       f"--log-facility={RUN}/dnsmasq.log"],
                                      stdout=open(RUN / "dnsmasq.out", "w"), stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL))
        wait_until(lambda: port_open(GATEWAY, HTTP_PORT), 30, "the HTTP server of the PXE set")
        yield {"tftp": tftp, "http": http}
    finally:
        for p in procs:
            p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        sh("ip", "link", "del", BRIDGE, check=False)


@pytest.fixture(scope="module")
def deployment(net):
    pki = RUN / "pki"
    subprocess.run([str(AGENT), "pki", "init", "--dir", str(pki)], check=True, capture_output=True)
    ca_pem = (pki / "ca.pem").read_text()
    shutil.copy(pki / "ca.pem", net["http"] / "ca.pem")
    return {"pki": pki, "ca_pem": ca_pem, "tokens": {"vm": secrets.token_hex(20), "pxe": secrets.token_hex(20)}}


@pytest.fixture(scope="module")
def guests(net, deployment):
    vm, pxe = Guest("vm", 1), Guest("pxe", 2)
    for g in (vm, pxe):
        g.dir.mkdir(parents=True, exist_ok=True)
        sh("qemu-img", "create", "-q", "-f", "raw", str(g.dir / "data.img"), "1G")
    sh("qemu-img", "create", "-q", "-f", "qcow2", "-b", str(QCOW2), "-F", "qcow2", str(vm.dir / "disk.qcow2"))
    make_seed(vm.dir / "seed.img", deployment["tokens"]["vm"], deployment["ca_pem"])
    script = (PXE_DIR / "boot.ipxe").read_text()
    script = (script.replace("SERVER", f"{GATEWAY}:{HTTP_PORT}")
              .replace("ADDRESS", pxe.ip).replace("GATEWAY", GATEWAY).replace("NETMASK", "255.255.255.0")
              .replace("TOKEN", deployment["tokens"]["pxe"]))
    (net["tftp"] / "boot.ipxe").write_text(script)
    yield {"vm": vm, "pxe": pxe}
    for g in (vm, pxe):
        g.stop()


def test_01_vm_boots_and_says_it_has_no_token(guests):
    vm = guests["vm"]
    vm.start(["-drive", f"file={vm.dir / 'disk.qcow2'},if=virtio,format=qcow2",
              "-drive", f"file={vm.dir / 'data.img'},if=virtio,format=raw"])
    # The PXE guest boots alongside (2 vCPUs shared by both: the figures are upper bounds).
    pxe = guests["pxe"]
    pxe.start(["-boot", "n", "-drive", f"file={pxe.dir / 'data.img'},if=virtio,format=raw"])
    wait_until(lambda: "NO JOIN TOKEN" in vm.console() or not vm.alive(), BOOT_TIMEOUT,
               lambda: f"the VM's console to say it has no join token\n{vm.console_tail()}", interval=1)
    assert vm.alive(), vm.console_tail()
    seconds = time.monotonic() - vm.started
    labmod.record_result("image_vm_boot_to_agent_seconds", round(seconds, 1))
    print(f"\nFIGURE image_vm_boot_to_agent_seconds = {seconds:.1f} (qemu start to the agent up, no token)")
    assert not port_open(vm.ip, labmod.AGENT_PORT), "a host with no token serves something"
    DONE.add("vm_boot")


def test_02_vm_takes_its_token_from_a_late_seed_and_serves_enrollment(guests):
    need("vm_boot")
    vm = guests["vm"]
    t0 = time.monotonic()
    out = vm.hmp(f"drive_add 0 if=none,id=seed,format=raw,file={vm.dir / 'seed.img'}")
    out += vm.hmp("device_add virtio-blk-pci,drive=seed,id=seeddev")
    assert "rror" not in out, out
    # The monitor serves one client at a time: check the disk is really there.
    assert "seed.img" in vm.hmp("info block"), f"the seed disk was not attached:\n{out}"
    vm.wait_ready("enrollment after the seed was plugged in")
    seconds = time.monotonic() - t0
    print(f"\nFIGURE seed plugged in to enrollment served = {seconds:.1f} s")
    assert "join token and deployment CA from the NoCloud seed" in vm.console(), vm.console_tail()
    DONE.add("vm_ready")


def test_03_pxe_guest_boots_through_ipxe_to_a_ready_agent(guests):
    pxe = guests["pxe"]
    seconds = pxe.wait_ready("the PXE guest's agent")
    labmod.record_result("image_pxe_boot_to_agent_seconds", round(seconds, 1))
    print(f"\nFIGURE image_pxe_boot_to_agent_seconds = {seconds:.1f} (qemu start through iPXE to enrollment served)")
    console = pxe.console()
    assert "boot=ferrymq" in console, pxe.console_tail()
    assert "join token and deployment CA from the kernel command line" in console, pxe.console_tail()
    DONE.add("pxe_ready")


def enroll(deployment, guest: Guest, token: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(AGENT), "pki", "enroll", "--dir", str(deployment["pki"]), "--host", guest.ip,
                           f"--token={token}"], capture_output=True, text=True, timeout=300)


def test_04_both_guests_enroll_once_and_switch_to_mtls_with_systemd_supervision(guests, deployment):
    need("vm_ready", "pxe_ready")
    for name in ("vm", "pxe"):
        g, token = guests[name], deployment["tokens"][name]
        res = enroll(deployment, g, token)
        assert res.returncode == 0, f"{name}: {res.stderr}\n{g.console_tail()}"
        replay = enroll(deployment, g, token)
        assert replay.returncode != 0, f"{name}: a replayed token was accepted"
        wait_until(lambda: 'supervisor="systemd"' in g.console() or "supervisor=systemd" in g.console(), 120,
                   lambda: f"{name}: the agent serving with the systemd supervisor\n{g.console_tail()}")
    DONE.add("enrolled")


def test_05_terraform_applies_rabbitmq_on_the_vm_and_a_message_goes_through(guests, deployment):
    need("enrolled")
    vm = guests["vm"]
    pki = deployment["pki"]
    tf = labmod.Terraform(RUN / "tf", example=REPO / "examples" / "rabbitmq-single-instance", bin_dir=BIN_DIR,
                          extra_env={"FERRYMQ_CA_CERT": str(pki / "ca.pem"),
                                     "FERRYMQ_CLIENT_CERT": str(pki / "client.pem"),
                                     "FERRYMQ_CLIENT_KEY": str(pki / "client-key.pem")})
    S["tf"] = tf
    tf.write_vars({"broker_name": "image-rabbitmq", "host": vm.ip, "volume": "/dev/vdb",
                   "host_instance_type": "mq.t3.micro", "users": [APP]})
    start = time.monotonic()
    res = tf.apply()
    out = tf.output()
    seconds = time.monotonic() - start
    assert out.get("status") == "RUNNING", f"{out}\n{res.output}\n{vm.console_tail()}"
    labmod.record_result("image_guest_apply_to_running_seconds", round(seconds, 1))
    print(f"\nFIGURE image_guest_apply_to_running_seconds = {seconds:.1f} (terraform apply on the TCG guest)")
    endpoint = out["amqp_endpoint"]
    assert endpoint == f"amqp://{vm.ip}:5672", out
    body = b"through the appliance " + secrets.token_hex(4).encode()
    amqp.publish_confirmed(endpoint, APP["username"], APP["password"], "image.boot", [body])
    got = amqp.consume(endpoint, APP["username"], APP["password"], "image.boot", 1, timeout=60)
    assert got == [body], got
    DONE.add("applied")


def test_06_destroy_removes_the_broker(guests):
    need("applied")
    tf = S["tf"]
    tf.run("destroy", "-auto-approve", "-input=false", "-no-color")
    vm = guests["vm"]
    wait_until(lambda: not port_open(vm.ip, labmod.AMQP_PORT), 120, "the broker's AMQP port to close")
