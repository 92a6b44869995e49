"""Boot tests of the appliance image, under qemu with software emulation (KVM guests hang on
these machines). Run by `bash images/test` after it built the images.

Two guests on a bridge of our own (fmqi-br, 10.79.8.0/24, tap devices):
- "vm" boots the Packer-built qcow2 with a blank data disk. It boots with no join token and must
  say so on its console; then a NoCloud seed disk (token + CA) is hot-plugged and the agent,
  still waiting, finds it and serves enrollment.
- "pxe" boots from the network: the NIC's iPXE gets DHCP and boot.ipxe from dnsmasq (TFTP),
  then the kernel, the initrd and the squashfs root over HTTP; its join token and CA come on
  the kernel command line, its address from a static ip=.
Both get tokens from `pki new-token` and are enrolled with `ferrymq-agent pki enroll --fingerprint`
(read on their consoles: a wrong one is refused before any proof); Terraform 1.0.3 applies
examples/rabbitmq-single-instance on the VM; a client sends and receives a message through the
broker's TLS endpoint on the guest (verified with the CA of `terraform output ca_certificate`).
Then the same example with `encryption_options` on the VM's second data disk: the guest kernel
has dm-crypt (the acceptance hosts' kernel has not), so this is where LUKS2 runs for real. The
key file comes on the NoCloud seed (mounted at /run/ferrymq/seed), as user data would bring it.
The guest has no shell login: what happens inside is read on its serial console (the agent logs
there, and the kernel's mount messages name the device), the LUKS header on the disk image from
the host. Every wait polls for readiness (ports, console lines), with generous bounds: RabbitMQ
takes about a minute to start in a software-emulated guest.
"""

from __future__ import annotations

import base64
import calendar
import os
import re
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
# The volume key of the encrypted broker: on the seed disk, which the image mounts here.
KEY_NAME = "volume.key"
GUEST_KEY_FILE = f"/run/ferrymq/seed/{KEY_NAME}"
LUKS_MAGIC, LUKS_MAGIC_2ND = b"LUKS\xba\xbe", b"SKUL\xba\xbe"

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
            # The banner ends with a prompt; the command's output ends with the next one.
            while out.count(b"(qemu)") < 2 and time.monotonic() < deadline:
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


def make_seed(path: Path, token: str, ca_pem: str, volume_key: bytes) -> None:
    """A NoCloud seed: user-data with the token and the CA, and the volume key file of the
    encrypted broker, as a small ext4 image labelled CIDATA (mke2fs -d fills it without
    mounting; real users make an ISO with cloud-localds)."""
    tree = path.with_suffix(".d")
    shutil.rmtree(tree, ignore_errors=True)
    tree.mkdir(parents=True)
    ca_b64 = base64.b64encode(ca_pem.encode()).decode()
    (tree / "user-data").write_text(f"#cloud-config\nferrymq_join_token: {token}\nferrymq_ca: {ca_b64}\n")
    (tree / "meta-data").write_text("instance-id: ferrymq-boot-test\n")
    (tree / KEY_NAME).write_bytes(volume_key)
    (tree / KEY_NAME).chmod(0o400)
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
    return {"pki": pki, "ca_pem": ca_pem, "tokens": {"vm": new_token(), "pxe": new_token()},
            "volume_key": secrets.token_hex(32).encode()}


def new_token() -> str:
    """A join token as an operator makes one: `pki new-token` (256 bits, 64 hex characters)."""
    token = subprocess.run([str(AGENT), "pki", "new-token"], check=True, capture_output=True, text=True).stdout
    assert re.fullmatch(r"[0-9a-f]{64}\n", token), repr(token)
    return token.strip()


@pytest.fixture(scope="module")
def guests(net, deployment):
    vm, pxe = Guest("vm", 1), Guest("pxe", 2)
    for g in (vm, pxe):
        g.dir.mkdir(parents=True, exist_ok=True)
        sh("qemu-img", "create", "-q", "-f", "raw", str(g.dir / "data.img"), "1G")
    # The VM's second data disk (/dev/vdc) for the encrypted broker.
    sh("qemu-img", "create", "-q", "-f", "raw", str(vm.dir / "data-luks.img"), "1G")
    sh("qemu-img", "create", "-q", "-f", "qcow2", "-b", str(QCOW2), "-F", "qcow2", str(vm.dir / "disk.qcow2"))
    make_seed(vm.dir / "seed.img", deployment["tokens"]["vm"], deployment["ca_pem"], deployment["volume_key"])
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
              "-drive", f"file={vm.dir / 'data.img'},if=virtio,format=raw",
              "-drive", f"file={vm.dir / 'data-luks.img'},if=virtio,format=raw"])
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


