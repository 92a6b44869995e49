"""End to end: examples/rabbitmq-single-instance on one appliance host, with the real Terraform
1.0.3, the real agent and the real RabbitMQ.

The steps run in order and share one broker; a step whose prerequisite failed fails at once,
saying which one.
"""

from __future__ import annotations

import time

import pytest

import amqp
import erlang_dist as dist
import lab as labmod
from steps import apply_until_running, blkid, blkid_value, broker_resource, wait_until

EXAMPLE = "rabbitmq-single-instance"
ADDRESS = "ferrymq_broker.rabbitmq"
BROKER_NAME = "acceptance-rabbitmq"
APP = {"username": "app", "password": "app-Passw0rd-2024!", "console_access": True}
OPS = {"username": "ops", "password": "ops-Passw0rd-2024#", "console_access": False}
MESSAGES = 1000
QUEUE = "acceptance.persistent"

# Shared between the ordered steps of this module.
S: dict = {}
DONE: set = set()


def need(*steps: str) -> None:
    missing = [s for s in steps if s not in DONE]
    if missing:
        pytest.fail(f"not run: the earlier step(s) {', '.join(missing)} did not pass", pytrace=False)


def variables(host, users) -> dict:
    return {"broker_name": BROKER_NAME, "host": host.address, "volume": host.loop, "users": list(users)}





def test_01_apply_creates_running_broker(lab, host, tf_factory):
    tf = tf_factory("single-instance", example=EXAMPLE)
    S["tf"] = tf
    tf.write_vars(variables(host, [APP]))

    res, out = apply_until_running(tf, "apply_to_running_seconds", APP["password"])
    assert out["amqp_endpoint"] == f"amqps://{host.address}:{labmod.AMQPS_PORT}", out
    assert out["console_url"] == f"https://{host.address}:{labmod.CONSOLE_TLS_PORT}", out
    assert "BEGIN CERTIFICATE" in out["ca_certificate"], out
    values = broker_resource(tf, ADDRESS)
    assert values["instances"][0]["ip_address"] == host.address, values["instances"]
    S.update(out)
    S["endpoints"] = values["instances"][0]["endpoints"]

    # On the host: the broker's directory, its volume formatted and mounted, one engine.
    bdir = host.brokers_dir / out["broker_id"]
    assert bdir.is_dir(), f"no {bdir}; brokers dir holds {host.broker_dirs()}"
    volume_mp = str(bdir / "volume")
    mounted = [(src, mp) for src, mp in labmod.mounts() if src == host.loop]
    assert (host.loop, volume_mp) in mounted, f"{host.loop} should be mounted at {volume_mp}; mounts of it: {mounted}"
    probe = blkid(host.loop)
    assert "TYPE=ext4" in probe.stdout, f"{host.loop} is not ext4: {probe.stdout}{probe.stderr}"
    beams = host.rabbitmq_pids()
    assert len(beams) == 1, f"expected one beam.smp in {host.netns}, found {host.processes()}"
    S["beam"] = beams[0]
    DONE.add("apply")


def test_02_publish_and_consume_1000_persistent_messages(host):
    need("apply")
    ep = S["amqp_endpoint"]
    bodies = [f"ferrymq-acceptance-{i:05d}".encode() for i in range(MESSAGES)]
    pub_secs = amqp.publish_confirmed(ep, APP["username"], APP["password"], QUEUE, bodies)
    assert amqp.queue_depth(ep, APP["username"], APP["password"], QUEUE) == MESSAGES
    start = time.monotonic()
    got = amqp.consume(ep, APP["username"], APP["password"], QUEUE, MESSAGES, timeout=60)
    con_secs = time.monotonic() - start
    assert len(got) == MESSAGES, f"consumed {len(got)} of {MESSAGES} messages"
    assert got == bodies, "consumed bodies differ from the published ones (or their order)"
    assert amqp.queue_depth(ep, APP["username"], APP["password"], QUEUE) == 0
    amqp.delete_queue(ep, APP["username"], APP["password"], QUEUE)
    labmod.record_result("publish_confirmed_persistent_msgs_per_second", round(MESSAGES / pub_secs))
    labmod.record_result("consume_msgs_per_second", round(MESSAGES / con_secs))
    print(f"\npublished {MESSAGES} persistent messages with confirms in {pub_secs:.2f} s, consumed in {con_secs:.2f} s")


