"""End to end: a server certificate the user supplies (``server_certificate``), on a
single-instance RabbitMQ broker with the real Terraform 1.0.3, agent and RabbitMQ.

* the broker serves a certificate from the user's own CA (root → issuing CA → server), and
  ``ca_certificate`` is that root: a client trusting it connects over TLS, one trusting only
  the deployment CA is refused;
* the key is on the host once, 0600 for the engine user, and the spec store holds none;
* a second supplied certificate replaces the first in place: new connections get it, an open
  connection keeps working, RabbitMQ is not restarted;
* a certificate that does not name the host's address is refused at plan, on the attribute;
* removing the block goes back to an agent-issued certificate, in place as well;
* no supplied key is in any agent log, the provider's log lines or the agent's spec store;
* ActiveMQ serves a supplied certificate too (a PKCS12 keystore built from the PEMs), and a
  rotation reaches it with the one restart a renewal takes.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import time

import pytest

import amqp
import lab as labmod
import tls
from steps import Steps, apply_until_running, files_under, provider_log_lines, uid_of, wait_until
from tls import UserCa, peer_certificate

S = Steps()
USER = {"username": "app", "password": "app-Supplied-Cert-2026"}
EXTRA_NAME = "mq.supplied.acceptance.test"

CONFIG = """
terraform {
  required_providers {
    ferrymq = { source = "ferrymq/ferrymq" }
  }
}

provider "ferrymq" {}

variable "host" { type = string }
variable "volume" { type = string }
variable "engine" {
  type    = object({ type = string, version = string })
  default = { type = "RabbitMQ", version = "3.10.8" }
}
variable "password" {
  type      = string
  sensitive = true
}
# A directory with cert.pem, key.pem and chain.pem; null: an agent-issued certificate.
variable "certificate_dir" {
  type    = string
  default = null
}

resource "ferrymq_broker" "rabbitmq" {
  broker_name        = "acceptance-supplied-cert"
  engine_type        = var.engine.type
  engine_version     = var.engine.version
  host_instance_type = "mq.m5.large"

  instance {
    host   = var.host
    volume = var.volume
  }

  user {
    username = "app"
    password = var.password
  }

  certificate_names = ["mq.supplied.acceptance.test"]

  dynamic "server_certificate" {
    for_each = var.certificate_dir == null ? [] : [var.certificate_dir]
    content {
      certificate_pem = file("${server_certificate.value}/cert.pem")
      private_key_pem = file("${server_certificate.value}/key.pem")
      ca_chain_pem    = file("${server_certificate.value}/chain.pem")
    }
  }
}

output "broker_id" { value = ferrymq_broker.rabbitmq.id }
output "status" { value = ferrymq_broker.rabbitmq.status }
output "endpoint" { value = ferrymq_broker.rabbitmq.instances[0].endpoints[0] }
output "ca_certificate" { value = ferrymq_broker.rabbitmq.ca_certificate }
"""


ACTIVEMQ = {"type": "ActiveMQ", "version": "5.17.2"}


def use(tf, host, certificate_dir, engine=None) -> None:
    tf.write_vars({"host": host.address, "volume": host.loop, "password": USER["password"],
                   "certificate_dir": str(certificate_dir) if certificate_dir else None,
                   **({"engine": engine} if engine else {})})


def context_trusting(ca_pem_file) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca_pem_file))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def served_serial(host, ca_pem_file, port=labmod.AMQPS_PORT) -> str:
    return peer_certificate(host.address, port, context_trusting(ca_pem_file))["serialNumber"]


def serial_of(cert_pem_file) -> str:
    out = subprocess.run(["openssl", "x509", "-in", str(cert_pem_file), "-noout", "-serial"],
                         capture_output=True, text=True, check=True).stdout
    return out.strip().split("=", 1)[1].upper()


def key_body(directory) -> str:
    """A line of the key's base64 body: what would show wherever the key was written."""
    return (directory / "key.pem").read_text().splitlines()[1]


