"""cloud-init NoCloud seeds: the three files against golden files (the guest's parser is written
against exactly this shape), what cloud-init reads from them, and the ISO9660 'cidata' disk."""

import os
import shutil
import stat
import subprocess

import pytest
import yaml

from conftest import assert_golden
from vc import seed
from vc.seed import SeedInput

# fixed, obviously fake key material: golden files must not change from run to run (and a
# repository must not hold anything that looks like a real private key)
PRIVATE = ("-----BEGIN FAKE KEY FOR THE GOLDEN FILES-----\n"
           "Tm90IGEga2V5OiB0aGUgY2x1c3RlcidzIHByaXZhdGUga2V5IGdvZXMgaGVyZS4K\n"
           "-----END FAKE KEY FOR THE GOLDEN FILES-----\n")
CLUSTER_PUB = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMY4sQ0YYg0YYg0YYg0YYg0YYg0YYg0YYg0YYg0Y"
               "Yg0Y vc-rack-7")
OWNER_KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB8fHx8fHx8fHx8fHx8fHx8fHx8fHx8fHx8fHx8fHx8f"
             " alice@laptop")
HOSTS = [("10.200.7.2", "gateway-7-0"), ("10.200.7.3", "compute-7-0"),
         ("10.200.7.4", "compute-7-1")]


def gateway(**over):
    kw = dict(rack=7, name="gateway-7-0", appliance="gateway",
              instance_id="vc-7-gateway-7-0-20261201T1000", domain="vc.internal",
              mac="52:54:00:00:00:10", ip="10.200.7.2", prefix=24, mtu=1446,
              public_mac="52:54:00:00:00:11", public_ip="198.51.100.10", public_prefix=24,
              gateway4="198.51.100.1", hosts=HOSTS, authorized_keys=[OWNER_KEY, CLUSTER_PUB],
              cluster_private_key=PRIVATE, cluster_public_key=CLUSTER_PUB,
              volumes=[("vcvol0", "/data", "/data")], subnet="10.200.7.0/24")
    kw.update(over)
    return SeedInput(**kw)


def compute(**over):
    kw = dict(rack=7, name="compute-7-0", appliance="compute",
              instance_id="vc-7-compute-7-0-20261201T1000", domain="vc.internal",
              mac="52:54:00:00:00:12", ip="10.200.7.3", prefix=24, hosts=HOSTS,
              authorized_keys=[OWNER_KEY, CLUSTER_PUB],
              nfs_mounts=[("10.200.7.2", "/data", "/data")])
    kw.update(over)
    return SeedInput(**kw)


@pytest.mark.parametrize("kind, make", [("gateway", gateway), ("compute", compute)])
def test_golden(kind, make):
    files = seed.render(make())
    assert list(files) == ["meta-data", "network-config", "user-data"]
    for name, text in files.items():
        assert_golden("seed-%s-%s" % (kind, name), text)
    assert files["user-data"].startswith("#cloud-config\n")


