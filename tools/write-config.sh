#!/bin/bash
# tools/write-config.sh OUT — the demo configuration for the private services under $VC_VAR.
# Kept when it already exists (an operator may have edited it); delete it to get a fresh one.
# Two frontends on Galera (make demo FRONTENDS=2): VC_DB=galera VC_FRONTEND=1|2 — the database
# is the Galera cluster of tools/galera.sh (frontend N on node N first, then the others),
# frontend_id feN; frontend 2 has its own state dir ($VC_VAR/state2) and log, and the same
# disk, console and image paths as frontend 1 (the hypervisor host's, shared).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=tools/lib.sh
. "$ROOT/tools/lib.sh"
VC_TOOL=config
VAR=${VC_VAR:-$ROOT/var}
OUT=${1:-$VAR/vc.conf}
mkdir -p "$VAR/state/images" "$VAR/log"
# the nodes' copy-on-write disks are overlays of this (empty) base image
[ -f "$VAR/state/images/base.qcow2" ] || qemu-img create -q -f qcow2 "$VAR/state/images/base.qcow2" 256M
# make demo HOSTS=N: the namespace hosts vh2..vhN (tools/host.sh, already up) as [host:vhI]
# sections, appended to a kept configuration too (those it lacks); this machine's underlay
# address is vh2's .1 (VXLAN between namespace hosts needs IP forwarding here: not enabled)
# All of them share this machine's memory: the first time they are added, localhost's
# memory_mb is split evenly among the N hosts (the same free memory on each, so placement
# spreads a cluster over them). The demo's iSCSI target listens on 127.0.0.1, which only this
# machine's libvirtd reaches: localhost's initiator is 127.0.0.1, and a gateway with a volume
# that lands on a namespace host fails at boot with QEMU's iSCSI error (README, "make demo HOSTS").
extra_hosts() {
  local i u ip mem per
  [ "${VC_HOSTS:-1}" -gt 1 ] || return 0
  mem=$(sed -n '/^\[host:localhost\]/,/^\[/s/^memory_mb *= *//p' "$OUT" | head -n1)
  per=$(( ${mem:-4096} / VC_HOSTS ))
  if ! grep -q "^underlay_ip = 10.230" <(sed -n '/^\[host:localhost\]/,/^\[/p' "$OUT"); then
    u=$(bash "$ROOT/tools/host.sh" uri vh2); ip=${u#*@}; ip=${ip%%/*}
    sed -i -e "/^\[host:localhost\]/a underlay_ip = ${ip%.2}.1\ninitiator = 127.0.0.1" \
      -e "/^\[host:localhost\]/,/^\[/s/^memory_mb *= *.*/memory_mb = $per/" "$OUT"
  else
    per=$mem
  fi
  for i in $(seq 2 "$VC_HOSTS"); do
    grep -q "^\[host:vh$i\]" "$OUT" 2>/dev/null && continue
    u=$(bash "$ROOT/tools/host.sh" uri "vh$i"); ip=${u#*@}; ip=${ip%%/*}
    printf '\n[host:vh%s]\nuri = %s\nmemory_mb = %s\nvcpus = 4\nunderlay_ip = %s\n' \
      "$i" "$u" "$per" "$ip" >>"$OUT"
  done
}
FE=${VC_FRONTEND:-1}
# make demo ISOLATION=ovs [OVS_BRIDGE=...]: VC_ISOLATION (empty: vxlan for a new file, a kept one
# as it is) and VC_OVS_BRIDGE; a kept file must already say that isolation
ISO=${VC_ISOLATION:-}
OVS_BRIDGE=${VC_OVS_BRIDGE:-vcovs0}
case "${ISO:-vxlan}" in vxlan|ovs) ;; *) die "ISOLATION=$ISO: this demo writes vxlan or ovs";; esac
if [ "$ISO" = ovs ] && [ "${VC_HOSTS:-1}" -gt 1 ]; then
  die "ISOLATION=ovs runs the demo on this one host (HOSTS=1): the namespace hosts have no OVS"
fi
if [ -n "$ISO" ] && [ -s "$OUT" ]; then
  have=$(sed -n 's/^isolation *= *//p' "$OUT" | head -n1)
  [ "${have:-vxlan}" = "$ISO" ] || die "$OUT says isolation = ${have:-vxlan}, not $ISO: delete it (make stop first), or run make demo without ISOLATION="
