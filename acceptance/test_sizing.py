"""Instance-size selection end to end: a RabbitMQ broker on one appliance host with the real
Terraform 1.0.3 and the real agent.

- `mq.m5.xlarge` (4 vCPU) on a host with fewer CPUs: apply fails naming both figures, nothing runs;
- `mq.m5.large`: RUNNING, the engine in a cgroup limited to 8 GiB / 2 CPUs, RabbitMQ's memory
  watermark and connection_max from the type;
- `mq.t3.micro` in place ("1 to change"): the limits follow, persisted messages survive;
- on `mq.t3.micro` the 2,501st queue is refused (the type's queue quota as a vhost limit) and
  connections stop being served at 500 (connection_max, a soft limit of up to 10 more);
- destroy removes the broker and its cgroups;
- ActiveMQ `mq.t3.micro` -> `mq.m5.large` in place: new heap and cgroup, messages kept.

The steps run in order and share one broker; a step whose prerequisite failed fails at once.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

import pika
from pika.adapters.utils.connection_workflow import AMQPConnectorException

import amqp
import erlang_dist
import lab as labmod
import stompclient
from steps import wait_until

EXAMPLE = "rabbitmq-single-instance"
BROKER_NAME = "acceptance-sizing"
APP = {"username": "app", "password": "app-Passw0rd-2024!", "console_access": True}
QUEUE = "sizing.persistent"
MESSAGES = 200
GIB = 1 << 30
CGROUP = Path("/sys/fs/cgroup")
# Amazon MQ's queue quota for mq.t3.micro (the catalogue's rabbitmq_queues).
QUEUE_QUOTA_MICRO = 2_500
# ... and its connections per node (connection_max).
CONNECTION_QUOTA_MICRO = 500
# RabbitMQ's num_acceptors.tcp default: how far past connection_max Ranch's soft limit may go.
RANCH_ACCEPTORS = 10

S: dict = {}
DONE: set = set()


def need(*steps: str) -> None:
    missing = [s for s in steps if s not in DONE]
    if missing:
        pytest.fail(f"not run: the earlier step(s) {', '.join(missing)} did not pass", pytrace=False)


def variables(host, instance_type: str) -> dict:
    # apply_immediately: a resize otherwise waits for the maintenance window
    # (test_maintenance_window.py shows that).
    return {"broker_name": BROKER_NAME, "host": host.address, "volume": host.loop, "users": [APP],
            "host_instance_type": instance_type, "apply_immediately": True}




def one_beam(host) -> int:
    beams = wait_until(lambda: host.rabbitmq_pids(), 60, f"one beam.smp in {host.netns}")
    assert len(beams) == 1, f"expected one beam.smp in {host.netns}, found {host.processes()}"
    return beams[0]


def cgroup_dirs(pid: int) -> dict[str, Path]:
    """controller -> the process's cgroup directory (cgroup v1 hierarchies, or v2 as "unified")."""
    dirs = {}
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            for base in (CGROUP / "unified", CGROUP):
                if (base / "cgroup.controllers").exists():
                    dirs["unified"] = base / path.lstrip("/")
                    break
        for c in controllers.split(","):
            if c in ("cpu", "memory"):
                dirs[c] = CGROUP / c / path.lstrip("/")
    return dirs


def limits_of(pid: int) -> tuple[int, int, str]:
    """(memory limit bytes, cpu quota µs per 100 ms period, cgroup path) of the process."""
    dirs = cgroup_dirs(pid)
    if "memory" in dirs and (dirs["memory"] / "memory.limit_in_bytes").exists():
        mem = int((dirs["memory"] / "memory.limit_in_bytes").read_text())
        quota = int((dirs["cpu"] / "cpu.cfs_quota_us").read_text())
        period = int((dirs["cpu"] / "cpu.cfs_period_us").read_text())
        return mem, quota * 100_000 // period, str(dirs["memory"])
    d = dirs["unified"]
    mem = int((d / "memory.max").read_text())
    quota, period = (d / "cpu.max").read_text().split()
    return mem, int(quota) * 100_000 // int(period), str(d)


