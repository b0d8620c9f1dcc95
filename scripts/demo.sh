#!/usr/bin/env bash
# The README demo (`make demo`): a site on this machine, provisioned and validated; a GPU falls off
# the bus; `gpudc reprovision` takes the node out, reimages it through its BMC, provisions and
# validates it, and puts it back. Prints what it does at each step; the HTML report path at the end.
#
#   DEMO_NODE  the node to break (default h200-01)      DEMO_OUT  where reports go (default build/demo)
#
# Needs root (the lab uses network namespaces and systemd-nspawn). `make demo` does the set-up
# (venv + Debian packages) first. The lab is taken down on exit if this script brought it up.
set -euo pipefail
cd "$(dirname "$0")/.."

NODE=${DEMO_NODE:-h200-01}
OUT=${DEMO_OUT:-$PWD/build/demo}
STACK=lab

bold=$'\033[1m' red=$'\033[1;31m' green=$'\033[1;32m' reset=$'\033[0m'
[[ -t 2 ]] || { bold='' red='' green='' reset=''; }
step=0
say() { step=$((step + 1)); printf '\n%s==> [%3ds] %d. %s%s\n' "$bold" "$SECONDS" "$step" "$*" "$reset" >&2; }
note() { printf '    %s\n' "$*" >&2; }
die() { printf '%sdemo failed at step %d: %s%s\n' "$red" "$step" "$*" "$reset" >&2; exit 1; }

say "set-up: checking the tools"
[[ $(id -u) -eq 0 ]] || die "the lab needs root (network namespaces, systemd-nspawn)"
if ! command -v gpudc >/dev/null 2>&1; then
  [[ -x .venv/bin/gpudc ]] || die "no gpudc on PATH and no .venv; run \`make demo\` (it sets up the venv)"
  export PATH="$PWD/.venv/bin:$PATH"
fi
for tool in systemd-nspawn mmdebstrap zstd ip ssh; do
  command -v "$tool" >/dev/null 2>&1 || die "\`$tool\` is missing; run \`make system-packages\`"
