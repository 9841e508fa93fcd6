"""The SQLite journal: schema, ECR write-ahead entries, terminal batch, registry export, no full PAN."""

from __future__ import annotations

import io
import sqlite3
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from posbridge.emulator.cards import DEFAULT_CARD, TEST_CARDS, Card
from posbridge.emulator.host import BankHost, HostConfig, Limits
from posbridge.journal import (
    EXPORT_COLUMNS,
    SCHEMA_VERSION,
    EcrEntry,
    Journal,
    JournalError,
    check_journal,
    safe_masked_pan,
)
from posbridge.journal.storage import MIGRATIONS, SCHEMA_V1
from posbridge.model import Operation, Request, Result, Status, Totals

Op = Operation
T0 = datetime(2025, 3, 10, 12, 0, 0)


class Clock:
    def __init__(self, now: datetime = T0, step: timedelta = timedelta(0)) -> None:
        self.now, self.step = now, step

    def __call__(self) -> datetime:
        now = self.now
        self.now += self.step
        return now


@pytest.fixture
def journal() -> Iterator[Journal]:
    j = Journal(clock=Clock(step=timedelta(seconds=1)))
    yield j
    j.close()


# --- schema and storage -------------------------------------------------------------------------
def test_schema_is_versioned_and_files_use_wal(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    with Journal(path) as j:
        assert j.storage.schema_version() == SCHEMA_VERSION
        assert j.storage.query("PRAGMA journal_mode")[0][0] == "wal"
        j.storage.set_meta("k", "v")
    with Journal(str(path)) as j:  # reopened: schema kept, data kept
        assert j.storage.get_meta("k") == "v"
    raw = sqlite3.connect(path)
    raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    raw.close()
    with pytest.raises(JournalError, match="newer"):
        Journal(path)



def _schema_of(path: Path) -> dict[str, list[tuple[object, ...]]]:
    """Every table's and view's columns (name, type, not null, default, key), and every index."""
    raw = sqlite3.connect(path)
    try:
        names = [r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view') "
                                           "ORDER BY name")]
        schema = {name: [tuple(c[1:]) for c in raw.execute(f"PRAGMA table_info({name})")] for name in names}
        schema["indexes"] = [tuple(r) for r in raw.execute(
            "SELECT name, tbl_name, sql FROM sqlite_master WHERE type = 'index' ORDER BY name")]
        return schema
    finally:
        raw.close()


def _version_1_journal(path: Path) -> None:
    """A journal as the first schema left it, with one ECR entry and one terminal operation."""
    raw = sqlite3.connect(path)
    raw.executescript(SCHEMA_V1)
    raw.execute("INSERT INTO ecr_entries (terminal, state, created_at, updated_at, operation, amount, currency, "
                "transaction_id) VALUES ('T1', 'sent', '2025-03-10T12:00:00.000000', "
                "'2025-03-10T12:00:00.000000', 'sale', 100, 643, '7')")
    raw.execute("INSERT INTO ops (terminal_id, batch, stan, operation, status, code, text, amount, currency, "
                "host_datetime) VALUES ('00344224', 1, '7', 'sale', 'approved', '00', 'ОДОБРЕНО', 100, 643, "
                "'2025-03-10T12:00:01.000000')")
    raw.execute("PRAGMA user_version = 1")
    raw.commit()
    raw.close()


def test_a_version_1_journal_is_migrated_in_order_and_keeps_its_rows(tmp_path: Path) -> None:
    assert len(MIGRATIONS) == SCHEMA_VERSION - 1
    old, new = tmp_path / "old.sqlite", tmp_path / "new.sqlite"
    _version_1_journal(old)
    with pytest.raises(JournalError, match=f"schema 1, not {SCHEMA_VERSION}; open it once with a posbridge command that writes"):
        Journal(old, readonly=True)  # a reader never upgrades
    with Journal(old) as j:
        assert j.storage.schema_version() == SCHEMA_VERSION
        [entry] = j.ecr.unresolved()
        assert (entry.terminal, entry.state, entry.request.amount, entry.owner, entry.port) == \
            ("T1", "sent", 100, None, None)
        [op] = j.ledger.operations()
        assert op.transaction_id == "7" and op.result_delivered is None
        j.ledger.set_result_delivered(op.id, False)  # a column version 2 added
        assert [o.id for o in j.ledger.undelivered_operations()] == [op.id]
    Journal(new).close()
    assert _schema_of(old) == _schema_of(new)  # upgraded and new journals have the same tables


