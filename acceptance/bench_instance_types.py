#!/usr/bin/env python3
"""Benchmark: each engine's sustainable persistent publish+consume throughput under each
instance type's limits, on the machine it runs on. Its table feeds the
`ferrymq_instance_type_recommendation` data source (`appliance/api/src/throughput.json`, embedded
in the API crate at build time).

For each engine it applies the single-instance example (`examples/rabbitmq-single-instance`,
`examples/activemq-single-instance`) with the real Terraform and agent on a lab host (a network
namespace, as the acceptance tests do), then for each instance type that fits
this host, smallest first, changes `host_instance_type` in place (the agent re-applies the
type's cgroup CPU quota and memory maximum, JVM heap or RabbitMQ memory watermark, and
connection limits, and restarts the engine) and measures, at each message size:

  PUBLISHERS processes publishing persistent messages to one durable queue, 50 at a time, each
  batch acknowledged by the broker once stored (RabbitMQ: a transaction per 50 messages, whose
  commit-ok comes after they are on disk; ActiveMQ: STOMP receipts, 50 in flight),
  and CONSUMERS processes consuming them with acknowledgements, for WARMUP + SECONDS seconds;
  the figure is min(published/s, consumed/s) over the last SECONDS seconds: what the broker
  sustains without a growing backlog.

Types that do not fit this host (more vCPUs or memory than it has) are listed as not measured,
with why. The clients run on the same machine as the broker: on a small machine they compete
with it for CPU, which the figures include (and the file says).

Each (type, size) is measured REPEATS times and the median run kept (the machine may be shared).
Bounded: one broker per engine, at most types x sizes x REPEATS runs of WARMUP + SECONDS s each.

    FERRYMQ_LAB_PREFIX=fmqs FERRYMQ_LAB_NET=10.79.4 \\
      /opt/ferrymq/venv/bin/python acceptance/bench_instance_types.py [--seconds 10] [--repeats 3] [--out FILE]

(after `cargo build --workspace`; FERRYMQ_BIN_DIR names the build directory if not target/debug).
"""

from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing as mp
import os
import platform
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pika  # noqa: E402

import amqp  # noqa: E402
import lab as labmod  # noqa: E402
import stompclient  # noqa: E402
from steps import wait_until  # noqa: E402
from test_sizing import limits_of  # noqa: E402

REPO = labmod.REPO
DEFAULT_OUT = REPO / "appliance" / "api" / "src" / "throughput.json"
USER = {"username": "bench", "password": "bench-Passw0rd-2024!", "console_access": True}
GIB = 1 << 30
# What the agent allows: a host may report 95 % of the type's memory (see agent sizing).
HOST_MEMORY_SLACK = 0.95
STOMP_WINDOW = 50
# RabbitMQ messages per transaction.
BATCH = 50
ACK_EVERY = 50

CATALOGUE_TF = """
terraform {
  required_providers {
    ferrymq = { source = "ferrymq/ferrymq" }
  }
}
provider "ferrymq" {}
data "ferrymq_instance_types" "all" {}
output "instance_types" { value = data.ferrymq_instance_types.all.instance_types }
"""

# Engine -> (example applied, storage, endpoint output). ActiveMQ runs on shared storage (a lab
# directory, the stand-in for EFS) so that every type can be measured: Amazon MQ offers ActiveMQ
# on EBS on mq.m5 only.
ENGINES = {
    "RabbitMQ": ("rabbitmq-single-instance", "ebs", "amqp_endpoint"),
    "ActiveMQ": ("activemq-single-instance", "efs", "stomp_endpoint"),
}


# ---- load clients (separate processes: each counts into a shared counter until `stop`) -------


def rabbitmq_publisher(ep: str, queue: str, size: int, count, stop, errors) -> None:
    try:
        conn = amqp.connect(ep, USER["username"], USER["password"], blocked_connection_timeout=120)
        ch = conn.channel()
        ch.queue_declare(queue=queue, durable=True)
        # A transaction per BATCH messages: tx.commit-ok comes once they are on disk, the
        # same guarantee as a confirm, with a batch in flight (as the STOMP window).
        ch.tx_select()
        props = pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent)
        body = b"m" * size
        while not stop.is_set():
            for _ in range(BATCH):
                ch.basic_publish(exchange="", routing_key=queue, body=body, properties=props)
            ch.tx_commit()
            with count.get_lock():
                count.value += BATCH
        conn.close()
    except Exception as e:  # noqa: BLE001 - reported by the parent
        errors.put(f"publisher: {type(e).__name__}: {e}")


