#!/bin/bash
# tools/make-guest.sh OUTDIR — build VC's test guest for libvirt/QEMU direct kernel boot.
#
# Produces, in OUTDIR:
#   vmlinux      Debian 12's generic kernel (the linux-image-<ver>-amd64 that linux-image-amd64
#                points at), decompressed to an ELF with PVH entry: under TCG it boots ~2x faster
#                than the bzImage because QEMU skips the XZ decompressor.
#   initrd.img   gzip'd newc cpio: busybox-static, dropbear (server + dbclient behind an `ssh`
#                wrapper, sftp-server), e2fsprogs' mke2fs, the NFS server and client tools
#                (rpc.nfsd, rpc.mountd, exportfs, mount.nfs) with their shared libraries, the
#                kernel modules they need, and the boot scripts from tools/guest/.
# Rebuilt only when the inputs changed: this script and tools/guest/* (sha256 in OUTDIR/.inputs).
# The downloaded .debs are kept in $VC_VAR/cache/debs (var/cache/debs; VC_DEB_CACHE overrides).
#
# The guest (tools/guest/boot; its header lists every console line):
#   * reads a cloud-init NoCloud seed: the read-only disk labelled `cidata` (ISO9660, or vfat) with
#     meta-data, user-data (#cloud-config) and network-config (v2); attach it as a virtio disk
#     (<serial>cidata</serial>) — a CD-ROM would need the ATA/SCSI modules
#   * applies: hostname/fqdn, ssh_authorized_keys (-> root), write_files, bootcmd, network-config
#     ethernets (match by MAC, set-name, addresses, mtu, gateway4, routes, nameservers, dhcp4),
#     fs_setup (ext2/3/4 on a blank device), mounts (ext*, nfs/nfs4 retried in the background),
#     an NFSv4.2 server for a non-empty /etc/exports (kernel nfsd, no rpcbind), runcmd
#   * volumes: /dev/disk/by-id/virtio-<serial> from /sys/block/vd*/serial (no udev)
#   * dropbear on :22 (keys only); `ssh HOST CMD` works as root with /root/.ssh/id_ed25519
#   * prints VC-IP <ifname> <ip> hostname=<name> mac=<mac> per address and VC-READY <hostname> last
#   * without a seed (the old behaviour): DHCP on eth0 (udhcpc), hostname from DHCP unless
#     vc.hostname=NAME is on the kernel command line; VC-IP eth0 ..., VC-DISK ..., VC-READY
#   * busybox acpid: the ACPI power button (virDomainShutdown) -> poweroff; vc.noacpid=1 leaves
#     acpid out (to exercise the destroy fallback); vc.ping=IP[,IP...] -> VC-PING lines
#   * busybox init is PID 1: `reboot` / `poweroff` inside the guest work (on_reboot=restart)
#
# Network: only the Debian archive (`apt-get download`; no package is installed on this machine).
# Needs apt-get, dpkg-deb, tar, gzip, python3, readelf (binutils), sha256sum; cpio if present,
# else busybox's.
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 OUTDIR" >&2; exit 2; }
OUTDIR=$1
SELF=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
# shellcheck source=tools/lib.sh
. "$(dirname "$SELF")/lib.sh"

HERE=$(dirname "$SELF")
GSRC=$HERE/guest
VARDIR=${VC_VAR:-$(cd "$HERE/.." && pwd)/var}
DEBCACHE=${VC_DEB_CACHE:-$VARDIR/cache/debs}
# a machine-wide copy outlives a checkout: a fresh clone takes the .debs from there (and so
# builds without the mirror); VC_DEB_MACHINE_CACHE= (empty) turns it off
MCACHE=${VC_DEB_MACHINE_CACHE-/var/cache/vc/debs}

# the inputs: this script and every file under tools/guest/ (names and contents)
HASH=$(cd "$HERE" && { sha256sum "$(basename "$SELF")"; find guest -type f | LC_ALL=C sort | xargs -r sha256sum; } \
       | sha256sum | cut -d' ' -f1)
if [ -s "$OUTDIR/vmlinux" ] && [ -s "$OUTDIR/initrd.img" ] \
   && [ "$(cat "$OUTDIR/.inputs" 2>/dev/null)" = "$HASH" ]; then
  log "up to date: $OUTDIR/vmlinux $OUTDIR/initrd.img (inputs unchanged; delete them to rebuild)"
  exit 0
fi

T0=$(date +%s.%N)
el() { awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}'; }
for f in init inittab boot shutdown poweroff.sh udhcpc.script ssh yaml2sh.awk; do
  [ -f "$GSRC/$f" ] || { log "ERROR: missing $GSRC/$f"; exit 1; }