def test_01_apply_with_a_certificate_from_the_users_ca(lab, host, tf_factory):
    tf = tf_factory("supplied-cert")
    (tf.workdir / "main.tf").write_text(CONFIG)
    root = UserCa(tf.workdir / "pki", "Acme Root CA")
    issuing = UserCa(tf.workdir / "pki", "Acme Issuing CA", parent=root)
    first = issuing.issue(tf.workdir / "pki" / "first", [host.address, EXTRA_NAME])
    S.s.update(tf=tf, root=root, first=first, start=time.monotonic())
    use(tf, host, first)
    res, out = apply_until_running(tf, "supplied_certificate_create_seconds", USER["password"])
    assert key_body(first) not in res.output, "the supplied key appears in the apply output"
    # Clients verify with the user's root: the chain's end, not the deployment CA.
    assert out["ca_certificate"].strip() == root.pem.strip(), out["ca_certificate"][:80]
    assert out["ca_certificate"].strip() != (lab.pki_dir / "ca.pem").read_text().strip()
    S.s.update(out)
    S.ok("apply")


def test_02_clients_trusting_the_users_ca_connect_and_others_are_refused(lab, host):
    S.need("apply")
    root = S.s["root"]
    # The broker sends the issuing CA after its certificate: the root alone verifies it.
    assert served_serial(host, root.dir / "ca.pem") == serial_of(S.s["first"] / "cert.pem")
    cert = peer_certificate(host.address, labmod.CONSOLE_TLS_PORT, context_trusting(root.dir / "ca.pem"))
    assert ("DNS", EXTRA_NAME) in cert.get("subjectAltName", ()), cert
    tls.trust(S.s["ca_certificate"])
    ep = S.s["endpoint"]
    amqp.publish_confirmed(ep, USER["username"], USER["password"], "supplied.q", [b"one", b"two"])
    assert amqp.consume(ep, USER["username"], USER["password"], "supplied.q", 2, timeout=20) == [b"one", b"two"]
    with pytest.raises(ssl.SSLCertVerificationError):
        peer_certificate(host.address, labmod.AMQPS_PORT, context_trusting(lab.pki_dir / "ca.pem"))

    # The key lives once on the host: the engine's file, 0600, the engine user's.
    tls_dir = host.brokers_dir / S.s["broker_id"] / "engine" / "tls"
    key = tls_dir / "server-key.pem"
    st = key.stat()
    assert (st.st_mode & 0o777, st.st_uid) == (0o600, uid_of("rabbitmq")), (oct(st.st_mode), st.st_uid)
    assert key.read_text() == (S.s["first"] / "key.pem").read_text()
    assert not (tls_dir / "supplied-key.pem").exists(), "the staged key was left beside the installed one"
    S.ok("tls")


def test_03_rotating_the_supplied_certificate_needs_no_restart(lab, host):
    S.need("tls")
    tf = S.s["tf"]
    second = S.s["root"].issue(tf.workdir / "pki" / "second", [host.address, EXTRA_NAME])
    S.s["second"] = second
    beam = host.rabbitmq_pids()
    conn = amqp.connect(S.s["endpoint"], USER["username"], USER["password"])
    log = tf.workdir / "tf-trace.log"
    env = dict(tf.env)
    try:
        ch = conn.channel()
        ch.queue_declare(queue="rotation.q", durable=True)
        use(tf, host, second)
        # This apply's provider log lines are searched for the keys in test_06.
        tf.env.update({"TF_LOG": "DEBUG", "TF_LOG_PATH": str(log)})
        start = time.monotonic()
        res = tf.apply()
        tf.env = env
        assert "Apply complete! Resources: 0 added, 1 changed, 0 destroyed." in res.output, res.output
        assert key_body(second) not in res.output
        want = serial_of(second / "cert.pem")
        wait_until(lambda: served_serial(host, S.s["root"].dir / "ca.pem") == want, 30,
                   "the second certificate on the AMQPS listener")
        print(f"\nrotated certificate served {time.monotonic() - start:.1f} s after the apply started")
        ch.basic_publish(exchange="", routing_key="rotation.q", body=b"after-rotation")
        ch.queue_delete(queue="rotation.q")
    finally:
        tf.env = env
        conn.close()
    S.s["provider_log"] = provider_log_lines(log)
    S.s["stored"] = spec_store_texts(host)
    assert "terraform-provider-ferrymq" in S.s["provider_log"], "no provider log lines captured"
    assert host.rabbitmq_pids() == beam, "rotating the certificate restarted RabbitMQ"
    assert amqp.login_error(S.s["endpoint"], USER["username"], USER["password"]) == ""
    plan = tf.plan()
    assert plan.rc == 0, f"expected no changes after the rotation, got {plan.rc}:\n{plan.output}"
    S.ok("rotate")


