"""Real multi-host: the root libvirtd plus a second libvirtd in its own mount + network
namespace (``tools/host.sh``), reached as ``qemu+ssh://root@10.230.N.2/system`` over a veth
underlay. A cluster spread over both, joined by VXLAN; the owner logs in; another cluster stays
out; host loss (a crash, or its underlay cut while its QEMU runs on) → the tick re-places the lost
nodes, the returning host is fenced; bad hosts give clear errors. Every name carries the run's
prefix; ``stop`` leaves nothing on either host."""

import json
import os
import random
import socket
import subprocess
import time
import uuid

import pytest

from realenv import RealEnv, libvirtd, virsh  # noqa: F401  (fixture)
from test_cluster_storage_real import ok
from test_usable_real import ssh, until

from conftest import ROOT
from vc import remote

HOST_SH = os.path.join(ROOT, "tools", "host.sh")


def free_net():
    used = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True).stdout
    for _ in range(50):
        n = random.randint(20, 219)
        if "10.230.%d." % n not in used:
            return n
    raise AssertionError("no free 10.230.N.0/24")


class NsHost:
    """One namespace host made by tools/host.sh for this test."""

    def __init__(self, var, name, key):
        self.var, self.name, self.key = var, name, key
        self.net = free_net()
        self.ip, self.peer = "10.230.%d.2" % self.net, "10.230.%d.1" % self.net

    def tool(self, verb, check=True):
        r = subprocess.run(["bash", HOST_SH, verb, self.name], capture_output=True, text=True,
                           timeout=120, env=dict(os.environ, VC_VAR=self.var,
                                                 VC_HOST_NET=str(self.net), VC_HOST_KEY=self.key))
        if check:
            assert r.returncode == 0, (verb, r.stdout, r.stderr)
        return r

    @property
    def uri(self):
        return "qemu+ssh://root@%s/system?keyfile=%s&no_tty=1" % (self.ip, self.key)

    def holder(self):
        with open(os.path.join(self.var, "hosts", self.name, "holder.pid")) as f:
            return f.read().strip()

    def virsh(self, *args):
        return subprocess.run(["virsh", "-q", "-c", self.uri] + list(args), capture_output=True,
                              text=True, timeout=60)

    def local_virsh(self, *args):
        """virsh inside the namespace (its own libvirtd), when the underlay is cut."""
        return subprocess.run(["nsenter", "-t", self.holder(), "-m", "-n", "virsh", "-q", "-c",
                               "qemu:///system"] + list(args), capture_output=True, text=True,
                              timeout=60)

    def underlay(self, up: bool):
        """Cut (or mend) the host's underlay from inside its namespace: its end of the veth
        down. Its libvirtd, sshd and QEMU keep running: a network partition, not a crash."""
        subprocess.run(["nsenter", "-t", self.holder(), "-n", "ip", "link", "set", "eth0",
                        "up" if up else "down"], check=True)
        if up:  # mended when its sshd answers across it again (the link takes a moment)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    socket.create_connection((self.ip, 22), timeout=1).close()
                    return
                except OSError:
                    time.sleep(0.2)
            raise AssertionError("%s: sshd does not answer 30 s after the underlay is up"
                                 % self.name)

    def links(self):
        out = subprocess.run(["nsenter", "-t", self.holder(), "-n", "ip", "-o", "-d", "link"],
                             capture_output=True, text=True).stdout
        return [ln.split(":")[1].strip().split("@")[0] for ln in out.splitlines()]

    def traces(self, prefix):
        return {"domains": [d for d in self.virsh("list", "--all", "--name").stdout.split()
                            if d.startswith(prefix)],
                "networks": [n for n in self.virsh("net-list", "--all", "--name").stdout.split()
                             if n.startswith(prefix)],
                "links": [x for x in self.links() if x.startswith(prefix)]}


