"""STOMP helpers for the ActiveMQ tests, on stomp.py (a client this project did not write).

* ``parse_endpoint("stomp://10.79.0.12:61614")`` -> ``("10.79.0.12", 61614)``;
* ``login_error`` tries a login and returns '' or the broker's refusal;
* ``send_receipted`` sends persistent messages, each with a receipt, and waits for every receipt;
* ``consume`` drains a queue with client acknowledgements;
* ``FailoverSender`` sends numbered persistent messages with receipts to a list of endpoints and,
  when the connection is lost, reconnects through the list (stomp.py's own host list and
  back-off, the STOMP counterpart of OpenWire's ``failover:(...)``) and sends again what was not
  receipted. It records what a client sees of a failover: when the connection dropped, when it
  was connected again, when a send was receipted again.

Message accounting: a message counts as *sent* only once the broker receipted it (ActiveMQ
answers a SEND carrying a ``receipt`` header after the message is in its store). Messages in
flight when the connection dropped are sent again after reconnecting, so a consumer may see
some twice (duplicates, reported); a receipted message that no consumer sees is *lost* (must be 0).
"""

from __future__ import annotations

import dataclasses
import logging
import select
import socket
import ssl
import threading
import time
import urllib.parse
from typing import Callable, Iterable, Optional

import stomp
import stomp.connect
import stomp.transport
from stomp.exception import ConnectFailedException, StompException

import tls

HostPort = tuple[str, int]

# stomp.py warns on every refused connection attempt, which a failover makes by the dozen.
logging.getLogger("stomp.py").setLevel(logging.ERROR)


class OneCallAtATimeTransport(stomp.transport.Transport):
    """stomp.py 8.2's transport with every call into a TLS socket made under one lock.

    stomp.py 8.2 reads the socket in its receiver thread, blocked in ``SSL_read``, while the
    caller's thread writes frames with ``SSL_write``; OpenSSL objects are not safe for that. Under
    load a healthy ActiveMQ connection then broke about once in 10,000 receipted messages (an
    ``SSLEOFError`` on a send, or a read that ended the connection) while the broker kept serving:
    a client-side fault that the failover tests counted as an outage. stomp.py 9.0 moved all TLS
    I/O to one thread (jasonrbriggs/stomp.py#452) but no longer notices a TLS connection the
    broker closed (a killed broker went unseen until the sender's receipt timeout), so 8.2 stays.

    Here the receiver waits for the socket to become readable *outside* the lock (``select``,
    with the socket's own timeout, which stomp.py treats as a lost connection like before) and
    reads under it without blocking; sends and the closing TLS shutdown take the same lock (a
    send blocked by flow control is ended at the TCP level first). Plain sockets are left as
    stomp.py has them: no lock, so closing one still unblocks a send held back by the broker."""

    def __init__(self, *args, recv_bytes: int = 1024, **kwargs):
        super().__init__(*args, recv_bytes=recv_bytes, **kwargs)
        self._recv_bytes = recv_bytes
        self._tls_lock = threading.RLock()

    def send(self, encoded_frame):
        if not isinstance(self.socket, ssl.SSLSocket):
            return super().send(encoded_frame)
        with self._tls_lock:
            super().send(encoded_frame)

    def disconnect_socket(self):
        sock = self.socket
        if not isinstance(sock, ssl.SSLSocket):
            return super().disconnect_socket()
        if not self._tls_lock.acquire(timeout=1.0):
            # A send the broker holds back (producer flow control) keeps the lock: end the TCP
            # connection under it (no OpenSSL call), which fails that send and frees the lock.
            _end_tcp(sock)
            self._tls_lock.acquire()
        try:
            super().disconnect_socket()
        finally:
            self._tls_lock.release()

    def receive(self):
        sock = self.socket
        if not isinstance(sock, ssl.SSLSocket):
            return super().receive()
        timeout = sock.gettimeout()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            # Non-blocking under the lock: OpenSSL may consume a record that carries no data
            # (a TLS 1.3 session ticket) and want more, and waiting for that under the lock
            # would hold every send back.
            with self._tls_lock:
                sock.settimeout(0.0)
                try:
                    # Not stomp.py's receive(): before CONNECTED it turns any socket error,
                    # "no data yet" included, into the end of the connection.
                    return sock.recv(self._recv_bytes)
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                    pass
                finally:
                    try:
                        sock.settimeout(timeout)
                    except OSError:  # closed meanwhile
                        pass
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise TimeoutError(f"nothing received for {timeout} s")
            try:
                select.select([sock], [], [], left)
            except (OSError, ValueError):  # closed under us: the next read says so
                pass


