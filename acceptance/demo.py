#!/usr/bin/env python3
"""The FerryMQ demo (run through `bash scripts/demo`, which installs and builds first).

up:   one local appliance host (lab prefix fmqd, 10.79.1.0/24), `terraform apply` of
      examples/rabbitmq-single-instance in .work/demo, one message sent and received with pika,
      then the endpoint, the console URL and its login, and how to tear it all down.
down: `terraform destroy`, then the host removed.
"""

from __future__ import annotations

import argparse
import json
import secrets
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import lab as labmod  # noqa: E402

PREFIX = "fmqd"
NET = "10.79.1"
DEMO_DIR = labmod.WORK / "demo"
EXAMPLE = labmod.REPO / "examples" / "rabbitmq-single-instance"
USERNAME = "demo"
QUEUE = "ferrymq-demo"


def say(msg: str) -> None:
    print(f"demo: {msg}", flush=True)


def down() -> int:
    ok = True
    state = DEMO_DIR / "terraform.tfstate"
    try:
        lab = labmod.Lab.load(PREFIX)
    except labmod.LabError:
        lab = None
    if state.exists() and lab is not None and lab.hosts and lab.agent_alive(lab.hosts[0]):
        say("terraform destroy ...")
        tf = labmod.Terraform(DEMO_DIR, lab)
        res = tf.destroy(check=False)
        if res.rc != 0:
            ok = False
            say(f"terraform destroy failed (exit {res.rc}); removing the host anyway:\n{res.output[-3000:]}")
        else:
            say(f"broker destroyed in {res.seconds:.1f} s")
    say("removing the appliance host ...")
    (lab or labmod.Lab(prefix=PREFIX, net=NET)).down()
    left = labmod.Lab(prefix=PREFIX, net=NET).leftovers()
    if left:
        say("left behind: " + ", ".join(left))
        ok = False
    shutil.rmtree(DEMO_DIR, ignore_errors=True)
    say("down" if ok else "down, with problems (see above)")
    return 0 if ok else 1


def up() -> int:
    import amqp  # needs pika: from the venv scripts/setup-host makes

    if (DEMO_DIR / "terraform.tfstate").exists() or (labmod.WORK / f"lab-{PREFIX}").exists():
        say("a previous demo exists: removing it first")
        down()

    say("making one appliance host (network namespace fmqd-h1, a blank loop-device volume, ferrymq-agent) ...")
    lab = labmod.Lab(prefix=PREFIX, net=NET)
    secs = lab.up(hosts=1)
    h = lab.hosts[0]
    say(f"host {h.address} ready in {secs:.1f} s (agent log: {h.log_path})")

    DEMO_DIR.mkdir(parents=True, exist_ok=True)
    tf = labmod.Terraform(DEMO_DIR, lab, example=EXAMPLE)
    password = secrets.token_urlsafe(18)  # letters, digits, - and _: nothing Amazon MQ refuses
    tf.write_vars({
        "broker_name": "demo-rabbitmq",
        "host": h.address,
        "volume": h.loop,
        "users": [{"username": USERNAME, "password": password, "console_access": True}],
    })
    (DEMO_DIR / "terraform.tfvars.json").chmod(0o600)

    say(f"terraform apply in {DEMO_DIR} ...")
    res = tf.apply(check=False)
    print(res.stdout, flush=True)
    if res.rc != 0:
        print(res.stderr, file=sys.stderr)
        say(f"terraform apply failed (exit {res.rc}); tear down with: bash scripts/demo down")
        return 1
    out = tf.output()
    say(f"apply took {res.seconds:.1f} s; status {out.get('status')}")

    endpoint = out["amqp_endpoint"]
    body = f"hello from FerryMQ at {time.strftime('%Y-%m-%d %H:%M:%S')}".encode()
    amqp.publish_confirmed(endpoint, USERNAME, password, QUEUE, [body])
    got = amqp.consume(endpoint, USERNAME, password, QUEUE, 1, timeout=30)
    if got != [body]:
        say(f"sent {body!r} but received {got!r}")
        return 1
    say(f"sent and received one persistent message on queue {QUEUE!r}: {got[0].decode()}")

    env = "\n".join(f"    export {k}={v}" for k, v in
                    {**lab.provider_env(), "TF_CLI_CONFIG_FILE": tf.cli_config, "CHECKPOINT_DISABLE": "1"}.items())
    print(f"""
FerryMQ demo is up.

  broker id       {out['broker_id']}
  status          {out['status']}
  AMQP endpoint   {endpoint}
  console URL     {out['console_url']}
  console login   {USERNAME} / {password}

The host is a network namespace on this machine, so both addresses work from here (e.g.
`curl --cacert ca.pem -u {USERNAME}:{password} {out['console_url']}/api/overview`,
with ca.pem from `terraform output -raw ca_certificate`: every listener is TLS). To drive it with Terraform yourself:

    cd {DEMO_DIR}
{env}
    {labmod.TERRAFORM} plan

Tear it all down (destroys the broker, removes the host):

    bash scripts/demo down
""", flush=True)
    (DEMO_DIR / "demo.json").write_text(json.dumps({**out, "username": USERNAME}, indent=2) + "\n")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cmd", nargs="?", default="up", choices=["up", "down"])
    args = ap.parse_args()
    try:
        return up() if args.cmd == "up" else down()
    except (labmod.LabError, labmod.TerraformError) as e:
        say(f"error: {e}")
        say("tear down with: bash scripts/demo down")
        return 1


if __name__ == "__main__":
    sys.exit(main())
