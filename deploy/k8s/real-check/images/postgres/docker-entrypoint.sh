#!/usr/bin/env bash
# The stand-in's entrypoint, written for this project to the official image's contract:
#   - `postgres ...` (or only flags): make $PGDATA, and as root hand over to the postgres user
#     (uid 999) with gosu; as any other uid, run as that uid;
#   - an empty $PGDATA (no PG_VERSION) gets initdb with POSTGRES_USER/POSTGRES_PASSWORD
#     (or their *_FILE twins), POSTGRES_INITDB_ARGS and POSTGRES_INITDB_WALDIR, a pg_hba line
#     for TCP clients (POSTGRES_HOST_AUTH_METHOD, else the password_encryption in force), the
#     database POSTGRES_DB, then /docker-entrypoint-initdb.d/* in order (*.sh run or sourced,
#     *.sql[.gz|.xz|.zst] through psql), all against a server that listens on no TCP port;
#   - then exec the command; anything other than postgres is exec'd untouched.
# Called as docker-ensure-initdb.sh it initialises (if needed) and exits, for init containers;
# as docker-enforce-initdb.sh it fails unless it initialised.
set -Eeo pipefail

die() {
	printf '%s: error: %s\n' "$0" "$*" >&2
	exit 1
}

# VAR or VAR_FILE (a mounted secret), never both.
from_env_or_file() {
	local name="$1" default="${2:-}" file_name="${1}_FILE"
	local value="${!name:-}" file="${!file_name:-}"
	if [ -n "$value" ] && [ -n "$file" ]; then
		die "both $name and $file_name are set; they are exclusive"
	fi
	if [ -n "$file" ]; then
		value="$(<"$file")"
	fi
	export "$name"="${value:-$default}"
	unset "$file_name"
}

load_settings() {
	from_env_or_file POSTGRES_PASSWORD
	from_env_or_file POSTGRES_USER postgres
	from_env_or_file POSTGRES_DB "$POSTGRES_USER"
	from_env_or_file POSTGRES_INITDB_ARGS
	: "${POSTGRES_HOST_AUTH_METHOD:=}"
	INITIALISED=
	if [ -s "$PGDATA/PG_VERSION" ]; then
		INITIALISED=yes
	fi
}

# As root these become the postgres user's; as another uid, chmod may fail (a mounted volume
# owned by someone else) and the server will say so itself if it matters.
prepare_directories() {
	mkdir -p "$PGDATA"
	chmod 0700 "$PGDATA" 2>/dev/null || :
	mkdir -p /var/run/postgresql 2>/dev/null || :
	chmod 3775 /var/run/postgresql 2>/dev/null || :
	if [ -n "${POSTGRES_INITDB_WALDIR:-}" ]; then
		mkdir -p "$POSTGRES_INITDB_WALDIR"
		[ "$(id -u)" = 0 ] && chown -R postgres "$POSTGRES_INITDB_WALDIR"
		chmod 0700 "$POSTGRES_INITDB_WALDIR"
	fi
	if [ "$(id -u)" = 0 ]; then
		find "$PGDATA" /var/run/postgresql \! -user postgres -exec chown postgres '{}' +
	fi
}

require_password() {
	if [ -z "$POSTGRES_PASSWORD" ] && [ "$POSTGRES_HOST_AUTH_METHOD" != trust ]; then
		die "the data directory is empty and POSTGRES_PASSWORD is not set (or set" \
			"POSTGRES_HOST_AUTH_METHOD=trust, which lets anyone in)"
	fi
	if [ "$POSTGRES_HOST_AUTH_METHOD" = trust ]; then
		printf '%s: warning: POSTGRES_HOST_AUTH_METHOD=trust admits every client unchecked\n' \
			"$0" >&2
	fi
}