def unit_cgroup_dirs(broker_id: str) -> list[Path]:
    """The unit's groups: `ferrymq/<unit>.<agent>` (the suffix tells the lab's agents apart)."""
    unit = f"{broker_id}-rabbitmq."
    parents = (CGROUP / "memory" / "ferrymq", CGROUP / "cpu" / "ferrymq", CGROUP / "unified" / "ferrymq",
               CGROUP / "ferrymq")
    return [p for parent in parents if parent.is_dir() for p in parent.iterdir() if p.name.startswith(unit)]


def node_mem_limit(console_url: str) -> int:
    """The node's memory alarm limit; the management plugin has it after its first stats tick."""
    def read():
        code, nodes = amqp.management_get(console_url, "/api/nodes", APP["username"], APP["password"])
        assert code == 200, f"GET /api/nodes: {code} {nodes}"
        return nodes[0].get("mem_limit")
    return int(wait_until(read, 60, "mem_limit in GET /api/nodes", interval=1))


def rabbit_env(host, broker_id: str, key: str) -> str:
    """`application:get_env(rabbit, KEY)` from the running node, through rabbitmqctl eval."""
    # A single instance: its node is on loopback (see erlang_dist).
    res = erlang_dist.rabbitmqctl(host, broker_id, "rabbit@127.0.0.1", "eval", f"application:get_env(rabbit, {key}).")
    assert res.returncode == 0, f"rabbitmqctl eval failed: {res.stdout}{res.stderr}"
    return res.stdout.strip()


def flat(text: str) -> str:
    """Terraform wraps diagnostics: compare with whitespace collapsed."""
    return " ".join(text.replace("│", " ").split())


def test_01_too_large_a_type_is_refused_with_both_figures(lab, host, tf_factory):
    cpus = os.cpu_count() or 1
    if cpus >= 4:
        pytest.skip(f"this machine has {cpus} CPUs: mq.m5.xlarge (4 vCPU) fits")
    tf = tf_factory("sizing", example=EXAMPLE)
    S["tf"] = tf
    tf.write_vars(variables(host, "mq.m5.xlarge"))
    res = tf.apply(check=False)
    out = flat(res.output)
    assert res.rc != 0, f"apply of mq.m5.xlarge on a {cpus}-CPU host succeeded:\n{res.output}"
    want = re.compile(rf"host has {cpus} CPUs? and [0-9.]+ GiB memory; mq\.m5\.xlarge needs 4 CPUs and 16 GiB")
    assert want.search(out), f"no refusal naming both figures in:\n{res.output}"
    assert host.pids_named("beam.smp") == [], f"an engine runs after the refusal: {host.processes()}"
    for d in host.broker_dirs():
        assert unit_cgroup_dirs(d.name) == [], f"cgroups made for a refused broker: {unit_cgroup_dirs(d.name)}"
    DONE.add("refused")


def test_02_m5_large_runs_in_an_8_gib_cgroup_with_the_types_limits(lab, host, tf_factory):
    tf = S.get("tf") or tf_factory("sizing", example=EXAMPLE)
    S["tf"] = tf
    tf.write_vars(variables(host, "mq.m5.large"))
    res = tf.apply()
    out = tf.output()
    assert out.get("status") == "RUNNING", f"status: {out.get('status')!r}\n{res.output}"
    S.update(out)
    beam = one_beam(host)
    mem, quota, path = limits_of(beam)
    assert f"/ferrymq/{out['broker_id']}-rabbitmq." in path, f"beam.smp {beam} is in {path}"
    assert mem == 8 * GIB, f"memory limit {mem} != 8 GiB"
    assert quota == 200_000, f"cpu quota {quota} µs per 100 ms != 2 CPUs"
    assert node_mem_limit(out["console_url"]) == 8 * GIB * 2 // 5
    assert rabbit_env(host, out["broker_id"], "connection_max") == "{ok,5000}"
    assert rabbit_env(host, out["broker_id"], "channel_max") == "{ok,2047}"
    S["beam"] = beam
    bodies = [f"sizing-{i:04d}".encode() for i in range(MESSAGES)]
    amqp.publish_confirmed(out["amqp_endpoint"], APP["username"], APP["password"], QUEUE, bodies)
    S["bodies"] = bodies
    DONE.add("large")


