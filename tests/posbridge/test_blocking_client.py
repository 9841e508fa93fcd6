"""BlockingEcrClient: every operation of EcrClient as a real, typed, documented blocking method."""

from __future__ import annotations

import asyncio
import inspect
import pydoc
import textwrap
from pathlib import Path

import pytest
from mypy import api as mypy_api

from posbridge.ecr import BlockingEcrClient, EcrClient
from posbridge.journal import Journal
from posbridge.model import Request
from posbridge.protocols.common.errors import NotSupported

ROOT = Path(__file__).resolve().parents[2]


def _public_methods(cls: type) -> dict[str, object]:
    return {name: member for name, member in vars(cls).items()
            if not name.startswith("_") and inspect.isfunction(member)}


def test_every_public_method_of_the_async_client_has_a_blocking_twin_with_its_signature() -> None:
    asynchronous = _public_methods(EcrClient)
    blocking = _public_methods(BlockingEcrClient)
    assert {"sale", "refund", "cancel", "abort", "recover", "execute", "settlement"} <= set(asynchronous)
    assert set(asynchronous) - set(blocking) == set(), "operations the blocking client lacks"
    for name, method in asynchronous.items():
        twin = blocking[name]
        assert inspect.signature(twin) == inspect.signature(method), name  # names, defaults, annotations
        assert not inspect.iscoroutinefunction(twin), f"BlockingEcrClient.{name} must block, not return a coroutine"
        assert inspect.getdoc(twin), f"BlockingEcrClient.{name} has no docstring"


def test_the_constructor_takes_the_async_clients_parameters() -> None:
    assert inspect.signature(BlockingEcrClient.__init__) == inspect.signature(EcrClient.__init__)


def test_no_attribute_is_made_up_at_run_time() -> None:
    assert not hasattr(BlockingEcrClient, "__getattr__")
    assert not hasattr(BlockingEcrClient, "__getattribute__") or \
        BlockingEcrClient.__getattribute__ is object.__getattribute__


def test_help_shows_every_operation_with_its_signature_and_docstring() -> None:
    text = pydoc.render_doc(BlockingEcrClient, renderer=pydoc.plaintext)
    for name, method in _public_methods(BlockingEcrClient).items():
        signature = str(inspect.signature(method)).replace("'", "")
        assert f"{name}{signature}" in text.replace("'", ""), name
        assert inspect.getdoc(method).splitlines()[0] in text, name  # type: ignore[union-attr]


SNIPPET = textwrap.dedent("""
    from posbridge.ecr import BlockingEcrClient
    from posbridge.model import Result

    def pay(ecr: BlockingEcrClient) -> Result:
        sale: Result = ecr.sale(150_00)
        ecr.refund(150_00, rrn=sale.rrn or "")
        ecr.abort()
        reveal_type(ecr.settlement())
        ecr.sale("150.00")  # wrong: minor units are an int
        return ecr.no_such_operation()  # wrong: there is none
""")


def test_mypy_sees_the_methods_and_their_types(tmp_path: Path) -> None:
    snippet = tmp_path / "posbridge_blocking_snippet.py"
    snippet.write_text(SNIPPET, encoding="utf-8")
    out, err, _status = mypy_api.run([
        str(snippet), "--follow-imports=silent", "--no-error-summary", "--hide-error-context",
        "--cache-dir", str(ROOT / ".mypy_cache"),
    ])
    # By file name: mypy's cache may report an unchanged module under the folder it first had.
    lines = [line.split(": ", 1)[1] for line in out.splitlines() 
             if line.split(":", 1)[0].endswith(snippet.name)]
    assert lines == [
        'note: Revealed type is "posbridge.protocols.common.model.Result"',
        'error: Argument 1 to "sale" of "BlockingEcrClient" has incompatible type "str"; expected "int"  '
        '[arg-type]',
        'error: "BlockingEcrClient" has no attribute "no_such_operation"  [attr-defined]',
    ], out + err


@pytest.mark.parametrize("protocol, can_abort", [("inpas", False), ("arcus2", True)])
async def test_abort_follows_the_protocols_capability_whether_or_not_an_operation_runs(
        protocol: str, can_abort: bool) -> None:
    client = EcrClient("virtual://abort-capability", protocol)
    assert client.protocol.capabilities.abort is can_abort
    if can_abort:
        client.abort()  # nothing runs: nothing to abort, and no error
    else:
        with pytest.raises(NotSupported, match="no ECR-side abort"):
            client.abort()


async def test_an_emergency_reversal_on_the_line_is_never_aborted() -> None:
    # An abort meant for the operation before it (a bridge whose register gave up while recovery
    # ran) must not reach the reversal that undoes a lost outcome: nothing is sent.
    from posbridge.model import Operation, Status
    from posbridge.testing.background import BackgroundTerminal

    with BackgroundTerminal("arcus2", transport="virtual") as terminal:
        sent: list[bytes] = []
        client = EcrClient(terminal.url, "arcus2", journal=Journal(),
                           trace=lambda direction, data: sent.append(data) if direction == "tx" else None)
        async with client:
            sale = await client.sale(40_00)
            terminal.control.delays(host=1.0)
            reversal = asyncio.ensure_future(client.emergency_reversal(
                Request(Operation.SALE, 40_00, transaction_id=sale.transaction_id, rrn=sale.rrn)))
            while terminal.call(lambda: terminal.terminal.state) != "authorizing":
                await asyncio.sleep(0.01)
            before = len(sent)
            client.abort()
            result = await reversal
        assert (result.operation, result.status) == (Operation.EMERGENCY_REVERSAL, Status.APPROVED)
        aborts = [chunk for chunk in sent[before:] if chunk[:1] == b"\x01" and chunk[3:4] == b"A"]
        assert aborts == []  # no abort frame (class A) went out
        assert [(o.operation, o.status) for o in terminal.operations()] == \
            [(Operation.SALE, Status.APPROVED), (Operation.EMERGENCY_REVERSAL, Status.APPROVED)]