@pytest.fixture
def two(libvirtd, migrated, db, tmp_path):  # noqa: F811
    prefix = "m" + uuid.uuid4().hex[:5]
    var = str(tmp_path)
    key = os.path.join(var, "state", "ssh", "id_ed25519")
    h2 = NsHost(var, prefix[:6] + "h", key)
    env = RealEnv(var, migrated, prefix, "10.241.0.0/16", extra={
        "host:h1": {"memory_mb": "512", "vcpus": "8", "underlay_ip": h2.peer},
        "host:h2": {"uri": h2.uri, "memory_mb": "512", "vcpus": "8", "underlay_ip": h2.ip},
        "network": {"isolation": "vxlan"},
        "virt": {"ready_timeout": "90"}})
    ok(env.ctl("target", "key"))              # the frontend key (qemu+ssh ?keyfile=)
    h2.tool("up")
    env.h2 = h2
    env.key = os.path.join(var, "id_owner")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", env.key], check=True)
    ok(env.ctl("key", "add", "--owner", "bob", env.key + ".pub"))
    yield env
    for d in h2.traces(prefix)["domains"]:
        h2.virsh("destroy", d)
        h2.virsh("undefine", d)
    env.cleanup()
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    for x in out.split("\n"):
        name = x.split(":")[1].strip().split("@")[0] if ":" in x else ""
        if name.startswith(prefix):
            subprocess.run(["ip", "link", "del", name], capture_output=True)
    h2.tool("down", check=False)
    assert not os.path.exists(os.path.join(var, "hosts", h2.name))
    assert h2.name + "-ul" not in subprocess.run(["ip", "-o", "link"], capture_output=True,
                                                 text=True).stdout


def reserve(env, computes=3):
    r = ok(env.ctl("reserve", "--owner", "bob", "--start", "now", "--end", "now+2h",
                   "--computes", str(computes), "--memory", "128", "--disk", "1", "--json"))
    return json.loads(r.stdout)["rack"]


def nodes(env, rack):
    return json.loads(ok(env.ctl("show", str(rack), "--json")).stdout)["nodes"]


def nothing_left(env, rack):
    assert env.traces() == {"domains": [], "networks": [], "bridges": [], "disks": []}
    assert env.h2.traces(env.prefix) == {"domains": [], "networks": [], "links": []}
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert env.prefix + "vx" not in links
    assert not [f for f in os.listdir(os.path.join(env.state, "disks"))
                if f.startswith(env.prefix)] if os.path.isdir(
        os.path.join(env.state, "disks")) else True


def test_cluster_across_two_real_hosts(two, db):
    env, h2 = two, two.h2
    rack = reserve(env)
    t0 = time.monotonic()
    ok(env.ctl("start", str(rack), "--wait-ready"))
    took = time.monotonic() - t0
    ns = nodes(env, rack)
    assert {n["host"] for n in ns} == {"h1", "h2"}, ns
    assert all(n["readiness"] == "up" for n in ns), ns
    on2 = [n for n in ns if n["host"] == "h2"]
    # the nodes on h2 run in the namespace's libvirtd, not in the root one
    for n in on2:
        dom = "%s-%s" % (env.prefix, n["name"])
        assert h2.virsh("domstate", dom).stdout.strip() == "running"
        assert virsh("domstate", dom).returncode != 0
    # the segment crosses the underlay: a VXLAN port in the namespace, VNI = isolation id
    assert any(x.startswith(env.prefix + "vx") for x in h2.links()), h2.links()
    gw = next(n for n in ns if n["appliance"] == "gateway")
    assert gw["host"] == "h1"
    # the owner: to the gateway's public address, then to each compute on the other host
    r = ssh(env.key, gw["public_ip"], "hostname")
    assert r.returncode == 0 and r.stdout.strip() == gw["name"], r.stderr
    for n in on2:
        r = ssh(env.key, gw["public_ip"], "ssh", n["name"], "'hostname; ip -4 -o addr show'")
        assert r.returncode == 0, r.stderr
        assert r.stdout.splitlines()[0] == n["name"] and n["ip"] + "/" in r.stdout, r.stdout
    print("\n1+3 over 2 hosts: start --wait-ready %.1f s" % took)

    # another cluster: its own segment; from this gateway its nodes are unreachable
    other = reserve(env, computes=1)
    ok(env.ctl("start", str(other), "--wait-ready"))
    o = nodes(env, other)
    for n in o:
        r = ssh(env.key, gw["public_ip"], "ping", "-c", "1", "-W", "1", n["ip"])
        assert r.returncode != 0, (n, r.stdout)
    ok(env.ctl("stop", str(other)))

    ok(env.ctl("stop", str(rack)))
    nothing_left(env, rack)
    assert db.query("SELECT COUNT(*) AS n FROM vcnode WHERE rack IN (%s, %s)",
                    (rack, other))[0]["n"] == 0
    # the shared SSH master to h2 is still up (ControlPersist); it ends, its directory goes
    mux = remote.ssh_mux_dir(env.state)
    assert remote.close_ssh_mux(mux) >= 1 and not os.path.exists(mux)


