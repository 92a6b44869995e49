"""End to end: examples/activemq-single-instance on one appliance host, with the real Terraform
1.0.3, the real agent, Debian's ActiveMQ 5.17.2 and a STOMP client this project did not write
(stomp.py).

The steps run in order and share one broker; a step whose prerequisite failed fails at once,
saying which one. The host (host 1 of the lab) is left as found: blank volume, no engine.
"""

from __future__ import annotations

import os
import signal
import time


import erlang_dist as dist
import lab as labmod
import stompclient as sc
import tls
from steps import (Steps, apply_until_running, blkid, broker_resource, files_under, proc_uid, uid_of, wait_until)

EXAMPLE = "activemq-single-instance"
ADDRESS = "ferrymq_broker.activemq"
BROKER_NAME = "acceptance-activemq"
APP = {"username": "app", "password": "app-Passw0rd-2024!", "console_access": True}
OPS = {"username": "ops", "password": "ops-Passw0rd-2024#", "console_access": False}
OPS_NEW_PASSWORD = "ops-Rotated-2024-pw"
MESSAGES = 1000
QUEUE = "acceptance.single"

S = Steps()


def variables(host, users) -> dict:
    return {"broker_name": BROKER_NAME, "host": host.address, "volume": host.loop, "users": list(users)}



def the_java(host) -> int:
    pids = host.activemq_pids()
    assert len(pids) == 1, f"expected one ActiveMQ java process in {host.netns}, found {host.processes()}"
    return pids[0]


def test_01_apply_creates_running_broker(lab, host, tf_factory):
    tf = tf_factory("activemq-single-instance", example=EXAMPLE)
    S.s["tf"] = tf
    tf.write_vars(variables(host, [APP]))

    res, out = apply_until_running(tf, "activemq_single_apply_to_running_seconds", APP["password"])
    a = host.address
    eps = out["endpoints"]
    assert eps and eps[0] == f"ssl://{a}:{labmod.OPENWIRE_PORT}", f"OpenWire (TLS) must come first: {eps}"
    assert out["openwire_endpoint"] == eps[0], out
    assert out["stomp_endpoint"] == f"stomp+ssl://{a}:{labmod.STOMP_PORT}", out
    assert f"mqtt+ssl://{a}:{labmod.MQTT_PORT}" in eps, eps
    assert "BEGIN CERTIFICATE" in out["ca_certificate"], out
    assert not [e for e in eps if e.startswith("amqp")], f"Debian's ActiveMQ 5.17.2 has no AMQP transport: {eps}"
    assert out["failover_url"] == f"failover:(ssl://{a}:{labmod.OPENWIRE_PORT})", out
    values = broker_resource(tf, ADDRESS)
    inst = values["instances"]
    assert len(inst) == 1 and inst[0]["ip_address"] == a, inst
    assert values["engine_type"] == "ActiveMQ" and values["storage_type"] == "ebs", values
    print(f"instance: {inst[0]}")
    S.s.update(out)

    # Every listed endpoint accepts TCP connections on the host's address; ActiveMQ's plain
    # ports (OpenWire 61616, STOMP 61613, MQTT 1883) are closed: no plain_listeners asked for.
    for e in eps:
        port = int(e.rsplit(":", 1)[1])
        assert host.port_open(port), f"{e} listed but does not accept connections"
    for port in (61616, 61613, 1883):
        assert not host.port_open(port), f"a plain listener answers on {a}:{port}"
    # A plain STOMP client on the TLS port gets no session.
    assert sc.login_error(f"stomp://{a}:{labmod.STOMP_PORT}", APP["username"], APP["password"]), \
        "a plain STOMP client logged in on the TLS port"

    # On the host: one java running activemq.jar as user activemq; its volume formatted and mounted.
    java = the_java(host)
    assert proc_uid(java) == uid_of("activemq"), f"ActiveMQ runs as uid {proc_uid(java)}, not activemq"
    S.s["java"] = java
    mounted = [mp for src, mp in labmod.mounts() if src == host.loop]
    assert len(mounted) == 1, f"{host.loop} should be mounted once, mounts of it: {mounted}"
    assert mounted[0].startswith(str(host.state_dir) + "/"), f"{host.loop} mounted outside the agent's state: {mounted}"
    S.s["mount_point"] = mounted[0]
    probe = blkid(host.loop)
    assert "TYPE=ext4" in probe.stdout, f"{host.loop} is not ext4: {probe.stdout}{probe.stderr}"
    S.ok("apply")


