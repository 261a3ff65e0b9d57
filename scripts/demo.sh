#!/usr/bin/env bash
# Runs the Trestle demo: a local Synapse, a local IRC server (ngircd), a local XMPP server
# (Prosody), Trestle with every built-in plugin, a demo user, a room with the plugins' bots in it,
# an IRC channel and an XMPP multi-user chat each bridged to a room.
# Stop it with Ctrl-C; run it again at any time (state is kept in the demo directory, <repo>/.demo:
# Synapse's keys and database, registrations, Trestle's configuration and data, the demo user and
# rooms).
#
#   scripts/demo.sh                  starts the demo and runs until Ctrl-C
#   scripts/demo.sh restart-trestle  restarts only Trestle in the running demo (after editing
#                                    trestle.yaml); Synapse, ngircd and Prosody keep running
#   scripts/demo.sh --say irc TEXT   says TEXT in the demo's IRC channel as the IRC user "visitor",
#                                    whose ghost brings it into the bridged room
#   scripts/demo.sh --say xmpp TEXT  says TEXT in the demo's XMPP room as visitor@localhost, likewise
#
#   DEMO_DIR              the demo directory (default <repo>/.demo)
#   DEMO_SYNAPSE_PORT     Synapse's port on 127.0.0.1 (default 8008)
#   DEMO_APPSERVICE_PORT  the port all plugins listen on, on 127.0.0.1 (default 29300)
#   DEMO_IRC_PORT         the demo IRC server's port on 127.0.0.1 (default 16667)
#   DEMO_XMPP_PORT        the demo XMPP server's client port on 127.0.0.1 (default 15222)
#   DEMO_XMPP_COMPONENT_PORT  its component port, for the XMPP bridge (default 15347)
#   TRESTLE_SYNAPSE_VENV  Synapse virtualenv (see scripts/install-synapse.sh)
#   DEMO_PROFILE          the cargo profile to build trestle with (default dev: target/debug/trestle)
#   DEMO_TRESTLE_BIN      use this trestle binary instead of building one
#   DEMO_TIMEOUT_S        how long each start-up step may take, in seconds (default 60; more for a
#                         trestle run under a profiler, as bench/link-order.sh does)
#   DEMO_SYNAPSE_PUSH     1: turn on Synapse's experimental features that push to-device events
#                         to appservices (encryption works without them, by /sync)
#
# trestle.yaml is written once, at the first run, with the XMPP bridge on for the demo's Prosody;
# later runs keep your edits, only add the demo's IRC network when the IRC bridge has none, and say
# what to add when the XMPP bridge is off. Needs: cargo, python3, curl (and ngircd and Prosody,
# which scripts/install-ngircd.sh and scripts/install-prosody.sh install with apt-get). Writes
# <demo dir>/demo.json with the connection details.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

demo_dir="${DEMO_DIR:-$repo_root/.demo}"
mkdir -p "$demo_dir"
demo_dir="$(cd "$demo_dir" && pwd)"
synapse_dir="$demo_dir/synapse"
registrations_dir="$demo_dir/registrations"
data_dir="$demo_dir/data"
synapse_pid_file="$demo_dir/synapse.pid"
trestle_pid_file="$demo_dir/trestle.pid"
ngircd_pid_file="$demo_dir/ngircd.pid"
demo_pid_file="$demo_dir/demo.pid"
ngircd_dir="$demo_dir/ngircd"
ngircd_log="$demo_dir/ngircd.log"
prosody_pid_file="$demo_dir/prosody.pid"
prosody_dir="$demo_dir/prosody"
prosody_log="$demo_dir/prosody.log"
xmpp_secret_file="$demo_dir/xmpp-secret"
synapse_log="$demo_dir/synapse.log"
trestle_log="$demo_dir/trestle.log"
resp_file="$demo_dir/.response.json"

synapse_port="${DEMO_SYNAPSE_PORT:-8008}"
appservice_port="${DEMO_APPSERVICE_PORT:-29300}"
irc_port="${DEMO_IRC_PORT:-16667}"
xmpp_port="${DEMO_XMPP_PORT:-15222}"
xmpp_component_port="${DEMO_XMPP_COMPONENT_PORT:-15347}"
server_name="localhost"
# The demo's IRC network and channel; the portal's alias follows the IRC bridge's default
# alias_pattern, irc_{network}_{channel} (docs/irc.md).
irc_network="demo"
irc_channel="#demo"
irc_alias="#irc_${irc_network}_${irc_channel#\#}:$server_name"
# The IRC user --say speaks as (its ghost is @irc_demo_visitor:localhost), and the XMPP user
# (visitor@localhost, nick visitor).
say_nick="visitor"
# The demo's XMPP server: users of $xmpp_domain, rooms on $xmpp_muc_service, the bridge's component
# (its default domain). The portal's alias and ghosts follow docs/xmpp.md "Names": the bridge's
# occupant makes the room and owns it, so it sees the occupants' real JIDs: a ghost per user.
xmpp_domain="localhost"
xmpp_muc_service="conference.localhost"
xmpp_component="matrix.localhost"
xmpp_room="demo@$xmpp_muc_service"
xmpp_alias="#xmpp_demo_${xmpp_muc_service}:$server_name"
xmpp_say_ghost="@xmpp_${say_nick}=40${xmpp_domain}:$server_name"
# An account for the user's own XMPP client (password alice-password).
xmpp_guest="alice"
# How to run this script again for the same demo (in the instructions it prints).
self="scripts/demo.sh"
if [[ -n "${DEMO_DIR:-}" ]]; then self="DEMO_DIR=$(printf '%q' "$demo_dir") $self"; fi
hs_url="http://127.0.0.1:$synapse_port"
# The cargo profile the demo builds: chosen by measurement (docs/benchmarks.md, "The demo's build"):
# the release profile's fat LTO took 11 minutes on 2 cores, most of the wait before the demo runs.
demo_profile="${DEMO_PROFILE:-dev}"
case "$demo_profile" in dev | test) profile_dir="debug" ;; release | bench) profile_dir="release" ;; *) profile_dir="$demo_profile" ;; esac
target_dir="${CARGO_TARGET_DIR:-$repo_root/target}"
trestle="${DEMO_TRESTLE_BIN:-$target_dir/$profile_dir/trestle}"
demo_localpart="demo"
demo_user="@$demo_localpart:$server_name"
room_name="Trestle demo"
timeout_s="${DEMO_TIMEOUT_S:-60}"

