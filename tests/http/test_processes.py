"""``posbridge serve`` as a process in front of ``posbridge emulate`` on a pty, driven by curl (a
client that is not Python): every acquiring operation through both front doors, settlement totals
equal to the operations; SIGKILL of the service during a slow payment and a restart that tells the
truth; the service as the terminal's one owner; refusing an open address without authentication."""

from __future__ import annotations

import fcntl
import json
import os
import select
import signal
import subprocess
import sys
import termios
import time

import pytest

from tests.http.processes import curl, poll, self_signed_certificate, start_emulator, start_serve, stop


@pytest.mark.timeout(120)
def test_curl_runs_every_operation_through_serve_and_settlement_matches(tmp_path):
    link = tmp_path / "ttyPOS"
    emulator = start_emulator(link)
    serve = None
    try:
        serve, base = start_serve(tmp_path / "ecr.sqlite3", terminal=f"kassa1=serial://{link}")
        pay = f"{base}/v1/terminals/kassa1"
        status, c1 = curl("POST", f"{pay}/Pay", {"command_id": "c1", "amount": 15000, "receipt_number": "7"})
        assert status == 200 and c1["status"] == "approved", c1
        status, again = curl("POST", f"{pay}/Pay", {"command_id": "c1", "amount": 15000, "receipt_number": "7"})
        assert status == 200 and again == c1  # the first outcome; nothing ran
        _, c2 = curl("POST", f"{pay}/ReturnPayment", {"command_id": "c2", "amount": 5000,
                                                      "universal_id": c1["universal_id"]})
        assert c2["status"] == "approved", c2
        _, c3 = curl("POST", f"{pay}/Pay", {"command_id": "c3", "amount": 10000})
        _, c4 = curl("POST", f"{pay}/CancelPayment", {"command_id": "c4", "amount": 10000, "rrn": c3["rrn"],
                                                      "auth_code": c3["auth_code"]})
        assert c4["status"] == "approved", c4
        _, c5 = curl("POST", f"{pay}/Authorisation", {"command_id": "c5", "amount": 30000})
        _, c6 = curl("POST", f"{pay}/AuthConfirmation", {"command_id": "c6", "amount": 20000,
                                                         "universal_id": c5["universal_id"]})
        assert c5["status"] == c6["status"] == "approved", (c5, c6)

        execute = f"{base}/Execute"
        _, k1 = curl("POST", execute, {"Command": "PayByPaymentCard", "IdCommand": "k1", "Amount": 12.34})
        assert k1["Status"] == 0, k1
        _, k1_again = curl("POST", execute, {"Command": "PayByPaymentCard", "IdCommand": "k1", "Amount": 12.34})
        assert k1_again == k1
        _, k2 = curl("POST", execute, {"Command": "PayByPaymentCard", "IdCommand": "k2", "Amount": 56.78,
                                       "Timeout": 1})
        assert k2["Status"] in (0, 1, 4)
        deadline = time.monotonic() + 30
        while True:
            _, k2 = curl("POST", execute, {"Command": "GetRezult", "IdCommand": "k2"})
            if k2["Status"] not in (1, 4) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert k2["Status"] == 0 and k2["Rezult"]["Amount"] == 56.78, k2
        _, k3 = curl("POST", execute, {"Command": "ReturnPaymentByPaymentCard", "IdCommand": "k3", "Amount": 2.34,
                                       "UniversalID": k1["UniversalID"]})
        assert k3["Status"] == 0, k3

        # One owner: a second program on the same terminal is told who holds it.
        other = subprocess.run([sys.executable, "-m", "posbridge", "sale", "1.00", "--port", f"serial://{link}",
                                "--lock-wait", "1", "--journal", str(tmp_path / "other.sqlite3")],
                               capture_output=True, text=True, timeout=30)
        assert other.returncode == 2 and "busy" in other.stderr, other.stderr

        _, settlement = curl("POST", f"{pay}/Settlement", {"command_id": "day1"})
        totals = settlement["totals"]
        # Sales: c1, the completion c6, k1, k2 (c3 was cancelled); refunds: c2, k3; cancels: c4.
        assert (totals["sale_count"], totals["sale_amount"]) == (4, 15000 + 20000 + 1234 + 5678), totals
        assert (totals["refund_count"], totals["refund_amount"]) == (2, 5000 + 234), totals
        assert (totals["cancel_count"], totals["cancel_amount"]) == (1, 10000), totals
        _, commands = curl("GET", f"{base}/v1/commands/k2")
        assert commands["status"] == "approved" and commands["origin"] == "kkm"
    finally:
        output = stop(serve) if serve is not None else ""
        stop(emulator)
    assert serve is not None and serve.returncode == 0 and "posbridge serve stopped" in output  # SIGTERM: clean
    lines = [json.loads(line) for line in (tmp_path / "serve.log").read_text(encoding="utf-8").splitlines()]
    logged = [(line["command_id"], line["operation"], line["status"]) for line in lines]
    assert logged == [("c1", "Pay", "approved"), ("c2", "ReturnPayment", "approved"), ("c3", "Pay", "approved"),
                      ("c4", "CancelPayment", "approved"), ("c5", "Authorisation", "approved"),
                      ("c6", "AuthConfirmation", "approved"), ("k1", "Pay", "approved"), ("k2", "Pay", "approved"),
                      ("k3", "ReturnPayment", "approved"), ("day1", "Settlement", "approved")]
    assert "4111111111111111" not in output + (tmp_path / "serve.log").read_text(encoding="utf-8")


