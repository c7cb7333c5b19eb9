#!/bin/bash
# tools/make-image.sh [OUT] — a real Debian 12 cloud-init image, built from Debian packages only.
#
#   mmdebstrap --mode=root --variant=minbase bookworm + the kernel, systemd, cloud-init, OpenSSH,
#   the NFS server/client, ifupdown + isc-dhcp-client (cloud-init's eni renderer), resolvconf
#   -> one ext4 filesystem (mke2fs -d, no partition table, no boot loader) -> qcow2.
#   Boot it by direct kernel boot with the image's own kernel and initrd:
#     <kernel>OUT.vmlinuz</kernel> <initrd>OUT.initrd.img</initrd>
#     <cmdline>root=/dev/vda ro console=ttyS0</cmdline>   (the qcow2, or an overlay of it, as vda)
#   and configure it with the same NoCloud seed as the test guest (a disk labelled cidata).
#
# OUT: the qcow2 to write (default var/images/debian-12.qcow2; a directory means OUT/debian-12.qcow2).
# Next to it: OUT-without-.qcow2 + .vmlinuz / .initrd.img / .build.log, and OUT.inputs (the sha256
# of this script): the image is rebuilt only when one of them is missing or this script changed.
# Env: SIZE=3G (the filesystem, i.e. the disk's virtual size), MIRROR=http://deb.debian.org/debian
# (only bookworm main is used).
# Needs root, mmdebstrap (installed with apt-get when missing), mke2fs, qemu-img.
#
# In the image: cloud.cfg.d/90-vc.cfg sets `locale: C.UTF-8` (generating en_US fails in minbase)
# and `datasource_list: [NoCloud, None]` (no probing of cloud metadata services); e2scrub_reap and
# the apt-daily timers are disabled; no SSH host keys (cloud-init makes them per instance);
# /etc/resolv.conf points to resolvconf's (never the build host's); the initrd carries only the
# virtio + ext4 modules (MODULES=list).
set -euo pipefail
SELF=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
ROOT=$(cd "$(dirname "$SELF")/.." && pwd)
# shellcheck source=tools/lib.sh
. "$(dirname "$SELF")/lib.sh"