def test_gateway_reads_back_as_cloud_init_sees_it():
    files = seed.render(gateway())
    md = yaml.safe_load(files["meta-data"])
    assert md == {"instance-id": "vc-7-gateway-7-0-20261201T1000",
                  "local-hostname": "gateway-7-0"}
    nc = yaml.safe_load(files["network-config"])
    assert nc == {"version": 2, "ethernets": {
        "eth0": {"match": {"macaddress": "52:54:00:00:00:10"}, "set-name": "eth0",
                 "addresses": ["10.200.7.2/24"], "mtu": 1446},
        "eth1": {"match": {"macaddress": "52:54:00:00:00:11"}, "set-name": "eth1",
                 "addresses": ["198.51.100.10/24"], "gateway4": "198.51.100.1"}}}
    ud = yaml.safe_load(files["user-data"])
    assert list(ud) == ["hostname", "fqdn", "manage_etc_hosts", "disable_root", "ssh_pwauth",
                        "ssh_authorized_keys", "write_files", "fs_setup", "mounts", "runcmd"]
    assert ud["hostname"] == "gateway-7-0" and ud["fqdn"] == "gateway-7-0.vc.internal"
    assert (ud["manage_etc_hosts"], ud["disable_root"], ud["ssh_pwauth"]) == (False, False, False)
    assert ud["ssh_authorized_keys"] == [OWNER_KEY, CLUSTER_PUB]
    files_by_path = {f["path"]: f for f in ud["write_files"]}
    assert [f["path"] for f in ud["write_files"]] == [
        "/etc/hosts", "/root/.ssh/id_ed25519", "/root/.ssh/id_ed25519.pub", "/root/.ssh/config",
        "/etc/exports"]
    assert files_by_path["/etc/hosts"] == {"path": "/etc/hosts", "permissions": "0644",
                                           "content": "127.0.0.1 localhost\n"
                                           "10.200.7.2 gateway-7-0.vc.internal gateway-7-0\n"
                                           "10.200.7.3 compute-7-0.vc.internal compute-7-0\n"
                                           "10.200.7.4 compute-7-1.vc.internal compute-7-1\n"}
    key = files_by_path["/root/.ssh/id_ed25519"]
    assert key["permissions"] == "0600" and key["content"] == PRIVATE
    pub = files_by_path["/root/.ssh/id_ed25519.pub"]
    assert pub["permissions"] == "0644" and pub["content"] == CLUSTER_PUB + "\n"
    assert files_by_path["/root/.ssh/config"] == {
        "path": "/root/.ssh/config", "permissions": "0600",
        "content": "Host *\n  StrictHostKeyChecking accept-new\n"}
    assert files_by_path["/etc/exports"]["content"] == (
        "/data 10.200.7.0/24(rw,sync,no_subtree_check,no_root_squash)\n")
    assert ud["fs_setup"] == [{"device": "/dev/disk/by-id/virtio-vcvol0", "filesystem": "ext4",
                               "label": "vcvol0", "overwrite": False}]
    assert ud["mounts"] == [["/dev/disk/by-id/virtio-vcvol0", "/data", "ext4",
                             "defaults,nofail", "0", "2"]]
    assert ud["runcmd"] == [["sh", "-c", "mkdir -p /data && mount -a; exportfs -ra; "
                             "systemctl restart nfs-server 2>/dev/null || true"]]
    # multi-line contents are literal blocks (what the guest's line parser reads)
    assert "  content: |\n    127.0.0.1 localhost\n" in files["user-data"]
    assert "macaddress: '52:54:00:00:00:10'" in files["network-config"]


def test_compute_reads_back():
    files = seed.render(compute())
    nc = yaml.safe_load(files["network-config"])
    assert nc["ethernets"] == {"eth0": {"match": {"macaddress": "52:54:00:00:00:12"},
                                        "set-name": "eth0", "addresses": ["10.200.7.3/24"]}}
    ud = yaml.safe_load(files["user-data"])
    assert list(ud) == ["hostname", "fqdn", "manage_etc_hosts", "disable_root", "ssh_pwauth",
                        "ssh_authorized_keys", "write_files", "mounts", "runcmd"]
    assert [f["path"] for f in ud["write_files"]] == ["/etc/hosts", "/root/.ssh/config"]
    assert ud["mounts"] == [["10.200.7.2:/data", "/data", "nfs4", "vers=4.2,_netdev,nofail",
                             "0", "0"]]
    assert ud["runcmd"] == [["sh", "-c", "mkdir -p /data; (for i in $(seq 90); do mount -a -t "
                             "nfs4 && break; sleep 2; done) >/dev/null 2>&1 &"]]
    assert "FAKE KEY" not in files["user-data"] and "id_ed25519" not in files["user-data"]


