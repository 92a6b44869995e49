"""Fixtures of the FerryMQ acceptance tests.

The session-scoped ``lab`` fixture makes the appliance hosts (network namespaces with a loop
device and an agent each, see lab.py) once, and always tears them down, also when a test fails.
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
ACCEPTANCE_WORK = labmod.WORK / "acceptance"
LAB_PREFIX = os.environ.get("FERRYMQ_LAB_PREFIX", "fmqt")
LAB_NET = os.environ.get("FERRYMQ_LAB_NET", "10.79.0")
LAB_HOSTS = int(os.environ.get("FERRYMQ_LAB_HOSTS", "1"))


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
    for tool in ("ip", "losetup", "nsenter", "blkid", "umount", "truncate"):
        if not shutil.which(tool):
            problems.append(f"command {tool!r} missing (run `bash scripts/setup-host`)")
    if not Path("/usr/lib/rabbitmq/bin/rabbitmq-server").exists():
        problems.append("RabbitMQ missing (run `bash scripts/setup-host`)")
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
