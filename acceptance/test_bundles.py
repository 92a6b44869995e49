"""End to end: engine bundles. An ActiveMQ single-instance broker runs 5.17.2 from its bundle
(built from Debian 12's packages by appliance/bundles/build), a corrupted 5.17.6 bundle on the
mirror is refused with the digest error while the broker keeps running 5.17.2, the good 5.17.6
bundle (Debian 13's packages on the host's Java 17) is switched to with the queued messages kept,
and a downgrade and a skipped RabbitMQ minor (3.8 -> 3.10) are refused at plan with the attribute path.

The bundles come from the provider's ``bundle_mirror`` (here FERRYMQ_BUNDLE_MIRROR): an HTTP
server of this test inside host 1's network namespace serves a mirror directory; the agent has no
bundle source of its own.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import amqp
import lab as labmod
import stompclient as sc
from steps import Steps, apply_until_running, broker_resource, java_home, seconds_until, wait_until, window_after

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("FERRYMQ_BUNDLE_DIR", "/var/cache/ferrymq/bundles"))
EXAMPLE = "activemq-single-instance"
ADDRESS = "ferrymq_broker.activemq"
APP = {"username": "app", "password": "app-Passw0rd-2024!", "console_access": True}
QUEUE = "acceptance.bundles"
MESSAGES = 200

S = Steps()


def variables(host, version: str) -> dict:
    return {"broker_name": "acceptance-bundles", "host": host.address, "volume": host.loop,
            "users": [APP], "engine_version": version,
            # An engine upgrade otherwise waits for the maintenance window.
            "apply_immediately": True}


def bundle_link(host) -> str:
    """The bundle directory the module's broker's engine-current link names."""
    return link_of(host, S.s["broker_id"])


def link_of(host, broker_id: str) -> str:
    """The bundle directory the broker's engine-current link names on host."""
    return Path(os.path.realpath(host.state_dir / "brokers" / broker_id / "engine-current")).name


def the_java(host) -> int:
    pids = host.activemq_pids()
    assert len(pids) == 1, f"expected one ActiveMQ java in {host.netns}: {host.processes()}"
    return pids[0]


