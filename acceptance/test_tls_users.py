"""End to end: TLS everywhere and users, on a single-instance RabbitMQ broker with the real
Terraform 1.0.3, agent and RabbitMQ.

* clients (pika, urllib) connect over TLS trusting only the CA from ``terraform output``, and
  check the broker's address against its certificate; a plain connection is refused, and so is a
  client that does not trust the deployment CA;
* the server certificate is renewed in place (its record aged on the host): new connections get
  the new certificate, an open one keeps working, the engine is not restarted;
* ``ferrymq_user`` is created, updated (password, console access, groups) and deleted;
* a user removed and a password changed behind Terraform's back show in ``terraform plan``, and
  an apply puts them back;
* every TLS listener (AMQPS, console, agent API, metrics) refuses TLS 1.0/1.1 and CBC and CCM
  suites and accepts AEAD suites and TLS 1.3; metrics on the host's address need a client
  certificate of the deployment CA;
* the agent's own RabbitMQ user, deleted or changed by a console user, is put back by the agent;
* afterwards, no password the test wrote, nor the broker's Erlang cookie, agent credential or
  private key, is in any agent log, the provider's log lines, or (passwords) the agent's state.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import time
import urllib.error
import urllib.request

import pika
import pytest

import amqp
import lab as labmod
import tls
from steps import Steps, apply_until_running, broker_resource, files_under, provider_log_lines, wait_until
from tls import peer_certificate

S = Steps()
ADDRESS = "ferrymq_broker.rabbitmq"
USER_ADDRESS = "ferrymq_user.svc[0]"
APP = {"username": "app", "password": "app-Tls-Passw0rd-2026", "console_access": True, "groups": ["monitoring"]}
SVC_PASSWORD = "svc-Tls-Passw0rd-2026"
SVC_NEW_PASSWORD = "svc-Rotated-Passw0rd-77"
# Set behind Terraform's back, through the management API.
INTRUDER_PASSWORD = "changed-Behind-Back-99"
ALL_PASSWORDS = [APP["password"], SVC_PASSWORD, SVC_NEW_PASSWORD, INTRUDER_PASSWORD]

CONFIG = """
terraform {
  required_providers {
    ferrymq = { source = "ferrymq/ferrymq" }
  }
}

provider "ferrymq" {}

variable "host" { type = string }
variable "volume" { type = string }
variable "app" {
  type = object({ username = string, password = string, console_access = bool, groups = list(string) })
}
variable "svc" {
  # null: no ferrymq_user
  type = object({ password = string, console_access = bool, groups = list(string) })
}

resource "ferrymq_broker" "rabbitmq" {
  broker_name        = "acceptance-tls-users"
  engine_type        = "RabbitMQ"
  engine_version     = "3.10.8"
  host_instance_type = "mq.m5.large"

  instance {
    host   = var.host
    volume = var.volume
  }

  user {
    username       = var.app.username
    password       = var.app.password
    console_access = var.app.console_access
    groups         = var.app.groups
  }

  # An alias the certificate is issued for too, as a load balancer's name would be.
  certificate_names = ["mq.acceptance.test"]
}

resource "ferrymq_user" "svc" {
  count          = var.svc == null ? 0 : 1
  broker_id      = ferrymq_broker.rabbitmq.id
  host           = var.host
  username       = "svc"
  password       = var.svc.password
  console_access = var.svc.console_access
  groups         = var.svc.groups
}

