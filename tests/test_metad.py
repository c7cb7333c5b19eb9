"""The lease service (vc.metad): who is asking, reading, extending (full, longest, refused with
the longest offer), releasing, bad input; over HTTP on loopback, and the seed's vc-lease script
run on this host (python3 path and busybox nc path)."""

import http.client
import json
import os
import shutil
import socket
import subprocess
from datetime import timedelta

import pytest

from conftest import NOW, db_overrides, make_cfg
from test_ctl import Recorder, TESTNODE
from vc import addresses, metad, seed
from vc import ctl as vctl
from vc import reservations as R

H = timedelta(hours=1)
M = timedelta(minutes=1)


class Clock:
    def __init__(self, t):
        self.t = t

    def __call__(self):
        return self.t


@pytest.fixture
def world(migrated, db, tmp_path):
    o = db_overrides(migrated)
    o["host:h1"] = {"uri": TESTNODE, "memory_mb": "2048", "vcpus": "8"}
    o["site"] = {"state_dir": str(tmp_path / "state"), "timezone": "UTC"}
    o["virt"] = {"name_prefix": "vm", "boot_timeout": "5", "shutdown_timeout": "1"}
    o["network"] = {"isolation": "none"}
    cfg = make_cfg(o)
    clock = Clock(NOW)
    c = vctl.Ctl(cfg, db, execute=Recorder(), clock=clock, actor="test")
    yield cfg, c, clock
    for r in db.query("SELECT rack FROM vcregist WHERE state = 'running'"):
        c.stop(r["rack"], "test end")


def running(cfg, db, c, owner="bob", mem="512", end=NOW + 2 * H):
    rack = R.create(cfg, db, {"owner": owner, "start": NOW.isoformat(), "end": end.isoformat(),
                              "gateways": "1", "computes": "1", "memory_mb": mem}, NOW)
    assert c.start(rack)["state"] == "running"
    plan = db.transaction(lambda cur: addresses.load(cur, rack))
    return rack, plan


def token_of(cfg, rack):
    with open(os.path.join(cfg.site.state_dir, "keys", "rack-%d" % rack, "lease.token")) as f:
        return f.read().strip()


def test_start_makes_a_token_and_seeds_vc_lease(world, db):
    cfg, c, clock = world
    rack, plan = running(cfg, db, c)
    tok = token_of(cfg, rack)
    assert metad.TOKEN_RE.match(tok)
    row = db.query("SELECT token_sha256 FROM vcleasetoken WHERE rack=%s", (rack,))[0]
    assert row["token_sha256"] == metad.token_hash(tok)          # only the hash in the DB
    mode = os.stat(os.path.join(cfg.site.state_dir, "keys", "rack-%d" % rack,
                                "lease.token")).st_mode & 0o777
    assert mode == 0o600
    for n in plan.nodes:
        files = seed.read_iso(os.path.join(cfg.virt.disk_dir, "vm-%s.seed.iso" % n.name))
        ud = files["user-data"]
        assert "/etc/vc/lease.token" in ud and tok in ud
        import yaml

        wf = {f["path"]: f for f in yaml.safe_load(ud)["write_files"]}
        assert wf["/etc/vc/lease.token"]["permissions"] == "0600"
        import base64

        script = base64.b64decode(wf["/usr/local/bin/vc-lease"]["content"]).decode()
        assert "http://%s:8775" % plan.bridge_ip in script
        assert wf["/usr/local/bin/vc-lease"]["permissions"] == "0755"
        assert "/etc/profile.d/vc-lease.sh" in wf
    # a resumed start keeps the token
    metad.ensure_token(cfg, db, rack, NOW)
    assert token_of(cfg, rack) == tok


def test_cluster_of_needs_a_running_node_on_its_own_dot_one(world, db):
    cfg, c, clock = world
    a, pa = running(cfg, db, c)
    b, pb = running(cfg, db, c)
    na, nb = pa.nodes[0], pb.nodes[0]
    assert metad.cluster_of(db, na.ip, pa.bridge_ip)["rack"] == a
    assert metad.cluster_of(db, nb.ip, pb.bridge_ip)["rack"] == b
    # the right source but another cluster's .1: nobody's
    assert metad.cluster_of(db, na.ip, pb.bridge_ip) is None
    assert metad.cluster_of(db, "127.0.0.1", pa.bridge_ip) is None
    assert metad.cluster_of(db, pa.bridge_ip, pa.bridge_ip) is None
    assert metad.cluster_of(db, "not-an-ip", pa.bridge_ip) is None
    c.stop(a, "test")
    assert metad.cluster_of(db, na.ip, pa.bridge_ip) is None       # not running: no answer