done
mkdir -p "$OUTDIR" "$DEBCACHE"
WORK=$(mktemp -d /tmp/vc-make-guest.XXXXXX)
trap 'rm -rf "$WORK"; rm -f "$OUTDIR"/.vmlinux.tmp.$$ "$OUTDIR"/.initrd.img.tmp.$$' EXIT
# apt-get download drops root to _apt: let it write here (avoids the "unsandboxed" warning)
chmod 755 "$WORK"

# --- 1. packages: the kernel linux-image-amd64 points at + the tools + their libraries ----------
resolve_kpkg() {
  apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}'
}
KPKG=$(resolve_kpkg)
if [ -z "$KPKG" ]; then
  log "apt-cache cannot resolve linux-image-amd64: apt-get update"
  apt-get -o DPkg::Lock::Timeout=600 update -q >&2
  KPKG=$(resolve_kpkg)
fi
[ -n "$KPKG" ] || { log "ERROR: cannot resolve linux-image-amd64 even after apt-get update"; exit 1; }
KVER=${KPKG#linux-image-}
# the libraries are found by readelf below; a soname no package here ships stops the build
PKGS="$KPKG busybox-static dropbear-bin openssh-sftp-server nfs-kernel-server nfs-common e2fsprogs
  netbase libtirpc-common
  libc6 libcrypt1 zlib1g libtomcrypt1 libtommath1 libgmp10 libwrap0 libnsl2 libtirpc3
  libgssapi-krb5-2 libkrb5-3 libk5crypto3 libkrb5support0 libkeyutils1 libcom-err2
  libblkid1 libuuid1 libmount1 libselinux1 libpcre2-8-0 libext2fs2"
# exact file names of the candidate versions; download only what the cache lacks
# shellcheck disable=SC2086
URIS=$(apt-get download --print-uris $PKGS 2>"$WORK/uris.err") || {
  log "apt-get download --print-uris failed ($(head -1 "$WORK/uris.err")): apt-get update"
  apt-get -o DPkg::Lock::Timeout=600 update -q >&2
  # shellcheck disable=SC2086
  URIS=$(apt-get download --print-uris $PKGS)
}
DEBS=""; NEED=""
while read -r _ file size _; do
  [ -n "$file" ] || continue
  DEBS="$DEBS $file"
  if [ "$(stat -c %s "$DEBCACHE/$file" 2>/dev/null)" != "$size" ] && [ -n "$MCACHE" ] &&
     [ "$(stat -c %s "$MCACHE/$file" 2>/dev/null)" = "$size" ]; then
    mkdir -p "$DEBCACHE"; cp "$MCACHE/$file" "$DEBCACHE/$file"
  fi
  [ "$(stat -c %s "$DEBCACHE/$file" 2>/dev/null)" = "$size" ] || NEED="$NEED ${file%%_*}"
done <<< "$URIS"
if [ -n "$NEED" ]; then
  log "downloading$NEED"
  mkdir -p "$WORK/dl"; chmod 755 "$WORK/dl"
  # shellcheck disable=SC2086
  ( cd "$WORK/dl" && apt-get download -q $NEED >/dev/null 2>&1 ) || ( cd "$WORK/dl" && apt-get download $NEED >&2 )
  for f in "$WORK"/dl/*.deb; do
    rm -f "$DEBCACHE/${f##*/}"; rm -f "$DEBCACHE/$(basename "${f%%_*}")"_*.deb
    mv "$f" "$DEBCACHE/"
    [ -z "$MCACHE" ] || { mkdir -p "$MCACHE" && cp "$DEBCACHE/${f##*/}" "$MCACHE/"; } || true
  done
fi
S=$WORK/sys   # every package's files (the kernel: only what is needed)
mkdir -p "$S"
for f in $DEBS; do
  case "$f" in
    linux-image-*)
      dpkg-deb --fsys-tarfile "$DEBCACHE/$f" | tar -x -C "$S" --wildcards "./boot/vmlinuz-$KVER" \
        "./lib/modules/$KVER/kernel/drivers/*" "./lib/modules/$KVER/kernel/fs/*" \
        "./lib/modules/$KVER/kernel/net/*" "./lib/modules/$KVER/kernel/lib/*" \
        "./lib/modules/$KVER/kernel/crypto/*" ;;
    *) dpkg-deb -x "$DEBCACHE/$f" "$S" ;;
  esac
done
log "kernel $KPKG; $(echo $DEBS | wc -w) packages extracted after $(el)s"
[ -f "$S/boot/vmlinuz-$KVER" ] || { log "ERROR: no /boot/vmlinuz-$KVER in $KPKG"; exit 1; }

