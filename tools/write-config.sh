#!/bin/bash
# tools/write-config.sh OUT — the demo configuration for the private services under $VC_VAR.
# Kept when it already exists (an operator may have edited it); delete it to get a fresh one.
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
[ -s "$OUT" ] && { log "keeping $OUT"; exit 0; }
# shellcheck disable=SC1091
. "$VAR/db.env"
# shellcheck disable=SC1091
. "$VAR/storage/storage.env"
umask 077
cat >"$OUT" <<CONF
# VC demo configuration, written by 'make demo' (tools/write-config.sh).
# Every key is documented in etc/vc.conf.example.
[database]
unix_socket = $VC_DB_SOCKET
user = $VC_DB_USER
password = $VC_DB_PASSWORD
name = $VC_DB_NAME

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
state_dir = $VAR/state
log_file = $VAR/log/vc.log

[virt]
# emulation: /dev/kvm on these machines cannot run stock kernels (set kvm on a real host)
domain_type = qemu
name_prefix = vc
# the tiny guest tools/make-guest.sh builds: prints its DHCP address on the serial console
kernel = $VAR/guest/vmlinux
initrd = $VAR/guest/initrd.img
boot_timeout = 60
shutdown_timeout = 20

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
# one host: each cluster's own bridge is its whole segment (VXLAN joins hosts that have
# [host:NAME] underlay_ip)
isolation = vxlan
CONF
echo "config: wrote $OUT" >&2
