"""The simulator as MCUboot behaves: a swap cut by a power loss resumes on the next boot,
also in a new simulator process (everything lives on disk), and a bad image is erased, not
booted; serial frames round-trip with their CRC."""

from __future__ import annotations

from pathlib import Path

from mcuboot_helpers import Sim, body

from mender_orchestrator_mcuboot.simulator import Device, Server, Store, serial_frames


def pending(sim: Sim, image: bytes) -> None:
    """``image`` uploaded to the secondary slot and marked for test, as the driver leaves it."""
    store = Store(sim.path)
    store.load()
    store.write(1, 0, image)
    store.doc["trailers"]["1"] = {"magic": True, "image_ok": False, "copy_done": False}
    store.save()


def test_swap_cut_by_a_power_loss_resumes_in_a_new_process(tmp_path: Path) -> None:
    sim = Sim(tmp_path / "device.json")
    new = sim.sign("2.0.0", body(30000, 4))
    pending(sim, new)
    sim.faults({"kind": "power_cut", "after_sectors": 5, "off_seconds": 3600})
    before = sim.slot(0)

    Device(Store(sim.path)).boot()  # the first process: power fails after 5 sectors

    half = sim.doc()
    assert half["swap"] == {"kind": "test", "done": 5, "sectors": 16}
    assert sim.slot(0)[: 5 * 4096] == new[: 5 * 4096]
    assert sim.slot(0)[5 * 4096 :] == before[5 * 4096 :]

    Device(Store(sim.path)).boot()  # power back, in a new process: MCUboot goes on

    done = sim.doc()
    assert done["swap"] is None
    assert done["stats"]["resumed_swaps"] == 1
    assert sim.slot(0).startswith(new) and sim.slot(1).startswith(sim.factory)
    assert done["trailers"]["0"] == {"magic": True, "image_ok": False, "copy_done": True}

    Device(Store(sim.path)).boot()  # a reset without confirming: MCUboot reverts

    assert sim.slot(0).startswith(sim.factory) and sim.slot(1).startswith(new)
    assert sim.doc()["trailers"]["0"]["image_ok"] is True
    assert sim.doc()["stats"]["reverts"] == 1


def test_image_signed_with_another_key_is_erased_not_booted(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    sim = Sim(tmp_path / "device.json")
    pending(sim, sim.sign("2.0.0", body(3000, 4), key=Ed25519PrivateKey.generate()))

    Device(Store(sim.path)).boot()

    assert sim.slot(0).startswith(sim.factory)
    assert set(sim.slot(1)) == {0xFF}
    assert sim.doc()["stats"]["rejected"] == 1


def test_serial_frames_round_trip_and_a_bad_crc_is_dropped(tmp_path: Path) -> None:
    sim = Sim(tmp_path / "device.json")
    server = Server(sim.path, None, None)
    packet = bytes(range(256)) * 2

    lines = serial_frames(packet)

    assert all(len(line) <= 127 for line in lines)
    assert lines[0][:2] == b"\x06\x09" and all(line[:2] == b"\x04\x14" for line in lines[1:])
    assert [server.serial_line(line.rstrip(b"\n")) for line in lines][-1] == packet
    damaged = lines[1][:10] + (b"A" if lines[1][10:11] != b"A" else b"B") + lines[1][11:]
    replies = [server.serial_line(line.rstrip(b"\n")) for line in [lines[0], damaged, *lines[2:]]]
    assert replies[-1] is None