def test_the_parts_share_one_connection_and_one_transaction(journal: Journal) -> None:
    assert journal.ledger._storage is journal.ecr._storage is journal.export._storage is journal.storage
    request = Request(Op.SALE, amount=100, currency=643, transaction_id="1")
    with pytest.raises(RuntimeError), journal.transaction():
        journal.ecr.begin(request, "T1")
        journal.ledger.open_batch("00344224", T0)
        raise RuntimeError("boom")
    assert journal.ecr.unresolved() == [] and journal.ledger.batch_number("00344224") == 1
    assert journal.export.rows() == []


def test_check_journal_names_what_needs_attention(tmp_path: Path) -> None:
    path = tmp_path / "ecr.sqlite"
    with Journal(path, clock=Clock()) as j:
        sale = j.ecr.begin(Request(Op.SALE, amount=100, currency=643, transaction_id="1"), "T1")
        j.ecr.sent(sale)
        j.ecr.unknown(sale, "no answer")
        flagged = j.ecr.begin(Request(Op.SALE, amount=200, currency=643, transaction_id="2"), "T1")
        j.ecr.sent(flagged)
        j.ecr.flag(flagged, None, how="batch_settled", note="settled before recovery")
        done = j.ecr.begin(Request(Op.SALE, amount=300, currency=643, transaction_id="3"), "T1")
        j.ecr.sent(done)
        j.ecr.finish(done, Result(Op.SALE, Status.APPROVED, "00", "ОДОБРЕНО", amount=300, currency=643))
    report = check_journal(path)
    assert report.ok, report.text
    lines = report.text.splitlines()
    assert lines[0] == f"journal {path}"
    assert lines[1] == f"  schema {SCHEMA_VERSION}; SQLite integrity: ok"
    assert lines[2] == "  terminal side: 0 operation(s); ECR side: 1 done, 1 refund_needed, 1 unknown"
    assert lines[3] == "  1 ECR operation(s) with an unknown outcome: run `posbridge recover`"
    assert lines[4] == ("  1 ECR operation(s) need a person: their batch was settled "
                        f"(see `posbridge export --journal {path} --side ecr`)")
    assert lines[5] == "  sound"
    missing = check_journal(tmp_path / "none.sqlite")
    assert not missing.ok and "NOT USABLE" in missing.text and "no such file" in missing.text

def test_memory_journal_needs_no_file() -> None:
    with Journal() as j:
        assert j.path == ":memory:"
        assert j.ecr.next_transaction_id() == "1"


def test_transaction_rolls_back_on_error(journal: Journal) -> None:
    with pytest.raises(RuntimeError), journal.transaction():
        journal.storage.set_meta("a", "1")
        with journal.transaction():  # nested: joins the outer transaction
            journal.storage.set_meta("b", "2")
        raise RuntimeError("boom")
    assert journal.storage.get_meta("a") is None and journal.storage.get_meta("b") is None
    journal.storage.set_meta("a", "3")
    assert journal.storage.get_meta("a") == "3"


def test_counters_and_salt_persist(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    with Journal(path) as j:
        assert [j.ledger.next_counter("x") for _ in range(3)] == [1, 2, 3]
        salt = j.ledger.pan_salt()
        assert len(salt) == 16 and j.ledger.pan_salt() == salt
    with Journal(path) as j:
        assert j.ledger.next_counter("x") == 4 and j.ledger.pan_salt() == salt


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("4111111111111111", "411111******1111"),
        ("4111 1111 1111 1111", "411111******1111"),
        ("411111******1111", "411111******1111"),
        ("************1111", "************1111"),
        ("41111111111111**", "411111****1111"),
        ("", ""),
        (None, None),
    ],
)
def test_safe_masked_pan(given: str | None, stored: str | None) -> None:
    assert safe_masked_pan(given) == stored


