"""End to end: examples/activemq-active-standby with its load balancer (``virtual_ip``) on hosts
2 and 3 of the lab. Clients use one endpoint, the virtual IP: HAProxy forwards to whichever
broker is active (the standby opens no port, so it fails the health check). After the active is
killed with kill -9, a client reconnects through the same endpoint to the former standby, and no
receipted message is lost.
"""

from __future__ import annotations

import os
import signal
import time

import lab as labmod
import stompclient as sc
from steps import Steps, apply_until_running, wait_until
from test_activemq_active_standby import wait_healthy

EXAMPLE = "activemq-active-standby"
APP = {"username": "app", "password": "app-Passw0rd-2024!", "console_access": True}
QUEUE = "acceptance.nlb"
BEFORE, AFTER = 300, 300

S = Steps()


def test_01_apply_puts_the_pair_behind_the_load_balancer(lab, host_pair, tf_factory):
    tf = tf_factory("activemq-nlb", example=EXAMPLE)
    S.s["tf"] = tf
    vip = f"{lab.net}.101"
    tf.write_vars({"broker_name": "acceptance-activemq-nlb", "hosts": [h.address for h in host_pair],
                   "shared_volume": str(lab.shared_dir("efs-activemq-nlb")), "users": [APP], "virtual_ip": vip})
    _res, out = apply_until_running(tf, "activemq_nlb_apply_to_running_seconds", APP["password"])
    assert out["load_balancer_endpoints"] == [f"ssl://{vip}:{labmod.OPENWIRE_PORT}",
                                              f"stomp+ssl://{vip}:{labmod.STOMP_PORT}",
                                              f"mqtt+ssl://{vip}:{labmod.MQTT_PORT}"], out
    S.s["stomp"] = out["load_balancer_endpoints"][1]
    wait_until(lambda: lab.address_holders(vip), 30, "a host holding the virtual IP")
    for h in host_pair:
        comms = {c for _p, c, _ in h.processes()}
        assert {"haproxy", "keepalived"} <= comms, f"{h.name}: {comms}"
    wait_until(lambda: sc.login_error(S.s["stomp"], APP["username"], APP["password"]) == "", 30,
               "a STOMP login through the virtual IP")
    S.ok("apply")


def test_02_after_the_active_dies_clients_reconnect_through_the_same_endpoint(lab, host_pair):
    S.need("apply")
    tf = S.s["tf"]
    active, _standby, _out, _secs = wait_healthy(tf, host_pair)
    ep = S.s["stomp"]
    before = [f"nlb-{i:05d}" for i in range(BEFORE)]
    sc.send_receipted(ep, APP["username"], APP["password"], QUEUE, before)
    pids = active.activemq_pids()
    assert len(pids) == 1, active.processes()
    os.kill(pids[0], signal.SIGKILL)
    killed = time.monotonic()
    wait_until(lambda: sc.login_error(ep, APP["username"], APP["password"]) == "", 60,
               "a STOMP login through the same endpoint after the active died")
    secs = time.monotonic() - killed
    after = [f"nlb-{i:05d}" for i in range(BEFORE, BEFORE + AFTER)]
    sc.send_receipted(ep, APP["username"], APP["password"], QUEUE, after)
    got = sc.consume(ep, APP["username"], APP["password"], QUEUE, BEFORE + AFTER, timeout=60)
    t = sc.tally(before + after, got)
    print(f"\nFIGURE activemq_nlb_reconnect_seconds = {secs:.1f}; {t}")
    labmod.record_result("activemq_nlb_reconnect_seconds", round(secs, 2))
    labmod.record_result("activemq_nlb_lost", t["lost"])
    assert t["lost"] == 0, t
    S.ok("failover")


def test_03_destroy_stops_the_load_balancer(lab, host_pair):
    S.need("apply")
    res = S.s["tf"].destroy()
    assert "Destroy complete! Resources: 1 destroyed." in res.output, res.output
    for h in host_pair:
        comms = {c for _p, c, _ in h.processes()}
        assert not comms & {"java", "haproxy", "keepalived"}, f"{h.name} still runs {comms}"
    assert lab.address_holders(f"{lab.net}.101") == []
