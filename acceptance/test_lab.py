"""Self-test of the harness (lab.py) without FerryMQ's binaries: hosts on a bridge, a RabbitMQ
started by hand on one host's loop-device volume and reached from the root namespace and from
the other host, two ActiveMQ brokers started by hand on a shared directory with a STOMP client
failing over between them, and a teardown that leaves nothing behind.

Uses labs of their own (prefixes fmqs and fmqsa, 10.79.3.0/24 and 10.79.4.0/24) next to the
agents' lab.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

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


# ---- ActiveMQ by hand on a shared directory (the harness of the active/standby tests) --------

AMQ_PREFIX = "fmqsa"
AMQ_NET = "10.79.4"
AMQ_USER, AMQ_PASSWORD = "selftest", "selftest-Passw0rd-24"


def activemq_xml(address: str, base, kahadb) -> str:
    return f"""<beans xmlns="http://www.springframework.org/schema/beans"
  xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
  xsi:schemaLocation="http://www.springframework.org/schema/beans http://www.springframework.org/schema/beans/spring-beans.xsd
  http://activemq.apache.org/schema/core http://activemq.apache.org/schema/core/activemq-core.xsd">
  <broker xmlns="http://activemq.apache.org/schema/core" brokerName="selftest" useJmx="false" dataDirectory="{base}/data">
    <persistenceAdapter>
      <kahaDB directory="{kahadb}" lockKeepAlivePeriod="2000">
        <locker><shared-file-locker lockAcquireSleepInterval="1000"/></locker>
      </kahaDB>
    </persistenceAdapter>
    <plugins>
      <simpleAuthenticationPlugin anonymousAccessAllowed="false">
        <users><authenticationUser username="{AMQ_USER}" password="{AMQ_PASSWORD}" groups="users"/></users>
      </simpleAuthenticationPlugin>
    </plugins>
    <transportConnectors>
      <transportConnector name="openwire" uri="tcp://{address}:{labmod.OPENWIRE_PORT}"/>
      <transportConnector name="stomp" uri="stomp://{address}:{labmod.STOMP_PORT}"/>
    </transportConnectors>
  </broker>