def rabbitmq_consumer(ep: str, queue: str, size: int, count, stop, errors) -> None:
    try:
        conn = amqp.connect(ep, USER["username"], USER["password"])
        ch = conn.channel()
        ch.queue_declare(queue=queue, durable=True)
        ch.basic_qos(prefetch_count=500)
        unacked = 0
        for method, _props, _body in ch.consume(queue, auto_ack=False, inactivity_timeout=0.5):
            if stop.is_set():
                break
            if method is None:
                continue
            unacked += 1
            if unacked >= ACK_EVERY:
                ch.basic_ack(method.delivery_tag, multiple=True)
                with count.get_lock():
                    count.value += unacked
                unacked = 0
        ch.cancel()
        conn.close()
    except Exception as e:  # noqa: BLE001
        errors.put(f"consumer: {type(e).__name__}: {e}")


def activemq_publisher(ep: str, queue: str, size: int, count, stop, errors) -> None:
    try:
        conn, listener = stompclient.connect(ep, USER["username"], USER["password"])
        body = "m" * size
        n = 0
        while not stop.is_set():
            ids = []
            for _ in range(STOMP_WINDOW):
                rid = f"r-{n}"
                n += 1
                conn.send(stompclient.queue(queue), body, headers={"persistent": "true", "receipt": rid})
                ids.append(rid)
            missing = stompclient._wait_receipts(listener, ids, 120)
            if missing:
                raise RuntimeError(f"{len(missing)} receipts missing; errors {listener.errors}")
            with listener.cond:
                for rid in ids:
                    listener.receipts.pop(rid, None)
            with count.get_lock():
                count.value += len(ids)
        stompclient.close(conn)
    except Exception as e:  # noqa: BLE001
        errors.put(f"publisher: {type(e).__name__}: {e}")


class _CountingAcker(stompclient.stomp.ConnectionListener):
    """Counts messages and acknowledges every ACK_EVERY-th (client mode acks cumulatively)."""

    def __init__(self, conn, count, stop):
        self.conn, self.count, self.stop, self.unacked = conn, count, stop, 0

    def on_message(self, frame):
        if self.stop.is_set():
            return  # the run is over: what is still arriving is redelivered to the next one
        self.unacked += 1
        if self.unacked >= ACK_EVERY:
            self.conn.ack(frame.headers["ack"])
            with self.count.get_lock():
                self.count.value += self.unacked
            self.unacked = 0


def activemq_consumer(ep: str, queue: str, size: int, count, stop, errors) -> None:
    try:
        conn, _ = stompclient.connect(ep, USER["username"], USER["password"])
        conn.set_listener("count", _CountingAcker(conn, count, stop))
        conn.subscribe(stompclient.queue(queue), id="1", ack="client",
                       headers={"activemq.prefetchSize": "500"})
        stop.wait()
        stompclient.close(conn)
    except Exception as e:  # noqa: BLE001
        errors.put(f"consumer: {type(e).__name__}: {e}")


CLIENTS = {
    "RabbitMQ": (rabbitmq_publisher, rabbitmq_consumer),
    "ActiveMQ": (activemq_publisher, activemq_consumer),
}