synapse_pid=""
trestle_pid=""
ngircd_pid=""
prosody_pid=""
xmpp_on=""
xmpp_room_id=""
restart_requested=""
restart_request_file="$demo_dir/restart-trestle.request"

log() { echo "demo: $*" >&2; }
die() {
    log "error: $*"
    exit 1
}

# ---------------------------------------------------------------------------------------------
# Processes

# The start time of a process (field 22 of /proc/<pid>/stat, in clock ticks since boot), or nothing
# if it is gone. With the pid it names one process: a pid reused later has another start time.
start_time_of() {
    local stat fields
    stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 0
    # The command name (field 2) may hold spaces; the fields after its ')' do not.
    read -r -a fields <<<"${stat##*) }"
    echo "${fields[19]:-}"
}

# record_pid PID FILE: writes "PID START_TIME", which stop_leftover and find_demo check.
record_pid() {
    echo "$1 $(start_time_of "$1")" >"$2"
}

# recorded_pid FILE: prints the pid FILE records if that very process still runs (a zombie does not).
recorded_pid() {
    local pid started
    [[ -f "$1" ]] || return 0
    read -r pid started <"$1" || true
    if [[ "$pid" =~ ^[0-9]+$ && -n "${started:-}" && "$(start_time_of "$pid")" == "$started" ]] \
        && is_running "$pid"; then
        echo "$pid"
    fi
}

# Whether a process exists and has not exited (an exited child stays a zombie until reaped, and
# kill -0 still succeeds on zombies).
is_running() {
    local stat
    stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
    stat="${stat##*) }"
    [[ "${stat%% *}" != Z ]]
}

# Stops a process: SIGTERM, then SIGKILL after 15 s. Reaps it if it is our child.
stop_pid() {
    local pid="$1" name="$2" i
    if is_running "$pid"; then
        log "stopping $name (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 150; i++)); do
            is_running "$pid" || break
            sleep 0.1
        done
        if is_running "$pid"; then
            log "$name did not stop within 15 s; killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    wait "$pid" 2>/dev/null || true
}

# Stops what a previous run left behind (killed before it could clean up), if the pid file still
# names that process: the same pid with the same start time.
stop_leftover() {
    local pid_file="$1" name="$2" pid
    pid="$(recorded_pid "$pid_file")"
    if [[ -n "$pid" ]]; then stop_pid "$pid" "leftover $name"; fi
    rm -f "$pid_file"
}

# shellcheck disable=SC2317 # called from the EXIT trap
cleanup() {
    trap - EXIT INT TERM
    if [[ -n "$trestle_pid" ]]; then stop_pid "$trestle_pid" Trestle; fi
    rm -f "$trestle_pid_file"
    if [[ -n "$ngircd_pid" ]]; then stop_pid "$ngircd_pid" ngircd; fi
    rm -f "$ngircd_pid_file"
    if [[ -n "$prosody_pid" ]]; then stop_pid "$prosody_pid" Prosody; fi
    rm -f "$prosody_pid_file"
    if [[ -n "$synapse_pid" ]]; then stop_pid "$synapse_pid" Synapse; fi
    rm -f "$synapse_pid_file" "$resp_file" "$demo_pid_file"
}

# ---------------------------------------------------------------------------------------------
# HTTP and JSON helpers (curl + python3)

# http METHOD URL [JSON_BODY] [ACCESS_TOKEN]: writes the body to $resp_file, prints the status code
# (000 if the server could not be reached).
http() {
    local method="$1" url="$2" body="${3:-}" token="${4:-}"
    local args=(-sS -X "$method" --max-time 30 --noproxy '*' -o "$resp_file" -w '%{http_code}')
    if [[ -n "$token" ]]; then args+=(-H "Authorization: Bearer $token"); fi
    if [[ -n "$body" ]]; then args+=(-H 'Content-Type: application/json' --data-binary "$body"); fi
    local code
    : >"$resp_file"
    code="$(curl "${args[@]}" "$url" 2>/dev/null)" || true
    echo "${code:-000}"
}

# json_get FILE KEY...: prints the value at that key path (strings raw, others as JSON; empty if absent).
json_get() {
    python3 - "$@" <<'PY'
import json, sys
try:
    d = json.load(open(sys.argv[1]))
except ValueError:
    d = None
for key in sys.argv[2:]:
    d = d.get(key) if isinstance(d, dict) else None
if d is not None:
    print(d if isinstance(d, str) else json.dumps(d))
PY
}

# json_string VALUE: a JSON string (also a valid YAML double-quoted scalar).
json_string() {
    python3 -c 'import json, sys; print(json.dumps(sys.argv[1]))' "$1"
}

# json_object KEY VALUE ...: a JSON object of strings.
json_object() {
    python3 -c 'import json, sys; a = sys.argv[1:]; print(json.dumps(dict(zip(a[::2], a[1::2]))))' "$@"
}

# Percent-encodes one URL path segment.
urlencode() {
    python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$1"
}

# yaml_get FILE KEY: a top-level string of a registration file (PyYAML comes with Synapse).
yaml_get() {
    "$venv/bin/python" -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"
}

