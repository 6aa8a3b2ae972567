#!/bin/sh
# The auth file is written at start from the secret in the environment, into a tmpfs: the
# password is never in the image or a volume. PgBouncer answers SCRAM with it, and logs in to
# PostgreSQL (SCRAM over verified TLS) with the same.
set -eu
umask 077
: "${PHIGATE_GATEWAY_DB_PASSWORD:?PHIGATE_GATEWAY_DB_PASSWORD is required}"
printf '"phigate_gateway" "%s"\n' "$PHIGATE_GATEWAY_DB_PASSWORD" > /tmp/userlist.txt
exec pgbouncer /etc/pgbouncer/pgbouncer.ini
