"""Finding terminals among serial ports and USB devices; --port auto and the report."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import usb.core

from posbridge.devices import (
    DeviceError,
    choose_auto,
    discover,
    find_terminals,
    format_report,
    load_profiles,
)
from posbridge.devices.fakeusb import FakeUsbBackend, FakeUsbTerminal
from posbridge.devices.profiles import parse_profiles

PROFILES = load_profiles(user=False)


def port(device: str, vid: int | None = None, pid: int | None = None, serial: str | None = None,
         manufacturer: str | None = None, product: str | None = None, location: str | None = None) -> SimpleNamespace:
    """What pyserial's list_ports.comports() yields (the attributes discovery reads)."""
    return SimpleNamespace(device=device, vid=vid, pid=pid, serial_number=serial, manufacturer=manufacturer,
                           product=product, description=product or "n/a", location=location)


def ports(*items: SimpleNamespace):
    return lambda: list(items)


@pytest.fixture
def no_usb_stack(monkeypatch):
    def no_backend(*args, **kwargs):
        raise usb.core.NoBackendError("No backend available")

    monkeypatch.setattr(usb.core, "find", no_backend)


@pytest.fixture
def by_id(tmp_path: Path) -> Path:
    folder = tmp_path / "by-id"
    folder.mkdir()
    return folder


def test_a_cdc_acm_ingenico_is_found_as_its_stable_serial_port(by_id: Path, no_usb_stack) -> None:
    os.symlink("/dev/ttyACM0", by_id / "usb-Ingenico_iPP350_12345-if00")
    found = discover(profiles=PROFILES, comports=ports(
        port("/dev/ttyACM0", 0x0B00, 0x0060, "12345", "Ingenico", "iPP350"), port("/dev/ttyS0")), by_id_dir=by_id)
    assert len(found.terminals) == 1
    t = found.terminals[0]
    assert t.url == f"serial://{by_id}/usb-Ingenico_iPP350_12345-if00?baudrate=115200"
    assert (t.kind, t.protocol, t.vendor, t.model, t.exact) == ("serial", "arcus2", "Ingenico", "IPP320 / IPP350", True)
    assert t.matched_by == "USB ids 0b00:0060" and "serial 12345" in t.where
    assert any("no USB backend" in note for note in found.notes)
    assert choose_auto(found) == (t.url, "arcus2")


def test_the_same_terminal_seen_by_usb_and_as_a_tty_is_listed_once(by_id: Path) -> None:
    backend = FakeUsbBackend([FakeUsbTerminal(0x0B00, 0x0084, serial_number="L3K", cdc_acm=True)])
    found = discover(backend, profiles=PROFILES, by_id_dir=by_id,
                     comports=ports(port("/dev/ttyACM1", 0x0B00, 0x0084, "L3K")))
    assert [t.kind for t in found.terminals] == ["serial"]
    assert found.terminals[0].model == "Lane 3000"
    assert [d.cdc for d in found.usb_devices] == [True]


def test_a_vendor_bulk_usb_terminal_gets_a_usb_url_with_its_serial(by_id: Path) -> None:
    backend = FakeUsbBackend([FakeUsbTerminal(0x0B00, 0x0081, serial_number="S/N 7")])
    found = find_terminals(backend, profiles=PROFILES, comports=ports(), by_id_dir=by_id)
    assert len(found) == 1
    assert found[0].url == "usb://0b00:0081?serial=S%2FN%207"
    assert (found[0].kind, found[0].model, found[0].protocol) == ("usb", "Lane 5000", "arcus2")


def test_a_cdc_device_without_a_tty_is_offered_as_usb_and_says_why(by_id: Path) -> None:
    backend = FakeUsbBackend([FakeUsbTerminal(0x0B00, 0x0066, cdc_acm=True)])
    (t,) = find_terminals(backend, profiles=PROFILES, comports=ports(), by_id_dir=by_id)
    assert t.kind == "usb" and "CDC-ACM without a serial port" in t.where


