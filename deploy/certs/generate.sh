#!/bin/sh
# One-shot set-up of the stack's secrets, run by the `certs` service before anything else starts:
# a private CA, a TLS certificate for PostgreSQL, one for PgBouncer and one for Keycloak, and the backing key of the
# stand-in KMS and the audit checkpoint signing key. Files that exist are kept, so restarts change nothing; delete the volumes to
# start over. Each consumer gets its own volume, owned by the user its image runs as.
set -eu

CA_DIR=/ca-private   # the CA key: mounted by this service only
PUBLIC=/ca           # ca.crt: every client that verifies a server
PG=/pg-tls           # postgres image: uid 999
PGB=/pgb-tls         # deploy/pgbouncer image: uid 70
KC=/kc-tls           # keycloak image: uid 1000
KMS=/kms-init        # local-kms seed file
AUDIT=/audit-signing-key  # the gateway image's user `node`: uid 1000

command -v openssl >/dev/null || apk add --no-cache openssl >/dev/null
umask 077

EC="-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes"

if [ ! -f "$CA_DIR/ca.key" ]; then
  # shellcheck disable=SC2086
  openssl req -x509 $EC -keyout "$CA_DIR/ca.key" -out "$PUBLIC/ca.crt" -days 825 \
    -subj "/CN=phigate stack CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
fi
chmod 644 "$PUBLIC/ca.crt"

# issue <dir> <host name> <uid:gid>
issue() {
  [ -f "$1/server.crt" ] && return 0
  printf 'subjectAltName=DNS:%s,DNS:localhost\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\n' "$2" > "$1/server.ext"
  # shellcheck disable=SC2086
  openssl req $EC -keyout "$1/server.key" -out "$1/server.csr" -subj "/CN=$2"
  openssl x509 -req -in "$1/server.csr" -CA "$PUBLIC/ca.crt" -CAkey "$CA_DIR/ca.key" -CAcreateserial \
    -days 397 -out "$1/server.crt" -extfile "$1/server.ext"
  rm "$1/server.csr" "$1/server.ext"
  chown "$3" "$1/server.key" "$1/server.crt"
  chmod 600 "$1/server.key"
  chmod 644 "$1/server.crt"
}
issue "$PG" postgres 999:999
issue "$PGB" pgbouncer 70:70
issue "$KC" keycloak 1000:1000

if [ ! -f "$KMS/seed.yaml" ]; then
  cat > "$KMS/seed.yaml" <<SEED
Keys:
  Symmetric:
    Aes:
      - Metadata:
          KeyId: ${PHIGATE_KMS_KEY_ID}
          Description: phigate master key (stand-in KMS)
        BackingKeys:
          - $(openssl rand -hex 32)
SEED
  chmod 644 "$KMS/seed.yaml"
fi
# The gateways sign the audit log's checkpoints with this Ed25519 key (PHIGATE_AUDIT_SIGNING_KEY_FILE):
# the stack is not production, which would sign in the KMS (docker-compose.yml, at the top). The
# gateway refuses a key file that others than its owner may read.
if [ ! -f "$AUDIT/audit-signing-key.pem" ]; then
  openssl genpkey -algorithm ed25519 -out "$AUDIT/audit-signing-key.pem"
  chown 1000:1000 "$AUDIT/audit-signing-key.pem"
  chmod 600 "$AUDIT/audit-signing-key.pem"
fi
echo "certs: CA, postgres, pgbouncer and keycloak certificates, the KMS seed and the audit signing key are in place"
