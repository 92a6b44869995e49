"""`data "ferrymq_instance_type_recommendation"` read by the real Terraform 1.0.3: three workloads
get the smallest type that fits with the reason, and workloads no type can carry fail the plan
naming the attribute.

The expected answers are derived from the committed benchmark table
(`appliance/api/src/throughput.json`, written by `acceptance/bench_instance_types.py`) and
Amazon MQ's quotas, so re-measuring the table does not break the test. No appliance host is
needed: the data source reads only what is embedded in the provider.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

import lab as labmod

TABLE = json.loads((labmod.REPO / "appliance" / "api" / "src" / "throughput.json").read_text())

MAIN_TF = """
terraform {
  required_providers {
    ferrymq = { source = "ferrymq/ferrymq" }
  }
}
provider "ferrymq" {}
variable "workloads" { type = map(map(string)) }
data "ferrymq_instance_type_recommendation" "w" {
  for_each                   = var.workloads
  engine_type                = each.value.engine_type
  deployment_mode            = each.value.deployment_mode
  storage_type               = lookup(each.value, "storage_type", null)
  messages_per_second        = each.value.messages_per_second
  average_message_size_bytes = each.value.average_message_size_bytes
  connections                = lookup(each.value, "connections", null)
  queues                     = lookup(each.value, "queues", null)
  retained_storage_gb        = lookup(each.value, "retained_storage_gb", null)
}
output "answers" {
  value = { for k, d in data.ferrymq_instance_type_recommendation.w :
    k => { instance_type = d.instance_type, reason = d.reason,
           sustained = d.sustained_messages_per_second, measured_on = d.measured_on } }
}
"""


def figure(engine: str, instance_type: str, size: int) -> float:
    for f in TABLE["figures"]:
        if (f["engine_type"], f["instance_type"], f["message_size_bytes"]) == (engine, instance_type, size):
            return f["messages_per_second"]
    pytest.fail(f"no {engine} {instance_type} {size} B figure in throughput.json", pytrace=False)


def best(engine: str, size: int) -> float:
    return max(f["messages_per_second"] for f in TABLE["figures"]
               if f["engine_type"] == engine and f["message_size_bytes"] == size)


@pytest.fixture(scope="module")
def tf(tmp_path_factory):
    """A Terraform working directory with the provider and a throwaway PKI (the data source
    talks to no agent, but the provider is configured with credentials as always)."""
    work = labmod.WORK / "acceptance-recommendation"
    if work.exists():
        subprocess.run(["rm", "-rf", str(work)], check=True)
    pki = tmp_path_factory.mktemp("pki")
    labmod.run([labmod.BIN_DIR / labmod.AGENT_BIN, "pki", "init", "--dir", pki / "p"])
    env = {"FERRYMQ_CA_CERT": str(pki / "p" / "ca.pem"), "FERRYMQ_CLIENT_CERT": str(pki / "p" / "client.pem"),
           "FERRYMQ_CLIENT_KEY": str(pki / "p" / "client-key.pem")}
    t = labmod.Terraform(work, extra_env=env)
    (t.workdir / "main.tf").write_text(MAIN_TF)
    return t


def flat(text: str) -> str:
    return " ".join(text.replace("│", " ").split())


def test_three_workloads_get_the_smallest_type_that_fits(tf):
    micro_1k = figure("RabbitMQ", "mq.t3.micro", 1024)
    workloads = {
        # A light RabbitMQ load: well under what mq.t3.micro sustains.
        "light_rabbitmq": {"engine_type": "RabbitMQ", "deployment_mode": "SINGLE_INSTANCE",
                           "messages_per_second": str(int(micro_1k // 4)), "average_message_size_bytes": "1024",
                           "connections": "100", "queues": "20", "retained_storage_gb": "5"},
        # Many connections: Amazon MQ's 5,000 per node on mq.m5.large is too few.
        "many_connections": {"engine_type": "RabbitMQ", "deployment_mode": "SINGLE_INSTANCE",
                             "messages_per_second": "100", "average_message_size_bytes": "1024",
                             "connections": "8000", "queues": "100"},
        # ActiveMQ on EBS (the single-instance default): mq.m5 only.
        "activemq_ebs": {"engine_type": "ActiveMQ", "deployment_mode": "SINGLE_INSTANCE",
                         "messages_per_second": "50", "average_message_size_bytes": "4096",
                         "connections": "200", "retained_storage_gb": "50"},
    }
    tf.write_vars({"workloads": workloads})
    res = tf.apply()
    assert "Apply complete!" in res.output, res.output
    answers = tf.output()["answers"]
    for name, a in answers.items():
        print(f"\n{name}: {workloads[name]}\n  -> {a['instance_type']} ({a['sustained']} msg/s): {a['reason']}")
        labmod.record_result(f"recommendation_{name}", a["instance_type"])

    light = answers["light_rabbitmq"]
    assert light["instance_type"] == "mq.t3.micro", light
    assert "smallest type offered for RabbitMQ SINGLE_INSTANCE on ebs and it fits" in light["reason"], light
    assert "100 of 500 connections per node" in light["reason"], light
    assert "bench_instance_types.py" in light["measured_on"], light
    assert light["sustained"] >= micro_1k // 4

    conn = answers["many_connections"]
    assert conn["instance_type"] == "mq.m5.xlarge", conn
    assert "mq.m5.large is too small: 8,000 connections exceed its quota of 5,000 connections per node" \
        in conn["reason"], conn

    amq = answers["activemq_ebs"]
    assert amq["instance_type"] == "mq.m5.large", amq
    assert "smallest type offered for ActiveMQ SINGLE_INSTANCE on ebs" in amq["reason"], amq
    assert "200 of 2,000 connections per protocol" in amq["reason"], amq


def test_a_workload_nothing_carries_fails_the_plan_naming_the_attribute(tf):
    too_fast = int(best("RabbitMQ", 1024) * 10)
    cases = [
        ({"messages_per_second": str(too_fast)}, "messages_per_second",
         f"no instance type fits; even mq.m5.4xlarge: {too_fast:,} msg/s of 1024 bytes exceed"),
        ({"messages_per_second": "10", "queues": "1000000"}, "queues",
         "no instance type fits; even mq.m5.4xlarge: 1,000,000 queues exceed its quota of 240,000"),
        ({"messages_per_second": "10", "deployment_mode": "ACTIVE_STANDBY_MULTI_AZ"}, "deployment_mode",
         "deployment_mode ACTIVE_STANDBY_MULTI_AZ is for ActiveMQ brokers, not RabbitMQ"),
    ]
    for extra, attribute, message in cases:
        w = {"engine_type": "RabbitMQ", "deployment_mode": "SINGLE_INSTANCE", "average_message_size_bytes": "1024",
             **extra}
        tf.write_vars({"workloads": {"w": w}})
        res = tf.plan()
        out = flat(res.output)
        assert res.rc == 1, f"plan of {w} did not fail:\n{res.output}"
        assert "No instance type fits the workload" in out or f"Invalid {attribute}" in out, res.output
        assert message in out, f"expected {message!r} in:\n{res.output}"
        assert f'data.ferrymq_instance_type_recommendation.w["w"]' in out, res.output
        assert attribute in out, res.output
