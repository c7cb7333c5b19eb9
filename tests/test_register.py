"""vc.register: the insert-ethers dump format, the rocks registrar (recording executor) and the
builtin registrar (real database, a recording DHCP fake, a hosts file in tmp_path); the fakes
are tests/fakes.py's."""

import json
import os

import pytest

from vc import register as reg
from vc.db import SQL_DIR, split_statements
from vc.errors import ConfigError, VcError
from vc.register import (BuiltinRegistrar, NodeEntry, RegistrationError, RocksRegistrar, dump,
                         dump_line, hostname, make_registrar, parse_dump, parse_line)

from conftest import count_rows, make_cfg
from fakes import RecordingDhcp, RecordingExecutor, with_config

ROCKS = "/opt/rocks/sbin/insert-ethers"
ROCKS_TABLES = ("networks", "nodes", "memberships")


def node(appliance="Compute", rack=3, rank=0, **kw):
    """A NodeEntry following the conventions: gateway .1, computes .10 + rank."""
    gw = appliance.lower() == "gateway"
    fields = dict(hostname=hostname(appliance, rack, rank), rack=rack, rank=rank, cpus=1,
                  appliance=appliance, mac="52:54:00:%02x:%02x:%02x" % (0xa0 + rack, int(gw), rank),
                  ipaddr="10.1.%d.%d" % (rack, 1 + rank if gw else 10 + rank),
                  netmask="255.255.255.0")
    fields.update(kw)
    return NodeEntry(**fields)


def cluster(rack):
    return [node("Gateway", rack, 0), node("Compute", rack, 0), node("Compute", rack, 1)]


# ============================================================================ dump format
EXAMPLE = NodeEntry(hostname="compute-3-0", rack=3, rank=0, cpus=2, appliance="Compute",
                    mac="52:54:00:12:34:56", device="eth0", module="", ipaddr="10.3.0.10",
                    netmask="255.255.255.0")
EXAMPLE_LINE = ('insert-ethers --hostname="compute-3-0" --rack=3 --rank=0 --cpus=2'
                ' --appliance="Compute" --mac="52:54:00:12:34:56" --device="eth0"'
                ' --module="None" --ipaddr="10.3.0.10" --netmask="255.255.255.0"'
                ' --norestart --batch')


def test_dump_line_exact_format_with_none_for_empty_module():
    assert dump_line(EXAMPLE) == EXAMPLE_LINE


def test_dump_line_rocks_argv0_and_module():
    e = NodeEntry(hostname="gateway-12-0", rack=12, rank=0, cpus=4, appliance="Gateway",
                  mac="52:54:00:ab:cd:ef", device="eth1", module="virtio_net",
                  ipaddr="192.168.12.1", netmask="255.255.0.0")
    assert dump_line(e, ROCKS) == (
        '/opt/rocks/sbin/insert-ethers --hostname="gateway-12-0" --rack=12 --rank=0 --cpus=4'
        ' --appliance="Gateway" --mac="52:54:00:ab:cd:ef" --device="eth1"'
        ' --module="virtio_net" --ipaddr="192.168.12.1" --netmask="255.255.0.0"'
        ' --norestart --batch')


def test_node_entry_defaults_and_keyword_only():
    e = NodeEntry(hostname="compute-1-0", rack=1, rank=0, cpus=1, appliance="Compute",
                  mac="52:54:00:00:00:01", ipaddr="10.0.0.1", netmask="255.255.255.0")
    assert (e.device, e.module) == ("eth0", "")
    with pytest.raises(TypeError):
        NodeEntry("compute-1-0", 1, 0, 1, "Compute", "52:54:00:00:00:01", "eth0", "",
                  "10.0.0.1", "255.255.255.0")


def test_dump_one_line_per_entry_with_trailing_newline():
    text = dump(cluster(3), ROCKS)
    lines = text.split("\n")
    assert text.endswith("\n") and lines[-1] == "" and len(lines) == 4
    assert all(x.startswith(ROCKS + ' --hostname="') for x in lines[:3])
    assert dump([]) == ""