@pytest.mark.timeout(120)
def test_sigkill_during_a_slow_pay_then_restart_tells_the_truth_and_settlement_agrees(tmp_path):
    scenario = tmp_path / "slow.toml"
    scenario.write_text("[host]\nlatency = 2.5\n", encoding="utf-8")
    link = tmp_path / "ttyPOS"
    journal = tmp_path / "ecr.sqlite3"
    emulator = start_emulator(link, "--scenario", str(scenario))
    serve = restarted = None
    try:
        serve, base = start_serve(journal, terminal=f"kassa1=serial://{link}")
        status, body = curl("POST", f"{base}/v1/terminals/kassa1/Pay", {"command_id": "slow1", "amount": 4242,
                                                                      "wait": 0})
        assert status == 202 and body["status"] == "running"
        body = poll(f"{base}/v1/commands/slow1", lambda b: b.get("journal_state") == "sent", timeout=10, interval=0.05)
        assert body["journal_state"] == "sent" and body["status"] == "running"  # on the line, host thinking
        time.sleep(0.5)
        stop(serve, signal.SIGKILL)
        restarted, base = start_serve(journal, terminal=f"kassa1=serial://{link}")
        body = poll(f"{base}/v1/commands/slow1", lambda b: b["status"] not in ("unknown", "running"), timeout=60,
                    interval=0.2)
        assert body["status"] == "error", body
        assert body["recovery"]["outcome"] in ("reversed", "not_charged", "reversal_approved"), body
        assert body["journal_state"] == "resolved" and "nothing" in body["error"]
        _, terminals = curl("GET", f"{base}/v1/terminals")
        assert terminals["terminals"][0]["unresolved"] == []
        status, again = curl("POST", f"{base}/v1/terminals/kassa1/Pay", {"command_id": "slow1", "amount": 4242})
        assert status == 200 and again["status"] == "error"  # the retry runs nothing: it gets the truth
        _, settlement = curl("POST", f"{base}/v1/terminals/kassa1/Settlement", {"command_id": "day"})
        assert settlement["status"] == "approved"
        assert (settlement["totals"]["sale_count"], settlement["totals"]["sale_amount"]) == (0, 0)
    finally:
        if serve is not None:
            stop(serve, signal.SIGKILL)
        if restarted is not None:
            stop(restarted)
        stop(emulator)


