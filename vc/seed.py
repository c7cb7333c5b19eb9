"""What each node's cloud-init NoCloud seed says, and the seed disk itself.

Every node boots with a small read-only ISO9660 disk labelled ``cidata`` holding three files,
the contract every cloud image (cloud-init's NoCloud data source) and VC's fast test guest read:

``meta-data``
    ``instance-id`` (stable per node and start: cloud-init re-runs its once-per-instance modules
    when it changes) and ``local-hostname``.
``network-config``
    network-config version 2: ``eth0`` on the cluster's private network, and on a gateway
    ``eth1`` with its public address.
``user-data``
    ``#cloud-config``: host name, root's ``authorized_keys`` (the owner's keys and the cluster
    key), ``/etc/hosts`` of every node, on the gateway the cluster's private key (so root on the
    gateway reaches every compute, as on a Rocks frontend) and its iSCSI volumes (``fs_setup``,
    ``mounts``, ``/etc/exports`` served over NFSv4), on a compute the NFS mounts.

:func:`render` is a pure function of a :class:`SeedInput` (no database, no libvirt); its output
is compared with golden files (``tests/data/golden/seed-*``) because the guest's parser is written
against exactly this shape: keep the key order. :func:`write_iso` writes the disk with pycdlib
(pure Python, a few ms a seed).
"""

import io
import ipaddress
import os
import re
import shlex
import tempfile
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import yaml

APPLIANCES = ("gateway", "compute")
FILES = ("meta-data", "network-config", "user-data")
VOLUME_LABEL = "cidata"
FILE_MODE = 0o100400  # S_IFREG | 0400
EXPORT_OPTIONS = "rw,sync,no_subtree_check,no_root_squash"
NFS_OPTIONS = "vers=4.2,_netdev,nofail"
SSH_CONFIG = "Host *\n  StrictHostKeyChecking accept-new\n"
DEVICE_PREFIX = "/dev/disk/by-id/virtio-"

_MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_DOMAIN_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}"
                        r"[a-z0-9])?)*$")
_PATH_RE = re.compile(r"^/[A-Za-z0-9._/-]{0,250}$")
_SERIAL_RE = re.compile(r"^[A-Za-z0-9_-]{1,20}$")  # virtio-blk serials are at most 20 bytes
_INSTANCE_RE = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
_LEASE_URL_RE = re.compile(r"^http://\d{1,3}(\.\d{1,3}){3}:\d{1,5}$")
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{32,128}$")