def test_dump_refuses_a_batch_naming_a_mac_twice():
    with pytest.raises(RegistrationError, match="duplicate MAC 52:54:00:a3:00:00 in the dump"):
        dump([node(rank=0), node(rank=1, mac="52:54:00:a3:00:00")])


def test_round_trip():
    entries = cluster(3) + cluster(4) + [
        node(rack=5, rank=7, cpus=16, module="e1000", device="eth0.10", mac="52:54:00:AB:CD:EF"),
        node(rack=0, rank=0, hostname="fe.example.org", appliance="Gateway",
             mac="00:02:c9:03:00:12:34:56:78:9a:bc:de:f0:12:34:56:78:9a:bc:de",
             ipaddr="10.0.0.1", netmask="255.0.0.0"),
    ]
    for argv0 in ("insert-ethers", ROCKS, "./insert-ethers"):
        assert parse_dump(dump(entries, argv0)) == entries
    assert parse_line(EXAMPLE_LINE) == EXAMPLE


def test_hostname():
    assert hostname("Compute", 3, 0) == "compute-3-0"
    assert hostname("gateway", 3, 0) == "gateway-3-0"
    assert hostname("Gateway", 12, 5) == "gateway-12-5"
    for bad in (("Com pute", 1, 0), ("a;b", 1, 0), ("compute", -1, 0), ("compute", 1, "0")):
        with pytest.raises(RegistrationError):
            hostname(*bad)


@pytest.mark.parametrize("field, value", [
    ("hostname", 'compute-3-0"'), ("hostname", "compute-3-0;reboot"),
    ("hostname", "$(reboot)"), ("hostname", "`id`"), ("hostname", "a b"),
    ("hostname", "compute-3-0\n"), ("hostname", ""), ("hostname", "None"),
    ("hostname", ".".join(["a" * 60] * 3)),
    ("appliance", 'Compute"; rm -rf /; "'), ("appliance", "$(id)"), ("appliance", "None"),
    ("appliance", "Compute\n"), ("appliance", ""),
    ("mac", '52:54:00:12:34:56"'), ("mac", "52:54:00:12:34"), ("mac", "52-54-00-12-34-56"),
    ("mac", "zz:54:00:12:34:56"), ("mac", ""),
    ("device", "eth0;id"), ("device", "$(x)"), ("device", "None"),
    ("module", 'e1000"'), ("module", "e1000 && id"), ("module", "None"),
    ("ipaddr", "10.0.0.256"), ("ipaddr", "010.0.0.1"), ("ipaddr", "10.0.0.1;id"),
    ("ipaddr", "\uff11\uff10.0.0.1"), ("ipaddr", "10.0.0"), ("ipaddr", ""),
    ("netmask", "255.0.255.0"), ("netmask", "255.255.255.0$(id)"), ("netmask", ""),
    ("rack", -1), ("rack", "3"), ("rack", True), ("rack", 2**31),
    ("rank", -1), ("rank", 1.0), ("cpus", 0), ("cpus", None),
])
def test_bad_fields_are_refused(field, value):
    fields = dict(EXAMPLE.__dict__)
    fields[field] = value
    with pytest.raises(RegistrationError):
        NodeEntry(**fields)


def test_dump_line_revalidates_and_checks_argv0():
    # a NodeEntry cannot be built bad, but one forced past its checks is still refused
    forced = NodeEntry(**EXAMPLE.__dict__)
    object.__setattr__(forced, "hostname", 'x"; reboot; "')
    with pytest.raises(RegistrationError, match="bad hostname"):
        dump_line(forced)
    for argv0 in ("rm", "insert-ethers; id", "/opt/$(id)/insert-ethers", "insert-ethersx",
                  "/bin/sh -c insert-ethers", ""):
        with pytest.raises(RegistrationError, match="bad insert-ethers program"):
            dump_line(EXAMPLE, argv0)
    with pytest.raises(RegistrationError):
        dump_line({"hostname": "compute-3-0"})


