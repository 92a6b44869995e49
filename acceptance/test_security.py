"""End to end: an attacker who has taken one appliance host (h2) against a RabbitMQ broker on
another (h1), with the real Terraform 1.0.3, agents and RabbitMQ; and the PKI renewed under that
running broker before its certificates end.

h1's agent certificate and broker CA are issued to live only LIFETIME seconds. The attacker
holds everything of h2: its agent certificate and key and its broker CA's key, and mints what it
likes with ``openssl``. Each attack asserts the refusal and that nothing changed on h1:

* h2's own certificate as Terraform's client certificate: ``ferrymq_user`` on h1's broker and
  ``ferrymq-agent reboot`` refused (PERMISSION_DENIED), no user, no restart, plan clean;
* an "operator" client certificate minted with h2's broker CA: refused the same way;
* a server certificate for h1's address minted with h2's broker CA, served by a fake on h1's
  address: Terraform refuses it as h1's agent (name constraints) and a client trusting the
  deployment CA refuses it as h1's broker; the fake receives no byte (no spec, no password);
* then ``ferrymq-agent pki renew`` renews h1's certificates while a publisher with confirms runs;
  past their old end the provider still reaches h1, new clients verify the broker, RabbitMQ was
  not restarted and no confirmed message was lost.
"""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

import amqp
import lab as labmod
import tls
from confirmed_publisher import ConfirmedPublisher, number
from steps import Steps, wait_until

S = Steps()
# Long enough for the apply and the attacks before the renewal, short enough to wait out.
LIFETIME = 240
APP = {"username": "app", "password": "app-Security-Passw0rd-26"}
INTRUDER = {"username": "intruder", "password": "intruder-Passw0rd-2026"}
QUEUE = "security-renewal"
FAKE_PORT = 7999

BROKER = """
terraform {
  required_providers {
    ferrymq = { source = "ferrymq/ferrymq" }
  }
}

provider "ferrymq" {}

variable "host" { type = string }
variable "volume" { type = string }
variable "password" {
  type      = string
  sensitive = true
}

resource "ferrymq_broker" "target" {
  broker_name        = "acceptance-security"
  engine_type        = "RabbitMQ"
  engine_version     = "3.10.8"
  host_instance_type = "mq.m5.large"

  instance {
    host   = var.host
    volume = var.volume
  }

  user {
    username       = "app"
    password       = var.password
    console_access = true
  }
}

output "broker_id" { value = ferrymq_broker.target.id }
output "status" { value = ferrymq_broker.target.status }
output "endpoint" { value = ferrymq_broker.target.instances[0].endpoints[0] }
output "ca_certificate" { value = ferrymq_broker.target.ca_certificate }
"""

# What the attacker applies with stolen credentials: a user of its own on h1's broker.
INTRUSION = """
terraform {
  required_providers {
    ferrymq = { source = "ferrymq/ferrymq" }
  }
}

provider "ferrymq" {}

variable "host" { type = string }
variable "broker_id" { type = string }

resource "ferrymq_user" "intruder" {
  broker_id      = var.broker_id
  host           = var.host
  username       = "intruder"
  password       = "intruder-Passw0rd-2026"
  console_access = true
}
"""

# A TLS server with a given certificate that counts the bytes a client sends after the
# handshake: the stand-in for a fake agent or a fake broker on the stolen material.
FAKE = r"""
import socket, ssl, sys, threading
cert, key, host, port, out = sys.argv[1:6]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
ctx.set_alpn_protocols(["h2"])
srv = socket.create_server((host, int(port)))
received = [0, 0]  # handshakes completed, bytes received
def serve(conn):
    try:
        with ctx.wrap_socket(conn, server_side=True) as s:
            received[0] += 1
            s.settimeout(5)
            while True:
                data = s.recv(65536)
                if not data:
                    break
                received[1] += len(data)
    except Exception:
        pass
    with open(out, "w") as f:
        f.write(f"{received[0]} {received[1]}\n")
print("ready", flush=True)
while True:
    conn, _ = srv.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
"""


def openssl(*args: str, cwd: Path) -> None:
    labmod.run(["openssl", *args], cwd=str(cwd))


