#!/usr/bin/env bash
# Makes sure RabbitMQ and PostgreSQL are installed and running on this
# machine, so Courier's demo and tests have real services to talk to.
#
#   scripts/services.sh            # check, install (Debian packages) and start
#   source scripts/services.sh     # the same, and export COURIER_DATABASE_URL
#                                  # when a password had to be set
#
# Addresses come from COURIER_AMQP_URL / COURIER_DATABASE_URL when set; the
# defaults are our machines' (127.0.0.1:5672 guest/guest, 127.0.0.1:5432
# postgres with trust auth). Only services on this machine are started.

_courier_services() {
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"

  _say() { echo "services: $*" >&2; }
  _port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }
  _wait_port() { # host port seconds what
    local i
    for ((i = 0; i < $3 * 4; i++)); do
      _port_open "$1" "$2" && return 0
      sleep 0.25
    done
    _say "$4 did not come up on $1:$2 within $3 s"
    return 1
  }

  local missing=()
  command -v rabbitmq-server >/dev/null 2>&1 || missing+=(rabbitmq-server)
  command -v pg_ctlcluster >/dev/null 2>&1 || missing+=(postgresql)
  # Not a service: the build of jemalloc (the `courier` binary's allocator)
  # runs make, which a Rust toolchain alone does not bring.
  command -v make >/dev/null 2>&1 || missing+=(make)
  if [ ${#missing[@]} -gt 0 ]; then
    _say "installing ${missing[*]} from Debian's packages"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  fi

  # PostgreSQL
  local pg_host=127.0.0.1 pg_port=5432
  if ! _port_open "$pg_host" "$pg_port"; then
    _say "starting PostgreSQL"
    local version
    for version in $(ls /etc/postgresql 2>/dev/null); do
      $sudo pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    done
    _wait_port "$pg_host" "$pg_port" 30 PostgreSQL || return 1
  fi
  # Debian's own PostgreSQL wants a password over TCP; ours trusts loopback.
  if [ -z "${COURIER_DATABASE_URL:-}" ] && ! PGCONNECT_TIMEOUT=5 psql -w -h "$pg_host" -p "$pg_port" -U postgres -d postgres -Atqc 'select 1' >/dev/null 2>&1; then
    _say "PostgreSQL asks for a password on $pg_host: setting one for the local 'postgres' user"
    $sudo -u postgres psql -qc "ALTER USER postgres PASSWORD 'postgres'" >/dev/null 2>&1 ||
      su postgres -c "psql -qc \"ALTER USER postgres PASSWORD 'postgres'\"" >/dev/null
    export COURIER_DATABASE_URL="postgres://postgres:postgres@$pg_host:$pg_port/postgres"
    _say "using COURIER_DATABASE_URL=postgres://postgres:***@$pg_host:$pg_port/postgres"
  fi

  # RabbitMQ
  if ! _port_open 127.0.0.1 5672; then
    _say "starting RabbitMQ"
    $sudo rabbitmq-server -detached >/dev/null 2>&1 || true
    _wait_port 127.0.0.1 5672 90 RabbitMQ || return 1
  fi
  # Quorum queues need the feature flag, on by default since 3.8.
  $sudo rabbitmqctl -q await_startup >/dev/null 2>&1 || true
  _say "RabbitMQ 127.0.0.1:5672 and PostgreSQL $pg_host:$pg_port are up"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  _courier_services
else
  _courier_services
fi
