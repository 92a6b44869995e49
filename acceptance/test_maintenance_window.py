"""Maintenance windows on a single-instance RabbitMQ broker, with the real Terraform 1.0.3, the
real agent and the real clock (no fake time in the product):

- the window in force is reported (`next_maintenance_window`) in the window's own time zone;
- a new `host_instance_type` without `apply_immediately` is stored but waits: the apply returns
  at once with "1 to change", the engine keeps running on the old type, the change is reported
  in `pending_changes`, and a plan afterwards shows nothing to do;
- moving the window to start a minute from now: the agent applies the change by itself when the
  window opens (no Terraform running), restarting the engine once, with persisted messages kept;
  the change leaves `pending_changes` and enters the maintenance history.

The steps share one broker and run in order.
"""

from __future__ import annotations

import datetime as dt
import json
import zoneinfo

import pytest

import amqp
import lab as labmod
from steps import Steps, wait_until

EXAMPLE = "rabbitmq-single-instance"
APP = {"username": "app", "password": "window-Passw0rd-42", "console_access": True}
QUEUE = "window.persistent"
MESSAGES = 100
# A zone with a non-whole-hour offset, so that a window computed in UTC by mistake is caught.
ZONE = "Asia/Kolkata"

S: dict = {}
steps = Steps()


def variables(host, instance_type: str, window: dict) -> dict:
    return {"broker_name": "acceptance-window", "host": host.address, "volume": host.loop,
            "users": [APP], "host_instance_type": instance_type, "maintenance_window": window}


def window_at(at: dt.datetime) -> dict:
    """The window block whose start is the minute of `at` on the wall clock of ZONE."""
    local = at.astimezone(zoneinfo.ZoneInfo(ZONE))
    return {"day_of_week": local.strftime("%A").upper(), "time_of_day": local.strftime("%H:%M"),
            "time_zone": ZONE}


def beam_pid(host) -> int:
    beams = wait_until(host.rabbitmq_pids, 60, f"a RabbitMQ node in {host.netns}")
    assert len(beams) == 1, f"expected one beam.smp, found {host.processes()}"
    return beams[0]


def node_mem_limit(console_url: str) -> int:
    def read():
        code, nodes = amqp.management_get(console_url, "/api/nodes", APP["username"], APP["password"])
        assert code == 200, f"GET /api/nodes: {code} {nodes}"
        return nodes[0].get("mem_limit")
    return int(wait_until(read, 60, "mem_limit in GET /api/nodes", interval=1))


def mem_limit_or_none(console_url: str):
    """The node's memory limit, or None while the management API does not answer."""
    try:
        code, nodes = amqp.management_get(console_url, "/api/nodes", APP["username"], APP["password"])
    except OSError:
        return None
    return nodes[0].get("mem_limit") if code == 200 and nodes else None


def applied_record(host, broker_id: str) -> dict:
    """What the agent records it runs and what past windows did (the agent's applied.json)."""
    try:
        return json.loads((host.brokers_dir / broker_id / "applied.json").read_text())
    except (OSError, ValueError):
        return {}


def test_01_the_window_in_force_is_reported_in_its_time_zone(host, tf_factory):
    tf = tf_factory("window", example=EXAMPLE)
    S["tf"] = tf
    # Three days ahead: surely not open during this test.
    start = dt.datetime.now(dt.timezone.utc).replace(second=0, microsecond=0) + dt.timedelta(days=3)
    S["far"] = window_at(start)
    tf.write_vars(variables(host, "mq.m5.large", S["far"]))
    res = tf.apply()
    out = tf.output()
    assert out.get("status") == "RUNNING", f"status {out.get('status')!r}\n{res.output}"
    assert out["next_maintenance_window"] == start.strftime("%Y-%m-%dT%H:%M:00Z"), \
        f"window {S['far']} reported as {out['next_maintenance_window']}, expected {start.isoformat()}"
    assert out["pending_changes"] == []
    S.update(out)
    S["beam"] = beam_pid(host)
    bodies = [f"window-{i:03d}".encode() for i in range(MESSAGES)]
    amqp.publish_confirmed(out["amqp_endpoint"], APP["username"], APP["password"], QUEUE, bodies)
    S["bodies"] = bodies
    steps.ok("created")