def mint(attacker: "labmod.Host", workdir: Path, name: str, ext: str) -> tuple[Path, Path]:
    """A certificate signed with the attacker host's broker CA key (``openssl``, as an attacker
    would), with the extensions in `ext`; returns the chain (leaf, broker CA) and the key."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / f"{name}.ext").write_text(ext)
    openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", f"{name}-key.pem", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=workdir)
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", str(attacker.tls_dir / "broker-ca.pem"),
            "-CAkey", str(attacker.tls_dir / "broker-ca-key.pem"), "-CAcreateserial", "-days", "1",
            "-out", f"{name}.pem", "-extfile", f"{name}.ext", cwd=workdir)
    chain = workdir / f"{name}-chain.pem"
    chain.write_text((workdir / f"{name}.pem").read_text() + (attacker.tls_dir / "broker-ca.pem").read_text())
    return chain, workdir / f"{name}-key.pem"


def h1_spec_files(host) -> dict:
    """The broker specs and users stored on h1: what an intrusion would change."""
    return {p: p.read_bytes() for p in sorted(host.brokers_dir.rglob("*.json"))
            if p.name == "spec.json"}


def intrude(lab, tf_factory, name: str, cert: Path, key: Path, host_address: str) -> "labmod.TfResult":
    tf = tf_factory(f"security-{name}")
    tf.env.update({"FERRYMQ_CLIENT_CERT": str(cert), "FERRYMQ_CLIENT_KEY": str(key)})
    (tf.workdir / "main.tf").write_text(INTRUSION)
    tf.write_vars({"host": host_address, "broker_id": S.s["broker_id"]})
    return tf.apply(check=False)


def assert_nothing_changed(host) -> None:
    assert h1_spec_files(host) == S.s["specs"], "h1's stored specs or users changed"
    assert amqp.login_error(S.s["endpoint"], INTRUDER["username"], INTRUDER["password"]), \
        "the intruder's user logs in to h1's broker"
    assert host.rabbitmq_pids() == S.s["beam"], "RabbitMQ on h1 was restarted"
    plan = S.s["tf"].plan()
    assert plan.rc == 0, f"the operator's plan is not clean:\n{plan.output}"


def certificate_ends(host) -> dict:
    """`ferrymq_certificate_not_after_seconds` by certificate, from h1's metrics."""
    with urllib.request.urlopen(host.metrics_url, timeout=30, context=host.metrics_context()) as r:
        text = r.read().decode()
    ends = {}
    for line in text.splitlines():
        if line.startswith("ferrymq_certificate_not_after_seconds{"):
            what = line.split('certificate="', 1)[1].split('"', 1)[0]
            ends[what] = float(line.rsplit(" ", 1)[1])
    return ends


def test_01_broker_on_a_host_with_short_lived_certificates(lab, host, tf_factory):
    # Host 1's certificates, issued again to end in LIFETIME seconds (its agent restarted to
    # serve them, as a host issued that way would start).
    lab.issue_host(host, lifetime=f"{LIFETIME}s")
    S.s["issued_at"] = time.monotonic()
    lab.kill_agent(host, signal.SIGTERM)
    lab.start_agent(host)
    tf = tf_factory("security")
    (tf.workdir / "main.tf").write_text(BROKER)
    tf.write_vars({"host": host.address, "volume": host.loop, "password": APP["password"]})
    res = tf.apply()
    out = tf.output()
    assert out["status"] == "RUNNING", res.output
    S.s.update(tf=tf, broker_id=out["broker_id"], endpoint=out["endpoint"])
    wait_until(lambda: not amqp.login_error(out["endpoint"], APP["username"], APP["password"]), 60,
               "the app user logs in")
    S.s["specs"] = h1_spec_files(host)
    S.s["beam"] = host.rabbitmq_pids()
    assert S.s["specs"] and S.s["beam"]
    # Certificates in their last 30 days warn: in the plan and in the metrics.
    plan = tf.plan()
    text = " ".join(plan.output.split())
    assert plan.rc == 0 and "a certificate ends soon" in text and "pki renew" in text, plan.output
    ends = certificate_ends(host)
    assert ends["agent"] - time.time() < LIFETIME + 60 and ends["broker-ca"] - time.time() < LIFETIME + 60, ends
    S.ok("broker")


def test_02_a_stolen_host_certificate_changes_nothing_on_another_host(lab, host, tf_factory):
    S.need("broker")
    attacker = lab.hosts[1]
    res = intrude(lab, tf_factory, "host-cert", attacker.tls_dir / "agent.pem",
                  attacker.tls_dir / "agent-key.pem", host.address)
    assert res.rc != 0, res.output
    # The provider reads the broker first (refused: the attacker is none of its instances).
    text = " ".join(res.output.split())  # Terraform wraps diagnostics
    assert "is not one of" in text or "may not call ApplyBrokerUser" in text, res.output
    # Amazon MQ's RebootBroker with the stolen identity.
    env = dict(os.environ, FERRYMQ_CA_CERT=str(lab.pki_dir / "ca.pem"),
               FERRYMQ_CLIENT_CERT=str(attacker.tls_dir / "agent.pem"),
               FERRYMQ_CLIENT_KEY=str(attacker.tls_dir / "agent-key.pem"))
    cp = labmod.run([lab.agent_bin, "reboot", "--broker-id", S.s["broker_id"], "--host", host.address,
                     "--timeout", "20"], check=False, env=env)
    assert cp.returncode != 0 and "may not call RebootBroker" in cp.stdout + cp.stderr, cp.stdout + cp.stderr
    time.sleep(2)
    assert_nothing_changed(host)
    print(f"\nstolen host certificate: refused ({res.output.strip().splitlines()[-1][:160]})")