fi
isolation_conf() {
  if [ "${ISO:-vxlan}" = ovs ]; then
    echo "# each cluster is the VLAN (its isolation id) of this Open vSwitch bridge (tools/ovs.sh"
    echo "# starts OVS in userspace here); its DHCP server and .1 join the VLAN through a veth"
    echo "isolation = ovs"
    echo "ovs_bridge = $OVS_BRIDGE"
  else
    echo "# one host: each cluster's own bridge is its whole segment (VXLAN joins hosts that have"
    echo "# [host:NAME] underlay_ip)"
    echo "isolation = vxlan"
  fi
}
DB_MARK="# database: ${VC_DB:-private}"
if [ -s "$OUT" ] && ! grep -qx "$DB_MARK" "$OUT" && { [ "${VC_DB:-private}" = galera ] || grep -q '^# database: galera' "$OUT"; }; then
  die "$OUT was written for another database (it lacks the line '$DB_MARK'): delete it, or run make demo with the FRONTENDS it was made for"
fi
[ -s "$OUT" ] && { log "keeping $OUT"; extra_hosts; exit 0; }
STATE=$VAR/state SHARED_VIRT="" LOGF=$VAR/log/vc.log
if [ "$FE" != 1 ]; then
  STATE=$VAR/state$FE LOGF=$VAR/log/vc$FE.log
  SHARED_VIRT="# the hypervisor host's paths: the same for every frontend
disk_dir = $VAR/state/disks
console_dir = $VAR/state/console
gateway_image = $VAR/state/images/base.qcow2
compute_image = $VAR/state/images/base.qcow2"
  # the key that seals the volumes' CHAP secrets in the database: one for both frontends
  mkdir -p -m 700 "$VAR/state/chap" "$STATE"
  [ -e "$STATE/chap" ] || ln -s "$VAR/state/chap" "$STATE/chap"
fi
# shellcheck disable=SC1091
. "$VAR/db.env"
if [ "${VC_DB:-private}" = galera ]; then
  # shellcheck disable=SC1091
  . "$VAR/galera/galera.env"
  IFS=, read -r -a G_HOSTS <<<"$VC_GALERA_HOSTS"
  hosts=""
  for i in 0 1 2; do hosts="$hosts${hosts:+, }${G_HOSTS[$(( (FE - 1 + i) % 3 ))]}"; done
  DB_SECTION="# the Galera cluster of tools/galera.sh: node $FE first, the others if it fails
host = $hosts
user = $VC_GALERA_USER
password = $VC_GALERA_PASSWORD
name = $VC_GALERA_NAME"
else
  DB_SECTION="unix_socket = $VC_DB_SOCKET
user = $VC_DB_USER
password = $VC_DB_PASSWORD
name = $VC_DB_NAME"
fi
# shellcheck disable=SC1091
. "$VAR/storage/storage.env"
umask 077
cat >"$OUT" <<CONF
# VC demo configuration, written by 'make demo' (tools/write-config.sh).
# Every key is documented in etc/vc.conf.example.
$DB_MARK
[database]
$DB_SECTION

# this machine is the one physical host of the demo
[host:localhost]
uri = qemu:///system
memory_mb = 4096
vcpus = 8

[addresses]
mac_prefix = 52:54:00
private_pool = 10.200.0.0/16
private_prefix = 24
# TEST-NET-2 (RFC 5737): documentation addresses, never routed
public_pool = 198.51.100.10-198.51.100.29
isolation_ids = 100-4094

[limits]
max_hours = 168
max_nodes = 16
max_gateways = 2
max_memory_mb = 2048
max_disk_gb = 20
max_vcpus = 2
max_volumes = 4
max_volume_gb = 10

[defaults]
memory_mb = 128
disk_gb = 1
vcpus = 1

[site]
timezone = UTC
# carol is the demo's admin (tools/web.sh users: alice and bob are ordinary users)
admins = root carol
state_dir = $STATE
log_file = $LOGF
# this frontend's name on the database leases (two frontends on one machine: not the host name)
frontend_id = fe$FE

[virt]
# emulation: /dev/kvm on these machines cannot run stock kernels (set kvm on a real host)
domain_type = qemu
name_prefix = vc
# the tiny guest tools/make-guest.sh builds: prints its DHCP address on the serial console
kernel = $VAR/guest/vmlinux
initrd = $VAR/guest/initrd.img
boot_timeout = 60
shutdown_timeout = 20
$SHARED_VIRT

[register]
registrar = builtin

[web]
# Apache authenticates the frontend's own accounts (pwauth); the demo's are made by
# tools/web.sh users (make demo prints them)
auth = pam

# the demo's iSCSI target host is this machine (tools/storage.sh: sshd on
# 127.0.0.1:$VC_STORAGE_SSH_PORT, tgtd portal 127.0.0.1:$VC_STORAGE_ISCSI_PORT)
[storage]
backend = tgt
backing = file
backing_dir = $VC_STORAGE_BACKING_DIR
tgt_control_port = $VC_STORAGE_TGT_CONTROL

[network]
# the gateways' second NIC (their public_pool address) is on the demo's libvirt network
public_network = vc-public
public_prefix = 24
# default route given to the gateways: empty = none
public_gateway =
$(isolation_conf)
CONF
extra_hosts
echo "config: wrote $OUT" >&2