# Every stomp.Connection12 made from here on (stomp.py's StompConnection12 builds its transport
# from this module-level name) gets the transport above.
stomp.connect.Transport = OneCallAtATimeTransport


def parse_endpoint(endpoint: str) -> HostPort:
    """``stomp+ssl://HOST:PORT`` or ``stomp://HOST:PORT`` (as in the broker's endpoints) -> (HOST, PORT)."""
    u = urllib.parse.urlsplit(endpoint)
    if u.scheme not in ("stomp", "stomp+ssl") or not u.hostname or not u.port:
        raise ValueError(f"not a stomp://HOST:PORT endpoint: {endpoint!r}")
    return u.hostname, u.port


def _host_ports(endpoints) -> list[HostPort]:
    if isinstance(endpoints, str):
        endpoints = [endpoints]
    return [parse_endpoint(e) if isinstance(e, str) else (e[0], int(e[1])) for e in endpoints]


def _tls_hosts(endpoints) -> list[HostPort]:
    """The endpoints to reach over TLS: every ``stomp+ssl://`` one; (host, port) pairs given
    without a scheme keep what an earlier call decided (see ``FailoverSender``)."""
    if isinstance(endpoints, str):
        endpoints = [endpoints]
    return [parse_endpoint(e) for e in endpoints if isinstance(e, str) and e.startswith("stomp+ssl://")]


class Listener(stomp.ConnectionListener):
    """Collects receipts, errors, messages and disconnects of one connection (thread-safe)."""

    def __init__(self):
        self.cond = threading.Condition()
        self.receipts: dict[str, float] = {}
        self.errors: list[str] = []
        self.messages: list[tuple[str, dict]] = []
        self.connected_at: Optional[float] = None
        self.disconnects = 0
        # When set, each message is acknowledged on this connection from the receiving thread:
        # over TLS a socket must not be written by one thread while another reads it (OpenSSL
        # objects are not safe for that), so acks go out from the thread that reads.
        self.ack_on: Optional[stomp.Connection] = None

    def on_connected(self, frame):
        with self.cond:
            self.connected_at = time.monotonic()
            self.cond.notify_all()

    def on_receipt(self, frame):
        with self.cond:
            self.receipts[frame.headers.get("receipt-id", "")] = time.monotonic()
            self.cond.notify_all()

    def on_error(self, frame):
        with self.cond:
            self.errors.append(f"{frame.headers.get('message', '')} {frame.body or ''}".strip())
            self.cond.notify_all()

    def on_message(self, frame):
        if self.ack_on is not None:
            self.ack_on.ack(frame.headers.get("ack") or frame.headers.get("message-id"))
        with self.cond:
            self.messages.append((frame.body, dict(frame.headers)))
            self.cond.notify_all()

    def on_disconnected(self):
        with self.cond:
            self.disconnects += 1
            self.cond.notify_all()


def connection(endpoints, *, attempts: int = 3, sleep_max: float = 1.0, timeout: float = 5.0,
               tls_hosts: Optional[list[HostPort]] = None) -> stomp.Connection:
    """A STOMP 1.2 connection over a list of endpoints: stomp.py tries them in order, `attempts`
    rounds, backing off from 0.1 s to `sleep_max`; `timeout` is the socket timeout.
    ``stomp+ssl://`` endpoints (or `tls_hosts`) are reached over TLS, verifying the broker's
    certificate and address with the CA given to ``tls.trust``."""
    conn = stomp.Connection12(
        _host_ports(endpoints),
        reconnect_sleep_initial=0.1,
        reconnect_sleep_increase=0.5,
        reconnect_sleep_jitter=0.1,
        reconnect_sleep_max=sleep_max,
        reconnect_attempts_max=attempts,
        timeout=timeout,
        heartbeats=(0, 0),
        auto_content_length=True,
    )
    secured = tls_hosts if tls_hosts is not None else _tls_hosts(endpoints)
    if secured:
        conn.set_ssl(for_hosts=secured, ca_certs=tls.ca_file())
    return conn