# Uncompressed ELF vmlinux (PVH entry, CONFIG_PVH=y): QEMU boots it without running the XZ
# decompressor, which under TCG halves the time to the guest's IP. ~65 MB on disk.
python3 - "$S/boot/vmlinuz-$KVER" "$OUTDIR/.vmlinux.tmp.$$" <<'PY'
import lzma, sys
d = open(sys.argv[1], 'rb').read()
i = d.find(b'\xfd7zXZ\x00')
assert i > 0, 'no xz payload in bzImage'
out = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(d[i:])
assert out[:4] == b'\x7fELF', 'decompressed payload is not an ELF'
open(sys.argv[2], 'wb').write(out)
PY

# --- 2. initramfs tree ------------------------------------------------------------------------
R=$WORK/root
mkdir -p "$R"/{bin,sbin,usr/bin,usr/sbin,usr/lib,etc/acpi,etc/udhcpc,etc/dropbear,etc/vc,proc,sys,dev,run,tmp,root/.ssh} \
         "$R"/{var/log,var/lib/nfs,lib/modules,lib/x86_64-linux-gnu,lib64}
chmod 700 "$R/root" "$R/root/.ssh"; chmod 1777 "$R/tmp"
cp "$S/bin/busybox" "$R/bin/busybox"
for a in $("$R/bin/busybox" --list); do
  [ "$a" = busybox ] || ln -sf /bin/busybox "$R/bin/$a"
done
rm -f "$R/bin/mke2fs"   # busybox's makes ext2 only: e2fsprogs' /sbin/mke2fs instead
ln -sf ../run "$R/var/run"; ln -sf /proc/mounts "$R/etc/mtab"

# binaries from the packages + every shared library they need (readelf -d NEEDED, transitively)
BINS="usr/sbin/dropbear usr/bin/dbclient usr/bin/dropbearkey usr/bin/dropbearconvert
      usr/lib/openssh/sftp-server usr/sbin/rpc.nfsd usr/sbin/rpc.mountd usr/sbin/exportfs
      sbin/mount.nfs sbin/mke2fs"
# shellcheck disable=SC2086
LIBS=$(python3 - "$S" "$R" $BINS <<'PY'
import os, shutil, subprocess, sys
S, R, bins = sys.argv[1], sys.argv[2], sys.argv[3:]
dirs = ['lib/x86_64-linux-gnu', 'usr/lib/x86_64-linux-gnu', 'lib', 'usr/lib']
def needed(path):
    out = subprocess.run(['readelf', '-d', path], capture_output=True, text=True, check=True).stdout
    return [l.split('[', 1)[1].split(']', 1)[0] for l in out.splitlines() if '(NEEDED)' in l]
todo, done, missing = [], set(), []
for b in bins:
    src = os.path.join(S, b)
    if not os.path.isfile(src):
        sys.exit('make-guest: ERROR: %s is in none of the packages' % b)
    dst = os.path.join(R, 'usr/lib/sftp-server' if b.endswith('/sftp-server') else b)
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    shutil.copy2(src, dst)
    todo.append((b, dst))
while todo:
    who, path = todo.pop()
    for so in needed(path):
        if so in done:
            continue
        for d in dirs:
            src = os.path.join(S, d, so)
            if os.path.exists(src):
                dst = os.path.join(R, 'lib/x86_64-linux-gnu', so)
                shutil.copy2(os.path.realpath(src), dst)
                done.add(so)
                todo.append((so, dst))
                break
        else:
            missing.append('%s (needed by %s)' % (so, who))
            done.add(so)
if missing:
    sys.exit('make-guest: ERROR: shared libraries in none of the packages: ' + ', '.join(missing)
             + ' -- add their packages to PKGS')
print(' '.join(sorted(done)))
PY
)
cp "$S/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" "$R/lib/x86_64-linux-gnu/"
ln -sf /lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 "$R/lib64/ld-linux-x86-64.so.2"
ln -sf mount.nfs "$R/sbin/mount.nfs4"
for m in mkfs.ext2 mkfs.ext3 mkfs.ext4; do ln -sf mke2fs "$R/sbin/$m"; done
cp "$S/etc/netconfig" "$S/etc/protocols" "$S/etc/services" "$S/etc/mke2fs.conf" "$R/etc/"