def test_04_a_certificate_without_the_hosts_address_is_refused_at_plan(host):
    S.need("apply")
    tf = S.s["tf"]
    wrong = S.s["root"].issue(tf.workdir / "pki" / "wrong", [EXTRA_NAME])
    use(tf, host, wrong)
    try:
        plan = tf.plan()
    finally:
        use(tf, host, S.s.get("second") or S.s["first"])
    assert plan.rc == 1, f"expected a plan error, got {plan.rc}:\n{plan.output}"
    text = " ".join(plan.output.split())
    assert "server_certificate.certificate_pem: does not name " + host.address in text, plan.output
    assert "Invalid server_certificate" in text, plan.output
    assert key_body(wrong) not in plan.output


def test_05_back_to_an_agent_issued_certificate_in_place(lab, host):
    S.need("rotate")
    tf = S.s["tf"]
    beam = host.rabbitmq_pids()
    use(tf, host, None)
    res = tf.apply()
    assert "Apply complete! Resources: 0 added, 1 changed, 0 destroyed." in res.output, res.output
    out = tf.output()
    deployment_ca = lab.pki_dir / "ca.pem"
    assert out["ca_certificate"].strip() == deployment_ca.read_text().strip()
    cert = wait_until(
        lambda: _try_peer(host, deployment_ca), 30, "an agent-issued certificate on the AMQPS listener")
    issuer = dict(x[0] for x in cert["issuer"])
    assert issuer.get("commonName", "").startswith("FerryMQ broker CA"), issuer
    assert host.rabbitmq_pids() == beam, "switching certificates restarted RabbitMQ"
    key = host.brokers_dir / S.s["broker_id"] / "engine" / "tls" / "server-key.pem"
    assert key_body(S.s["second"]) not in key.read_text(), "the supplied key is still on the host"
    plan = tf.plan()
    assert plan.rc == 0, f"expected no changes, got {plan.rc}:\n{plan.output}"
    S.ok("issued")


def _try_peer(host, ca_file):
    try:
        return peer_certificate(host.address, labmod.AMQPS_PORT, context_trusting(ca_file))
    except (OSError, ssl.SSLError):
        return None


def spec_store_texts(host) -> dict:
    """Every file the agent keeps for the broker outside the engine's TLS files and the data
    volume: the spec store and the agent's own records."""
    broker_dir = host.brokers_dir / S.s["broker_id"]
    return {str(f): f.read_text(errors="replace") for f in files_under(broker_dir, "*")
            if f.is_file() and not {"tls", "volume"} & set(f.relative_to(broker_dir).parts)}


def keys_in_logs(lab, more: dict) -> list:
    """Where any supplied key shows in the agents' logs (and `more`, name → text)."""
    keys = [key_body(S.s[k]) for k in ("first", "second")]
    logs = {str(h.log_path): h.log_path.read_text(errors="replace") for h in lab.hosts} | more
    return [(p, k[:8] + "…") for p, text in logs.items() for k in keys if k in text]