api_fail() {
    die "$1 failed: HTTP $2 $(cat "$resp_file" 2>/dev/null)"
}

# ---------------------------------------------------------------------------------------------
# Steps

build() {
    if [[ -n "${DEMO_TRESTLE_BIN:-}" ]]; then
        log "using $trestle (DEMO_TRESTLE_BIN; not building)"
        return
    fi
    # Only the binary the demo runs (not the tests, benchmarks or examples). Cargo shows its
    # progress; the first build compiles every dependency, later ones only what changed.
    log "building trestle (cargo profile $demo_profile; the first build compiles every dependency: minutes)"
    local TIMEFORMAT="demo: built trestle in %0R s (CPU %0U s user + %0S s sys)"
    time cargo build --profile "$demo_profile" -p trestle-cli --bin trestle
    [[ -x "$trestle" ]] || die "$trestle was not built"
}

write_registrations() {
    local out plugin reg
    trestle_config="$demo_dir/trestle.yaml"
    write_trestle_config
    # Only the plugins trestle.yaml runs (the XMPP bridge is off by default): Synapse would ping
    # the others where nobody answers.
    out="$("$trestle" --config "$trestle_config" plugins --enabled)" || die "'trestle plugins --enabled' failed (see above)"
    plugins=()
    while IFS= read -r plugin; do
        plugin="${plugin//[[:space:]]/}"
        [[ -n "$plugin" ]] || continue
        [[ "$plugin" =~ ^[A-Za-z0-9._-]+$ ]] || die "unexpected plugin name '$plugin' from 'trestle plugins --enabled'"
        plugins+=("$plugin")
    done <<<"$out"
    ((${#plugins[@]} > 0)) || die "$trestle_config turns on no plugin"

    registrations=()
    for plugin in "${plugins[@]}"; do
        # Made once, then the same tokens on every run.
        reg="$("$trestle" --config "$trestle_config" registration "$plugin" --path)" \
            || die "'trestle registration $plugin' failed"
        registrations+=("$(cd "$(dirname "$reg")" && pwd)/$(basename "$reg")")
        give_bot_its_own_user "$plugin" "$reg"
        log "plugin $plugin: http://127.0.0.1:$appservice_port/$plugin, registration $reg"
    done
}

# Writes trestle.yaml at the first run only: it is the user's to edit afterwards (docs/irc.md, …).
# Later runs add the demo's IRC network when the IRC bridge has none, and warn about settings that
# no longer match this run's ports.
write_trestle_config() {
    ensure_xmpp_secret
    if [[ ! -f "$trestle_config" ]]; then
        # One listener for every plugin, each under /<plugin>; data (SQLite, registrations) in data/.
        "$trestle" --config "$trestle_config" init --server-name "$server_name" \
            --homeserver-url "$hs_url" --listen "127.0.0.1:$appservice_port" >&2
        # The echo bot works in end-to-end encrypted rooms too (docs/e2ee.md): its registration then
        # asks for to-device events, key counts (org.matrix.msc3202) and its own devices
        # (io.element.msc4190). Synapse's configuration is stock: each device fetches its to-device
        # events with /sync (DEMO_SYNAPSE_PUSH=1 turns on the experimental features that push them).
        # Rewritten in place, the file keeps the owner-only mode (0600) `init` gave it.
        python3 - "$trestle_config" <<'PY' || die "could not turn on encryption for echo in $trestle_config"
import re, sys
path = sys.argv[1]
text = open(path).read()
text, n = re.subn(r"(?m)^(  echo:\n    enabled: true\n    encryption: )false", r"\1true", text)
if n != 1:
    sys.exit(1)
open(path, "w").write(text)
PY
        enable_xmpp_in_new_config
        xmpp_on=1
    else
        log "keeping $trestle_config (your edits stay; delete it to start again from the demo's)"
        check_xmpp_in_kept_config
    fi
    # The IRC bridge's network for the demo's ngircd, added where `init` left the list empty (in a
    # file an older demo wrote too). A list the user filled is left alone.
    python3 - "$trestle_config" "$irc_network" "$irc_port" "$irc_channel" "$hs_url" \
        "127.0.0.1:$appservice_port" <<'PY' || die "could not add the demo's IRC network to $trestle_config"
import json, re, sys
path, network, port, channel, hs_url, listen = sys.argv[1:7]
text = open(path).read()
irc = re.search(r"(?m)^  irc:\n(?:(?:    .*)?\n)*", text)
block = irc.group(0) if irc else ""
empty = re.search(r"(?m)^      networks: \[\]\n", block)
if irc and empty:
    entry = ("      networks:\n"
             "        - name: %s                # the demo's ngircd (scripts/demo.sh)\n"
             "          host: 127.0.0.1\n"
             "          port: %s\n"
             "          tls: false\n"
             "          nick: trestle\n"
             "          channels: [%s]\n") % (network, port, json.dumps(channel))
    start = irc.start() + empty.start()
    text = text[:start] + entry + text[irc.start() + empty.end():]
    open(path, "w").write(text)
    print("demo: %s: the IRC bridge now has the network %s (127.0.0.1:%s)" % (path, network, port),
          file=sys.stderr)
elif not re.search(r"(?m)^\s*port: %s\s*(#.*)?$" % re.escape(port), block):
    print("demo: warning: the IRC bridge in %s has no network on the demo's IRC port %s: "
          "the demo channel is not bridged" % (path, port), file=sys.stderr)
if not re.search(r"(?m)^  url: %s\s*(#.*)?$" % re.escape(hs_url), text):
    print("demo: warning: %s does not name the homeserver %s (DEMO_SYNAPSE_PORT changed?)"
          % (path, hs_url), file=sys.stderr)
if not re.search(r"(?m)^listen: %s\s*(#.*)?$" % re.escape(listen), text):
    print("demo: warning: %s does not listen on %s (DEMO_APPSERVICE_PORT changed?)"
          % (path, listen), file=sys.stderr)
PY
}

# give_bot_its_own_user PLUGIN FILE: a registration an older demo wrote has the bot as its
# sender_localpart, to which Synapse refuses /sync, so the bot could not decrypt on a stock
# Synapse. Its sender becomes a hidden user, as in the registrations Trestle writes now; the bot
# keeps its id (it is in the namespace) and Synapse reads the file again when it starts.
give_bot_its_own_user() {
    python3 - "$1" "$2" <<'PY' || die "could not give the bot of $2 a user of its own"
import re, secrets, string, sys
plugin, path = sys.argv[1:3]
text = open(path).read()
suffix = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))
text, n = re.subn(r"(?m)^sender_localpart: %s$" % re.escape(plugin),
                  "sender_localpart: %s-sender-%s" % (plugin, suffix), text)
if n:
    open(path, "w").write(text)
    print("demo: %s: the bot is now a user apart from the registration's sender" % path, file=sys.stderr)
PY
}

write_synapse_config() {
    if [[ ! -f "$synapse_dir/generated.yaml" || ! -f "$synapse_dir/$server_name.signing.key" ]]; then
        log "generating Synapse config and keys in $synapse_dir"
        mkdir -p "$synapse_dir"
        (cd "$synapse_dir" && "$venv/bin/python" -m synapse.app.homeserver \
            --server-name "$server_name" --config-path "$synapse_dir/generated.yaml" \
            --data-directory "$synapse_dir" --generate-config --report-stats=no >&2)
    fi
    # Synapse merges -c files top-level key by top-level key, later files winning: the generated
    # file keeps the secrets, keys and database path; demo.yaml is rewritten on every run.
    local generous="{per_second: 100000, burst_count: 1000000}" reg
    {
        echo "# Written by scripts/demo.sh on every run; loaded after generated.yaml."
        echo "log_config: null  # log to stderr (.demo/synapse.log)"
        echo "listeners:"
        echo "  - port: $synapse_port"
        echo "    bind_addresses: ['127.0.0.1']"
        echo "    type: http"
        echo "    tls: false"
        echo "    x_forwarded: false"
        echo "    resources:"
        echo "      - names: [client, federation]"
        echo "        compress: false"
        echo "app_service_config_files:"
        for reg in "${registrations[@]}"; do
            echo "  - $(json_string "$reg")"
        done
        echo "enable_registration: true"
        echo "enable_registration_without_verification: true"
        echo "trusted_key_servers: []"
        echo "suppress_key_server_warning: true"
        echo "report_stats: false"
        for key in rc_message rc_registration rc_registration_token_validity rc_joins_per_room \
            rc_3pid_validation rc_third_party_invite rc_room_creation rc_delayed_event_mgmt \
            rc_media_create rc_reports rc_user_directory rc_profile rc_key_requests; do
            echo "$key: $generous"
        done
        echo "rc_login: {address: $generous, account: $generous, failed_attempts: $generous}"
        echo "rc_joins: {local: $generous, remote: $generous}"
        echo "rc_invites: {per_room: $generous, per_user: $generous, per_issuer: $generous}"
        echo "rc_presence: {per_user: $generous}"
        # Encryption for appservices works on a stock Synapse: each device fetches its to-device
        # events with /sync, and devices made by the appservice (MSC4190) need only the
        # registration's io.element.msc4190. With DEMO_SYNAPSE_PUSH=1, Synapse pushes to-device
        # events (MSC2409) and device lists and one-time key counts (MSC3202) in transactions.
        if [[ "${DEMO_SYNAPSE_PUSH:-}" == 1 ]]; then
            echo "experimental_features:"
            echo "  msc2409_to_device_messages_enabled: true"
            echo "  msc3202_transaction_extensions: true"
        fi
    } >"$synapse_dir/demo.yaml"
}

start_synapse() {
    if [[ "$(http GET "$hs_url/_matrix/client/versions")" != 000 ]]; then
        die "something already listens on $hs_url (not started by this script); set DEMO_SYNAPSE_PORT"
    fi
    log "starting Synapse on $hs_url (log: $synapse_log)"
    echo "==== $(date -Is) demo.sh starts Synapse ====" >>"$synapse_log"
    (cd "$synapse_dir" && exec "$venv/bin/python" -m synapse.app.homeserver \
        -c "$synapse_dir/generated.yaml" -c "$synapse_dir/demo.yaml") >>"$synapse_log" 2>&1 &
    synapse_pid=$!
    record_pid "$synapse_pid" "$synapse_pid_file"

    local deadline=$((SECONDS + timeout_s))
    until [[ "$(http GET "$hs_url/_matrix/client/versions")" == 200 ]]; do
        if ! is_running "$synapse_pid"; then
            tail -n 40 "$synapse_log" >&2
            die "Synapse exited during start-up (log above, full log in $synapse_log)"
        fi
        if ((SECONDS > deadline)); then
            tail -n 40 "$synapse_log" >&2
            die "Synapse did not answer within ${timeout_s} s"
        fi
        sleep 0.2
    done
    log "Synapse is up"
}

# Starts Trestle and waits until Synapse reaches every appservice; fails (status 1, the reason
# logged) if it exits or does not answer, so that a restart with a broken configuration leaves the
# rest of the demo running.
start_trestle() {
    log "starting Trestle (log: $trestle_log)"
    echo "==== $(date -Is) demo.sh starts Trestle ====" >>"$trestle_log"
    RUST_LOG="${RUST_LOG:-info}" "$trestle" --config "$trestle_config" run >>"$trestle_log" 2>&1 &
    trestle_pid=$!
    record_pid "$trestle_pid" "$trestle_pid_file"

    # Synapse pinging each appservice proves it is reachable and ends any delivery back-off.
    local reg id token status deadline
    for reg in "${registrations[@]}"; do
        id="$(yaml_get "$reg" id)"
        token="$(yaml_get "$reg" as_token)"
        deadline=$((SECONDS + timeout_s))
        until status="$(http POST "$hs_url/_matrix/client/v1/appservice/$(urlencode "$id")/ping" '{}' "$token")" \
            && [[ "$status" == 200 ]]; do
            if ! is_running "$trestle_pid"; then
                tail -n 40 "$trestle_log" >&2
                log "error: Trestle exited during start-up (log above, full log in $trestle_log)"
                return 1
            fi
            if ((SECONDS > deadline)); then
                tail -n 40 "$trestle_log" >&2
                log "error: appservice $id did not answer Synapse's ping within ${timeout_s} s: HTTP $status $(cat "$resp_file")"
                return 1
            fi
            sleep 0.5
        done
        log "appservice $id answers Synapse's ping"
    done
}

# Starts the demo's IRC server: ngircd on 127.0.0.1:$irc_port, its configuration in
# <demo dir>/ngircd (rewritten on every run, like Synapse's demo.yaml).
start_ngircd() {
    local ngircd
    ngircd="$(bash "$repo_root/scripts/install-ngircd.sh")" || die "ngircd is needed: see scripts/install-ngircd.sh"
    if port_open "$irc_port"; then
        die "something already listens on 127.0.0.1:$irc_port (not started by this script); set DEMO_IRC_PORT"
    fi
    mkdir -p "$ngircd_dir"
    cat >"$ngircd_dir/ngircd.conf" <<EOF
# Written by scripts/demo.sh on every run.
[Global]
Name = irc.demo.localhost
Info = Trestle demo IRC server
Listen = 127.0.0.1
Ports = $irc_port
MotdPhrase = Trestle demo: $irc_channel is bridged to Matrix
AdminInfo1 = Trestle demo
AdminInfo2 = scripts/demo.sh
AdminEMail = demo@localhost
[Limits]
MaxConnectionsIP = 0
MaxNickLength = 30
PingTimeout = 120
PongTimeout = 20
[Options]
PAM = no
Ident = no
DNS = no
EOF
    log "starting ngircd on 127.0.0.1:$irc_port (log: $ngircd_log)"
    echo "==== $(date -Is) demo.sh starts ngircd ====" >>"$ngircd_log"
    "$ngircd" -n -f "$ngircd_dir/ngircd.conf" </dev/null >>"$ngircd_log" 2>&1 &
    ngircd_pid=$!
    record_pid "$ngircd_pid" "$ngircd_pid_file"
    wait_listening ngircd "$ngircd_pid" "$ngircd_log" "$irc_port"
}

# wait_listening NAME PID LOG PORT...: waits until the server NAME (process PID, logging to LOG)
# accepts connections on every PORT of 127.0.0.1; dies with the end of its log if it exits first.
wait_listening() {
    local name="$1" pid="$2" server_log="$3" deadline=$((SECONDS + timeout_s)) port
    shift 3
    for port in "$@"; do
        until port_open "$port"; do
            if ! is_running "$pid"; then
                tail -n 20 "$server_log" >&2
                die "$name exited during start-up (log above)"
            fi
            ((SECONDS <= deadline)) || die "$name did not listen on port $port within ${timeout_s} s"
            sleep 0.2
        done
    done
    log "$name is up"
}

# port_open PORT: whether something accepts connections on 127.0.0.1:PORT.
port_open() {
    python3 - "$1" <<'PY'
import socket, sys
try:
    socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=2).close()
except OSError:
    sys.exit(1)
PY
}

