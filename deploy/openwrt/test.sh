#!/bin/sh
# Runs the OpenWrt init script's functions against a stub procd and UCI
# environment: the real /etc/config/qpc of the package is parsed, procd's
# calls are recorded, and the recorded instance is checked. Needs only a
# POSIX sh. Run from anywhere: sh deploy/openwrt/test.sh
set -eu

here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
log="$work/procd.log"
fails=0
passes=0

# --- stubs of /lib/functions.sh (UCI) ---
# config_load parses the UCI file into CONFIG_<section>_<option> variables,
# the way /lib/functions.sh stores them.
config_load() {
	eval "$(awk -v q="'" '
		$1 == "config" { sec = $3; gsub(q, "", sec); next }
		$1 == "option" && sec != "" {
			val = $0; sub(/^[ \t]*option[ \t]+[^ \t]+[ \t]+/, "", val); gsub(q, "", val)
			printf "CONFIG_%s_%s=%s%s%s\n", sec, $2, q, val, q
		}' "$UCI_DIR/$1")"
}
config_get() {
	# config_get VAR SECTION OPTION [DEFAULT]
	eval "$1=\${CONFIG_$2_$3:-\${4:-}}"
}
config_get_bool() {
	local v
	config_get v "$2" "$3" "${4:-0}"
	case "$v" in 1 | on | true | yes | enabled) v=1 ;; *) v=0 ;; esac
	eval "$1=$v"
}

# --- stubs of procd.sh: record every call ---
procd_open_instance() { echo "open_instance $*" >>"$log"; }
procd_close_instance() { echo "close_instance" >>"$log"; }
procd_set_param() { echo "set $*" >>"$log"; }
procd_append_param() { echo "append $*" >>"$log"; }
procd_add_reload_trigger() { echo "reload_trigger $*" >>"$log"; }
# The script creates the data directory; keep that inside the test.
chown() { echo "chown $*" >>"$log"; }

# Load the init script's functions. The rc.common shebang line is only a
# comment when sourced.
. "$here/files/qpc-server.init"

check() { # check DESCRIPTION GREP-PATTERN
	if grep -qx -- "$2" "$log"; then
		passes=$((passes + 1))
	else
		echo "FAIL: $1: no line matching '$2' in:" >&2
		sed 's/^/    /' "$log" >&2
		fails=$((fails + 1))
	fi
}
check_not() {
	if grep -q -- "$2" "$log"; then
		echo "FAIL: $1: a line matches '$2'" >&2
		fails=$((fails + 1))
	else
		passes=$((passes + 1))
	fi
}

# 1. The package's own config file.
mkdir -p "$work/config"
sed "s#'/srv/qpc'#'$work/data'#" "$here/files/qpc.config" >"$work/config/qpc"
UCI_DIR="$work/config"
: >"$log"
start_service
check "instance opened" "open_instance "
check "command" "set command /usr/bin/qpc-server run"
check "data dir" "set env QPC_DATA_DIR=$work/data"
check "listen" "append env QPC_LISTEN=0.0.0.0:4433"
check "admin listener on loopback" "append env QPC_ADMIN_LISTEN=127.0.0.1:9090"
check "max_conns" "append env QPC_MAX_CONNS=512"
check "log level" "append env QPC_LOG_LEVEL=info"
check_not "commented options stay unset" "QPC_MESSAGE_TTL"
check "user" "set user qpc"
check "group" "set group qpc"
check "respawn" "set respawn 3600 5 5"
check "drain time before SIGKILL" "set term_timeout 20"
check "reload on config change" "set file /etc/config/qpc"
check "instance closed" "close_instance"
check "data dir owner" "chown qpc:qpc $work/data"
[ -d "$work/data" ] && passes=$((passes + 1)) || { echo "FAIL: data dir not created" >&2; fails=$((fails + 1)); }
mode=$(ls -ld "$work/data" | cut -c1-10)
[ "$mode" = "drwx------" ] && passes=$((passes + 1)) || { echo "FAIL: data dir mode $mode" >&2; fails=$((fails + 1)); }

# 2. A disabled server starts nothing.
cat >"$work/config/qpc" <<EOT
config server 'main'
	option enabled '0'
	option data_dir '$work/data2'
EOT
unset CONFIG_main_listen CONFIG_main_admin_listen CONFIG_main_max_conns CONFIG_main_log_level CONFIG_main_enabled CONFIG_main_data_dir
: >"$log"
start_service
check_not "disabled: no instance" "open_instance"

# 3. Every key, a longer drain, and values with commas.
cat >"$work/config/qpc" <<EOT
config server 'main'
	option data_dir '$work/data3'
	option buckets '512,4096,65536'
	option shutdown_timeout '2m'
	option require_tokens 'true'
EOT
unset CONFIG_main_enabled
: >"$log"
start_service
check "enabled by default" "open_instance "
check "buckets" "append env QPC_BUCKETS=512,4096,65536"
check "require_tokens" "append env QPC_REQUIRE_TOKENS=true"
check "shutdown timeout reaches the server" "append env QPC_SHUTDOWN_TIMEOUT=2m"
check "procd waits for a 2m drain" "set term_timeout 130"

# 4. Duration conversion and variable names.
for pair in "10s 20" "90s 100" "1m 70" "500ms 11" "1m30s 70" "1h 70"; do
	set -- $pair
	got=$(qpc_term_timeout "$1")
	[ "$got" = "$2" ] && passes=$((passes + 1)) || { echo "FAIL: qpc_term_timeout $1 = $got, want $2" >&2; fails=$((fails + 1)); }
done
[ "$(qpc_env_name max_conns_per_addr)" = QPC_MAX_CONNS_PER_ADDR ] && passes=$((passes + 1)) || { echo "FAIL: qpc_env_name" >&2; fails=$((fails + 1)); }

# 5. Triggers.
: >"$log"
service_triggers
check "reload trigger" "reload_trigger qpc"

echo "openwrt init: $passes passed, $fails failed"
[ "$fails" -eq 0 ]
