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
              instances=1, users=(GOOD_USER,), variables: str = "") -> str:
    instance_blocks = "".join(
        f"""
  instance {{
    host   = "{host}"
    volume = "{volume}"
  }}
""" for _ in range(instances))
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
  engine_type        = "RabbitMQ"
  engine_version     = "{engine_version}"
  host_instance_type = "{instance_type}"
  deployment_mode    = "SINGLE_INSTANCE"
{instance_blocks}{user_blocks}}}
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
