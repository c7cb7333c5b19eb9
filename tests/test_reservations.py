"""Reservations against the real MariaDB: validation writes nothing, admission, the state machine,
extend / stop early / delete, events."""

from datetime import timedelta

import pytest

from conftest import NOW, count_rows, db_overrides, make_cfg
from vc import reservations as R
from vc import states
from vc.errors import CapacityError, InvalidTransition, NotFound, ValidationError, VcError

H = timedelta(hours=1)


def fields(**kw):
    f = {"owner": "bob", "start": "2026-12-01T10:00", "end": "2026-12-01T12:00",
         "gateways": "1", "computes": "2"}
    f.update(kw)
    return f


def add_target(db, name="t1"):
    def run(cur):
        cur.execute("INSERT INTO vciscsitarget (name, address, created_at) VALUES (%s, %s, %s)",
                    (name, "127.0.0.1", "2026-01-01"))

    db.transaction(run)


def rows(db, sql, args=()):
    return db.query(sql, args)


def test_create_stores_everything(cfg, db):
    add_target(db)
    rack = R.create(cfg, db, fields(volumes=["/data:t1:20", "/scratch/:t1:5"],
                                    compute_memory_mb="1024", comment="thesis runs"), NOW)
    reg = rows(db, "SELECT * FROM vcregist")[0]
    assert reg["rack"] == rack and reg["state"] == "reserved" and reg["owner"] == "bob"
    # naive times are Asia/Tokyo (+09:00); stored in UTC
    assert str(reg["start_at"]) == "2026-12-01 01:00:00"
    assert str(reg["end_at"]) == "2026-12-01 03:00:00"
    res = {r["appliance"]: r for r in rows(db, "SELECT * FROM vcresource")}
    assert res["gateway"]["count"] == 1 and res["gateway"]["memory_mb"] == 256
    assert res["compute"]["count"] == 2 and res["compute"]["memory_mb"] == 1024
    assert res["compute"]["disk_gb"] == 5 and res["compute"]["vcpus"] == 1
    vols = rows(db, "SELECT mount_point, size_gb, appliance, nfs_export FROM vciscsi "
                    "ORDER BY mount_point")
    assert [(v["mount_point"], v["size_gb"], v["appliance"]) for v in vols] == [
        ("/data", 20, "gateway"), ("/scratch", 5, "gateway")]
    ev = rows(db, "SELECT * FROM vcevent")
    assert len(ev) == 1 and ev[0]["to_state"] == "reserved" and ev[0]["actor"] == "bob"
    shown = R.get(db, rack)
    assert shown["resources"]["compute"]["memory_mb"] == 1024
    assert [v["target"] for v in shown["volumes"]] == ["t1", "t1"]


BAD = [
    ({"start": "garbage"}, "start"),
    ({"start": ""}, "start"),
    ({"end": "2026-13-01T00:00"}, "end"),
    ({"end": "2026-12-01T09:00"}, "end"),                      # before start
    ({"start": "2026-11-30T00:00", "end": "2026-12-01T08:59"}, "end"),  # end in the past (JST)
    ({"end": "2026-12-04T10:00"}, "end"),                      # 72 h > max 48 h
    ({"gateways": "0"}, "gateways"),
    ({"gateways": "-1"}, "gateways"),
    ({"gateways": "3"}, "gateways"),                           # max_gateways 2
    ({"gateways": "one"}, "gateways"),
    ({"computes": "-3"}, "computes"),
    ({"computes": "1e3"}, "computes"),
    ({"computes": "99999999999999"}, "computes"),
    ({"computes": "16"}, "computes"),                          # 1 + 16 > max_nodes 16
    ({"computes": "2.5"}, "computes"),
    ({"memory_mb": "0"}, "gateway_memory_mb"),
    ({"compute_memory_mb": "100000"}, "compute_memory_mb"),
    ({"compute_disk_gb": "lots"}, "compute_disk_gb"),
    ({"gateway_vcpus": "9"}, "gateway_vcpus"),
    ({"volumes": ["/data:nosuch:10"]}, "volume1"),             # unknown target
    ({"volumes": ["relative:t1:10"]}, "volume1"),
    ({"volumes": ["/a/../etc:t1:10"]}, "volume1"),
    ({"volumes": ["/data;rm -rf /:t1:10"]}, "volume1"),
    ({"volumes": ["/data:t1:0"]}, "volume1"),
    ({"volumes": ["/data:t1:big"]}, "volume1"),
    ({"volumes": ["/data:t1:101"]}, "volume1"),
    ({"volumes": ["/data"]}, "volume1"),
    ({"volumes": ["/d:t1:1", "/d:t1:1"]}, "volume2"),
    ({"volumes": ["/a:t1:1", "/b:t1:1", "/c:t1:1"]}, "volumes"),  # max_volumes 2
    ({"owner": "bad owner"}, "owner"),
    ({"comment": "two\nlines"}, "comment"),
]


