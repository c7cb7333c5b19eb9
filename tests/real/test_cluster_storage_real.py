"""A cluster with an iSCSI volume on real QEMU, sshd and tgtd: the LUN is created over SSH with
the reserved size, the booted gateway sees it, its data survives a stop and the next start, a
target failure leaves the cluster failed and the next start continues, and a confirmed delete
removes the LUN and its backing file."""

import json
import os
import subprocess
import time
import uuid

import pytest

from realenv import RealEnv, libvirtd  # noqa: F401  (fixture)
from test_cluster_real import EMPTY, assert_running
from test_storage_real import Services

PATTERN = "0x5c"


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
    e = RealEnv(str(tmp_path), migrated, "s" + uuid.uuid4().hex[:5], "10.216.0.0/16", extra={
        "storage": {"backing_dir": svc.backing, "tgt_control_port": str(svc.control),
                    "iqn_prefix": "iqn.2026-11.vc.t%s" % uuid.uuid4().hex[:6]}})
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


def ok(r):
    assert r.returncode == 0, (r.stdout, r.stderr)
    return r


def iscsi(svc, *args):
    return subprocess.run(list(args), capture_output=True, text=True, timeout=60)


def lun_url(svc, iqn):
    return "iscsi://127.0.0.1:%d/%s/1" % (svc.iscsi_port, iqn)


def volume(db, rack):
    return db.query("SELECT iqn, lun, state FROM vciscsi WHERE rack=%s", (rack,))[0]


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
    cap = iscsi(svc, "iscsi-readcapacity16", "-s", lun_url(svc, v["iqn"]))
    assert cap.returncode == 0 and "1073741824" in cap.stdout, cap.stdout + cap.stderr
    gw = nodes[0]["name"]
    deadline = time.monotonic() + 60
    while "VC-DISK vdb 2097152" not in env.console(gw):
        assert time.monotonic() < deadline, env.console(gw)[-1500:]
        time.sleep(0.3)
    assert "VC-DISK vdb" not in env.console(nodes[1]["name"])  # computes mount it over NFS

    # data written before a stop is there after the next start
    w = iscsi(svc, "qemu-io", "-f", "raw", "-c", "write -P %s 0 1M" % PATTERN,
              lun_url(svc, v["iqn"]))
    assert w.returncode == 0, w.stderr
    ok(env.ctl("stop", str(rack)))
    assert env.traces() == EMPTY
    assert volume(db, rack)["iqn"] == v["iqn"]
    assert v["iqn"] in iscsi(svc, "iscsi-ls", "iscsi://127.0.0.1:%d" % svc.iscsi_port).stdout
    ok(env.ctl("extend", str(rack), "--end", "now+1h"))        # reopen the reservation
    ok(env.ctl("start", str(rack)))
    rd = iscsi(svc, "qemu-io", "-f", "raw", "-c", "read -P %s 0 1M" % PATTERN,
               lun_url(svc, v["iqn"]))
    assert rd.returncode == 0 and "Pattern verification failed" not in rd.stdout, rd.stdout
    ok(env.ctl("stop", str(rack)))

    # delete: refused without confirmation (nothing removed), then LUN and file are gone
    r = env.ctl("delete", str(rack))
    assert r.returncode == 1 and "holding data" in r.stderr
    assert json.loads(ok(env.ctl("show", str(rack), "--json")).stdout)["state"] == "stopped"
    backing = [f for f in os.listdir(svc.backing) if "rack%d-" % rack in f]
    assert len(backing) == 1
    ok(env.ctl("delete", str(rack), "--delete-volumes"))
    assert v["iqn"] not in iscsi(svc, "iscsi-ls", "iscsi://127.0.0.1:%d" % svc.iscsi_port).stdout
    assert [f for f in os.listdir(svc.backing) if "rack%d-" % rack in f] == []
    assert db.query("SELECT COUNT(*) AS n FROM vcregist WHERE rack=%s", (rack,))[0]["n"] == 0