@pytest.mark.parametrize("line", [
    "",
    "rm -rf /",
    EXAMPLE_LINE.replace("insert-ethers", "/usr/bin/not-insert-ethers", 1),
    EXAMPLE_LINE.replace("insert-ethers", "insert-ethers; id;", 1),
    EXAMPLE_LINE.replace("insert-ethers", "$(id)/insert-ethers", 1),
    EXAMPLE_LINE.replace(" --batch", ""),
    EXAMPLE_LINE + " --update",
    EXAMPLE_LINE + "; reboot",
    EXAMPLE_LINE.replace("--rack=3", "--rack=03"),
    EXAMPLE_LINE.replace("--rack=3", "--rack=-3"),
    EXAMPLE_LINE.replace("--rack=3", '--rack="3"'),
    EXAMPLE_LINE.replace(' --rank=0 --cpus=2', ' --cpus=2 --rank=0'),
    EXAMPLE_LINE.replace('"compute-3-0"', "'compute-3-0'"),
    EXAMPLE_LINE.replace('"compute-3-0"', '"compute-3-0$(reboot)"'),
    EXAMPLE_LINE.replace('"compute-3-0"', '"compute-3-0";reboot;"x"'),
    EXAMPLE_LINE.replace('"10.3.0.10"', '"None"'),
    EXAMPLE_LINE.replace('"52:54:00:12:34:56"', '"None"'),
    EXAMPLE_LINE.replace("  ", " ").replace(" --mac", "  --mac"),
])
def test_parse_line_refuses_anything_else_naming_the_line(line):
    with pytest.raises(RegistrationError) as err:
        parse_line(line)
    assert repr(line) in str(err.value)


def test_parse_line_accepts_rocks_paths_and_surrounding_space():
    for argv0 in ("insert-ethers", ROCKS, "./insert-ethers", "/usr/local/sbin/insert-ethers"):
        line = EXAMPLE_LINE.replace("insert-ethers", argv0, 1)
        assert parse_line("  " + line + "\r\n") == EXAMPLE


def test_parse_dump_skips_blanks_and_comments_and_numbers_bad_lines():
    text = "# rack 3\n\n%s\n   \n  # done\n" % EXAMPLE_LINE
    assert parse_dump(text) == [EXAMPLE]
    with pytest.raises(RegistrationError, match=r"dump line 3: .*'insert-ethers --oops'"):
        parse_dump("# x\n%s\ninsert-ethers --oops\n" % EXAMPLE_LINE)


# ============================================================================ rocks registrar
def argv_of(e):
    return [ROCKS, "--hostname=%s" % e.hostname, "--rack=%d" % e.rack, "--rank=%d" % e.rank,
            "--cpus=%d" % e.cpus, "--appliance=%s" % e.appliance, "--mac=%s" % e.mac,
            "--device=%s" % e.device, "--module=%s" % (e.module or "None"),
            "--ipaddr=%s" % e.ipaddr, "--netmask=%s" % e.netmask, "--norestart", "--batch"]


@pytest.fixture
def state_path(tmp_path):
    return str(tmp_path / "rocks-applied.json")


def rocks(state_path, fail_at=None):
    """A rocks registrar on a recording executor that fails the call numbered ``fail_at``."""
    rec = RecordingExecutor("rocks")
    if fail_at:
        rec.fail(fail_at, stderr="command failed")
    return RocksRegistrar(rec, applied_path=state_path), rec


def test_rocks_register_exact_argv_then_one_update(state_path):
    r, rec = rocks(state_path)
    entries = cluster(3)
    assert r.register(entries) == ["gateway-3-0", "compute-3-0", "compute-3-1"]
    assert rec.calls == [argv_of(e) for e in entries] + [[ROCKS, "--update"]]
    assert rec.calls[0][1:4] == ["--hostname=gateway-3-0", "--rack=3", "--rank=0"]
    assert rec.calls[1][8] == "--module=None"
    with open(state_path) as f:
        assert json.load(f) == {"applied": [dump_line(e, ROCKS) for e in entries],
                                "update_pending": False}
    assert r.registered() == entries