def start_spread(env):
    """A 1+2 cluster started ready over h1 and h2: (rack, the nodes on h2, name -> (MAC, IP))."""
    rack = reserve(env, computes=2)
    ok(env.ctl("start", str(rack), "--wait-ready"))
    on2 = [n["name"] for n in nodes(env, rack) if n["host"] == "h2"]
    assert on2
    return rack, on2, {n["name"]: (n["mac"], n["ip"]) for n in nodes(env, rack)}


def test_host_loss_replaces_and_fences(two, db):
    env, h2 = two, two.h2
    # room for the whole cluster on h1 once h2 is gone
    rack, on2, before = start_spread(env)
    h2.tool("kill")                       # the host crashes: libvirtd, sshd, QEMU
    lost = time.monotonic()
    ticks = 0
    while True:
        ticks += 1
        r = env.cron()
        ns = nodes(env, rack)
        if all(n["host"] == "h1" and n["state"] == "running" for n in ns):
            break
        assert ticks < 4, (r.stdout, r.stderr, ns)
    moved = time.monotonic() - lost
    ns = nodes(env, rack)
    assert {n["name"]: (n["mac"], n["ip"]) for n in ns} == before
    for n in on2:
        assert virsh("domstate", "%s-%s" % (env.prefix, n)).stdout.strip() == "running"
    row = db.query("SELECT reachable FROM vchost WHERE name='h2'")[0]
    assert row["reachable"] == 0
    # the moved nodes answer again (seed rewritten on h1)
    gw = next(n for n in ns if n["appliance"] == "gateway")
    for n in on2:
        until(lambda n=n: ssh(env.key, gw["public_ip"], "ssh", n, "hostname").stdout.strip()
              == n, what="%s back on h1" % n, timeout=90)
    print("\nhost loss -> nodes running elsewhere: %d tick(s), %.1f s" % (ticks, moved))

    # the host comes back: the stale domains are destroyed and undefined there, never started
    h2.tool("up")
    for n in on2:
        assert h2.virsh("domstate", "%s-%s" % (env.prefix, n)).stdout.strip() == "shut off"
    ok(env.cron())
    assert h2.traces(env.prefix)["domains"] == []
    assert db.query("SELECT reachable FROM vchost WHERE name='h2'")[0]["reachable"] == 1
    events = [e["reason"] for e in db.query("SELECT reason FROM vcevent WHERE rack=%s ORDER BY "
                                             "id", (rack,))]
    assert any(e.startswith("fence: h2") for e in events), events
    ok(env.ctl("stop", str(rack)))
    nothing_left(env, rack)