def test_optional_parts_are_left_out():
    ud = yaml.safe_load(seed.render(gateway(volumes=[], subnet=None))["user-data"])
    assert "fs_setup" not in ud and "mounts" not in ud and "runcmd" not in ud
    assert "/etc/exports" not in [f["path"] for f in ud["write_files"]]
    nc = yaml.safe_load(seed.render(gateway(mtu=None, gateway4=None))["network-config"])
    assert "mtu" not in nc["ethernets"]["eth0"] and "gateway4" not in nc["ethernets"]["eth1"]
    nc = yaml.safe_load(seed.render(gateway(public_mac=None, public_ip=None, public_prefix=None,
                                            gateway4=None))["network-config"])
    assert list(nc["ethernets"]) == ["eth0"]
    ud = yaml.safe_load(seed.render(compute(nfs_mounts=[]))["user-data"])
    assert "mounts" not in ud and "runcmd" not in ud
    # two volumes: one line, one fs, one mount each; the mkdir names both
    ud = yaml.safe_load(seed.render(gateway(volumes=[("vcvol0", "/data", "/data"),
                                                     ("vcvol1", "/scratch/a", "/scratch/a")]))
                        ["user-data"])
    assert [m[1] for m in ud["mounts"]] == ["/data", "/scratch/a"]
    assert ud["runcmd"][0][2].startswith("mkdir -p /data /scratch/a && ")
    assert {f["path"]: f for f in ud["write_files"]}["/etc/exports"]["content"].count("\n") == 2


def test_private_key_gets_its_newline():
    ud = yaml.safe_load(seed.render(gateway(cluster_private_key=PRIVATE.rstrip("\n")))
                        ["user-data"])
    assert {f["path"]: f for f in ud["write_files"]}["/root/.ssh/id_ed25519"]["content"] \
        == PRIVATE


@pytest.mark.parametrize("make, over", [
    (compute, {"appliance": "frontend"}),
    (compute, {"name": "Compute 7"}),
    (compute, {"mac": "52:54:00:00:00"}),
    (compute, {"ip": "10.200.7.300"}),
    (compute, {"prefix": 33}),
    (compute, {"mtu": 100}),
    (compute, {"public_ip": "198.51.100.10"}),
    (compute, {"cluster_private_key": PRIVATE}),
    (compute, {"volumes": [("vcvol0", "/data", "/data")], "subnet": "10.200.7.0/24"}),
    (compute, {"nfs_mounts": [("10.200.7.2", "/data", "/da ta")]}),
    (compute, {"authorized_keys": ["ssh-ed25519 AAAA x\nssh-ed25519 AAAA y"]}),
    (compute, {"hosts": [("10.200.7.3", "bad name")]}),
    (compute, {"instance_id": "a b"}),
    (gateway, {"volumes": [("vcvol0", "/data; rm -rf /", "/data")]}),
    (gateway, {"volumes": [("vcvol0", "/data", "/data")], "subnet": None}),
    (gateway, {"cluster_public_key": None}),
    (gateway, {"public_prefix": None}),
    (gateway, {"nfs_mounts": [("10.200.7.2", "/data", "/data")]}),
])
def test_inconsistent_input_is_refused(make, over):
    with pytest.raises(ValueError):
        seed.render(make(**over))


def test_iso_read_back_label_mode_and_atomic(tmp_path):
    files = seed.render(gateway())
    path = str(tmp_path / "seed.iso")
    seed.write_iso(path, files)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert seed.read_iso(path) == files
    assert seed.volume_label(path) == "cidata"
    assert sorted(os.listdir(tmp_path)) == ["seed.iso"]  # no temporary file left
    # rewriting replaces it whole (a reader holding the old file keeps the old one)
    with open(path, "rb") as old:
        seed.write_iso(path, seed.render(compute()))
        assert seed.read_iso(path)["meta-data"] == seed.render(compute())["meta-data"]
        assert b"gateway-7-0" in old.read()
    assert sorted(os.listdir(tmp_path)) == ["seed.iso"]


