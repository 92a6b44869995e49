"""A publisher that keeps going through faults: numbered persistent messages with publisher
confirms through one endpoint (the load balancer's), reconnecting when the connection dies and
publishing the unconfirmed message again (at least once). It records which messages were
confirmed, which publishes failed unconfirmed, each confirm's latency and time, so a test can
count lost messages (confirmed but never consumed) and the seconds a client saw no service."""

from __future__ import annotations

import threading
import time

import pika
from pika.adapters.utils.connection_workflow import AMQPConnectorException

import amqp

# What a dying broker, a cut link or a moving virtual IP throws at a pika client (a connection
# attempt that times out raises a connector error that is not an AMQPError).
FAILURES = (pika.exceptions.AMQPError, AMQPConnectorException, OSError, AssertionError)


# A client built for failover gives up a connection whose sent bytes stay unacknowledged this
# long, rather than waiting for a retransmission (backing off 0.2, 0.4, 0.8, 1.6, 3.2 s ...) to
# reach the host that took a dead host's virtual IP over and be reset there. It did not make the
# outage through a dead virtual-IP host short when that host also led the queue: the publish then
# waits for a new quorum leader (see README).
USER_TIMEOUT_MS = 3000


def body(i: int) -> bytes:
    return f"ferrymq-msg-{i:06d}".encode()


def number(b: bytes) -> int:
    return int(b.decode().rsplit("-", 1)[1])


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


class ConfirmedPublisher:
    def __init__(self, endpoint: str, username: str, password: str, queue: str, total: int,
                 rate: float = 0.0, give_up_after: float = 120.0, first: int = 0):
        self.endpoint, self.username, self.password = endpoint, username, password
        self.queue, self.total, self.rate, self.give_up_after = queue, total, rate, give_up_after
        self.first = first
        self.confirmed: list[int] = []
        self.confirm_times: list[float] = []
        self.latencies: list[float] = []
        # Publishes that raised before their confirm: the message may or may not be stored.
        self.failed_publishes: list[int] = []
        self.reconnects = 0
        self.errors: list[str] = []
        self.started = 0.0
        self.finished = 0.0
        self.progress = threading.Condition()
        # Set to end the run before `total` (a stream kept going only while a fault is watched).
        self.stop = threading.Event()
        self._conn = None
        self._ch = None

    # -- connection ------------------------------------------------------------------------------

    def _connect(self) -> None:
        deadline = time.monotonic() + self.give_up_after
        while True:
            try:
                self._conn = amqp.connect(self.endpoint, self.username, self.password, heartbeat=4,
                                          socket_timeout=3, stack_timeout=6, blocked_connection_timeout=20,
                                          tcp_options={"TCP_USER_TIMEOUT": USER_TIMEOUT_MS})
                self._ch = self._conn.channel()
                self._ch.queue_declare(queue=self.queue, durable=True)
                self._ch.confirm_delivery()
                return
            except FAILURES as e:
                self._close()
                if time.monotonic() > deadline:
                    raise RuntimeError(f"no connection through {self.endpoint} for {self.give_up_after:.0f} s: {e!r}")
                time.sleep(0.1)

    def _close(self) -> None:
        try:
            if self._conn is not None and self._conn.is_open:
                self._conn.close()
        except FAILURES:
            pass
        self._conn = self._ch = None

    # -- publishing ------------------------------------------------------------------------------

    def run(self) -> "ConfirmedPublisher":
        props = pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent)
        self.started = time.monotonic()
        try:
            for i in range(self.first, self.first + self.total):
                if self.stop.is_set():
                    break
                if self.rate:
                    due = self.started + (i - self.first) / self.rate
                    time.sleep(max(0.0, due - time.monotonic()))
                while not self.stop.is_set():
                    if self._ch is None:
                        if self._conn is not None or self.confirmed or self.failed_publishes:
                            self.reconnects += 1
                        self._connect()
                    t0 = time.monotonic()
                    try:
                        self._ch.basic_publish(exchange="", routing_key=self.queue, body=body(i),
                                               properties=props, mandatory=True)
                    except FAILURES as e:
                        self.failed_publishes.append(i)
                        self.errors.append(f"{time.monotonic() - self.started:.1f}s #{i}: {type(e).__name__}: {e}")
                        self._close()
                        continue  # the same message again, on a new connection
                    now = time.monotonic()
                    with self.progress:
                        self.confirmed.append(i)
                        self.confirm_times.append(now)
                        self.latencies.append(now - t0)
                        self.progress.notify_all()
                    break
        finally:
            self._close()
            self.finished = time.monotonic()
            with self.progress:
                self.progress.notify_all()
        return self

    def wait_confirmed(self, count: int, timeout: float) -> bool:
        """Blocks until `count` messages are confirmed (or the publisher ended / timed out)."""
        deadline = time.monotonic() + timeout
        with self.progress:
            while len(self.confirmed) < count and not self.finished:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.progress.wait(left)
        return len(self.confirmed) >= count

    # -- figures ---------------------------------------------------------------------------------

    def longest_gap(self, after: float = 0.0, before: float = float("inf")) -> float:
        """The longest time without a confirm among the gaps that end after `after` and begin
        before `before` (monotonic times): the outage a client saw around a fault."""
        times = [self.started] + self.confirm_times
        gaps = [b - a for a, b in zip(times, times[1:]) if b >= after and a < before]
        return max(gaps, default=0.0)

    def rate_per_second(self) -> float:
        secs = (self.finished or time.monotonic()) - self.started
        return len(self.confirmed) / secs if secs > 0 else 0.0