def connect(endpoints, username: str, password: str, *, attempts: int = 3, sleep_max: float = 1.0,
            client_id: Optional[str] = None, timeout: float = 5.0) -> tuple[stomp.Connection, Listener]:
    """Connects (waiting for CONNECTED); raises ConnectFailedException with the broker's reason.
    `timeout` is the socket timeout: stomp.py drops a connection that receives nothing for that
    long, so a producer the broker holds back (flow control) needs a longer one."""
    conn = connection(endpoints, attempts=attempts, sleep_max=sleep_max, timeout=timeout)
    listener = Listener()
    conn.set_listener("ferrymq", listener)
    headers = {"client-id": client_id} if client_id else {}
    try:
        conn.connect(username, password, wait=True, headers=headers)
    except (ConnectFailedException, StompException, OSError) as e:
        reason = "; ".join(listener.errors) or f"{type(e).__name__}: {e}"
        close(conn)
        raise ConnectFailedException(reason) from None
    return conn, listener


def cut(conn: stomp.Connection) -> None:
    """Ends the TCP connection under `conn` (no TLS close_notify, no lock): a send blocked in the
    socket fails and the receiver thread sees the end, whichever thread is stuck."""
    sock = getattr(conn.transport, "socket", None)
    if sock is not None:
        _end_tcp(sock)


def _end_tcp(sock: socket.socket) -> None:
    """shutdown(2) on the TCP socket itself, an SSLSocket too (no OpenSSL call, so no lock)."""
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass


def close(conn: stomp.Connection, timeout: float = 10.0) -> None:
    """DISCONNECT and wait for the receiver thread, for at most `timeout` seconds. A broker that
    holds this connection's frames (producer flow control) never answers the DISCONNECT, and
    stomp.py would wait for its receipt until the socket timeout; the connection is cut instead."""
    timer = threading.Timer(timeout, cut, [conn])
    timer.daemon = True
    timer.start()
    try:
        try:
            if conn.is_connected():
                conn.disconnect()
        except Exception:  # noqa: BLE001 - best effort on a connection that may be gone
            pass
        try:
            conn.transport.stop()
        except Exception:  # noqa: BLE001
            pass
    finally:
        timer.cancel()


def login_error(endpoint, username: str, password: str) -> str:
    """'' if username/password can log in (then logs out), else the refusal's text."""
    try:
        conn, _ = connect(endpoint, username, password, attempts=1)
    except ConnectFailedException as e:
        return str(e) or "ConnectFailedException"
    close(conn)
    return ""


def queue(name: str) -> str:
    return name if name.startswith("/") else f"/queue/{name}"


def _wait_receipts(listener: Listener, ids: Iterable[str], timeout: float) -> list[str]:
    """Waits until every receipt id arrived; returns the missing ones (on a timeout, an ERROR
    frame or a disconnect)."""
    ids = list(ids)
    deadline = time.monotonic() + timeout
    with listener.cond:
        disconnects, errors = listener.disconnects, len(listener.errors)
        while True:
            missing = [i for i in ids if i not in listener.receipts]
            if not missing or listener.disconnects != disconnects or len(listener.errors) != errors:
                return missing
            left = deadline - time.monotonic()
            if left <= 0:
                return missing
            listener.cond.wait(left)


def send_receipted(endpoints, username: str, password: str, dest: str, bodies: list[str],
                   window: int = 100, timeout: float = 30) -> float:
    """Sends persistent messages, a receipt on each, `window` in flight; returns the seconds.
    Raises if a receipt is missing (no reconnecting here: see FailoverSender)."""
    conn, listener = connect(endpoints, username, password)
    try:
        start = time.monotonic()
        for first in range(0, len(bodies), window):
            ids = []
            for i in range(first, min(first + window, len(bodies))):
                rid = f"r-{i}"
                conn.send(queue(dest), bodies[i], headers={"persistent": "true", "receipt": rid})
                ids.append(rid)
            missing = _wait_receipts(listener, ids, timeout)
            if missing:
                raise AssertionError(f"{len(missing)} receipts missing (first {missing[0]}); errors: {listener.errors}")
        return time.monotonic() - start
    finally:
        close(conn)