def bootstrap_fingerprint(guest: Guest) -> str:
    """The SHA-256 of the bootstrap certificate the guest serves, as its console prints it (the
    last one: the agent makes a new certificate at every start)."""
    found = re.findall(r"bootstrap certificate sha256 ([0-9a-f]{64})", guest.console())
    assert found, f"{guest.name}: no bootstrap fingerprint on the console\n{guest.console_tail()}"
    return found[-1]


def enroll(deployment, guest: Guest, token: str, fingerprint: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(AGENT), "pki", "enroll", "--dir", str(deployment["pki"]), "--host", guest.ip,
                           f"--token={token}", f"--fingerprint={fingerprint}"],
                          capture_output=True, text=True, timeout=300)


def test_04_both_guests_enroll_once_and_switch_to_mtls_with_systemd_supervision(guests, deployment):
    need("vm_ready", "pxe_ready")
    for name in ("vm", "pxe"):
        g, token = guests[name], deployment["tokens"][name]
        fingerprint = bootstrap_fingerprint(g)
        # Another host's fingerprint: refused in the TLS handshake, before any proof is sent.
        wrong = enroll(deployment, g, token, "0" * 64)
        assert wrong.returncode != 0 and "no proof was sent" in wrong.stderr, f"{name}: {wrong.stderr}"
        res = enroll(deployment, g, token, fingerprint)
        assert res.returncode == 0, f"{name}: {res.stderr}\n{g.console_tail()}"
        replay = enroll(deployment, g, token, fingerprint)
        assert replay.returncode != 0, f"{name}: a replayed token was accepted"
        wait_until(lambda: 'supervisor="systemd"' in g.console() or "supervisor=systemd" in g.console(), 120,
                   lambda: f"{name}: the agent serving with the systemd supervisor\n{g.console_tail()}")
    # The PXE guest has shown what it must: stopped, it leaves the host's CPU (shared, emulated)
    # to the VM guest's brokers.
    guests["pxe"].stop()
    DONE.add("enrolled")


def rabbitmq_example(workdir, pki):
    """A Terraform runner on examples/rabbitmq-single-instance with the deployment's credentials."""
    return labmod.Terraform(workdir, example=REPO / "examples" / "rabbitmq-single-instance", bin_dir=BIN_DIR,
                            extra_env={"FERRYMQ_CA_CERT": str(pki / "ca.pem"),
                                       "FERRYMQ_CLIENT_CERT": str(pki / "client.pem"),
                                       "FERRYMQ_CLIENT_KEY": str(pki / "client-key.pem")})


def test_05_terraform_applies_rabbitmq_on_the_vm_and_a_message_goes_through(guests, deployment):
    need("enrolled")
    vm = guests["vm"]
    pki = deployment["pki"]
    tf = rabbitmq_example(RUN / "tf", pki)
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
    assert endpoint == f"amqps://{vm.ip}:{labmod.AMQPS_PORT}", out
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
    wait_until(lambda: not port_open(vm.ip, labmod.AMQPS_PORT), 120, "the broker's AMQPS port to close")
    DONE.add("destroyed")


def luks_header(image: Path) -> dict:
    """The LUKS2 binary header at the start of a disk image, read on the host (which has no
    cryptsetup): magic, version, label; and whether the secondary header (at hdr_size) is there."""
    with open(image, "rb") as f:
        head = f.read(4096)
        hdr_size = int.from_bytes(head[8:16], "big")
        second = b""
        if head[:6] == LUKS_MAGIC and 4096 <= hdr_size <= 4 << 20:
            f.seek(hdr_size)
            second = f.read(6)
    return {"magic": head[:6] == LUKS_MAGIC, "version": int.from_bytes(head[6:8], "big"),
            "label": head[24:72].split(b"\0")[0].decode(errors="replace"), "second": second == LUKS_MAGIC_2ND}


def agent_lines(console: str, message: str) -> list[tuple[float, str]]:
    """The agent's console lines carrying `message`, with their UTC timestamps in seconds."""
    found = []
    for line in console.splitlines():
        m = re.search(r"ferrymq-agent\[\d+\]: (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?)Z .*", line)
        if m and message in line:
            stamp = time.strptime(m.group(1).split(".")[0], "%Y-%m-%dT%H:%M:%S")
            fraction = float("0." + m.group(1).split(".")[1]) if "." in m.group(1) else 0.0
            found.append((calendar.timegm(stamp) + fraction, line))
    return found


