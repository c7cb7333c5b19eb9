#!/bin/bash
# tools/demo.sh — what `make demo` shows once the services run: book a sample cluster with the CLI
# (only when no live one exists), start it on the real libvirt/QEMU, and print how to go on.
# (The once-a-minute tick that starts and stops reservations by the clock arrives with vc_cron.)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=tools/lib.sh
. "$ROOT/tools/lib.sh"
CTL="$ROOT/sbin/vc_ctl.py"
if [ "${1:-}" = --stop-clusters ]; then
  # `make stop`: no QEMU guest outlives the demo; each cluster is stopped the normal way
  [ -S "${VC_VAR:-$ROOT/var}/db/mysqld.sock" ] && [ -f "${VC_VAR:-$ROOT/var}/vc.conf" ] || exit 0
  export VC_CONFIG=${VC_CONFIG:-${VC_VAR:-$ROOT/var}/vc.conf}
  for rack in $("$CTL" list --json 2>/dev/null | /usr/bin/python3 -c '
import json, sys
print(" ".join(str(r["rack"]) for r in json.load(sys.stdin)
               if r["state"] in ("starting", "running", "stopping", "failed")))' || true); do
    "$CTL" stop "$rack" || true
  done
  exit 0
fi
# the demo's iSCSI target host: authorize the frontend's key there, register it, pin its host
# key (here the admin is whoever runs make demo: the fingerprint comes from the sshd we started)
VAR=${VC_VAR:-$ROOT/var}
# shellcheck disable=SC1091
. "$VAR/storage/storage.env"
"$CTL" target key >/dev/null
bash "$ROOT/tools/storage.sh" authorize "$VAR/state/ssh/id_ed25519.pub" >/dev/null
if ! "$CTL" target list --json | grep -q '"name": "demo"'; then
  "$CTL" target add demo --address "$VC_STORAGE_ADDRESS" --port "$VC_STORAGE_SSH_PORT" \
    --iscsi-port "$VC_STORAGE_ISCSI_PORT" >/dev/null
fi
"$CTL" target trust demo --fingerprint "$VC_STORAGE_FINGERPRINT" >/dev/null
# the pages' users: alice and bob ordinary, carol an admin ([site] admins of the demo config);
# with [web] auth = pam real local accounts of this machine; passwords made once into
# $VAR/web-users/NAME.password (mode 600), printed below
WEB_USERS=$(VC_CONFIG=${VC_CONFIG:-$VAR/vc.conf} bash "$ROOT/tools/web.sh" users)
# the sample cluster's owner (whoever runs make demo) logs in with a key of their own: theirs if
# they have one, else one made once for the demo
KEY=""
for k in "$HOME/.ssh/id_ed25519" "$HOME/.ssh/id_ecdsa" "$HOME/.ssh/id_rsa"; do
  [ -f "$k.pub" ] && [ -f "$k" ] && { KEY=$k; break; }
done
if [ -z "$KEY" ]; then
  KEY=$VAR/demo/id_ed25519
  [ -f "$KEY" ] || { mkdir -p -m 700 "$VAR/demo"; ssh-keygen -q -t ed25519 -N "" -C "vc demo owner" -f "$KEY"; }
fi
"$CTL" key add "$KEY.pub" --name "make demo" >/dev/null
live=$("$CTL" list --json | /usr/bin/python3 -c '
import json, sys
rows = [r for r in json.load(sys.stdin) if r["state"] not in ("stopped",)]
print(rows[0]["rack"] if rows else "")')
if [ -z "$live" ]; then
  "$CTL" reserve --start now --end now+1h --gateways 1 --computes 2 --iscsi /data:demo:1 \
    --comment "make demo sample"
  live=$("$CTL" list --json | /usr/bin/python3 -c '
import json, sys; print([r["rack"] for r in json.load(sys.stdin) if r["state"] == "reserved"][-1])')
fi
"$CTL" start "$live" --wait-ready || true
"$CTL" list
state=$("$CTL" list --json | /usr/bin/python3 -c '
import json, sys; print(next(r["state"] for r in json.load(sys.stdin) if r["rack"] == int(sys.argv[1])))' "$live")
if [ "$state" != running ]; then
  "$CTL" show "$live" >&2 || true
  die "rack $live did not start (state $state; the error is above): fix the cause, then
  ./sbin/vc_ctl.py start $live     (resumes where it failed; or: ./sbin/vc_ctl.py stop $live)"
fi
"$CTL" status "$live" || log "rack $live runs, but not every node answers yet (vc_ctl.py show $live)"
PUBIP=$("$CTL" show "$live" --json | /usr/bin/python3 -c '
import json, sys; print(next((n["public_ip"] for n in json.load(sys.stdin)["nodes"] if n["public_ip"]), ""))')
cat <<MSG

VC demo is running: private MariaDB and libvirtd under $ROOT/var, configuration $VC_CONFIG.
Web pages: http://127.0.0.1:8080/vc/   (from your machine: ssh -L 8080:localhost:8080 FRONTEND,
then open http://localhost:8080/vc/); the minute tick starts and stops reservations on time.
Rack $live is a real cluster of QEMU guests, yours to use. Log in to its gateway at its public
address (from your machine: ssh -J $(id -un)@FRONTEND root@$PUBIP), then the nodes by name:
  ssh -i $KEY root@$PUBIP
  root@gateway-$live-0:~# ssh compute-$live-0 df -h /data
  ./sbin/vc_ctl.py show $live          (ready, readiness per node, how to log in)
Its gateway has a 1 GB iSCSI volume from target "demo" (sshd + tgtd on this machine), formatted
and mounted on /data and served to the computes over NFS:
  ./sbin/vc_ctl.py target list ; iscsi-ls -s iscsi://127.0.0.1:$VC_STORAGE_ISCSI_PORT
Try (vc_ctl.py finds var/vc.conf itself in this checkout; or export VC_CONFIG=$VC_CONFIG):
  ./sbin/vc_ctl.py reserve --start now --end now+2h --gateways 1 --computes 2
  ./sbin/vc_ctl.py start RACK | status RACK | dump RACK | stop RACK     (add --json)
  ./sbin/vc_ctl.py list | show RACK | extend RACK --end now+3h | delete RACK
Stop everything it started: make stop   (stops the clusters the normal way, then the services)
MSG
if [ -n "$WEB_USERS" ]; then
  echo
  echo "Sign in to the web pages as (the browser asks; passwords kept in $VAR/web-users/):"
  while read -r name role password file; do
    printf '  %-8s %-6s password %s   (%s)\n' "$name" "$role" "$password" "$file"
  done <<<"$WEB_USERS"
else
  echo
  echo "The web pages run in single-user mode ([web] auth = single-user): nobody signs in."
fi
