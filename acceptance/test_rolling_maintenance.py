"""End to end: window-bound changes rolled out by the agents themselves, one host at a time, in a
maintenance window that opens about a minute after the change is applied (no fake clock).

ActiveMQ active/standby (hosts 2 and 3, shared directory), both agents given the engine bundles
as their source:

1. the pair runs 5.17.2 from its bundle;
2. ``engine_version = "5.17.6"`` without ``apply_immediately`` waits: ``pending_engine_version``
   and ``next_maintenance_window`` say so, nothing restarts;
3. when the window opens, while a STOMP client sends persistent messages with receipts and
   another consumes, both through the two instances (the failover list), the standby is
   upgraded first, then the active restarts (the controlled failover to the upgraded standby)
   and comes back as the standby on 5.17.6; every receipted message is consumed (0 lost).

RabbitMQ cluster (three hosts, the load balancer):

4. a first configuration revision (``heartbeat``), which takes a restart of every node, waits
   for the window as a pending change, and so does a new appliance image staged on every host
   with ``ferrymq-agent image stage`` (a copy of the agent under another version; an archive
   given with a wrong digest is refused and stages nothing);
5. when the window opens, while a publisher with confirms runs through the load balancer, the
   nodes go one at a time in instance order, each only once RabbitMQ says the previous one is
   back and stopping the next leaves every quorum queue a majority: the agent switches to the
   new image (re-executing itself, same process) and restarts its node once for both changes;
   never fewer than two nodes serve, and every confirmed message is consumed afterwards.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

import amqp
import lab as labmod
import stompclient as sc
from confirmed_publisher import ConfirmedPublisher, number
from steps import Steps, apply_until_running, broker_resource, java_home, seconds_until, wait_until, window_after
from test_activemq_active_standby import wait_healthy
from test_rabbitmq_cluster import APP, all_running, vip

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("FERRYMQ_BUNDLE_DIR", "/var/cache/ferrymq/bundles"))
AMQ_ADDRESS = "ferrymq_broker.activemq"
RMQ_ADDRESS = "ferrymq_broker.rabbitmq"
AMQ_QUEUE = "acceptance.rolling"
RMQ_QUEUE = "acceptance.rolling.cluster"
# The window opens at the first whole minute at least this far ahead of the apply.
WINDOW_LEAD = dt.timedelta(seconds=45)
# From the window's start to the last host done (restarts, the failover, health again).
ROLL_TIMEOUT = 300

S = Steps()


def applied_history(h, broker_id: str) -> list[str]:
    """The changes the host's agent records it applied (its applied.json)."""
    try:
        record = json.loads((h.brokers_dir / broker_id / "applied.json").read_text())
    except (OSError, ValueError):
        return []
    return [e.get("change", "") for e in record.get("history", [])]


def restart_agents(lab, hosts, bundle_source: str | None, rollback_after: int | None = None) -> None:
    """Restarts the hosts' agents (their engines keep running) with a bundle source and a
    roll-back deadline, or without."""
    env = {"FERRYMQ_BUNDLE_SOURCE": bundle_source,
           "FERRYMQ_ROLLBACK_AFTER": None if rollback_after is None else str(rollback_after)}
    for h in hosts:
        lab.kill_agent(h, signal.SIGTERM)
        os.environ.update({k: v for k, v in env.items() if v is not None})
        try:
            lab.start_agent(h)
        finally:
            for k in env:
                os.environ.pop(k, None)


