"""A cluster with an iSCSI volume on real QEMU, sshd and tgtd: the LUN is created over SSH with
the reserved size and its own CHAP credentials, the booted gateway logs in with them (through a
libvirt secret) and sees it while an initiator without them is refused, its data survives a stop
and the next start, a target failure leaves the cluster failed and the next start continues, and
a confirmed delete removes the LUN, its account and its backing file. The data files are private
(mode 600 in directories of mode 700) and the secret is in no log, no XML, no command line."""

import json
import os
import re
import stat
import subprocess
import time
import uuid

import pytest

from realenv import RealEnv, libvirtd, virsh  # noqa: F401  (fixture)
from test_cluster_real import EMPTY, assert_running
from test_storage_real import Services
from vc import iscsi as vc_iscsi
from vc.iscsi import Chap

PATTERN = "0x5c"
# where the test writes its pattern: the LUN's last MiB. The gateway formats the blank LUN and
# mounts it (ext4's metadata sits at its start and in its middle, and is written back at the
# unmount): a pattern at offset 0 would be overwritten by the guest, not lost by the storage
AT = "1023M"


@pytest.fixture(scope="module")
def svc(tmp_path_factory):
    s = Services(str(tmp_path_factory.mktemp("cluster-storage-var")))
    r = s.tool("start", check=False)
    try:
        if r.returncode:
            pytest.fail("cannot start sshd/tgtd: %s" % r.stderr.strip()[-2000:])
        s.fingerprint = s.read_env()["VC_STORAGE_FINGERPRINT"]
        yield s
    finally:
        s.tool("stop", check=False)


@pytest.fixture
def env(libvirtd, migrated, db, tmp_path, svc):  # noqa: F811
    iqn_prefix = "iqn.2026-11.vc.t%s" % uuid.uuid4().hex[:6]
    e = RealEnv(str(tmp_path), migrated, "s" + uuid.uuid4().hex[:5], "10.216.0.0/16", extra={
        "storage": {"backing_dir": svc.backing, "tgt_control_port": str(svc.control),
                    "iqn_prefix": iqn_prefix}})
    r = e.ctl("target", "key")
    assert r.returncode == 0, r.stderr
    key = os.path.join(e.state, "ssh", "id_ed25519.pub")
    assert open(key).read().strip() == r.stdout.strip()
    svc.tool("authorize", key)
    ok(e.ctl("target", "add", "demo", "--address", "127.0.0.1", "--port", str(svc.ssh_port),
             "--iscsi-port", str(svc.iscsi_port)))
    # an unconfirmed key is not pinned; the right fingerprint is
    r = e.ctl("target", "trust", "demo", "--fingerprint", "SHA256:" + "A" * 43)
    assert r.returncode == 1 and "not pinned" in r.stderr
    ok(e.ctl("target", "trust", "demo", "--fingerprint", svc.fingerprint))
    yield e
    e.cleanup()
    # the CHAP secrets a failed test left on the host (a stop removes them)
    for ln in virsh("secret-list").stdout.splitlines():
        if ln.split()[-1:] and ln.split()[-1].startswith(iqn_prefix + ":"):
            virsh("secret-undefine", ln.split()[0])


def ok(r):
    assert r.returncode == 0, (r.stdout, r.stderr)
    return r


def iscsi(svc, *args):
    return subprocess.run(list(args), capture_output=True, text=True, timeout=60)


def lun_url(svc, iqn, chap=None):
    """libiscsi's URL; with ``chap``: ``iscsi://USER%SECRET@host:port/iqn/lun``."""
    who = "%s%%%s@" % (chap.user, chap.secret) if chap else ""
    return "iscsi://%s127.0.0.1:%d/%s/1" % (who, svc.iscsi_port, iqn)


def volume(db, rack):
    return db.query("SELECT iqn, lun, state, chap_user, chap_secret FROM vciscsi WHERE rack=%s",
                    (rack,))[0]


def credentials(env, v):
    """The volume's CHAP credentials, as only the frontend (its key) can read them."""
    assert v["chap_secret"].startswith("fernet:")
    return Chap(v["chap_user"], vc_iscsi.unseal(env.state, v["chap_secret"]))


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def secrets_of(v):
    return [ln.split()[-1] for ln in virsh("secret-list").stdout.splitlines()
            if ln.split()[-1:] == [v["iqn"]]]


def tgt_accounts(svc):
    return subprocess.run(["tgtadm", "-C", str(svc.control), "--lld", "iscsi", "--mode",
                           "account", "--op", "show"], capture_output=True, text=True).stdout