@pytest.mark.parametrize("change,field", BAD)
def test_bad_input_clear_error_nothing_written(cfg, db, change, field):
    add_target(db)
    before = count_rows(db)
    with pytest.raises(ValidationError) as ei:
        R.create(cfg, db, fields(**change), NOW)
    assert field in ei.value.errors, ei.value.errors
    assert ei.value.errors[field]
    assert count_rows(db) == before


def test_start_in_the_past_is_accepted(cfg, db):
    rack = R.create(cfg, db, fields(start="2026-11-30T00:00", end="2026-12-01T10:00"), NOW)
    assert R.get(db, rack)["state"] == "reserved"


def test_times_with_offset_and_relative(cfg, db):
    rack = R.create(cfg, db, fields(start="2026-12-01T00:30:00Z", end="now+3h"), NOW)
    r = R.get(db, rack)
    assert r["start"] == NOW + timedelta(minutes=30) and r["end"] == NOW + 3 * H


def test_capacity_refusal_says_what_and_when_and_writes_nothing(cfg, db):
    # host h1: 4096 MB / 8 vcpus; rack A takes 3 x 1024 from 10:00 to 12:00 JST
    R.create(cfg, db, fields(memory_mb="1024"), NOW)
    before = count_rows(db)
    with pytest.raises(CapacityError) as ei:
        R.create(cfg, db, fields(start="2026-12-01T11:00", end="2026-12-01T13:00",
                                 computes="1", memory_mb="1024"), NOW)
    msg = str(ei.value)
    assert "not enough memory" in msg
    assert "from 2026-12-01 11:00 JST to 2026-12-01 12:00 JST" in msg, msg
    assert count_rows(db) == before
    # after A ends it fits
    R.create(cfg, db, fields(start="2026-12-01T12:00", end="2026-12-01T13:00", computes="3",
                             memory_mb="1024"), NOW)


def test_public_pool(migrated, db):
    cfg = make_cfg(dict(db_overrides(migrated), **{"host:h1": {"vcpus": "64"}}))
    # 10 public addresses: five 2-gateway clusters fill it
    for _ in range(5):
        R.create(cfg, db, fields(gateways="2", computes="0", memory_mb="64"), NOW)
    with pytest.raises(CapacityError, match="public addresses"):
        R.create(cfg, db, fields(gateways="1", computes="0", memory_mb="64"), NOW)


def test_subnet_pool(migrated, db):
    cfg = make_cfg(dict(db_overrides(migrated), addresses={"private_pool": "10.9.0.0/23",
                                                           "private_prefix": "24"}))
    assert cfg.subnet_count == 2
    R.create(cfg, db, fields(computes="0", memory_mb="64"), NOW)
    R.create(cfg, db, fields(computes="0", memory_mb="64"), NOW)
    with pytest.raises(CapacityError, match="2 cluster subnets"):
        R.create(cfg, db, fields(computes="0", memory_mb="64"), NOW)