def test_serve_refuses_an_open_address_without_authentication(tmp_path):
    done = subprocess.run([sys.executable, "-m", "posbridge", "serve", "--listen", "0.0.0.0:0", "--terminal",
                           "kassa1=serial:///dev/null", "--journal", str(tmp_path / "ecr.sqlite3")],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "needs authentication" in done.stderr, done.stderr
    assert not (tmp_path / "ecr.sqlite3").exists()  # refused before anything was opened


@pytest.mark.timeout(90)
def test_a_second_serve_on_the_same_journal_or_terminal_is_refused_and_the_first_keeps_the_truth(tmp_path):
    # Before: a second serve on the same journal started, called the first one's queued payment
    # "error: the service stopped before this command finished" (the first approved it), and took
    # commands it could only fail after a minute; on another journal it accepted commands for a
    # terminal it could never own.
    scenario = tmp_path / "slow.toml"
    scenario.write_text("[host]\nlatency = 1.0\n", encoding="utf-8")
    link = tmp_path / "ttyPOS"
    journal = tmp_path / "ecr.sqlite3"
    emulator = start_emulator(link, "--scenario", str(scenario))
    serve = None
    try:
        serve, base = start_serve(journal, terminal=f"kassa1=serial://{link}")
        for command_id in ("p1", "p2"):
            status, _ = curl("POST", f"{base}/v1/terminals/kassa1/Pay", {"command_id": command_id, "amount": 100,
                                                                        "wait": 0})
            assert status == 202
        same_journal = subprocess.run([sys.executable, "-m", "posbridge", "serve", "--listen", "127.0.0.1:0",
                                       "--journal", str(journal), "--terminal", f"kassa1=serial://{link}"],
                                      capture_output=True, text=True, timeout=30)
        assert same_journal.returncode == 2, same_journal.stderr
        assert "another posbridge serve" in same_journal.stderr and f"pid {serve.pid}" in same_journal.stderr
        config = tmp_path / "other.toml"
        config.write_text(f'journal = "{tmp_path / "other.sqlite3"}"\n[[terminals]]\nname = "kassa1"\n'
                          f'port = "serial://{link}"\nlock_wait = 1\n', encoding="utf-8")
        same_terminal = subprocess.run([sys.executable, "-m", "posbridge", "serve", "--listen", "127.0.0.1:0",
                                        "--config", str(config)], capture_output=True, text=True, timeout=30)
        assert same_terminal.returncode == 2 and "terminal busy" in same_terminal.stderr, same_terminal.stderr
        assert same_terminal.stderr.strip().count("\n") == 0  # one line, no traceback
        for command_id in ("p1", "p2"):
            body = poll(f"{base}/v1/commands/{command_id}", lambda b: b["status"] != "running", timeout=20)
            assert body["status"] == "approved" and body["error"] is None, body
    finally:
        if serve is not None:
            stop(serve)
        stop(emulator)


@pytest.mark.timeout(90)
def test_serve_over_tls_takes_a_payment_from_curl_and_refuses_plain_http(tmp_path):
    cert, key = self_signed_certificate(tmp_path)
    link = tmp_path / "ttyPOS"
    emulator = start_emulator(link)
    serve = None
    try:
        serve, base = start_serve(tmp_path / "ecr.sqlite3", "--tls-cert", str(cert), "--tls-key", str(key),
                                  terminal=f"kassa1=serial://{link}")
        assert base.startswith("https://127.0.0.1:")
        status, paid = curl("POST", f"{base}/v1/terminals/kassa1/Pay", {"command_id": "t1", "amount": 100},
                            cacert=cert)
        assert (status, paid["status"]) == (200, "approved"), paid
        _, kkm = curl("POST", f"{base}/Execute", {"Command": "GetRezult", "IdCommand": "t1"}, cacert=cert)
        assert kkm["Status"] == 0 and kkm["RRNCode"] == paid["rrn"]
        plain = subprocess.run(["curl", "-sS", "--max-time", "10", base.replace("https://", "http://") + "/health"],
                               capture_output=True, text=True, timeout=20)
        assert plain.returncode != 0 and plain.stdout == "", plain  # nothing answered in clear
        untrusted = subprocess.run(["curl", "-sS", "--max-time", "10", f"{base}/health"], capture_output=True,
                                   text=True, timeout=20)
        assert untrusted.returncode != 0 and "certificate" in untrusted.stderr.lower()
    finally:
        if serve is not None:
            stop(serve)
        stop(emulator)


def test_serve_with_a_certificate_it_cannot_use_is_one_line_and_opens_nothing(tmp_path):
    (tmp_path / "bad.crt").write_text("not a certificate\n")
    (tmp_path / "bad.key").write_text("not a key\n")
    done = subprocess.run([sys.executable, "-m", "posbridge", "serve", "--terminal", "kassa1=serial:///dev/null",
                           "--journal", str(tmp_path / "ecr.sqlite3"), "--tls-cert", str(tmp_path / "bad.crt"),
                           "--tls-key", str(tmp_path / "bad.key")], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().count("\n") == 0 and "cannot use the TLS certificate" in done.stderr, done.stderr
    assert not (tmp_path / "ecr.sqlite3").exists()


@pytest.mark.timeout(60)
def test_serve_with_an_encrypted_key_refuses_at_once_and_never_asks_for_a_passphrase(tmp_path):
    # OpenSSL's default is to prompt for the passphrase on the controlling terminal: a service
    # started from a shell (or under any tty) hung there before listening, saying nothing useful.
    cert, key = tmp_path / "serve.crt", tmp_path / "serve.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-passout", "pass:secret", "-keyout", str(key),
                    "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1"], check=True, capture_output=True,
                   timeout=60)
    assert "ENCRYPTED" in key.read_text()
    master, tty = os.openpty()

    def on_the_tty() -> None:  # in the child: the pty becomes its controlling terminal
        os.setsid()
        fcntl.ioctl(tty, termios.TIOCSCTTY, 0)

    serve = subprocess.Popen([sys.executable, "-m", "posbridge", "serve", "--terminal", "kassa1=serial:///dev/null",
                              "--journal", str(tmp_path / "ecr.sqlite3"), "--tls-cert", str(cert), "--tls-key",
                              str(key)], stdin=tty, stdout=tty, stderr=subprocess.PIPE, preexec_fn=on_the_tty)
    os.close(tty)
    try:
        _, stderr = serve.communicate(timeout=20)
        on_screen = b""
        while select.select([master], [], [], 0)[0]:
            try:
                on_screen += os.read(master, 4096)
            except OSError:
                break
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait()
        os.close(master)
    text = stderr.decode()
    assert serve.returncode == 2, text
    assert text.strip().count("\n") == 0 and "encrypted" in text and str(key) in text, text
    assert b"pass phrase" not in on_screen.lower() and b"pass phrase" not in stderr.lower()
    assert not (tmp_path / "ecr.sqlite3").exists()