run_initdb() {
	local wrapped=
	# initdb refuses to run as a uid with no passwd entry: lend it one for the call.
	if ! getent passwd "$(id -u)" >/dev/null; then
		local lib
		for lib in /usr/lib/*/libnss_wrapper.so /usr/lib/libnss_wrapper.so; do
			if [ -s "$lib" ]; then
				NSS_WRAPPER_PASSWD="$(mktemp)"
				NSS_WRAPPER_GROUP="$(mktemp)"
				printf 'postgres:x:%s:%s:PostgreSQL:%s:/bin/false\n' \
					"$(id -u)" "$(id -g)" "$PGDATA" >"$NSS_WRAPPER_PASSWD"
				printf 'postgres:x:%s:\n' "$(id -g)" >"$NSS_WRAPPER_GROUP"
				export LD_PRELOAD="$lib" NSS_WRAPPER_PASSWD NSS_WRAPPER_GROUP
				wrapped=yes
				break
			fi
		done
	fi
	local args=(--username="$POSTGRES_USER")
	if [ -n "${POSTGRES_INITDB_WALDIR:-}" ]; then
		args+=(--waldir="$POSTGRES_INITDB_WALDIR")
	fi
	# The password goes through a pipe, never the command line; initdb wants a non-empty file.
	# POSTGRES_INITDB_ARGS is a shell-quoted string, as upstream documents it.
	eval 'initdb "${args[@]}" --pwfile=<(printf "%s\n" "$POSTGRES_PASSWORD") '"$POSTGRES_INITDB_ARGS"
	if [ -n "$wrapped" ]; then
		rm -f "$NSS_WRAPPER_PASSWD" "$NSS_WRAPPER_GROUP"
		unset LD_PRELOAD NSS_WRAPPER_PASSWD NSS_WRAPPER_GROUP
	fi
}

allow_tcp_clients() {
	local method="$POSTGRES_HOST_AUTH_METHOD"
	if [ -z "$method" ]; then
		method="$(postgres -C password_encryption "${server_args[@]}")"
	fi
	printf '\nhost all all all %s\n' "$method" >>"$PGDATA/pg_hba.conf"
}

psql_as_owner() {
	PGHOST= PGHOSTADDR= psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password \
		--no-psqlrc "$@"
}

create_database() {
	local exists
	exists="$(psql_as_owner --dbname postgres --set db="$POSTGRES_DB" --tuples-only \
		<<<"SELECT 1 FROM pg_database WHERE datname = :'db';")"
	if [ -z "${exists//[[:space:]]/}" ]; then
		psql_as_owner --dbname postgres --set db="$POSTGRES_DB" <<<'CREATE DATABASE :"db";'
	fi
}

run_init_files() {
	local file
	for file in /docker-entrypoint-initdb.d/*; do
		[ -e "$file" ] || continue
		case "$file" in
		*.sh)
			if [ -x "$file" ]; then
				printf '%s: running %s\n' "$0" "$file"
				"$file"
			else
				printf '%s: sourcing %s\n' "$0" "$file"
				# shellcheck disable=SC1090
				. "$file"
			fi
			;;
		*.sql) printf '%s: running %s\n' "$0" "$file" && psql_as_owner --dbname "$POSTGRES_DB" -f "$file" ;;
		*.sql.gz) printf '%s: running %s\n' "$0" "$file" && gunzip -c "$file" | psql_as_owner --dbname "$POSTGRES_DB" ;;
		*.sql.xz) printf '%s: running %s\n' "$0" "$file" && xzcat "$file" | psql_as_owner --dbname "$POSTGRES_DB" ;;
		*.sql.zst) printf '%s: running %s\n' "$0" "$file" && zstd -dc "$file" | psql_as_owner --dbname "$POSTGRES_DB" ;;
		*) printf '%s: ignoring %s\n' "$0" "$file" ;;
		esac
	done
}

initialise() {
	require_password
	# Fail now, not half-way, if the init folder cannot be read.
	ls /docker-entrypoint-initdb.d/ >/dev/null
	run_initdb
	allow_tcp_clients
	# Local connections may be set to need a password (POSTGRES_INITDB_ARGS=--auth-local=...).
	export PGPASSWORD="${PGPASSWORD:-$POSTGRES_PASSWORD}"
	# Unix socket only: nothing can reach the half-made database over the network.
	NOTIFY_SOCKET= PGUSER="${PGUSER:-$POSTGRES_USER}" pg_ctl -D "$PGDATA" -w start \
		-o "$(printf '%q ' "${server_args[@]}" -c listen_addresses= -p "${PGPORT:-5432}")"
	create_database
	run_init_files
	PGUSER="${PGUSER:-$POSTGRES_USER}" pg_ctl -D "$PGDATA" -m fast -w stop
	unset PGPASSWORD
	printf '\n%s: PostgreSQL init process complete; ready for start up.\n\n' "$0"
}

wants_only_information() {
	local arg
	for arg; do
		case "$arg" in
		-'?' | --help | --describe-config | -V | --version) return 0 ;;
		esac
	done
	return 1
}

main() {
	local mode="${0##*/}"
	if [ "$mode" = docker-ensure-initdb.sh ] || [ "$mode" = docker-enforce-initdb.sh ]; then
		set -- postgres "$@"
	elif [ "${1:0:1}" = - ]; then
		set -- postgres "$@"
	fi
	if [ "$1" != postgres ] || wants_only_information "$@"; then
		exec "$@"
	fi
	load_settings
	prepare_directories
	if [ "$(id -u)" = 0 ]; then
		exec gosu postgres "${BASH_SOURCE[0]}" "$@"
	fi
	server_args=("${@:2}")
	if [ -z "$INITIALISED" ]; then
		initialise
	elif [ "$mode" = docker-enforce-initdb.sh ]; then
		die "the data directory already holds a database"
	else
		printf '\n%s: the data directory holds a database; skipping initialisation\n\n' "$0"
	fi
	case "$mode" in
	docker-ensure-initdb.sh | docker-enforce-initdb.sh) exit 0 ;;
	esac
	exec "$@"
}

main "$@"