# join_portal ALIAS: puts the demo user in a bridge's portal by joining its alias, which makes the
# bridge create the portal; retried while the bridge connects to its network (its bot must be in
# the channel or room first). Sets $portal_room_id.
join_portal() {
    local alias="$1" status deadline=$((SECONDS + timeout_s))
    until status="$(http POST "$hs_url/_matrix/client/v3/join/$(urlencode "$alias")" '{}' "$access_token")" \
        && [[ "$status" == 200 ]]; do
        if ((SECONDS > deadline)); then
            tail -n 40 "$trestle_log" >&2
            api_fail "joining $alias (Trestle log above)" "$status"
        fi
        is_running "$trestle_pid" || die "Trestle exited (see $trestle_log)"
        sleep 1
    done
    portal_room_id="$(json_get "$resp_file" room_id)"
}

# Puts the demo user in the IRC channel's portal.
ensure_irc_room() {
    join_portal "$irc_alias"
    irc_room_id="$portal_room_id"
    log "$demo_user is in $irc_alias ($irc_room_id), bridged to $irc_channel on 127.0.0.1:$irc_port"
}

# --say irc TEXT: a tiny IRC client: says TEXT in the demo channel as $say_nick, waits until the
# server has answered a PING sent after it (so the line was handled), then quits.
say_irc() {
    local port
    [[ -f "$demo_dir/demo.json" ]] || die "no $demo_dir/demo.json: is the demo running? (start it with scripts/demo.sh)"
    port="$(json_get "$demo_dir/demo.json" irc port)"
    [[ -n "$port" ]] || die "$demo_dir/demo.json has no IRC port: restart the demo with this version of the script"
    python3 - "$port" "$say_nick" "$irc_channel" "$1" <<'PY' || die "could not say it on IRC (is the demo running?)"
import socket, sys, time
port, nick, channel, text = sys.argv[1:5]
sock = socket.create_connection(("127.0.0.1", int(port)), timeout=30)
buf = b""
def send(line):
    sock.sendall(line.encode() + b"\r\n")
def lines():
    global buf
    while True:
        while b"\r\n" in buf:
            line, buf = buf.split(b"\r\n", 1)
            yield line.decode("utf-8", "replace")
        data = sock.recv(4096)
        if not data:
            raise SystemExit("the IRC server closed the connection")
        buf += data
def until(pred):
    for line in lines():
        if line.startswith("PING "):
            send("PONG " + line[5:])
        elif line.split(" ")[1:2] in (["433"], ["432"]):
            raise SystemExit("the IRC server refused the nick %s: %s" % (nick, line))
        elif pred(line):
            return line
send("NICK " + nick)
send("USER %s 0 * :Trestle demo visitor" % nick)
until(lambda l: l.split(" ")[1:2] == ["001"])
send("JOIN " + channel)
until(lambda l: l.split(" ")[1:2] == ["366"])  # end of NAMES: in the channel
for part in text.splitlines() or [""]:
    send("PRIVMSG %s :%s" % (channel, part))
token = "said-%d" % time.time_ns()
send("PING :" + token)
until(lambda l: l.split(" ")[1:2] == ["PONG"] and l.endswith(token))
send("QUIT :bye")
sock.close()
PY
    log "said on IRC as $say_nick in $irc_channel; it arrives in the room $irc_alias from @irc_${irc_network}_${say_nick}:$server_name"
}

