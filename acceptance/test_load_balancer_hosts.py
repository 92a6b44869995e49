"""End to end: a RabbitMQ broker whose load balancer runs on a dedicated host (one that is no
instance's host), with the real Terraform 1.0.3, agents, HAProxy and keepalived.

The lab's first host runs the broker; a further host (the lab's fourth, made for this module when
the run's lab has only three, without a volume: it needs none) runs only HAProxy and keepalived.
In sequence: the load balancer on the dedicated host alone; a reload of HAProxy's configuration
under an open AMQP connection (it keeps working, the master process stays; every HAProxy process
runs as user haproxy, before and after); HAProxy killed on the
virtual IP's holder (keepalived gives the address to the other load-balancer host); the dedicated
host removed from the load balancer (its agent stops both); destroy."""

from __future__ import annotations

import json
import os
import signal
import time

import pika
import pytest

import amqp
import lab as labmod
from confirmed_publisher import FAILURES
from steps import Steps, apply_until_running, broker_resource, wait_until

ADDRESS = "ferrymq_broker.rabbitmq"
PASSWORD = "app-Passw0rd-2024!"
QUEUE = "acceptance.lb-hosts"

MAIN_TF = """
terraform {
  required_providers {
    ferrymq = {
      source = "ferrymq/ferrymq"
    }
  }
}

provider "ferrymq" {}

variable "host" { type = string }
variable "volume" { type = string }
variable "virtual_ip" { type = string }
variable "load_balancer_hosts" { type = list(string) }
variable "password" {
  type      = string
  sensitive = true
}

resource "ferrymq_broker" "rabbitmq" {
  broker_name        = "acceptance-lb-hosts"
  engine_type        = "RabbitMQ"
  engine_version     = "3.10.8"
  host_instance_type = "mq.m5.large"
  deployment_mode    = "SINGLE_INSTANCE"

  instance {
    host   = var.host
    volume = var.volume
  }

  load_balancer {
    virtual_ip = var.virtual_ip
    hosts      = var.load_balancer_hosts
  }

  user {
    username       = "app"
    password       = var.password
    console_access = true
  }
}

output "broker_id" {
  value = ferrymq_broker.rabbitmq.id
}

output "status" {
  value = ferrymq_broker.rabbitmq.status
}

output "load_balancer_endpoint" {
  value = ferrymq_broker.rabbitmq.load_balancer_endpoint
}

# What clients verify the broker with (the tests' TLS clients trust it from here).
output "ca_certificate" {
  value = ferrymq_broker.rabbitmq.ca_certificate
}
"""

S = Steps()


@pytest.fixture(scope="module")
def lb_host(lab):
    """A host for the load balancer only: the lab's fourth, or one made for this module."""
    if len(lab.hosts) >= 4:
        yield lab.hosts[3]
        return
    h = lab.add_host(volume=False)
    try:
        yield h
    finally:
        lab.remove_host(h)


def vip(lab) -> str:
    return f"{lab.net}.101"


def lb_dir(h):
    return h.brokers_dir / S.s["broker_id"] / "load_balancer"


def haproxy_master(h) -> int:
    return int((lb_dir(h) / "haproxy.pid").read_text().split()[0])


def endpoint_answers(endpoint: str) -> bool:
    try:
        conn = amqp.connect(endpoint, "app", PASSWORD, socket_timeout=2, stack_timeout=3)
    except FAILURES:
        return False
    conn.close()
    return True


def apply_hosts(tf, hosts: list) -> str:
    tf.write_vars({**S.s["vars"], "load_balancer_hosts": [h.address for h in hosts]})
    res = tf.apply()
    assert "Apply complete! Resources: 0 added, 1 changed, 0 destroyed." in res.output, res.output
    return res.output


