"""The typed contract between protocols/ and the application: the registry through entry points, the
Session bases, typed options, capability flags and the one description schema, for every protocol."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import sys
from pathlib import Path

import pytest

from posbridge import protocols
from posbridge.model import Operation, Request, Result, Status
from posbridge.protocols import Capabilities, OptionsError, ProtocolSpec, UnknownProtocol
from posbridge.protocols.arcus2.options import Arcus2Options
from posbridge.protocols.common.describe import EntryKind, FrameDescription
from posbridge.protocols.common.errors import NotSupported
from posbridge.protocols.common.session import (
    Completed,
    EcrSession,
    RequestReceived,
    ResultDelivered,
    Session,
    TerminalSession,
)
from posbridge.protocols.inpas.mapping import MAX_GATEWAY_DATA
from posbridge.protocols.inpas.options import InpasOptions

BUILT_IN = ("inpas", "arcus2")
SALE = Request(Operation.SALE, amount=150_00, transaction_id="17")


# --- the registry ---------------------------------------------------------------------------------
def test_the_entry_point_group_lists_both_protocols() -> None:
    points = {p.name: p.value for p in importlib.metadata.entry_points(group="posbridge.protocols")}
    assert points["inpas"] == "posbridge.protocols.inpas.spec:SPEC"
    assert points["arcus2"] == "posbridge.protocols.arcus2.spec:SPEC"
    assert set(BUILT_IN) <= set(protocols.names())
    assert protocols.get(" INPAS ") is protocols.get("inpas")


def test_an_unknown_protocol_is_one_line_naming_the_choices() -> None:
    with pytest.raises(UnknownProtocol) as caught:
        protocols.get("zvt")
    message = str(caught.value)
    assert "\n" not in message and "'zvt'" in message and "arcus2" in message and "inpas" in message
    assert isinstance(caught.value, ValueError)  # what callers caught before the registry was open


def register(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, value: str, module: str = "",
             source: str = "") -> None:
    """Install a distribution at run time: a dist-info folder with entry_points.txt on sys.path."""
    dist = tmp_path / f"posbridge_test_{name}-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: posbridge-test-{name}\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[posbridge.protocols]\n{name} = {value}\n")
    if module:
        (tmp_path / f"{module}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(protocols, "_loaded", {})  # the registry's cache, restored afterwards
    monkeypatch.delitem(sys.modules, module, raising=False)


def test_a_protocol_registered_at_run_time_is_found_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = (
        "import dataclasses\n"
        "from posbridge.protocols.inpas.spec import SPEC as INPAS\n"
        "SPEC = dataclasses.replace(INPAS, name='toy-sa', title='a copy of SA under another name')\n"
    )
    register(tmp_path, monkeypatch, "toy-sa", "posbridge_toy_sa:SPEC", "posbridge_toy_sa", source)
    assert "toy-sa" in protocols.names()
    assert "posbridge_toy_sa" not in sys.modules  # listed without being imported
    spec = protocols.get("Toy-SA")
    assert spec.name == "toy-sa" and "posbridge_toy_sa" in sys.modules
    assert isinstance(spec.ecr_session(), EcrSession)


def test_a_broken_entry_point_is_one_line_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    register(tmp_path, monkeypatch, "broken", "posbridge_no_such_module:SPEC")
    with pytest.raises(UnknownProtocol, match=r"^protocol 'broken' \(posbridge_no_such_module:SPEC\) cannot be "
                                              r"loaded: ModuleNotFoundError") as caught:
        protocols.get("broken")
    assert "\n" not in str(caught.value)
    register(tmp_path / "second", monkeypatch, "notaspec", "posbridge_not_a_spec:SPEC", "posbridge_not_a_spec",
             "SPEC = 42\n")
    with pytest.raises(UnknownProtocol, match="is a int, not a ProtocolSpec"):
        protocols.get("notaspec")


# --- every protocol keeps the contract ------------------------------------------------------------
@pytest.fixture(params=BUILT_IN)
def spec(request: pytest.FixtureRequest) -> ProtocolSpec:
    return protocols.get(request.param)


def test_sessions_are_the_typed_bases(spec: ProtocolSpec) -> None:
    ecr, terminal = spec.ecr_session(), spec.terminal_session()
    assert isinstance(ecr, EcrSession) and isinstance(terminal, TerminalSession)
    assert isinstance(ecr, Session) and isinstance(terminal, Session)
    assert ecr.current_exchange is None and terminal.current_exchange is None
    assert not ecr.busy and not terminal.busy and ecr.settle_time > 0


def test_a_sale_round_trip_through_the_bases_alone(spec: ProtocolSpec) -> None:
    """Only what Session, EcrSession and TerminalSession declare: what the application may call."""
    ecr: EcrSession = spec.ecr_session(timers={"ack_timeout": 1.0})
    terminal: TerminalSession = spec.terminal_session({"ack_timeout": 1.0})
    approved = Result(Operation.SALE, Status.APPROVED, "00", amount=150_00, currency=643, rrn="123456789012",
                      auth_code="A1", transaction_id="17")
    now, ecr_events, terminal_events = 0.0, [], []
    ecr.start(SALE, now)
    assert ecr.busy and ecr.next_deadline() is not None
    for _ in range(50):
        now += 0.01
        for event in terminal.receive(ecr.data_to_send(), now) + terminal.poll(now):
            terminal_events.append(event)
            if isinstance(event, RequestReceived) and terminal.current_exchange == event.exchange:
                assert event.request.amount == 150_00
                terminal.send_result(approved, now)
        ecr_events += ecr.receive(terminal.data_to_send(), now) + ecr.poll(now)
        if any(isinstance(e, ResultDelivered) for e in terminal_events):
            break
    [completed] = [e for e in ecr_events if isinstance(e, Completed)]
    assert completed.result.approved and completed.result.rrn == "123456789012"
    assert not ecr.busy and not terminal.busy and terminal.current_exchange is None
    ecr.reset()
    terminal.reset()


def test_capabilities_are_data_and_sessions_agree(spec: ProtocolSpec) -> None:
    caps = spec.capabilities
    assert isinstance(caps, Capabilities)
    ecr = spec.ecr_session()
    ecr.start(SALE, 0.0)
    if caps.abort:
        ecr.abort(0.1)  # queued for the terminal
    else:
        with pytest.raises(NotSupported):
            ecr.abort(0.1)
    if not caps.cashier_dialog:
        with pytest.raises(NotSupported):
            spec.terminal_session().send_prompt("last 4 digits?", 30.0, 0.0)
        with pytest.raises(NotSupported):
            ecr.answer_prompt("1234", True, 0.2)
    assert caps.gateway == (caps.gateway_data > 0)
    if not caps.gateway:
        with pytest.raises(NotSupported):
            spec.terminal_session().send_gateway("open", b"127.0.0.1;7100", 0.0)
        with pytest.raises(NotSupported):
            ecr.answer_gateway(True, b"", 0.2)
    assert (protocols.get("inpas").capabilities, protocols.get("arcus2").capabilities) == (
        Capabilities(abort=False, cashier_dialog=True, gateway=True, gateway_data=MAX_GATEWAY_DATA),
        Capabilities(abort=True, cashier_dialog=False, gateway=False))


def test_describe_returns_the_common_schema_for_any_bytes(spec: ProtocolSpec) -> None:
    ecr = spec.ecr_session()
    ecr.start(SALE, 0.0)
    wire = ecr.data_to_send()  # INPAS: the request frame; Arcus: ENQ, and the frame after the ACK
    ecr.receive(b"\x06", 0.01)
    wire += ecr.data_to_send()
    garbage = b"\x00\xff" + wire + b"\x06" + wire[: len(wire) // 2]
    entries = spec.describe(garbage)
    assert all(isinstance(e, FrameDescription) for e in entries)
    assert [e.kind for e in entries][-1] is EntryKind.INCOMPLETE
    frames = [e for e in entries if e.kind is EntryKind.FRAME]
    assert frames and frames[-1].ok and frames[-1].field("amount") is not None
    json.dumps([e.to_dict() for e in entries])
    assert all(isinstance(e.summary(), str) for e in entries)


# --- typed options --------------------------------------------------------------------------------
def test_options_from_a_mapping_are_the_protocols_class(spec: ProtocolSpec) -> None:
    options = spec.options({"ack_timeout": 1, "packet_timeout": "2.5", "tries": 2.0})
    assert type(options) is spec.options_type and dataclasses.is_dataclass(options)
    assert (options.ack_timeout, options.packet_timeout, options.tries) == (1.0, 2.5, 2)
    assert spec.options(options) is options and spec.options(None) == spec.options_type()
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.ack_timeout = 3.0  # type: ignore[misc]


@pytest.mark.parametrize(("values", "message"), [
    ({"ack_timout": 1, "zz": 2}, r"^unknown \w+ option\(s\): ack_timout, zz \(known: ack_timeout, packet_timeout, "),
    ({"ack_timeout": "fast"}, r"option ack_timeout: expected a number, got 'fast'$"),
    ({"ack_timeout": -1}, r"option ack_timeout: expected seconds >= 0, got -1.0$"),
    ({"tries": 2.5}, r"option tries: expected a whole number, got 2.5$"),
    ({"tries": 0}, r"option tries: expected a whole number >= 1, got 0$"),
    ({"packet_timeout": True}, r"option packet_timeout: expected a number, got True$"),
    ({"packet_timeout": float("inf")}, r"option packet_timeout: expected a finite number, got inf$"),
    ({"ack_timeout": [1]}, r"option ack_timeout: expected a number, got list$"),
    ({"ack_timeout": "\u0661"}, r"option ack_timeout: expected a number, got '\u0661'$"),  # float() reads it as 1
])
def test_bad_options_are_one_line_naming_key_and_value(spec: ProtocolSpec, values: dict[str, object],
                                                       message: str) -> None:
    with pytest.raises(OptionsError, match=message) as caught:
        spec.options(values)
    assert "\n" not in str(caught.value) and isinstance(caught.value, ValueError)


def test_each_protocols_own_options() -> None:
    inpas, arcus2 = protocols.get("inpas"), protocols.get("arcus2")
    assert inpas.options({"resend_on_ack_timeout": True}).resend_on_ack_timeout is True
    with pytest.raises(OptionsError, match="resend_on_ack_timeout: expected true or false, got 1"):
        inpas.options({"resend_on_ack_timeout": 1})
    assert arcus2.options({"link_version": 1.0, "enq_interval": 0.1, "turn_timeout": 3}) == \
        Arcus2Options(link_version=1, enq_interval=0.1, turn_timeout=3.0)
    with pytest.raises(OptionsError, match=r"^arcus2 option link_version: expected one of 1, 2, got 3$"):
        arcus2.options({"link_version": 3})
    with pytest.raises(OptionsError, match="unknown inpas option"):
        inpas.options({"link_version": 1})
    with pytest.raises(OptionsError, match="arcus2 takes Arcus2Options, not InpasOptions"):
        arcus2.options(InpasOptions())
    with pytest.raises(OptionsError, match="not both"):
        inpas.ecr_session(InpasOptions(), timers={"ack_timeout": 1})
    # The side's habit: a terminal resends an un-ACKed frame, an ECR does not, unless told.
    assert inpas.terminal_session().link.timers.resend_on_ack_timeout is True  # type: ignore[attr-defined]
    assert inpas.ecr_session().link.timers.resend_on_ack_timeout is False  # type: ignore[attr-defined]
    assert inpas.terminal_session({"resend_on_ack_timeout": False}).link.timers.resend_on_ack_timeout is False  # type: ignore[attr-defined]


def test_a_scenarios_timers_table_reaches_the_session_typed() -> None:
    from posbridge.emulator.scenario import scenario_from_dict
    from posbridge.emulator.terminal import VirtualTerminal

    scenario = scenario_from_dict({"terminal": {"timers": {"ack_timeout": 0.25, "link_version": 1, "tries": 2}}})
    terminal = VirtualTerminal.from_scenario(scenario, protocol="arcus2")
    session = terminal.new_session()
    assert session.link.timers == Arcus2Options(ack_timeout=0.25, link_version=1, tries=2)
    bad = VirtualTerminal.from_scenario(scenario_from_dict({"terminal": {"timers": {"t1": 2}}}), protocol="inpas")
    with pytest.raises(OptionsError, match=r"^unknown inpas option\(s\): t1 "):
        bad.new_session()


def test_the_client_checks_its_timers_when_it_is_made_not_when_it_opens_the_line() -> None:
    from posbridge.ecr.client import EcrClient
    from posbridge.journal import Journal

    with pytest.raises(OptionsError, match=r"^unknown arcus2 option\(s\): t1 "):
        EcrClient("virtual://never-opened", "arcus2", journal=Journal(), timers={"t1": 2.0})
    client = EcrClient("virtual://never-opened", "arcus2", journal=Journal(), timers=Arcus2Options(link_version=1))
    assert client.protocol.options(client.timers).link_version == 1


def test_gateway_capability_and_its_data_limit_come_together() -> None:
    with pytest.raises(ValueError, match="gateway_data"):
        Capabilities(gateway=True)  # an ECR would not know how much one answer to the terminal carries
    with pytest.raises(ValueError, match="gateway_data"):
        Capabilities(gateway=False, gateway_data=100)


def test_options_are_read_even_when_their_module_left_sys_modules(monkeypatch: pytest.MonkeyPatch) -> None:
    # pytester restores sys.modules after an in-process run, keeping the classes it loaded: the
    # registry's InpasOptions then had no module, typing.get_type_hints found no ClassVar, and
    # every session's options failed with a NameError (seen once in the suite).
    from posbridge.protocols.inpas.options import InpasOptions

    monkeypatch.delitem(sys.modules, InpasOptions.__module__)
    monkeypatch.delitem(sys.modules, "posbridge.protocols.common.options")
    assert InpasOptions.from_mapping({"ack_timeout": "0.5", "tries": 2.0}) == InpasOptions(ack_timeout=0.5, tries=2)
