"""Small AMQP 0-9-1 and management-API helpers (pika, urllib) for the tests and the demo."""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.parse
import urllib.request

import pika

import tls


def params(endpoint: str, username: str, password: str, **kw) -> pika.ConnectionParameters:
    """Connection parameters for an ``amqps://HOST:PORT`` endpoint (as in terraform output):
    TLS verifying the broker with the CA given to ``tls.trust``; ``amqp://`` (plain listeners,
    or the lab's own engines) without TLS."""
    u = urllib.parse.urlsplit(endpoint)
    if u.scheme not in ("amqp", "amqps") or not u.hostname:
        raise ValueError(f"not an amqp(s):// endpoint: {endpoint!r}")
    kw.setdefault("connection_attempts", 1)
    kw.setdefault("socket_timeout", 10)
    kw.setdefault("blocked_connection_timeout", 30)
    if u.scheme == "amqps":
        kw.setdefault("ssl_options", pika.SSLOptions(tls.context(), server_hostname=u.hostname))
    default_port = 5671 if u.scheme == "amqps" else 5672
    return pika.ConnectionParameters(
        host=u.hostname, port=u.port or default_port, credentials=pika.PlainCredentials(username, password), **kw
    )


def connect(endpoint: str, username: str, password: str, **kw) -> pika.BlockingConnection:
    return pika.BlockingConnection(params(endpoint, username, password, **kw))


def login_error(endpoint: str, username: str, password: str) -> str:
    """Tries to log in; returns '' on success (connection closed again), else the error text."""
    try:
        conn = connect(endpoint, username, password)
    except pika.exceptions.AMQPError as e:
        return f"{type(e).__name__}: {e}" or type(e).__name__
    conn.close()
    return ""


def publish_confirmed(endpoint: str, username: str, password: str, queue: str, bodies: list[bytes]) -> float:
    """Publishes persistent messages with publisher confirms to a durable queue; returns seconds.

    pika's BlockingChannel with confirm_delivery() waits for each broker ack and raises on a nack
    or an unroutable message (mandatory), so every body returned is confirmed."""
    conn = connect(endpoint, username, password)
    try:
        ch = conn.channel()
        ch.queue_declare(queue=queue, durable=True)
        ch.confirm_delivery()
        props = pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent, content_type="application/octet-stream")
        start = time.monotonic()
        for body in bodies:
            ch.basic_publish(exchange="", routing_key=queue, body=body, properties=props, mandatory=True)
        return time.monotonic() - start
    finally:
        conn.close()


def consume(endpoint: str, username: str, password: str, queue: str, expected: int, timeout: float = 60) -> list[bytes]:
    """Consumes (with acks) until `expected` messages arrived or `timeout` passed; returns the bodies."""
    conn = connect(endpoint, username, password)
    got: list[bytes] = []
    try:
        ch = conn.channel()
        ch.basic_qos(prefetch_count=200)
        for method, _props, body in ch.consume(queue, auto_ack=False, inactivity_timeout=timeout):
            if method is None:  # inactivity timeout
                break
            got.append(body)
            ch.basic_ack(method.delivery_tag)
            if len(got) >= expected:
                break
        ch.cancel()
    finally:
        conn.close()
    return got


def queue_depth(endpoint: str, username: str, password: str, queue: str) -> int:
    conn = connect(endpoint, username, password)
    try:
        return conn.channel().queue_declare(queue=queue, durable=True, passive=True).method.message_count
    finally:
        conn.close()


def delete_queue(endpoint: str, username: str, password: str, queue: str) -> None:
    conn = connect(endpoint, username, password)
    try:
        conn.channel().queue_delete(queue=queue)
    finally:
        conn.close()


def management_get(console_url: str, path: str, username: str, password: str, timeout: float = 10) -> tuple[int, dict]:
    """GET on the RabbitMQ management API; returns (HTTP status, decoded JSON body)."""
    return management_request(console_url, "GET", path, username, password, timeout=timeout)


def management_request(console_url: str, method: str, path: str, username: str, password: str,
                       body: dict | None = None, timeout: float = 10) -> tuple[int, dict]:
    """A call to the RabbitMQ management API; returns (HTTP status, decoded JSON body). An
    https:// console is verified with the CA given to ``tls.trust``."""
    auth = base64.b64encode(f"{username}:{password}".encode()).decode()
    headers = {"Authorization": f"Basic {auth}"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(console_url.rstrip("/") + path, data=data, headers=headers, method=method)
    context = tls.context() if console_url.startswith("https://") else None
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=context) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    try:
        decoded = json.loads(raw or b"{}")
    except json.JSONDecodeError:
        decoded = {"raw": raw.decode(errors="replace")}
    return status, decoded