# ------------------------------------------------------------------------ over HTTP
@pytest.fixture
def served(world, db):
    cfg, c, clock = world
    a, pa = running(cfg, db, c, mem="512")
    b, pb = running(cfg, db, c, mem="512", end=NOW + 6 * H)
    ids = {"127.0.0.1": a, "127.0.0.2": a, "127.0.0.3": b}

    def resolve(src, local):
        rack = ids.get(src)
        if rack is None:
            return None
        plan = pa if rack == a else pb
        return {"rack": rack, "node": plan.nodes[0].name, "owner": "bob"}

    srv = metad.make_server(cfg, db, "127.0.0.1", 0, clock=clock, resolve=resolve)
    metad.serve_in_thread(srv)
    yield cfg, c, clock, srv.server_address[1], a, b
    srv.shutdown()
    srv.server_close()


def call(port, method, path, body=None, token=None, src="127.0.0.2", raw=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(src, 0))
    h = dict(headers or {})
    if token is not None:
        h["X-VC-Lease-Token"] = token
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    conn.request(method, path, body=data, headers=h)
    r = conn.getresponse()
    text = r.read().decode()
    conn.close()
    try:
        return r.status, json.loads(text)
    except ValueError:
        return r.status, text


def end_of(db, rack):
    from vc.db import aware_utc

    return aware_utc(db.query("SELECT end_at FROM vcregist WHERE rack=%s", (rack,))[0]["end_at"])


def test_read_extend_release_over_http(served, db):
    cfg, c, clock, port, a, b = served
    st, got = call(port, "GET", "/lease")
    assert st == 200 and got["rack"] == a and got["state"] == "running"
    assert got["end"] == "2026-12-01T02:00:00Z" and got["seconds_left"] == 7200
    st, txt = call(port, "GET", "/lease?format=text")
    assert st == 200 and "ends 2026-12-01 02:00" in txt and "2 h 0 min left" in txt
    # the other cluster's node sees its own lease only
    assert call(port, "GET", "/lease", src="127.0.0.3")[1]["rack"] == b
    # not a node: refused
    st, got = call(port, "GET", "/lease", src="127.0.0.9")
    assert st == 403 and "not a node" in got["error"]

    ta, tb = token_of(cfg, a), token_of(cfg, b)
    st, got = call(port, "POST", "/lease/extend", {"by": "30m"}, ta)
    assert st == 200 and got["end"] == "2026-12-01T02:30:00Z" and got["full"] is True
    assert end_of(db, a) == NOW + 2.5 * H
    # another cluster's token, from this cluster: refused, nothing changed
    st, got = call(port, "POST", "/lease/extend", {"by": "30m"}, tb)
    assert st == 403 and end_of(db, a) == NOW + 2.5 * H
    ev = [e["actor"] for e in R.get(db, a)["events"]]
    assert any("vc-lease" in x for x in ev)

    st, got = call(port, "POST", "/lease/release", None, ta, raw=b"")
    assert st == 200 and end_of(db, a) == NOW
    assert end_of(db, b) == NOW + 6 * H


def test_extend_refused_offers_the_longest_and_names_the_blocker(served, db):
    cfg, c, clock, port, a, b = served
    # the host has 2048 MB: a and b hold 2 x 1024 (b until 06:00); the blocker wants 1024 from 03:00
    blocker = R.create(cfg, db, {"owner": "carol", "start": (NOW + 3 * H).isoformat(),
                                 "end": (NOW + 5 * H).isoformat(), "gateways": "1",
                                 "computes": "1", "memory_mb": "512"}, NOW)
    ta = token_of(cfg, a)
    st, got = call(port, "POST", "/lease/extend", {"by": "2h"}, ta)
    assert st == 409, got
    assert got["longest"]["end"] == "2026-12-01T03:00:00Z"
    assert got["longest"]["blocked_by"] == [blocker]
    assert "reservation %d" % blocker in got["error"]
    assert end_of(db, a) == NOW + 2 * H                          # nothing changed
    st, txt = call(port, "POST", "/lease/extend?format=text", {"by": "2h"}, ta)
    assert st == 409 and "vc-lease extend --longest" in txt
    # --longest 2h: gets 1 h, and says so
    st, got = call(port, "POST", "/lease/extend", {"by": "2h", "longest": True}, ta)
    assert st == 200 and got["end"] == "2026-12-01T03:00:00Z"
    assert got["full"] is False and got["blocked_by"] == [blocker]
    assert "reservation %d" % blocker in got["why"]
    # nothing more fits: refused
    st, got = call(port, "POST", "/lease/extend", {"longest": True}, ta)
    assert st == 409 and end_of(db, a) == NOW + 3 * H


