"""A real distribution image reads VC's seed: a cluster whose gateway boots the Debian 12
cloud-init image built by tools/make-image.sh (its own kernel and initrd, root on the COW disk)
and whose computes boot the fast test guest. cloud-init on the gateway applied the hostname,
the owner's key, the network (private and public address) and the NFS export of the iSCSI
volume, and a compute mounts it. Slow (the image boots to SSH in 1-3 min under TCG): one test."""

import json
import os
import uuid

import pytest

from realenv import VAR, RealEnv, libvirtd  # noqa: F401  (fixture)
from test_cluster_real import EMPTY
from test_cluster_storage_real import ok, svc  # noqa: F401  (fixture)
from test_usable_real import ssh, until, with_target_and_owner_key

IMAGE = os.path.join(VAR, "images", "debian-12")


@pytest.fixture
def env(libvirtd, migrated, db, tmp_path, svc):  # noqa: F811
    for suffix in (".qcow2", ".vmlinuz", ".initrd.img"):
        if not os.path.exists(IMAGE + suffix):
            pytest.fail("Debian image missing: %s (make test builds it with tools/make-image.sh)"
                        % (IMAGE + suffix))
    e = RealEnv(str(tmp_path), migrated, "d" + uuid.uuid4().hex[:5], "10.218.0.0/16", extra={
        "storage": {"backing_dir": svc.backing, "tgt_control_port": str(svc.control),
                    "iqn_prefix": "iqn.2026-11.vc.d%s" % uuid.uuid4().hex[:6]},
        "virt": {"ready_timeout": "900", "boot_timeout": "120"},
        "appliance:gateway": {"image": IMAGE + ".qcow2", "kernel": IMAGE + ".vmlinuz",
                              "initrd": IMAGE + ".initrd.img", "boot": "kernel",
                              "cmdline": "root=/dev/vda ro console=ttyS0"}})
    with_target_and_owner_key(e, svc, tmp_path)
    yield e
    e.cleanup()


def test_debian_gateway_configured_by_cloud_init(env, db):
    ok(env.ctl("key", "add", "--owner", "bob", env.key + ".pub"))
    r = ok(env.ctl("reserve", "--owner", "bob", "--start", "now", "--end", "now+2h",
                   "--computes", "1", "--gateway-memory", "1024", "--gateway-disk", "4",
                   "--compute-memory", "160", "--compute-disk", "1", "--iscsi", "/data:demo:1",
                   "--json"))
    rack = json.loads(r.stdout)["rack"]
    ok(env.ctl("start", str(rack), "--wait-ready", timeout=1200))
    shown = json.loads(ok(env.ctl("show", str(rack), "--json")).stdout)
    gw = next(n for n in shown["nodes"] if n["appliance"] == "gateway")
    c0 = "compute-%d-0" % rack
    pub = gw["public_ip"]

    # cloud-init finished, and applied the hostname, fqdn, the owner's key (we are in), the
    # private and public addresses from network-config
    until(lambda: "done" in ssh(env.key, pub, "cloud-init status").stdout, timeout=600,
          what="cloud-init done on the Debian gateway")
    r = ssh(env.key, pub, "hostname; hostname -f; ip -o -4 addr show; cat /etc/os-release")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == gw["name"] and lines[1] == gw["name"] + ".vc.internal", lines[:2]
    assert "inet %s/" % gw["ip"] in r.stdout and "inet %s/24" % pub in r.stdout
    assert 'VERSION_CODENAME=bookworm' in r.stdout
    # the iSCSI volume: formatted by fs_setup, mounted, exported to the cluster subnet
    r = ssh(env.key, pub, "findmnt -n -o FSTYPE /data; exportfs -v")
    assert r.stdout.splitlines()[0] == "ext4" and "/data" in r.stdout, r.stdout
    # a fast-guest compute mounts it; what it writes is on the gateway's disk
    until(lambda: ssh(env.key, pub, "ssh", c0, "'grep -q \" /data nfs\" /proc/mounts && "
                      "echo from-%s > /data/f && sync && echo ok'" % c0).stdout.strip() == "ok",
          timeout=300, what="%s mounts the gateway's /data" % c0)
    assert ssh(env.key, pub, "cat /data/f").stdout.strip() == "from-%s" % c0

    ok(env.ctl("stop", str(rack)))
    assert env.traces() == EMPTY