def test_rocks_replay_runs_nothing(state_path):
    r, _ = rocks(state_path)
    r.register(cluster(3))
    r2, rec2 = rocks(state_path)
    assert r2.register(cluster(3)) == []
    assert r2.register(parse_dump(dump(cluster(3)))) == []
    assert rec2.calls == []


def test_rocks_adds_only_the_new_node(state_path):
    r, rec = rocks(state_path)
    r.register(cluster(3)[:2])
    rec.calls.clear()
    r.register(cluster(3))
    assert rec.calls == [argv_of(cluster(3)[2]), [ROCKS, "--update"]]


@pytest.mark.parametrize("clash, message", [
    (dict(mac="52:54:00:a3:00:00"), "duplicate MAC 52:54:00:a3:00:00: already registered to "
                                    "compute-3-0"),
    (dict(mac="52:54:00:A3:00:00"), "duplicate MAC 52:54:00:A3:00:00: already registered to "
                                            "compute-3-0"),
    (dict(ipaddr="10.1.3.10"), "duplicate IP 10.1.3.10: already registered to compute-3-0"),
    (dict(hostname="other-3-0", rack=3, mac="52:54:00:99:00:00", ipaddr="10.1.99.1"),
     "duplicate appliance/rack/rank Compute/3/0: already registered to compute-3-0"),
    (dict(hostname="compute-3-0", rack=3, cpus=8), "host compute-3-0 is already registered "
                                                   "with different settings"),
])
def test_rocks_refuses_duplicates_before_running_anything(state_path, clash, message):
    r, rec = rocks(state_path)
    r.register(cluster(3))
    rec.calls.clear()
    with pytest.raises(RegistrationError, match=message):
        r.register([node("Gateway", 4, 0), node(**{"appliance": "Compute", "rack": 4, **clash})])
    assert rec.calls == []
    assert r.registered() == cluster(3)


def test_rocks_unregister_removes_exactly_that_rack(state_path):
    r, rec = rocks(state_path)
    r.register(cluster(3))
    r.register(cluster(4))
    rec.calls.clear()
    assert r.unregister(cluster(3)) == ["gateway-3-0", "compute-3-0", "compute-3-1"]
    assert rec.calls == [[ROCKS, "--remove", "gateway-3-0"], [ROCKS, "--remove", "compute-3-0"],
                         [ROCKS, "--remove", "compute-3-1"], [ROCKS, "--update"]]
    assert r.registered() == cluster(4)
    rec.calls.clear()
    assert r.unregister(cluster(3)) == []
    assert rec.calls == []
    # and it can be registered again afterwards
    r.register(cluster(3))
    assert rec.calls == [argv_of(e) for e in cluster(3)] + [[ROCKS, "--update"]]


def test_rocks_crash_in_the_middle_of_register_converges(state_path):
    entries = cluster(3)
    r, rec = rocks(state_path, fail_at=2)
    with pytest.raises(VcError, match="command failed"):
        r.register(entries)
    assert rec.calls == [argv_of(entries[0]), argv_of(entries[1])]
    r2, rec2 = rocks(state_path)
    r2.register(entries)
    # the first line is not run again; the failed one and the rest are; one --update
    assert rec2.calls == [argv_of(entries[1]), argv_of(entries[2]), [ROCKS, "--update"]]
    r3, rec3 = rocks(state_path)
    r3.register(entries)
    assert rec3.calls == []
    assert r3.registered() == entries


def test_rocks_crash_at_update_reruns_only_the_update(state_path):
    entries = cluster(3)
    r, rec = rocks(state_path, fail_at=4)
    with pytest.raises(VcError):
        r.register(entries)
    r2, rec2 = rocks(state_path)
    r2.register(entries)
    assert rec2.calls == [[ROCKS, "--update"]]