def test_stopped_and_deleted_free_capacity(cfg, db):
    rack = R.create(cfg, db, fields(computes="3", memory_mb="1024"), NOW)
    with pytest.raises(CapacityError):
        R.create(cfg, db, fields(computes="0", memory_mb="1024"), NOW)
    assert R.stop_now(cfg, db, rack, NOW, "bob") == "stopped"
    R.create(cfg, db, fields(computes="3", memory_mb="1024"), NOW)


def test_extend_grow_shrink_and_refuse(cfg, db):
    a = R.create(cfg, db, fields(memory_mb="1024"), NOW)                 # 10-12 JST, 3 GB
    R.create(cfg, db, fields(start="2026-12-01T13:00", end="2026-12-01T15:00", computes="3",
                             memory_mb="1024"), NOW)                     # 13-15 JST, 4 GB
    end = R.extend(cfg, db, a, "2026-12-01T13:00", NOW, "bob")
    assert end == NOW + 4 * H
    before = count_rows(db)
    with pytest.raises(CapacityError, match="from 2026-12-01 13:00 JST"):
        R.extend(cfg, db, a, "2026-12-01T14:00", NOW, "bob")
    assert count_rows(db) == before
    assert str(rows(db, "SELECT end_at FROM vcregist WHERE rack=%s", (a,))[0]["end_at"]) == \
        "2026-12-01 04:00:00"
    assert R.extend(cfg, db, a, "2026-12-01T11:00", NOW, "bob") == NOW + 2 * H
    with pytest.raises(ValidationError, match="at most 48 hours"):
        R.extend(cfg, db, a, "2026-12-05T11:00", NOW, "bob")
    with pytest.raises(ValidationError, match="not a time"):
        R.extend(cfg, db, a, "tomorrow-ish", NOW, "bob")
    with pytest.raises(ValidationError, match="must be after"):
        R.extend(cfg, db, a, "2026-12-01T10:15", NOW + 1.5 * H, "bob")
    ev = rows(db, "SELECT reason FROM vcevent WHERE rack=%s ORDER BY id", (a,))
    assert [e["reason"].split(" from ")[0] for e in ev] == ["reserved 2026-12-01T01:00:00Z to "
                                                            "2026-12-01T03:00:00Z: 1 gateway(s), "
                                                            "2 compute(s)", "end changed",
                                                            "end changed"]


def test_owner_only_unless_admin(cfg, db):
    rack = R.create(cfg, db, fields(), NOW)
    with pytest.raises(VcError, match="belongs to bob"):
        R.extend(cfg, db, rack, "2026-12-01T13:00", NOW, "mallory")
    with pytest.raises(VcError, match="belongs to bob"):
        R.delete(cfg, db, rack, NOW, "mallory")
    assert R.delete(cfg, db, rack, NOW, "alice", admin=True) == "deleted"


def test_stop_now_before_start_reopen_and_delete(cfg, db):
    rack = R.create(cfg, db, fields(), NOW)
    assert R.stop_now(cfg, db, rack, NOW, "bob") == "stopped"
    r = R.get(db, rack)
    assert r["state"] == "stopped" and r["start"] == NOW and r["end"] == NOW
    with pytest.raises(InvalidTransition):
        R.stop_now(cfg, db, rack, NOW, "bob")
    # extending a stopped reservation reopens it from now (capacity and limits apply)
    with pytest.raises(ValidationError, match="at most 48 hours"):
        R.extend(cfg, db, rack, "2026-12-05T13:00", NOW, "bob")
    later = NOW + H
    assert R.extend(cfg, db, rack, "2026-12-01T13:00", later, "bob") == NOW + 4 * H
    r = R.get(db, rack)
    assert r["state"] == "reserved" and r["start"] == later
    assert R.stop_now(cfg, db, rack, later, "bob") == "stopped"
    assert R.delete(cfg, db, rack, NOW, "bob") == "deleted"
    with pytest.raises(NotFound):
        R.get(db, rack)
    assert rows(db, "SELECT COUNT(*) AS n FROM vcresource")[0]["n"] == 0
    ev = rows(db, "SELECT from_state, to_state FROM vcevent WHERE rack=%s ORDER BY id", (rack,))
    assert [(e["from_state"], e["to_state"]) for e in ev] == [
        (None, "reserved"), ("reserved", "stopped"), ("stopped", "reserved"),
        ("reserved", "stopped"), ("stopped", "deleting"), ("deleting", "deleted")]