def test_07_an_encrypted_volume_runs_on_luks2_in_the_guest(guests, deployment):
    """encryption_options on the VM's second data disk: formatted LUKS2 with the key file from the
    seed, opened as a dm-crypt mapping, the broker's filesystem on the mapping."""
    need("destroyed")
    vm = guests["vm"]
    pki = deployment["pki"]
    image = vm.dir / "data-luks.img"
    assert not luks_header(image)["magic"], "the second data disk is not blank"
    tf = rabbitmq_example(RUN / "tf-luks", pki)
    S["tf_luks"] = tf
    tf.write_vars({"broker_name": "image-rabbitmq-luks", "host": vm.ip, "volume": "/dev/vdc",
                   "host_instance_type": "mq.t3.micro", "users": [APP], "encryption_key_file": GUEST_KEY_FILE})
    mark = len(vm.console())
    start = time.monotonic()
    res = tf.apply()
    out = tf.output()
    seconds = time.monotonic() - start
    console = vm.console()[mark:]
    assert out.get("status") == "RUNNING", f"{out}\n{res.output}\n{vm.console_tail()}"
    labmod.record_result("image_guest_apply_encrypted_to_running_seconds", round(seconds, 1))
    print(f"\nFIGURE image_guest_apply_encrypted_to_running_seconds = {seconds:.1f}")

    # Inside the guest (its console): the agent formatted /dev/vdc as LUKS2, opened it as a
    # dm-crypt mapping and mounted the broker's filesystem from the mapping; the kernel says it
    # mounted ext4 from a device-mapper device.
    formatted = [x for x in agent_lines(console, "formatting blank volume as LUKS2") if '"/dev/vdc"' in x[1]]
    assert formatted, f"no LUKS2 format of /dev/vdc on the console:\n{console[-4000:]}"
    opened = agent_lines(console, "opened encrypted volume")
    assert opened, console[-4000:]
    mapping = re.search(r"mapping=(/dev/mapper/\S+)", opened[-1][1])
    assert mapping, opened[-1][1]
    mapper = mapping.group(1)
    mounted = [x for x in agent_lines(console, "mounted volume") if f'"{mapper}"' in x[1]]
    assert mounted, f"the broker's filesystem was not mounted from {mapper}:\n{console[-4000:]}"
    assert re.search(r"EXT4-fs \(dm-\d+\): mounted filesystem", console), console[-4000:]
    prepare = mounted[0][0] - formatted[0][0]
    labmod.record_result("image_guest_luks_prepare_seconds", round(prepare, 1))
    print(f"FIGURE image_guest_luks_prepare_seconds = {prepare:.1f} (luksFormat + open + mkfs + mount, guest clock)")

    # On the disk (read from the host): a LUKS2 header labelled for the broker, as the mapping.
    header = luks_header(image)
    assert header["magic"] and header["version"] == 2 and header["second"], header
    assert mapper.endswith("/" + header["label"]), (header, mapper)
    blkid = sh("blkid", "-p", "-o", "export", str(image), check=False).stdout
    assert "TYPE=crypto_LUKS" in blkid, blkid

    endpoint = out["amqp_endpoint"]
    assert endpoint == f"amqps://{vm.ip}:{labmod.AMQPS_PORT}", out
    body = b"through the encrypted volume " + secrets.token_hex(4).encode()
    amqp.publish_confirmed(endpoint, APP["username"], APP["password"], "image.luks", [body])
    got = amqp.consume(endpoint, APP["username"], APP["password"], "image.luks", 1, timeout=60)
    assert got == [body], got
    # The key is read by cryptsetup from the file only: not in the state, not on the console.
    key = deployment["volume_key"].decode()
    assert key not in vm.console(), "the volume key was logged"
    assert key not in (tf.workdir / "terraform.tfstate").read_text(), "the volume key is in the state"
    S["luks"] = {"mapper": mapper}
    DONE.add("encrypted")


def test_08_destroy_closes_the_mapping_and_erases_the_luks_header(guests):
    need("encrypted")
    vm = guests["vm"]
    mark = len(vm.console())
    S["tf_luks"].run("destroy", "-auto-approve", "-input=false", "-no-color")
    wait_until(lambda: not port_open(vm.ip, labmod.AMQPS_PORT), 120, "the encrypted broker's AMQPS port to close")
    # The agent wiped the filesystem on the mapping, closed it (cryptsetup close, else it stops
    # with an error before erasing) and erased the container of /dev/vdc.
    console = lambda: vm.console()[mark:]  # noqa: E731
    wait_until(lambda: agent_lines(console(), "erased encrypted volume"), 120,
               lambda: f"the agent to erase the LUKS container\n{vm.console_tail()}")
    mapper = S["luks"]["mapper"]
    assert any(f'"{mapper}"' in line for _, line in agent_lines(console(), "wiped volume")), console()[-4000:]
    erased = [line for _, line in agent_lines(console(), "erased encrypted volume")]
    assert '"/dev/vdc"' in erased[-1], erased
    header = luks_header(vm.dir / "data-luks.img")
    assert not header["magic"], f"the LUKS header is still on the disk: {header}"
    blkid = sh("blkid", "-p", "-o", "export", str(vm.dir / "data-luks.img"), check=False)
    assert "crypto_LUKS" not in blkid.stdout, blkid.stdout