def measure(engine: str, ep: str, queue: str, size: int, args) -> dict:
    """One run: publishers and consumers for warmup + seconds; rates over the last `seconds`."""
    publisher, consumer = CLIENTS[engine]
    stop, errors = mp.Event(), mp.Queue()
    published, consumed = mp.Value("q", 0), mp.Value("q", 0)
    procs = [mp.Process(target=consumer, args=(ep, queue, size, consumed, stop, errors), daemon=True)
             for _ in range(args.consumers)]
    procs += [mp.Process(target=publisher, args=(ep, queue, size, published, stop, errors), daemon=True)
              for _ in range(args.publishers)]
    for p in procs:
        p.start()
    try:
        time.sleep(args.warmup)
        p0, c0, t0 = published.value, consumed.value, time.monotonic()
        time.sleep(args.seconds)
        p1, c1, t1 = published.value, consumed.value, time.monotonic()
    finally:
        stop.set()
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    problems = []
    while not errors.empty():
        problems.append(errors.get())
    if problems:
        raise RuntimeError(f"{engine} {size} B: clients failed: {problems}")
    secs = t1 - t0
    pub, con = (p1 - p0) / secs, (c1 - c0) / secs
    return {"published_per_second": round(pub), "consumed_per_second": round(con),
            "messages_per_second": round(min(pub, con))}


def drain(engine: str, ep: str, queue: str) -> None:
    """Removes the run's queue and what is left in it, so runs do not add up on the volume."""
    if engine == "RabbitMQ":
        amqp.delete_queue(ep, USER["username"], USER["password"], queue)
    else:
        stompclient.consume(ep, USER["username"], USER["password"], queue, 10**9, timeout=60, idle=1.0,
                            stalled=3.0)


# ---- the machine and the types -------------------------------------------------------------


def machine() -> dict:
    cpu_model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu_model = line.split(":", 1)[1].strip()
            break
    mem_kib = int(next(l.split()[1] for l in Path("/proc/meminfo").read_text().splitlines()
                       if l.startswith("MemTotal:")))
    return {"cpus": os.cpu_count(), "memory_bytes": mem_kib * 1024, "cpu_model": cpu_model,
            "kernel": platform.release(), "hostname": platform.node(),
            # Other work on the machine competes with the broker: say how busy it was.
            "load_average_1m_at_start": round(os.getloadavg()[0], 2)}


def fits(t: dict, m: dict) -> str:
    """'' when the type fits this host, else why not (the agent's own rule)."""
    if m["cpus"] >= t["vcpus"] and m["memory_bytes"] >= t["memory_mib"] * (1 << 20) * HOST_MEMORY_SLACK:
        return ""
    return (f"this host has {m['cpus']} CPUs and {m['memory_bytes'] / GIB:.1f} GiB; "
            f"{t['name']} needs {t['vcpus']} CPUs and {t['memory_mib'] // 1024} GiB")


def git_commit() -> str:
    cp = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return cp.stdout.strip()


def engine_pid(host, engine: str) -> int:
    find = host.rabbitmq_pids if engine == "RabbitMQ" else host.activemq_pids
    return wait_until(find, 60, f"the {engine} engine process in {host.netns}")[0]