@pytest.mark.parametrize("kw,status", [
    (dict(body={"by": "30m"}, token="short"), 400),
    (dict(body={"by": "30m"}, token="x" * 43 + "!"), 400),
    (dict(body={"by": "30m"}), 400),                                 # no token
    (dict(body={"by": "30m"}, token="A" * 43), 403),                 # well-formed, wrong
    (dict(raw=b"{not json", token="TOK"), 400),
    (dict(raw=b"[1, 2]", token="TOK"), 400),
    (dict(body={"by": "soon"}, token="TOK"), 400),
    (dict(body={"by": "30m", "end": "2026-12-01T05:00"}, token="TOK"), 400),
    (dict(body={"by": "30m", "evil": 1}, token="TOK"), 400),
    (dict(body={"by": "500h"}, token="TOK"), 409),                   # past max_hours
    (dict(body={"end": "2026-11-30T00:00"}, token="TOK"), 400),      # in the past
    (dict(raw=b"x" * 5000, token="TOK"), 413),
])
def test_bad_input_is_refused_cleanly(served, db, kw, status):
    cfg, c, clock, port, a, b = served
    if kw.get("token") == "TOK":
        kw["token"] = token_of(cfg, a)
    before = db.query("SELECT end_at, state FROM vcregist ORDER BY rack")
    st, got = call(port, "POST", "/lease/extend", **kw)
    assert st == status, got
    assert isinstance(got, dict) and got["error"]
    assert db.query("SELECT end_at, state FROM vcregist ORDER BY rack") == before


def test_wrong_paths_and_methods(served):
    port = served[3]
    assert call(port, "GET", "/etc/passwd")[0] == 404
    assert call(port, "DELETE", "/lease")[0] == 405
    assert call(port, "GET", "/lease/extend")[0] == 405
    # a POST without Content-Length
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"POST /lease/extend HTTP/1.0\r\n\r\n")
    assert b" 411 " in s.recv(4096).split(b"\r\n")[0] + b" "
    s.close()


def _script(cfg, plan, port):
    text = seed.LEASE_SCRIPT.replace("@URL@", "http://127.0.0.1:%d" % port)
    return text


@pytest.mark.parametrize("via", ["python3", "nc"])
def test_vc_lease_script(served, db, tmp_path, via):
    cfg, c, clock, port, a, b = served
    path = tmp_path / "vc-lease"
    path.write_text(seed.LEASE_SCRIPT.replace("@URL@", "http://127.0.0.1:%d" % port))
    path.chmod(0o755)
    tok = tmp_path / "lease.token"
    tok.write_text(token_of(cfg, a) + "\n")
    env = {"VC_LEASE_TOKEN_FILE": str(tok), "PATH": os.environ["PATH"]}
    if via == "nc":
        bb = shutil.which("busybox")
        if not bb:
            pytest.fail("busybox is needed (the fast guest's nc path)")
        d = tmp_path / "bin"
        d.mkdir()
        for app in ("sh", "sed", "nc", "cat"):
            os.symlink(bb, d / app)
        env["PATH"] = str(d)

    def run(*args):
        return subprocess.run(["sh", str(path)] + list(args), capture_output=True, text=True,
                              env=env, timeout=30, cwd=str(tmp_path),
                              executable=env["PATH"].split(":")[0] + "/sh" if via == "nc"
                              else None)

    r = run()
    assert r.returncode == 0 and "ends 2026-12-01 02:00" in r.stdout, (r.stdout, r.stderr)
    r = run("extend", "30m")
    assert r.returncode == 0 and "now ends 2026-12-01 02:30" in r.stdout, (r.stdout, r.stderr)
    R.create(cfg, db, {"owner": "carol", "start": (NOW + 3 * H).isoformat(),
                       "end": (NOW + 5 * H).isoformat(), "gateways": "1", "computes": "1",
                       "memory_mb": "512"}, NOW)
    r = run("extend", "2h")
    assert r.returncode == 1 and "refused" in r.stdout and "--longest" in r.stdout, r.stdout
    r = run("extend", "--longest")
    assert r.returncode == 0 and "now ends 2026-12-01 03:00" in r.stdout, (r.stdout, r.stderr)
    assert "reservation" in r.stdout
    r = run("--json")
    assert json.loads(r.stdout)["end"] == "2026-12-01T03:00:00Z"
    r = run("bogus")
    assert r.returncode == 2
    r = run("release")
    assert r.returncode == 0 and end_of(db, a) == NOW