def test_underlay_cut_replaces_and_fences_the_still_running_copies(two, db):
    """A partition, not a crash: the host's QEMU keeps running behind a cut underlay. The next
    tick marks the host unreachable and re-places its nodes on h1 (same MAC/IP/name). Here both
    hosts share one filesystem, so the still-running copy on h2 holds QEMU's lock on the disk:
    the copy on h1 cannot start, never two copies. Once the link is back, one tick destroys and
    undefines the stale copies on h2 (before the host counts as reachable) and boots the node
    on h1, where it answers the owner."""
    env, h2 = two, two.h2
    rack, on2, before = start_spread(env)
    gw = next(n for n in nodes(env, rack) if n["appliance"] == "gateway")
    h2.underlay(False)
    cut = time.monotonic()
    try:
        env.cron()
        ns = nodes(env, rack)
        assert db.query("SELECT reachable FROM vchost WHERE name='h2'")[0]["reachable"] == 0
        assert all(n["host"] == "h1" for n in ns), ns
        assert {n["name"]: (n["mac"], n["ip"]) for n in ns} == before
        for n in on2:   # the disk is locked by the copy behind the cut: not started twice
            assert virsh("domstate", "%s-%s" % (env.prefix, n)).stdout.strip() != "running"
            assert h2.local_virsh("domstate", "%s-%s" % (env.prefix, n)).stdout.strip() \
                == "running"
    finally:
        h2.underlay(True)
    r = ok(env.cron())
    back = time.monotonic() - cut
    assert h2.traces(env.prefix)["domains"] == [], r.stderr
    assert db.query("SELECT reachable FROM vchost WHERE name='h2'")[0]["reachable"] == 1
    events = [e["reason"] for e in db.query("SELECT reason FROM vcevent WHERE rack=%s ORDER BY "
                                             "id", (rack,))]
    assert any(e.startswith("fence: h2") for e in events), events
    for n in on2:                          # one copy of each, on h1, answering
        until(lambda n=n: virsh("domstate", "%s-%s" % (env.prefix, n)).stdout.strip()
              == "running" or env.cron() and False, what="%s running on h1" % n, timeout=120)
        until(lambda n=n: ssh(env.key, gw["public_ip"], "ssh", n, "hostname").stdout.strip()
              == n, what="%s answering on h1" % n, timeout=120)
    print("\nunderlay cut: fenced and running on h1 %.1f s after the cut" % back)
    ok(env.ctl("stop", str(rack)))
    nothing_left(env, rack)


def test_bad_hosts_fail_clearly_and_leave_nothing(two, db):
    env, h2 = two, two.h2
    # 1) the host's SSH key is unknown: its known_hosts entry removed
    subprocess.run(["ssh-keygen", "-q", "-R", h2.ip, "-f", "/root/.ssh/known_hosts"],
                   capture_output=True)
    rack = reserve(env, computes=1)
    r = env.ctl("start", str(rack))
    assert r.returncode == 1
    msg = r.stderr
    assert "h2" in msg and ("Host key verification failed" in msg or "host key" in msg.lower()), \
        msg
    shown = json.loads(ok(env.ctl("show", str(rack), "--json")).stdout)
    assert shown["state"] == "failed" and "h2" in (shown.get("error") or ""), shown
    ok(env.ctl("stop", str(rack)))
    h2.tool("down")
    h2.tool("up")                          # trusted again
    nothing_left(env, rack)

    # 2) a qemu+ssh URI nobody answers at (the most free memory: the gateway goes there)
    with open(env.conf, "a") as f:
        f.write("\n[host:h3]\nuri = qemu+ssh://root@10.230.%d.77/system?keyfile=%s&no_tty=1\n"
                "memory_mb = 4096\nvcpus = 8\nunderlay_ip = 10.230.%d.77\n"
                % (h2.net, h2.key, h2.net))
    rack = reserve(env, computes=1)
    r = env.ctl("start", str(rack))
    assert r.returncode == 1 and "host h3" in r.stderr, r.stderr
    shown = json.loads(ok(env.ctl("show", str(rack), "--json")).stdout)
    assert shown["state"] == "failed" and "h3" in shown["error"], shown
    print("\nunknown host key: %s\nunreachable: %s" % (msg.strip(), r.stderr.strip()))
    ok(env.ctl("stop", str(rack)))
    nothing_left(env, rack)