class PipelinedRun:
    """One run of `publish_pipelined`: how many were confirmed, when it started and ended."""

    def __init__(self):
        self.confirmed = 0
        self.started = 0.0
        self.finished = 0.0
        self.error = ""

    def rate_per_second(self) -> float:
        secs = self.finished - self.started
        return self.confirmed / secs if secs > 0 else 0.0


def publish_pipelined(endpoint: str, username: str, password: str, queue: str, total: int, *,
                      window: int = 64, first: int = 0, timeout: float = 120.0) -> PipelinedRun:
    """Publishes `total` persistent messages with publisher confirms, keeping up to `window`
    unconfirmed, as a producer that cares about throughput does (Amazon MQ's own benchmarks use
    many producers for the same reason). One message at a time measures the round trip; with
    confirms in flight the round trip is overlapped and what is left is what the broker and the
    path carry. pika's SelectConnection, since its BlockingChannel waits for every confirm."""
    run = PipelinedRun()
    props = pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent)
    in_flight: set[int] = set()  # delivery tags not confirmed yet
    state = {"ch": None, "next": first, "tag": 0}

    def fill() -> None:
        ch = state["ch"]
        while len(in_flight) < window and state["next"] < first + total:
            ch.basic_publish(exchange="", routing_key=queue, body=body(state["next"]), properties=props)
            state["next"] += 1
            state["tag"] += 1
            in_flight.add(state["tag"])

    def on_confirm(frame) -> None:
        m = frame.method
        if isinstance(m, pika.spec.Basic.Nack):
            run.error = f"nack for delivery tag {m.delivery_tag}"
            conn.close()
            return
        tags = {t for t in in_flight if t <= m.delivery_tag} if m.multiple else {m.delivery_tag}
        in_flight.difference_update(tags)
        run.confirmed += len(tags)
        if run.confirmed >= total:
            run.finished = time.monotonic()
            conn.close()
        else:
            fill()

    def start(_frame) -> None:
        run.started = time.monotonic()
        fill()

    def on_channel(ch) -> None:
        state["ch"] = ch
        ch.confirm_delivery(ack_nack_callback=on_confirm,
                            callback=lambda _f: ch.queue_declare(queue=queue, durable=True, callback=start))

    def on_closed(c, reason) -> None:
        if run.confirmed < total and not run.error:
            run.error = f"connection closed after {run.confirmed} of {total} confirms: {reason!r}"
        c.ioloop.stop()

    def on_open_error(c, err) -> None:
        run.error = f"no connection to {endpoint}: {err!r}"
        c.ioloop.stop()

    def on_timeout() -> None:
        run.error = f"{run.confirmed} of {total} confirmed after {timeout:.0f} s"
        if conn.is_open:
            conn.close()
        else:
            conn.ioloop.stop()

    conn = pika.SelectConnection(amqp.params(endpoint, username, password),
                                 on_open_callback=lambda c: c.channel(on_open_callback=on_channel),
                                 on_open_error_callback=on_open_error, on_close_callback=on_closed)
    conn.ioloop.call_later(timeout, on_timeout)
    conn.ioloop.start()
    if not run.finished:
        run.finished = time.monotonic()
    return run
