# Source this file to start a throwaway PostgreSQL server for the tests on 127.0.0.1.
# It installs Debian's postgresql package if missing, initializes a data directory in a new
# temporary directory, starts the server on a free port, creates the database regnas_test,
# exports REGNAS_TEST_POSTGRES_URL, and stops the server and deletes the directory on exit.
# The server trusts every local connection, so it must never hold anything but test data.

start_test_postgres() {
  local sudo="" as_postgres=() bin pg_dir port
  if [ "$(id -u)" -ne 0 ]; then
    sudo="sudo"
  fi
  if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    $sudo apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  fi
  bin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
  pg_dir="$(mktemp -d -t regnas-postgres.XXXXXX)"
  port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  # PostgreSQL refuses to run as root, so root runs it as the postgres user.
  if [ "$(id -u)" -eq 0 ]; then
    chown postgres "$pg_dir"
    as_postgres=(runuser -u postgres --)
  fi
  "${as_postgres[@]}" "$bin/initdb" -D "$pg_dir/data" -U regnas --auth=trust >/dev/null
  "${as_postgres[@]}" "$bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/server.log" -w \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $pg_dir" start >/dev/null
  # shellcheck disable=SC2064  # Expand the paths now: the variables are local.
  trap "${as_postgres[*]} $bin/pg_ctl -D $pg_dir/data -m fast -w stop >/dev/null; rm -rf $pg_dir" EXIT
  "$bin/createdb" -h 127.0.0.1 -p "$port" -U regnas regnas_test
  export REGNAS_TEST_POSTGRES_URL="postgresql://regnas@127.0.0.1:$port/regnas_test"
  echo "PostgreSQL test server: $REGNAS_TEST_POSTGRES_URL (data in $pg_dir)"
}
