"""End to end: ferrymq_configuration revisions, logs and the agent's Prometheus metrics, with
examples/broker-configuration on one appliance host, the real Terraform 1.0.3, the real engines
and clients this project did not write (stomp.py, pika).

ActiveMQ first, then RabbitMQ, on host 1 (one broker per host): a forbidden element or key is
refused at plan with its name and nothing reaches the host; revision 1 applies; revision 2
applies with a visible effect on the broker (ActiveMQ: timeStampingBrokerPlugin sets an expiry
on messages sent without one; RabbitMQ: the heartbeat the broker proposes to clients); pinning
revision 1 rolls back; a revision without apply_immediately waits as a pending change; the
metrics endpoint shows a queue's depth rise and fall as a client sends and consumes, and keeps
the engine's figures once the plain listeners are off (the agent queries over TLS). The host
is left as found.
"""

from __future__ import annotations

import datetime

import re
import time
import urllib.request

import amqp
import lab as labmod
import stompclient as sc
from steps import Steps, endpoint, wait_until

EXAMPLE = "broker-configuration"
BROKER = "ferrymq_broker.this"
APP = {"username": "app", "password": "app-Passw0rd-2024!", "console_access": True}
DEPTH = 40
METRICS_TIMEOUT = 60

AMQ_POLICY = """<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<broker xmlns="http://activemq.apache.org/schema/core" schedulePeriodForDestinationPurge="10000">
  <destinationPolicy>
    <policyMap>
      <policyEntries>
        <policyEntry queue="&gt;" gcInactiveDestinations="false" maxPageSize="150"/>
      </policyEntries>
    </policyMap>
  </destinationPolicy>
</broker>
"""
EXPIRY_MS = 3_600_000
# Revision 2: every message sent without an expiry gets one (visible as the STOMP `expires` header).
AMQ_STAMPING = AMQ_POLICY.replace(
    "</destinationPolicy>",
    f'</destinationPolicy>\n  <plugins>\n    <timeStampingBrokerPlugin zeroExpirationOverride="{EXPIRY_MS}"/>\n  </plugins>',
)
AMQ_FORBIDDEN = AMQ_POLICY.replace(
    "</destinationPolicy>",
    '</destinationPolicy>\n  <networkConnectors>\n    <networkConnector uri="static:(tcp://10.0.0.1:61616)"/>\n  </networkConnectors>',
)

AMQ_MISTYPED = AMQ_POLICY.replace('<policyEntry ', '<policyEntry producerFlowControl="maybe" ', 1)

RMQ_REV1 = "# revision 1\nheartbeat = 17\nconsumer_timeout = 900000\n"
RMQ_REV2 = "# revision 2\nheartbeat = 23\nconsumer_timeout = 900000\n"
RMQ_FORBIDDEN = "heartbeat = 17\nlisteners.tcp.1 = 0.0.0.0:5672\n"

S = Steps()


FAR_WINDOW_DAY = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=3)).strftime("%A").upper()


def variables(host, engine: str, data: str, **extra) -> dict:
    v = {
        "broker_name": f"acceptance-config-{engine.lower()}",
        "engine_type": engine,
        "engine_version": "5.17.2" if engine == "ActiveMQ" else "3.10.8",
        "host": host.address,
        "volume": host.loop,
        "configuration_data": data,
        "users": [APP],
        # This test is about configurations, logs and metrics, not TLS: its clients (stomp.py,
        # pika) use the plain listeners. The agent's own metric queries still go over TLS
        # (STOMP+SSL, the management API over HTTPS), as without plain listeners.
        "plain_listeners": True,
        # A window three days ahead: a revision that waits for it must not meet the window the
        # agents would pick by themselves, which may be open while the test runs.
        "maintenance_window": {"day_of_week": FAR_WINDOW_DAY, "time_of_day": "03:00", "time_zone": "UTC"},
    }
    v.update(extra)
    return v


def configurations_on(host) -> list[str]:
    d = host.state_dir / "configurations"
    return sorted(str(p.relative_to(d)) for p in d.rglob("*.json")) if d.is_dir() else []


