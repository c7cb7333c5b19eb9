"""Host maintenance (drain, enable, remove, list) and the remote parts of a start (disks and
seeds made on the node's own host), on libvirt's test driver and the real MariaDB."""

import io
import json
import os

import pytest

from conftest import NOW
from fakes import RecordingExecutor
from test_ctl import TESTNODE, make, reserve  # noqa: F401  (fixture)
from vc import hosts, virt
from vc import reservations as R
from vc.cmd import vc_ctl
from vc.errors import CapacityError, VcError


def two_hosts(make, mem="1024", **over):  # noqa: F811
    return make(nhosts=2, **{"host:h1": {"memory_mb": mem}, "host:h2": {"memory_mb": mem},
                             **over})


def test_drained_host_gets_no_new_node(make, db):  # noqa: F811
    cfg, c, _ = two_hosts(make, mem="4096")
    r = hosts.drain(cfg, db, "h2", NOW)
    assert r["no_longer_fit"] == [] and r["nodes"] == 0
    rack = reserve(cfg, db, computes=3)
    c.start(rack)
    assert {x["host"] for x in db.query("SELECT host FROM vcnode WHERE rack=%s", (rack,))} \
        == {"h1"}
    hosts.enable(cfg, db, "h2", NOW)
    other = reserve(cfg, db, computes=3)
    c.start(other)
    assert "h2" in {x["host"] for x in db.query("SELECT host FROM vcnode WHERE rack=%s",
                                                (other,))}


def test_drain_says_what_no_longer_fits_and_admission_refuses_in_words(make, db):  # noqa: F811
    cfg, c, _ = two_hosts(make)
    big = reserve(cfg, db, computes=4, memory_mb="256")        # 1280 MB of 2048
    small = reserve(cfg, db, computes=0, memory_mb="256")      # 256 MB
    r = hosts.drain(cfg, db, "h2", NOW)
    gone = {x["rack"]: x["why"] for x in r["no_longer_fit"]}
    assert big in gone and "memory" in gone[big], gone
    assert small not in gone
    with pytest.raises(CapacityError, match="refused: not enough memory"):
        reserve(cfg, db, computes=3, memory_mb="256")
    # the words reach the operator through the command line
    out = io.StringIO()
    assert vc_ctl.run(["host", "drain", "h2"], cfg=cfg, uid=0, out=out, now=NOW) == 0
    assert "no longer fits: reservation %d" % big in out.getvalue()
    out = io.StringIO()
    vc_ctl.run(["host", "list", "--json"], cfg=cfg, uid=0, out=out, now=NOW)
    rows = {h["name"]: h for h in json.loads(out.getvalue())}
    assert rows["h2"]["drained"] and not rows["h1"]["drained"]
    assert rows["h1"]["memory_mb"] == 1024 and rows["h1"]["reachable"]
    hosts.enable(cfg, db, "h2", NOW)
    assert hosts.no_longer_fit(cfg, db, NOW) == []
    reserve(cfg, db, computes=1, memory_mb="256")


def test_remove_refused_while_nodes_run_then_drains_a_configured_host(make, db):  # noqa: F811
    cfg, c, _ = two_hosts(make, mem="4096")
    rack = reserve(cfg, db, computes=1)
    c.start(rack)
    assert {x["host"] for x in db.query("SELECT host FROM vcnode")} == {"h1", "h2"}
    with pytest.raises(VcError, match="host h2 runs 1 node"):
        hosts.remove(cfg, db, "h2", NOW)
    c.stop(rack)
    r = hosts.remove(cfg, db, "h2", NOW)
    assert r["removed"] is False and r["drained"] and "[host:h2]" in r["note"]
    assert next(h for h in hosts.list_hosts(cfg, db) if h["name"] == "h2")["drained"]
    # a row the configuration no longer names is deleted
    db.transaction(lambda cur: cur.execute(
        "INSERT INTO vchost (name, uri, memory_mb, vcpus, updated_at) VALUES ('old', 'x', 1, 1, "
        "%s)", (NOW.replace(tzinfo=None),)))
    assert hosts.remove(cfg, db, "old", NOW)["removed"] is True
    assert not db.query("SELECT name FROM vchost WHERE name='old'")
    with pytest.raises(VcError):
        hosts.remove(cfg, db, "old", NOW)