# The pid of the running demo.sh, if there is one.
find_demo() {
    recorded_pid "$demo_pid_file"
}

# restart-trestle: asks the running demo.sh to stop Trestle and start it again (SIGHUP).
request_restart() {
    local pid
    pid="$(find_demo)"
    [[ -n "$pid" ]] || die "no demo runs in $demo_dir (start it with scripts/demo.sh)"
    # A file as well as the signal: the main loop looks for it every second, so a request is not
    # lost to a signal bash did not deliver to its trap (CI saw one go unanswered).
    touch "$restart_request_file"
    kill -HUP "$pid"
    log "asked the demo (pid $pid) to restart Trestle; it says when Trestle is back (log: $trestle_log)"
}

# Sets $access_token for the demo user: the saved token if still valid, else registers or logs in.
demo_login() {
    local password_file="$demo_dir/password" token_file="$demo_dir/access_token" status session body
    if [[ ! -f "$password_file" ]]; then echo "demo-password" >"$password_file"; fi
    password="$(cat "$password_file")"

    if [[ -f "$token_file" ]]; then
        access_token="$(cat "$token_file")"
        if [[ "$(http GET "$hs_url/_matrix/client/v3/account/whoami" '' "$access_token")" == 200 ]]; then
            log "reusing the saved access token of $demo_user"
            return
        fi
    fi

    body="$(json_object username "$demo_localpart" password "$password" initial_device_display_name demo.sh)"
    status="$(http POST "$hs_url/_matrix/client/v3/register" "$body")"
    if [[ "$status" == 401 ]]; then
        session="$(json_get "$resp_file" session)"
        body="$(python3 -c 'import json, sys
print(json.dumps({"username": sys.argv[1], "password": sys.argv[2], "initial_device_display_name": "demo.sh",
                  "auth": {"type": "m.login.dummy", "session": sys.argv[3]}}))' "$demo_localpart" "$password" "$session")"
        status="$(http POST "$hs_url/_matrix/client/v3/register" "$body")"
    fi
    if [[ "$status" == 200 ]]; then
        log "registered $demo_user"
    elif [[ "$(json_get "$resp_file" errcode)" == M_USER_IN_USE ]]; then
        body="$(python3 -c 'import json, sys
print(json.dumps({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": sys.argv[1]},
                  "password": sys.argv[2], "initial_device_display_name": "demo.sh"}))' "$demo_localpart" "$password")"
        status="$(http POST "$hs_url/_matrix/client/v3/login" "$body")"
        [[ "$status" == 200 ]] || api_fail "logging in $demo_user (password in $password_file)" "$status"
        log "logged in as $demo_user"
    else
        api_fail "registering $demo_user" "$status"
    fi
    access_token="$(json_get "$resp_file" access_token)"
    [[ -n "$access_token" ]] || die "no access token in the response"
    (umask 077 && echo "$access_token" >"$token_file")
}