def set_state(db, rack, state):
    def run(cur):
        cur.execute("UPDATE vcregist SET state=%s WHERE rack=%s", (state, rack))

    db.transaction(run)


def test_running_stop_now_and_delete_are_requests(cfg, db):
    rack = R.create(cfg, db, fields(start="2026-12-01T08:00"), NOW)     # started 23:00 UTC
    set_state(db, rack, "running")
    later = NOW + timedelta(minutes=30)
    assert R.stop_now(cfg, db, rack, later, "bob") == "running"
    r = R.get(db, rack)
    assert r["state"] == "running" and r["end"] == later
    assert R.delete(cfg, db, rack, later, "bob") == "running"
    r = R.get(db, rack)
    assert r["pending"] == "delete" and r["state"] == "running"
    # a pending delete cannot be extended away
    with pytest.raises(InvalidTransition):
        R.extend(cfg, db, rack, "2026-12-01T11:00", NOW, "bob")


def test_state_table():
    assert set(states.STABLE) == {"reserved", "running", "stopped", "failed"}
    assert set(states.TRANSITIONAL) == {"starting", "stopping", "deleting"}
    for nxt in states.NEXT.values():
        for t in nxt:
            assert t in states.ALL + (states.DELETED,)
    assert states.can("reserved", "starting") and not states.can("running", "reserved")
    assert not states.can("stopped", "running") and states.can("failed", "starting")


def test_transition_refused_writes_nothing(cfg, db):
    rack = R.create(cfg, db, fields(), NOW)
    before = count_rows(db)

    def run(cur):
        row = states.lock(cur, rack)
        states.transition(cur, row, "running", NOW, "test", "skip starting")

    with pytest.raises(InvalidTransition, match="is reserved: cannot go to running"):
        db.transaction(run)
    assert count_rows(db) == before


def test_schema_upgrade_idempotent(cfg, db):
    from vc.db import Database, migrations

    d = Database(cfg)
    assert d.upgrade(NOW) == []
    assert d.schema_version() == migrations()[-1][0]
    d.check_schema()
    # the allocation table makes sharing impossible, not just checked
    def dup(cur):
        cur.execute("INSERT INTO vcregist (owner, start_at, end_at, created_at, updated_at) "
                    "VALUES ('x', NOW(), NOW(), NOW(), NOW())")
        for rack in (1, 2):
            cur.execute("INSERT INTO vcalloc (kind, value, rack, created_at) VALUES "
                        "('private_ip', '10.200.0.5', %s, NOW())", (rack,))

    import pymysql

    with pytest.raises(pymysql.err.IntegrityError):
        db.transaction(dup)