def test_pax_is_recognised_by_its_driver_port_name(by_id: Path, no_usb_stack) -> None:
    (t,) = find_terminals(profiles=PROFILES, comports=ports(port("/dev/ttyPos0")), by_id_dir=by_id)
    assert (t.vendor, t.model, t.protocol, t.url) == ("PAX", "SP30", "inpas", "serial:///dev/ttyPos0?baudrate=115200")


def test_a_manufacturer_string_gives_the_vendor_but_not_the_model(by_id: Path, no_usb_stack) -> None:
    (t,) = find_terminals(profiles=PROFILES, by_id_dir=by_id,
                          comports=ports(port("/dev/ttyACM0", 0x1111, 0x2222, manufacturer="VeriFone Inc")))
    assert (t.vendor, t.model, t.exact, t.protocol) == ("Verifone", "unknown model", False, "inpas")
    assert "manufacturer" in t.matched_by
    assert "models of this vendor: VX520, VX805, VX820" in format_report(
        discover(profiles=PROFILES, by_id_dir=by_id, comports=ports(
            port("/dev/ttyACM0", 0x1111, 0x2222, manufacturer="VeriFone Inc"))))


def test_user_profiles_with_private_ids_match_exactly(by_id: Path, no_usb_stack) -> None:
    profiles = parse_profiles('[[terminal]]\nvendor="Verifone"\nmodel="VX820"\nusb_vendor_id=0x11CA\n'
                              'usb_product_ids=[0x0220]\nbaud_rate=57600\n', "mine.toml", PROFILES)
    (t,) = find_terminals(profiles=profiles, by_id_dir=by_id, comports=ports(port("/dev/ttyACM2", 0x11CA, 0x0220)))
    assert (t.model, t.exact, t.url) == ("VX820", True, "serial:///dev/ttyACM2?baudrate=57600")


def test_ports_of_unknown_devices_are_not_terminals(by_id: Path, no_usb_stack) -> None:
    found = discover(profiles=PROFILES, by_id_dir=by_id, comports=ports(
        port("/dev/ttyUSB0", 0x0403, 0x6001, manufacturer="FTDI"), port("/dev/ttyS0")))
    assert found.terminals == []
    with pytest.raises(DeviceError) as info:
        choose_auto(found)
    text = str(info.value)
    assert "found no terminal" in text and "/dev/ttyUSB0 USB 0403:6001 (FTDI)" in text
    assert "no USB backend" in text and "profiles.toml" in text


def test_several_terminals_make_auto_refuse_and_list_them(by_id: Path) -> None:
    backend = FakeUsbBackend([FakeUsbTerminal(0x0B00, 0x0081, serial_number="A1")])
    found = discover(backend, profiles=PROFILES, by_id_dir=by_id,
                     comports=ports(port("/dev/ttyACM0", 0x0B00, 0x0060), port("/dev/ttyPos0")))
    assert len(found.terminals) == 3
    with pytest.raises(DeviceError) as info:
        choose_auto(found)
    text = str(info.value)
    assert "found 3 terminals" in text and "Choose one with --port" in text
    for t in found.terminals:
        assert t.url in text


def test_the_report_lists_terminals_other_ports_usb_devices_and_notes(by_id: Path) -> None:
    backend = FakeUsbBackend([FakeUsbTerminal(0x1D6B, 0x0002, serial_number=None)])
    report = format_report(discover(backend, profiles=PROFILES, by_id_dir=by_id, comports=ports(
        port("/dev/ttyACM0", 0x0B00, 0x0060), port("/dev/ttyS0"))))
    assert report.splitlines()[0] == "Terminals found: 1"
    assert "Ingenico IPP320 / IPP350" in report and "protocol: arcus2" in report
    assert "Other serial ports:\n  /dev/ttyS0" in report
    assert "USB devices:\n  USB 1d6b:0002" in report


def test_the_report_without_a_usb_stack_says_so(by_id: Path, no_usb_stack) -> None:
    report = format_report(discover(profiles=PROFILES, by_id_dir=by_id, comports=ports()))
    assert report.startswith("No terminal found.")
    assert "Note: USB devices were not listed: there is no USB backend" in report