def test_00_bundles_built_and_agent_uses_a_mirror(lab, host, tmp_path_factory):
    start = time.monotonic()
    subprocess.run([str(REPO / "appliance/bundles/build")], check=True,
                   env={**os.environ, "FERRYMQ_BUNDLE_DIR": str(CACHE)})
    print(f"\nappliance/bundles/build (cached or not): {time.monotonic() - start:.1f} s")
    mirror = tmp_path_factory.mktemp("bundle-mirror")
    for name in ("activemq-5.17.2", "activemq-5.17.6", "rabbitmq-3.10.8"):
        archive = CACHE / f"{name}.tar.gz"
        shutil.copy(archive, mirror / archive.name)
        labmod.record_result(f"bundle_{name.replace('-', '_').replace('.', '_')}_bytes", archive.stat().st_size)
    os.chmod(mirror, 0o755)
    S.s["mirror"] = mirror
    port = 8088
    S.s["mirror_server"] = subprocess.Popen(
        ["nsenter", f"--net=/run/netns/{host.netns}", "--", sys.executable, "-m", "http.server",
         "--bind", host.address, "--directory", str(mirror), str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: host.port_open(port), 30, "the bundle mirror's HTTP server")
    S.s["mirror_url"] = f"http://{host.address}:{port}/"
    S.ok("mirror")


def test_01_broker_runs_5_17_2_from_its_bundle(host, tf_factory):
    S.need("mirror")
    tf = tf_factory("bundles", example=EXAMPLE)
    main = tf.workdir / "main.tf"
    text = main.read_text()
    assert 'engine_version     = "5.17.2"' in text
    main.write_text(text.replace('engine_version     = "5.17.2"', "engine_version     = var.engine_version")
                    + '\nvariable "engine_version" {\n  type = string\n}\n')
    tf.env["FERRYMQ_BUNDLE_MIRROR"] = S.s["mirror_url"]
    tf.write_vars(variables(host, "5.17.2"))
    S.s["tf"] = tf
    _, out = apply_until_running(tf, "bundles_activemq_5_17_2_apply_to_running_seconds", APP["password"])
    S.s.update(out)
    assert bundle_link(host).startswith("activemq-5.17.2-"), bundle_link(host)
    java = the_java(host)
    assert f"/bundles/{bundle_link(host)}/home" in java_home(java), java_home(java)
    S.s["java"] = java
    bodies = [f"bundle-{i:04d}" for i in range(MESSAGES)]
    sc.send_receipted(out["stomp_endpoint"], APP["username"], APP["password"], QUEUE, bodies)
    S.s["bodies"] = bodies
    S.ok("running")


def test_02_corrupted_bundle_is_refused_and_the_old_one_keeps_running(host):
    S.need("running")
    tf, mirror = S.s["tf"], S.s["mirror"]
    bad = mirror / "activemq-5.17.6.tar.gz"
    data = bytearray(bad.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    tf.write_vars(variables(host, "5.17.6"))
    res = tf.apply(check=False)
    assert res.rc != 0, res.output
    flat = " ".join(res.output.split())
    assert "SHA-256" in flat and "5.17.6" in flat and "expected" in flat and "nothing was switched" in flat, res.output
    assert bundle_link(host).startswith("activemq-5.17.2-"), bundle_link(host)
    assert host.activemq_pids() == [S.s["java"]], "the broker was restarted by a refused bundle"
    assert sc.login_error(S.s["stomp_endpoint"], APP["username"], APP["password"]) == ""
    shutil.copy(CACHE / bad.name, bad)
    S.s["fixed_at"] = time.monotonic()
    S.ok("refused")


def test_03_good_bundle_on_the_mirror_upgrades_to_5_17_6_and_keeps_messages(host):
    """The agent keeps the refused spec (5.17.6) and retries each pass: once the mirror holds the
    right bundle it is verified, unpacked and switched to, with one restart of the engine."""
    S.need("refused")
    tf = S.s["tf"]
    ep = S.s["stomp_endpoint"]

    def upgraded() -> bool:
        return (bundle_link(host).startswith("activemq-5.17.6-") and len(host.activemq_pids()) == 1
                and sc.login_error(ep, APP["username"], APP["password"]) == "")

    wait_until(upgraded, 180, lambda: f"broker on the 5.17.6 bundle and serving STOMP: link {bundle_link(host)}")
    seconds = time.monotonic() - S.s["fixed_at"]
    labmod.record_result("bundles_activemq_upgrade_5_17_2_to_5_17_6_seconds", round(seconds, 2))
    print(f"\nFIGURE upgrade 5.17.2 -> 5.17.6 (good bundle on the mirror to STOMP serving): {seconds:.1f} s")
    # The agent reports RUNNING once its next pass has probed the new engine.
    def running() -> bool:
        tf.run("refresh", "-no-color", "-input=false")
        return tf.output().get("status") == "RUNNING"

    wait_until(running, 60, lambda: f"status RUNNING after the upgrade: {tf.output().get('status')}", interval=2)
    assert bundle_link(host).startswith("activemq-5.17.6-"), bundle_link(host)
    java = the_java(host)
    assert java != S.s["java"], "the engine was not restarted on the new bundle"
    assert "/bundles/activemq-5.17.6-" in java_home(java), java_home(java)
    assert broker_resource(tf, ADDRESS)["engine_version"] == "5.17.6"
    ep = S.s["stomp_endpoint"]
    wait_until(lambda: sc.login_error(ep, APP["username"], APP["password"]) == "", 60, "STOMP login on 5.17.6")
    got = sc.consume(ep, APP["username"], APP["password"], QUEUE, MESSAGES, timeout=60, idle=0.5)
    assert got == S.s["bodies"], f"consumed {len(got)} of {MESSAGES} after the upgrade"
    # A round trip on the new bundle (STOMP; OpenWire is the agent's health probe).
    sc.send_receipted(ep, APP["username"], APP["password"], QUEUE, ["after-upgrade"])
    assert sc.consume(ep, APP["username"], APP["password"], QUEUE, 1, timeout=30) == ["after-upgrade"]
    S.ok("upgraded")


def test_04_downgrade_and_skipped_rabbitmq_minor_refused_at_plan(host, tf_factory):
    S.need("upgraded")
    tf = S.s["tf"]
    tf.write_vars(variables(host, "5.17.2"))
    plan = tf.plan()
    flat = " ".join(plan.output.split())
    assert plan.rc == 1, plan.output
    assert "downgrade" in flat and "with ferrymq_broker.activemq" in flat and "engine_version = var.engine_version" in flat, plan.output
    tf.write_vars(variables(host, "5.17.6"))

    # RabbitMQ: the same state as a RabbitMQ 3.8.34 broker (this release's catalogue has one
    # RabbitMQ version, 3.10.8, so the skip is from an older one), planned to 3.10.8 without a
    # refresh (the plan-time check reads only the prior state and the configuration).
    rtf = tf_factory("bundles-rabbitmq")
    for f in tf.workdir.glob("*.tf"):
        shutil.copy(f, rtf.workdir / f.name)
    main = rtf.workdir / "main.tf"
    main.write_text(main.read_text().replace('engine_type        = "ActiveMQ"', 'engine_type        = "RabbitMQ"'))
    state = json.loads((tf.workdir / "terraform.tfstate").read_text())
    for r in state["resources"]:
        for i in r["instances"]:
            i["attributes"].update(engine_type="RabbitMQ", engine_version="3.8.34")
    (rtf.workdir / "terraform.tfstate").write_text(json.dumps(state))
    rtf.write_vars(variables(host, "3.10.8"))
    plan = rtf.plan("-refresh=false")
    flat = " ".join(plan.output.split())
    assert plan.rc == 1, plan.output
    assert "skips RabbitMQ minor versions" in flat and "3.9 first" in flat and "engine_version = var.engine_version" in flat, plan.output


def test_05_rabbitmq_runs_from_its_bundle(lab, tf_factory):
    """RabbitMQ 3.10.8 from its bundle (Debian 12's server tree on the host's Erlang), fetched
    from the same mirror by another host's agent."""
    S.need("mirror")
    other = lab.hosts[1]
    tf = tf_factory("bundles-rabbitmq-node", example="rabbitmq-single-instance")
    tf.env["FERRYMQ_BUNDLE_MIRROR"] = S.s["mirror_url"]
    tf.write_vars({"broker_name": "acceptance-bundles-rabbitmq", "host": other.address, "volume": other.loop,
                   "users": [APP]})
    try:
        _res, out = apply_until_running(tf, "bundles_rabbitmq_3_10_8_apply_to_running_seconds", APP["password"])
        beams = other.rabbitmq_pids()
        assert len(beams) == 1, other.processes()
        # The bundle's scripts point Erlang at the bundle's plugins (ERL_LIBS).
        environ = Path(f"/proc/{beams[0]}/environ").read_bytes().split(b"\0")
        erl_libs = next((e.decode() for e in environ if e.startswith(b"ERL_LIBS=")), "")
        link = os.path.realpath(other.state_dir / "brokers" / out["broker_id"] / "engine-current")
        assert Path(link).name.startswith("rabbitmq-3.10.8-"), link
        assert f"{link}/home/plugins" in erl_libs, f"beam.smp does not run the bundle's plugins: {erl_libs}"
        assert amqp.login_error(out["amqp_endpoint"], APP["username"], APP["password"]) == ""
    finally:
        tf.destroy()
    assert other.pids_named("beam.smp") == [], other.processes()


def test_06_auto_minor_version_upgrade_takes_the_newest_patch_in_the_window(lab, tf_factory):
    """`auto_minor_version_upgrade = true` on a 5.17.2 broker: 5.17.6 is reported pending before
    the window, the agent fetches its bundle and switches to it when the window opens, and
    engine_version keeps the written 5.17.2, so a plan after it shows no change."""
    S.need("mirror")
    third = lab.hosts[2]
    tf = tf_factory("bundles-auto-minor", example=EXAMPLE)
    tf.env["FERRYMQ_BUNDLE_MIRROR"] = S.s["mirror_url"]
    window, start = window_after(dt.timedelta(seconds=50))
    tf.write_vars({"broker_name": "acceptance-auto-minor", "host": third.address, "volume": third.loop,
                   "users": [APP], "auto_minor_version_upgrade": True, "apply_immediately": False,
                   "maintenance_window": window})
    try:
        _res, out = apply_until_running(tf, "auto_minor_apply_to_running_seconds", APP["password"])
        broker_id = out["broker_id"]
        assert link_of(third, broker_id).startswith("activemq-5.17.2-"), link_of(third, broker_id)
        java = the_java(third)

        # The first pass that runs the broker records 5.17.2; the next one sees the newer patch.
        def pending_upgrade() -> bool:
            tf.run("refresh", "-no-color", "-input=false")
            return broker_resource(tf, ADDRESS)["pending_engine_version"] == "5.17.6"

        wait_until(pending_upgrade, 30, lambda: f"5.17.6 pending: {broker_resource(tf, ADDRESS)['pending_changes']}",
                   interval=1)
        values = broker_resource(tf, ADDRESS)
        assert values["engine_version"] == "5.17.2", values["engine_version"]
        assert "engine_version: 5.17.2 -> 5.17.6" in values["pending_changes"], values["pending_changes"]
        assert seconds_until(start) > 0, "the window opened before the pending upgrade could be seen"
        wait_until(lambda: seconds_until(start) <= 0, 150, "the window to open", interval=0.5)
        opened = time.monotonic()
        ep = out["stomp_endpoint"]

        def upgraded() -> bool:
            return (link_of(third, broker_id).startswith("activemq-5.17.6-") and len(third.activemq_pids()) == 1
                    and sc.login_error(ep, APP["username"], APP["password"]) == "")

        wait_until(upgraded, 180, lambda: f"5.17.6 serving after the window opened: link {link_of(third, broker_id)}")
        seconds = time.monotonic() - opened
        labmod.record_result("auto_minor_window_open_to_upgraded_seconds", round(seconds, 1))
        print(f"\nauto minor upgrade 5.17.2 -> 5.17.6: window open to STOMP serving on 5.17.6 in {seconds:.1f} s")
        assert the_java(third) != java, "the engine was not restarted on the new patch"
        assert "/bundles/activemq-5.17.6-" in java_home(the_java(third))

        def settled() -> bool:
            tf.run("refresh", "-no-color", "-input=false")
            v = broker_resource(tf, ADDRESS)
            return v["pending_engine_version"] == "" and v["pending_changes"] == [] and tf.output().get("status") == "RUNNING"

        wait_until(settled, 60, lambda: f"nothing pending: {broker_resource(tf, ADDRESS)['pending_changes']}", interval=2)
        assert broker_resource(tf, ADDRESS)["engine_version"] == "5.17.2"
        plan = tf.plan()
        assert plan.rc == 0, f"the upgrade shows as a change to plan:\n{plan.output}"
    finally:
        tf.destroy()
    assert not third.activemq_pids(), third.processes()


def test_99_destroy_and_stop_the_mirror(lab, host):
    tf = S.s.get("tf")
    if tf is not None and S.s.get("broker_id"):
        tf.write_vars(variables(host, "5.17.6"))
        tf.destroy()
    assert not host.activemq_pids(), host.processes()
    _stop_mirror()


def _stop_mirror() -> None:
    server = S.s.pop("mirror_server", None)
    if server is not None:
        server.terminate()
        server.wait(10)


@pytest.fixture(scope="module", autouse=True)
def _mirror_stopped():
    """The mirror's HTTP server ends with the module, whatever failed."""
    yield
    _stop_mirror()
