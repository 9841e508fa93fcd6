#!/usr/bin/env bash
# A CI job for a cash register written in any language, against posbridge's virtual terminal:
#   examples/ci/register-job.sh COMMAND [ARGS...]
# starts `posbridge emulate` on a TCP port with its control API, waits until it listens, runs COMMAND
# (the register's tests) with POSBRIDGE_PORT / POSBRIDGE_CONTROL_URL in its environment, prints the
# terminal's batch, and stops the emulator. Its log, journal and capture stay for the CI artifacts.
# Settings (environment): POSBRIDGE_PROTOCOL (inpas), POSBRIDGE_PORT (7000), POSBRIDGE_CONTROL (7001),
# POSBRIDGE_SCENARIO (a scenario TOML file, optional), POSBRIDGE_OUT (directory for the artifacts, .).
set -euo pipefail
protocol=${POSBRIDGE_PROTOCOL:-inpas}
port=${POSBRIDGE_PORT:-7000}
control=${POSBRIDGE_CONTROL:-7001}
out=${POSBRIDGE_OUT:-.}
mkdir -p "$out"
scenario=()
if [[ -n "${POSBRIDGE_SCENARIO:-}" ]]; then scenario=(--scenario "$POSBRIDGE_SCENARIO"); fi

posbridge emulate --protocol "$protocol" --port "tcp-listen://127.0.0.1:$port" --control "127.0.0.1:$control" \
    --journal "$out/emulator.sqlite3" --record "$out/emulator-capture.jsonl" "${scenario[@]}" \
    >"$out/emulator.log" 2>&1 &
emulator=$!
trap 'kill "$emulator" 2>/dev/null; wait "$emulator" 2>/dev/null || true' EXIT

# Ready when the terminal says it listens (the control API starts first).
for _ in $(seq 200); do
    grep -q "listening on" "$out/emulator.log" && break
    kill -0 "$emulator" 2>/dev/null || { cat "$out/emulator.log" >&2; exit 1; }
    sleep 0.05
done
grep -q "listening on" "$out/emulator.log" || { echo "posbridge emulate did not start" >&2; exit 1; }

export POSBRIDGE_PORT=$port POSBRIDGE_CONTROL_URL="http://127.0.0.1:$control"
"$@"
echo "terminal batch: $(curl -sS --fail "$POSBRIDGE_CONTROL_URL/batch")"