# The room's joined members, one per line (status code in $members_status).
joined_members() {
    members_status="$(http GET "$hs_url/_matrix/client/v3/rooms/$(urlencode "$1")/joined_members" '' "$access_token")"
    if [[ "$members_status" == 200 ]]; then
        python3 -c 'import json, sys; print("\n".join(json.load(open(sys.argv[1])).get("joined", {})))' "$resp_file"
    fi
}

ensure_room() {
    local room_file="$demo_dir/room_id" status members_status=""
    if [[ -f "$room_file" ]]; then
        room_id="$(cat "$room_file")"
        joined_members "$room_id" >/dev/null
        if [[ "$members_status" == 200 ]]; then
            log "reusing room $room_id"
            return
        fi
        log "saved room $room_id is gone (HTTP $members_status); creating a new one"
    fi
    status="$(http POST "$hs_url/_matrix/client/v3/createRoom" \
        "$(json_object name "$room_name" preset private_chat topic "Talk to Trestle's bots here")" "$access_token")"
    [[ "$status" == 200 ]] || api_fail "creating the room" "$status"
    room_id="$(json_get "$resp_file" room_id)"
    echo "$room_id" >"$room_file"
    log "created room $room_id"
}

# wait_joined ROOM USER DEADLINE: waits until USER is in ROOM, failing after DEADLINE ($SECONDS).
wait_joined() {
    local room="$1" user="$2" deadline="$3" members_status=""
    until grep -qxF "$user" <<<"$(joined_members "$room")"; do
        if ((SECONDS > deadline)); then
            tail -n 40 "$trestle_log" >&2
            die "$user did not join $room within ${timeout_s} s (Trestle log above)"
        fi
        is_running "$trestle_pid" || die "Trestle exited (see $trestle_log)"
        sleep 1
    done
}