class RestartWatch:
    """Watches the hosts while a roll-out runs, one thread per host sampling every 0.2 s: each
    host's engine process (`pid_of`, 0 for none), when it first changed, every pid seen, and when
    it stopped and started serving (`serves`).

    One thread per host, so each state change is timed on its own host: a single loop over the
    hosts takes seconds under load, long enough for one node to come back and the next to go
    between two of its reads, which would count both as down at once."""

    PERIOD = 0.2

    def __init__(self, hosts, pid_of, serves):
        self.hosts, self.pid_of, self.serves = hosts, pid_of, serves
        self.first = {h.name: pid_of(h.processes()) for h in hosts}
        self.changed_at: dict[str, float] = {}
        self.pids: dict[str, set[int]] = {h.name: {self.first[h.name]} for h in hosts}
        # Per host: (monotonic time, serving, why not) at each change, starting from serving.
        self.changes: dict[str, list[tuple[float, bool, str]]] = {h.name: [] for h in hosts}
        self.failed_reads = 0
        self.samples = 0
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._watch, args=(h,), daemon=True) for h in hosts]
        self.ended: float | None = None
        self._started = time.monotonic()

    def start(self) -> "RestartWatch":
        self._started = time.monotonic()
        for t in self._threads:
            t.start()
        return self

    def finish(self) -> None:
        self.stop.set()
        for t in self._threads:
            t.join(10)
        self.ended = time.monotonic()

    def _watch(self, h):
        serving_before = True
        while not self.stop.is_set():
            procs = h.processes()
            if not procs:
                # The agent always runs in the namespace: nothing at all is a failed read of
                # /proc (a process exiting mid-scan), not a host that is down.
                self.failed_reads += 1
                time.sleep(self.PERIOD)
                continue
            pid = self.pid_of(procs)
            serving = bool(pid) and self.serves(h)
            why = "" if serving else "not serving" if pid else "no engine process: " + (
                ", ".join(f"{p} {c} {cmd[:60]}" for p, c, cmd in procs if c in ("beam.smp", "java")) or "none")
            now = time.monotonic()
            with self._lock:
                if pid:
                    self.pids[h.name].add(pid)
                if pid and pid != self.first[h.name] and h.name not in self.changed_at:
                    self.changed_at[h.name] = now
                if serving != serving_before:
                    self.changes[h.name].append((now, serving, why))
                    serving_before = serving
                self.samples += 1
            time.sleep(self.PERIOD)

    def _timeline(self) -> list[tuple[float, str, bool, str]]:
        with self._lock:
            return sorted((t, name, serving, why) for name, cs in self.changes.items() for t, serving, why in cs)

    @property
    def fewest(self) -> int:
        """The fewest hosts serving at any one time."""
        up = fewest = len(self.hosts)
        for _t, _name, serving, _why in self._timeline():
            up += 1 if serving else -1
            fewest = min(fewest, up)
        return fewest

    def lows(self) -> str:
        """When more than one host was down at once, and which."""
        down: dict[str, str] = {}
        said = []
        start = self._started
        for t, name, serving, why in self._timeline():
            if serving:
                down.pop(name, None)
            else:
                down[name] = why
            if len(down) > 1:
                said.append(f"{t - start:.1f} s after the watch started: {dict(sorted(down.items()))}")
        timeline = [f"{t - start:.1f} {name} {'up' if serving else 'down: ' + why}"
                    for t, name, serving, why in self._timeline()]
        return "; ".join(said[:10]) + "\ntimeline (s after the watch started):\n" + "\n".join(timeline)

    def handovers(self) -> list[float]:
        """Seconds from each host serving again to the next host going down: how much room the
        rolling rules left between two hosts' turns."""
        margins, back = [], None
        for t, name, serving, _why in self._timeline():
            if serving:
                back = (t, name)
            elif back is not None and name != back[1]:
                margins.append(round(t - back[0], 2))
                back = None
        return margins

    def seconds_out(self) -> dict[str, float]:
        """Per host, how long it did not serve in all (until `finish`)."""
        end = self.ended or time.monotonic()
        out = {}
        with self._lock:
            for name, cs in self.changes.items():
                total, since = 0.0, None
                for t, serving, _why in cs:
                    if not serving:
                        since = t
                    elif since is not None:
                        total, since = total + t - since, None
                if since is not None:
                    total += end - since
                out[name] = round(total, 2)
        return out

    def order(self) -> list[str]:
        return sorted(self.changed_at, key=self.changed_at.get)

    def restarted_once(self) -> bool:
        return all(len(p) == 2 for p in self.pids.values())