LEASE_TOKEN_PATH = "/etc/vc/lease.token"
LEASE_PATH = "/usr/local/bin/vc-lease"
LEASE_PROFILE_PATH = "/etc/profile.d/vc-lease.sh"
# vc-lease: POSIX sh; talks HTTP with python3 (Debian image: cloud-init's), else busybox nc
# (the fast test guest; raw HTTP/1.0, so refusals show their reasons), else wget (2xx only)
LEASE_SCRIPT = r"""#!/bin/sh
# vc-lease: this cluster's reservation, from VC's lease service on the cluster's own .1
#   vc-lease                    the end and the time left
#   vc-lease extend 2h          extend the end by 2h (30m, 1h30m, ...), all of it or nothing
#   vc-lease extend --longest [2h]   the longest extension that fits (up to 2h)
#   vc-lease release            end the reservation now (the cluster is stopped)
#   vc-lease --json ...         the service's JSON
URL=${VC_LEASE_URL:-@URL@}
TOKEN_FILE=${VC_LEASE_TOKEN_FILE:-/etc/vc/lease.token}
T=${VC_LEASE_TIMEOUT:-10}
FMT=text
[ "$1" = --json ] && { FMT=json; shift; }
die() { echo "vc-lease: $*" >&2; exit 2; }
usage() { sed -n '3,7s/^# //p' "$0" >&2; exit 2; }
tok() {
  if [ -n "${VC_LEASE_TOKEN:-}" ]; then printf '%s' "$VC_LEASE_TOKEN"
  else
    read -r t < "$TOKEN_FILE" 2>/dev/null || die "cannot read $TOKEN_FILE (run as root)"
    printf '%s' "$t"
  fi
}
# req METHOD PATH [BODY] [TOKEN]: the answer's body on stdout; status 0 for 2xx, 1 for a refusal
req() {
  path="$2?format=$FMT"
  if command -v python3 >/dev/null 2>&1; then
    VCL_M=$1 VCL_U=$URL$path VCL_B=${3:-} VCL_T=${4:-} VCL_TO=$T python3 -c '
import os, sys, urllib.request, urllib.error
e = os.environ
r = urllib.request.Request(e["VCL_U"], method=e["VCL_M"],
                           data=e["VCL_B"].encode() if e["VCL_M"] == "POST" else None)
r.add_header("Content-Type", "application/json")
if e["VCL_T"]:
    r.add_header("X-VC-Lease-Token", e["VCL_T"])
try:
    with urllib.request.urlopen(r, timeout=float(e["VCL_TO"])) as f:
        sys.stdout.write(f.read().decode()); sys.exit(0)
except urllib.error.HTTPError as x:
    sys.stdout.write(x.read().decode()); sys.exit(1)
except Exception as x:
    sys.stderr.write("vc-lease: the lease service does not answer: %s\n" % x); sys.exit(3)'
    return $?
  fi
  hp=${URL#http://}; host=${hp%%:*}; port=${hp##*:}
  if command -v nc >/dev/null 2>&1; then
    b=${3:-}
    r=$( { printf '%s %s HTTP/1.0\r\nHost: %s\r\n' "$1" "$path" "$hp"
           printf 'Content-Type: application/json\r\n'
           printf 'Content-Length: %s\r\n' "${#b}"
           [ -n "${4:-}" ] && printf 'X-VC-Lease-Token: %s\r\n' "$4"
           printf '\r\n%s' "$b"; } | nc -w "$T" "$host" "$port" 2>/dev/null)
    [ -n "$r" ] || { echo "vc-lease: the lease service at $URL does not answer" >&2; return 3; }
    code=$(printf '%s\n' "$r" | sed -n '1s/^HTTP\/[0-9.]* \([0-9][0-9]*\).*/\1/p')
    printf '%s\n' "$r" | sed '1,/^\r*$/d'
    case "$code" in 2??) return 0 ;; *) return 1 ;; esac
  fi
  if [ "$1" = POST ]; then
    wget -q -T "$T" -O - --header "Content-Type: application/json" \
      --header "X-VC-Lease-Token: ${4:-}" --post-data "${3:-}" "$URL$path"
  else wget -q -T "$T" -O - "$URL$path"; fi && return 0
  echo "vc-lease: refused or no answer (python3 or nc would show why)" >&2; return 1
}
case "${1:-}" in
  ""|show|status) req GET /lease ;;
  extend)
    shift; longest=false; by=
    for a in "$@"; do
      case "$a" in
        --longest) longest=true ;;
        [0-9]*) case "$a" in *[!0-9dhms]*) die "bad duration: $a" ;; esac; by=$a ;;
        *) usage ;;
      esac
    done
    if [ -n "$by" ]; then body="{\"by\": \"$by\", \"longest\": $longest}"
    elif [ "$longest" = true ]; then body='{"longest": true}'
    else usage; fi
    t=$(tok) || exit 2
    req POST /lease/extend "$body" "$t" ;;
  release) t=$(tok) || exit 2; req POST /lease/release "" "$t" ;;
  -h|--help|help) usage ;;
  *) usage ;;
esac
"""
LEASE_PROFILE = """# the reservation's end at login (vc-lease, VC)
[ -x /usr/local/bin/vc-lease ] && [ -r /etc/vc/lease.token ] && \
  VC_LEASE_TIMEOUT=3 /usr/local/bin/vc-lease 2>/dev/null
"""


@dataclass
class SeedInput:
    """Everything one node's seed says.

    ``hosts`` is ``[(ip, name)]`` of every node of the cluster (this one included);
    ``authorized_keys`` the OpenSSH public key lines for root (owner keys + the cluster public
    key). Gateway only: the public NIC, ``cluster_private_key``/``cluster_public_key`` (OpenSSH
    text / line) and ``volumes`` ``[(serial, mount_point, nfs_export_path)]`` exported to
    ``subnet``. Compute only: ``nfs_mounts`` ``[(server_ip, export_path, mount_point)]``.
    """

    rack: int
    name: str
    appliance: str
    instance_id: str
    domain: str
    mac: str
    ip: str
    prefix: int
    mtu: Optional[int] = None
    public_mac: Optional[str] = None
    public_ip: Optional[str] = None
    public_prefix: Optional[int] = None
    gateway4: Optional[str] = None
    hosts: List[Tuple[str, str]] = field(default_factory=list)
    authorized_keys: List[str] = field(default_factory=list)
    cluster_private_key: Optional[str] = None
    cluster_public_key: Optional[str] = None
    volumes: List[Tuple[str, str, str]] = field(default_factory=list)
    nfs_mounts: List[Tuple[str, str, str]] = field(default_factory=list)
    subnet: Optional[str] = None
    # the lease service (vc.metad) on the cluster's .1, and the cluster's token for it
    lease_url: Optional[str] = None
    lease_token: Optional[str] = None

    @property
    def fqdn(self) -> str:
        return "%s.%s" % (self.name, self.domain)


