#!/usr/bin/env bash
# make demo-cluster: a throwaway PostgreSQL, two workers and a run across them, then gone.
#
# Starts PostgreSQL in a temporary directory (as the postgres user when run as root:
# PostgreSQL refuses root; loopback only, socket in its data directory), creates the
# schema, certifies a key per process with an operator key, starts two `tenure worker`s of
# pool "research" and runs examples/distributed/main.py. Everything it started is stopped
# and the directory removed on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."
TENURE="${TENURE:-.venv/bin/tenure}"
PY="${PY:-.venv/bin/python}"

bin_dir=""
if command -v initdb >/dev/null 2>&1; then
  bin_dir="$(dirname "$(readlink -f "$(command -v initdb)")")"
else
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [ -x "$d/initdb" ]; then bin_dir="$d"; break; fi
  done
fi
if [ -z "$bin_dir" ] || [ ! -x "$bin_dir/pg_ctl" ]; then
  echo "make demo-cluster needs PostgreSQL's server programs (initdb, pg_ctl): on Debian," >&2
  echo "  apt-get install postgresql   (or point PATH at any PostgreSQL 13+ bin directory)" >&2
  exit 1
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/tenure-cluster-XXXXXX")"
as_pg=()
if [ "$(id -u)" = 0 ]; then
  if ! id postgres >/dev/null 2>&1; then
    echo "running as root and there is no 'postgres' user to run the server as" >&2
    exit 1
  fi
  chown postgres "$work"
  as_pg=(runuser -u postgres --)
fi
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  "${as_pg[@]}" "$bin_dir/pg_ctl" stop -D "$work/data" -m fast >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

port="$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
"${as_pg[@]}" "$bin_dir/initdb" -D "$work/data" -U postgres --auth trust --no-sync >/dev/null
"${as_pg[@]}" "$bin_dir/pg_ctl" start -w -D "$work/data" -l "$work/server.log" \
  -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$work/data" >/dev/null
url="postgresql://postgres@127.0.0.1:$port/postgres"
echo "PostgreSQL on 127.0.0.1:$port (in $work)"

"$TENURE" db upgrade --backend "$url"
runs="$work/runs"
mkdir -p "$runs"
export TENURE_KEY_DIR="$work/keys/api"
"$TENURE" keys generate --dir "$work/keys/operator" >/dev/null
for who in api w1 w2; do
  "$TENURE" keys generate --dir "$work/keys/$who" >/dev/null
  "$TENURE" keys certify "$work/keys/$who/tenure.pub" --name "$who" \
    --by "$work/keys/operator/tenure.key" >/dev/null
done
for who in w1 w2; do
  TENURE_KEY_DIR="$work/keys/$who" "$TENURE" worker --backend "$url" \
    --agents examples/distributed/team.py --pool research --name "$who" \
    --evidence-dir "$work/$who" > "$work/$who.log" 2>&1 &
  pids+=($!)
done
for who in w1 w2; do
  for _ in $(seq 100); do grep -q "serving pool" "$work/$who.log" && break; sleep 0.1; done
  head -1 "$work/$who.log"
done
"$PY" examples/distributed/main.py "$url" "$runs" "$work/keys/operator/tenure.pub"