# --- 3. kernel modules, in insmod order (the depends= closure from each .modinfo), in groups:
#        boot  loaded at boot: virtio (pci, blk, net, rng), ACPI button, evdev, isofs (the seed)
#        vfat  a vfat seed;  ext4  before mounting a local disk;  nfsd  before exporting;
#        nfs   before an NFS mount
MD=$S/lib/modules/$KVER
MODS=$(python3 - "$MD" "$R/lib/modules" <<'PY'
import lzma, os, struct, sys
md, out = sys.argv[1], sys.argv[2]
groups = [
    ('boot', 'virtio_pci virtio_blk virtio_net virtio_rng button evdev isofs'),
    ('vfat', 'vfat nls_cp437 nls_ascii nls_utf8'),
    ('ext4', 'crc32c_generic ext4'),
    ('nfsd', 'nfsd'),
    ('nfs', 'nfsv4'),
]
paths = {}
for dp, _, fs in os.walk(md):
    for f in fs:
        for ext in ('.ko', '.ko.xz'):
            if f.endswith(ext):
                paths[f[:-len(ext)].replace('-', '_')] = os.path.join(dp, f)
def data(m):
    p = paths[m]
    return lzma.open(p).read() if p.endswith('.xz') else open(p, 'rb').read()
def modinfo(d):
    """the .modinfo section of an ELF64 module: {key: [values]}"""
    shoff, = struct.unpack_from('<Q', d, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from('<HHH', d, 0x3A)
    def sh(i):
        name, _, _, _, off, size = struct.unpack_from('<IIQQQQ', d, shoff + i * shentsize)
        return name, off, size
    _, stroff, _ = sh(shstrndx)
    for i in range(shnum):
        name, off, size = sh(i)
        if d[stroff + name:d.index(b'\x00', stroff + name)] == b'.modinfo':
            info = {}
            for kv in d[off:off + size].split(b'\x00'):
                if b'=' in kv:
                    k, v = kv.decode(errors='replace').split('=', 1)
                    info.setdefault(k, []).append(v)
            return info
    return {}
def deps(m):
    v = modinfo(data(m)).get('depends', [''])[0]
    return [x.replace('-', '_') for x in v.split(',') if x]
copied, summary = set(), []
for name, want in groups:
    order = []
    def add(m, chain):   # the whole closure: a group may be loaded without the others
        if m in order:
            return
        if m not in paths:
            sys.exit('make-guest: ERROR: module %s (%s) not in the kernel package' % (m, ' <- '.join(chain)))
        for d in deps(m):
            add(d, chain + [d])
        order.append(m)
    for m in want.split():
        add(m, [m])
    for m in order:
        if m not in copied:
            open(os.path.join(out, m + '.ko'), 'wb').write(data(m))
    copied.update(order)
    open(os.path.join(out, name), 'w').write(' '.join(order) + '\n')
    summary.append('%s: %s' % (name, ' '.join(order)))
print('; '.join(summary))
PY
)

# --- 4. configuration + the boot scripts (tools/guest/) ------------------------------------------
cat > "$R/etc/passwd" <<'PW'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PW
printf 'root:*:19000:0:99999:7:::\nnobody:*:19000:0:99999:7:::\n' > "$R/etc/shadow"; chmod 600 "$R/etc/shadow"
printf 'root:x:0:\ntty:x:5:\nnogroup:x:65534:\n' > "$R/etc/group"
printf '/bin/sh\n/bin/ash\n' > "$R/etc/shells"
printf 'passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n' > "$R/etc/nsswitch.conf"
printf '127.0.0.1 localhost\n' > "$R/etc/hosts"
: > "$R/etc/exports"; : > "$R/etc/fstab"; : > "$R/etc/resolv.conf"
printf 'PWRF poweroff.sh\n' > "$R/etc/acpid.conf"
install -m 755 "$GSRC/init" "$R/init"
install -m 644 "$GSRC/inittab" "$R/etc/inittab"
install -m 755 "$GSRC/boot" "$GSRC/shutdown" "$R/etc/vc/"
install -m 644 "$GSRC/yaml2sh.awk" "$R/etc/vc/"
install -m 755 "$GSRC/poweroff.sh" "$R/etc/acpi/poweroff.sh"
install -m 755 "$GSRC/udhcpc.script" "$R/etc/udhcpc/default.script"
install -m 755 "$GSRC/ssh" "$R/usr/bin/ssh"

if command -v cpio >/dev/null; then CPIO="cpio --quiet"; else CPIO="$R/bin/busybox cpio"; fi
( cd "$R" && find . | LC_ALL=C sort | $CPIO -o -H newc 2>/dev/null ) | gzip -9 > "$OUTDIR/.initrd.img.tmp.$$"
# install atomically, initrd last, stamp after: a half-finished build never looks up to date
rm -f "$OUTDIR/.inputs"
mv -f "$OUTDIR/.vmlinux.tmp.$$" "$OUTDIR/vmlinux"
mv -f "$OUTDIR/.initrd.img.tmp.$$" "$OUTDIR/initrd.img"
echo "$HASH" > "$OUTDIR/.inputs"
log "built in $(el)s: $OUTDIR/vmlinux ($KVER, $(du -k "$OUTDIR/vmlinux" | cut -f1) KiB)" \
    "$OUTDIR/initrd.img ($(du -k "$OUTDIR/initrd.img" | cut -f1) KiB; unpacked $(du -sk "$R" | cut -f1) KiB)"
log "libraries: $LIBS"
log "modules: $MODS"
