"""Terminal profiles: the shipped table, user files, and readable errors for bad rows."""

from __future__ import annotations

from pathlib import Path

import pytest

from posbridge import protocols
from posbridge.devices import ProfileError, TerminalProfile, load_profiles
from posbridge.devices.profiles import (
    ENV_VAR,
    built_in_text,
    find_profile,
    parse_profiles,
    user_profile_paths,
)

MODELS = {
    ("Verifone", "VX520"): "inpas", ("Verifone", "VX805"): "inpas", ("Verifone", "VX820"): "inpas",
    ("Ingenico", "IPP320"): "arcus2", ("Ingenico", "IPP350"): "arcus2", ("Ingenico", "Lane 3000"): "arcus2",
    ("PAX", "SP30"): "inpas", ("Castles", "V3"): "inpas",
}


@pytest.fixture
def builtin() -> list[TerminalProfile]:
    return load_profiles(user=False)


def test_the_models_cash_registers_list_are_there_with_their_protocols(builtin) -> None:
    table = {(p.vendor, p.model): p for p in builtin}
    for key, protocol in MODELS.items():
        assert table[key].protocol == protocol, key
        assert table[key].baud_rate == 115200
        assert table[key].source == "built-in"


def test_every_profile_names_a_registered_protocol(builtin) -> None:
    # Devices store the protocol as a plain name; it must be one the application knows.
    assert {p.protocol for p in builtin} <= set(protocols.names())


def test_public_usb_ids_are_in_and_private_ones_are_not(builtin) -> None:
    table = {(p.vendor, p.model): p for p in builtin}
    assert table["Ingenico", "IPP350"].matches_usb(0x0B00, 0x0060)
    assert table["Ingenico", "IPP320"].matches_usb(0x0B00, 0x0058)
    assert table["Ingenico", "Lane 3000"].matches_usb(0x0B00, 0x0084)
    assert table["Ingenico", "Lane 5000"].matches_usb(0x0B00, 0x0081)
    assert table["Ingenico", "iWL2xx/3xx"].matches_usb(0x0B00, 0x0064)
    assert table["Ingenico", "iCT2xx"].matches_usb(0x0B00, 0x0066)
    older = table["Ingenico", "Telium (older)"]
    assert older.matches_usb(0x079B, 0x1234) and not older.matches_usb(0x0B00, 0x1234)  # vendor-wide
    assert not table["Ingenico", "Lane 3000"].matches_usb(0x0B00, 0x0060)
    for vendor, model in [("Verifone", "VX520"), ("PAX", "SP30"), ("Castles", "V3")]:
        assert table[vendor, model].usb_vendor_id is None
        assert table[vendor, model].usb_ids_text() == "not public (user-supplied)"
    assert table["PAX", "SP30"].matches_port("/dev/ttyPos0")


def test_the_table_ships_as_package_data() -> None:
    assert "[[terminal]]" in built_in_text()


def test_a_user_file_overrides_keys_of_a_row_and_adds_rows(tmp_path: Path) -> None:
    mine = tmp_path / "mine.toml"
    mine.write_text(
        '[[terminal]]\nvendor = "verifone"\nmodel = "vx520"\nbaud_rate = 9600\n'
        'usb_vendor_id = 0x11CA\nusb_product_ids = [0x0219]\n\n'
        '[[terminal]]\nvendor = "Acme"\nmodel = "T1"\nprotocol = "INPAS"\nusb_vendor_id = 0x1234\n',
        encoding="utf-8")
    profiles = load_profiles(env={ENV_VAR: str(mine), "XDG_CONFIG_HOME": str(tmp_path / "none")})
    vx520 = find_profile("Verifone", "VX520", profiles)
    assert vx520 is not None
    assert (vx520.vendor, vx520.model, vx520.baud_rate, vx520.protocol) == ("Verifone", "VX520", 9600, "inpas")
    assert vx520.matches_usb(0x11CA, 0x0219) and vx520.source == str(mine)
    acme = find_profile("ACME", "t1", profiles)
    assert acme is not None and acme.protocol == "inpas" and acme.matches_usb(0x1234, 0x9999)
    assert len(profiles) == len(load_profiles(user=False)) + 1


def test_the_config_file_is_read_before_the_env_files(tmp_path: Path) -> None:
    config = tmp_path / "config" / "posbridge"
    config.mkdir(parents=True)
    (config / "profiles.toml").write_text('[[terminal]]\nvendor="PAX"\nmodel="SP30"\nbaud_rate=19200\n')
    later = tmp_path / "later.toml"
    later.write_text('[[terminal]]\nvendor="PAX"\nmodel="SP30"\nbaud_rate=9600\n')
    env = {"XDG_CONFIG_HOME": str(tmp_path / "config"), ENV_VAR: str(later)}
    assert [p for p, _ in user_profile_paths(env)] == [config / "profiles.toml", later]
    assert find_profile("PAX", "SP30", load_profiles(env=env)).baud_rate == 9600  # type: ignore[union-attr]
    env.pop(ENV_VAR)
    assert find_profile("PAX", "SP30", load_profiles(env=env)).baud_rate == 19200  # type: ignore[union-attr]


def test_a_missing_default_file_is_fine_but_a_named_one_is_not(tmp_path: Path) -> None:
    env = {"XDG_CONFIG_HOME": str(tmp_path)}
    assert load_profiles(env=env) == load_profiles(user=False)
    with pytest.raises(ProfileError, match="does not exist"):
        load_profiles(env={**env, ENV_VAR: str(tmp_path / "nope.toml")})


@pytest.mark.parametrize("text, message", [
    ("[[terminal]\nvendor = 1", "not valid TOML"),
    ('[[terminal]]\nvendor="A"\nmodel="B"\nprotocol="inpas"\nbaud=9600\n', "unknown key baud"),
    ('[[terminal]]\nmodel="B"\nprotocol="inpas"\n', "vendor and model are required"),
    ('[[terminal]]\nvendor="A"\nmodel="B"\n', "protocol is required for a new model"),
    ('[[terminal]]\nvendor="A"\nmodel="B"\nprotocol="inpas"\nusb_vendor_id=70000\n', "must be a USB id"),
    ('[[terminal]]\nvendor="A"\nmodel="B"\nprotocol="inpas"\nusb_product_ids=[1]\n',
     "usb_product_ids needs usb_vendor_id"),
    ('[[terminal]]\nvendor="A"\nmodel="B"\nprotocol="inpas"\nbaud_rate="fast"\n', "baud_rate must be"),
    ('[[terminal]]\nvendor=""\nmodel="B"\nprotocol="inpas"\n', "vendor must be a non-empty string"),
    ('[terminal]\nvendor="A"\n', "double brackets"),
    ('[[terminals]]\nvendor="A"\n', "unknown table terminals"),
])
def test_bad_rows_name_the_file_and_row(text: str, message: str) -> None:
    with pytest.raises(ProfileError) as info:
        parse_profiles(text, "my.toml")
    assert message in str(info.value) and "my.toml" in str(info.value)


def test_the_row_number_and_name_are_in_the_message() -> None:
    text = '[[terminal]]\nvendor="A"\nmodel="1"\nprotocol="inpas"\n[[terminal]]\nvendor="B"\nmodel="2"\ncolour=1\n'
    with pytest.raises(ProfileError, match=r"my.toml: \[\[terminal\]\] #2 \(B 2\): unknown key colour"):
        parse_profiles(text, "my.toml")
