"""Storage end to end (the EBS equivalent): a foreign filesystem is refused untouched, a grown
device is grown online, a full volume stops RabbitMQ's publishers through its own disk
alarm without losing a confirmed message, until space is freed, and ActiveMQ's store limit (set
from the volume's size) holds its producers through flow control until consuming frees the
journal, again without losing a receipted message.

Each test brings its own small loop-device volume on host 1 (``lab.add_volume``) and removes
it again; the host's own volume is not used.
"""

from __future__ import annotations

import os
import re
import signal
import tempfile
import threading
import time
from pathlib import Path

import pika
import pytest

import amqp
import lab as labmod
import stompclient
from steps import Steps, blkid, blkid_value, wait_until

EXAMPLE = "rabbitmq-single-instance"
APP = {"username": "app", "password": "app-Passw0rd-2024!", "console_access": True}
QUEUE = "acceptance.disk-full"
MIB = 1 << 20

S = Steps()


def variables(host, volume: str, name: str) -> dict:
    return {"broker_name": name, "host": host.address, "volume": volume, "users": [APP]}



def flat(text: str) -> str:
    """Terraform wraps diagnostics: compare with whitespace collapsed."""
    return " ".join(text.split())


def fs_size(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_blocks * st.f_frsize


def fs_free(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def disk_free_limit(conf: Path) -> int:
    m = re.search(r"^disk_free_limit\.absolute = (\d+)$", conf.read_text(), re.M)
    assert m, f"no disk_free_limit.absolute in {conf}:\n{conf.read_text()}"
    return int(m.group(1))


# ---- a foreign filesystem is refused untouched ---------------------------------------------------


def test_foreign_filesystem_is_refused_untouched(lab, host, tf_factory):
    dev = lab.add_volume(host, "foreign", 64)
    mnt = Path(tempfile.mkdtemp(prefix="foreign-", dir=host.dir))
    try:
        # Someone else's data: ext4 labelled "data" with a file on it.
        labmod.run(["mkfs.ext4", "-q", "-L", "data", dev])
        labmod.run(["mount", dev, mnt])
        (mnt / "payroll.csv").write_text("alice,100\nbob,200\n")
        labmod.run(["umount", mnt])
        uuid = blkid_value(dev, "UUID")
        assert uuid, blkid(dev)

        tf = tf_factory("storage-foreign", example=EXAMPLE)
        tf.write_vars(variables(host, dev, "acceptance-foreign"))
        res = tf.apply(check=False)
        gone = tf.destroy(check=False)  # whatever the apply did, leave nothing behind

        assert res.rc == 1, f"expected the apply to fail, got exit {res.rc}:\n{res.output}"
        out = flat(res.output)
        assert dev in out and "ext4" in out and '"data"' in out, \
            f"the error does not name the device and what is on it:\n{res.output}"
        assert "refusing to format" in out, res.output
        assert "panic" not in out.lower(), res.output

        # The device is untouched: same filesystem, same label, the file still there.
        assert blkid_value(dev, "UUID") == uuid, f"{dev} was reformatted: {blkid(dev).stdout}"
        assert blkid_value(dev, "LABEL") == "data", blkid(dev).stdout
        assert not [mp for src, mp in labmod.mounts() if src == dev], f"{dev} was mounted by the agent"
        labmod.run(["mount", "-o", "ro", dev, mnt])
        try:
            assert (mnt / "payroll.csv").read_text() == "alice,100\nbob,200\n"
        finally:
            labmod.run(["umount", mnt])

        # Destroying the failed resource leaves nothing (and still does not touch the device).
        assert gone.rc == 0 and "Destroy complete!" in gone.output, gone.output
        assert tf.resources() == [], "resources left in the state after destroy"
        assert host.broker_dirs() == [], f"broker state left on the host: {host.broker_dirs()}"
        assert [c for p, c, _ in host.processes() if p != host.agent_pid] == [], host.processes()
        assert blkid_value(dev, "UUID") == uuid, "destroy wiped someone else's filesystem"
    finally:
        if any(mp == str(mnt) for _, mp in labmod.mounts()):
            labmod.run(["umount", mnt], check=False)
        mnt.rmdir()
        lab.remove_volume(dev)


def test_encryption_is_refused_where_the_kernel_has_no_dm_crypt(lab, host, tf_factory):
    """The acceptance hosts' kernel has no device-mapper: asking for encryption at rest must fail
    with that reason and leave the blank device blank (never plain data instead)."""
    dev = lab.add_volume(host, "encrypted", 64)
    try:
        tf = tf_factory("storage-encryption", example=EXAMPLE)
        tf.write_vars({**variables(host, dev, "acceptance-encrypted"),
                       "encryption_key_file": "/etc/ferrymq/keys/acceptance.key"})
        res = tf.apply(check=False)
        gone = tf.destroy(check=False)
        assert res.rc == 1, f"expected the apply to fail, got exit {res.rc}:\n{res.output}"
        out = flat(res.output)
        assert "device-mapper" in out and "refusing to store data unencrypted" in out, res.output
        assert blkid(dev).returncode == 2, f"{dev} was written to: {blkid(dev).stdout}"
        assert gone.rc == 0 and "Destroy complete!" in gone.output, gone.output
        assert host.broker_dirs() == [], f"broker state left on the host: {host.broker_dirs()}"
    finally:
        lab.remove_volume(dev)


# ---- RabbitMQ on a small volume: grow, then disk full ----------------------------------------------


def test_01_rabbitmq_on_a_small_volume(lab, host, tf_factory):
    dev = lab.add_volume(host, "small", 384)
    S.s["dev"] = dev
    tf = tf_factory("storage-rabbitmq", example=EXAMPLE)
    S.s["tf"] = tf
    tf.write_vars(variables(host, dev, "acceptance-storage"))
    tf.apply()
    out = tf.output()
    assert out.get("status") == "RUNNING", out
    S.s.update(out)
    bdir = host.brokers_dir / out["broker_id"]
    S.s["volume"] = bdir / "volume"
    S.s["conf"] = bdir / "engine" / "rabbitmq.conf"
    assert (dev, str(S.s["volume"])) in labmod.mounts()
    # 384 MiB: a tenth is under RabbitMQ's 50 MB floor.
    assert disk_free_limit(S.s["conf"]) == 50_000_000
    S.ok("apply")


def test_02_grown_device_is_grown_online(lab, host):
    S.need("apply")
    dev, vol = S.s["dev"], S.s["volume"]
    uuid = blkid_value(dev, "UUID")
    before = fs_size(vol)
    assert before < 400 * MIB, before
    start = time.monotonic()
    lab.grow_volume(dev, 768)
    deadline = time.monotonic() + 15
    while fs_size(vol) <= 700 * MIB and time.monotonic() < deadline:
        time.sleep(0.5)
    how = "online"
    if fs_size(vol) <= 700 * MIB:
        # Online ext4 growth needs CAP_SYS_RESOURCE, which some sandboxes (these test machines)
        # do not grant even to root: the agent must say so, keep the broker running, and grow
        # the volume on its next mount. Reboot the host's broker: agent and engine killed, the
        # volume unmounted, the agent started again.
        assert "CAP_SYS_RESOURCE" in host.agent_log_tail(200), \
            f"the volume was not grown online and the agent does not say why:\n{host.agent_log_tail(40)}"
        assert amqp.login_error(S.s["amqp_endpoint"], APP["username"], APP["password"]) == "", \
            "the broker stopped serving because its volume could not be grown online"
        how = "at the next mount"
        lab.kill_agent(host)
        for p in host.pids():
            if p != host.agent_pid and labmod.pid_alive(p):
                os.kill(p, signal.SIGKILL)
        wait_until(lambda: not [p for p in host.pids() if labmod.pid_alive(p)], 20,
                   lambda: f"the engine to die: {host.processes()}")
        # A killed engine's last threads may still hold the mount for a moment: retry, bounded.
        wait_until(lambda: labmod.run(["umount", vol], check=False).returncode == 0, 20,
                   lambda: f"{vol} to unmount: {labmod.run(['umount', vol], check=False).stderr.strip()}",
                   interval=0.5)
        lab.start_agent(host)
        wait_until(lambda: any(mp == str(vol) for _, mp in labmod.mounts()) and fs_size(vol) > 700 * MIB, 60,
                   lambda: f"{vol} to be mounted again and grown past 700 MiB")
    secs = time.monotonic() - start
    print(f"\nfilesystem grown {how} {before // MIB} -> {fs_size(vol) // MIB} MiB in {secs:.1f} s")
    labmod.record_result("storage_grow_seconds", round(secs, 2))
    assert blkid_value(dev, "UUID") == uuid, "the volume was reformatted instead of grown"
    # The disk limit follows the new size (a tenth of it, over 50 MB now); the engine restarts
    # with it and serves again.
    wait_until(lambda: disk_free_limit(S.s["conf"]) == fs_size(vol) // 10, 30,
               lambda: f"disk_free_limit to become {fs_size(vol) // 10}: {disk_free_limit(S.s['conf'])}")
    wait_until(lambda: amqp.login_error(S.s["amqp_endpoint"], APP["username"], APP["password"]) == "", 90,
               "RabbitMQ to serve again after the grow")
    res = S.s["tf"].apply()
    assert "0 added, 0 changed, 0 destroyed" in res.output, res.output
    S.ok("grow")


class Publisher(threading.Thread):
    """Publishes persistent messages with confirms, one at a time (~100/s), and records which
    were confirmed and when the broker blocked / unblocked the connection."""

    def __init__(self, endpoint: str):
        super().__init__(daemon=True)
        self.endpoint = endpoint
        self.confirmed: list[bytes] = []
        self.blocked_at: float | None = None
        self.unblocked_at: float | None = None
        self.error: BaseException | None = None
        self.stop = threading.Event()

    def run(self):
        try:
            conn = amqp.connect(self.endpoint, APP["username"], APP["password"], blocked_connection_timeout=240)
            conn.add_on_connection_blocked_callback(lambda *_: setattr(self, "blocked_at", time.monotonic()))
            conn.add_on_connection_unblocked_callback(lambda *_: setattr(self, "unblocked_at", time.monotonic()))
            ch = conn.channel()
            ch.queue_declare(queue=QUEUE, durable=True)
            ch.confirm_delivery()
            props = pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent)
            i = 0
            while not self.stop.is_set():
                body = f"disk-full-{i:07d}".encode() + b"." * 200
                ch.basic_publish(exchange="", routing_key=QUEUE, body=body, properties=props, mandatory=True)
                self.confirmed.append(body)
                i += 1
                time.sleep(0.01)
            conn.close()
        except BaseException as e:  # reported by the test
            self.error = e


def test_03_disk_full_blocks_publishers_without_loss_and_they_resume(host):
    S.need("grow")
    vol, ep = S.s["volume"], S.s["amqp_endpoint"]
    limit = disk_free_limit(S.s["conf"])
    fill = vol / "fill.img"
    pub = Publisher(ep)
    pub.start()
    try:
        wait_until(lambda: len(pub.confirmed) >= 200 or pub.error, 60, "200 confirmed messages before the fill")
        assert pub.error is None, f"publisher failed before the disk filled: {pub.error!r}"

        # Fill the volume until less than half the limit is free.
        size = fs_free(vol) - limit // 2
        labmod.run(["fallocate", "-l", str(size), fill])
        filled_at = time.monotonic()
        print(f"\nfilled {vol}: {fs_free(vol) // MIB} MiB free, limit {limit // MIB} MiB")

        # The disk alarm: connection.blocked, or at least confirms that stop coming.
        def stalled():
            if pub.error or pub.blocked_at:
                return True
            n = len(pub.confirmed)
            time.sleep(3)
            return len(pub.confirmed) == n

        wait_until(stalled, 60, "the publisher to be blocked by RabbitMQ's disk alarm")
        assert pub.error is None, f"publisher failed instead of being blocked: {pub.error!r}"
        block_secs = (pub.blocked_at or time.monotonic()) - filled_at
        print(f"publisher blocked {block_secs:.1f} s after the fill (connection.blocked: {pub.blocked_at is not None})")
        labmod.record_result("rabbitmq_disk_alarm_block_seconds", round(block_secs, 2))
        n_blocked = len(pub.confirmed)
        time.sleep(5)
        assert len(pub.confirmed) <= n_blocked + 1, \
            f"publishing went on with the disk full: {n_blocked} -> {len(pub.confirmed)} confirmed"
        # pika's BlockingConnection delivers connection.blocked only between its own calls, so
        # the publisher, waiting for a confirm, may not see it: the broker's log says why.
        alarm_log = "\n".join(p.read_text(errors="replace") for p in (vol / "rabbitmq" / "log").glob("*.log"))
        assert "disk resource limit alarm set" in alarm_log, \
            "confirms stopped but RabbitMQ logged no disk alarm"

        # Free the space: publishing resumes.
        fill.unlink()
        freed_at = time.monotonic()
        wait_until(lambda: len(pub.confirmed) >= n_blocked + 100 or pub.error, 90,
                   lambda: f"publishing to resume after freeing space ({len(pub.confirmed)} confirmed, "
                           f"{n_blocked} when blocked, error {pub.error!r})")
        assert pub.error is None, f"publisher failed after space was freed: {pub.error!r}"
        resume_secs = time.monotonic() - freed_at
        print(f"publishing resumed {resume_secs:.1f} s after freeing space")
        labmod.record_result("rabbitmq_disk_alarm_resume_seconds", round(resume_secs, 2))
    finally:
        pub.stop.set()
        if fill.exists():
            fill.unlink()
        pub.join(timeout=60)
    assert not pub.is_alive(), "the publisher did not stop"
    assert pub.error is None, f"publisher failed: {pub.error!r}"

    # Every confirmed message is there.
    confirmed = list(pub.confirmed)
    got = amqp.consume(ep, APP["username"], APP["password"], QUEUE, len(confirmed), timeout=60)
    lost = set(confirmed) - set(got)
    print(f"{len(confirmed)} confirmed, {len(got)} consumed, {len(lost)} lost")
    labmod.record_result("rabbitmq_disk_full_messages_lost", len(lost))
    assert not lost, f"{len(lost)} confirmed messages lost, e.g. {sorted(lost)[:3]}"
    amqp.delete_queue(ep, APP["username"], APP["password"], QUEUE)
    S.ok("disk_full")


def destroy_leaves_nothing(lab, host, steps: Steps, first_test: str) -> None:
    """Destroys the steps' broker: only the agent is left, the volume is unmounted and blank
    (then detached), no broker state remains."""
    dev = steps.s.get("dev")
    if not dev:
        pytest.fail(f"no volume was made ({first_test} failed before add_volume)", pytrace=False)
    try:
        if "tf" in steps.s:
            res = steps.s["tf"].destroy()
            assert "Destroy complete!" in res.output, res.output
        wait_until(lambda: not [c for p, c, _ in host.processes() if p != host.agent_pid], 60,
                   lambda: f"only the agent left in {host.netns}: {host.processes()}")
        assert not [mp for src, mp in labmod.mounts() if src == dev], "volume still mounted"
        assert blkid(dev).returncode == 2, f"{dev} still carries a signature: {blkid(dev).stdout}"
        assert host.broker_dirs() == [], host.broker_dirs()
    finally:
        if not [mp for src, mp in labmod.mounts() if src == dev]:
            lab.remove_volume(dev)  # else the lab's teardown unmounts and detaches it


def test_04_destroy_leaves_nothing(lab, host):
    destroy_leaves_nothing(lab, host, S, "test_01")


# ---- ActiveMQ: the store limit set from the volume blocks producers, without loss ------------------

AMQ_EXAMPLE = "activemq-single-instance"
AMQ_QUEUE = "acceptance.store-full"
# 64 KiB bodies: the store limit of a 256 MiB volume is reached after ~2,200 messages.
AMQ_PAD = 64 * 1024
AMQ_WINDOW = 4

A = Steps()


class StorePublisher(threading.Thread):
    """Sends numbered persistent 64 KiB messages over STOMP, each with a receipt, AMQ_WINDOW in
    flight. A message counts as sent once receipted (ActiveMQ receipts a persistent SEND once it
    is in the store). When producer flow control holds the sends, receipts simply stop coming."""

    def __init__(self, endpoint: str):
        super().__init__(daemon=True)
        self.endpoint = endpoint
        self.receipted: list[str] = []
        # Sends still held by flow control when the test stopped the producer: never promised
        # (no receipt), so they may or may not be stored.
        self.unreceipted: list[str] = []
        self.last_receipt_at = time.monotonic()
        self.error: BaseException | None = None
        self.stop = threading.Event()
        self._pending: dict[str, str] = {}
        self._conn = None
        self._cut = False

    def halt(self) -> None:
        """Stops the producer. A send the broker holds can block this thread inside the socket
        (flow control stops ActiveMQ reading it), where no flag reaches it: after 60 s the
        connection is cut, and what was in flight counts as unreceipted."""
        self.stop.set()
        self.join(timeout=60)
        if self.is_alive() and self._conn is not None:
            self._cut = True
            stompclient.cut(self._conn)
            self.join(timeout=30)

    def run(self):
        pending = self._pending
        try:
            # Receipts stop for as long as flow control holds the producer: a socket timeout
            # shorter than that would drop the connection (stomp.py's default is 5 s).
            conn, listener = stompclient.connect(self.endpoint, APP["username"], APP["password"], timeout=600)
            self._conn = conn
            i = 0
            while not self.stop.is_set() or pending:
                if len(pending) < AMQ_WINDOW and not self.stop.is_set():
                    rid = f"r-{i}"
                    body = f"store-{i:07d}." + "x" * AMQ_PAD
                    pending[rid] = body
                    conn.send(stompclient.queue(AMQ_QUEUE), body, headers={"persistent": "true", "receipt": rid})
                    i += 1
                    continue
                with listener.cond:
                    listener.cond.wait(0.5)
                    done = [r for r in pending if r in listener.receipts]
                    errors = list(listener.errors)
                    dropped = listener.disconnects
                for r in done:
                    self.receipted.append(pending.pop(r))
                    self.last_receipt_at = time.monotonic()
                if errors:
                    raise RuntimeError(f"ERROR frame: {errors}")
                if dropped:
                    raise RuntimeError(f"connection lost with {len(pending)} sends not receipted")
                if self.stop.is_set() and time.monotonic() - self.last_receipt_at > 30:
                    # The store filled up again after the producer resumed: flow control holds
                    # these until someone consumes, which happens after the producer stops.
                    break
            self.unreceipted = list(pending.values())
            stompclient.close(conn)
        except BaseException as e:  # reported by the test
            if self._cut:
                self.unreceipted = list(pending.values())
            else:
                self.error = e


def activemq_store_limit_mib(xml: Path) -> int:
    m = re.search(r'<storeUsage limit="(\d+) mb"/>', xml.read_text())
    assert m, f"no storeUsage limit in {xml}:\n{xml.read_text()}"
    return int(m.group(1))


def test_05_activemq_on_a_small_volume_has_a_store_limit_from_its_size(lab, host, tf_factory):
    dev = lab.add_volume(host, "amqstore", 256)
    A.s["dev"] = dev
    tf = tf_factory("storage-activemq", example=AMQ_EXAMPLE)
    A.s["tf"] = tf
    # Plain listeners too: the held-back producer of test_06 uses plain STOMP, since stomp.py sends
    # and reads one TLS socket from two threads, which lost the connection once flow control held
    # the sends (the TLS listeners themselves are tested in test_tls_users.py).
    tf.write_vars({"broker_name": "acceptance-store-full", "host": host.address, "volume": dev, "users": [APP],
                   "plain_listeners": True})
    tf.apply()
    out = tf.output()
    assert out.get("status") == "RUNNING", out
    A.s.update(out)
    bdir = host.brokers_dir / out["broker_id"]
    A.s["volume"] = vol = bdir / "volume"
    A.s["log"] = bdir / "engine" / "activemq.log"
    limit = activemq_store_limit_mib(bdir / "engine" / "activemq.xml")
    # 80 % of the filesystem less two journal files (64 MiB), at least a quarter of it.
    size_mib = fs_size(vol) // MIB
    want = max(size_mib * 8 // 10 - 64, size_mib // 4)
    assert abs(limit - want) <= 1, f"store limit {limit} MiB on a {size_mib} MiB filesystem, want ~{want}"
    assert limit * MIB < fs_size(vol)
    A.s["limit_mib"] = limit
    A.ok("apply")


def test_06_store_limit_blocks_producers_and_consuming_resumes_them_without_loss(host):
    A.need("apply")
    vol, log = A.s["volume"], A.s["log"]
    ep = A.s["stomp_plain_endpoint"]
    assert ep and ep.startswith("stomp://"), A.s
    java = host.activemq_pids()
    pub = StorePublisher(ep)
    pub.start()
    try:
        # Send until producer flow control holds the sends: no receipt for 10 s.
        start = time.monotonic()
        wait_until(lambda: pub.error or (len(pub.receipted) > 100 and time.monotonic() - pub.last_receipt_at > 10),
                   300, lambda: f"the producer to be blocked ({len(pub.receipted)} receipted)", interval=1)
        assert pub.error is None, f"the producer failed instead of being blocked: {pub.error!r}"
        n_blocked = len(pub.receipted)
        stored_mib = n_blocked * AMQ_PAD // MIB
        print(f"\nproducer blocked after {n_blocked} receipted messages (~{stored_mib} MiB, store limit "
              f"{A.s['limit_mib']} MiB) in {time.monotonic() - start:.1f} s; {fs_free(vol) // MIB} MiB free on the volume")
        labmod.record_result("activemq_store_full_messages_before_block", n_blocked)
        assert "Persistent store is Full" in log.read_text(errors="replace"), \
            f"receipts stopped but ActiveMQ logged no store-full flow control:\n{labmod.tail(log)}"
        assert fs_free(vol) > 16 * MIB, f"the volume itself filled up: {fs_free(vol)} bytes free"
        assert host.activemq_pids() == java, "the broker restarted or died"

        # Consume (and acknowledge) the older half: KahaDB drops the journal files no message
        # needs any more (its cleanup runs every 30 s) and the producer resumes.
        half = n_blocked // 2
        first = stompclient.consume(ep, APP["username"], APP["password"], AMQ_QUEUE, half, timeout=120,
                                    idle=0, done=lambda got: len(got) >= half)
        assert len(first) >= half, f"consumed only {len(first)} of {half}"
        freed_at = time.monotonic()
        wait_until(lambda: pub.error or len(pub.receipted) >= n_blocked + 100, 180,
                   lambda: f"the producer to resume ({len(pub.receipted)} receipted, {n_blocked} when blocked)",
                   interval=1)
        assert pub.error is None, f"the producer failed after space was freed: {pub.error!r}"
        resume_secs = time.monotonic() - freed_at
        print(f"producer resumed {resume_secs:.1f} s after consuming {len(first)} messages")
        labmod.record_result("activemq_store_full_resume_seconds", round(resume_secs, 2))
    finally:
        pub.halt()
    assert not pub.is_alive(), "the producer did not stop"
    assert pub.error is None, f"producer failed: {pub.error!r}"

    # Every receipted message is there, exactly once across both consumers.
    sent = list(pub.receipted)
    held = set(pub.unreceipted)
    print(f"{len(held)} sends still held by flow control when the producer stopped")
    # A send still held by flow control at the stop may have been stored since: not unexpected,
    # and waited for only as long as `idle` after the receipted ones.
    rest = stompclient.consume(ep, APP["username"], APP["password"], AMQ_QUEUE, len(sent) - len(first),
                               timeout=300, idle=5)
    t = stompclient.tally(sent, [b for b in first + rest if b not in held])
    print(f"{t['receipted']} receipted, {t['consumed']} consumed, {t['lost']} lost, {t['duplicates']} duplicates")
    labmod.record_result("activemq_store_full_messages_lost", t["lost"])
    assert t["lost"] == 0, f"{t['lost']} receipted messages lost, e.g. {[b[:14] for b in t['lost_first']]}"
    assert t["unexpected"] == 0, t
    A.ok("store_full")


def test_07_activemq_destroy_leaves_nothing(lab, host):
    destroy_leaves_nothing(lab, host, A, "test_05")
