"""Small helpers shared by the acceptance tests: ordered steps, waiting, probes, the timed apply."""

from __future__ import annotations

import datetime as dt
import os
import pwd
import re
import subprocess
import time
from pathlib import Path

import pytest

import lab as labmod

BROKER_ID = re.compile(r"b-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class Steps:
    """Ordered steps of one test module sharing one broker: a step whose prerequisite failed
    fails at once, saying which one."""

    def __init__(self):
        self.done: set = set()
        self.s: dict = {}

    def need(self, *steps: str) -> None:
        missing = [s for s in steps if s not in self.done]
        if missing:
            pytest.fail(f"not run: the earlier step(s) {', '.join(missing)} did not pass", pytrace=False)

    def ok(self, step: str) -> None:
        self.done.add(step)


def wait_until(pred, timeout: float, what, interval: float = 0.2):
    """Polls pred() until it returns something true (returned) or fails the test after timeout;
    `what` is a string or a callable giving the message (evaluated only on failure)."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            msg = what() if callable(what) else what
            pytest.fail(f"timed out after {timeout:.0f} s waiting for: {msg}", pytrace=False)
        time.sleep(interval)


def blkid(dev: str) -> subprocess.CompletedProcess:
    """Low-level probe of the device itself (no cache): rc 2 when no signature is found."""
    return subprocess.run(["blkid", "-p", "-o", "export", dev], capture_output=True, text=True)


def blkid_value(dev: str, key: str) -> str:
    """One field (TYPE, LABEL, UUID) of what blkid finds on the device; "" when absent."""
    for line in blkid(dev).stdout.splitlines():
        k, _, v = line.partition("=")
        if k == key:
            return v
    return ""


def broker_resource(tf, address: str) -> dict:
    """The values of the one resource at `address` in the Terraform state."""
    rs = [r for r in tf.resources() if r.get("address") == address]
    assert len(rs) == 1, f"expected {address} in the state, found {[r.get('address') for r in tf.resources()]}"
    return rs[0]["values"]


def proc_uid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    return -1


def boottime() -> float:
    """Seconds since boot (the clock of /proc/PID/stat's start times)."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def proc_started(pid: int) -> float:
    """When the process started, in boottime() seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    start_ticks = int(stat.rsplit(")", 1)[1].split()[19])
    return start_ticks / os.sysconf("SC_CLK_TCK")


def uid_of(user: str) -> int:
    return pwd.getpwnam(user).pw_uid


def endpoint(endpoints: list, scheme: str) -> str:
    """The first endpoint of a scheme (``stomp``, ``tcp``, ...) in an instance's endpoints, or ''."""
    return next((e for e in endpoints if e.startswith(scheme + "://")), "")


def files_under(root: Path, pattern: str) -> list[Path]:
    try:
        return sorted(root.rglob(pattern))
    except OSError:
        return []


def apply_until_running(tf, figure: str, secret: str):
    """`terraform apply` of a new broker, timed from its start until the broker's status output
    is RUNNING; records the seconds under `figure` in the results file and checks what every
    create must show (one resource added, no secret printed, an Amazon MQ-style id).
    Returns the apply result and the outputs."""
    start = time.monotonic()
    res = tf.apply()
    out = tf.output()
    seconds = time.monotonic() - start
    assert out.get("status") == "RUNNING", f"status after apply: {out.get('status')!r}\n{res.output}"
    labmod.record_result(figure, round(seconds, 2))
    print(f"\nFIGURE {figure} = {seconds:.1f} (terraform apply start to status RUNNING)")
    assert "Apply complete! Resources: 1 added, 0 changed, 0 destroyed." in res.output, res.output
    assert secret not in res.output, "a password appears in the apply output"
    assert BROKER_ID.fullmatch(out.get("broker_id") or ""), out
    return res, out


def java_home(pid: int) -> str:
    """The ``-Dactivemq.home`` an ActiveMQ java runs with (its bundle's home), or ""."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return ""
    home = [a.decode() for a in args if a.startswith(b"-Dactivemq.home=")]
    return home[0].split("=", 1)[1] if home else ""


def provider_log_lines(log: Path) -> str:
    """The provider's own lines in a Terraform TF_LOG file (its stderr, relayed by Terraform)."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(line for line in text.splitlines() if "terraform-provider-ferrymq" in line)


def window_after(lead: dt.timedelta) -> tuple[dict, dt.datetime]:
    """A UTC window block starting at the first whole minute `lead` from now, and that start."""
    at = dt.datetime.now(dt.timezone.utc) + lead
    start = (at + dt.timedelta(minutes=1)).replace(second=0, microsecond=0)
    return ({"day_of_week": start.strftime("%A").upper(), "time_of_day": start.strftime("%H:%M"),
             "time_zone": "UTC"}, start)


def seconds_until(at: dt.datetime) -> float:
    return (at - dt.datetime.now(dt.timezone.utc)).total_seconds()