def test_01_the_load_balancer_runs_on_a_dedicated_host(lab, host, lb_host, tf_factory):
    tf = tf_factory("load-balancer-hosts")
    (tf.workdir / "main.tf").write_text(MAIN_TF)
    S.s["tf"] = tf
    S.s["vars"] = {"host": host.address, "volume": host.loop, "virtual_ip": vip(lab), "password": PASSWORD}
    # Still refused at plan: a load balancer with no hosts, a host listed twice.
    for hosts, message in (([], "no hosts to run on"),
                           ([lb_host.address, f"{lb_host.address}:7443"], "is listed twice")):
        tf.write_vars({**S.s["vars"], "load_balancer_hosts": hosts})
        res = tf.plan()
        assert res.rc == 1 and message in res.output and "load_balancer" in res.output, res.output
    tf.write_vars({**S.s["vars"], "load_balancer_hosts": [lb_host.address]})
    _res, out = apply_until_running(tf, "dedicated_lb_apply_to_running_seconds", PASSWORD)
    S.s["broker_id"] = out["broker_id"]
    S.s["endpoint"] = out["load_balancer_endpoint"]
    assert S.s["endpoint"] == f"amqps://{vip(lab)}:5671", out
    values = broker_resource(tf, ADDRESS)
    assert values["load_balancer"]["hosts"] == [lb_host.address], values["load_balancer"]
    assert [i["ip_address"] for i in values["instances"]] == [host.address], values["instances"]

    # The dedicated host runs HAProxy and keepalived and nothing of the engine; the broker's host
    # no load balancer.
    comms = {c for _p, c, _ in lb_host.processes()}
    assert {"haproxy", "keepalived"} <= comms and "beam.smp" not in comms, comms
    assert not {"haproxy", "keepalived"} & {c for _p, c, _ in host.processes()}
    assert_haproxy_not_root(lb_host)
    broker_dir = lb_host.brokers_dir / S.s["broker_id"]
    assert sorted(p.name for p in broker_dir.iterdir()) == ["load_balancer", "spec.json"], list(broker_dir.iterdir())
    stored = json.loads((broker_dir / "spec.json").read_text())
    assert PASSWORD not in json.dumps(stored) and not stored.get("spec", stored).get("users"), stored
    holders = wait_until(lambda: lab.address_holders(vip(lab)), 30, "a host holding the virtual IP")
    assert holders == [lb_host], [h.name for h in holders]
    wait_until(lambda: endpoint_answers(S.s["endpoint"]), 30, "AMQP through the dedicated load balancer")
    S.ok("apply")


def haproxy_pids(h) -> list[int]:
    """h's serving HAProxy processes: the master and its workers (master-worker mode, `-W`), not
    the agent's passing `haproxy -c` configuration checks."""
    return [p for p, c, cmd in h.processes() if c == "haproxy" and " -W " in f" {cmd} "]


def assert_haproxy_not_root(h) -> None:
    """Every HAProxy process on h, its master too, and the agent's configuration checks run as a
    user other than root (all four uids); keepalived, which tracks HAProxy, still runs as root."""
    haproxy = h.pids_named("haproxy")
    assert haproxy, f"no HAProxy on {h.name}"
    uids = {p: labmod.proc_uids(p) for p in haproxy}
    assert all(u and 0 not in u for u in uids.values()), f"HAProxy processes run as root on {h.name}: {uids}"
    assert all(labmod.proc_uids(p)[:1] == [0] for p in h.pids_named("keepalived"))
    print(f"\nHAProxy on {h.name}: pids and uids {uids}")


def holder_of_vip(lab) -> "labmod.Host":
    holders = wait_until(lambda: (lambda hs: hs if len(hs) == 1 else None)(lab.address_holders(vip(lab))), 30,
                         "one host holding the virtual IP")
    return holders[0]