# ------------------------------------------------------------------------ allowed_actions
ADMINS = ("root", "alice")
LIVE, ENDED = NOW + H, NOW - H
# (state, pending, end) -> (owner's actions, an admin's actions); another user: none
ACTION_TABLE = [
    ("reserved", None, LIVE, "extend stop delete", "start extend stop delete"),
    ("starting", None, LIVE, "extend stop delete", "start extend stop delete"),
    ("running", None, LIVE, "extend stop delete", "extend stop delete"),
    ("stopping", None, LIVE, "delete", "delete"),
    ("stopped", None, LIVE, "reopen delete", "reopen delete"),
    ("failed", None, LIVE, "extend stop delete", "start extend stop delete"),
    ("deleting", None, LIVE, "", ""),
    # the window is over: nothing to extend or start; a reserved one can still be cancelled
    ("reserved", None, ENDED, "stop delete", "stop delete"),
    ("starting", None, ENDED, "delete", "delete"),
    ("running", None, ENDED, "delete", "delete"),
    ("stopping", None, ENDED, "delete", "delete"),
    ("stopped", None, ENDED, "reopen delete", "reopen delete"),
    ("failed", None, ENDED, "delete", "delete"),
    ("deleting", None, ENDED, "", ""),
    # a delete is pending: only asking again where it can still be done at once
    ("reserved", "delete", LIVE, "delete", "delete"),
    ("starting", "delete", LIVE, "", ""),
    ("running", "delete", LIVE, "", ""),
    ("stopping", "delete", LIVE, "", ""),
    ("stopped", "delete", LIVE, "delete", "delete"),
    ("failed", "delete", LIVE, "delete", "delete"),
    ("deleting", "delete", LIVE, "", ""),
]


@pytest.mark.parametrize("state,pending,end,owner,admin", ACTION_TABLE)
def test_allowed_actions_table(state, pending, end, owner, admin):
    row = {"rack": 1, "owner": "bob", "state": state, "pending": pending, "end": end}
    assert R.allowed_actions(row, NOW, "bob", ADMINS) == owner.split()
    assert R.allowed_actions(row, NOW, "mallory", ADMINS) == []
    assert R.allowed_actions(row, NOW, "alice", ADMINS) == admin.split()
    # root (vc_ctl under sudo) may do what an admin may, named in [site] admins or not
    assert R.allowed_actions(row, NOW, "carol", (), root=True) == admin.split()
    # a vcregist row (naive UTC end_at) gives the same answer
    raw = dict(row, end_at=end.replace(tzinfo=None))
    del raw["end"]
    assert R.allowed_actions(raw, NOW, "bob", ADMINS) == owner.split()


def test_allowed_actions_cover_every_state_and_follow_the_state_machine():
    assert {(s, p, e) for s, p, e, _, _ in ACTION_TABLE} >= {
        (s, None, e) for s in states.ALL for e in (LIVE, ENDED)}
    via = {  # the transition each action makes (or requests: a started cluster is stopped first)
        "start": (states.STARTING,), "reopen": (states.RESERVED,), "extend": (),
        "stop": (states.STOPPED, states.STOPPING), "delete": (states.DELETING, states.STOPPING)}
    for st in states.ALL:
        for pending in (None, "delete"):
            for end in (LIVE, ENDED):
                row = {"owner": "bob", "state": st, "pending": pending, "end": end}
                got = R.allowed_actions(row, NOW, "alice", ADMINS)
                assert list(got) == [a for a in R.ACTIONS if a in got]  # in the listed order
                for a in got:
                    if a == "extend":
                        assert st in states.HOLDS_CAPACITY
                    elif a == "start" and st == states.STARTING:
                        pass  # resuming a crashed start
                    elif a == "delete" and st == states.STOPPING:
                        pass  # marked pending: the stop under way ends in stopped -> deleting
                    else:
                        assert any(states.can(st, t) for t in via[a]), (st, a)


@pytest.mark.parametrize("state,pending,end,owner,admin", ACTION_TABLE)
def test_allowed_actions_are_accepted(cfg, db, state, pending, end, owner, admin):
    """What allowed_actions offers the owner, the operations do (no refusal)."""
    # the window is 23:00-03:00 UTC (begun at NOW); "ended" is looked at four hours after NOW
    at = NOW if end == LIVE else NOW + 4 * H
    for action in owner.split():
        db.transaction(lambda cur: cur.execute("DELETE FROM vcregist"))
        rack = R.create(cfg, db, fields(start="2026-12-01T08:00"), NOW)
        db.transaction(lambda cur, rack=rack: cur.execute(
            "UPDATE vcregist SET state = %s, pending = %s WHERE rack = %s",
            (state, pending, rack)))
        assert action in R.allowed_actions(R.get(db, rack), at, "bob", ADMINS)
        if action in ("extend", "reopen"):
            R.extend(cfg, db, rack, at + 2 * H, at, "bob")
        elif action == "stop":
            R.stop_now(cfg, db, rack, at, "bob")
        else:
            R.delete(cfg, db, rack, at, "bob")


