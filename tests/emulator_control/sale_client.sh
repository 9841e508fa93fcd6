#!/usr/bin/env bash
# A cash register's CI job without Python: tell a running `posbridge emulate --control ...` to
# decline the next sale with code 05 (curl), send an INPAS SA sale frame of 10.05 RUB built with
# printf over bash's /dev/tcp, and print the terminal's answer bytes in hex on stdout.
# Usage: sale_client.sh TERMINAL_PORT CONTROL_URL
set -euo pipefail
port=$1 control=$2

curl -sS --fail-with-body -X POST "$control/rules" -H 'Content-Type: application/json' \
     -d '{"operation": "sale", "code": "05", "text": "OTKAZ", "once": true}' >&2

# STX, length, tag 0 amount "1005", tag 4 currency "643", tag 21 date-time, tag 25 operation 1 (sale),
# tag 26 STAN, tag 89 client id, CRC: captured once from posbridge's own ECR and written here by hand.
frame='\x02\x47\x00\x00\x04\x00\x31\x30\x30\x35\x04\x03\x00\x36\x34\x33\x15\x0e\x00\x32\x30\x32\x36\x31\x31'
frame+='\x32\x32\x30\x39\x31\x35\x30\x30\x19\x01\x00\x31\x1a\x09\x00\x35\x39\x36\x34\x39\x33\x30\x30\x30\x59'
frame+='\x16\x00\x50\x4f\x53\x42\x52\x49\x44\x47\x45\x3b\x30\x2e\x31\x2e\x30\x3b\x53\x41\x3a\x3b\x32\x3b\x6c\xb8'

exec 3<>"/dev/tcp/127.0.0.1/$port"
printf "$frame" >&3
# The terminal answers ACK, then its result frame; acknowledge it (ACK, then EOT) after a moment.
answer=$(mktemp)
timeout 3 cat <&3 >"$answer" &
reader=$!
sleep 1.5
printf '\x06\x04' >&3
wait "$reader" || true
exec 3>&-
od -An -v -tx1 "$answer" | tr -d ' \n'
rm -f "$answer"