def test_02_stomp_send_and_receive_1000_persistent_messages(host):
    S.need("apply")
    ep = S.s["stomp_endpoint"]
    bodies = [f"ferrymq-activemq-{i:05d}" for i in range(MESSAGES)]
    send_secs = sc.send_receipted(ep, APP["username"], APP["password"], QUEUE, bodies)
    start = time.monotonic()
    got = sc.consume(ep, APP["username"], APP["password"], QUEUE, MESSAGES, timeout=60, idle=0.5)
    con_secs = time.monotonic() - start
    assert len(got) == MESSAGES, f"consumed {len(got)} of {MESSAGES} messages"
    assert got == bodies, "consumed bodies differ from the sent ones (or their order)"
    labmod.record_result("activemq_stomp_send_receipted_persistent_msgs_per_second", round(MESSAGES / send_secs))
    print(f"\nsent {MESSAGES} persistent messages with receipts over STOMP in {send_secs:.2f} s, "
          f"consumed in {con_secs:.2f} s")
    # The store is on the broker's volume: KahaDB's journal files are under its mount point.
    journal = files_under(labmod.Path(S.s["mount_point"]), "db-*.log")
    assert journal, f"no KahaDB journal (db-*.log) under the volume's mount point {S.s['mount_point']}"


def test_02a_data_readable_only_by_activemq(host):
    """KahaDB (its index and journal), the users' file and the broker's log are the activemq
    user's alone: nobody cannot read them, and nothing under the volume or the engine's
    directory has a bit for others."""
    S.need("apply")
    volume = labmod.Path(S.s["mount_point"])
    engine = volume.parent / "engine"
    kahadb = volume / "activemq" / "kahadb"
    files = [kahadb / "db.data", *sorted(kahadb.glob("db-*.log"))[:1], engine / "users.properties",
             engine / "activemq.log"]
    print(f"\nchecked: {[f'{f} {oct(dist.mode(f))}' for f in files if f.exists()]}")
    dist.assert_private(files, volume)
    assert dist.open_to_others(engine) == [], dist.open_to_others(engine)
    assert dist.mode(volume / "activemq") == 0o700 and dist.mode(engine) == 0o700
    st = volume.stat()
    assert (dist.mode(volume), st.st_uid) == (0o750, 0), f"volume root {oct(dist.mode(volume))} uid {st.st_uid}"


def test_03_wrong_password_unknown_user_and_default_credentials_refused(host):
    S.need("apply")
    ep = S.s["stomp_endpoint"]
    for user, password, what in [
        (APP["username"], "wrong-Passw0rd-2024", "a wrong password"),
        ("nobody", "nobody-Passw0rd-2024", "an unknown user"),
        ("admin", "admin", "ActiveMQ's default admin/admin"),
        ("system", "manager", "ActiveMQ's default system/manager"),
    ]:
        err = sc.login_error(ep, user, password)
        assert err, f"{what} ({user}) could log in over STOMP"
    assert sc.login_error(ep, APP["username"], APP["password"]) == ""
    users = broker_resource(S.s["tf"], ADDRESS).get("user") or []
    assert sorted(u["username"] for u in users) == [APP["username"]], users


def _login_soon(ep, user, password, timeout=10.0) -> float:
    """Seconds until user can log in (0 if at once); fails after timeout."""
    start = time.monotonic()
    wait_until(lambda: sc.login_error(ep, user, password) == "", timeout,
               lambda: f"{user} logging in: {sc.login_error(ep, user, password)}", interval=0.25)
    return time.monotonic() - start