# ------------------------------------------------------------------------ YAML
class _PureDumper(yaml.SafeDumper):
    """SafeDumper with literal blocks for multi-line strings and quoted MAC addresses (a
    subclass: the process-wide SafeDumper is left as it is)."""


# the same on libyaml's emitter when PyYAML was built with it: identical text (tests/test_seed.py
# checks), ~15 times faster (0.2 ms instead of 3 ms for a gateway's user-data)
_Dumper = type("_Dumper", (getattr(yaml, "CSafeDumper", yaml.SafeDumper),), {})


class _Quoted(str):
    """A string always written single-quoted (MACs: YAML 1.1 reads 52:54:00:00:00:10 as a
    base-60 integer; cloud-init's docs quote them too)."""


def _str(dumper, data):
    if "\n" in data:
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", data)


def _quoted(dumper, data):
    return dumper.represent_scalar("tag:yaml.org,2002:str", str(data), style="'")


for _d in (_PureDumper, _Dumper):
    _d.add_representer(str, _str)
    _d.add_representer(_Quoted, _quoted)


def dump(obj, dumper=None) -> str:
    """YAML as every seed file is written (key order kept, block style, no line folding)."""
    return yaml.dump(obj, Dumper=dumper or _Dumper, sort_keys=False, default_flow_style=False,
                     width=100000)


# ------------------------------------------------------------------------ checks
def _need(ok: bool, what: str, value) -> None:
    if not ok:
        raise ValueError("seed: bad %s: %r" % (what, value))


def _check_ip(what: str, value) -> None:
    try:
        ipaddress.IPv4Address(str(value))
    except ValueError:
        raise ValueError("seed: bad %s: %r" % (what, value)) from None


def _check_line(what: str, value) -> None:
    _need(isinstance(value, str) and value.strip() != "" and "\n" not in value.strip()
          and "\r" not in value, what, value)


def check(s: SeedInput) -> None:
    """Refuse a :class:`SeedInput` that would write a broken or unsafe seed (a bug of the
    caller: everything here was validated or chosen by VC).

    :raises ValueError: naming the field.
    """
    _need(s.appliance in APPLIANCES, "appliance", s.appliance)
    _need(isinstance(s.rack, int) and s.rack >= 0, "rack", s.rack)
    _need(bool(_NAME_RE.match(s.name or "")), "node name", s.name)
    _need(bool(_DOMAIN_RE.match(s.domain or "")), "domain", s.domain)
    _need(bool(_INSTANCE_RE.match(s.instance_id or "")), "instance_id", s.instance_id)
    _need(bool(_MAC_RE.match(s.mac or "")), "mac", s.mac)
    _check_ip("ip", s.ip)
    _need(isinstance(s.prefix, int) and 1 <= s.prefix <= 32, "prefix", s.prefix)
    _need(s.mtu is None or (isinstance(s.mtu, int) and 576 <= s.mtu <= 65535), "mtu", s.mtu)
    for ip, name in s.hosts:
        _check_ip("hosts ip", ip)
        _need(bool(_NAME_RE.match(name or "")), "hosts name", name)
    for line in s.authorized_keys:
        _check_line("authorized key", line)
    gateway = s.appliance == "gateway"
    public = (s.public_mac, s.public_ip, s.public_prefix)
    if not gateway:
        for what, v in (("public_mac", s.public_mac), ("public_ip", s.public_ip),
                        ("public_prefix", s.public_prefix), ("gateway4", s.gateway4),
                        ("cluster_private_key", s.cluster_private_key),
                        ("cluster_public_key", s.cluster_public_key)):
            _need(v is None, what + " (gateway only)", v)
        _need(not s.volumes, "volumes (gateway only)", s.volumes)
    else:
        _need(not s.nfs_mounts, "nfs_mounts (compute only)", s.nfs_mounts)
        _need(all(v is None for v in public) or all(v is not None for v in public),
              "public NIC (mac, ip and prefix together)", public)
        if s.public_mac is not None:
            _need(bool(_MAC_RE.match(s.public_mac)), "public_mac", s.public_mac)
            _check_ip("public_ip", s.public_ip)
            _need(isinstance(s.public_prefix, int) and 1 <= s.public_prefix <= 32,
                  "public_prefix", s.public_prefix)
        else:
            _need(s.gateway4 is None, "gateway4 (needs the public NIC)", s.gateway4)
        if s.gateway4 is not None:
            _check_ip("gateway4", s.gateway4)
        _need((s.cluster_private_key is None) == (s.cluster_public_key is None),
              "cluster key pair (private and public together)", "...")
        if s.cluster_private_key is not None:
            _need(isinstance(s.cluster_private_key, str) and s.cluster_private_key.strip() != ""
                  and "\x00" not in s.cluster_private_key, "cluster_private_key",
                  "(not shown)")
            _check_line("cluster_public_key", s.cluster_public_key)
    for serial, mount_point, export in s.volumes:
        _need(bool(_SERIAL_RE.match(serial or "")), "volume serial", serial)
        _need(bool(_PATH_RE.match(mount_point or "")), "volume mount point", mount_point)
        _need(bool(_PATH_RE.match(export or "")), "volume export path", export)
    if s.volumes:
        try:
            ipaddress.IPv4Network(str(s.subnet))
        except ValueError:
            raise ValueError("seed: bad subnet: %r" % (s.subnet,)) from None
    _need((s.lease_url is None) == (s.lease_token is None), "lease (url and token together)",
          "...")
    if s.lease_url is not None:
        _need(bool(_LEASE_URL_RE.match(s.lease_url)), "lease_url", s.lease_url)
        _need(bool(_TOKEN_RE.match(s.lease_token or "")), "lease_token", "(not shown)")
    for server, export, mount_point in s.nfs_mounts:
        _check_ip("nfs server", server)
        _need(bool(_PATH_RE.match(export or "")), "nfs export path", export)
        _need(bool(_PATH_RE.match(mount_point or "")), "nfs mount point", mount_point)


