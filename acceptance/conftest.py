"""Fixtures of the FerryMQ acceptance tests.

The session-scoped ``lab`` fixture makes the appliance hosts (network namespaces with a loop
device and an agent each, see lab.py) once, in parallel, and always tears them down, also when a
test fails. The tests share them and leave each host as they found it (destroy leaves no broker),
so one lab serves the whole run: host 1 for the single-instance brokers, hosts 2 and 3 for
ActiveMQ active/standby (``host_pair``) on a shared directory of the lab.
Nothing is skipped silently: missing prerequisites stop the run with a message saying what to do.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import lab as labmod  # noqa: E402

REPO = labmod.REPO
EXAMPLES = REPO / "examples"
LAB_PREFIX = os.environ.get("FERRYMQ_LAB_PREFIX", "fmqt")
# Terraform working directories; a lab of another prefix (a second run beside this one) gets its own.
ACCEPTANCE_WORK = labmod.WORK / ("acceptance" if LAB_PREFIX == "fmqt" else f"acceptance-{LAB_PREFIX}")
LAB_NET = os.environ.get("FERRYMQ_LAB_NET", "10.79.0")
# Host 1: the single-instance brokers (RabbitMQ, ActiveMQ, one after the other); hosts 2 and 3:
# ActiveMQ active/standby. Each host costs a loop device (only /dev/loop0-7 exist here).
LAB_HOSTS = int(os.environ.get("FERRYMQ_LAB_HOSTS", "3"))


def _prerequisite_problems() -> list[str]:
    problems = []
    if os.geteuid() != 0:
        problems.append("the acceptance tests must run as root (network namespaces, loop devices, mounts)")
    tf = labmod.TERRAFORM
    if not os.access(tf, os.X_OK):
        problems.append(f"Terraform 1.0.3 missing at {tf} (run `bash scripts/setup-host`)")
    else:
        cp = subprocess.run([str(tf), "version"], capture_output=True, text=True,
                            env={**os.environ, "CHECKPOINT_DISABLE": "1"}, stdin=subprocess.DEVNULL)
        if "Terraform v1.0.3" not in cp.stdout:
            problems.append(f"{tf} is not Terraform 1.0.3: {cp.stdout.strip()[:80]!r}")
    try:
        import pika  # noqa: F401
    except ImportError:
        problems.append(f"the Python package pika is missing in {sys.executable} "
                        "(run `bash scripts/setup-host`, then use /opt/ferrymq/venv/bin/python -m pytest)")
    try:
        import stomp  # noqa: F401
    except ImportError:
        problems.append(f"the Python package stomp.py is missing in {sys.executable} "
                        "(run `bash scripts/setup-host`, then use /opt/ferrymq/venv/bin/python -m pytest)")
    for tool in ("ip", "losetup", "nsenter", "blkid", "umount", "truncate"):
        if not shutil.which(tool):
            problems.append(f"command {tool!r} missing (run `bash scripts/setup-host`)")
    if not Path("/usr/lib/rabbitmq/bin/rabbitmq-server").exists():
        problems.append("RabbitMQ missing (run `bash scripts/setup-host`)")
    if not Path("/usr/share/activemq/bin/activemq.jar").exists():
        problems.append("ActiveMQ missing: no /usr/share/activemq/bin/activemq.jar (run `bash scripts/setup-host`)")
    if not shutil.which("java"):
        problems.append("java missing (openjdk-17-jre-headless; run `bash scripts/setup-host`)")
    return problems


def pytest_sessionstart(session):
    problems = _prerequisite_problems()
    if problems:
        pytest.exit("acceptance prerequisites missing:\n  - " + "\n  - ".join(problems), returncode=3)


def _binaries_problem() -> str:
    missing = [p for p in (labmod.BIN_DIR / labmod.AGENT_BIN, labmod.BIN_DIR / labmod.PROVIDER_BIN)
               if not os.access(p, os.X_OK)]
    if missing:
        return ("missing " + ", ".join(map(str, missing)) +
                " (run `cargo build --workspace` first; `bash scripts/test` does)")
    return ""


@pytest.fixture(scope="session")
def lab():
    """The appliance hosts: LAB_HOSTS namespaces on a bridge, each with a blank volume and an agent."""
    problem = _binaries_problem()
    if problem:
        pytest.fail(problem, pytrace=False)
    the_lab = labmod.Lab(prefix=LAB_PREFIX, net=LAB_NET)
    try:
        secs = the_lab.up(hosts=LAB_HOSTS)
        print(f"\nlab up: {LAB_HOSTS} host(s) in {secs:.1f} s")
        labmod.record_result(f"lab_up_{LAB_HOSTS}_hosts_seconds", round(secs, 2))
        yield the_lab
    finally:
        the_lab.down()
    left = the_lab.leftovers()
    assert not left, f"lab teardown left behind: {left}"


@pytest.fixture(scope="session")
def host(lab):
    """The first appliance host."""
    return lab.hosts[0]


@pytest.fixture(scope="session")
def host_pair(lab):
    """Two other appliance hosts, for active/standby (hosts 2 and 3 of the lab)."""
    if len(lab.hosts) < 3:
        pytest.fail(f"active/standby needs a lab of 3 hosts, this one has {len(lab.hosts)} "
                    f"(FERRYMQ_LAB_HOSTS={LAB_HOSTS})", pytrace=False)
    return lab.hosts[1], lab.hosts[2]


@pytest.fixture
def tf_factory(lab):
    """Makes a Terraform runner in a fresh working directory under .work/acceptance/."""

    def make(name: str, example: str | None = None) -> labmod.Terraform:
        workdir = ACCEPTANCE_WORK / name
        if workdir.exists():
            shutil.rmtree(workdir)
        return labmod.Terraform(workdir, lab, example=(EXAMPLES / example) if example else None)

    return make


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On a failure, attach the tail of every agent's log to the report."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and "lab" in getattr(item, "fixturenames", ()):
        the_lab = item.funcargs.get("lab") if hasattr(item, "funcargs") else None
        if the_lab is not None:
            for h in the_lab.hosts:
                report.sections.append((f"agent log {h.name} ({h.log_path})", h.agent_log_tail(80)))
                for log in _engine_logs(h):
                    report.sections.append((f"engine log {h.name} ({log})", labmod.tail(log, 40)))


def _engine_logs(h, limit: int = 4) -> list[Path]:
    """The engines' own text logs under the host's broker directories (not KahaDB's journals)."""
    out = []
    for b in h.broker_dirs():
        try:
            logs = sorted(b.rglob("*.log"), key=lambda p: p.stat().st_mtime, reverse=True)
        except OSError:
            continue
        out += [p for p in logs if "kahadb" not in p.parts and not p.name.startswith("db-") and p.is_file()]
    return out[:limit]


def pytest_terminal_summary(terminalreporter):
    """Prints the figures measured in this run (also kept in acceptance/results/results.json)."""
    try:
        import json

        figures = json.loads(labmod.RESULTS_FILE.read_text())
    except (OSError, ValueError):
        return
    terminalreporter.section("FerryMQ figures (acceptance/results/results.json)")
    for k, v in sorted(figures.items()):
        terminalreporter.write_line(f"{k} = {v}")
