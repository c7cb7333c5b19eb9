"""Admission control as pure functions: placement and the sweep over a window."""

from datetime import datetime, timedelta, timezone

from vc.admission import Booking, check, place

T0 = datetime(2026, 12, 1, tzinfo=timezone.utc)
H = timedelta(hours=1)
HOSTS = [("a", 4096, 4), ("b", 4096, 4)]


def bk(rack, start_h, end_h, nodes, mem=1024, cpu=1, gateways=1):
    return Booking(rack, T0 + start_h * H, T0 + end_h * H, (((mem, cpu), nodes),), gateways)


def run(new, others, hosts=HOSTS, subnets=10, iso=10, public=10):
    return check(new, others, hosts, subnets, iso, public)


def test_place_spreads_by_free_memory():
    unplaced, free = place({(1024, 1): 4}, HOSTS)
    assert unplaced == {}
    assert free == {"a": [2048, 2], "b": [2048, 2]}


def test_place_whole_nodes_only():
    # 6 GB free in all, but no host has 3 GB left after two 2 GB... one 3 GB node per host only
    unplaced, _ = place({(3072, 1): 3}, HOSTS)
    assert unplaced == {(3072, 1): 1}


def test_place_vcpus_bound():
    unplaced, _ = place({(512, 3): 3}, HOSTS)
    assert unplaced == {(512, 3): 1}


def test_fits_when_empty():
    assert run(bk(None, 0, 2, 8), []) is None


def test_memory_short_and_when():
    other = bk(1, 1, 3, 4)
    short = run(bk(None, 0, 2, 5), [other])
    assert short is not None and short.what == "memory"
    # short only while rack 1 runs: from its start to the end of the new window
    assert short.start == T0 + H and short.end == T0 + 2 * H
    assert "need 9216 MB" in short.detail


def test_back_to_back_share_capacity():
    assert run(bk(None, 2, 4, 8), [bk(1, 0, 2, 8)]) is None
    assert run(bk(None, 0, 2, 8), [bk(1, 2, 4, 8)]) is None


def test_fragmentation_is_reported_as_one_host():
    # 2 x 3 GB fit (one per host); a third 3 GB node does not, though 2 GB remain on each host
    short = run(bk(None, 0, 1, 1, mem=2048), [bk(1, 0, 1, 2, mem=3072)])
    assert short.what == "memory/vcpus on one host"


def test_node_larger_than_any_host():
    short = run(bk(None, 0, 1, 1, mem=8192), [])
    assert short.what == "host size" and "larger than every physical host" in short.detail


def test_vcpus_short():
    short = run(bk(None, 0, 1, 3, mem=64, cpu=3), [])
    assert short.what == "vcpus"


def test_pools():
    others = [bk(i, 0, 2, 1) for i in range(3)]
    assert run(bk(None, 1, 2, 1), others, subnets=3).what == "private subnets"
    assert run(bk(None, 1, 2, 1), others, iso=3).what == "isolation ids"
    assert run(bk(None, 1, 2, 1, gateways=2), others, public=4).what == "public addresses"
    assert run(bk(None, 1, 2, 1), others, subnets=4, iso=4, public=4) is None


def test_peak_inside_window_found():
    # three short reservations, only two overlap each other; the new one spans all of them
    others = [bk(1, 0, 2, 3), bk(2, 1, 3, 3), bk(3, 4, 5, 6)]
    short = run(bk(None, 0, 6, 3), others)
    assert short is not None and short.start == T0 + H and short.end == T0 + 2 * H
    # with one node less it fits everywhere
    assert run(bk(None, 0, 6, 2), others) is None


def test_non_overlapping_others_ignored():
    assert run(bk(None, 5, 6, 8), [bk(1, 0, 5, 8), bk(2, 6, 9, 8)]) is None