def test_06_no_supplied_key_in_logs_or_the_spec_store(lab, host):
    S.need("rotate")
    keys = [key_body(S.s[k]) for k in ("first", "second")]
    found = keys_in_logs(lab, {"provider log lines": S.s["provider_log"]})
    assert found == [], f"supplied keys in logs: {found}"
    # The spec store while the second certificate was served: its certificate, not its key.
    stored = S.s["stored"]
    spec_file = str(host.brokers_dir / S.s["broker_id"] / "spec.json")
    supplied = json.loads(stored[spec_file])["spec"]["server_certificate"]
    assert supplied["certificate_pem"] == (S.s["second"] / "cert.pem").read_text(), supplied
    assert not supplied.get("private_key_pem"), "the spec store holds the supplied key"
    hits = [(f, k[:8] + "…") for f, text in stored.items() for k in keys if k in text]
    assert hits == [], f"supplied keys in the agent's files: {hits}"
    print(f"\nsearched {len(lab.hosts) + 1} logs and {len(stored)} files of the agent: no supplied key")


def test_07_destroy_rabbitmq(host):
    S.need("apply")
    res = S.s["tf"].destroy()
    assert "Destroy complete! Resources: 1 destroyed." in res.output, res.output
    assert host.broker_dirs() == [], f"broker data left on the host: {host.broker_dirs()}"
    S.ok("destroyed")


def test_08_activemq_serves_and_rotates_a_supplied_certificate(host, tf_factory):
    """The keystore ActiveMQ reads is built from the supplied PEMs (EC key, chain through the
    issuing CA); a rotation restarts the broker once, as a renewal does."""
    S.need("tls", "destroyed")
    tf = tf_factory("supplied-cert-activemq")
    (tf.workdir / "main.tf").write_text(CONFIG)
    S.s["activemq_tf"] = tf
    root_ca = S.s["root"].dir / "ca.pem"
    use(tf, host, S.s["first"], ACTIVEMQ)
    _, out = apply_until_running(tf, "supplied_certificate_activemq_create_seconds", USER["password"])
    assert out["endpoint"] == f"ssl://{host.address}:{labmod.OPENWIRE_PORT}", out
    assert out["ca_certificate"].strip() == S.s["root"].pem.strip()
    for port in (labmod.OPENWIRE_PORT, labmod.STOMP_PORT):
        assert served_serial(host, root_ca, port) == serial_of(S.s["first"] / "cert.pem"), port
    java = host.activemq_pids()
    use(tf, host, S.s["second"], ACTIVEMQ)
    res = tf.apply()
    assert "Apply complete! Resources: 0 added, 1 changed, 0 destroyed." in res.output, res.output
    want = serial_of(S.s["second"] / "cert.pem")
    wait_until(lambda: _serial_or_none(host, root_ca, labmod.STOMP_PORT) == want, 60,
               "the second certificate on ActiveMQ's STOMP+SSL listener")
    assert host.activemq_pids() != java, "ActiveMQ reads its keystore at start: a rotation restarts it"
    S.ok("activemq")


def test_09_destroy_activemq_and_no_key_in_the_agents_log(lab, host):
    S.need("activemq")
    res = S.s["activemq_tf"].destroy()
    assert "Destroy complete! Resources: 1 destroyed." in res.output, res.output
    assert host.broker_dirs() == [], f"broker data left on the host: {host.broker_dirs()}"
    assert keys_in_logs(lab, {}) == [], "supplied keys in the agents' logs after the ActiveMQ broker"
    labmod.record_result("supplied_certificate_module_seconds", round(time.monotonic() - S.s["start"], 1))


def _serial_or_none(host, ca_file, port):
    try:
        return served_serial(host, ca_file, port)
    except (OSError, ssl.SSLError):
        return None