# An end-to-end encrypted room with the echo bot in it (saved in .demo/encrypted_room_id).
ensure_encrypted_room() {
    local room_file="$demo_dir/encrypted_room_id" status members_status="" echo_bot="@echo:$server_name"
    encrypted_room_id=""
    if [[ -f "$room_file" ]]; then
        encrypted_room_id="$(cat "$room_file")"
        joined_members "$encrypted_room_id" >/dev/null
        if [[ "$members_status" != 200 ]]; then
            log "saved encrypted room $encrypted_room_id is gone (HTTP $members_status); creating a new one"
            encrypted_room_id=""
        fi
    fi
    if [[ -z "$encrypted_room_id" ]]; then
        status="$(http POST "$hs_url/_matrix/client/v3/createRoom" "$(python3 -c 'import json, sys
print(json.dumps({"name": sys.argv[1], "preset": "private_chat", "invite": [sys.argv[2]],
                  "topic": "End-to-end encrypted: the echo bot answers here too",
                  "initial_state": [{"type": "m.room.encryption", "state_key": "",
                                     "content": {"algorithm": "m.megolm.v1.aes-sha2"}}]}))' \
            "$room_name (encrypted)" "$echo_bot")" "$access_token")"
        [[ "$status" == 200 ]] || api_fail "creating the encrypted room" "$status"
        encrypted_room_id="$(json_get "$resp_file" room_id)"
        echo "$encrypted_room_id" >"$room_file"
        log "created encrypted room $encrypted_room_id"
    fi
    wait_joined "$encrypted_room_id" "$echo_bot" "$((SECONDS + timeout_s))"
    log "$echo_bot is in the encrypted room"
}

invite_bots() {
    local plugin bot status members deadline members_status=""
    bots=()
    for plugin in "${plugins[@]}"; do
        # The timeline bot joins only timeline rooms, and the bridges' bots only their portals
        # (the demo user joins the IRC channel's below): none belongs in the chat room. The
        # others answer there. Each bundled
        # plugin's bot is named after it (its registration's sender_localpart is a hidden user).
        case "$plugin" in timeline | irc | xmpp) continue ;; esac
        bots+=("@$plugin:$server_name")
    done
    members="$(joined_members "$room_id")"
    for bot in "${bots[@]}"; do
        if grep -qxF "$bot" <<<"$members"; then continue; fi
        status="$(http POST "$hs_url/_matrix/client/v3/rooms/$(urlencode "$room_id")/invite" \
            "$(json_object user_id "$bot")" "$access_token")"
        if [[ "$status" == 200 ]]; then
            log "invited $bot"
        else
            # e.g. already invited by a previous run: keep waiting for the join anyway.
            log "inviting $bot: HTTP $status $(cat "$resp_file")"
        fi
    done
    deadline=$((SECONDS + timeout_s))
    for bot in "${bots[@]}"; do
        wait_joined "$room_id" "$bot" "$deadline"
        log "$bot is in the room"
    done
}

write_demo_json() {
    python3 - "$demo_dir/demo.json" "$hs_url" "$demo_user" "$password" "$room_id" "$encrypted_room_id" \
        "$irc_port" "$irc_channel" "$irc_alias" "$irc_room_id" \
        "$xmpp_on" "$xmpp_port" "$xmpp_component_port" "$xmpp_room" "$xmpp_alias" "$xmpp_room_id" \
        "$xmpp_guest@$xmpp_domain" "$xmpp_guest-password" "${registrations[@]}" <<'PY'
import json, sys
out, hs, user, password, room, encrypted_room, irc_port, channel, alias, irc_room = sys.argv[1:11]
xmpp_on, xmpp_port, component_port, muc, xmpp_alias, xmpp_room, guest, guest_password = sys.argv[11:19]
details = {"homeserver_url": hs, "user_id": user, "password": password, "room_id": room,
           "encrypted_room_id": encrypted_room,
           "irc": {"host": "127.0.0.1", "port": int(irc_port), "channel": channel, "alias": alias,
                   "room_id": irc_room},
           "registrations": sys.argv[19:]}
if xmpp_on:
    details["xmpp"] = {"host": "127.0.0.1", "port": int(xmpp_port), "component_port": int(component_port),
                       "room": muc, "alias": xmpp_alias, "room_id": xmpp_room,
                       "account": guest, "account_password": guest_password}
with open(out, "w") as f:
    json.dump(details, f, indent=2)
    f.write("\n")
PY
}

