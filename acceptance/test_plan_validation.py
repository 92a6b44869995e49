"""Bad input is refused at plan time, with the attribute in the message, before it reaches a host.

Each case is a configuration of its own run through the real ``terraform plan``; the test checks
the non-zero exit, that the message names the attribute and the offending value, and that no
broker directory appeared on any host.
"""

from __future__ import annotations

import json
import re

import pytest

GOOD_USER = {"username": "app", "password": "good-Passw0rd-2024", "console_access": True}


def broker_tf(host, volume, *, instance_type="mq.m5.large", engine_version="3.10.8",
              instances=1, users=(GOOD_USER,), variables: str = "", engine_type="RabbitMQ",
              deployment_mode="SINGLE_INSTANCE", storage_type=None, instance_list=None,
              blocks: str = "") -> str:
    """A ferrymq_broker configuration; `instance_list` ([(host, volume), ...]) replaces
    `instances` copies of (host, volume)."""
    pairs = instance_list if instance_list is not None else [(host, volume)] * instances
    instance_blocks = "".join(
        f"""
  instance {{
    host   = "{h}"
    volume = "{v}"
  }}
""" for h, v in pairs)
    storage = f'  storage_type       = "{storage_type}"\n' if storage_type else ""
    user_blocks = "".join(
        f"""
  user {{
    username       = {json.dumps(u["username"])}
    password       = {u["password"] if u["password"].startswith("var.") else json.dumps(u["password"])}
    console_access = {str(u["console_access"]).lower()}
  }}
""" for u in users)
    return f"""terraform {{
  required_providers {{
    ferrymq = {{
      source = "ferrymq/ferrymq"
    }}
  }}
}}

provider "ferrymq" {{}}
{variables}
resource "ferrymq_broker" "bad" {{
  broker_name        = "validation"
  engine_type        = "{engine_type}"
  engine_version     = "{engine_version}"
  host_instance_type = "{instance_type}"
  deployment_mode    = "{deployment_mode}"
{storage}{instance_blocks}{user_blocks}{blocks}}}
"""


def user(name, password, console=False):
    return {"username": name, "password": password, "console_access": console}


# (case id, broker_tf keyword arguments, substrings the error output must contain)
CASES = [
    ("unknown-instance-type", dict(instance_type="mq.x9.huge"), ["host_instance_type", "mq.x9.huge"]),
    ("unknown-engine-version", dict(engine_version="9.9.9"), ["engine_version", "9.9.9"]),
    ("two-instances", dict(instances=2), ["instance", "1"]),
    ("no-instance", dict(instances=0), ["instance"]),
    ("short-password", dict(users=[user("app", "short1")]), ["password"]),
    ("password-comma", dict(users=[user("app", "long-enough,password")]), ["password"]),
    ("password-colon", dict(users=[user("app", "long-enough:password")]), ["password"]),
    ("password-equals", dict(users=[user("app", "long-enough=password")]), ["password"]),
    ("duplicate-username", dict(users=[user("dupuser", "first-Passw0rd-2024"), user("dupuser", "second-Passw0rd-2024")]),
     ["username", "dupuser"]),
]


def error_text(output: str) -> str:
    """The diagnostics part of Terraform's output (from the first 'Error:' on)."""
    i = output.find("Error:")
    return output[i:] if i >= 0 else ""


def assert_no_broker_on_any_host(lab):
    for h in lab.hosts:
        assert h.broker_dirs() == [], f"plan reached host {h.name}: {h.broker_dirs()}"
        assert h.pids_named("beam.smp") == [], f"an engine runs on {h.name} after a plan"
        assert h.activemq_pids() == [], f"an ActiveMQ runs on {h.name} after a plan"
    for d in lab.shared_dirs():
        assert list(d.iterdir()) == [], f"plan wrote to the shared directory {d}: {list(d.iterdir())}"


