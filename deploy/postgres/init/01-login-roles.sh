#!/bin/sh
# Runs once, when the cluster is created (docker-entrypoint-initdb.d): the login roles a DBA
# creates in a real deployment. The gateway's role joins phigate_app, created here with the
# attributes schema/migrations/001_roles.sql gives it (which then leaves it as it is); the
# migrations grant that group its privileges. Keycloak gets a database of its own.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v gateway_password="$PHIGATE_GATEWAY_DB_PASSWORD" -v keycloak_password="$KEYCLOAK_DB_PASSWORD" <<'SQL'
CREATE ROLE phigate_app NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS NOINHERIT;
CREATE ROLE phigate_gateway LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS INHERIT
  PASSWORD :'gateway_password' IN ROLE phigate_app;
CREATE ROLE keycloak LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS PASSWORD :'keycloak_password';
CREATE DATABASE keycloak OWNER keycloak;
REVOKE ALL ON DATABASE keycloak FROM PUBLIC;
SQL