def test_04_add_user_in_place_without_restart(host):
    S.need("apply")
    tf = S.s["tf"]
    ep = S.s["stomp_endpoint"]
    assert sc.login_error(ep, OPS["username"], OPS["password"]), "ops can log in before it was added"
    tf.write_vars(variables(host, [APP, OPS]))
    plan = tf.plan()
    assert plan.rc == 2, f"expected changes (exit 2), got {plan.rc}:\n{plan.output}"
    assert "Plan: 0 to add, 1 to change, 0 to destroy." in plan.output, plan.output
    assert "updated in-place" in plan.output, plan.output
    assert OPS["password"] not in plan.output, "a password appears in the plan output"
    res = tf.apply()
    assert "Apply complete! Resources: 0 added, 1 changed, 0 destroyed." in res.output, res.output
    out = tf.output()
    assert out["broker_id"] == S.s["broker_id"], "the broker was replaced"
    assert out["status"] == "RUNNING", out
    lag = _login_soon(ep, OPS["username"], OPS["password"])
    assert lag < 1.0, f"the new user could log in only {lag:.1f} s after apply returned"
    assert sc.login_error(ep, APP["username"], APP["password"]) == ""
    # It sends and receives, not only logs in.
    sc.send_receipted(ep, OPS["username"], OPS["password"], "acceptance.ops", ["from-ops"])
    assert sc.consume(ep, APP["username"], APP["password"], "acceptance.ops", 1, timeout=20, idle=0.2) == ["from-ops"]
    assert host.activemq_pids() == [S.s["java"]], \
        f"adding a user restarted the broker: java {host.activemq_pids()} (was {S.s['java']})"
    S.ok("add_user")


def test_05_change_password_in_place_without_restart(host):
    S.need("add_user")
    tf = S.s["tf"]
    ep = S.s["stomp_endpoint"]
    tf.write_vars(variables(host, [APP, {**OPS, "password": OPS_NEW_PASSWORD}]))
    res = tf.apply()
    assert "Apply complete! Resources: 0 added, 1 changed, 0 destroyed." in res.output, res.output
    assert OPS_NEW_PASSWORD not in res.output, "a password appears in the apply output"
    _login_soon(ep, OPS["username"], OPS_NEW_PASSWORD)
    assert sc.login_error(ep, OPS["username"], OPS["password"]), "the old password still works"
    assert host.activemq_pids() == [S.s["java"]], "changing a password restarted the broker"
    S.ok("password")


def test_06_replan_shows_no_changes():
    S.need("password")
    plan = S.s["tf"].plan()
    assert plan.rc == 0, f"expected no changes (exit 0), got {plan.rc}:\n{plan.output}"
    assert "No changes." in plan.output, plan.output


def test_07_killed_broker_is_restarted_and_keeps_its_messages(host):
    """kill -9 of the engine: the agent starts it again within seconds, on the same store."""
    S.need("apply")
    ep = S.s["stomp_endpoint"]
    bodies = [f"survivor-{i}" for i in range(20)]
    sc.send_receipted(ep, APP["username"], APP["password"], "acceptance.survivors", bodies)
    old = the_java(host)
    os.kill(old, signal.SIGKILL)
    killed = time.monotonic()
    new = wait_until(lambda: [p for p in host.activemq_pids() if p != old], 30,
                     lambda: f"a new ActiveMQ java in {host.netns}: {host.processes()}", interval=0.1)
    restarted = time.monotonic() - killed
    wait_until(lambda: sc.login_error(ep, APP["username"], APP["password"]) == "", 60,
               lambda: f"STOMP login after the restart: {sc.login_error(ep, APP['username'], APP['password'])}",
               interval=0.1)
    serving = time.monotonic() - killed
    print(f"\nkill -9 of ActiveMQ: a new java after {restarted:.1f} s, STOMP served again after {serving:.1f} s")
    labmod.record_result("activemq_single_restart_after_kill_seconds", round(serving, 2))
    assert len(new) == 1, f"more than one ActiveMQ after the restart: {host.processes()}"
    assert restarted < 10, f"the agent took {restarted:.1f} s to restart the broker (contract: ~3 s)"
    S.s["java"] = new[0]
    got = sc.consume(ep, APP["username"], APP["password"], "acceptance.survivors", len(bodies), timeout=30, idle=0.3)
    assert got == bodies, f"persistent messages lost in the restart: {len(got)} of {len(bodies)}"
    assert S.s["tf"].output()["status"] == "RUNNING"