def bench_engine(lab, host, engine: str, types: list, m: dict, args, work: Path) -> list:
    example, storage, endpoint_output = ENGINES[engine]
    volume = host.loop if storage == "ebs" else str(lab.shared_dir(f"bench-{engine.lower()}"))
    tf = labmod.Terraform(work / engine.lower(), lab, example=REPO / "examples" / example)
    # A type change otherwise waits for the maintenance window: the engine would keep running under
    # the first type's limits.
    variables = {"broker_name": f"bench-{engine.lower()}", "host": host.address, "volume": volume, "users": [USER],
                 "apply_immediately": True}
    if engine == "ActiveMQ":
        variables["storage_type"] = storage
    rows = []
    try:
        for t in types:
            tf.write_vars({**variables, "host_instance_type": t["name"]})
            start = time.monotonic()
            tf.apply()
            out = tf.output()
            if out.get("status") != "RUNNING":
                raise RuntimeError(f"{engine} on {t['name']}: status {out.get('status')!r}")
            print(f"{engine} {t['name']}: RUNNING after {time.monotonic() - start:.1f} s", flush=True)
            ep = out[endpoint_output]
            mem, quota, _ = limits_of(engine_pid(host, engine))
            if mem != t["memory_mib"] << 20:
                raise RuntimeError(f"{engine} on {t['name']} runs with a {mem} byte memory limit, not the type's "
                                   f"{t['memory_mib']} MiB: the type was not applied")
            for size in args.sizes:
                runs = []
                for i in range(args.repeats):
                    queue = f"bench.{t['name']}.{size}.{i}"
                    runs.append(measure(engine, ep, queue, size, args))
                    drain(engine, ep, queue)
                # The median run (by the sustained rate): a shared machine is noisy.
                runs.sort(key=lambda r: r["messages_per_second"])
                fig = runs[len(runs) // 2]
                row = {"engine_type": engine, "instance_type": t["name"], "storage_type": storage,
                       "message_size_bytes": size, **fig,
                       "runs_messages_per_second": [r["messages_per_second"] for r in runs],
                       "cgroup_memory_bytes": mem, "cgroup_cpus": round(quota / 100_000, 2)}
                print(json.dumps(row), flush=True)
                rows.append(row)
    finally:
        res = tf.destroy(check=False)
        if res.rc != 0:
            print(f"destroy of the {engine} broker failed:\n{res.output[-3000:]}", file=sys.stderr)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--seconds", type=float, default=10.0, help="measured seconds per run")
    ap.add_argument("--repeats", type=int, default=3, help="runs per type and size; the median is kept")
    ap.add_argument("--warmup", type=float, default=5.0, help="seconds before measuring")
    ap.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[1024, 16384],
                    help="message sizes in bytes, comma-separated")
    ap.add_argument("--publishers", type=int, default=2)
    ap.add_argument("--consumers", type=int, default=2)
    ap.add_argument("--engines", default="RabbitMQ,ActiveMQ")
    args = ap.parse_args(argv)
    if not (1 <= args.seconds <= 120 and 0 <= args.warmup <= 60 and 1 <= len(args.sizes) <= 4
            and 1 <= args.publishers <= 8 and 1 <= args.consumers <= 8 and 1 <= args.repeats <= 5):
        ap.error("bounded runs only: seconds 1..120, warmup 0..60, 1..4 sizes, 1..8 clients each, 1..5 repeats")

    prefix = os.environ.get("FERRYMQ_LAB_PREFIX", "fmqt")
    net = os.environ.get("FERRYMQ_LAB_NET", "10.79.0")
    lab = labmod.Lab(prefix=prefix, net=net, volume_mib=4096)
    work = labmod.WORK / f"bench-{prefix}"
    m = machine()
    started = datetime.datetime.now(datetime.timezone.utc)
    rows, not_measured = [], []
    try:
        lab.up(hosts=1)
        host = lab.hosts[0]
        cat = labmod.Terraform(work / "catalogue", lab)
        (cat.workdir / "main.tf").write_text(CATALOGUE_TF)
        cat.apply()
        types = cat.output()["instance_types"]
        for engine in args.engines.split(","):
            offered = [t for t in types if engine in t["engine_types"]]
            fitting = []
            for t in offered:
                why = fits(t, m)
                if why:
                    not_measured.append({"engine_type": engine, "instance_type": t["name"], "reason": why})
                else:
                    fitting.append(t)
            rows += bench_engine(lab, host, engine, fitting, m, args, work)
    finally:
        lab.down()
    command = "FERRYMQ_LAB_PREFIX=... FERRYMQ_LAB_NET=... /opt/ferrymq/venv/bin/python " + \
        " ".join(shlex.quote(a) for a in ["acceptance/bench_instance_types.py", *(argv or sys.argv[1:])])
    doc = {
        "what": "sustainable persistent publish+consume throughput (min of published/s and consumed/s, "
                "every message confirmed by the broker and acknowledged by a consumer) of one "
                "single-instance broker per engine under each instance type's limits",
        "command": command,
        "date": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "commit": git_commit(),
        "machine": m,
        "method": {"publishers": args.publishers, "consumers": args.consumers, "warmup_seconds": args.warmup,
                   "measured_seconds": args.seconds, "message_sizes_bytes": args.sizes,
                   "repeats": args.repeats, "figure": "the median of the repeats",
                   "clients": "on the same machine as the broker (pika, stomp.py), competing for its CPUs",
                   "storage": {e: s for e, (_, s, _) in ENGINES.items()}},
        "load_average_1m_at_end": round(os.getloadavg()[0], 2),
        "figures": rows,
        "not_measured": not_measured,
    }
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