def test_rocks_crash_in_the_middle_of_unregister_converges(state_path):
    r, _ = rocks(state_path)
    r.register(cluster(3))
    r1, rec1 = rocks(state_path, fail_at=2)
    with pytest.raises(VcError):
        r1.unregister(cluster(3))
    r2, rec2 = rocks(state_path)
    r2.unregister(cluster(3))
    assert rec2.calls == [[ROCKS, "--remove", "compute-3-0"], [ROCKS, "--remove", "compute-3-1"],
                          [ROCKS, "--update"]]
    assert r2.registered() == []


def test_rocks_corrupt_state_file_is_refused(state_path):
    with open(state_path, "w") as f:
        f.write('{"applied": ["rm -rf /"], "update_pending": false}')
    r, rec = rocks(state_path)
    with pytest.raises(RegistrationError):
        r.register(cluster(3))
    with open(state_path, "w") as f:
        f.write("[not json")
    with pytest.raises(RegistrationError, match="corrupt registrar state file"):
        r.register(cluster(3))
    assert rec.calls == []


# ============================================================================ builtin registrar
@pytest.fixture
def rdb(db):
    """``db`` with the Rocks tables emptied too, and the migration re-applied (which reseeds
    the memberships and proves 002 re-runnable)."""

    def wipe(cur):
        for t in ROCKS_TABLES:
            cur.execute("DELETE FROM %s" % t)

    db.transaction(wipe)
    with open(os.path.join(SQL_DIR, "002_rocks_cluster_db.sql")) as f:
        stmts = split_statements(f.read())

    def reapply(cur):
        for _ in range(2):
            for s in stmts:
                cur.execute(s)

    db.transaction(reapply)
    return db


@pytest.fixture
def hosts_file(tmp_path):
    path = tmp_path / "hosts"
    path.write_text("127.0.0.1\tlocalhost\n# keep me\n")
    return str(path)


def builtin(rdb, hosts_file, **kw):
    dhcp = RecordingDhcp(**kw)
    return BuiltinRegistrar(rdb, dhcp, hosts_file), dhcp


def rows(db):
    return db.query(
        "SELECT n.Name, n.CPUs, n.Rack, n.`Rank`, n.Comment, m.Name AS Membership, m.Appliance,"
        " w.MAC, w.IP, w.Netmask, w.Gateway, w.Name AS NetName, w.Device, w.Module"
        " FROM nodes n JOIN memberships m ON m.ID = n.Membership"
        " JOIN networks w ON w.Node = n.ID ORDER BY n.Rack, n.Name")


def rocks_counts(db):
    out = count_rows(db)
    for t in ROCKS_TABLES:
        out[t] = db.query("SELECT COUNT(*) AS n FROM %s" % t)[0]["n"]
    return out


def expected_row(e, appliance):
    return {"Name": e.hostname, "CPUs": e.cpus, "Rack": e.rack, "Rank": e.rank, "Comment": None,
            "Membership": e.appliance, "Appliance": appliance, "MAC": e.mac, "IP": e.ipaddr,
            "Netmask": e.netmask, "Gateway": None, "NetName": e.hostname, "Device": e.device,
            "Module": e.module or None}


HOSTS_3 = ("# vc rack 3 begin\n10.1.3.1\tgateway-3-0\n10.1.3.10\tcompute-3-0\n"
           "10.1.3.11\tcompute-3-1\n# vc rack 3 end\n")
HOSTS_4 = ("# vc rack 4 begin\n10.1.4.1\tgateway-4-0\n10.1.4.10\tcompute-4-0\n"
           "10.1.4.11\tcompute-4-1\n# vc rack 4 end\n")
HEAD = "127.0.0.1\tlocalhost\n# keep me\n"


def read(path):
    with open(path) as f:
        return f.read()