# ---- ActiveMQ modes and storage --------------------------------------------------------------
# H1..H3 stand for the lab's hosts (so that a plan that wrongly reached out would reach only
# them); the plan must refuse these configurations before any host is asked.

AMQ = dict(engine_type="ActiveMQ", engine_version="5.17.2")
H1, H2, H3 = "@H1@", "@H2@", "@H3@"
SHARED = "/srv/ferrymq-shared"
SHARED_OTHER = "/srv/ferrymq-other"

AMQ_CASES = [
    ("activemq-active-standby-ebs",
     dict(**AMQ, deployment_mode="ACTIVE_STANDBY_MULTI_AZ", storage_type="ebs",
          instance_list=[(H1, "/dev/loop0"), (H2, "/dev/loop1")]),
     ["storage_type", "ebs", "ACTIVE_STANDBY_MULTI_AZ"]),
    ("rabbitmq-efs",
     dict(storage_type="efs", instance_list=[(H1, SHARED)]),
     ["storage_type", "efs", "RabbitMQ"]),
    ("activemq-cluster",
     dict(**AMQ, deployment_mode="CLUSTER_MULTI_AZ",
          instance_list=[(H1, "/dev/loop0"), (H2, "/dev/loop1"), (H3, "/dev/loop2")]),
     ["deployment_mode", "CLUSTER_MULTI_AZ", "ActiveMQ"]),
    ("activemq-active-standby-one-instance",
     dict(**AMQ, deployment_mode="ACTIVE_STANDBY_MULTI_AZ", storage_type="efs", instance_list=[(H1, SHARED)]),
     ["instance", "2"]),
    ("activemq-active-standby-three-instances",
     dict(**AMQ, deployment_mode="ACTIVE_STANDBY_MULTI_AZ", storage_type="efs",
          instance_list=[(H1, SHARED), (H2, SHARED), (H3, SHARED)]),
     ["instance", "2"]),
    ("activemq-active-standby-same-host",
     dict(**AMQ, deployment_mode="ACTIVE_STANDBY_MULTI_AZ", storage_type="efs",
          instance_list=[(H1, SHARED), (H1, SHARED)]),
     ["instance[1].host", H1]),
    ("activemq-efs-different-volumes",
     dict(**AMQ, deployment_mode="ACTIVE_STANDBY_MULTI_AZ", storage_type="efs",
          instance_list=[(H1, SHARED), (H2, SHARED_OTHER)]),
     ["volume", SHARED_OTHER]),
    ("activemq-efs-volume-is-a-device",
     dict(**AMQ, deployment_mode="ACTIVE_STANDBY_MULTI_AZ",
          instance_list=[(H1, "/dev/loop0"), (H2, "/dev/loop0")]),
     ["volume", "/dev/loop0"]),
    ("activemq-efs-relative-path",
     dict(**AMQ, deployment_mode="ACTIVE_STANDBY_MULTI_AZ", storage_type="efs",
          instance_list=[(H1, "shared-dir"), (H2, "shared-dir")]),
     ["volume", "shared-dir"]),
]


CLUSTER = dict(deployment_mode="CLUSTER_MULTI_AZ")
THREE = [(H1, "/dev/loop0"), (H2, "/dev/loop1"), (H3, "/dev/loop2")]


def load_balancer(vip: str, hosts: str = "") -> str:
    return f"""
  load_balancer {{
    virtual_ip = "{vip}"
{hosts}  }}
"""


AMQ_CASES += [
    ("rabbitmq-cluster-two-instances",
     dict(**CLUSTER, instance_list=THREE[:2]),
     ["instance", "3", "2"]),
    ("rabbitmq-cluster-same-host",
     dict(**CLUSTER, instance_list=[THREE[0], THREE[1], (H1, "/dev/loop3")]),
     ["instance[2].host", H1]),
    ("load-balancer-vip-not-an-address",
     dict(**CLUSTER, instance_list=THREE, blocks=load_balancer("10.79.300.1")),
     ["virtual_ip", "10.79.300.1"]),
    ("load-balancer-no-hosts",
     dict(**CLUSTER, instance_list=THREE, blocks=load_balancer("10.79.0.100", "    hosts = []\n")),
     ["load_balancer", "no hosts"]),
]