def consume(endpoints, username: str, password: str, dest: str, expected: int, timeout: float = 60,
            idle: float = 2.0, done: Optional[Callable[[list[str]], bool]] = None,
            stalled: float = 15.0) -> list[str]:
    """Consumes with client-individual acks until `expected` bodies arrived (or `done(bodies)` is
    true) and then `idle` seconds pass without another one (to see duplicates too); gives up
    after `timeout`, or after `stalled` seconds without a message while still short. Returns the
    bodies in arrival order."""
    # stomp.py ends a connection that receives nothing for its socket timeout: longer than the
    # waits below, or a quiet queue would end it before `stalled` says so.
    conn, listener = connect(endpoints, username, password, timeout=max(idle, stalled) + 5)
    listener.ack_on = conn
    got: list[str] = []
    try:
        conn.subscribe(queue(dest), id="1", ack="client-individual",
                       headers={"activemq.prefetchSize": "500"})
        deadline = time.monotonic() + timeout
        last = time.monotonic()
        seen = 0
        while True:
            with listener.cond:
                listener.cond.wait(0.2)
                new = listener.messages[seen:]
                seen = len(listener.messages)
            for body, _headers in new:
                got.append(body)  # acknowledged by the listener as it arrived
            now = time.monotonic()
            if new:
                last = now
            finished = done(got) if done else len(got) >= expected
            if (finished and now - last >= idle) or now > deadline or now - last >= stalled:
                break
            if listener.errors:
                raise AssertionError(f"consumer got an ERROR frame: {listener.errors}")
        conn.unsubscribe("1")
        return got
    finally:
        close(conn)


def tally(sent: Iterable[str], consumed: list[str]) -> dict:
    """Loss and duplicates: `sent` are the receipted bodies."""
    counts: dict[str, int] = {}
    for b in consumed:
        counts[b] = counts.get(b, 0) + 1
    sent = list(sent)
    lost = [b for b in sent if b not in counts]
    return {
        "receipted": len(sent),
        "consumed": len(consumed),
        "distinct_consumed": len(counts),
        "lost": len(lost),
        "lost_first": lost[:10],
        "duplicates": sum(c - 1 for c in counts.values() if c > 1),
        "unexpected": len([b for b in counts if b not in set(sent)]),
    }


@dataclasses.dataclass
class Outage:
    """One lost connection as the sender saw it (monotonic clock)."""

    dropped_at: float  # the sender noticed the drop (a send failed, a receipt wait broke off)
    reconnected_at: float = 0.0  # CONNECTED again (through the endpoint list)
    resent_at: float = 0.0  # the first SEND after reconnecting went out
    receipted_at: float = 0.0  # ... and its receipt came back
    endpoint: str = ""  # where it reconnected
    why: str = ""  # what ended the connection as the sender saw it
    lost_endpoint: str = ""  # where it was connected when it lost the connection