def test_03_resize_to_t3_micro_is_in_place_and_the_limits_follow(host):
    need("large")
    tf = S["tf"]
    tf.write_vars(variables(host, "mq.t3.micro"))
    plan = tf.plan()
    assert "1 to change, 0 to destroy" in plan.output, plan.output
    assert "must be replaced" not in plan.output, plan.output
    res = tf.apply()
    out = tf.output()
    assert out.get("status") == "RUNNING", f"status: {out.get('status')!r}\n{res.output}"
    assert out["broker_id"] == S["broker_id"]
    beam = one_beam(host)
    assert beam != S["beam"], "the engine was not restarted with the new type's configuration"
    mem, quota, _ = limits_of(beam)
    assert mem == 1 * GIB, f"memory limit {mem} != 1 GiB"
    assert quota == 200_000, f"cpu quota {quota} != 2 CPUs"
    assert node_mem_limit(out["console_url"]) == GIB * 2 // 5
    assert rabbit_env(host, out["broker_id"], "connection_max") == "{ok,500}"
    assert rabbit_env(host, out["broker_id"], "channel_max") == "{ok,1500}"
    ep = out["amqp_endpoint"]
    got = amqp.consume(ep, APP["username"], APP["password"], QUEUE, MESSAGES, timeout=60)
    assert got == S["bodies"], f"got {len(got)} of {MESSAGES} persisted messages back after the resize"
    DONE.add("resized")


def test_03b_t3_micro_refuses_one_queue_more_than_its_quota(host):
    """Amazon MQ's queue quota for mq.t3.micro (2,500), applied as the default vhost's
    `max-queues` limit: the 2,501st queue is refused by the broker (406), not by FerryMQ."""
    need("resized")
    console, ep = S["console_url"], S["amqp_endpoint"]
    user, password = APP["username"], APP["password"]

    def limit():
        code, limits = amqp.management_get(console, "/api/vhost-limits/%2F", user, password)
        assert code == 200, f"GET /api/vhost-limits/%2F: {code} {limits}"
        return next((l["value"].get("max-queues") for l in limits), None) == QUEUE_QUOTA_MICRO

    wait_until(limit, 30, f"max-queues {QUEUE_QUOTA_MICRO} on vhost /", interval=1)
    code, queues = amqp.management_get(console, "/api/queues/%2F", user, password)
    assert code == 200, queues
    # Exclusive queues count against the limit and go with the connection.
    conn = amqp.connect(ep, user, password, socket_timeout=60)
    try:
        ch = conn.channel()
        start = time.monotonic()
        for i in range(QUEUE_QUOTA_MICRO - len(queues)):
            ch.queue_declare(queue=f"quota.{i:05d}", exclusive=True)
        print(f"\n{QUEUE_QUOTA_MICRO} queues declared in {time.monotonic() - start:.1f} s")
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
            ch.queue_declare(queue="quota.one-too-many", exclusive=True)
        assert refused.value.reply_code == 406, refused.value
        assert "queue limit in vhost '/' (2500) is reached" in refused.value.reply_text, refused.value
    finally:
        conn.close()
    # With the connection closed the queues are gone and declaring works again.
    conn = amqp.connect(ep, user, password)
    try:
        conn.channel().queue_declare(queue="quota.after", exclusive=True)
    finally:
        conn.close()