# --- ECR side -----------------------------------------------------------------------------------
def test_transaction_id_is_monotonic_persisted_and_wraps(tmp_path: Path) -> None:
    path = tmp_path / "ecr.sqlite"
    with Journal(path) as j:
        assert [j.ecr.next_transaction_id() for _ in range(3)] == ["1", "2", "3"]
    with Journal(path) as j:
        assert j.ecr.next_transaction_id() == "4"
        j.storage.set_meta("ecr_transaction_id", "999998")
        assert [j.ecr.next_transaction_id() for _ in range(3)] == ["999999", "1", "2"]


def test_transaction_ids_are_unique_across_threads(journal: Journal) -> None:
    got: list[str] = []
    lock = threading.Lock()

    def take() -> None:
        for _ in range(50):
            value = journal.ecr.next_transaction_id()
            with lock:
                got.append(value)

    threads = [threading.Thread(target=take) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got, key=int) == [str(i) for i in range(1, 201)]
    assert all(v.isascii() and v.isdigit() for v in got)


REQUEST = Request(
    Op.CANCEL, 15_000, 643, transaction_id="42", rrn="123456789012", auth_code="AB12CD",
    original_operation=Op.SALE, original_amount=15_000, terminal_id="00344224",
    ecr_datetime=datetime(2025, 3, 10, 11, 59, 58),
)
RESULT = Result(
    Op.CANCEL, Status.APPROVED, "00", "ОДОБРЕНО", amount=15_000, currency=643, rrn="210987654321",
    auth_code="XY34ZW", masked_pan="411111******1111", card_scheme="VISA", expiry="3012",
    terminal_id="00344224", merchant_id="000000000123456", transaction_id="42",
    host_datetime=datetime(2025, 3, 10, 12, 0, 3), host_code="00",
)


def test_ecr_entry_lifecycle_done(journal: Journal) -> None:
    entry_id = journal.ecr.begin(REQUEST, "pos-1")
    [pending] = journal.ecr.unresolved()
    assert isinstance(pending, EcrEntry)
    assert (pending.id, pending.state, pending.terminal) == (entry_id, "pending", "pos-1")
    assert pending.created_at == T0
    assert pending.request == REQUEST and pending.result is None
    journal.ecr.sent(entry_id)
    assert journal.ecr.unresolved("pos-1")[0].state == "sent"
    journal.ecr.finish(entry_id, RESULT)
    assert journal.ecr.unresolved() == []
    done = journal.ecr.last("pos-1")
    assert done is not None and done.state == "done" and done.request == REQUEST
    assert done.result == RESULT  # slips are not journaled; RESULT has none
    assert done.updated_at > done.created_at


def test_ecr_entry_unknown_then_resolved(journal: Journal) -> None:
    entry_id = journal.ecr.begin(REQUEST, "pos-1")
    journal.ecr.sent(entry_id)
    journal.ecr.unknown(entry_id, "timeout: no answer in 45 s")
    [unknown] = journal.ecr.unresolved()
    assert unknown.state == "unknown" and unknown.error == "timeout: no answer in 45 s"
    reversal = Result(Op.EMERGENCY_REVERSAL, Status.APPROVED, "400", "ОТМЕНА ПРОВЕДЕНА", rrn="210987654321")
    journal.ecr.resolve(entry_id, reversal, "emergency_reversal")
    assert journal.ecr.unresolved() == []
    entry = journal.ecr.entry(entry_id)
    assert entry is not None and entry.state == "resolved" and entry.how == "emergency_reversal"
    assert entry.result is not None and entry.result.status is Status.APPROVED
    assert entry.result.response_code == "400"


def test_ecr_state_changes_are_checked(journal: Journal) -> None:
    entry_id = journal.ecr.begin(REQUEST, "pos-1")
    journal.ecr.sent(entry_id)
    journal.ecr.sent(entry_id)  # idempotent
    journal.ecr.finish(entry_id, RESULT)
    for move in (
        lambda: journal.ecr.sent(entry_id),
        lambda: journal.ecr.finish(entry_id, RESULT),
        lambda: journal.ecr.unknown(entry_id, "late"),
        lambda: journal.ecr.resolve(entry_id, RESULT, "status"),
        lambda: journal.ecr.sent(9999),
    ):
        with pytest.raises(JournalError):
            move()
    assert journal.ecr.entry(9999) is None
    other = journal.ecr.begin(REQUEST, "pos-1")
    journal.ecr.finish(other, RESULT.with_changes(status=Status.NO_CONNECTION))  # never sent: fine