def test_02a_distribution_and_epmd_only_on_loopback(lab, host):
    """A single instance has no peer: its Erlang distribution (25672) and epmd (4369) answer on
    loopback only (whoever completes a distribution handshake runs code as rabbitmq), and the
    agent's own rabbitmqctl still reaches the node."""
    need("apply")
    others = [h for h in lab.hosts if h.name != host.name]
    assert others, "the lab needs a second host to attack from"
    for port in (dist.DIST_PORT, dist.EPMD_PORT):
        got = dist.connect_from(others[0].netns, host.address, port)
        assert got == "refused", f"{host.address}:{port} from {others[0].name}: {got}"
        # Nor from the bridge (the root namespace).
        assert not host.port_open(port), f"{host.address}:{port} accepts connections from the bridge"
    assert dist.connect_from(host.netns, "127.0.0.1", dist.EPMD_PORT) == "connected", \
        "no epmd on the host's loopback"
    # The attack itself, with the cookie: no code runs on the node from another host.
    cookie = (host.brokers_dir / S["broker_id"] / "engine" / ".erlang.cookie").read_text()
    got = dist.rpc_os_cmd(others[0].netns, f"rabbit@{host.address}", cookie)
    print(f"\nrpc:call(os, cmd, [\"id\"]) from {others[0].name} with the cookie: {got}")
    assert "uid=" not in got, f"code ran on the node from {others[0].name}: {got}"
    res = dist.rabbitmqctl(host, S["broker_id"], "rabbit@127.0.0.1", "eval", "node().")
    assert res.returncode == 0 and "rabbit@127.0.0.1" in res.stdout, f"rabbitmqctl: {res.stdout}{res.stderr}"


def test_02b_data_readable_only_by_rabbitmq(host):
    """Persistent messages, the user records and the configuration are the rabbitmq user's
    alone: nobody cannot read them, and nothing under the volume or the engine's directory
    has a bit for others."""
    need("apply")
    ep = S["amqp_endpoint"]
    queue = "acceptance.at-rest"
    # Above RabbitMQ's 4 KiB embedding threshold: the bodies go to the persistent message store.
    amqp.publish_confirmed(ep, APP["username"], APP["password"], queue, [b"x" * 5000] * 200)
    bdir = host.brokers_dir / S["broker_id"]
    volume = bdir / "volume"
    node_dir = volume / "rabbitmq" / "mnesia" / "rabbit@127.0.0.1"
    stores = [f for f in node_dir.glob("msg_stores/vhosts/*/msg_store_persistent/*.rdq") if f.stat().st_size]
    assert stores, f"no message store file with data under {node_dir}: {sorted(node_dir.rglob('*'))[:20]}"
    users = sorted(node_dir.glob("rabbit_user.*")) or [node_dir / "LATEST.LOG"]
    files = [stores[0], *users, bdir / "engine" / "rabbitmq.conf", bdir / "engine" / ".erlang.cookie"]
    print(f"\nchecked: {[f'{f.relative_to(bdir)} {oct(dist.mode(f))}' for f in files]}")
    dist.assert_private(files, volume)
    assert dist.open_to_others(bdir / "engine") == []
    assert dist.mode(volume / "rabbitmq") == 0o700 and dist.mode(bdir / "engine") == 0o700
    st = volume.stat()
    assert (dist.mode(volume), st.st_uid) == (0o750, 0), f"volume root {oct(dist.mode(volume))} uid {st.st_uid}"
    amqp.delete_queue(ep, APP["username"], APP["password"], queue)


def test_03_no_guest_and_no_agent_user(host):
    need("apply")
    tf = S["tf"]
    err = amqp.login_error(S["amqp_endpoint"], "guest", "guest")
    assert err, "guest/guest could log in over AMQP"
    # RabbitMQ's management API tells "guest exists but only from localhost" apart from
    # "no such user / wrong password": the former would mean the default user was not removed.
    status, body = amqp.management_get(S["console_url"], "/api/whoami", "guest", "guest")
    assert status == 401, f"guest on the console: HTTP {status} {body}"
    assert "localhost" not in str(body.get("reason", "")), f"the default guest user still exists: {body}"
    # The console works for a user with console_access.
    status, body = amqp.management_get(S["console_url"], "/api/whoami", APP["username"], APP["password"])
    assert status == 200 and body.get("name") == APP["username"], f"console login of {APP['username']}: {status} {body}"
    # The state holds exactly the configured users: the agent's own admin user is never shown.
    users = broker_resource(tf, ADDRESS).get("user") or []
    assert sorted(u["username"] for u in users) == [APP["username"]], users