def test_migration_seeds_memberships_once(rdb):
    assert rdb.query("SELECT Name, Appliance, Distribution, Compute, Public FROM memberships"
                     " ORDER BY Name") == [
        {"Name": "Compute", "Appliance": "compute", "Distribution": "rocks-dist",
         "Compute": "yes", "Public": "no"},
        {"Name": "Gateway", "Appliance": "gateway", "Distribution": "rocks-dist",
         "Compute": "no", "Public": "yes"}]


def test_database_itself_refuses_duplicate_mac_ip_and_slot(rdb, hosts_file):
    r, _ = builtin(rdb, hosts_file)
    r.register(cluster(3), "vc-3")
    node_id = rdb.query("SELECT ID FROM nodes WHERE Name = 'compute-3-0'")[0]["ID"]
    for sql in (
        "INSERT INTO networks (Node, MAC, IP) VALUES (%d, '52:54:00:a3:00:00', NULL)" % node_id,
        "INSERT INTO networks (Node, MAC, IP) VALUES (%d, NULL, '10.1.3.10')" % node_id,
        "INSERT INTO nodes (Name, Membership, Rack, `Rank`) SELECT 'x', ID, 3, 0"
        " FROM memberships WHERE Name = 'Compute'",
    ):
        with pytest.raises(Exception) as err:
            rdb.query(sql)
        assert err.value.args[0] == 1062


def test_builtin_register_writes_rows_dhcp_and_hosts_block(rdb, hosts_file):
    r, dhcp = builtin(rdb, hosts_file)
    entries = cluster(3)
    assert r.register(entries, "vc-3") == ["gateway-3-0", "compute-3-0", "compute-3-1"]
    assert rows(rdb) == [expected_row(entries[1], "compute"), expected_row(entries[2], "compute"),
                         expected_row(entries[0], "gateway")]
    assert dhcp.calls == [("add", "vc-3", e.mac, e.ipaddr, e.hostname) for e in entries]
    assert read(hosts_file) == HEAD + HOSTS_3
    assert os.stat(hosts_file).st_mode & 0o777 == 0o644


def test_builtin_module_and_new_hosts_file(rdb, tmp_path):
    path = str(tmp_path / "new-hosts")
    r = BuiltinRegistrar(rdb, RecordingDhcp(), path)
    e = node(rack=7, rank=2, module="virtio_net", cpus=4)
    r.register([e], "vc-7")
    assert rows(rdb) == [expected_row(e, "compute")]
    assert rows(rdb)[0]["Module"] == "virtio_net"
    assert read(path) == "# vc rack 7 begin\n10.1.7.12\tcompute-7-2\n# vc rack 7 end\n"
    assert os.stat(path).st_mode & 0o777 == 0o644
    r.unregister([e], "vc-7")
    assert read(path) == ""


def test_builtin_replay_is_a_no_op(rdb, hosts_file):
    r, dhcp = builtin(rdb, hosts_file)
    r.register(cluster(3), "vc-3")
    before, ino = rocks_counts(rdb), os.stat(hosts_file).st_ino
    dhcp.calls.clear()
    assert r.register(parse_dump(dump(cluster(3))), "vc-3") == []
    assert rocks_counts(rdb) == before
    # DHCP is asked again (a crashed run may not have added it) and answers "already there"
    assert all(not dhcp.add_dhcp_host(*c[1:]) for c in list(dhcp.calls))
    assert len(dhcp.hosts) == 3
    assert os.stat(hosts_file).st_ino == ino  # not even rewritten
    assert read(hosts_file) == HEAD + HOSTS_3


def test_builtin_membership_name_is_case_insensitive_on_replay(rdb, hosts_file):
    r, _ = builtin(rdb, hosts_file)
    r.register(cluster(3), "vc-3")
    assert r.register([node("compute", 3, 0, hostname="compute-3-0")], "vc-3") == []