def test_03_a_certificate_minted_with_the_broker_ca_is_no_operator(lab, host, tf_factory):
    S.need("broker")
    attacker = lab.hosts[1]
    chain, key = mint(attacker, S.s["tf"].workdir / "minted", "operator",
                      "extendedKeyUsage=clientAuth\n"
                      f"subjectAltName=URI:urn:ferrymq:role:operator,IP:{attacker.address}\n")
    res = intrude(lab, tf_factory, "minted-operator", chain, key, host.address)
    assert res.rc != 0, res.output
    assert "not issued directly by the deployment CA" in " ".join(res.output.split()), res.output
    assert_nothing_changed(host)


def test_04_a_minted_server_certificate_poses_neither_as_agent_nor_as_broker(lab, host, tf_factory):
    S.need("broker")
    attacker = lab.hosts[1]
    work = S.s["tf"].workdir / "minted"
    chain, key = mint(attacker, work, "fake-h1",
                      f"extendedKeyUsage=serverAuth\nsubjectAltName=IP:{host.address}\n")
    script = work / "fake.py"
    script.write_text(FAKE)
    counts = work / "fake-received.txt"
    fake = subprocess.Popen(["ip", "netns", "exec", host.netns, sys.executable, str(script), str(chain),
                             str(key), host.address, str(FAKE_PORT), str(counts)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert fake.stdout.readline().strip() == "ready", fake.stderr.read()
        # As h1's agent to Terraform (the operator's own credentials: what it would send is a spec
        # with passwords).
        start = time.monotonic()
        res = intrude(lab, tf_factory, "fake-agent", lab.pki_dir / "client.pem", lab.pki_dir / "client-key.pem",
                      f"{host.address}:{FAKE_PORT}")
        assert res.rc != 0, res.output
        text = " ".join(res.output.split())
        assert "NameConstraintViolation" in text and "not this host's agent" in text, res.output
        assert time.monotonic() - start < 60, "an impostor agent should fail the apply at once"
        # As h1's broker to a client that trusts the deployment CA (ca_certificate).
        with pytest.raises(ssl.SSLCertVerificationError):
            tls.peer_certificate(host.address, FAKE_PORT, tls.context())
        time.sleep(1)
        handshakes, received = map(int, counts.read_text().split()) if counts.exists() else (0, 0)
        assert received == 0, f"the fake received {received} bytes after {handshakes} handshake(s)"
        print(f"\nfake agent/broker with a minted certificate: refused by Terraform and by the client, "
              f"{handshakes} handshake(s) completed, {received} bytes received")
    finally:
        fake.kill()
        fake.wait()
    assert_nothing_changed(host)


def test_05_renewal_under_the_running_broker(lab, host):
    S.need("broker")
    pub = ConfirmedPublisher(S.s["endpoint"], APP["username"], APP["password"], QUEUE, 1_000_000, rate=50.0,
                             give_up_after=60)
    publishing = threading.Thread(target=pub.run, daemon=True)
    publishing.start()
    try:
        assert pub.wait_confirmed(50, 30), f"publisher: {pub.errors[-3:]}"
        cp = labmod.run([lab.agent_bin, "pki", "renew", "--dir", lab.pki_dir, "--host", host.address,
                         "--before", "1h"])
        assert "renewed" in cp.stdout, cp.stdout
        print(f"\n{cp.stdout.strip()}")
        # Past the old certificates' end (and the broker's certificate issued again meanwhile).
        left = S.s["issued_at"] + LIFETIME + 10 - time.monotonic()
        assert left > 0, f"the renewal came {-left:.0f} s after the old certificates ended"
        time.sleep(left)
        assert pub.wait_confirmed(len(pub.confirmed) + 20, 30), f"publisher stalled: {pub.errors[-3:]}"
    finally:
        pub.stop.set()
        publishing.join(timeout=60)
    # The provider reaches h1 (its agent serves the renewed certificate), a new client verifies
    # the broker (served with the renewed broker CA), RabbitMQ kept running.
    plan = S.s["tf"].plan()
    assert plan.rc == 0 and "a certificate ends soon" not in " ".join(plan.output.split()), plan.output
    ends = certificate_ends(host)
    assert ends["agent"] - time.time() > 300 * 86400 and ends["broker-ca"] - time.time() > 300 * 86400, ends
    tls.peer_certificate(host.address, 5671, tls.context())
    assert not amqp.login_error(S.s["endpoint"], APP["username"], APP["password"])
    assert host.rabbitmq_pids() == S.s["beam"], "the renewal restarted RabbitMQ"
    consumed = amqp.consume(S.s["endpoint"], APP["username"], APP["password"], QUEUE,
                            expected=len(pub.confirmed), timeout=60)
    numbers = {number(b) for b in consumed}
    lost = [n for n in pub.confirmed if n not in numbers]
    labmod.record_result("pki_renewal_lost_messages", len(lost))
    print(f"renewal under load: {len(pub.confirmed)} confirmed, {len(lost)} lost, "
          f"{pub.reconnects} reconnects, longest gap {pub.longest_gap():.2f} s")
    assert not lost, f"{len(lost)} confirmed messages lost: {lost[:10]}"
    assert pub.reconnects == 0, f"the publisher reconnected: {pub.errors[-3:]}"


def test_06_destroy(lab, host):
    S.need("broker")
    S.s["tf"].destroy()
    assert not host.broker_dirs()
