"""The journal fault matrix: whatever is wrong with the ECR journal's file, an operation command
ends with exit code 2 and ONE line on stderr naming the file, no traceback, and nothing is run
unrecorded: the terminal's port (a real TCP listener that records every connection and every byte)
is never even connected to. A damaged journal is never replaced; ``posbridge journal check`` tells a
sound journal from a damaged one; ``posbridge export`` reads a read-only journal.

Cases that need another process (a write lock held elsewhere, another user, a file size limit) run
one; the rest drive ``posbridge.cli.main`` in-process.
"""

from __future__ import annotations

import hashlib
import os
import resource
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pytest

from posbridge.cli import main
from posbridge.journal import Journal, Storage
from posbridge.model import Operation, Request, Result, Status

ENTRIES = 300  # enough ECR entries for a journal of ~30 pages: interior b-tree pages, several leaves
NOBODY = 65534
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
Layout = tuple[int, int, dict[str, int]]  # page size, page count, root page by table or index name



# --- a terminal port that tells on the command --------------------------------------------------------------
@dataclass
class Port:
    """A plain TCP listener on 127.0.0.1: records each connection and the bytes it got, then hangs up."""

    sock: socket.socket
    connections: int = 0
    received: list[bytes] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    @property
    def url(self) -> str:
        return f"tcp://127.0.0.1:{self.sock.getsockname()[1]}"

    def serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.connections += 1
            conn.settimeout(0.3)
            try:
                data = conn.recv(4096)
            except OSError:
                data = b""
            self.received.append(data)
            conn.close()


@pytest.fixture
def port() -> Iterator[Port]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.settimeout(0.05)
    listener = Port(sock)
    thread = threading.Thread(target=listener.serve, daemon=True)
    thread.start()
    yield listener
    listener.stop.set()
    thread.join(5)
    sock.close()


def untouched(port: Port) -> list[str]:
    """What the terminal saw of a command that must not reach it (empty: nothing)."""
    requests = [data for data in port.received if data]
    if requests:
        return [f"the terminal saw a request although the journal could not record it: {requests[0][:40]!r}"]
    if port.connections:
        return [f"the command connected to the terminal ({port.connections}x, sent nothing) before it found "
                "that the journal cannot be used"]
    return []


# --- real journals ---------------------------------------------------------------------------------------------
def write_journal(path: Path, entries: int = ENTRIES) -> Journal:
    """A journal as the ECR client writes it: ``entries`` sales, journaled and finished. Left open."""
    journal = Journal(path, clock=lambda: datetime(2026, 11, 22, 12, 0))
    for i in range(entries):
        entry = journal.ecr.begin(Request(Operation.SALE, 100 + i, transaction_id=str(1000 + i)),
                                  "tcp://127.0.0.1:1", port="tcp://127.0.0.1:1", owner="host:1:1")
        journal.ecr.sent(entry)
        journal.ecr.finish(entry, Result(Operation.SALE, Status.APPROVED, "00", amount=100 + i, currency=643,
                                         rrn=f"6123456789{i % 100:02d}", masked_pan="411111******1111"))
    return journal


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One sound journal (closed: its WAL checkpointed into the file), copied by each case."""
    path = tmp_path_factory.mktemp("pristine") / "ecr.sqlite3"
    write_journal(path).close()
    assert not Path(f"{path}-wal").exists()
    return path


@pytest.fixture(scope="module")
def shape(pristine: Path) -> Layout:
    """The pristine journal's page size, page count and root pages (read once, from the original)."""
    found = layout(pristine)
    assert found[1] >= 20, found  # interior pages and several leaves: damage has somewhere to land
    return found