# -- ActiveMQ active/standby: 5.17.2 -> 5.17.6 ------------------------------------------------------


def amq_vars(pair, shared, version: str, window: dict | None = None) -> dict:
    return {"broker_name": "acceptance-rolling-activemq", "hosts": [h.address for h in pair],
            "shared_volume": str(shared), "users": [APP], "engine_version": version,
            "maintenance_window": window, "apply_immediately": False}


def java(procs) -> int:
    """The ActiveMQ broker's pid among a host's processes, 0 without exactly one."""
    pids = [p for p, comm, cmd in procs if labmod.is_activemq_broker(comm, cmd)]
    return pids[0] if len(pids) == 1 else 0


def amq_version(h) -> str:
    """The ActiveMQ version h's java runs (from its bundle's path), "" without one java."""
    pids = h.activemq_pids()
    if len(pids) != 1:
        return ""
    home = java_home(pids[0])
    for v in ("5.17.2", "5.17.6"):
        if f"/bundles/activemq-{v}-" in home:
            return v
    return "debian-package" if home else ""


class StompConsumer:
    """Consumes `dest` through the failover list until stopped, reconnecting when a broker goes."""

    def __init__(self, endpoints, dest: str):
        self.endpoints, self.dest = endpoints, dest
        self.got: list[str] = []
        self.reconnects = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.stop.is_set():
            try:
                conn, listener = sc.connect(self.endpoints, APP["username"], APP["password"], attempts=1)
            except Exception:  # noqa: BLE001 - no broker serves yet: the list is tried again
                time.sleep(0.5)
                continue
            self.reconnects += 1
            # Each message is acknowledged by the listener as it arrives, and kept here at once.
            listener.ack_on = conn
            seen = 0
            try:
                conn.subscribe(sc.queue(self.dest), id="1", ack="client-individual",
                               headers={"activemq.prefetchSize": "100"})
                while not self.stop.is_set() and conn.is_connected():
                    with listener.cond:
                        listener.cond.wait(0.2)
                        new = listener.messages[seen:]
                        seen = len(listener.messages)
                    self.got += [body for body, _headers in new]
            except Exception:  # noqa: BLE001 - the broker went away: reconnect through the list
                pass
            finally:
                with listener.cond:
                    self.got += [body for body, _headers in listener.messages[seen:]]
                sc.close(conn)


def test_01_activemq_pair_runs_5_17_2_from_its_bundles(lab, host_pair, tf_factory):
    subprocess.run([str(REPO / "appliance/bundles/build")], check=True,
                   env={**os.environ, "FERRYMQ_BUNDLE_DIR": str(CACHE)})
    restart_agents(lab, host_pair, str(CACHE))
    S.s["agents_with_bundles"] = True
    tf = tf_factory("rolling-activemq", example="activemq-active-standby")
    shared = lab.shared_dir("efs-rolling")
    S.s.update(amq_tf=tf, shared=shared)
    tf.write_vars(amq_vars(host_pair, shared, "5.17.2"))
    _res, out = apply_until_running(tf, "rolling_activemq_apply_to_running_seconds", APP["password"])
    S.s["amq_id"] = out["broker_id"]
    active, standby, out, _ = wait_healthy(tf, host_pair)
    assert [amq_version(h) for h in host_pair] == ["5.17.2", "5.17.2"], [h.processes() for h in host_pair]
    S.s.update(active=active, standby=standby, stomp=out["stomp_endpoints"])
    S.ok("amq")


def test_02_activemq_upgrade_waits_for_the_window(host_pair):
    S.need("amq")
    tf = S.s["amq_tf"]
    pids = {h.name: h.activemq_pids() for h in host_pair}
    window, start = window_after(WINDOW_LEAD)
    tf.write_vars(amq_vars(host_pair, S.s["shared"], "5.17.6", window))
    res = tf.apply()
    assert "1 changed" in res.output, res.output
    values = broker_resource(tf, AMQ_ADDRESS)
    assert values["engine_version"] == "5.17.6", values["engine_version"]
    assert values["pending_engine_version"] == "5.17.6", values
    assert values["next_maintenance_window"] == start.strftime("%Y-%m-%dT%H:%M:00Z"), values
    assert seconds_until(start) > 5, "the apply took too long: the window is already open"
    assert {h.name: h.activemq_pids() for h in host_pair} == pids, "a waiting upgrade restarted a broker"
    assert [amq_version(h) for h in host_pair] == ["5.17.2", "5.17.2"]
    print(f"\nwindow {window}; opens in {seconds_until(start):.0f} s")
    S.s["amq_window"] = start
    S.ok("amq_pending")