# ------------------------------------------------------------------------ the three files
def meta_data(s: SeedInput) -> dict:
    return {"instance-id": s.instance_id, "local-hostname": s.name}


def network_config(s: SeedInput) -> dict:
    eth0 = {"match": {"macaddress": _Quoted(s.mac)}, "set-name": "eth0",
            "addresses": ["%s/%d" % (s.ip, s.prefix)]}
    if s.mtu is not None:
        eth0["mtu"] = s.mtu
    ethernets = {"eth0": eth0}
    if s.appliance == "gateway" and s.public_mac is not None:
        eth1 = {"match": {"macaddress": _Quoted(s.public_mac)}, "set-name": "eth1",
                "addresses": ["%s/%d" % (s.public_ip, s.public_prefix)]}
        if s.gateway4 is not None:
            eth1["gateway4"] = s.gateway4
        ethernets["eth1"] = eth1
    return {"version": 2, "ethernets": ethernets}


def _file(path: str, permissions: str, content: str) -> dict:
    return {"path": path, "permissions": permissions, "content": content}


def _with_newline(text: str) -> str:
    # OpenSSH refuses a private key file whose last line has no newline
    return text if text.endswith("\n") else text + "\n"


def hosts_file(s: SeedInput) -> str:
    lines = ["127.0.0.1 localhost"]
    lines += ["%s %s.%s %s" % (ip, name, s.domain, name) for ip, name in s.hosts]
    return "\n".join(lines) + "\n"


def user_data(s: SeedInput) -> dict:
    gateway = s.appliance == "gateway"
    files = [_file("/etc/hosts", "0644", hosts_file(s))]
    if gateway and s.cluster_private_key is not None:
        files.append(_file("/root/.ssh/id_ed25519", "0600",
                           _with_newline(s.cluster_private_key)))
        files.append(_file("/root/.ssh/id_ed25519.pub", "0644",
                           s.cluster_public_key.strip() + "\n"))
    files.append(_file("/root/.ssh/config", "0600", SSH_CONFIG))
    if s.lease_url is not None:
        import base64

        files.append(_file(LEASE_TOKEN_PATH, "0600", s.lease_token + "\n"))
        for path, mode, text in ((LEASE_PATH, "0755", LEASE_SCRIPT.replace("@URL@", s.lease_url)),
                                 (LEASE_PROFILE_PATH, "0644", LEASE_PROFILE)):
            # base64: the scripts' quotes and # lines pass every YAML reader unchanged
            f = _file(path, mode, base64.b64encode(text.encode()).decode())
            f["encoding"] = "b64"
            files.append(f)
    if gateway and s.volumes:
        files.append(_file("/etc/exports", "0644", "".join(
            "%s %s(%s)\n" % (export, s.subnet, EXPORT_OPTIONS) for _, _, export in s.volumes)))
    ud = {"hostname": s.name, "fqdn": s.fqdn, "manage_etc_hosts": False, "disable_root": False,
          "ssh_pwauth": False, "ssh_authorized_keys": [k.strip() for k in s.authorized_keys],
          "write_files": files}
    if gateway and s.volumes:
        ud["fs_setup"] = [{"device": DEVICE_PREFIX + serial, "filesystem": "ext4",
                           "label": serial, "overwrite": False}
                          for serial, _, _ in s.volumes]
        ud["mounts"] = [[DEVICE_PREFIX + serial, mp, "ext4", "defaults,nofail", "0", "2"]
                        for serial, mp, _ in s.volumes]
        mps = " ".join(shlex.quote(mp) for _, mp, _ in s.volumes)
        ud["runcmd"] = [["sh", "-c", "mkdir -p %s && mount -a; exportfs -ra; "
                         "systemctl restart nfs-server 2>/dev/null || true" % mps]]
    elif not gateway and s.nfs_mounts:
        ud["mounts"] = [["%s:%s" % (server, export), mp, "nfs4", NFS_OPTIONS, "0", "0"]
                        for server, export, mp in s.nfs_mounts]
        mps = " ".join(shlex.quote(mp) for _, _, mp in s.nfs_mounts)
        ud["runcmd"] = [["sh", "-c", "mkdir -p %s; (for i in $(seq 90); do mount -a -t nfs4 "
                         "&& break; sleep 2; done) >/dev/null 2>&1 &" % mps]]
    return ud