class HostExec(RecordingExecutor):
    """A remote host's executor: records commands and stdin writes."""

    def __init__(self, name):
        super().__init__(name, outputs={("sh", "-c"): "created qcow2\n"})
        self.inputs = []

    def _exec_input(self, argv, data):
        self.calls.append(list(argv))
        self.inputs.append((argv[-1], data))
        return 0, "", ""


def test_disks_and_seeds_are_made_on_the_nodes_remote_host(migrated, db, tmp_path):
    from conftest import db_overrides, make_cfg
    from vc import ctl as vctl
    from test_ctl import Recorder

    o = db_overrides(migrated)
    o["host:h1"] = {"uri": TESTNODE, "memory_mb": "4096", "vcpus": "8"}
    o["host:h2"] = {"uri": "qemu+ssh://root@192.0.2.7/system?keyfile=/k", "memory_mb": "4096",
                    "vcpus": "8"}
    o["site"] = {"state_dir": str(tmp_path / "state"), "timezone": "UTC"}
    o["virt"] = {"name_prefix": "vt", "boot_timeout": "5", "shutdown_timeout": "1"}
    o["network"] = {"isolation": "none"}
    cfg = make_cfg(o)
    ex = HostExec("h2")
    local = Recorder()
    c = vctl.Ctl(cfg, db, execute=local, clock=lambda: NOW, actor="test",
                 open_host=lambda name, uri: virt.Host(TESTNODE, name=name),
                 host_exec=lambda name: ex)
    rack = reserve(cfg, db, computes=1)
    c.start(rack)
    on2 = [x["name"] for x in db.query("SELECT name FROM vcnode WHERE host='h2'")]
    assert on2 == ["compute-%d-0" % rack]
    disk = "%s/vt-%s.qcow2" % (cfg.virt.disk_dir, on2[0])
    # h2's disk: one exec on h2 (qemu-img inside the script), none on the frontend
    made = [a for a in ex.calls if a[:2] == ["sh", "-c"] and disk in a]
    assert made and "qemu-img create" in made[0][2]
    assert not [a for a in local.calls if disk in a]
    # its seed: the ISO's bytes written on h2 over stdin
    seed = "%s/vt-%s.seed.iso" % (cfg.virt.disk_dir, on2[0])
    assert [p for p, data in ex.inputs] == [seed] and ex.inputs[0][1][32768:32774] \
        == b"\x01CD001"
    # the gateway's (h1, local) disk was made on the frontend as before
    assert [a for a in local.calls if a[:2] == ["qemu-img", "create"]]
    c.stop(rack)
    removed = [a for a in ex.calls if a[:1] == ["sh"] and "ls -1A" in a[2]]
    assert removed, ex.calls


def test_a_host_with_less_memory_than_configured_fails_the_start_naming_it(make, db):  # noqa
    cfg, c, _ = make(nhosts=1, **{"host:h1": {"memory_mb": "10000000"}})
    h = c.host("h1")
    _ = h.conn                      # connected: the test driver's node (testnode.xml)
    h.uri = "qemu:///as-if-real"   # checked like a real host
    rack = reserve(cfg, db, computes=1)
    with pytest.raises(VcError, match=r"host h1 has \d+ MB of memory but \[host:h1\] "
                                      r"memory_mb = 10000000"):
        c.start(rack)
    row = R.get(db, rack)
    assert row["state"] == "failed" and "host h1" in row["error"], row
    c.stop(rack)
    assert R.get(db, rack)["state"] == "stopped"
    assert not db.query("SELECT * FROM vcnode WHERE rack=%s", (rack,))