def test_ecr_unresolved_oldest_first_and_by_terminal(journal: Journal) -> None:
    a = journal.ecr.begin(Request(Op.SALE, 100, transaction_id="1"), "pos-1")
    b = journal.ecr.begin(Request(Op.SALE, 200, transaction_id="2"), "pos-2")
    c = journal.ecr.begin(Request(Op.SETTLEMENT, transaction_id="3"), "pos-1")
    journal.ecr.sent(b)
    journal.ecr.unknown(b, "disconnected")
    done = journal.ecr.begin(Request(Op.TEST_CONNECTION), "pos-1")
    journal.ecr.finish(done, Result(Op.TEST_CONNECTION, Status.APPROVED, "00"))
    assert [e.id for e in journal.ecr.unresolved()] == [a, b, c]
    assert [e.id for e in journal.ecr.unresolved("pos-1")] == [a, c]
    assert [e.state for e in journal.ecr.unresolved("pos-2")] == ["unknown"]
    assert journal.ecr.unresolved("pos-3") == []
    last = journal.ecr.last("pos-1")
    assert last is not None and last.id == done and last.state == "done"
    assert journal.ecr.last("nowhere") is None
    assert journal.ecr.unresolved()[2].request == Request(Op.SETTLEMENT, transaction_id="3")


def test_ecr_unresolved_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "ecr.sqlite"
    with Journal(path) as j:
        entry_id = j.ecr.begin(REQUEST, "pos-1")
        j.ecr.sent(entry_id)
    with Journal(path) as j:  # the "crash": nothing else was written
        [entry] = j.ecr.unresolved()
        assert (entry.id, entry.state, entry.request) == (entry_id, "sent", REQUEST)


def test_ecr_result_with_a_full_pan_is_masked(journal: Journal) -> None:
    entry_id = journal.ecr.begin(Request(Op.SALE, 100), "pos-1")
    journal.ecr.finish(entry_id, RESULT.with_changes(masked_pan="5100000000000008"))
    entry = journal.ecr.entry(entry_id)
    assert entry is not None and entry.result is not None
    assert entry.result.masked_pan == "510000******0008"


# --- terminal side ------------------------------------------------------------------------------
def test_batches_open_lazily_and_close(journal: Journal) -> None:
    assert journal.ledger.batch_number("T1") == 1
    assert journal.ledger.open_batch("T1", T0) == 1 == journal.ledger.open_batch("T1", T0)
    journal.ledger.close_batch("T1", 1, T0, Totals())
    assert journal.ledger.batch_number("T1") == 2 and journal.ledger.batch_number("T2") == 1
    with pytest.raises(JournalError):
        journal.ledger.close_batch("T1", 1, T0, Totals())
    assert journal.ledger.open_batch("T1", T0) == 2


def test_operation_record_round_trip(journal: Journal) -> None:
    totals = Totals(sale_count=2, sale_amount=300)
    rec = journal.ledger.add_operation(
        terminal_id="T1", batch=1, operation=Op.SETTLEMENT, status=Status.APPROVED, code="00",
        text="ОДОБРЕНО", host_datetime=T0, transaction_id="7", totals=totals, masked_pan="4111111111111111",
    )
    assert rec.totals == totals and rec.host_datetime == T0 and rec.transaction_id == "7"
    assert rec.masked_pan == "411111******1111"  # a full number handed in is masked on the way in
    assert journal.ledger.operation(rec.id) == rec
    assert journal.ledger.find_by_stan("T1", 1, "7") == rec
    assert journal.ledger.find_by_stan("T1", 2, "7") is None and journal.ledger.find_by_stan("T2", 1, "7") is None
    assert journal.ledger.state(rec.id).live
    with pytest.raises(JournalError):
        journal.ledger.state(12345)


# --- registry export ----------------------------------------------------------------------------
HEADER = ("side,kind,outcome,amount_minor_units,currency,masked_pan,rrn,auth_code,response_code,terminal_id,"
          "batch,datetime,transaction_id,original_rrn,original_transaction_id")