def render(s: SeedInput) -> Dict[str, str]:
    """The three seed files of one node: ``{"meta-data", "network-config", "user-data"}``.

    :raises ValueError: when the input is inconsistent (see :func:`check`).
    """
    check(s)
    return {"meta-data": dump(meta_data(s)),
            "network-config": dump(network_config(s)),
            "user-data": "#cloud-config\n" + dump(user_data(s))}


def hosts_of(nodes: Sequence) -> List[Tuple[str, str]]:
    """``[(ip, name)]`` of planned nodes (:class:`vc.addresses.NodePlan`), in plan order."""
    return [(n.ip, n.name) for n in nodes if n.ip]


# ------------------------------------------------------------------------ the disk
def _iso9660_name(name: str) -> str:
    # ISO9660 level 3 allows d-characters only: the real names are in Rock Ridge and Joliet
    return "/" + re.sub(r"[^A-Z0-9_]", "_", name.upper())[:30] + ";1"


def iso_bytes(files: Dict[str, str]) -> bytes:
    """The seed disk as bytes: ISO9660 + Rock Ridge 1.09 + Joliet, volume ``cidata``."""
    import pycdlib

    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, vol_ident=VOLUME_LABEL, sys_ident="LINUX", rock_ridge="1.09",
            joliet=3)
    try:
        for name in sorted(files):
            if not re.match(r"^[a-z][a-z0-9-]{0,63}$", name):
                raise ValueError("seed: bad file name %r" % name)
            data = files[name].encode("utf-8") if isinstance(files[name], str) else files[name]
            # r-------- in Rock Ridge: user-data may hold the cluster's private key
            iso.add_fp(io.BytesIO(data), len(data), _iso9660_name(name), rr_name=name,
                       joliet_path="/" + name, file_mode=FILE_MODE)
        out = io.BytesIO()
        iso.write_fp(out)
        return out.getvalue()
    finally:
        iso.close()


def write_iso(path: str, files: Dict[str, str]) -> None:
    """Write the seed disk to ``path`` atomically (a temporary file in the same directory,
    fsync'd, renamed over ``path``), mode 0600 (it may hold the cluster's private key)."""
    data = iso_bytes(files)
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".%s." % os.path.basename(path), suffix=".tmp", dir=d)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def read_iso(path: str) -> Dict[str, str]:
    """The files of a seed disk by their Rock Ridge names (for tests and ``--dry-run``)."""
    import pycdlib

    iso = pycdlib.PyCdlib()
    iso.open(path)
    try:
        out = {}
        for child in iso.list_children(rr_path="/"):
            if child.is_dot() or child.is_dotdot():
                continue
            name = child.rock_ridge.name().decode("utf-8")
            buf = io.BytesIO()
            iso.get_file_from_iso_fp(buf, rr_path="/" + name)
            out[name] = buf.getvalue().decode("utf-8")
        return out
    finally:
        iso.close()


def volume_label(path: str) -> str:
    """The ISO9660 volume identifier of a seed disk (what ``blkid`` shows as LABEL)."""
    with open(path, "rb") as f:
        f.seek(16 * 2048)
        pvd = f.read(2048)
    if pvd[1:6] != b"CD001":
        raise ValueError("%s is not an ISO9660 image" % path)
    return pvd[40:72].decode("ascii").rstrip()