def layout(path: Path) -> Layout:
    """(page size, page count, root page by table or index name) of a sound journal."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        count = conn.execute("PRAGMA page_count").fetchone()[0]
        roots = dict(conn.execute("SELECT name, rootpage FROM sqlite_master WHERE rootpage > 0").fetchall())
    conn.close()
    return page_size, count, roots


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def copy_of(pristine: Path, folder: Path, name: str) -> Path:
    target = folder / name
    shutil.copyfile(pristine, target)
    return target


def corrupt_header(path: Path, shape: Layout) -> None:
    data = bytearray(path.read_bytes())
    data[:100] = bytes((i * 37 + 11) % 256 for i in range(100))  # fixed "random" bytes: reproducible
    path.write_bytes(bytes(data))


def truncate(path: Path, shape: Layout, where: str) -> None:
    page_size, count, _ = shape
    cut = (count // 2) * page_size + page_size // 2 if where == "middle" else (count - 1) * page_size + page_size // 2
    with open(path, "r+b") as fp:
        fp.truncate(cut)


def zero_page(path: Path, shape: Layout, which: str) -> int:
    page_size, count, roots = shape
    page = count if which == "last" else roots[which]
    with open(path, "r+b") as fp:
        fp.seek((page - 1) * page_size)
        fp.write(bytes(page_size))
    return page


# --- running the command ---------------------------------------------------------------------------------------
def sale_args(journal: Path | str, port: Port) -> list[str]:
    return ["sale", "1.00", "--port", port.url, "--journal", str(journal), "--timeout", "3", "--lock-wait", "2"]


def one_line_naming(stderr: str, journal: Path | str, *words: str) -> list[str]:
    """Problems with a command's stderr: it must be one line naming the journal (and ``words``)."""
    if "Traceback" in stderr:
        return [f"a traceback on stderr: {stderr[-300:]}"]
    lines = [line for line in stderr.splitlines() if line.strip()]
    if len(lines) != 1:
        return [f"expected one line on stderr, got {len(lines)}: {stderr[-300:]!r}"]
    problems = [] if str(journal) in lines[0] else [f"the line does not name the journal file: {lines[0]}"]
    return problems + [f"{word!r} not in: {lines[0]}" for word in words if word not in lines[0].lower()]


def verdict(code: int, stderr: str, port: Port, journal: Path | str, *words: str) -> list[str]:
    """Everything wrong with a failed operation command: exit code, stderr, the terminal."""
    problems = [] if code == 2 else [f"exit code {code}, not 2"]
    return problems + untouched(port) + one_line_naming(stderr, journal, *words)


def check_report(capsys: pytest.CaptureFixture[str], journal: Path) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["journal", "check", str(journal)])
    return code, capsys.readouterr().out


# --- damaged files ---------------------------------------------------------------------------------------------
DAMAGE = [
    ("corrupt_header", corrupt_header),
    ("truncated_mid_file", lambda p, shape: truncate(p, shape, "middle")),
    ("truncated_in_last_page", lambda p, shape: truncate(p, shape, "last")),
    ("zeroed_meta_root", lambda p, shape: zero_page(p, shape, "meta")),  # a table the ECR side never reads
    ("zeroed_ecr_entries_root", lambda p, shape: zero_page(p, shape, "ecr_entries")),
    ("zeroed_ecr_open_index_root", lambda p, shape: zero_page(p, shape, "ecr_open")),
    ("zeroed_last_page", lambda p, shape: zero_page(p, shape, "last")),
]


@pytest.mark.parametrize("damage", [d[1] for d in DAMAGE], ids=[d[0] for d in DAMAGE])
def test_a_damaged_journal_stops_the_command_before_the_terminal_and_is_kept_as_it_is(
        damage, pristine: Path, shape: Layout, tmp_path: Path, port: Port,
        capsys: pytest.CaptureFixture[str]) -> None:
    journal = copy_of(pristine, tmp_path, "ecr.sqlite3")
    damage(journal, shape)
    before = digest(journal)
    # The damage is real: `posbridge journal check` (SQLite's full integrity check) says so, on a copy.
    checked = copy_of(journal, tmp_path, "checked.sqlite3")
    code, report = check_report(capsys, checked)
    assert code == 2 and str(checked) in report and "sound" not in report.split(), report
    assert "DAMAGED" in report or "NOT USABLE" in report, report
    assert digest(checked) == before, "journal check changed the damaged file"

    code = main(sale_args(journal, port))
    err = capsys.readouterr().err
    problems = verdict(code, err, port, journal, "damaged")
    if not journal.is_file() or digest(journal) != before:
        problems.append("the damaged journal was written to (its bytes changed)")
    assert not problems, "\n".join(problems)


