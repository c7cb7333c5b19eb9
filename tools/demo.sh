#!/bin/bash
# tools/demo.sh — what `make demo` shows once the services run: book a sample cluster with the CLI
# (only when none exists yet) and print how to go on.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CTL="$ROOT/sbin/vc_ctl.py"
if [ -z "$("$CTL" list --json | tr -d '[:space:]' | sed 's/^\[\]$//')" ]; then
  "$CTL" reserve --start now+2m --end now+1h --gateways 1 --computes 2 --comment "make demo sample"
fi
"$CTL" list
cat <<MSG

VC demo is running (private MariaDB under $ROOT/var, configuration $VC_CONFIG).
  export VC_CONFIG=$VC_CONFIG     # optional from this checkout: vc_ctl.py finds var/vc.conf itself
  ./sbin/vc_ctl.py reserve --start now --end now+2h --gateways 1 --computes 2
  ./sbin/vc_ctl.py list | show RACK | extend RACK --end now+3h | delete RACK   (add --json)
Stop everything it started: make stop
MSG