</beans>
"""


def start_activemq_by_hand(h: labmod.Host, kahadb) -> subprocess.Popen:
    """ActiveMQ 5.17.2 as user activemq in h's namespace (the java command of ENVIRONMENT.md)."""
    base = h.brokers_dir / "manual-activemq"
    (base / "conf").mkdir(parents=True)
    (base / "data").mkdir()
    (base / "conf" / "activemq.xml").write_text(activemq_xml(h.address, base, kahadb))
    (base / "conf" / "log4j2.properties").write_text(
        "rootLogger.level=INFO\nrootLogger.appenderRef.console.ref=Console\n"
        "appender.console.type=Console\nappender.console.name=Console\n"
        "appender.console.layout.type=PatternLayout\nappender.console.layout.pattern=%d %-5p %m%n\n")
    for p in [h.dir, h.state_dir, h.brokers_dir]:
        os.chmod(p, 0o755)
    labmod.run(["chown", "-R", "activemq:activemq", base, kahadb])
    opens = [a for m in ("java.lang", "java.util", "java.util.concurrent", "java.net")
             for a in ("--add-opens", f"java.base/{m}=ALL-UNNAMED")]
    cmd = ["nsenter", f"--net=/run/netns/{h.netns}", "--",
           "setpriv", "--reuid", "activemq", "--regid", "activemq", "--init-groups",
           "java", "-Xmx128m", *opens, "-Dactivemq.home=/usr/share/activemq", f"-Dactivemq.base={base}",
           f"-Dactivemq.conf={base}/conf", f"-Dactivemq.data={base}/data",
           "-jar", "/usr/share/activemq/bin/activemq.jar", "start", f"xbean:file:{base}/conf/activemq.xml"]
    log = open(base / "server.out", "wb")
    proc = subprocess.Popen([str(c) for c in cmd], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    log.close()
    return proc


@pytest.fixture
def amq_lab():
    the_lab = labmod.Lab(prefix=AMQ_PREFIX, net=AMQ_NET, volume_mib=64)
    try:
        the_lab.up(hosts=2, agents=False)
        yield the_lab
    finally:
        the_lab.down()


def test_lab_shared_dir_activemq_by_hand_failover_over_stomp(amq_lab):
    """Two hand-started ActiveMQ brokers on one shared directory: one serves, the other waits on
    the KahaDB lock; stomp.py sends with receipts through both endpoints, the active is killed
    mid-stream, the standby takes over, nothing receipted is lost; teardown leaves nothing."""
    import stompclient as sc

    lab = amq_lab
    h1, h2 = lab.hosts
    shared = lab.shared_dir("efs")
    assert shared == lab.shared_dir("efs") and shared.is_dir() and shared.is_relative_to(lab.root)
    with pytest.raises(labmod.LabError):
        lab.shared_dir("../escape")
    # Both hosts see one directory: a file written from h2's namespace is there for h1.
    kahadb = shared / "kahadb"
    kahadb.mkdir()
    cp = subprocess.run(["nsenter", f"--net=/run/netns/{h2.netns}", "--", "touch", str(kahadb / "from-h2")])
    assert cp.returncode == 0 and (kahadb / "from-h2").exists()

    p1 = start_activemq_by_hand(h1, kahadb)
    try:
        secs = labmod.wait_for_port(h1.address, labmod.STOMP_PORT, 90, alive=lambda: p1.poll() is None,
                                    what="hand-started ActiveMQ on h1")
    except labmod.LabError as e:
        pytest.fail(f"{e}\n{labmod.tail(h1.brokers_dir / 'manual-activemq' / 'server.out')}", pytrace=False)
    print(f"\nhand-started ActiveMQ accepts STOMP after {secs:.1f} s")
    p2 = start_activemq_by_hand(h2, kahadb)
    deadline = time.monotonic() + 30
    while not h2.activemq_pids() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(3)  # h2 reaches the lock and waits
    assert p2.poll() is None, labmod.tail(h2.brokers_dir / "manual-activemq" / "server.out")
    assert h1.port_open(labmod.STOMP_PORT) and not h2.port_open(labmod.STOMP_PORT), "h2 should wait as the standby"
    assert len(h1.activemq_pids()) == 1 and len(h2.activemq_pids()) == 1, (h1.processes(), h2.processes())

    eps = [f"stomp://{h.address}:{labmod.STOMP_PORT}" for h in (h1, h2)]
    assert sc.login_error(eps[0], AMQ_USER, "wrong-Passw0rd-2024"), "a wrong password was accepted"
    assert sc.login_error(eps[0], AMQ_USER, AMQ_PASSWORD) == ""

    killed = {}
    half = threading.Event()

    def kill_active():
        half.wait(60)
        os.kill(h1.activemq_pids()[0], signal.SIGKILL)
        killed["at"] = time.monotonic()
        while sc.login_error(eps[1], AMQ_USER, AMQ_PASSWORD):
            if time.monotonic() - killed["at"] > 60:
                return
            time.sleep(0.05)
        killed["standby_secs"] = time.monotonic() - killed["at"]

    killer = threading.Thread(target=kill_active, daemon=True)
    killer.start()
    sender = sc.FailoverSender(eps, AMQ_USER, AMQ_PASSWORD, "selftest.failover", 1000,
                               on_progress=lambda n: half.set() if n >= 500 else None)
    sender.run()
    killer.join(70)
    assert "standby_secs" in killed, "the standby never accepted a login after the kill"
    o = sender.outage_after(killed["at"])
    assert o, "the sender did not notice the kill"
    seen = sender.outages_seen_from(killed["at"])
    assert len(sender.outages) == 1, f"the sender lost its connection other than by the kill: {seen}"
    assert o.endpoint == f"{h2.address}:{labmod.STOMP_PORT}", o
    got = sc.consume(eps, AMQ_USER, AMQ_PASSWORD, "selftest.failover", 1000, timeout=60, idle=1.0)
    t = sc.tally(sender.receipted, got)
    print(f"hand-started failover: standby accepts after {killed['standby_secs']:.1f} s, the client sent again "
          f"after {o.resent_at - killed['at']:.1f} s; {t}")
    assert t["receipted"] == 1000 and t["lost"] == 0 and t["unexpected"] == 0, t

    lab.down()
    for p in (p1, p2):
        p.wait(timeout=10)
    assert lab.leftovers() == [], lab.leftovers()
    assert not shared.exists()