def test_02_a_reload_keeps_established_connections(lab, host, lb_host):
    """An AMQP connection through the virtual IP stays open across a rewrite of HAProxy's
    configuration on the holder (HAProxy reloaded with SIGUSR2): it still publishes with a
    confirm, and HAProxy's master process is the same."""
    S.need("apply")
    # A second load-balancer host: the broker's own. keepalived on the dedicated host gets its
    # first peer, which re-creates its VRRP instance (a multicast socket becomes a unicast one):
    # the virtual IP is elected again, so the connection is opened after that.
    apply_hosts(S.s["tf"], [lb_host, host])
    assert {"haproxy", "keepalived"} <= {c for _p, c, _ in host.processes()}
    holder = holder_of_vip(lab)
    S.s["holder"] = holder
    conn = amqp.connect(S.s["endpoint"], "app", PASSWORD, heartbeat=0)
    try:
        ch = conn.channel()
        ch.queue_declare(queue=QUEUE, durable=True)
        ch.confirm_delivery()
        props = pika.BasicProperties(delivery_mode=2)
        ch.basic_publish("", QUEUE, b"before", properties=props, mandatory=True)
        master = haproxy_master(holder)
        workers = set(haproxy_pids(holder)) - {master}

        # HAProxy's configuration rewritten: the agent finds it changed and writes it back, checks
        # it and reloads HAProxy, whose new worker takes new connections while the old one keeps
        # this connection.
        cfg = lb_dir(holder) / "haproxy.cfg"
        want = cfg.read_text()
        cfg.write_text(want.replace("timeout check 2s", "timeout check 3s"))
        changed = time.monotonic()
        wait_until(lambda: cfg.read_text() == want, 30, "the agent rewriting haproxy.cfg")
        new_workers = wait_until(lambda: set(haproxy_pids(holder)) - {master} - workers, 30,
                                 "a new HAProxy worker after the reload")
        reloaded = time.monotonic() - changed
        assert haproxy_master(holder) == master, "HAProxy's master changed: it was restarted, not reloaded"
        assert master in haproxy_pids(holder)
        assert workers & set(haproxy_pids(holder)), "the old worker holding the connection is gone"
        assert lab.address_holders(vip(lab)) == [holder]
        # The master re-executed itself for the reload and started the new workers: still not root,
        # and the new worker serves on.
        assert_haproxy_not_root(holder)
        assert new_workers & set(haproxy_pids(holder)), \
            f"the new HAProxy worker exited:\n{labmod.tail(lb_dir(holder) / 'haproxy.log')}"

        ch.basic_publish("", QUEUE, b"after", properties=props, mandatory=True)
        assert conn.is_open
    finally:
        if conn.is_open:
            conn.close()
    assert endpoint_answers(S.s["endpoint"])
    print(f"\nHAProxy on {holder.name} reloaded {reloaded:.1f} s after its configuration changed; master {master} "
          f"kept, new worker(s) {sorted(new_workers)}; the open connection published with a confirm after it")
    labmod.record_result("dedicated_lb_haproxy_reload_seconds", round(reloaded, 2))
    got = amqp.consume(S.s["endpoint"], "app", PASSWORD, QUEUE, 2, timeout=15)
    assert got == [b"before", b"after"], got
    amqp.delete_queue(S.s["endpoint"], "app", PASSWORD, QUEUE)
    S.ok("reload")


def test_03_haproxy_dead_on_the_holder_moves_the_virtual_ip(lab, host, lb_host):
    """keepalived tracks HAProxy: with the holder's agent stopped (nothing restarts HAProxy there),
    HAProxy killed on the holder gives the virtual IP to the other load-balancer host."""
    S.need("reload")
    holder = holder_of_vip(lab)
    other = lb_host if holder is host else host
    lab.kill_agent(holder)
    try:
        for p in haproxy_pids(holder):
            os.kill(p, signal.SIGKILL)
        died = time.monotonic()
        wait_until(lambda: not haproxy_pids(holder), 10, "HAProxy gone on the holder")
        wait_until(lambda: lab.address_holders(vip(lab)) == [other], 30,
                   lambda: f"the virtual IP on {other.name}: held by {[h.name for h in lab.address_holders(vip(lab))]}")
        wait_until(lambda: endpoint_answers(S.s["endpoint"]), 30, "AMQP through the virtual IP after HAProxy died")
        answered = time.monotonic() - died
    finally:
        lab.start_agent(holder)
    print(f"\nHAProxy killed on {holder.name}: the virtual IP moved to {other.name}, "
          f"a new connection after {answered:.1f} s")
    labmod.record_result("dedicated_lb_haproxy_kill_new_connection_seconds", round(answered, 2))
    # The restarted agent starts HAProxy again; the address stays on its new holder.
    wait_until(lambda: haproxy_pids(holder), 30, f"HAProxy restarted on {holder.name}")
    time.sleep(3)
    assert lab.address_holders(vip(lab)) == [other]
    S.ok("haproxy_kill")


def test_04_a_host_left_out_stops_its_load_balancer(lab, host, lb_host):
    S.need("apply")
    apply_hosts(S.s["tf"], [host])
    assert not {"haproxy", "keepalived"} & {c for _p, c, _ in lb_host.processes()}
    assert lb_host.broker_dirs() == [], lb_host.broker_dirs()
    wait_until(lambda: lab.address_holders(vip(lab)) == [host], 30, "the virtual IP on the broker's host")
    wait_until(lambda: endpoint_answers(S.s["endpoint"]), 30, "AMQP through the load balancer")
    assert S.s["tf"].plan().rc == 0, "a plan after the update shows changes"


def test_05_destroy_leaves_no_load_balancer(lab, host, lb_host):
    S.need("apply")
    res = S.s["tf"].destroy()
    assert "Destroy complete! Resources: 1 destroyed." in res.output, res.output
    for h in (host, lb_host):
        assert not {"beam.smp", "haproxy", "keepalived"} & {c for _p, c, _ in h.processes()}, h.processes()
        assert h.broker_dirs() == [], h.broker_dirs()
    assert lab.address_holders(vip(lab)) == []
