"""An outside cash register: only pyserial and hand-built INPAS SA frames, nothing of posbridge.

usage: outside_ecr.py PORT AMOUNT_MINOR STAN   -> prints the final response's fields as JSON
"""

import json
import sys

import serial

STX, SOH, EOT, ACK, NAK = 0x02, 0x01, 0x04, 0x06, 0x15


def crc16_buypass(data: bytes) -> int:
    """CRC-16/BUYPASS bit by bit (poly 0x8005, init 0, no reflection): independent of posbridge."""
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x8005) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


def build(fields: dict) -> bytes:
    body = b"".join(bytes([tag]) + len(v).to_bytes(2, "little") + v for tag, v in sorted(fields.items()))
    head = bytes([STX]) + len(body).to_bytes(2, "little")
    return head + body + crc16_buypass(head + body).to_bytes(2, "big")


def read_exact(port: serial.Serial, n: int) -> bytes:
    data = port.read(n)
    if len(data) != n:
        raise SystemExit(f"timeout: wanted {n} bytes, got {data.hex()}")
    return data


def read_message(port: serial.Serial) -> dict:
    body = b""
    while True:
        start = read_exact(port, 1)[0]
        if start not in (STX, SOH):
            continue  # ACKs and noise between frames
        length = read_exact(port, 2)
        chunk = read_exact(port, int.from_bytes(length, "little"))
        crc = read_exact(port, 2)
        if crc16_buypass(bytes([start]) + length + chunk) != int.from_bytes(crc, "big"):
            port.write(bytes([NAK]))
            continue
        port.write(bytes([ACK]))
        if start == STX:
            body = chunk
            break
        hlen = int.from_bytes(chunk[:2], "little")
        header, data = chunk[2:2 + hlen], chunk[2 + hlen:]
        body += data
        if header.endswith(b"\x02\x01\x000"):  # part number "0": the final part
            break
    fields, i = {}, 0
    while i < len(body):
        tag, n = body[i], int.from_bytes(body[i + 1:i + 3], "little")
        fields[str(tag)] = body[i + 3:i + 3 + n].decode("cp1251")
        i += 3 + n
    return fields


def main() -> None:
    port_name, amount, stan = sys.argv[1], sys.argv[2], sys.argv[3]
    port = serial.Serial(port_name, 115200, timeout=10)
    port.reset_input_buffer()
    port.write(build({0: amount.encode(), 4: b"643", 25: b"1", 26: stan.encode(), 27: b"00344224"}))
    if read_exact(port, 1)[0] != ACK:
        raise SystemExit("request not acknowledged")
    while True:
        fields = read_message(port)
        if fields.get("25") != "21":  # WAIT: keep waiting
            break
    port.write(bytes([EOT]))
    port.close()
    print(json.dumps(fields, ensure_ascii=False))


if __name__ == "__main__":
    main()