def test_journal_check_says_sound_on_a_good_journal(pristine: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    journal = copy_of(pristine, tmp_path, "ecr.sqlite3")
    code, report = check_report(capsys, journal)
    assert code == 0, report
    assert report.splitlines()[-1].strip() == "sound" and f"{ENTRIES} done" in report


def test_a_sound_journal_runs_the_sale_it_is_asked_for(pristine: Path, tmp_path: Path, port: Port,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """The control case: with a sound journal the same command does reach the terminal (so the
    listener above would have seen it), and the attempt is journaled."""
    journal = copy_of(pristine, tmp_path, "ecr.sqlite3")
    code = main(sale_args(journal, port))
    capsys.readouterr()
    assert code == 2 and port.connections == 1 and port.received and port.received[0]
    with Journal(journal, readonly=True) as reader:
        assert [e.state for e in reader.ecr.unresolved()] == ["unknown"]


# --- not a file, no folder ------------------------------------------------------------------------------------
def test_a_directory_as_the_journal(tmp_path: Path, port: Port, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "journal-folder"
    folder.mkdir()
    code = main(sale_args(folder, port))
    err = capsys.readouterr().err
    problems = verdict(code, err, port, folder)
    assert not problems, "\n".join(problems)
    assert folder.is_dir() and list(folder.iterdir()) == []
    code, report = check_report(capsys, folder)
    assert code == 2 and "sound" not in report.split()


def test_a_missing_folder(tmp_path: Path, port: Port, capsys: pytest.CaptureFixture[str]) -> None:
    journal = tmp_path / "no-such-folder" / "ecr.sqlite3"
    code = main(sale_args(journal, port))
    err = capsys.readouterr().err
    problems = verdict(code, err, port, journal)
    assert not problems, "\n".join(problems)
    assert not journal.parent.exists(), "a named journal's folder must not be created"


# --- locked by another process ---------------------------------------------------------------------------------
HOLD_WRITE_LOCK = r"""
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
conn.execute("INSERT INTO meta (key, value) VALUES ('held', 'by another process')")
print("holding", flush=True)
time.sleep(60)
"""


def test_a_journal_locked_by_another_process(pristine: Path, tmp_path: Path, port: Port,
                                             capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    journal = copy_of(pristine, tmp_path, "ecr.sqlite3")
    monkeypatch.setattr(Storage, "BUSY_TIMEOUT", 0.3)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_WRITE_LOCK, str(journal)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        started = time.monotonic()
        code = main(sale_args(journal, port))
        elapsed = time.monotonic() - started
    finally:
        holder.kill()
        holder.wait(10)
    err = capsys.readouterr().err
    problems = verdict(code, err, port, journal, "locked")
    assert not problems, "\n".join(problems)
    assert elapsed < 3.0, f"waited {elapsed:.1f} s for a busy timeout of 0.3 s"


# --- another user: read-only file, read-only folder, export of a read-only journal ------------------------------
# The child imports what it needs, then drops to nobody (uid/gid 65534): root ignores permission bits,
# and this interpreter lives under /root, which nobody may not enter, so the drop cannot happen before
# exec (preexec_fn). Not root: no drop, the permission bits apply to the user as they are.
AS_NOBODY = r"""
import os, sys
import asyncio, csv, json, logging, socket, sqlite3, encodings.idna, encodings.cp1251, xml.etree.ElementTree
import posbridge.devices, posbridge.devices.tcp, posbridge.cli, posbridge.ecr.client, posbridge.journal, posbridge.cli.formatting
from posbridge import protocols
for name in protocols.names():
    protocols.get(name)
from posbridge.cli.main import build_parser
build_parser()  # whatever building the parser imports, imported while root can read it
if sys.argv[1] == "drop":
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)
    assert os.geteuid() == 65534
sys.exit(posbridge.cli.main(sys.argv[2:]))
"""


@pytest.fixture
def shared_folder() -> Iterator[Path]:
    """A folder nobody can reach (pytest's tmp_path is root's own, mode 700)."""
    folder = Path(tempfile.mkdtemp(prefix="posbridge-faults-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        for path in [folder, *folder.rglob("*")]:
            if path.is_dir():
                path.chmod(0o755)
        shutil.rmtree(folder, ignore_errors=True)


def as_other_user(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    locks = folder / "locks"
    locks.mkdir(exist_ok=True)
    locks.chmod(0o1777)
    env = {**os.environ, "POSBRIDGE_LOCK_DIR": str(locks), "HOME": str(folder), "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([sys.executable, "-c", AS_NOBODY, "drop" if IS_ROOT else "stay", *args],
                          capture_output=True, text=True, cwd=folder, env=env, timeout=60)


def _own(path: Path, writable_by_other: bool) -> None:
    if IS_ROOT and writable_by_other:
        os.chown(path, NOBODY, NOBODY)


def test_a_read_only_journal_file(pristine: Path, shared_folder: Path, port: Port) -> None:
    folder = shared_folder / "writable-folder"
    folder.mkdir()
    _own(folder, writable_by_other=True)  # the folder is the user's: only the file is read-only
    journal = copy_of(pristine, folder, "ecr.sqlite3")
    journal.chmod(0o444)
    before = digest(journal)
    run = as_other_user(shared_folder, *sale_args(journal, port))
    problems = verdict(run.returncode, run.stderr, port, journal, "read only")
    if digest(journal) != before:
        problems.append("the journal's bytes changed")
    assert not problems, "\n".join(problems)


def test_a_read_only_journal_folder(pristine: Path, shared_folder: Path, port: Port) -> None:
    folder = shared_folder / "read-only-folder"
    folder.mkdir()
    journal = copy_of(pristine, folder, "ecr.sqlite3")
    journal.chmod(0o666)  # the file could be written; its -wal and -shm beside it cannot be created
    folder.chmod(0o555)
    run = as_other_user(shared_folder, *sale_args(journal, port))
    problems = verdict(run.returncode, run.stderr, port, journal, "read only")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("folder_writable", [False, True], ids=["read-only-folder", "writable-folder"])
def test_export_reads_a_read_only_sound_journal(pristine: Path, shared_folder: Path, folder_writable: bool) -> None:
    folder = shared_folder / "archive"
    folder.mkdir()
    journal = copy_of(pristine, folder, "ecr.sqlite3")
    journal.chmod(0o444)
    if folder_writable:
        _own(folder, writable_by_other=True)
    else:
        folder.chmod(0o555)
    before = digest(journal)
    run = as_other_user(shared_folder, "export", "--journal", str(journal), "--side", "ecr")
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    rows = run.stdout.strip().splitlines()
    assert rows[0].startswith("side,kind,outcome,amount_minor_units") and len(rows) == 1 + ENTRIES
    assert digest(journal) == before
    check = as_other_user(shared_folder, "journal", "check", str(journal))
    assert check.returncode == 0 and check.stdout.splitlines()[-1].strip() == "sound", check.stdout + check.stderr


# --- full disk (a file size limit) -----------------------------------------------------------------------------
def _limited(limit: int):  # type: ignore[no-untyped-def]
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def run_limited(journal: Path, port: Port, limit: int, lock_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "POSBRIDGE_LOCK_DIR": str(lock_dir), "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([sys.executable, "-m", "posbridge", *sale_args(journal, port)], capture_output=True,
                          text=True, preexec_fn=_limited(limit), env=env, timeout=60)


def test_a_full_disk_when_the_journal_must_grow(tmp_path: Path, port: Port, private_lock_dir: Path) -> None:
    """A journal left by a process that died before its checkpoint: its records are in the -wal file,
    which SQLite appends to. The limit sits just above that file's size, so the journal cannot take
    one more record (SQLITE_IOERR_WRITE, "full")."""
    source = write_journal(tmp_path / "source.sqlite3", entries=50)
    journal = tmp_path / "ecr.sqlite3"
    shutil.copyfile(tmp_path / "source.sqlite3", journal)  # the process "dies" here: nothing checkpointed
    shutil.copyfile(tmp_path / "source.sqlite3-wal", f"{journal}-wal")
    source.close()
    largest = max(journal.stat().st_size, Path(f"{journal}-wal").stat().st_size)
    run = run_limited(journal, port, largest + 1024, private_lock_dir)
    problems = verdict(run.returncode, run.stderr, port, journal, "full")
    assert not problems, "\n".join(problems)
    with Journal(journal, readonly=True) as reader:  # nothing was lost either
        assert len(reader.export.rows(side="ecr")) == 50 and reader.ecr.unresolved() == []


def test_a_full_disk_with_no_room_for_the_journals_shared_memory_file(
        pristine: Path, tmp_path: Path, port: Port, private_lock_dir: Path) -> None:
    """SQLite's -shm file needs 32 KiB beside the journal: a limit below that (the journal itself,
    larger, is only read) fails at opening (SQLITE_IOERR_SHMSIZE)."""
    journal = copy_of(pristine, tmp_path, "ecr.sqlite3")
    before = digest(journal)
    run = run_limited(journal, port, 16 * 1024, private_lock_dir)
    problems = verdict(run.returncode, run.stderr, port, journal, "full")
    assert not problems, "\n".join(problems)
    assert digest(journal) == before