def test_iso_joliet_and_iso9660_names(tmp_path):
    import io

    import pycdlib

    path = str(tmp_path / "seed.iso")
    seed.write_iso(path, seed.render(compute()))
    iso = pycdlib.PyCdlib()
    iso.open(path)
    try:
        joliet = sorted(c.file_identifier().decode("utf-16-be") for c in
                        iso.list_children(joliet_path="/") if not (c.is_dot() or c.is_dotdot()))
        assert joliet == ["meta-data", "network-config", "user-data"]
        buf = io.BytesIO()
        iso.get_file_from_iso_fp(buf, joliet_path="/user-data")
        assert buf.getvalue().startswith(b"#cloud-config\n")
        modes = {c.rock_ridge.name(): c.rock_ridge.get_file_mode()
                 for c in iso.list_children(rr_path="/") if not (c.is_dot() or c.is_dotdot())}
        assert modes == {b"meta-data": 0o100400, b"network-config": 0o100400,
                         b"user-data": 0o100400}
        assert iso.pvd.volume_identifier.rstrip() == b"cidata"
    finally:
        iso.close()


@pytest.mark.skipif(not shutil.which("blkid"), reason="blkid (util-linux) is not installed")
def test_blkid_sees_cidata(tmp_path):
    path = str(tmp_path / "seed.iso")
    seed.write_iso(path, seed.render(compute()))
    r = subprocess.run(["blkid", "-p", "-o", "export", path], capture_output=True, text=True)
    assert "LABEL=cidata" in r.stdout.split() and "TYPE=iso9660" in r.stdout.split(), r


def test_isoinfo_lists_rock_ridge_names(tmp_path):
    path = str(tmp_path / "seed.iso")
    seed.write_iso(path, seed.render(gateway()))
    r = subprocess.run(["isoinfo", "-l", "-R", "-i", path], capture_output=True, text=True)
    names = [line.split()[-1] for line in r.stdout.splitlines() if line.startswith("-")]
    assert names == ["meta-data", "network-config", "user-data"], r.stdout


@pytest.mark.skipif(not getattr(yaml, "__with_libyaml__", False), reason="PyYAML without libyaml")
@pytest.mark.parametrize("make", [gateway, compute])
def test_libyaml_and_pure_python_emitters_agree(make):
    s = make()
    for part in (seed.meta_data, seed.network_config, seed.user_data):
        assert seed.dump(part(s)) == seed.dump(part(s), seed._PureDumper)


def test_real_cluster_key_pair_round_trips(tmp_path):
    from cryptography.hazmat.primitives import serialization

    from vc import sshkeys

    private, public = sshkeys.cluster_keypair("vc-rack-7")
    files = seed.render(gateway(cluster_private_key=private, cluster_public_key=public,
                                authorized_keys=[OWNER_KEY, public]))
    path = str(tmp_path / "seed.iso")
    seed.write_iso(path, files)
    ud = yaml.safe_load(seed.read_iso(path)["user-data"])
    by_path = {f["path"]: f["content"] for f in ud["write_files"]}
    key = serialization.load_ssh_private_key(by_path["/root/.ssh/id_ed25519"].encode(), None)
    derived = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                            serialization.PublicFormat.OpenSSH).decode()
    assert public == derived + " vc-rack-7" == by_path["/root/.ssh/id_ed25519.pub"].strip()
    assert public in ud["ssh_authorized_keys"]
    if shutil.which("ssh-keygen"):
        keyfile = tmp_path / "id_ed25519"
        keyfile.write_text(by_path["/root/.ssh/id_ed25519"])
        keyfile.chmod(0o600)
        r = subprocess.run(["ssh-keygen", "-y", "-f", str(keyfile)], capture_output=True,
                           text=True)
        assert r.returncode == 0 and r.stdout.split()[:2] == public.split()[:2], r.stderr