def test_03c_t3_micro_holds_connections_at_its_quota(host):
    """Amazon MQ's 500 connections per node on mq.t3.micro (`connection_max`). RabbitMQ applies
    it as its listener's (Ranch's) `max_connections`, a soft limit: each of the listener's
    acceptors (10 by default) may take one more before accepting stops, and a connection past
    that is not served (its AMQP handshake times out) until another one closes."""
    need("resized")
    ep, user, password = S["amqp_endpoint"], APP["username"], APP["password"]
    conns, refused = [], None
    try:
        start = time.monotonic()
        for _ in range(CONNECTION_QUOTA_MICRO + RANCH_ACCEPTORS + 5):
            try:
                conns.append(amqp.connect(ep, user, password, socket_timeout=30, stack_timeout=10))
            except (pika.exceptions.AMQPError, AMQPConnectorException) as e:
                refused = e
                break
        print(f"\n{len(conns)} connections open in {time.monotonic() - start:.1f} s; the next: {refused!r}")
        assert refused is not None, f"{len(conns)} connections and none refused"
        # The agent's AMQP health probe (one short connection every 3 s) may hold a slot.
        assert CONNECTION_QUOTA_MICRO - 1 <= len(conns) <= CONNECTION_QUOTA_MICRO + RANCH_ACCEPTORS, len(conns)
        labmod.record_result("rabbitmq_t3_micro_connections_served", len(conns))
    finally:
        for c in conns:
            if c.is_open:
                c.close()
    assert amqp.login_error(ep, user, password) == "", "connections are refused after the others closed"


def test_04_destroy_removes_the_broker_and_its_cgroups(host):
    need("large")
    tf = S["tf"]
    tf.destroy()
    wait_until(lambda: not host.pids_named("beam.smp"), 60, "no beam.smp after destroy")
    assert unit_cgroup_dirs(S["broker_id"]) == [], f"cgroups left: {unit_cgroup_dirs(S['broker_id'])}"
    assert host.broker_dirs() == [], f"broker dirs left: {host.broker_dirs()}"


def test_05_activemq_type_change_is_in_place_with_the_new_heap(lab, host, tf_factory):
    """ActiveMQ, `mq.t3.micro` → `mq.m5.large` in place (on shared storage: Amazon MQ offers
    ActiveMQ on EBS on mq.m5 only, and only mq.m5.large fits a 2-CPU host): the engine restarts
    with the new heap and cgroup, and the receipted messages are still there."""
    tf = tf_factory("sizing-activemq", example="activemq-single-instance")
    base = {"broker_name": "acceptance-sizing-amq", "host": host.address, "users": [APP],
            "storage_type": "efs", "volume": str(lab.shared_dir("sizing-activemq")),
            "apply_immediately": True}  # else the new type waits for the maintenance window
    tf.write_vars({**base, "host_instance_type": "mq.t3.micro"})
    try:
        tf.apply()
        out = tf.output()
        assert out.get("status") == "RUNNING", out
        java = wait_until(host.activemq_pids, 60, "the ActiveMQ broker")[0]
        assert "-Xmx512m" in labmod.proc_cmdline(java), labmod.proc_cmdline(java)
        assert limits_of(java)[0] == 1 * GIB
        bodies = [f"amq-sizing-{i:04d}" for i in range(MESSAGES)]
        stompclient.send_receipted(out["stomp_endpoint"], APP["username"], APP["password"], QUEUE, bodies)

        tf.write_vars({**base, "host_instance_type": "mq.m5.large"})
        plan = tf.plan()
        assert "1 to change, 0 to destroy" in plan.output, plan.output
        res = tf.apply()
        after = tf.output()
        assert after.get("status") == "RUNNING", res.output
        assert after["broker_id"] == out["broker_id"]
        java2 = wait_until(lambda: [p for p in host.activemq_pids() if p != java], 60, "the restarted broker")[0]
        assert "-Xmx4096m" in labmod.proc_cmdline(java2), labmod.proc_cmdline(java2)
        mem, quota, _ = limits_of(java2)
        assert (mem, quota) == (8 * GIB, 200_000), (mem, quota)
        got = stompclient.consume(after["stomp_endpoint"], APP["username"], APP["password"], QUEUE, MESSAGES)
        assert sorted(got) == bodies, f"got {len(got)} of {MESSAGES} receipted messages back after the resize"
    finally:
        tf.destroy(check=False)
    wait_until(lambda: not host.activemq_pids(), 60, "no ActiveMQ after destroy")