output "broker_id" { value = ferrymq_broker.rabbitmq.id }
output "status" { value = ferrymq_broker.rabbitmq.status }
output "amqp_endpoint" { value = ferrymq_broker.rabbitmq.instances[0].endpoints[0] }
output "console_url" { value = ferrymq_broker.rabbitmq.instances[0].console_url }
output "ca_certificate" { value = ferrymq_broker.rabbitmq.ca_certificate }
"""


def set_vars(tf, host, svc: dict | None) -> None:
    tf.write_vars({"host": host.address, "volume": host.loop, "app": APP, "svc": svc})


def svc(password=SVC_PASSWORD, console=False, groups=("orders",)) -> dict:
    return {"password": password, "console_access": console, "groups": list(groups)}


def test_01_apply_broker_and_user(lab, host, tf_factory):
    tf = tf_factory("tls-users")
    (tf.workdir / "main.tf").write_text(CONFIG)
    S.s["tf"] = tf
    set_vars(tf, host, svc())
    start = time.monotonic()
    res = tf.apply()
    out = tf.output()
    print(f"\napply of broker + ferrymq_user: {time.monotonic() - start:.1f} s")
    assert "Apply complete! Resources: 2 added" in res.output, res.output
    for pw in ALL_PASSWORDS:
        assert pw not in res.output, "a password appears in the apply output"
    assert out["status"] == "RUNNING", out
    assert out["amqp_endpoint"] == f"amqps://{host.address}:{labmod.AMQPS_PORT}", out
    assert out["console_url"] == f"https://{host.address}:{labmod.CONSOLE_TLS_PORT}", out
    assert out["ca_certificate"].startswith("-----BEGIN CERTIFICATE-----"), out
    # The CA is the deployment's, the one the lab made with `pki init`.
    assert out["ca_certificate"].strip() == (lab.pki_dir / "ca.pem").read_text().strip()
    S.s.update(out)
    S.ok("apply")


def test_02_clients_verify_the_broker_with_the_ca_from_terraform_output(host):
    S.need("apply")
    ep = S.s["amqp_endpoint"]
    bodies = [f"tls-{i}".encode() for i in range(50)]
    amqp.publish_confirmed(ep, APP["username"], APP["password"], "tls.q", bodies)
    assert amqp.consume(ep, APP["username"], APP["password"], "tls.q", len(bodies), timeout=30) == bodies
    amqp.delete_queue(ep, APP["username"], APP["password"], "tls.q")
    # The ferrymq_user logs in too (over TLS).
    assert amqp.login_error(ep, "svc", SVC_PASSWORD) == ""

    # The certificate names the host's address and the extra name, and chains to the CA.
    cert = peer_certificate(host.address, labmod.AMQPS_PORT, tls.context())
    sans = cert.get("subjectAltName", ())
    assert ("IP Address", host.address) in sans and ("DNS", "mq.acceptance.test") in sans, sans
    issuer = dict(x[0] for x in cert["issuer"])
    assert issuer.get("commonName", "").startswith("FerryMQ broker CA"), issuer
    S.s["serial"] = cert["serialNumber"]
    # The console too.
    status, body = amqp.management_get(S.s["console_url"], "/api/whoami", APP["username"], APP["password"])
    assert status == 200 and body.get("name") == APP["username"], (status, body)
    cert = peer_certificate(host.address, labmod.CONSOLE_TLS_PORT, tls.context())
    assert ("IP Address", host.address) in cert.get("subjectAltName", ()), cert
    S.ok("tls")


def test_03_plain_and_untrusting_clients_are_refused(host):
    S.need("apply")
    # No plain listeners: nothing on 5672 nor 15672.
    for port in (labmod.AMQP_PORT, labmod.CONSOLE_PORT):
        assert not host.port_open(port), f"a plain listener answers on {host.address}:{port}"
    # Plain AMQP to the TLS port: no connection.start, the client fails.
    plain = f"amqp://{host.address}:{labmod.AMQPS_PORT}"
    err = amqp.login_error(plain, APP["username"], APP["password"])
    assert err, "a plain AMQP client logged in on the TLS port"
    # A client that trusts only the public CAs (not the deployment CA) refuses the broker.
    with pytest.raises(ssl.SSLCertVerificationError):
        peer_certificate(host.address, labmod.AMQPS_PORT, ssl.create_default_context())
    # A client that checks another name refuses it as well.
    ctx = tls.context()
    with socket.create_connection((host.address, labmod.AMQPS_PORT), timeout=5) as raw:
        with pytest.raises(ssl.SSLCertVerificationError):
            ctx.wrap_socket(raw, server_hostname="other.example")
    print(f"\nplain AMQP on {labmod.AMQPS_PORT} refused: {err}")


def test_04_certificate_is_renewed_without_a_restart(host):
    """The certificate record on the host is aged past the renewal point: the agent issues a new
    certificate within a pass, RabbitMQ picks it up for new connections, an open connection
    keeps working, and the engine is the same process."""
    S.need("tls")
    beam = host.rabbitmq_pids()
    record = host.brokers_dir / S.s["broker_id"] / "engine" / "tls" / "issued.json"
    data = json.loads(record.read_text())
    conn = amqp.connect(S.s["amqp_endpoint"], APP["username"], APP["password"])
    try:
        ch = conn.channel()
        ch.queue_declare(queue="renewal.q", durable=True)
        data["not_after"] = int(time.time()) + 3600  # an hour left: well inside the renewal window
        record.write_text(json.dumps(data))
        start = time.monotonic()
        cert = wait_until(
            lambda: (c := peer_certificate(host.address, labmod.AMQPS_PORT, tls.context()))["serialNumber"]
            != S.s["serial"] and c,
            60, "a new certificate on the AMQPS listener")
        secs = time.monotonic() - start
        print(f"\nrenewed certificate served after {secs:.1f} s")
        labmod.record_result("certificate_renewal_seconds", round(secs, 2))
        # The connection opened before the renewal still works.
        ch.basic_publish(exchange="", routing_key="renewal.q", body=b"after-renewal")
        ch.queue_delete(queue="renewal.q")
    finally:
        conn.close()
    assert json.loads(record.read_text())["not_after"] > time.time() + 80 * 86400
    assert amqp.login_error(S.s["amqp_endpoint"], APP["username"], APP["password"]) == ""
    assert host.rabbitmq_pids() == beam, "renewing the certificate restarted RabbitMQ"
    S.s["serial"] = cert["serialNumber"]


def test_05_ferrymq_user_tags_and_console(host):
    S.need("apply")
    url = S.s["console_url"]
    status, body = amqp.management_get(url, "/api/users/svc", APP["username"], APP["password"])
    assert status == 200 and sorted(body.get("tags") or []) == ["orders"], body
    status, body = amqp.management_get(url, "/api/users/app", APP["username"], APP["password"])
    assert sorted(body.get("tags") or []) == ["administrator", "monitoring"], body
    # Hashed by the agent with RabbitMQ's own algorithm, never sent as a password.
    assert body.get("hashing_algorithm") == "rabbit_password_hashing_sha256", body
    status, _ = amqp.management_get(url, "/api/whoami", "svc", SVC_PASSWORD)
    assert status == 401, "svc has no console access but logged in to the console"
    plan = S.s["tf"].plan()
    assert plan.rc == 0, f"expected no changes, got {plan.rc}:\n{plan.output}"


def test_06_ferrymq_user_update_in_place(host):
    S.need("apply")
    tf = S.s["tf"]
    set_vars(tf, host, svc(password=SVC_NEW_PASSWORD, console=True, groups=("orders", "monitoring")))
    plan = tf.plan()
    assert plan.rc == 2 and "Plan: 0 to add, 1 to change, 0 to destroy." in plan.output, plan.output
    assert SVC_NEW_PASSWORD not in plan.output
    res = tf.apply()
    assert "Apply complete! Resources: 0 added, 1 changed, 0 destroyed." in res.output, res.output
    ep = S.s["amqp_endpoint"]
    assert amqp.login_error(ep, "svc", SVC_NEW_PASSWORD) == ""
    assert amqp.login_error(ep, "svc", SVC_PASSWORD), "the old password still works"
    status, body = amqp.management_get(S.s["console_url"], "/api/whoami", "svc", SVC_NEW_PASSWORD)
    assert status == 200, (status, body)
    # The broker's own state does not list the ferrymq_user: no drift on the broker.
    users = broker_resource(tf, ADDRESS).get("user") or []
    assert [u["username"] for u in users] == ["app"], users
    plan = tf.plan()
    assert plan.rc == 0, f"expected no changes, got {plan.rc}:\n{plan.output}"
    S.ok("update")


def test_07_users_changed_behind_terraforms_back_show_as_drift(host):
    S.need("update")
    tf = S.s["tf"]
    url = S.s["console_url"]
    # Remove the ferrymq_user and change app's password with the engine's own API.
    status, body = amqp.management_request(url, "DELETE", "/api/users/svc", APP["username"], APP["password"])
    assert status in (200, 204), (status, body)
    status, body = amqp.management_request(url, "PUT", "/api/users/app", APP["username"], APP["password"],
                                           {"password": INTRUDER_PASSWORD, "tags": "administrator,monitoring"})
    assert status in (200, 201, 204), (status, body)
    # The agent reports it, it does not silently undo it: the next plan shows both.
    time.sleep(4)  # more than one reconcile pass (3 s)
    assert amqp.login_error(S.s["amqp_endpoint"], "svc", SVC_NEW_PASSWORD), "svc was put back without an apply"
    plan = tf.plan()
    assert plan.rc == 2, f"expected changes (exit 2), got {plan.rc}:\n{plan.output}"
    assert "Plan: 1 to add, 1 to change, 0 to destroy." in plan.output, plan.output
    assert USER_ADDRESS in plan.output and ADDRESS in plan.output, plan.output
    for pw in ALL_PASSWORDS:
        assert pw not in plan.output, "a password appears in the plan output"
    res = tf.apply()
    assert "Apply complete! Resources: 1 added, 1 changed, 0 destroyed." in res.output, res.output
    assert amqp.login_error(S.s["amqp_endpoint"], "svc", SVC_NEW_PASSWORD) == ""
    assert amqp.login_error(S.s["amqp_endpoint"], APP["username"], APP["password"]) == ""
    assert amqp.login_error(S.s["amqp_endpoint"], APP["username"], INTRUDER_PASSWORD)
    plan = tf.plan()
    assert plan.rc == 0, f"expected no changes after the apply, got {plan.rc}:\n{plan.output}"


def test_08_ferrymq_user_delete(host):
    S.need("update")
    tf = S.s["tf"]
    set_vars(tf, host, None)
    res = tf.apply()
    assert "Apply complete! Resources: 0 added, 0 changed, 1 destroyed." in res.output, res.output
    assert amqp.login_error(S.s["amqp_endpoint"], "svc", SVC_NEW_PASSWORD), "svc can still log in"
    status, _ = amqp.management_get(S.s["console_url"], "/api/users/svc", APP["username"], APP["password"])
    assert status == 404
    plan = tf.plan()
    assert plan.rc == 0, f"expected no changes, got {plan.rc}:\n{plan.output}"


def test_08b_every_tls_listener_is_aead_only_and_metrics_need_a_client_certificate(lab, host):
    """A TLS scan of every TLS endpoint on the host: the broker's AMQPS and HTTPS console, the
    agent API and the metrics listener refuse TLS 1.0 and 1.1, TLS 1.2 with CBC or CCM(-8) suites
    only and TLS 1.3 with CCM suites only; they accept TLS 1.2 with an AEAD suite, and TLS 1.3.
    The metrics listener on the host's address serves only HTTPS to a client with a certificate of
    the deployment CA: a plain HTTP GET and an HTTPS GET without a client certificate get nothing."""
    S.need("apply")
    listeners = [(labmod.AMQPS_PORT, None), (labmod.CONSOLE_TLS_PORT, None),
                 (labmod.AGENT_PORT, lab.pki_dir), (labmod.METRICS_PORT, lab.pki_dir)]
    for port, client in listeners:
        got = tls.assert_aead_only(host.address, port, client)
        suites = tls.accepted_tls12_suites(host.address, port, client)
        print(f"\n{host.address}:{port}: {got}\n  TLS 1.2 suites accepted: {suites}")
        assert suites and all("GCM" in s or "CHACHA20" in s for s in suites), suites

    url = f"{host.address}:{labmod.METRICS_PORT}/metrics"
    # With the lab's client certificate, the agent's certificate checked against the deployment CA.
    with urllib.request.urlopen(host.metrics_url, timeout=30, context=host.metrics_context()) as r:
        assert r.status == 200 and "ferrymq_broker_running" in r.read().decode()
    # Plain HTTP: no HTTP answer at all.
    with pytest.raises((http.client.HTTPException, urllib.error.URLError, ConnectionError)):
        urllib.request.urlopen(f"http://{url}", timeout=10).read()
    # HTTPS trusting the deployment CA but without a client certificate: refused.
    no_cert = ssl.create_default_context(cafile=str(lab.pki_dir / "ca.pem"))
    with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
        urllib.request.urlopen(f"https://{url}", timeout=10, context=no_cert).read()


AGENT_USER = "ferrymq-agent"


def test_08c_the_agents_own_user_is_hidden_from_console_users(host):
    """The agent's own RabbitMQ user is not in the node's user database (RabbitMQ asks the agent
    about it, through rabbitmq_auth_backend_http on loopback): a console user (an administrator,
    as on Amazon MQ) does not see it in the user list and gets 404 deleting it. An internal
    `ferrymq-agent` a console user makes with another password does not lock the agent out (the
    internal backend refuses the agent's password, RabbitMQ asks the next one): the agent deletes
    it, goes on converging users (a ferrymq_user applied afterwards takes effect), and its metrics
    still show queue figures."""
    S.need("apply")
    tf = S.s["tf"]
    url, ep = S.s["console_url"], S.s["amqp_endpoint"]
    secrets = json.loads((host.brokers_dir / S.s["broker_id"] / "secrets.json").read_text())
    agent = (AGENT_USER, secrets["agent_password"])
    admin = (APP["username"], APP["password"])

    def listed() -> list[str]:
        status, users = amqp.management_get(url, "/api/users", *admin)
        assert status == 200, (status, users)
        return sorted(u["name"] for u in users)

    print(f"\nusers a console user lists: {listed()}")
    wait_until(lambda: AGENT_USER not in listed(), 30, "the internal ferrymq-agent deleted", interval=0.5)
    status, answer = amqp.management_request(url, "DELETE", f"/api/users/{AGENT_USER}", *admin, None)
    assert status == 404, (status, answer)
    status, answer = amqp.management_request(url, "DELETE", f"/api/permissions/%2F/{AGENT_USER}", *admin, None)
    assert status == 404, (status, answer)
    # The agent itself still logs in, as an administrator (the HTTP backend's answer).
    status, me = amqp.management_get(url, "/api/whoami", *agent)
    assert status == 200 and "administrator" in str(me.get("tags")), (status, me)

    # A console user makes an internal ferrymq-agent with a password of their own.
    status, answer = amqp.management_request(url, "PUT", f"/api/users/{AGENT_USER}", *admin,
                                             {"password": INTRUDER_PASSWORD, "tags": "administrator"})
    assert status in (201, 204), (status, answer)
    assert AGENT_USER in listed()
    # The agent deletes it: logged in through the HTTP backend, past the internal one's refusal.
    start = time.monotonic()
    wait_until(lambda: AGENT_USER not in listed(), 30, "the console user's ferrymq-agent deleted", interval=0.5)
    print(f"console user's internal {AGENT_USER} deleted by the agent after {time.monotonic() - start:.1f} s")
    assert amqp.login_error(ep, AGENT_USER, INTRUDER_PASSWORD), "the intruder's password works"
    status, me = amqp.management_get(url, "/api/whoami", *agent)
    assert status == 200 and "administrator" in str(me.get("tags")), (status, me)

    # The same again, and the agent converges a ferrymq_user while it is there.
    status, answer = amqp.management_request(url, "PUT", f"/api/users/{AGENT_USER}", *admin,
                                             {"password": INTRUDER_PASSWORD, "tags": "administrator"})
    assert status in (201, 204), (status, answer)
    set_vars(tf, host, svc())
    res = tf.apply()
    assert "Apply complete! Resources: 1 added, 0 changed, 0 destroyed." in res.output, res.output
    wait_until(lambda: amqp.login_error(ep, "svc", SVC_PASSWORD) == "", 30, "svc made by the agent", interval=0.5)
    status, body = amqp.management_get(url, "/api/users/svc", *admin)
    assert status == 200 and sorted(body.get("tags") or []) == ["orders"], (status, body)
    wait_until(lambda: AGENT_USER not in listed(), 30, "the console user's ferrymq-agent deleted", interval=0.5)

    # Metrics, which the agent reads through the management API as itself: queue figures.
    queue = "hidden.agent.check"
    amqp.publish_confirmed(ep, *admin, queue, [b"m-1", b"m-2", b"m-3"])
    needle = f'queue="{queue}"'

    def queue_figure() -> bool:
        with urllib.request.urlopen(host.metrics_url, timeout=30, context=host.metrics_context()) as r:
            text = r.read().decode()
        return any(line.startswith("ferrymq_rabbitmq_queue_messages{") and needle in line
                   and line.rsplit(" ", 1)[-1] in ("3", "3.0") for line in text.splitlines())

    wait_until(queue_figure, 60, "the queue's depth in the agent's metrics", interval=2)
    amqp.delete_queue(ep, *admin, queue)
    assert amqp.login_error(ep, APP["username"], APP["password"]) == ""
    plan = tf.plan()
    assert plan.rc == 0, f"expected no changes, got {plan.rc}:\n{plan.output}"


def test_09_no_secret_in_logs_or_state(lab, host):
    """Every password the test wrote, and the broker's own secrets (cookie, agent credential,
    keystore password, private key), in no agent log nor provider log line; passwords in no file
    of the agent's state directory (the engine keeps RabbitMQ hashes only)."""
    S.need("apply")
    tf = S.s["tf"]
    # One more refresh and apply with the provider's logs captured (Terraform relays them).
    log = tf.workdir / "tf-trace.log"
    env = dict(tf.env)
    tf.env.update({"TF_LOG": "DEBUG", "TF_LOG_PATH": str(log)})
    try:
        set_vars(tf, host, svc(password=SVC_NEW_PASSWORD, console=True, groups=("orders", "monitoring")))
        tf.apply()
    finally:
        tf.env = env
    provider_log = provider_log_lines(log)
    assert "terraform-provider-ferrymq" in provider_log, "no provider log lines captured"

    broker_dir = host.brokers_dir / S.s["broker_id"]
    secrets = json.loads((broker_dir / "secrets.json").read_text())
    key_pem = (broker_dir / "engine" / "tls" / "server-key.pem").read_text()
    key_body = "".join(key_pem.strip().splitlines()[1:-1])[:64]
    broker_secrets = [secrets["cookie"], secrets["agent_password"], secrets["keystore_password"], key_body]

    logs = {h.log_path: h.log_path.read_text(errors="replace") for h in lab.hosts}
    # (Not the runner's terraform.log: it holds `terraform show -json`, whose state carries the
    # sensitive values as Terraform keeps them. Plan and apply outputs are checked step by step.)
    logs[log] = provider_log
    found = [(str(p), s[:6] + "…") for p, text in logs.items() for s in ALL_PASSWORDS + broker_secrets if s in text]
    assert found == [], f"secrets in logs: {found}"

    # The agent's state directory (specs, engine configuration, volumes): no password at all.
    hits = []
    scanned = 0
    for f in files_under(host.state_dir, "*"):
        if not f.is_file() or f.is_symlink():
            continue
        try:
            data = f.read_bytes()
        except OSError:
            continue
        scanned += 1
        hits += [(str(f), pw[:6] + "…") for pw in ALL_PASSWORDS if pw.encode() in data]
    assert scanned > 10, f"only {scanned} files scanned under {host.state_dir}"
    assert hits == [], f"passwords stored on the host: {hits}"
    # The spec store holds salted hashes in place of passwords.
    spec = json.loads((broker_dir / "spec.json").read_text())
    stored = [u for key in ("users", "standalone_users") for u in spec["spec"].get(key) or []]
    assert stored and all(u.get("password_hash") and not u.get("password") for u in stored), \
        f"stored users without a hash or with a password: {[u.get('username') for u in stored]}"
    print(f"\nscanned {scanned} files of the agent's state and {len(logs)} logs: no secret found")


def test_10_destroy(host):
    S.need("apply")
    res = S.s["tf"].destroy()
    assert "Destroy complete! Resources: 2 destroyed." in res.output, res.output
    assert host.broker_dirs() == [], f"broker data left on the host: {host.broker_dirs()}"