def test_02b_a_step_that_does_not_serve_is_rolled_back_and_stops_the_roll_out(lab, host_pair, tmp_path):
    """The window opens while the hosts cannot get the 5.17.6 bundle (their source has only
    5.17.2): the standby tries, does not serve with it within the agents' roll-back deadline, puts
    5.17.2 back and records it; the active never goes. A new window (the "next" one) with the
    bundle back in the source then carries the upgrade out (test_03)."""
    S.need("amq_pending")
    tf = S.s["amq_tf"]
    active, standby = S.s["active"], S.s["standby"]
    pids = {h.name: java(h.processes()) for h in host_pair}
    source = tmp_path / "bundles-without-5.17.6"
    source.mkdir()
    shutil.copy(CACHE / "activemq-5.17.2.tar.gz", source)
    for h in host_pair:
        for old in (h.state_dir / "bundles").glob("activemq-5.17.6-*"):
            shutil.rmtree(old)
    deadline = 20
    restart_agents(lab, host_pair, str(source), rollback_after=deadline)
    wait_until(lambda: seconds_until(S.s["amq_window"]) <= 0, 150, "the window to open", interval=0.5)
    opened = time.monotonic()

    def rolled_back() -> bool:
        return any(c.startswith("rolled back: engine_version: 5.17.2 -> 5.17.6")
                   for c in applied_history(standby, S.s["amq_id"]))

    wait_until(rolled_back, 120, lambda: f"the standby's roll-back: {applied_history(standby, S.s['amq_id'])}")
    seconds = time.monotonic() - opened
    labmod.record_result("rolling_activemq_failed_step_rolled_back_seconds", round(seconds, 1))
    # Still in the window: nothing more happens on either host.
    time.sleep(8)
    assert not any("rolled back" in c or "5.17.6" in c for c in applied_history(active, S.s["amq_id"])), \
        applied_history(active, S.s["amq_id"])
    assert {h.name: java(h.processes()) for h in host_pair} == pids, "a broker restarted"
    assert [amq_version(h) for h in host_pair] == ["5.17.2", "5.17.2"]
    tf.run("refresh", "-no-color", "-input=false")
    values = broker_resource(tf, AMQ_ADDRESS)
    assert values["pending_engine_version"] == "5.17.6", values
    print(f"\nwindow open to the standby's roll-back: {seconds:.1f} s (deadline {deadline} s); "
          f"standby history {applied_history(standby, S.s['amq_id'])[-1:]}")
    # The next window, with the bundle back.
    restart_agents(lab, host_pair, str(CACHE))
    window, start = window_after(WINDOW_LEAD)
    tf.write_vars(amq_vars(host_pair, S.s["shared"], "5.17.6", window))
    tf.apply()
    assert seconds_until(start) > 5, "the apply took too long: the window is already open"
    S.s["amq_window"] = start
    S.ok("amq_rolled_back")