def test_volume_lifecycle_with_a_real_cluster(env, svc, db):
    r = ok(env.ctl("reserve", "--start", "now", "--end", "now+2h", "--computes", "1",
                   "--memory", "128", "--disk", "1", "--iscsi", "/data:demo:1", "--json"))
    rack = json.loads(r.stdout)["rack"]

    # the target fails (sshd down): the start fails naming the target, nothing half-started
    svc.tool("stop", "sshd")
    r = env.ctl("start", str(rack))
    assert r.returncode == 1 and "iSCSI target demo" in r.stderr, r.stderr
    shown = json.loads(ok(env.ctl("show", str(rack), "--json")).stdout)
    assert shown["state"] == "failed" and "iSCSI target demo" in shown["error"]
    assert env.traces()["domains"] == []
    svc.tool("start", "sshd")

    # the next start continues: the LUN exists with the reserved size, the gateway sees it
    ok(env.ctl("start", str(rack)))
    nodes = assert_running(env, db, rack)
    v = volume(db, rack)
    assert v["state"] == "ready" and v["iqn"].endswith(":rack%d.data" % rack)
    chap = credentials(env, v)
    assert chap.secret not in v["chap_secret"]  # sealed: the database alone opens no LUN
    cap = iscsi(svc, "iscsi-readcapacity16", "-s", lun_url(svc, v["iqn"], chap))
    assert cap.returncode == 0 and "1073741824" in cap.stdout, cap.stdout + cap.stderr
    # this host is admitted by the ACL, yet without the credentials it is refused
    no = iscsi(svc, "iscsi-readcapacity16", "-s", lun_url(svc, v["iqn"]))
    assert no.returncode != 0 and "Authentication failure" in no.stderr, no.stdout + no.stderr
    gw = nodes[0]["name"]
    deadline = time.monotonic() + 60
    # VC-READY is the guest's last line: after VC-DISK, and after fs_setup's mke2fs (which
    # discards the whole blank LUN: a pattern written before it would be erased)
    while "VC-DISK vdb 2097152" not in env.console(gw) or "VC-READY" not in env.console(gw):
        assert time.monotonic() < deadline, env.console(gw)[-1500:]
        time.sleep(0.3)
    assert re.search(r"VC-MKFS \S+ ext4 rc=0", env.console(gw)), env.console(gw)[-1500:]
    # computes mount it over NFS (their second disk is the 68 KiB seed, not the 1 GiB LUN)
    assert "VC-DISK vdb 2097152" not in env.console(nodes[1]["name"])  # (vda is 1 GiB too)

    # the gateway (it printed VC-DISK) logged in with CHAP: QEMU got the secret from the
    # libvirt secret, named in the XML and in no command line
    assert secrets_of(v) == [v["iqn"]]
    gw_dom = "%s-%s" % (env.prefix, gw)
    xml = virsh("dumpxml", gw_dom).stdout
    assert "<auth username='%s'>" % chap.user in xml and "usage='%s'" % v["iqn"] in xml
    with open("/run/libvirt/qemu/%s.pid" % gw_dom) as f:
        with open("/proc/%d/cmdline" % int(f.read()), "rb") as g:
            assert chap.secret.encode() not in g.read()
    # the nodes' data and consoles are private (the console logs are libvirt's: 600 too)
    for d in ("disks", "console"):
        assert mode(os.path.join(env.state, d)) == 0o700, d
    for n in nodes:
        disk = os.path.join(env.state, "disks", "%s-%s.qcow2" % (env.prefix, n["name"]))
        assert mode(disk) == 0o600, disk
        log = os.path.join(env.state, "console", "%s-%s.log" % (env.prefix, n["name"]))
        assert mode(log) & 0o077 == 0, (log, oct(mode(log)))
    backing = [os.path.join(svc.backing, f) for f in os.listdir(svc.backing)
               if "rack%d-" % rack in f]
    assert [mode(b) for b in backing] == [0o600] and mode(svc.backing) == 0o700

    # data written before a stop is there after the next start
    w = iscsi(svc, "qemu-io", "-f", "raw", "-c", "write -P %s %s 1M" % (PATTERN, AT),
              lun_url(svc, v["iqn"], chap))
    assert w.returncode == 0, w.stderr
    ok(env.ctl("stop", str(rack)))
    assert env.traces() == EMPTY
    assert secrets_of(v) == []  # the stop removed the libvirt secret with the domains
    assert volume(db, rack)["iqn"] == v["iqn"]
    assert v["iqn"] in iscsi(svc, "iscsi-ls", "iscsi://127.0.0.1:%d" % svc.iscsi_port).stdout
    ok(env.ctl("extend", str(rack), "--end", "now+1h"))        # reopen the reservation
    ok(env.ctl("start", str(rack)))
    assert credentials(env, volume(db, rack)) == chap          # the same credentials
    assert secrets_of(v) == [v["iqn"]]
    rd = iscsi(svc, "qemu-io", "-f", "raw", "-c", "read -P %s %s 1M" % (PATTERN, AT),
               lun_url(svc, v["iqn"], chap))
    assert rd.returncode == 0 and "Pattern verification failed" not in rd.stdout, rd.stdout
    ok(env.ctl("stop", str(rack)))
    assert secrets_of(v) == []

    # delete: refused without confirmation (nothing removed), then LUN and file are gone
    r = env.ctl("delete", str(rack))
    assert r.returncode == 1 and "holding data" in r.stderr
    assert json.loads(ok(env.ctl("show", str(rack), "--json")).stdout)["state"] == "stopped"
    backing = [f for f in os.listdir(svc.backing) if "rack%d-" % rack in f]
    assert len(backing) == 1
    assert chap.user in tgt_accounts(svc)
    ok(env.ctl("delete", str(rack), "--delete-volumes"))
    assert v["iqn"] not in iscsi(svc, "iscsi-ls", "iscsi://127.0.0.1:%d" % svc.iscsi_port).stdout
    assert [f for f in os.listdir(svc.backing) if "rack%d-" % rack in f] == []
    assert chap.user not in tgt_accounts(svc)
    assert db.query("SELECT COUNT(*) AS n FROM vcregist WHERE rack=%s", (rack,))[0]["n"] == 0
    # the secret went to tgtadm over SSH and to libvirt, and no log line shows it
    with open(env.log, errors="replace") as f:
        text = f.read()
    assert chap.user in text and chap.secret not in text