class FailoverSender:
    """Sends `count` persistent messages with receipts, reconnecting through `endpoints`.

    ``run()`` sends in windows of `window` messages; ``on_progress(receipted)`` is called after
    every window (the test kills a broker from there or from another thread). A window whose
    receipts do not all come back (connection lost, ERROR frame, `receipt_timeout`) is sent again
    after reconnecting, on whichever endpoint answers. Gives up after `give_up` seconds without
    a connection."""

    def __init__(self, endpoints, username: str, password: str, dest: str, count: int, *,
                 prefix: str = "m", window: int = 50, receipt_timeout: float = 10.0, give_up: float = 60.0,
                 on_progress: Optional[Callable[[int], None]] = None, pace: float = 0.0):
        self.endpoints = _host_ports(endpoints)
        self.tls_hosts = _tls_hosts(endpoints)
        self.username, self.password = username, password
        self.dest = queue(dest)
        self.count = count
        self.prefix = prefix
        self.window = window
        self.receipt_timeout = receipt_timeout
        self.give_up = give_up
        self.on_progress = on_progress
        self.pace = pace  # seconds to sleep between windows (to spread a short run over a kill)
        # Set to end the run before `count` (a stream kept going only while a change is watched).
        self.stop = threading.Event()
        self.receipted: list[str] = []  # bodies, in receipt order
        self.resent = 0  # messages sent a second time (their first send was not receipted)
        self.outages: list[Outage] = []
        self.connections = 0
        self.errors: list[str] = []
        self.started = self.finished = 0.0
        self._conn: Optional[stomp.Connection] = None
        self._listener: Optional[Listener] = None
        self._rid = 0

    def body(self, i: int) -> str:
        return f"{self.prefix}-{i:06d}"

    def bodies(self) -> list[str]:
        return [self.body(i) for i in range(self.count)]

    def _connect(self) -> str:
        deadline = time.monotonic() + self.give_up
        last = ""
        while True:
            conn = connection(self.endpoints, attempts=1, sleep_max=0.5, tls_hosts=self.tls_hosts)
            listener = Listener()
            conn.set_listener("ferrymq", listener)
            try:
                conn.connect(self.username, self.password, wait=True)
                self._conn, self._listener = conn, listener
                self.connections += 1
                host, port = conn.transport.current_host_and_port
                return f"{host}:{port}"
            except (ConnectFailedException, StompException, OSError) as e:
                last = "; ".join(listener.errors) or f"{type(e).__name__}: {e}"
                close(conn)
            if time.monotonic() > deadline:
                raise ConnectFailedException(f"no endpoint of {self.endpoints} answered for {self.give_up:.0f} s: {last}")
            time.sleep(0.1)

    def _endpoint(self) -> str:
        try:
            host, port = self._conn.transport.current_host_and_port
            return f"{host}:{port}"
        except (AttributeError, TypeError):
            return ""

    def outages_seen_from(self, at: float) -> str:
        """Every outage, timed from `at` (a kill): where it was connected, why it lost the
        connection and where it got one again."""
        return "; ".join(f"{o.dropped_at - at:+.2f} s on {o.lost_endpoint}: {o.why} -> {o.endpoint}"
                         for o in self.outages)

    def outage_after(self, at: float) -> Optional[Outage]:
        """The first outage that began at or after `at` (a kill), or None."""
        return next((o for o in self.outages if o.dropped_at >= at), None)

    def _drop(self) -> None:
        if self._conn is not None:
            close(self._conn)
        self._conn = self._listener = None

    def run(self) -> "FailoverSender":
        self.started = time.monotonic()
        self._connect()
        i = 0
        outage: Optional[Outage] = None
        while i < self.count and not self.stop.is_set():
            batch = list(range(i, min(i + self.window, self.count)))
            ids = {}
            ok = True
            why = ""
            try:
                for n in batch:
                    self._rid += 1
                    rid = f"r{self._rid}"
                    self._conn.send(self.dest, self.body(n), headers={"persistent": "true", "receipt": rid})
                    ids[rid] = n
                    if outage is not None and not outage.resent_at:
                        outage.resent_at = time.monotonic()
            except (StompException, OSError) as e:  # the socket went away under the send
                why = f"send: {type(e).__name__}: {e}"
                self.errors.append(why)
                ok = False
            if ok:
                disconnects = self._listener.disconnects
                missing = _wait_receipts(self._listener, ids, self.receipt_timeout)
                if missing:
                    ok = False
                    if self._listener.errors:
                        self.errors.extend(self._listener.errors)
                    why = (f"{len(missing)} of {len(ids)} receipts missing: "
                           + ("; ".join(self._listener.errors) or
                              ("disconnected" if self._listener.disconnects != disconnects
                               else f"none within {self.receipt_timeout:.0f} s")))
            if ok:
                if outage is not None and not outage.receipted_at:
                    outage.receipted_at = max(self._listener.receipts[r] for r in ids)
                    outage = None
                self.receipted.extend(self.body(n) for n in batch)
                i += len(batch)
                if self.on_progress:
                    self.on_progress(len(self.receipted))
                if self.pace:
                    time.sleep(self.pace)
                continue
            # Connection lost (or receipts never came): keep what was receipted, resend the rest.
            got = {ids[r] for r in ids if r in (self._listener.receipts if self._listener else {})}
            # Receipts arrive in order on one connection, so the receipted ones are a prefix of
            # the batch; the rest is sent again (a receipt out of order would only add a duplicate).
            prefix = 0
            while prefix < len(batch) and batch[prefix] in got:
                prefix += 1
            self.receipted.extend(self.body(n) for n in batch[:prefix])
            self.resent += len(batch) - prefix
            i += prefix
            if outage is None:
                outage = Outage(dropped_at=time.monotonic(), why=why, lost_endpoint=self._endpoint())
                self.outages.append(outage)
            self._drop()
            outage.endpoint = self._connect()
            outage.reconnected_at = time.monotonic()
        self._drop()
        self.finished = time.monotonic()
        return self
