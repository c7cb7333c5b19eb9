"""vc.disks: qemu-img both recorded (tests/fakes.py's executor) and for real; the disks' modes
(600, in a directory of mode 700)."""

import json
import os
import subprocess

import pytest

from fakes import RecordingExecutor
from vc import disks
from vc.errors import HypervisorError
from vc.remote import CommandError

INFO = ("qemu-img", "info")


def mode(path):
    return os.stat(str(path)).st_mode & 0o777


def test_create_cow_disk_argv(tmp_path):
    ex = RecordingExecutor(outputs={INFO: json.dumps({"format": "raw", "virtual-size": 1 << 26})})
    d = tmp_path / "disks"
    path, base = str(d / "n0.qcow2"), str(tmp_path / "base.img")
    assert disks.create_cow_disk(path, base, 5, execute=ex) is True
    assert ex.calls == [
        ["qemu-img", "info", "--output=json", base],
        ["qemu-img", "create", "-f", "qcow2", "-F", "raw", "-b", base, path, "5G"],
    ]   # the file's mode 600 is os.chmod's, no process (test_cow_disk_with_real_qemu_img)
    assert mode(d) == 0o700  # made private before qemu-img makes the file in it


def test_create_cow_disk_makes_paths_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ex = RecordingExecutor(outputs={INFO: '{"format": "qcow2"}'})
    assert disks.create_cow_disk("n0.qcow2", "base.qcow2", 1, execute=ex) is True
    assert ex.calls[1][-4:] == ["-b", str(tmp_path / "base.qcow2"), str(tmp_path / "n0.qcow2"),
                                "1G"]
    assert len(ex.calls) == 2


def test_create_cow_disk_existing_is_a_noop(tmp_path):
    path = tmp_path / "n0.qcow2"
    path.write_text("data")
    os.chmod(str(path), 0o600)
    ex = RecordingExecutor()
    assert disks.create_cow_disk(str(path), "/base.img", 5, execute=ex) is False
    assert ex.calls == []
    assert path.read_text() == "data"


def test_an_existing_loose_disk_and_its_directory_are_made_private(tmp_path):
    d = tmp_path / "disks"
    d.mkdir(mode=0o755)
    os.chmod(str(d), 0o755)
    path = d / "n0.qcow2"
    path.write_text("data")
    os.chmod(str(path), 0o644)  # made before disks were private
    ex = RecordingExecutor()
    assert disks.create_cow_disk(str(path), "/base.img", 5, execute=ex) is False
    assert ex.calls == []
    assert mode(path) == 0o600 and mode(d) == 0o700 and path.read_text() == "data"


def test_private_dir(tmp_path):
    d = tmp_path / "a" / "console"
    assert disks.private_dir(str(d)) is True
    assert mode(d) == 0o700
    assert disks.private_dir(str(d)) is False
    os.chmod(str(d), 0o755)
    assert disks.private_dir(str(d)) is True and mode(d) == 0o700


def test_image_format_is_read_once_per_file_version(tmp_path):
    base = tmp_path / "base.img"
    base.write_bytes(b"x" * 512)
    ex = RecordingExecutor(outputs={INFO: '{"format": "raw"}'})
    assert disks.image_format(str(base), ex) == disks.image_format(str(base), ex) == "raw"
    assert len(ex.calls) == 1
    base.write_bytes(b"y" * 1024)        # replaced: read again
    assert disks.image_format(str(base), ex) == "raw" and len(ex.calls) == 2


def test_image_format_garbage():
    with pytest.raises(HypervisorError, match="cannot read the format"):
        disks.image_format("/x", execute=lambda argv: "not json")


def test_make_base_image_argv(tmp_path):
    ex = RecordingExecutor()
    path = str(tmp_path / "base.qcow2")
    assert disks.make_base_image(path, 64, execute=ex) is True
    assert ex.calls == [["qemu-img", "create", "-f", "qcow2", path, "64M"]]


def qemu_img_info(path):
    out = subprocess.run(["qemu-img", "info", "--output=json", path], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)


@pytest.mark.parametrize("base_fmt", ["qcow2", "raw"])
def test_cow_disk_with_real_qemu_img(tmp_path, base_fmt):
    base = str(tmp_path / ("base." + base_fmt))
    disk = str(tmp_path / "node.qcow2")
    assert disks.make_base_image(base, 16, fmt=base_fmt) is True
    assert disks.make_base_image(base, 16, fmt=base_fmt) is False
    assert disks.image_format(base) == base_fmt
    assert disks.create_cow_disk(disk, base, 2) is True
    assert disks.create_cow_disk(disk, base, 2) is False
    assert mode(disk) == 0o600 and mode(tmp_path) == 0o700
    info = qemu_img_info(disk)
    assert info["format"] == "qcow2"
    assert info["virtual-size"] == 2 * 1024 ** 3
    assert info["backing-filename"] == base
    assert info["backing-filename-format"] == base_fmt
    assert disks.remove_disk(disk) is True
    assert disks.remove_disk(disk) is False


def test_create_cow_disk_over_missing_base(tmp_path):
    with pytest.raises(CommandError, match="Could not open"):
        disks.create_cow_disk(str(tmp_path / "n.qcow2"), str(tmp_path / "nobase.img"), 1)
    assert not (tmp_path / "n.qcow2").exists()