def test_02_a_new_instance_type_waits_for_the_window(host):
    steps.need("created")
    tf = S["tf"]
    tf.write_vars(variables(host, "mq.t3.micro", S["far"]))
    res = tf.apply()
    assert "0 added, 1 changed, 0 destroyed" in res.output, res.output
    out = tf.output()
    assert out["status"] == "RUNNING"
    assert out["pending_changes"] == ["host_instance_type: mq.m5.large -> mq.t3.micro"], out
    assert beam_pid(host) == S["beam"], "the engine restarted although the window is closed"
    assert node_mem_limit(out["console_url"]) == (8 << 30) * 2 // 5, "the type changed outside the window"
    plan = tf.plan()
    assert "No changes." in plan.output, f"a pending change must not show as drift:\n{plan.output}"
    steps.ok("pending")


def test_03_the_agent_applies_it_when_the_window_opens(host):
    steps.need("pending")
    tf = S["tf"]
    now = dt.datetime.now(dt.timezone.utc)
    opens = (now + dt.timedelta(minutes=1)).replace(second=0, microsecond=0)
    if (opens - now).total_seconds() < 20:  # leave time to apply before it opens
        opens += dt.timedelta(minutes=1)
    tf.write_vars(variables(host, "mq.t3.micro", window_at(opens)))
    tf.apply()
    out = tf.output()
    assert out["next_maintenance_window"] == opens.strftime("%Y-%m-%dT%H:%M:00Z"), out
    assert out["pending_changes"] == ["host_instance_type: mq.m5.large -> mq.t3.micro"], out
    before = dt.datetime.now(dt.timezone.utc)
    assert before < opens, f"the test took too long to apply: {before} >= {opens}"
    assert beam_pid(host) == S["beam"], "the engine restarted before the window opened"

    # No Terraform from here: the agent alone acts when the window opens.
    budget = (opens - before).total_seconds() + 90
    # The old node gone and a new one up: the restart (the old one's pid never comes back).
    new_beam = wait_until(lambda: S["beam"] not in host.rabbitmq_pids() and host.rabbitmq_pids(),
                          budget, "the engine restarted by the agent in the window", interval=1)[0]
    restarted = dt.datetime.now(dt.timezone.utc)
    assert restarted >= opens, \
        f"restarted at {restarted}, before the window opened at {opens}: {host.processes()}"
    labmod.record_result("window_open_to_engine_restart_s", round((restarted - opens).total_seconds(), 1))
    micro = (1 << 30) * 2 // 5
    wait_until(lambda: mem_limit_or_none(S["console_url"]) == micro, 120,
               lambda: f"the node's memory limit is {mem_limit_or_none(S['console_url'])}, "
                       f"not mq.t3.micro's {micro}", interval=2)

    tf.apply("-refresh-only")
    out = tf.output()
    assert out["status"] == "RUNNING"
    assert out["pending_changes"] == [], out
    record = applied_record(host, S["broker_id"])
    assert record.get("host_instance_type") == "mq.t3.micro", record
    changes = [e["change"] for e in record.get("history", [])]
    assert changes == ["host_instance_type: mq.m5.large -> mq.t3.micro (maintenance window)"], record
    got = amqp.consume(S["amqp_endpoint"], APP["username"], APP["password"], QUEUE, MESSAGES, timeout=60)
    assert got == S["bodies"], f"{len(got)} of {MESSAGES} persisted messages back after the window"
    assert new_beam in host.rabbitmq_pids(), f"the engine restarted more than once: {host.processes()}"
    steps.ok("applied")


def test_04_destroy(host):
    steps.need("created")
    S["tf"].destroy()
    wait_until(lambda: not host.pids_named("beam.smp"), 60, "no beam.smp after destroy")
    assert host.broker_dirs() == [], f"broker dirs left: {host.broker_dirs()}"


@pytest.fixture(autouse=True, scope="module")
def _cleanup(host):
    yield
    tf = S.get("tf")
    if tf is not None and host.broker_dirs():
        tf.destroy(check=False)