@pytest.mark.parametrize("clash, message", [
    (dict(mac="52:54:00:a3:00:00"), "duplicate MAC 52:54:00:a3:00:00: already registered to "
                                    "compute-3-0"),
    (dict(mac="52:54:00:A3:00:00"), "duplicate MAC 52:54:00:A3:00:00: already registered to "
                                    "compute-3-0"),
    (dict(ipaddr="10.1.3.11"), "duplicate IP 10.1.3.11: already registered to compute-3-1"),
    (dict(hostname="other-3-1", rack=3, rank=1, mac="52:54:00:99:00:00", ipaddr="10.1.99.1"),
     "duplicate appliance/rack/rank Compute/3/1: already registered to compute-3-1"),
    (dict(hostname="compute-3-0", rack=3), "host compute-3-0 is already registered with "
                                           "different settings"),
    (dict(appliance="Storage", hostname="storage-4-0"), "unknown appliance 'Storage'"),
])
def test_builtin_refuses_duplicates_writing_nothing(rdb, hosts_file, clash, message):
    r, dhcp = builtin(rdb, hosts_file)
    r.register(cluster(3), "vc-3")
    before, text = rocks_counts(rdb), read(hosts_file)
    dhcp.calls.clear()
    # the clash is the last entry: the rows of the good ones before it must not survive
    batch = [node("Gateway", 4, 0), node("Compute", 4, 0),
             node(**{"appliance": "Compute", "rack": 4, "rank": 1, **clash})]
    with pytest.raises(RegistrationError, match=message):
        r.register(batch, "vc-4")
    assert rocks_counts(rdb) == before
    assert dhcp.calls == []
    assert read(hosts_file) == text


def test_builtin_unregister_removes_exactly_that_rack(rdb, hosts_file):
    r, dhcp = builtin(rdb, hosts_file)
    r.register(cluster(3), "vc-3")
    r.register(cluster(4), "vc-4")
    assert read(hosts_file) == HEAD + HOSTS_3 + HOSTS_4
    rack4_rows = [x for x in rows(rdb) if x["Rack"] == 4]
    dhcp.calls.clear()
    assert r.unregister(cluster(3), "vc-3") == ["gateway-3-0", "compute-3-0", "compute-3-1"]
    assert rows(rdb) == rack4_rows
    assert rdb.query("SELECT COUNT(*) AS n FROM networks")[0]["n"] == 3
    assert dhcp.calls == [("remove", "vc-3", e.mac, e.ipaddr, e.hostname) for e in cluster(3)]
    assert sorted(dhcp.hosts) == sorted(("vc-4", e.mac) for e in cluster(4))
    assert read(hosts_file) == HEAD + HOSTS_4
    # again: nothing left to remove, nothing changes
    before = rocks_counts(rdb)
    assert r.unregister(cluster(3), "vc-3") == []
    assert rocks_counts(rdb) == before
    assert read(hosts_file) == HEAD + HOSTS_4
    # and the rack can be registered again, its block goes back at the end
    r.register(cluster(3), "vc-3")
    assert read(hosts_file) == HEAD + HOSTS_4 + HOSTS_3


def test_builtin_reregister_replaces_block_in_place(rdb, hosts_file):
    r, _ = builtin(rdb, hosts_file)
    r.register(cluster(3)[:2], "vc-3")
    r.register(cluster(4), "vc-4")
    r.register(cluster(3), "vc-3")
    assert read(hosts_file) == HEAD + HOSTS_3 + HOSTS_4


def test_builtin_crash_in_dhcp_then_rerun_converges(rdb, hosts_file):
    r, dhcp = builtin(rdb, hosts_file, fail_add_at=2)
    with pytest.raises(VcError, match="libvirt said no"):
        r.register(cluster(3), "vc-3")
    assert len(rows(rdb)) == 3 and len(dhcp.hosts) == 1
    assert read(hosts_file) == HEAD
    dhcp.fail_add_at = None
    assert r.register(cluster(3), "vc-3") == []
    assert sorted(dhcp.hosts) == sorted(("vc-3", e.mac) for e in cluster(3))
    assert read(hosts_file) == HEAD + HOSTS_3