def test_04_add_user_in_place(host):
    need("apply")
    tf = S["tf"]
    tf.write_vars(variables(host, [APP, OPS]))
    plan = tf.plan()
    assert plan.rc == 2, f"expected changes (exit 2), got {plan.rc}:\n{plan.output}"
    assert "Plan: 0 to add, 1 to change, 0 to destroy." in plan.output, plan.output
    assert "updated in-place" in plan.output, plan.output
    assert OPS["password"] not in plan.output, "a password appears in the plan output"
    res = tf.apply()
    assert "Apply complete! Resources: 0 added, 1 changed, 0 destroyed." in res.output, res.output
    assert tf.output()["broker_id"] == S["broker_id"], "the broker was replaced"
    assert amqp.login_error(S["amqp_endpoint"], OPS["username"], OPS["password"]) == ""
    assert amqp.login_error(S["amqp_endpoint"], APP["username"], APP["password"]) == ""
    status, body = amqp.management_get(S["console_url"], "/api/whoami", OPS["username"], OPS["password"])
    assert status == 401, f"{OPS['username']} has console_access = false but logged in to the console: {status} {body}"
    assert host.rabbitmq_pids() == [S["beam"]], "adding a user restarted the engine"
    DONE.add("add_user")


def test_05_replan_shows_no_changes():
    need("add_user")
    plan = S["tf"].plan()
    assert plan.rc == 0, f"expected no changes (exit 0), got {plan.rc}:\n{plan.output}"
    assert "No changes." in plan.output, plan.output


def test_06_agent_killed_and_restarted_converges_without_duplicate_work(lab, host):
    need("add_user")
    tf = S["tf"]
    beam = host.rabbitmq_pids()
    assert beam == [S["beam"]], f"engine PID changed before the test: {beam} vs {S['beam']}"
    fs_uuid = blkid_value(host.loop, "UUID")
    assert fs_uuid, f"no filesystem UUID on {host.loop}"
    lab.kill_agent(host)  # SIGKILL
    assert labmod.pid_alive(S["beam"]), "the engine died with the agent"
    secs = lab.start_agent(host)
    print(f"\nagent restarted, port ready in {secs:.1f} s")
    res = tf.apply()
    assert "Apply complete! Resources: 0 added, 0 changed, 0 destroyed." in res.output, res.output
    assert tf.output()["status"] == "RUNNING"
    assert host.rabbitmq_pids() == [S["beam"]], \
        f"the engine was restarted or duplicated: {host.processes()} (was {S['beam']})"
    assert blkid_value(host.loop, "UUID") == fs_uuid, "the volume was formatted again"
    assert (host.loop, str(host.brokers_dir / S["broker_id"] / "volume")) in labmod.mounts()
    plan = tf.plan()
    assert plan.rc == 0, f"expected no changes after the restart, got {plan.rc}:\n{plan.output}"
    assert amqp.login_error(S["amqp_endpoint"], OPS["username"], OPS["password"]) == ""


def test_07_import_by_host_and_id(host, tf_factory):
    need("apply")
    tf2 = tf_factory("single-instance-import", example=EXAMPLE)
    tf2.write_vars(variables(host, [APP, OPS]))
    import_id = f"{host.address}/{S['broker_id']}"
    res = tf2.import_(ADDRESS, import_id)
    assert "Import successful" in res.output, res.output
    values = broker_resource(tf2, ADDRESS)
    assert values["id"] == S["broker_id"], values
    assert values["instances"][0]["endpoints"] == S["endpoints"], values["instances"]
    assert values["instances"][0]["console_url"] == S["console_url"], values["instances"]
    assert host.rabbitmq_pids() == [S["beam"]], "import touched the engine"
    # This second state must never destroy the broker: drop it.
    (tf2.workdir / "terraform.tfstate").unlink()


def test_08_destroy_leaves_nothing_on_the_host(lab, host):
    need("apply")
    tf = S["tf"]
    res = tf.destroy()
    assert "Destroy complete! Resources: 1 destroyed." in res.output, res.output
    assert tf.resources() == [], "resources left in the state after destroy"

    def engine_gone():
        left = [(p, c) for p, c, _ in host.processes() if c in ("beam.smp", "epmd", "erl_child_setup", "rabbitmq-server")]
        return not left

    wait_until(engine_gone, 15, f"no engine process (beam.smp, epmd) left in {host.netns}: {host.processes()}")
    others = [(p, c) for p, c, _ in host.processes() if p != host.agent_pid]
    assert others == [], f"processes left in {host.netns} besides the agent: {others}"
    mounted = [(src, mp) for src, mp in labmod.mounts() if src == host.loop]
    assert mounted == [], f"{host.loop} still mounted: {mounted}"
    probe = blkid(host.loop)
    assert probe.returncode == 2 and not probe.stdout.strip(), \
        f"{host.loop} still carries a signature: rc {probe.returncode} {probe.stdout}{probe.stderr}"
    assert host.broker_dirs() == [], f"broker data left on the host: {host.broker_dirs()}"
    assert lab.agent_alive(host), "the agent died"