print_instructions() {
    cat <<EOF

================================================================================
 Trestle demo is running. Log in with any Matrix client:

   homeserver  $hs_url
   user        $demo_user   (or just "$demo_localpart")
   password    $password
   room        $room_name  ($room_id)
   encrypted   $room_name (encrypted)  ($encrypted_room_id): the echo bot answers there too
   bots        ${bots[*]}

 Try, in the room:
   !echo hi
   !echo-as Alice hi
   !ping
   !help
   !webhook create Alerts        (the notify bot sends you the hook's secret URL)
   !feed add https://…/feed.xml  (the notify bot posts new entries)
   !status                       (the moderation bot: this room is its management room)

 The timeline (a microblog in Matrix rooms):  http://127.0.0.1:$appservice_port/timeline
   log in there as $demo_localpart, post, follow other users.
 IRC: $irc_channel on the demo's IRC server (127.0.0.1:$irc_port) is the room $irc_alias,
   which you are in. Join it from IRC with any client, e.g. (one line; or irssi -c 127.0.0.1 -p $irc_port
   -n alice, then /join $irc_channel):
     weechat 'irc://alice@127.0.0.1:$irc_port/$irc_channel'
   Or, without an IRC client, say something from IRC:
     $self --say irc "hello from IRC"
   (it arrives in the room from the ghost of "$say_nick", @irc_${irc_network}_${say_nick}:$server_name).

$(xmpp_instructions)
 Change the demo: edit $trestle_config (it is kept across runs), then
   $self restart-trestle       (Synapse, ngircd and Prosody keep running)

 Logs: $trestle_log, $synapse_log
 Details: $demo_dir/demo.json
 Press Ctrl-C to stop.
================================================================================
EOF
}

xmpp_instructions() {
    if [[ -z "$xmpp_on" ]]; then
        echo " XMPP: the XMPP bridge is off in $trestle_config (what to add is said above)."
        return
    fi
    cat <<EOF
 XMPP: the room $xmpp_room on the demo's XMPP server (127.0.0.1:$xmpp_port) is the room
   $xmpp_alias, which you are in. Join it from XMPP as $xmpp_guest@$xmpp_domain (password
   $xmpp_guest-password) with any client, e.g. in profanity (one line; no TLS on this local server), then
   /join $xmpp_room:
     /connect $xmpp_guest@$xmpp_domain server 127.0.0.1 port $xmpp_port tls disable
   Or, without an XMPP client, say something from XMPP:
     $self --say xmpp "hello from XMPP"
   (it arrives in the room from the ghost of $say_nick@$xmpp_domain, $xmpp_say_ghost).
EOF
}

# ---------------------------------------------------------------------------------------------

command -v curl >/dev/null || die "curl is required"
command -v python3 >/dev/null || die "python3 is required"
# shellcheck source=scripts/demo-xmpp.sh
source "$repo_root/scripts/demo-xmpp.sh"

case "${1:-}" in
    "") ;;
    --say)
        [[ $# -eq 3 ]] || die "usage: scripts/demo.sh --say irc|xmpp TEXT"
        case "$2" in
            irc) say_irc "$3" ;;
            xmpp) say_xmpp "$3" ;;
            *) die "usage: scripts/demo.sh --say irc|xmpp TEXT" ;;
        esac
        exit 0
        ;;
    restart-trestle)
        request_restart
        exit 0
        ;;
    *) die "unknown argument '$1'; usage: scripts/demo.sh [restart-trestle | --say irc|xmpp TEXT]" ;;
esac

if pid="$(find_demo)" && [[ -n "$pid" ]]; then
    die "the demo already runs in $demo_dir (pid $pid): stop it with Ctrl-C, or restart Trestle alone with $self restart-trestle"
fi
mkdir -p "$registrations_dir" "$data_dir" "$synapse_dir"

stop_leftover "$trestle_pid_file" Trestle
stop_leftover "$ngircd_pid_file" ngircd
stop_leftover "$prosody_pid_file" Prosody
stop_leftover "$synapse_pid_file" Synapse

trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
# restart-trestle; the main loop's wait returns when it comes.
trap 'restart_requested=1' HUP
record_pid $$ "$demo_pid_file"
# A request left by a run that stopped before it was seen is not this run's.
rm -f "$restart_request_file"

build
venv="$(bash "$repo_root/scripts/install-synapse.sh")"
write_registrations
write_synapse_config
start_synapse
start_ngircd
if [[ -n "$xmpp_on" ]]; then start_prosody; fi
start_trestle || die "Trestle did not start"
demo_login
ensure_room
invite_bots
ensure_encrypted_room
ensure_irc_room
if [[ -n "$xmpp_on" ]]; then ensure_xmpp_room; fi
write_demo_json
print_instructions

# Until Ctrl-C / SIGTERM (the traps stop everything), or until Synapse or ngircd dies. When Trestle
# exits (a configuration the user broke, …) Synapse keeps running: restart-trestle starts it again.
while is_running "$synapse_pid" && is_running "$ngircd_pid"; do
    if [[ -n "$restart_requested" || -f "$restart_request_file" ]]; then
        restart_requested=""
        rm -f "$restart_request_file"
        if [[ -n "$trestle_pid" ]]; then stop_pid "$trestle_pid" Trestle; fi
        # The same registrations: a plugin turned on since needs the whole demo restarted, for
        # Synapse to load its registration.
        if start_trestle; then
            log "Trestle is back"
        else
            log "fix $trestle_config, then run: $self restart-trestle (or press Ctrl-C)"
            if ! is_running "$trestle_pid"; then
                wait "$trestle_pid" 2>/dev/null || true
                trestle_pid=""
            fi
        fi
    elif [[ -n "$trestle_pid" ]] && ! is_running "$trestle_pid"; then
        wait "$trestle_pid" 2>/dev/null || true
        tail -n 20 "$trestle_log" >&2
        log "Trestle exited (log above, full log in $trestle_log); Synapse and ngircd keep running."
        log "fix $trestle_config if needed, then run: $self restart-trestle (or press Ctrl-C)"
        trestle_pid=""
    elif [[ -n "$prosody_pid" ]] && ! is_running "$prosody_pid"; then
        # Alone: the bridge's component connects again by itself (reconnect_delay), and its
        # occupant and the Matrix users' join the room again.
        wait "$prosody_pid" 2>/dev/null || true
        tail -n 20 "$prosody_log" >&2
        log "Prosody exited (log above, full log in $prosody_log); starting it again"
        start_prosody
    fi
    # A short sleep rather than `wait -n`: the HUP trap runs as soon as the sleep ends.
    sleep 1 &
    wait $! 2>/dev/null || true
done
if ! is_running "$ngircd_pid"; then
    tail -n 20 "$ngircd_log" >&2
    die "ngircd exited (log above, full log in $ngircd_log)"
fi
tail -n 20 "$synapse_log" >&2
die "Synapse exited (log above, full log in $synapse_log)"