def test_03_the_window_upgrades_the_standby_first_and_loses_no_message(host_pair):
    S.need("amq_rolled_back")
    tf, eps = S.s["amq_tf"], S.s["stomp"]
    active, standby = S.s["active"], S.s["standby"]
    # "Serving" here is a broker process at all: the pair is down only when neither runs one.
    watch = RestartWatch(host_pair, java, lambda h: True)
    consumer = StompConsumer(eps, AMQ_QUEUE)
    sender = sc.FailoverSender(eps, APP["username"], APP["password"], AMQ_QUEUE, 1_000_000, prefix="roll",
                               window=20, pace=0.1, give_up=120)
    sending = threading.Thread(target=sender.run, daemon=True)
    watch.start()
    for t in (consumer.thread, sending):
        t.start()
    opened = None
    try:
        # Read just before the window opens: once it is open, the agent may already have stopped
        # the standby to upgrade it (no java to read, in one CI run).
        wait_until(lambda: seconds_until(S.s["amq_window"]) <= 1.5, 150, "the window to be about to open",
                   interval=0.2)
        assert [amq_version(h) for h in host_pair] == ["5.17.2", "5.17.2"], "upgraded before the window"
        wait_until(lambda: seconds_until(S.s["amq_window"]) <= 0, 10, "the window to open", interval=0.1)
        opened = time.monotonic()

        def done():
            return len(watch.changed_at) == 2 and all(amq_version(h) == "5.17.6" for h in host_pair)

        wait_until(done, ROLL_TIMEOUT, lambda: f"both hosts on 5.17.6: {[(h.name, amq_version(h)) for h in host_pair]}",
                   interval=1)
        new_active, new_standby, out, _ = wait_healthy(tf, host_pair, timeout=120)
        rolled = time.monotonic() - opened
        # A little more traffic on the upgraded pair before the client stops.
        before = len(sender.receipted)
        wait_until(lambda: len(sender.receipted) >= before + 100, 60, "sends receipted after the roll")
    finally:
        sender.stop.set()
        sending.join(150)
        watch.finish()
        consumer.stop.set()
        consumer.thread.join(60)
    assert not sending.is_alive(), "the sender did not stop"
    want = set(sender.receipted)
    got = consumer.got + sc.consume(eps, APP["username"], APP["password"], AMQ_QUEUE, 0, timeout=120, idle=1.0,
                                    done=lambda bodies: want.issubset(set(consumer.got) | set(bodies)))
    t = sc.tally(sender.receipted, got)
    first, second = watch.order()
    gap = watch.changed_at[second] - watch.changed_at[first]
    outage = max((o.receipted_at - o.dropped_at for o in sender.outages if o.receipted_at), default=0.0)
    print(f"\nwindow open to both upgraded and healthy: {rolled:.1f} s; upgraded {first} then {second} "
          f"({gap:.1f} s later); active now {new_active.name}; {t}; sender outages {len(sender.outages)} "
          f"(longest {outage:.1f} s), {sender.resent} sent twice; consumer reconnects {consumer.reconnects}; "
          f"fewest hosts running ActiveMQ: {watch.fewest} (of {watch.samples} samples)")
    labmod.record_result("rolling_activemq_window_open_to_upgraded_seconds", round(rolled, 1))
    labmod.record_result("rolling_activemq_lost_messages", t["lost"])
    labmod.record_result("rolling_activemq_receipted_messages", t["receipted"])
    labmod.record_result("rolling_activemq_longest_client_outage_seconds", round(outage, 2))
    for name, seconds in watch.seconds_out().items():
        labmod.record_result(f"rolling_activemq_{name}_seconds_out", seconds)
    assert first == standby.name, f"{first} was upgraded first, but {standby.name} was the standby"
    assert new_active.name == standby.name, "the upgraded standby did not take over from the active"
    assert t["receipted"] > 100 and t["lost"] == 0, f"{t['lost']} receipted messages lost: {t}"
    assert watch.fewest >= 1, "both hosts were without ActiveMQ at once"
    assert watch.restarted_once(), f"a host restarted more than once: {watch.pids}"
    values = broker_resource(tf, AMQ_ADDRESS)
    assert values["pending_engine_version"] == "" and values["pending_changes"] == [], values
    for h in host_pair:
        history = applied_history(h, S.s["amq_id"])
        assert any("engine_version: 5.17.2 -> 5.17.6 (maintenance window)" in c for c in history), history
    S.ok("amq_rolled")