done
note "gpudc $(gpudc --version | awk '{print $2}') from $(command -v gpudc)"
mkdir -p "$OUT"
rm -f "$OUT"/*.html "$OUT"/*.json "$OUT"/history.db
# The demo's verdicts go to their own history, so earlier demo runs cannot make a node look flapping.
export GPUDC_HISTORY="$OUT/history.db"
note "reports and history in $OUT"

brought_up=0
cleanup() {
  local rc=$?
  if [[ $brought_up -eq 1 ]]; then
    printf '\n%s==> [%3ds] lab down%s\n' "$bold" "$SECONDS" "$reset" >&2
    gpudc lab down || true
  fi
  if [[ $rc -eq 0 ]]; then
    printf '%sdemo done in %ds%s\n' "$green" "$SECONDS" "$reset" >&2
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "gpudc lab up: four Debian hosts (2 x DGX H200, 2 GB200 trays of one NVL72 rack), each with a BMC and simulated GPUs"
if gpudc lab status --json >/dev/null 2>&1; then
  note "a lab is already up; using it (and leaving it up)"
else
  brought_up=1
fi
gpudc lab up

say "gpudc lab network: the boot network the hosts came up on (the plan's leaves and spine running FRR; each leaf relays DHCP to Kea on the boot server)"
gpudc lab network
gpudc lab network --json | python3 -c '
import json, sys
doc = json.load(sys.stdin)
bad = [h for h, l in doc["leases"].items() if not l["address"] or not l["relayed_by"]]
down = [s for s, peers in doc["bgp"].items() if not peers or set(peers.values()) != {"Established"}]
sys.exit(f"no relayed lease: {bad}; BGP not Established: {down}" if bad or down else 0)
' || die "a host has no lease through a relay, or a BGP session is down"

say "gpudc plan --stack $STACK: what the site is made of"
gpudc plan --stack "$STACK"

say "gpudc provision --stack $STACK: driver, CUDA, NCCL, DCGM, fabric manager / IMEX on every node (Ansible)"
gpudc provision --stack "$STACK" --json "$OUT/provision.json"

say "gpudc validate --stack $STACK: every node must pass"
gpudc validate --stack "$STACK" --level standard --quiet --json "$OUT/validate-1.json" --html "$OUT/validate-1.html" \
  || die "the freshly provisioned site did not validate clean (see $OUT/validate-1.html)"

say "gpudc lab inject $NODE gpu-lost: GPU 3 of $NODE falls off the bus (XID 79)"
gpudc lab inject "$NODE" gpu-lost 3

say "gpudc validate --stack $STACK: $NODE must now fail, asking for a reboot or a reprovision"
set +e
gpudc validate --stack "$STACK" --level standard --quiet --json "$OUT/validate-2.json" --html "$OUT/validate-2.html"
rc=$?
set -e
[[ $rc -eq 1 ]] || die "validate should exit 1 with $NODE broken (exit $rc)"
action=$(python3 -c 'import json,sys; d={v["node"]: v for v in json.load(open(sys.argv[1]))}; v=d[sys.argv[2]]; print(v["verdict"], v["action"])' \
  "$OUT/validate-2.json" "$NODE")
note "$NODE: $action"
case "$action" in
  "fail reboot" | "fail reprovision") ;;
  *) die "expected $NODE to fail with action reboot or reprovision, got: $action" ;;
esac

# The lab runs Slurm (slurmctld in its own container): its client wrapper shows what the scheduler sees.
SLURM=/run/gpudc-lab/slurm/client
slurm_state() { "$SLURM" sinfo --noheader --Node --nodes="$NODE" --format="%N %T %E" | sed 's/^/    slurmctld: /'; }
say "slurmctld's view of $NODE before: gpudc-probe (HealthCheckProgram) drains a node it finds broken"
for _ in $(seq 1 40); do "$SLURM" sinfo --noheader --Node --nodes="$NODE" --format=%T | grep -q drain && break; sleep 1; done
slurm_state

say "gpudc reprovision $NODE --stack $STACK: drain (scontrol), PXE reimage via Redfish, SSH with its own host key, provision, validate, resume"
gpudc reprovision "$NODE" --stack "$STACK" --yes --reason "demo: gpu-lost (XID 79)" --json "$OUT/reprovision.json" \
  || die "reprovision of $NODE did not bring it back (see above)"
note "its first boot: a DHCP lease through the relays, then cloud-init fetched its own seed by its token URL:"
gpudc lab network --json | python3 -c '
import json, sys
node = sys.argv[1]; lease = json.load(sys.stdin)["leases"][node]
print("    %s: %s (%s) on %s, relayed by %s" % (node, lease["address"], lease["mac"], lease["port"],
      ", ".join(lease["relayed_by"])), file=sys.stderr)
' "$NODE"
grep -h "serving .* of $NODE" /run/gpudc-lab/logs/seed-server.log | tail -n 2 | sed 's/^/    seed server: /' >&2 || true
say "slurmctld's view of $NODE after: back in service"
slurm_state
"$SLURM" sinfo --noheader --Node --nodes="$NODE" --format=%T | grep -qx idle || die "$NODE is not idle in Slurm"

say "gpudc validate --stack $STACK: every node passes again"
gpudc validate --stack "$STACK" --level standard --quiet --json "$OUT/validate-3.json" --html "$OUT/report.html" \
  || die "the site did not validate clean after the reprovision (see $OUT/report.html)"

say "HTML report"
printf '%sHTML report: %s%s\n' "$green" "$OUT/report.html" "$reset"

say "gpudc conformance report --stack $STACK: every node against its software profile, plus its verdict, signed with the site's key"
CONF="$OUT/conformance"
gpudc conformance report --stack "$STACK" --out "$CONF" \
  || die "the lab does not conform to its software profiles (see $CONF/conformance-$STACK.html)"
REPORT="$CONF/conformance-$STACK.json"

say "verify it as a partner would: the site's public key as an allowed-signers line, then plain OpenSSH and gpudc"
gpudc conformance key --stack "$STACK" > "$CONF/allowed_signers"
note "$(cat "$CONF/allowed_signers")"
ssh-keygen -Y verify -f "$CONF/allowed_signers" -I "$STACK" -n gpudc-conformance -s "$REPORT.sig" < "$REPORT" \
  || die "ssh-keygen -Y verify rejected the signed report"
gpudc conformance verify "$REPORT" --allowed-signers "$CONF/allowed_signers" \
  || die "gpudc conformance verify rejected the report"
printf '%sSigned conformance report: %s (signature %s.sig, view %s)%s\n' \
  "$green" "$REPORT" "$REPORT" "$CONF/conformance-$STACK.html" "$reset"
