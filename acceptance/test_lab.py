"""Self-test of the harness (lab.py) without FerryMQ's binaries: hosts on a bridge, a RabbitMQ
started by hand on one host's loop-device volume and reached from the root namespace and from
the other host, and a teardown that leaves nothing behind.

Uses a lab of its own (prefix fmqs, 10.79.3.0/24) next to the agents' lab.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import amqp
import lab as labmod

PREFIX = "fmqs"
NET = "10.79.3"


def as_rabbitmq_in(h: labmod.Host, env: dict, argv: list, **kw):
    cmd = ["nsenter", f"--net=/run/netns/{h.netns}", "--",
           "setpriv", "--reuid", "rabbitmq", "--regid", "rabbitmq", "--init-groups",
           "env", *[f"{k}={v}" for k, v in env.items()], *argv]
    return cmd


@pytest.fixture
def self_lab():
    the_lab = labmod.Lab(prefix=PREFIX, net=NET, volume_mib=256)
    try:
        the_lab.up(hosts=2, agents=False)
        yield the_lab
    finally:
        the_lab.down()


def test_lab_hosts_rabbitmq_by_hand_and_leaves_nothing(self_lab):
    lab = self_lab
    h1, h2 = lab.hosts
    assert h1.loop != h2.loop and h1.loop.startswith("/dev/loop")
    assert subprocess.run(["blkid", "-p", h1.loop], capture_output=True).returncode == 2, "volume not blank"

    # h1's volume: ext4, mounted in the root mount namespace under the lab directory.
    base = h1.brokers_dir / "manual"
    volume = base / "volume"
    volume.mkdir(parents=True)
    labmod.run(["mkfs.ext4", "-q", "-L", "fmq-selftest", h1.loop])
    labmod.run(["mount", h1.loop, volume])
    for d in (base / "home", volume / "mnesia", volume / "log"):
        d.mkdir(parents=True, exist_ok=True)
    (base / "rabbitmq.conf").write_text(
        f"listeners.tcp.1 = {h1.address}:5672\nloopback_users = none\n")
    (base / "enabled_plugins").write_text("[].\n")
    for p in [h1.state_dir, h1.brokers_dir]:
        os.chmod(p, 0o755)
    labmod.run(["chown", "-R", "rabbitmq:rabbitmq", base])
    env = {
        "HOME": base / "home",
        "RABBITMQ_NODENAME": "rabbit@localhost",
        "RABBITMQ_MNESIA_BASE": volume / "mnesia",
        "RABBITMQ_LOG_BASE": volume / "log",
        "RABBITMQ_CONFIG_FILE": base / "rabbitmq.conf",
        "RABBITMQ_ENABLED_PLUGINS_FILE": base / "enabled_plugins",
    }
    log = open(base / "server.out", "wb")
    server = subprocess.Popen(
        [str(c) for c in as_rabbitmq_in(h1, env, ["/usr/lib/rabbitmq/bin/rabbitmq-server"])],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    try:
        secs = labmod.wait_for_port(h1.address, 5672, 90, alive=lambda: server.poll() is None,
                                    what="hand-started RabbitMQ")
    except labmod.LabError as e:
        pytest.fail(f"{e}\n{labmod.tail(base / 'server.out')}", pytrace=False)
    print(f"\nhand-started RabbitMQ accepts AMQP after {secs:.1f} s")

    # From the root namespace (over the bridge): a real AMQP round trip (guest, loopback_users = none).
    ep = f"amqp://{h1.address}:5672"
    bodies = [f"selftest-{i}".encode() for i in range(50)]
    amqp.publish_confirmed(ep, "guest", "guest", "selftest", bodies)
    assert amqp.consume(ep, "guest", "guest", "selftest", len(bodies), timeout=20) == bodies

    # From the other host's namespace.
    probe = ("import socket,sys; socket.create_connection((sys.argv[1], 5672), timeout=5).close()")
    cp = subprocess.run(["nsenter", f"--net=/run/netns/{h2.netns}", "--", sys.executable, "-c", probe, h1.address],
                        capture_output=True, text=True)
    assert cp.returncode == 0, f"{h2.name} cannot reach {h1.address}:5672: {cp.stderr}"

    # The engine and epmd live in h1's namespace; the lab sees them there.
    names = {c for _, c, _ in h1.processes()}
    assert "beam.smp" in names and "epmd" in names, h1.processes()
    assert not h2.processes(), f"processes in {h2.netns}: {h2.processes()}"

    # Teardown with the engine running and the volume mounted leaves nothing behind.
    beam = h1.pids_named("beam.smp")
    lab.down()
    server.wait(timeout=10)
    assert lab.leftovers() == [], lab.leftovers()
    assert not any(labmod.pid_alive(p) for p in beam), "beam.smp survived the teardown"
    assert all(not b.startswith(str(lab.root)) for _, b in labmod.loop_devices())
    ns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert PREFIX not in ns, ns


def test_lab_refuses_a_foreign_prefix():
    with pytest.raises(labmod.LabError):
        labmod.Lab(prefix="eth")
    with pytest.raises(labmod.LabError):
        labmod.Lab(prefix="fmqt", net="192.168.1")