def apply_new(tf, figure: str) -> dict:
    """Applies a new configuration and broker (2 resources) and returns the outputs, the broker
    RUNNING; records the seconds from apply to RUNNING."""
    start = time.monotonic()
    res = tf.apply()
    out = tf.output()
    seconds = time.monotonic() - start
    assert "Apply complete! Resources: 2 added, 0 changed, 0 destroyed." in res.output, res.output
    assert out.get("status") == "RUNNING", out
    assert APP["password"] not in res.output, "a password appears in the apply output"
    labmod.record_result(figure, round(seconds, 2))
    print(f"\nFIGURE {figure} = {seconds:.1f} (terraform apply start to status RUNNING)")
    return out


def engine_dir(host):
    dirs = host.broker_dirs()
    assert len(dirs) == 1, f"expected one broker on {host.name}: {dirs}"
    return dirs[0] / "engine"


# ---- metrics -----------------------------------------------------------------------------------

METRIC_LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def scrape(host) -> list[tuple[str, dict, float]]:
    # HTTPS with the lab's client certificate, the agent's certificate checked (see lab.py).
    with urllib.request.urlopen(host.metrics_url, timeout=30, context=host.metrics_context()) as r:
        assert r.status == 200
        assert r.headers.get("Content-Type", "").startswith("text/plain; version=0.0.4")
        text = r.read().decode()
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = METRIC_LINE.match(line)
        assert m, f"not Prometheus text format: {line!r}"
        out.append((m.group(1), dict(LABEL.findall(m.group(3) or "")), float(m.group(4))))
    return out


def metric(host, name: str, **labels) -> float | None:
    for n, ls, v in scrape(host):
        if n == name and all(ls.get(k) == val for k, val in labels.items()):
            return v
    return None


def depth_rises_and_falls(host, name: str, queue: str, send, consume) -> dict:
    """Sends DEPTH messages, waits until the metric shows them, consumes them all, waits until
    it shows 0; returns the seconds each took to show."""
    send()
    start = time.monotonic()
    wait_until(lambda: metric(host, name, queue=queue) == DEPTH, METRICS_TIMEOUT,
               lambda: f"{name}{{queue={queue!r}}} == {DEPTH}; last: {metric(host, name, queue=queue)}", interval=1)
    rise = time.monotonic() - start
    consume()
    start = time.monotonic()
    wait_until(lambda: metric(host, name, queue=queue) == 0, METRICS_TIMEOUT,
               lambda: f"{name}{{queue={queue!r}}} == 0; last: {metric(host, name, queue=queue)}", interval=1)
    return {"rise_seconds": round(rise, 1), "fall_seconds": round(time.monotonic() - start, 1)}


def metrics_without_plain_listeners(host, tf, engine: str, data: str, figure: str, **extra) -> None:
    """Turns the plain listeners off (the engine restarts with TLS listeners only) and checks
    the agent still reads the engine's figures: its own queries go over TLS."""
    tf.write_vars(variables(host, engine, data, plain_listeners=False, **extra))
    res = tf.apply()
    out = tf.output()
    assert "1 changed" in res.output and out["status"] == "RUNNING", res.output
    plain = [e for e in out["endpoints"] if e.startswith(("amqp://", "stomp://", "tcp://", "mqtt://"))]
    assert plain == [], f"plain endpoints left: {out['endpoints']}"
    wait_until(lambda: metric(host, "ferrymq_engine_up") == 1 and metric(host, figure) is not None,
               METRICS_TIMEOUT, lambda: f"ferrymq_engine_up 1 and {figure} without plain listeners; "
               f"last up: {metric(host, 'ferrymq_engine_up')}", interval=1)


# ---- ActiveMQ ----------------------------------------------------------------------------------

def stomp_expires(endpoints, queue: str) -> int:
    """Sends one message without an expiry and receives it: the `expires` header the broker
    gave it (0 = none)."""
    conn, listener = sc.connect(endpoints, APP["username"], APP["password"])
    try:
        conn.subscribe(sc.queue(queue), id="1", ack="auto")
        conn.send(sc.queue(queue), "probe", headers={"receipt": "sent"})
        def got():
            with listener.cond:
                return listener.messages[:] if listener.messages else None
        messages = wait_until(got, 30, f"the probe message on {queue}")
        return int(messages[0][1].get("expires", "0") or 0)
    finally:
        sc.close(conn)