# -- one shared SSH connection per host (OpenSSH ControlMaster) ------------------------------

@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    """Control-socket directories under this test's tmp_path, not the machine's /tmp."""
    import tempfile

    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp_path))


def test_ssh_uri_gets_vc_ssh_command(tmp_path, private_tmp):
    from vc import remote

    st = str(tmp_path)
    uri = "qemu+ssh://root@10.0.0.2/system?keyfile=/k&no_tty=1"
    got = remote.shared_ssh_uri(uri, st)
    wrapper = str(tmp_path / "ssh" / "vc-ssh")
    assert got == uri + "&command=" + wrapper
    text = open(wrapper).read()
    mux = remote.ssh_mux_dir(st)
    assert "ControlPath=%s/%%C" % mux in text and "ControlMaster=auto" in text
    assert "ConnectTimeout=10" in text and text.rstrip().endswith('"$@"')
    assert os.stat(wrapper).st_mode & 0o777 == 0o700
    assert os.stat(mux).st_mode & 0o777 == 0o700
    assert len(os.path.basename(mux)) + len("/tmp/") + 41 < 100  # socket path limit
    # unchanged: local URIs, test URIs, an ssh URI naming its own command
    for u in ("qemu:///system", "test:///x.xml",
              "qemu+ssh://h/system?command=/usr/local/bin/myssh"):
        assert remote.shared_ssh_uri(u, st) == u
    # another state_dir: another socket directory
    assert remote.ssh_mux_dir(str(tmp_path / "other")) != mux


def test_ssh_mux_dir_refuses_a_shared_directory(tmp_path, monkeypatch):
    import tempfile

    from vc import remote

    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp_path))
    d = remote.ssh_mux_dir("/srv/vc")
    os.chmod(d, 0o777)
    with pytest.raises(VcError, match="not a private directory"):
        remote.ssh_mux_dir("/srv/vc")


def test_host_commands_share_the_connection(tmp_path, private_tmp):
    from vc import remote

    mux = remote.ssh_mux_dir(str(tmp_path))
    ex = remote.executor_for_uri("qemu+ssh://root@10.0.0.2:2222/system?keyfile=/k",
                                 mux_dir=mux)
    argv = " ".join(ex.ssh)
    assert "ControlPath=%s/%%C" % mux in argv and "-p 2222" in argv and "-i /k" in argv
    assert "Control" not in " ".join(remote.executor_for_uri("qemu+ssh://h/system").ssh)


def test_libvirt_host_opens_the_shared_uri_but_names_the_configured_one(tmp_path,
                                                                        private_tmp):
    from vc import services

    opened = []
    h = services._open_libvirt_host("h2", "qemu+ssh://root@10.0.0.2/system", str(tmp_path))
    h._opener = lambda uri: opened.append(uri) or object()
    _ = h.conn
    assert opened == ["qemu+ssh://root@10.0.0.2/system?command=%s/ssh/vc-ssh" % tmp_path]
    assert h.uri == "qemu+ssh://root@10.0.0.2/system"


def test_host_with_less_memory_than_configured_is_refused_naming_it(make):  # noqa: F811
    cfg, c, _ = two_hosts(make, mem="4096")

    class Conn:
        def getInfo(self):
            return ["x86_64", 2048, 2, 0, 1, 1, 2, 1]   # 2048 MiB

    class RealHost:
        uri, conn = "qemu+ssh://root@10.0.0.2/system", Conn()

    class C:
        pass

    ctl = C()
    ctl.cfg, ctl.host = cfg, lambda name: RealHost()
    with pytest.raises(VcError, match=r"host h2 has 2048 MB of memory but \[host:h2\] "
                                      r"memory_mb = 4096"):
        hosts.check_capacity(ctl, "h2")
    RealHost.conn.getInfo = lambda: ["x86_64", 8192, 2, 0, 1, 1, 2, 1]
    hosts.check_capacity(ctl, "h2")                         # enough: no error
