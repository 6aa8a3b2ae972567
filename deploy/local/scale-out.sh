#!/usr/bin/env bash
# The scale-out topology of docker-compose.yml without a container engine, from Debian packages
# (apt-get install haproxy pgbouncer) and this checkout:
#
#   client -> haproxy -> two gateway processes -> pgbouncer (transaction mode) -> PostgreSQL
#                                       \-> Redis (REDIS_URL)
#
# It runs in the foreground until SIGTERM or SIGINT, then stops what it started. Everything it
# writes goes to WORKDIR: configuration, the auth file, one log per process.
#
# Input (environment):
#   WORKDIR                       where its files go (created)
#   PG_HOST, PG_PORT, PG_DATABASE  the PostgreSQL that is pooled
#   PG_USER, PG_PASSWORD          the gateway's login role and its password
#   LB_PORT                       where haproxy listens (default 8080)
#   GATEWAY_PORTS                 the two gateways' ports (default 4001,4002)
#   PGBOUNCER_PORT                (default 6432)
#   PGBOUNCER_POOL_SIZE           server connections of the requests' pool (default 8)
#   LB_SOURCE                     the address haproxy connects to the gateways from, the one
#                                 PHIGATE_TRUSTED_PROXIES names (default 127.0.0.3)
#   REDIS_URL and every other PHIGATE_* setting are passed to the gateways as they are; this
#   script sets DATABASE_URL, PHIGATE_AUX_DATABASE_URL, PHIGATE_PREPARED_STATEMENTS,
#   PHIGATE_TRUSTED_PROXIES, PHIGATE_HOST and PHIGATE_PORT.
set -euo pipefail
cd "$(dirname "$0")/../.."

: "${WORKDIR:?WORKDIR: where this stack keeps its files}"
: "${PG_HOST:?PG_HOST: the PostgreSQL host}" "${PG_PORT:?PG_PORT: the PostgreSQL port}" "${PG_DATABASE:?PG_DATABASE: the database}"
: "${PG_USER:?PG_USER: the gateway login role}" "${PG_PASSWORD:?PG_PASSWORD: its password}"
LB_PORT=${LB_PORT:-8080}
GATEWAY_PORTS=${GATEWAY_PORTS:-4001,4002}
PGBOUNCER_PORT=${PGBOUNCER_PORT:-6432}
PGBOUNCER_POOL_SIZE=${PGBOUNCER_POOL_SIZE:-8}
LB_SOURCE=${LB_SOURCE:-127.0.0.3}
IFS=, read -r GW1 GW2 <<<"$GATEWAY_PORTS"

find_bin() { command -v "$1" 2>/dev/null || { [ -x "/usr/sbin/$1" ] && echo "/usr/sbin/$1"; } || { echo "scale-out: $1 is not installed (apt-get install $1)" >&2; exit 1; }; }
PGBOUNCER=$(find_bin pgbouncer)
HAPROXY=$(find_bin haproxy)

mkdir -p "$WORKDIR"
pids=()
stop() {
  trap - TERM INT EXIT
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait || true
}
trap stop TERM INT EXIT

# PgBouncer: one pool for requests, one of its own for the audit writer, key loads and search
# counts (PHIGATE_AUX_DATABASE_URL), so that requests holding every server connection never
# starve the audit commit they wait for. Debian's 1.18 keeps no prepared statements per client.
printf '"%s" "%s"\n' "$PG_USER" "$PG_PASSWORD" >"$WORKDIR/pgbouncer-users.txt"
cat >"$WORKDIR/pgbouncer.ini" <<INI
[databases]
phigate = host=$PG_HOST port=$PG_PORT dbname=$PG_DATABASE pool_size=$PGBOUNCER_POOL_SIZE
phigate_aux = host=$PG_HOST port=$PG_PORT dbname=$PG_DATABASE pool_size=4
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PGBOUNCER_PORT
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $WORKDIR/pgbouncer-users.txt
pool_mode = transaction
max_client_conn = 1000
ignore_startup_parameters = extra_float_digits
log_connections = 0
log_disconnections = 0
INI
as_user=()
# PgBouncer refuses to run as root.
if [ "$(id -u)" -eq 0 ]; then
  as_user=(-u nobody)
  chmod 755 "$WORKDIR"
  chmod 644 "$WORKDIR/pgbouncer.ini" "$WORKDIR/pgbouncer-users.txt"
fi
"$PGBOUNCER" "${as_user[@]}" "$WORKDIR/pgbouncer.ini" >"$WORKDIR/pgbouncer.log" 2>&1 &
pids+=($!)

# The gateways: only haproxy's address is a trusted proxy.
pooled() { echo "postgres://$PG_USER:$PG_PASSWORD@127.0.0.1:$PGBOUNCER_PORT/$1"; }
for n in 1 2; do
  port=$([ "$n" = 1 ] && echo "$GW1" || echo "$GW2")
  DATABASE_URL=$(pooled phigate) PHIGATE_AUX_DATABASE_URL=$(pooled phigate_aux) PHIGATE_PREPARED_STATEMENTS=off \
    PHIGATE_TRUSTED_PROXIES="$LB_SOURCE/32" PHIGATE_HOST=127.0.0.1 PHIGATE_PORT="$port" \
    node --import tsx src/main.ts >"$WORKDIR/gateway-$n.log" 2>&1 &
  pids+=($!)
done

# haproxy: round robin over the gateways that answer /readyz, X-Forwarded-For appended.
cat >"$WORKDIR/haproxy.cfg" <<CFG
global
  maxconn 2000
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  # /readyz asks the database, the key provider and the issuer: on a busy host that takes a while.
  timeout check 5s
  option forwardfor
frontend phigate
  bind 127.0.0.1:$LB_PORT
  default_backend gateways
backend gateways
  balance roundrobin
  option httpchk GET /readyz
  http-check expect status 200
  default-server check inter 1s fall 2 rise 1 source $LB_SOURCE
  server gw1 127.0.0.1:$GW1
  server gw2 127.0.0.1:$GW2
CFG
"$HAPROXY" -db -f "$WORKDIR/haproxy.cfg" >"$WORKDIR/haproxy.log" 2>&1 &
pids+=($!)

echo "scale-out: haproxy on 127.0.0.1:$LB_PORT -> gateways 127.0.0.1:$GW1, 127.0.0.1:$GW2 -> pgbouncer 127.0.0.1:$PGBOUNCER_PORT -> $PG_HOST:$PG_PORT; logs in $WORKDIR"
# Stops everything when any one of them exits.
wait -n
echo "scale-out: a process exited; stopping the rest" >&2
exit 1