def amq_java(host) -> int:
    pids = host.activemq_pids()
    assert len(pids) == 1, f"expected one ActiveMQ in {host.netns}: {host.processes()}"
    return pids[0]


def test_01_forbidden_activemq_element_is_refused_at_plan(lab, host, tf_factory):
    tf = tf_factory("configuration-activemq", example=EXAMPLE)
    S.s["amq_tf"] = tf
    tf.write_vars(variables(host, "ActiveMQ", AMQ_FORBIDDEN))
    plan = tf.plan()
    assert plan.rc != 0, plan.output
    assert "<broker/networkConnectors> is not allowed" in plan.output, plan.output
    # An allowed attribute with a value the broker cannot convert (it would fail to start).
    tf.write_vars(variables(host, "ActiveMQ", AMQ_MISTYPED))
    plan = tf.plan()
    assert plan.rc != 0, plan.output
    said = " ".join(plan.output.split())  # Terraform wraps long diagnostics
    assert 'producerFlowControl="maybe"' in said and "must be true or false" in said, plan.output
    assert configurations_on(host) == [], "a refused configuration reached the host"
    assert host.broker_dirs() == [], "a broker was created from a refused plan"


def test_02_activemq_revision_1_applies(host):
    tf = S.s["amq_tf"]
    tf.write_vars(variables(host, "ActiveMQ", AMQ_POLICY, audit_log=True))
    out = apply_new(tf, "configuration_activemq_apply_to_running_seconds")
    assert out["latest_revision"] == 1 and out["revision"] == 1, out
    assert out["pending_changes"] == [], out
    xml = (engine_dir(host) / "activemq.xml").read_text()
    assert 'maxPageSize="150"' in xml and 'schedulePeriodForDestinationPurge="10000"' in xml, xml
    assert "timeStampingBrokerPlugin" not in xml
    S.s["stomp"] = [endpoint(out["endpoints"], "stomp")]
    assert stomp_expires(S.s["stomp"], "config.probe.1") == 0
    stored = configurations_on(host)
    assert stored == [f"{out['configuration_id']}/1.json"], stored
    S.s["amq_out"] = out
    S.ok("amq_rev1")


def test_03_activemq_revision_2_applies_immediately(host):
    S.need("amq_rev1")
    tf = S.s["amq_tf"]
    java_before = amq_java(host)
    tf.write_vars(variables(host, "ActiveMQ", AMQ_STAMPING, audit_log=True))
    res = tf.apply()
    out = tf.output()
    assert "2 changed" in res.output, res.output
    assert out["latest_revision"] == 2 and out["revision"] == 2 and out["status"] == "RUNNING", out
    assert "timeStampingBrokerPlugin" in (engine_dir(host) / "activemq.xml").read_text()
    assert amq_java(host) != java_before, "a new revision with apply_immediately must restart the broker"
    expires = stomp_expires(S.s["stomp"], "config.probe.2")
    now_ms = time.time() * 1000
    assert now_ms < expires <= now_ms + EXPIRY_MS + 60_000, f"expires {expires} is not about now + {EXPIRY_MS} ms"
    assert configurations_on(host) == sorted([f"{out['configuration_id']}/1.json", f"{out['configuration_id']}/2.json"])
    S.ok("amq_rev2")


def test_04_activemq_rolls_back_to_revision_1(host):
    S.need("amq_rev2")
    tf = S.s["amq_tf"]
    tf.write_vars(variables(host, "ActiveMQ", AMQ_STAMPING, audit_log=True, configuration_revision=1))
    res = tf.apply()
    out = tf.output()
    assert "1 changed" in res.output, res.output
    assert out["latest_revision"] == 2 and out["revision"] == 1, out
    assert "timeStampingBrokerPlugin" not in (engine_dir(host) / "activemq.xml").read_text()
    assert stomp_expires(S.s["stomp"], "config.probe.3") == 0, "the rollback left the revision 2 plugin on"
    plan = tf.plan("-detailed-exitcode")
    assert plan.rc == 0, f"a re-plan after the rollback should show no changes:\n{plan.output}"
    S.ok("amq_rollback")