@pytest.fixture
def filled() -> Iterator[Journal]:
    """A journal with both sides: three terminal operations at T0, two ECR entries after it."""
    journal = Journal(clock=Clock(T0 + timedelta(minutes=1), timedelta(minutes=1)))
    host = BankHost(journal, HostConfig(seed=1), lambda: T0)
    sale = host.process(Request(Op.SALE, 1000, transaction_id="1"), DEFAULT_CARD)
    host.process(Request(Op.SALE, 500, transaction_id="2"), Card("5432543254325430"))
    host.process(Request(Op.REFUND, 400, transaction_id="3", rrn=sale.rrn), None)
    done = journal.ecr.begin(Request(Op.SALE, 1000, transaction_id="1"), "pos-1")
    journal.ecr.sent(done)
    journal.ecr.finish(done, Result(
        Op.SALE, Status.APPROVED, "00", "ОДОБРЕНО", amount=1000, currency=643, rrn=sale.rrn,
        auth_code=sale.auth_code, masked_pan=sale.masked_pan, terminal_id="00344224",
    ))
    lost = journal.ecr.begin(Request(Op.SALE, 700, transaction_id="2", terminal_id="00344224"), "pos-1")
    journal.ecr.sent(lost)
    journal.ecr.unknown(lost, "timeout")
    journal.sale = sale  # type: ignore[attr-defined]
    yield journal
    journal.close()


def expected_lines(j: Journal) -> list[str]:
    s = j.sale  # type: ignore[attr-defined]
    refund = [r for r in j.ledger.operations() if r.operation is Op.REFUND][0]
    return [
        f"terminal,sale,approved,1000,643,411111******1111,{s.rrn},{s.auth_code},00,00344224,1,"
        "2025-03-10T12:00:00,1,,",
        "terminal,sale,declined,500,643,543254******5430,,,116,00344224,1,2025-03-10T12:00:00,2,,",
        f"terminal,refund,approved,400,643,411111******1111,{refund.rrn},{refund.auth_code},00,00344224,1,"
        f"2025-03-10T12:00:00,3,{s.rrn},1",
        f"ecr,sale,approved,1000,643,411111******1111,{s.rrn},{s.auth_code},00,00344224,,2025-03-10T12:01:00,1,,",
        "ecr,sale,unknown,700,643,,,,,00344224,,2025-03-10T12:04:00,2,,",
    ]


def csv_text(j: Journal, **filters: object) -> tuple[int, list[str]]:
    out = io.StringIO(newline="")
    n = j.export.csv(out, **filters)  # type: ignore[arg-type]
    text = out.getvalue()
    assert text.endswith("\r\n")
    lines = text.split("\r\n")[:-1]
    assert lines[0] == HEADER
    return n, lines[1:]


def test_export_csv_exact(filled: Journal) -> None:
    assert ",".join(EXPORT_COLUMNS) == HEADER
    n, lines = csv_text(filled)
    assert n == 5 and lines == expected_lines(filled)


def test_export_filters(filled: Journal) -> None:
    every = expected_lines(filled)
    assert csv_text(filled, side="terminal") == (3, every[:3])
    assert csv_text(filled, side="ecr") == (2, every[3:])
    assert csv_text(filled, operation=Op.REFUND) == (1, [every[2]])
    assert csv_text(filled, status=Status.DECLINED) == (1, [every[1]])
    assert csv_text(filled, status=Status.APPROVED) == (3, [every[0], every[2], every[3]])
    assert csv_text(filled, since=T0 + timedelta(minutes=1)) == (2, every[3:])
    assert csv_text(filled, until=T0 + timedelta(minutes=1)) == (3, every[:3])  # until is exclusive
    window = {"since": T0 + timedelta(minutes=2), "until": T0 + timedelta(minutes=5)}
    assert csv_text(filled, **window) == (1, every[4:])
    assert csv_text(filled, side="ecr", operation=Op.SALE, status=Status.APPROVED) == (1, [every[3]])
    assert csv_text(filled, since=T0 + timedelta(days=1)) == (0, [])
    # an aware datetime is compared as UTC (the journal's naive times are taken as UTC here)
    assert csv_text(filled, since=(T0 + timedelta(minutes=1)).replace(tzinfo=timezone.utc))[0] == 2
    with pytest.raises(ValueError):
        filled.export.csv(io.StringIO(), side="bank")