def test_07b_every_tls_connector_is_aead_only(host):
    """A TLS scan of the broker's OpenWire, STOMP and MQTT connectors: TLS 1.0 and 1.1, TLS 1.2
    with CBC or CCM(-8) suites only and TLS 1.3 with CCM suites only are refused; TLS 1.2 with an
    AEAD suite and TLS 1.3 are accepted."""
    S.need("apply")
    for port in (labmod.OPENWIRE_PORT, labmod.STOMP_PORT):
        got = tls.assert_aead_only(host.address, port)
        suites = tls.accepted_tls12_suites(host.address, port)
        print(f"\n{host.address}:{port}: {got}\n  TLS 1.2 suites accepted: {suites}")
        assert suites and all("GCM" in s or "CHACHA20" in s for s in suites), suites
    # MQTT: Debian's ActiveMQ 5.17.2 has no fusesource mqtt-client (org.fusesource.mqtt.codec) on
    # the broker's class path, so the connector accepts TCP and fails every connection before its
    # handshake (NoClassDefFoundError in activemq.log): only the refusals can be checked there.
    got = tls.assert_aead_only(host.address, labmod.MQTT_PORT, refusals_only=True)
    print(f"\n{host.address}:{labmod.MQTT_PORT}: {got} (the MQTT connector serves no connection at all)")
    # Clients still work over TLS after the scan.
    assert sc.login_error(S.s["stomp_endpoint"], APP["username"], APP["password"]) == ""


def test_08_destroy_leaves_nothing_on_the_host(lab, host):
    S.need("apply")
    tf = S.s["tf"]
    res = tf.destroy()
    assert "Destroy complete! Resources: 1 destroyed." in res.output, res.output
    assert tf.resources() == [], "resources left in the state after destroy"
    wait_until(lambda: not host.java_pids(), 15, lambda: f"no java left in {host.netns}: {host.processes()}")
    others = [(p, c) for p, c, _ in host.processes() if p != host.agent_pid]
    assert others == [], f"processes left in {host.netns} besides the agent: {others}"
    mounted = [(src, mp) for src, mp in labmod.mounts() if src == host.loop or mp == S.s.get("mount_point")]
    assert mounted == [], f"{host.loop} still mounted: {mounted}"
    probe = blkid(host.loop)
    assert probe.returncode == 2 and not probe.stdout.strip(), \
        f"{host.loop} still carries a signature: rc {probe.returncode} {probe.stdout}{probe.stderr}"
    assert host.broker_dirs() == [], f"broker data left on the host: {host.broker_dirs()}"
    assert lab.agent_alive(host), "the agent died"
    assert not host.port_open(labmod.STOMP_PORT) and not host.port_open(labmod.OPENWIRE_PORT)


def test_09_failed_create_reports_the_agents_error_and_destroys_cleanly(lab, host, tf_factory):
    """A create the agent refuses (no such device) fails with the agent's reason only: the
    provider's partial state is a valid object (no "invalid result object"), and destroying it
    leaves nothing."""
    tf = tf_factory("activemq-single-instance-failed-create", example=EXAMPLE)
    missing = "/dev/ferrymq-no-such-disk"
    tf.write_vars({**variables(host, [APP]), "volume": missing})
    res = tf.apply(check=False)
    # Destroy first (whatever the apply said), so that a failure here leaves the host clean for
    # the tests after this one.
    gone = tf.destroy(check=False)
    assert res.rc == 1, f"expected the apply to fail, got exit {res.rc}:\n{res.output}"
    assert missing in res.output, f"the agent's reason is not shown:\n{res.output}"
    assert "panic" not in res.output.lower(), res.output
    assert gone.rc == 0 and "Destroy complete!" in gone.output, gone.output
    assert host.broker_dirs() == [], f"broker state left on the host: {host.broker_dirs()}"
    assert not host.java_pids(), host.processes()
    assert blkid(host.loop).returncode == 2, f"{host.loop} was touched by a create on another device"
    assert "invalid result object" not in res.output, \
        f"the provider returned an invalid (partly unknown) object for the failed create:\n{res.output}"