OUT=${1:-${VC_VAR:-$ROOT/var}/images/debian-12.qcow2}
if [ -d "$OUT" ] || [ "${OUT%/}" != "$OUT" ]; then OUT=${OUT%/}/debian-12.qcow2; fi
mkdir -p "$(dirname "$OUT")"
OUT=$(cd "$(dirname "$OUT")" && pwd)/$(basename "$OUT")
BASE=${OUT%.qcow2}
KERNEL=$BASE.vmlinuz; INITRD=$BASE.initrd.img; BLOG=$BASE.build.log
SIZE=${SIZE:-3G}; MIRROR=${MIRROR:-http://deb.debian.org/debian}
HASH=$( { sha256sum < "$SELF"; echo "SIZE=$SIZE MIRROR=$MIRROR"; } | sha256sum | cut -d' ' -f1)

report() {
  echo "qcow2:   $OUT"
  echo "vmlinuz: $KERNEL"
  echo "initrd:  $INITRD"
}
up_to_date() {  # up_to_date QCOW2: the image, its kernel and initrd exist and match the inputs
  local b=${1%.qcow2}
  [ -s "$1" ] && [ -s "$b.vmlinuz" ] && [ -s "$b.initrd.img" ] &&
    [ "$(cat "$1.inputs" 2>/dev/null)" = "$HASH" ]
}
# a machine-wide copy outlives a checkout (a fresh clone in CI reuses it instead of 4 min of
# mmdebstrap); VC_IMAGE_CACHE= (empty) turns it off
CACHE=${VC_IMAGE_CACHE-/var/cache/vc/images}
CACHED=${CACHE:+$CACHE/$(basename "$OUT")}
if up_to_date "$OUT"; then
  log "up to date (delete $OUT to rebuild)"
  report
  exit 0
fi
if [ -n "$CACHED" ] && up_to_date "$CACHED"; then
  for f in "$CACHED" "${CACHED%.qcow2}.vmlinuz" "${CACHED%.qcow2}.initrd.img"; do
    cp --reflink=auto "$f" "$BASE${f#"${CACHED%.qcow2}"}.tmp.$$"
    mv -f "$BASE${f#"${CACHED%.qcow2}"}.tmp.$$" "$BASE${f#"${CACHED%.qcow2}"}"
  done
  echo "$HASH" > "$OUT.inputs"
  log "copied from the machine cache $CACHED"
  report
  exit 0
fi
[ "$(id -u)" = 0 ] || die "needs root (mmdebstrap --mode=root)"
apt_ensure mmdebstrap
command -v mmtarfilter >/dev/null || die "mmtarfilter (from the mmdebstrap package) is not on PATH"
command -v qemu-img >/dev/null || die "qemu-img is missing"

T0=$(date +%s)
el() { echo "$(( $(date +%s) - T0 ))s"; }
WORK=$(mktemp -d /tmp/vc-make-image.XXXXXX)
chmod 755 "$WORK"
cleanup() {
  # mmdebstrap unmounts what it mounted; this is only for an interrupted run
  for m in dev/pts dev proc sys; do umount -l "$WORK/rootfs/$m" 2>/dev/null || true; done
  rm -rf --one-file-system "$WORK"
  rm -f "$OUT.tmp.$$" "$KERNEL.tmp.$$" "$INITRD.tmp.$$"
}
trap cleanup EXIT

PKGS=linux-image-amd64,systemd-sysv,udev,dbus,cloud-init,openssh-server,nfs-kernel-server,nfs-common
PKGS=$PKGS,ifupdown,isc-dhcp-client,iproute2,netbase,resolvconf,e2fsprogs,procps
log "mmdebstrap bookworm ($MIRROR): $PKGS"
# stdin from /dev/null: without a terminal there mmdebstrap would read a sources.list from stdin
mmdebstrap --mode=root --variant=minbase --include="$PKGS" \
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-include=/usr/share/locale/locale.alias' --dpkgopt='path-exclude=/usr/share/info/*' \
  --customize-hook='echo "LABEL=root / ext4 defaults,errors=remount-ro 0 1" > "$1/etc/fstab"' \
  --customize-hook='echo localhost > "$1/etc/hostname"; : > "$1/etc/machine-id"' \
  --customize-hook='rm -f "$1/etc/resolv.conf"; ln -s /run/resolvconf/resolv.conf "$1/etc/resolv.conf"' \
  --customize-hook='printf "%s\n" "# VC (tools/make-image.sh)" "locale: C.UTF-8" "datasource_list: [NoCloud, None]" > "$1/etc/cloud/cloud.cfg.d/90-vc.cfg"' \
  --customize-hook='chroot "$1" systemctl disable e2scrub_reap.service e2scrub_all.timer' \
  --customize-hook='chroot "$1" systemctl disable apt-daily.timer apt-daily-upgrade.timer || true' \
  --customize-hook='rm -f "$1"/etc/ssh/ssh_host_*' \
  --customize-hook='printf "auto lo\niface lo inet loopback\n\nsource /etc/network/interfaces.d/*\n" > "$1/etc/network/interfaces"' \
  --customize-hook='echo MODULES=list > "$1/etc/initramfs-tools/conf.d/vc"; printf "%s\n" virtio_pci virtio_blk virtio_net ext4 >> "$1/etc/initramfs-tools/modules"; chroot "$1" update-initramfs -u -k all' \
  bookworm "$WORK/rootfs" "deb $MIRROR bookworm main" </dev/null > "$BLOG" 2>&1 \
  || { tail -30 "$BLOG" >&2; die "mmdebstrap failed (log: $BLOG)"; }
log "rootfs $(du -sh "$WORK/rootfs" | cut -f1) after $(el)"
[ -e "$WORK/rootfs/etc/resolv.conf" ] && [ ! -L "$WORK/rootfs/etc/resolv.conf" ] && die "the build host's resolv.conf leaked into the image"
k=$(ls "$WORK"/rootfs/boot/vmlinuz-* | sort -V | tail -1); i=$WORK/rootfs/boot/initrd.img-${k##*/vmlinuz-}
[ -s "$i" ] || die "no initrd for $k"
cp "$k" "$KERNEL.tmp.$$"; cp "$i" "$INITRD.tmp.$$"
mke2fs -q -F -t ext4 -L root -d "$WORK/rootfs" "$WORK/root.raw" "$SIZE" \
  || die "mke2fs -d failed (SIZE=$SIZE too small?)"
rm -rf --one-file-system "$WORK/rootfs"
qemu-img convert -O qcow2 "$WORK/root.raw" "$OUT.tmp.$$"
rm -f "$OUT.inputs"
mv -f "$KERNEL.tmp.$$" "$KERNEL"; mv -f "$INITRD.tmp.$$" "$INITRD"; mv -f "$OUT.tmp.$$" "$OUT"
echo "$HASH" > "$OUT.inputs"
if [ -n "$CACHED" ] && mkdir -p "$CACHE" 2>/dev/null; then
  for f in "$OUT" "$KERNEL" "$INITRD"; do
    cp --reflink=auto "$f" "$CACHE/$(basename "$f").tmp.$$" && mv -f "$CACHE/$(basename "$f").tmp.$$" "$CACHE/$(basename "$f")"
  done
  echo "$HASH" > "$CACHED.inputs"
fi
log "built in $(el): $(du -h "$OUT" | cut -f1) qcow2 (virtual $SIZE), kernel ${k##*/vmlinuz-}," \
    "initrd $(du -h "$INITRD" | cut -f1)"
report