def test_export_xml_has_the_same_rows(filled: Journal) -> None:
    out = io.StringIO()
    assert filled.export.xml(out) == 5
    text = out.getvalue()
    assert text.startswith('<?xml version="1.0" encoding="UTF-8"?>\n<registry count="5">')
    root = ET.fromstring(text.split("\n", 1)[1])
    assert root.tag == "registry" and root.get("count") == "5"
    rows = [[(child.tag, child.text or "") for child in item] for item in root]
    assert all(item.tag == "operation" for item in root)
    assert [[tag for tag, _ in row] for row in rows] == [list(EXPORT_COLUMNS)] * 5
    assert [",".join(v for _, v in row) for row in rows] == expected_lines(filled)
    filtered = io.StringIO()
    assert filled.export.xml(filtered, side="terminal", status=Status.DECLINED) == 1
    assert "<response_code>116</response_code>" in filtered.getvalue()


def test_export_of_an_empty_journal(journal: Journal) -> None:
    assert csv_text(journal) == (0, [])
    out = io.StringIO()
    assert journal.export.xml(out) == 0
    assert ET.fromstring(out.getvalue().split("\n", 1)[1]).get("count") == "0"


# --- no full card number anywhere ---------------------------------------------------------------
def test_no_full_pan_in_the_database_file_or_the_exports(tmp_path: Path) -> None:
    path = tmp_path / "both.sqlite"
    journal = Journal(path)
    config = HostConfig(card_limits={pan: Limits(daily_max=10**9) for pan in TEST_CARDS})
    host = BankHost(journal, config, lambda: T0)
    pans = [*TEST_CARDS, "2200701234567894", "4111111111111112"]
    stan = 0
    for pan in pans:
        for op in (Op.SALE, Op.PREAUTH):
            stan += 1
            d = host.process(Request(op, 1000, transaction_id=str(stan)), Card(pan))
            if d.approved:
                follow = Op.REFUND if op is Op.SALE else Op.COMPLETION
                stan += 1
                host.process(Request(follow, 500, transaction_id=str(stan), rrn=d.rrn), Card(pan))
        entry = journal.ecr.begin(Request(Op.SALE, 1000), "pos-1")
        journal.ecr.finish(entry, Result(Op.SALE, Status.APPROVED, masked_pan=pan))  # careless caller
    host.config.fault = "answer_lost"
    host.process(Request(Op.SALE, 1000, transaction_id=str(stan + 1)), Card(pans[0]))
    host.process(Request(Op.SETTLEMENT, transaction_id=str(stan + 2)), None)

    csv_out, xml_out = io.StringIO(), io.StringIO()
    assert journal.export.csv(csv_out) == journal.export.xml(xml_out) > 2 * len(pans)
    exports = csv_out.getvalue() + xml_out.getvalue()
    # read the files while the journal is still open: the WAL may hold what is not checkpointed yet
    blobs = [p.read_bytes() for p in tmp_path.iterdir()]
    journal.close()
    blobs += [p.read_bytes() for p in tmp_path.iterdir()]
    assert any(b"411111******1111" in blob for blob in blobs)
    for pan in pans:
        assert pan not in exports
        for blob in blobs:
            assert pan.encode() not in blob
            assert pan.encode("utf-16-le") not in blob


def test_the_last_transaction_number_comes_from_an_index(tmp_path):
    """EcrLog.last_transaction_id runs before every operation: SQLite answers it from the ecr_stan
    index (schema 3), not by reading every entry."""
    journal = Journal(str(tmp_path / "j.sqlite3"))
    try:
        for stan in ("7", "12", "9"):
            journal.ecr.begin(Request(Operation.SALE, amount=100, transaction_id=stan), "T1")
        journal.ecr.begin(Request(Operation.SALE, amount=100, transaction_id="99"), "T2")
        assert journal.ecr.last_transaction_id("T1") == 12 and journal.ecr.last_transaction_id("T3") is None
        plan = " ".join(str(row[-1]) for row in journal.storage.query(
            "EXPLAIN QUERY PLAN SELECT MAX(CAST(transaction_id AS INTEGER)) FROM ecr_entries WHERE terminal = ? "
            "AND length(transaction_id) <= 18", ("T1",)))
        assert "ecr_stan" in plan and "SCAN" not in plan, plan
    finally:
        journal.close()