# ------------------------------------------------------------------------ audit: numbers
BAD_NUMBERS = [
    ({"computes": "١"}, "computes"),                   # Arabic-Indic one: int() says 1
    ({"gateways": "١"}, "gateways"),
    ({"memory_mb": "²"}, "gateway_memory_mb"),         # superscript two
    ({"compute_vcpus": "２"}, "compute_vcpus"),         # fullwidth two
    ({"computes": "1 0"}, "computes"),
    ({"computes": "1_0"}, "computes"),
    ({"computes": "+1"}, "computes"),
    ({"computes": "9" * 5000}, "computes"),            # past Python's int-string limit
    ({"compute_disk_gb": "-" + "9" * 5000}, "compute_disk_gb"),
    ({"volumes": ["/data:t1:١"]}, "volume1"),
    ({"volumes": ["/data:t1:" + "9" * 5000]}, "volume1"),
    ({"volumes": [{"mount_point": "/data", "target": "t1", "size_gb": 2.5}]}, "volume1"),
]


@pytest.mark.parametrize("change,field", BAD_NUMBERS)
def test_bad_numbers_refused_nothing_written(cfg, db, change, field):
    add_target(db)
    before = count_rows(db)
    with pytest.raises(ValidationError) as ei:
        R.create(cfg, db, fields(**change), NOW)
    assert field in ei.value.errors, ei.value.errors
    assert "\n" not in str(ei.value) and len(str(ei.value)) < 300, str(ei.value)
    assert count_rows(db) == before


# ------------------------------------------------------------------------ audit: dates
def test_start_at_most_max_days_ahead(cfg, db):
    assert cfg.limits.max_days_ahead == 365
    ahead = NOW + timedelta(days=365)
    rack = R.create(cfg, db, fields(start=ahead, end=ahead + 2 * H), NOW)
    assert R.get(db, rack)["start"] == ahead
    before = count_rows(db)
    late = ahead + timedelta(minutes=1)
    with pytest.raises(ValidationError) as ei:
        R.create(cfg, db, fields(start=late, end=late + 2 * H), NOW)
    assert "at most 365 days ahead" in ei.value.errors["start"], ei.value.errors
    assert count_rows(db) == before


def test_after_2038_is_refused(cfg, db):
    """A start past 2038-01-19 03:14:07 UTC made UNIX_TIMESTAMP() NULL on the pages."""
    before = count_rows(db)
    with pytest.raises(ValidationError) as ei:
        R.create(cfg, db, fields(start="2038-01-19T12:00", end="2038-01-19T14:00"), NOW)
    assert "start" in ei.value.errors
    assert count_rows(db) == before


EXTREME = ["now-999999d", "now+999999d", "now+99999999d", "9999-12-31T23:59",
           "0001-01-01T00:00", "9999-12-31T23:59:59-12:00", "0001-01-01T00:00+14:00"]


@pytest.mark.parametrize("value", EXTREME)
@pytest.mark.parametrize("key", ["start", "end"])
def test_extreme_times_refused_cleanly(cfg, db, key, value):
    before = count_rows(db)
    with pytest.raises(ValidationError) as ei:
        R.create(cfg, db, fields(**{key: value}), NOW)
    assert ei.value.errors, ei.value
    assert "\n" not in str(ei.value)
    assert count_rows(db) == before