def test_03b_reboot_restarts_the_standby_then_the_active_once_each(lab, host_pair):
    """`ferrymq-agent reboot` (Amazon MQ's RebootBroker) follows the same rolling rules."""
    S.need("amq_rolled")
    tf = S.s["amq_tf"]
    _active, standby, _out, _ = wait_healthy(tf, host_pair)
    watch = RestartWatch(host_pair, java, lambda h: True)
    watch.start()
    start = time.monotonic()
    try:
        res = subprocess.run([str(lab.agent_bin), "reboot", "--broker-id", S.s["amq_id"],
                              *[a for h in host_pair for a in ("--host", h.address)], "--timeout", "300"],
                             env={**os.environ, **lab.provider_env()}, capture_output=True, text=True, timeout=360)
        seconds = time.monotonic() - start
    finally:
        watch.finish()
    assert res.returncode == 0, res.stdout + res.stderr
    assert "done on 2 host(s)" in res.stdout, res.stdout
    print(f"\n{res.stdout.strip()}\nreboot of the pair: {seconds:.1f} s, order {watch.order()}, "
          f"fewest hosts running ActiveMQ {watch.fewest}")
    labmod.record_result("rolling_activemq_reboot_seconds", round(seconds, 1))
    assert watch.order() == [standby.name, next(h.name for h in host_pair if h is not standby)], watch.order()
    assert watch.restarted_once(), f"a host restarted more than once: {watch.pids}"
    assert watch.fewest >= 1, "both hosts were without ActiveMQ at once"
    wait_healthy(tf, host_pair, timeout=120)


def test_04_activemq_destroy(lab, host_pair):
    S.need("amq")
    res = S.s["amq_tf"].destroy()
    assert "Destroy complete!" in res.output, res.output
    for h in host_pair:
        assert h.activemq_pids() == [], h.processes()
    restart_agents(lab, host_pair, None)
    S.s["agents_with_bundles"] = False


# -- RabbitMQ cluster: a configuration revision rolled node by node ------------------------------------


def rmq_vars(lab, hosts, data: str | None = None, window: dict | None = None) -> dict:
    return {"broker_name": "acceptance-rolling-cluster",
            "instances": [{"host": h.address, "volume": h.loop} for h in hosts],
            "virtual_ip": vip(lab), "users": [APP], "configuration_data": data,
            "maintenance_window": window, "apply_immediately": False}


def beam(procs) -> int:
    """The RabbitMQ node's pid among a host's processes, 0 without exactly one node."""
    pids = [p for p, comm, cmd in procs if labmod.is_rabbitmq_node(comm, cmd)]
    return pids[0] if len(pids) == 1 else 0


def amqps_open(h) -> bool:
    """h's AMQPS port accepts connections; a connect that times out (a loaded machine) gets a
    second try, a refused one does not."""
    return h.port_open(5671, timeout=0.5) or h.port_open(5671, timeout=1.0)


@pytest.fixture(scope="module")
def hosts(lab):
    if len(lab.hosts) < 3:
        pytest.fail(f"a cluster needs a lab of 3 hosts, this one has {len(lab.hosts)}", pytrace=False)
    return lab.hosts[:3]


IMAGE_VERSION = "2026.11.2-acceptance"


def image_archive(lab, into: Path) -> tuple[Path, str]:
    """An appliance image archive (image.json and bin/ferrymq-agent, a copy of the lab's agent)
    and its SHA-256."""
    stage = into / "image"
    (stage / "bin").mkdir(parents=True, exist_ok=True)
    (stage / "image.json").write_text(json.dumps({"version": IMAGE_VERSION}))
    shutil.copy2(lab.agent_bin, stage / "bin" / "ferrymq-agent")
    archive = into / f"ferrymq-image-{IMAGE_VERSION}.tar.gz"
    subprocess.run(["tar", "-I", "gzip -1", "-cf", str(archive), "-C", str(stage), "image.json", "bin"], check=True)
    return archive, hashlib.sha256(archive.read_bytes()).hexdigest()


def stage_image(lab, h, archive: Path, sha256: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(lab.agent_bin), "image", "stage", "--state-dir", str(h.state_dir),
                           "--archive", str(archive), "--sha256", sha256],
                          capture_output=True, text=True, timeout=60)