def test_builtin_crash_writing_hosts_file_leaves_it_whole(rdb, hosts_file, monkeypatch):
    r, dhcp = builtin(rdb, hosts_file)

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(reg.os, "replace", boom)
    with pytest.raises(OSError):
        r.register(cluster(3), "vc-3")
    monkeypatch.undo()
    assert read(hosts_file) == HEAD
    assert sorted(os.listdir(os.path.dirname(hosts_file))) == ["hosts", "hosts.lock"]
    r.register(cluster(3), "vc-3")
    assert read(hosts_file) == HEAD + HOSTS_3


def test_builtin_crash_in_unregister_then_rerun_converges(rdb, hosts_file):
    r, dhcp = builtin(rdb, hosts_file)
    r.register(cluster(3), "vc-3")
    r.register(cluster(4), "vc-4")
    dhcp.fail_remove_at = 2
    with pytest.raises(VcError):
        r.unregister(cluster(3), "vc-3")
    assert len(rows(rdb)) == 6  # the rows go only after the DHCP entries
    dhcp.fail_remove_at = None
    r.unregister(cluster(3), "vc-3")
    assert [x["Name"] for x in rows(rdb)] == ["compute-4-0", "compute-4-1", "gateway-4-0"]
    assert sorted(dhcp.hosts) == sorted(("vc-4", e.mac) for e in cluster(4))
    assert read(hosts_file) == HEAD + HOSTS_4


def test_builtin_unbalanced_markers_are_refused(rdb, hosts_file):
    with open(hosts_file, "a") as f:
        f.write("# vc rack 3 begin\n10.9.9.9\tstray\n")
    r, _ = builtin(rdb, hosts_file)
    with pytest.raises(RegistrationError, match="'# vc rack 3 begin' without '# vc rack 3 end'"):
        r.register(cluster(3), "vc-3")
    assert read(hosts_file).endswith("stray\n")


def test_replace_block():
    text = "a\n# vc rack 1 begin\nold\n# vc rack 1 end\nb\n# vc rack 2 begin\nx\n# vc rack 2 end\n"
    assert reg.replace_block(text, 1, ["new1", "new2"]) == (
        "a\n# vc rack 1 begin\nnew1\nnew2\n# vc rack 1 end\nb\n# vc rack 2 begin\nx\n"
        "# vc rack 2 end\n")
    assert reg.replace_block(text, 1, []) == "a\nb\n# vc rack 2 begin\nx\n# vc rack 2 end\n"
    assert reg.replace_block(text, 3, ["y"]) == text + "# vc rack 3 begin\ny\n# vc rack 3 end\n"
    assert reg.replace_block("", 3, []) == ""
    with pytest.raises(RegistrationError, match="without"):
        reg.replace_block("# vc rack 1 end\n", 1, [])


# ============================================================================ factory
def test_make_registrar(rdb, hosts_file, state_path, tmp_path):
    cfg = make_cfg({"register": {"hosts_file": hosts_file}})
    r = make_registrar(cfg, db=rdb, dhcp=RecordingDhcp())
    assert isinstance(r, BuiltinRegistrar) and r.hosts_file == hosts_file
    assert r.dump_argv0 == "insert-ethers"
    cfg = make_cfg({"register": {"registrar": "rocks"}, "site": {"state_dir": str(tmp_path)}},
                   path="/etc/vc/vc.conf")
    r = make_registrar(cfg, execute=RecordingExecutor())
    assert isinstance(r, RocksRegistrar) and r.argv0 == ROCKS
    assert r.dump_argv0 == ROCKS and r.applied_path == state_path
    with pytest.raises(ConfigError, match="unknown registrar 'rocks2'") as err:
        make_registrar(with_config(cfg, "register", registrar="rocks2"))
    assert err.value.exit_code == 2 and "/etc/vc/vc.conf" in str(err.value)