@pytest.mark.parametrize("value", EXTREME)
def test_extend_to_extreme_times_refused_cleanly(cfg, db, value):
    rack = R.create(cfg, db, fields(), NOW)
    stopped = R.create(cfg, db, fields(start="2026-12-02T10:00", end="2026-12-02T12:00"), NOW)
    assert R.stop_now(cfg, db, stopped, NOW, "bob") == "stopped"
    before = count_rows(db)
    for r in (rack, stopped):   # change the end / reopen
        with pytest.raises(ValidationError) as ei:
            R.extend(cfg, db, r, value, NOW, "bob")
        assert "end" in ei.value.errors and "\n" not in str(ei.value)
    assert count_rows(db) == before


# ------------------------------------------------------------------------ audit: mount points
BAD_MOUNTS = [
    (["/data:t1:1", "/data.:t1:1"], "volume2", "the same iSCSI name"),   # slug 'data' twice
    (["/data:t1:1", "/data/.:t1:1"], "volume2", "given twice"),          # /data/. is /data
    (["/data:t1:1", "/data/:t1:1"], "volume2", "given twice"),
    (["/data:t1:1", "//data:t1:1"], "volume2", "given twice"),
    (["/a/b:t1:1", "/a//b/./:t1:1"], "volume2", "given twice"),
    (["/data:t1:1", "/data/../data:t1:1"], "volume2", "'..'"),
    (["/a/../etc:t1:1"], "volume1", "'..'"),
    (["/..:t1:1"], "volume1", "'..'"),
    (["/.:t1:1"], "volume1", "not /"),                                  # the root itself
    (["/:t1:1"], "volume1", "not /"),
    (["//:t1:1"], "volume1", "not /"),
    (["/./.:t1:1"], "volume1", "not /"),
    (["/data:t1:1", "/.data:t1:1"], "volume2", "the same iSCSI name"),
    (["/a/b:t1:1", "/a/b.:t1:1"], "volume2", "the same iSCSI name"),
    (["/data:t1:1", "/DATA:t1:1"], "volume2", "only in case"),            # MySQL 1062 before
    (["/Data/X:t1:1", "/data/x:t1:1"], "volume2", "only in case"),
    (["/da ta:t1:1"], "volume1", "absolute path"),
    (["/dätä:t1:1"], "volume1", "absolute path"),
    (["/da\nta:t1:1"], "volume1", "absolute path"),
    (["data:t1:1"], "volume1", "absolute path"),
    (["/" + "a" * 250 + ":t1:1"], "volume1", "at most"),
]


@pytest.mark.parametrize("specs,field,needle", BAD_MOUNTS)
def test_bad_mount_points_refused_at_reserve_time(cfg, db, specs, field, needle):
    add_target(db)
    before = count_rows(db)
    with pytest.raises(ValidationError) as ei:
        R.create(cfg, db, fields(volumes=specs), NOW)
    assert field in ei.value.errors, ei.value.errors
    assert needle in ei.value.errors[field], ei.value.errors
    assert "\n" not in str(ei.value)
    assert count_rows(db) == before


def test_mount_points_are_stored_normalised(cfg, db):
    add_target(db)
    rack = R.create(cfg, db, fields(volumes=["/data/.:t1:1", "//scratch//x/:t1:2"]), NOW)
    assert sorted(v["mount_point"] for v in R.get(db, rack)["volumes"]) == ["/data", "/scratch/x"]


def test_mount_points_that_only_look_alike_are_fine(cfg, db):
    from vc import iscsi

    add_target(db)
    specs = ["/data:t1:1", "/data2:t1:1"]
    rack = R.create(cfg, db, fields(volumes=specs), NOW)
    got = [v["mount_point"] for v in R.get(db, rack)["volumes"]]
    assert got == ["/data", "/data2"]
    assert len({iscsi.iqn_for(cfg.storage.iqn_prefix, rack, m) for m in got}) == 2