def test_valid_config_plans(lab, host, tf_factory):
    """Control case: the same configuration with good values plans one create and touches no host."""
    tf = tf_factory("plan-validation/valid")
    (tf.workdir / "main.tf").write_text(broker_tf(host.address, host.loop))
    res = tf.plan()
    assert res.rc == 2, f"expected a plan with changes (exit 2), got {res.rc}:\n{res.output}"
    assert "Plan: 1 to add, 0 to change, 0 to destroy." in res.output, res.output
    assert GOOD_USER["password"] not in res.output, "a password appears in the plan output"
    assert_no_broker_on_any_host(lab)


@pytest.mark.parametrize("case,kwargs,expected", CASES, ids=[c[0] for c in CASES])
def test_invalid_input_refused_at_plan(lab, host, tf_factory, case, kwargs, expected):
    tf = tf_factory(f"plan-validation/{case}")
    (tf.workdir / "main.tf").write_text(broker_tf(host.address, host.loop, **kwargs))
    res = tf.plan()
    assert res.rc == 1, f"{case}: expected terraform plan to fail (exit 1), got {res.rc}:\n{res.output}"
    errors = error_text(res.output)
    assert errors, f"{case}: no 'Error:' in the output:\n{res.output}"
    for s in expected:
        if s == "1":  # the expected count of instance blocks, as a number of its own
            assert re.search(r"\b1\b", errors), f"{case}: the message does not say 1:\n{errors}"
        else:
            assert s in errors, f"{case}: {s!r} not in the error output:\n{errors}"
    assert "panic" not in res.output.lower(), f"{case}: the provider panicked:\n{res.output}"
    assert_no_broker_on_any_host(lab)


def test_bad_password_from_sensitive_variable_is_not_printed(lab, host, tf_factory):
    """A refused password that comes from a sensitive variable is named, never shown."""
    secret = "hidden-but=refused-0042"
    tf = tf_factory("plan-validation/sensitive-password")
    variables = '\nvariable "pw" {\n  type      = string\n  sensitive = true\n}\n'
    (tf.workdir / "main.tf").write_text(
        broker_tf(host.address, host.loop, users=[user("app", "var.pw")], variables=variables))
    tf.write_vars({"pw": secret})
    res = tf.plan()
    assert res.rc == 1, f"expected terraform plan to fail (exit 1), got {res.rc}:\n{res.output}"
    assert "password" in error_text(res.output), res.output
    assert secret not in res.output, f"the sensitive password appears in the output:\n{res.output}"
    assert_no_broker_on_any_host(lab)

# The attribute path of the error, seen as the configuration line Terraform points at:
# case -> (attribute, which occurrence of it in main.tf).
POINTS_AT = {
    "activemq-active-standby-ebs": ("storage_type", 0),
    "rabbitmq-efs": ("storage_type", 0),
    "activemq-cluster": ("deployment_mode", 0),
    "activemq-active-standby-same-host": ("host", 1),
    "activemq-efs-different-volumes": ("volume", 1),
    "rabbitmq-cluster-same-host": ("host", 2),
    "load-balancer-vip-not-an-address": ("virtual_ip", 0),
    "load-balancer-no-hosts": ("hosts", 0),
}


def with_lab_hosts(lab, text: str) -> str:
    for n in (1, 2, 3):
        text = text.replace(f"@H{n}@", lab.hosts[(n - 1) % len(lab.hosts)].address)
    return text