def test_05_without_apply_immediately_a_revision_waits_as_a_pending_change(host):
    S.need("amq_rollback")
    tf = S.s["amq_tf"]
    java_before = amq_java(host)
    tf.write_vars(variables(host, "ActiveMQ", AMQ_STAMPING, audit_log=True, apply_immediately=False))
    tf.apply()
    out = tf.output()
    assert out["revision"] == 2 and out["status"] == "RUNNING", out
    pending = out["pending_changes"]
    # "configuration: c-… revision 1 -> c-… revision 2"
    assert len(pending) == 1 and pending[0].startswith("configuration: ") \
        and "revision 1 -> " in pending[0] and pending[0].endswith(" revision 2"), pending
    assert amq_java(host) == java_before, "a pending change restarted the broker"
    assert stomp_expires(S.s["stomp"], "config.probe.4") == 0, "the pending revision is already in effect"
    # Applied at once when asked.
    tf.write_vars(variables(host, "ActiveMQ", AMQ_STAMPING, audit_log=True, apply_immediately=True))
    tf.apply()
    out = tf.output()
    assert out["pending_changes"] == [], out
    assert stomp_expires(S.s["stomp"], "config.probe.5") > 0
    S.ok("amq_pending")


def test_06_activemq_metrics_show_queue_depth_rising_and_falling(host):
    S.need("amq_rev1")
    queue = "metrics.depth"
    stomp = S.s["stomp"]
    # Revision 2 (now running) stamps an hour of expiry: plenty for this test.
    figures = depth_rises_and_falls(
        host, "ferrymq_activemq_queue_size", queue,
        send=lambda: sc.send_receipted(stomp, APP["username"], APP["password"], queue,
                                       [f"m-{i}" for i in range(DEPTH)]),
        consume=lambda: sc.consume(stomp, APP["username"], APP["password"], queue, DEPTH),
    )
    print(f"\nFIGURE activemq queue depth shown in metrics: {figures}")
    samples = scrape(host)
    names = {n for n, _, _ in samples}
    for want in ("ferrymq_activemq_total_message_count", "ferrymq_activemq_store_percent_usage",
                 "ferrymq_activemq_connection_count", "ferrymq_host_cpu_seconds_total",
                 "ferrymq_host_memory_available_bytes", "ferrymq_volume_used_bytes"):
        assert want in names, f"{want} missing from {sorted(names)}"
    assert metric(host, "ferrymq_engine_up") == 1


def test_07_activemq_audit_log_records_the_clients(host):
    S.need("amq_rev1")
    audit = engine_dir(host) / "audit.log"
    wait_until(lambda: audit.is_file() and APP["username"] in audit.read_text(errors="replace"), 30,
               lambda: f"{audit} naming user {APP['username']}")
    assert APP["password"] not in audit.read_text(errors="replace")


def test_07b_activemq_metrics_need_no_plain_listener(host):
    S.need("amq_pending")
    metrics_without_plain_listeners(host, S.s["amq_tf"], "ActiveMQ", AMQ_STAMPING,
                                    "ferrymq_activemq_total_message_count", audit_log=True)


def test_08_activemq_destroy_removes_broker_and_revisions(host):
    tf = S.s["amq_tf"]
    res = tf.destroy()
    assert "Destroy complete! Resources: 2 destroyed." in res.output, res.output
    assert host.broker_dirs() == [] and configurations_on(host) == []
    assert host.activemq_pids() == []


# ---- RabbitMQ ----------------------------------------------------------------------------------

def negotiated_heartbeat(amqp_endpoint: str) -> int:
    """The heartbeat the broker proposed and pika (asking for none of its own) took."""
    conn = amqp.connect(amqp_endpoint, APP["username"], APP["password"])
    try:
        return conn._impl.params.heartbeat
    finally:
        conn.close()