def agent_exe(h) -> str:
    return os.readlink(f"/proc/{h.agent_pid}/exe")


def test_10_cluster_runs_without_a_configuration(lab, hosts, tf_factory):
    tf = tf_factory("rolling-cluster", example="rabbitmq-cluster")
    S.s["rmq_tf"] = tf
    tf.write_vars(rmq_vars(lab, hosts))
    _res, out = apply_until_running(tf, "rolling_cluster_apply_to_running_seconds", APP["password"])
    S.s.update(rmq_id=out["broker_id"], endpoint=out["load_balancer_endpoint"])
    wait_until(lambda: all_running(hosts), 120, "three nodes running")
    S.ok("cluster")


def test_11_a_configuration_revision_and_an_image_wait_for_the_window(lab, hosts, tmp_path):
    S.need("cluster")
    tf = S.s["rmq_tf"]
    beams = [beam(h.processes()) for h in hosts]
    agents = [(h.agent_pid, agent_exe(h)) for h in hosts]
    # Staged first (the window is days away): unpacking the image takes seconds of the lead.
    archive, sha = image_archive(lab, tmp_path)
    wrong = ("0" if sha[0] != "0" else "1") + sha[1:]
    refused = stage_image(lab, hosts[0], archive, wrong)
    assert refused.returncode != 0 and sha in refused.stderr and "nothing was staged" in refused.stderr, refused
    assert not (hosts[0].state_dir / "images" / IMAGE_VERSION).exists(), "a refused image was unpacked"
    for h in hosts:
        staged = stage_image(lab, h, archive, sha)
        assert staged.returncode == 0, staged
    window, start = window_after(WINDOW_LEAD)
    tf.write_vars(rmq_vars(lab, hosts, "heartbeat = 30\n", window))
    res = tf.apply()
    assert "1 added, 1 changed" in res.output, res.output
    want_image = f"image: factory -> {IMAGE_VERSION}"

    def both_pending():
        tf.apply("-refresh-only")
        return len(broker_resource(tf, RMQ_ADDRESS)["pending_changes"]) == 2

    wait_until(both_pending, 30, lambda: f"two pending changes: {broker_resource(tf, RMQ_ADDRESS)['pending_changes']}",
               interval=1)
    values = broker_resource(tf, RMQ_ADDRESS)
    pending = values["pending_changes"]
    config = [c for c in pending if c != want_image]
    assert want_image in pending and len(config) == 1 and config[0].startswith("configuration: none -> c-") \
        and config[0].endswith(" revision 1"), pending
    assert [(h.agent_pid, agent_exe(h)) for h in hosts] == agents, "a staged image was switched to before the window"
    assert values["next_maintenance_window"] == start.strftime("%Y-%m-%dT%H:%M:00Z"), values
    assert seconds_until(start) > 5, "the apply took too long: the window is already open"
    assert [beam(h.processes()) for h in hosts] == beams, "a waiting revision restarted a node"
    print(f"\nwindow {window}; opens in {seconds_until(start):.0f} s")
    S.s["rmq_window"] = start
    S.s["agent_pids"] = [pid for pid, _ in agents]
    S.ok("rmq_pending")