@pytest.mark.parametrize("case,kwargs,expected", AMQ_CASES, ids=[c[0] for c in AMQ_CASES])
def test_activemq_modes_refused_at_plan(lab, tf_factory, case, kwargs, expected):
    """Modes and storage that do not go together, wrong instance counts, one host twice, two
    shared volumes: refused by `terraform plan` with the attribute and the value, no host asked."""
    tf = tf_factory(f"plan-validation/{case}")
    (tf.workdir / "main.tf").write_text(with_lab_hosts(lab, broker_tf(None, None, **kwargs)))
    expected = [with_lab_hosts(lab, e) for e in expected]
    res = tf.plan()
    assert res.rc == 1, f"{case}: expected terraform plan to fail (exit 1), got {res.rc}:\n{res.output}"
    errors = error_text(res.output)
    assert errors, f"{case}: no 'Error:' in the output:\n{res.output}"
    for s in expected:
        if s.isdigit():
            assert re.search(rf"\b{s}\b", errors), f"{case}: the message does not say {s}:\n{errors}"
        else:
            assert s in errors, f"{case}: {s!r} not in the error output:\n{errors}"
    assert "panic" not in res.output.lower(), f"{case}: the provider panicked:\n{res.output}"
    if case in POINTS_AT:
        attr, nth = POINTS_AT[case]
        lines = [n for n, line in enumerate((tf.workdir / "main.tf").read_text().splitlines(), 1)
                 if line.strip().startswith(attr + " ")]
        assert f"on main.tf line {lines[nth]}," in errors, \
            f"{case}: the error should point at {attr} on line {lines[nth]} of main.tf:\n{errors}"
    assert_no_broker_on_any_host(lab)


def test_rabbitmq_cluster_behind_a_load_balancer_plans(lab, tf_factory):
    """Control case: a three-host cluster with a load balancer plans one create, the load
    balancer's endpoints known only after apply."""
    tf = tf_factory("plan-validation/rabbitmq-cluster-valid")
    (tf.workdir / "main.tf").write_text(with_lab_hosts(lab, broker_tf(
        None, None, **CLUSTER, instance_list=THREE, blocks=load_balancer(f"{lab.net}.100"))))
    res = tf.plan()
    assert res.rc == 2, f"expected a plan with changes (exit 2), got {res.rc}:\n{res.output}"
    assert "Plan: 1 to add, 0 to change, 0 to destroy." in res.output, res.output
    assert re.search(r"load_balancer_endpoint\s+= \(known after apply\)", res.output), res.output
    assert_no_broker_on_any_host(lab)


@pytest.mark.parametrize("mode,storage,pairs", [
    ("SINGLE_INSTANCE", None, "ebs-one"),
    ("ACTIVE_STANDBY_MULTI_AZ", None, "efs-two"),
    ("ACTIVE_STANDBY_MULTI_AZ", "efs", "efs-two"),
], ids=["single-default-ebs", "active-standby-default-efs", "active-standby-efs"])
def test_activemq_valid_configs_plan(lab, tf_factory, mode, storage, pairs):
    """Control cases: valid ActiveMQ configurations plan one create (storage_type defaulted by
    the mode) and touch no host."""
    instance_list = [(H1, "/dev/loop0")] if pairs == "ebs-one" else [(H2, SHARED), (H3, SHARED)]
    tf = tf_factory(f"plan-validation/activemq-valid-{mode.lower()}-{storage or 'default'}")
    (tf.workdir / "main.tf").write_text(with_lab_hosts(lab, broker_tf(
        None, None, **AMQ, deployment_mode=mode, storage_type=storage, instance_list=instance_list)))
    res = tf.plan()
    assert res.rc == 2, f"expected a plan with changes (exit 2), got {res.rc}:\n{res.output}"
    assert "Plan: 1 to add, 0 to change, 0 to destroy." in res.output, res.output
    want = "ebs" if pairs == "ebs-one" else "efs"
    assert re.search(rf'storage_type\s+=\s+"{want}"', res.output), f"storage_type should plan as {want}:\n{res.output}"
    assert_no_broker_on_any_host(lab)