def test_11_forbidden_rabbitmq_key_is_refused_at_plan(host, tf_factory):
    tf = tf_factory("configuration-rabbitmq", example=EXAMPLE)
    S.s["rmq_tf"] = tf
    tf.write_vars(variables(host, "RabbitMQ", RMQ_FORBIDDEN, host_instance_type="mq.m5.large"))
    plan = tf.plan()
    assert plan.rc != 0, plan.output
    assert 'key "listeners.tcp.1" is not allowed' in plan.output, plan.output
    assert configurations_on(host) == []


def test_12_rabbitmq_revision_applies_and_rolls_back(host):
    tf = S.s["rmq_tf"]
    tf.write_vars(variables(host, "RabbitMQ", RMQ_REV1, general_log=True))
    out = apply_new(tf, "configuration_rabbitmq_apply_to_running_seconds")
    ep = endpoint(out["endpoints"], "amqp")
    S.s["amqp"] = ep
    conf = (engine_dir(host) / "rabbitmq.conf").read_text()
    assert "heartbeat = 17\n" in conf and "consumer_timeout = 900000\n" in conf, conf
    assert negotiated_heartbeat(ep) == 17
    S.ok("rmq_rev1")

    tf.write_vars(variables(host, "RabbitMQ", RMQ_REV2, general_log=True))
    tf.apply()
    out = tf.output()
    assert out["latest_revision"] == 2 and out["revision"] == 2, out
    wait_until(lambda: negotiated_heartbeat(ep) == 23, 60, "heartbeat 23 from revision 2")

    tf.write_vars(variables(host, "RabbitMQ", RMQ_REV2, general_log=True, configuration_revision=1))
    tf.apply()
    out = tf.output()
    assert out["latest_revision"] == 2 and out["revision"] == 1, out
    wait_until(lambda: negotiated_heartbeat(ep) == 17, 60, "heartbeat 17 again after the rollback")
    plan = tf.plan("-detailed-exitcode")
    assert plan.rc == 0, f"a re-plan after the rollback should show no changes:\n{plan.output}"


def test_13_rabbitmq_metrics_show_queue_depth_rising_and_falling(host):
    S.need("rmq_rev1")
    ep, queue = S.s["amqp"], "metrics.depth"
    figures = depth_rises_and_falls(
        host, "ferrymq_rabbitmq_queue_messages", queue,
        send=lambda: amqp.publish_confirmed(ep, APP["username"], APP["password"], queue,
                                            [f"m-{i}".encode() for i in range(DEPTH)]),
        consume=lambda: len(amqp.consume(ep, APP["username"], APP["password"], queue, DEPTH)),
    )
    print(f"\nFIGURE rabbitmq queue depth shown in metrics: {figures}")
    names = {n for n, _, _ in scrape(host)}
    for want in ("ferrymq_rabbitmq_mem_used_bytes", "ferrymq_rabbitmq_mem_limit_bytes",
                 "ferrymq_rabbitmq_disk_free_bytes", "ferrymq_rabbitmq_disk_free_limit_bytes",
                 "ferrymq_rabbitmq_messages", "ferrymq_rabbitmq_connections",
                 "ferrymq_rabbitmq_queues", "ferrymq_rabbitmq_consumers"):
        assert want in names, f"{want} missing from {sorted(names)}"
    amqp.delete_queue(ep, APP["username"], APP["password"], queue)


def test_13b_rabbitmq_metrics_need_no_plain_listener(host):
    S.need("rmq_rev1")
    metrics_without_plain_listeners(host, S.s["rmq_tf"], "RabbitMQ", RMQ_REV2,
                                    "ferrymq_rabbitmq_mem_used_bytes", general_log=True,
                                    configuration_revision=1)


def test_14_rabbitmq_destroy_removes_broker_and_revisions(host):
    tf = S.s["rmq_tf"]
    res = tf.destroy()
    assert "Destroy complete! Resources: 2 destroyed." in res.output, res.output
    assert host.broker_dirs() == [] and configurations_on(host) == []