def test_12_nodes_restart_one_at_a_time_and_no_confirmed_message_is_lost(lab, hosts):
    S.need("rmq_pending")
    tf = S.s["rmq_tf"]
    watch = RestartWatch(hosts, beam, amqps_open)
    pub = ConfirmedPublisher(S.s["endpoint"], APP["username"], APP["password"], RMQ_QUEUE, 1_000_000, rate=100.0,
                             give_up_after=120)
    publishing = threading.Thread(target=pub.run, daemon=True)
    watch.start()
    publishing.start()
    opened = None
    try:
        assert pub.wait_confirmed(200, 60), f"publisher stalled before the window: {pub.errors[-3:]}"
        wait_until(lambda: seconds_until(S.s["rmq_window"]) <= 0, 150, "the window to open", interval=0.5)
        opened = time.monotonic()

        def done():
            return len(watch.changed_at) == 3 and all_running(hosts)

        wait_until(done, ROLL_TIMEOUT, lambda: f"three nodes restarted and running: restarted {sorted(watch.changed_at)}, "
                   f"fewest up {watch.fewest}", interval=1)
        rolled = time.monotonic() - opened
        before = len(pub.confirmed)
        assert pub.wait_confirmed(before + 200, 60), f"no progress after the roll: {pub.errors[-3:]}"
    finally:
        pub.stop.set()
        publishing.join(150)
        watch.finish()
    assert not publishing.is_alive(), "the publisher did not stop"
    got = amqp.consume(S.s["endpoint"], APP["username"], APP["password"], RMQ_QUEUE,
                       len(pub.confirmed) + len(pub.failed_publishes), timeout=30)
    ids = {number(b) for b in got}
    lost = sorted(set(pub.confirmed) - ids)
    order = watch.order()
    gap = pub.longest_gap(pub.started)
    print(f"\nwindow open to three nodes restarted and running: {rolled:.1f} s; order {order}; fewest nodes "
          f"serving {watch.fewest} (of {watch.samples} samples); confirmed {len(pub.confirmed)}, lost {len(lost)}, "
          f"unconfirmed {len(pub.failed_publishes)}, reconnects {pub.reconnects}, longest gap {gap:.2f} s; "
          f"seconds each node was out {watch.seconds_out()}; from one node back to the next down {watch.handovers()} s")
    labmod.record_result("rolling_cluster_window_open_to_rolled_seconds", round(rolled, 1))
    labmod.record_result("rolling_cluster_fewest_nodes_serving", watch.fewest)
    labmod.record_result("rolling_cluster_confirmed_lost", len(lost))
    labmod.record_result("rolling_cluster_longest_publish_gap_seconds", round(gap, 2))
    for name, seconds in watch.seconds_out().items():
        labmod.record_result(f"rolling_cluster_{name}_seconds_out", seconds)
    assert lost == [], f"{len(lost)} confirmed messages lost, e.g. {lost[:10]}"
    assert order == [h.name for h in hosts], f"nodes restarted in the order {order}"
    assert watch.fewest >= 2, f"only {watch.fewest} node(s) served at one point: {watch.lows()}"
    assert watch.restarted_once(), f"a node restarted more than once: {watch.pids}"
    # Each agent reports the change done once its node served with it (refreshed state).
    def nothing_pending():
        tf.apply("-refresh-only")
        return broker_resource(tf, RMQ_ADDRESS)["pending_changes"] == []

    wait_until(nothing_pending, 60, lambda: f"no pending change: {broker_resource(tf, RMQ_ADDRESS)['pending_changes']}",
               interval=2)
    image_agent = f"images/{IMAGE_VERSION}/bin/ferrymq-agent"
    for h, pid in zip(hosts, S.s["agent_pids"]):
        conf = (h.brokers_dir / S.s["rmq_id"] / "engine" / "rabbitmq.conf").read_text()
        assert "heartbeat = 30" in conf, f"{h.name}: {conf}"
        history = applied_history(h, S.s["rmq_id"])
        assert any(c.startswith("configuration: none -> c-") for c in history), history
        assert f"image: factory -> {IMAGE_VERSION} (maintenance window)" in history, history
        # The same agent process, re-executed from the new image.
        assert h.agent_pid == pid and agent_exe(h).endswith(image_agent), (h.name, h.agent_pid, agent_exe(h))
    S.ok("rmq_rolled")


def test_13_cluster_destroy(hosts):
    S.need("cluster")
    res = S.s["rmq_tf"].destroy()
    assert "Destroy complete!" in res.output, res.output
    for h in hosts:
        assert h.pids_named("beam.smp") == [], h.processes()


@pytest.fixture(scope="module", autouse=True)
def _agents_restored(lab):
    """Whatever fails, the lab's agents run without the bundle source afterwards."""
    yield
    if S.s.get("agents_with_bundles"):
        restart_agents(lab, lab.hosts[1:3], None)
