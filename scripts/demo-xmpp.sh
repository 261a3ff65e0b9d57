# The XMPP half of scripts/demo.sh, which sources this file: a local Prosody of the demo's own,
# the XMPP bridge configured for it, the demo user in the portal of the MUC demo@conference.localhost,
# and `--say xmpp TEXT`. Uses demo.sh's helpers (log, die, http, record_pid, …) and variables.
# shellcheck shell=bash

# The XMPP bridge's settings for the demo's Prosody (the domain is the bridge's default); the
# secret is read from this file, next to trestle.yaml, by the bridge ({file: xmpp-secret}) and
# written into Prosody's configuration.
xmpp_settings_yaml() {
    cat <<EOF
  xmpp:
    enabled: true
    settings:
      server: 127.0.0.1:$xmpp_component_port
      domain: $xmpp_component
      secret: {file: $(basename "$xmpp_secret_file")}
EOF
}

# Writes the component secret once (owner-only), then keeps it: trestle.yaml refers to the file.
ensure_xmpp_secret() {
    if [[ ! -s "$xmpp_secret_file" ]]; then
        (umask 077 && python3 -c 'import secrets; print(secrets.token_urlsafe(24))' >"$xmpp_secret_file")
    fi
}

# In a trestle.yaml `init` has just written: turns the XMPP bridge on for the demo's Prosody.
enable_xmpp_in_new_config() {
    python3 - "$trestle_config" "$xmpp_component_port" "$(basename "$xmpp_secret_file")" <<'PY' \
        || die "could not turn on the XMPP bridge in $trestle_config"
import re, sys
path, port, secret = sys.argv[1:4]
text = open(path).read()
xmpp = re.search(r"(?m)^  xmpp:\n(?:(?:    .*)?\n)*", text)
if not xmpp:
    sys.exit("no xmpp section")
block = xmpp.group(0)
for pattern, replacement in [
    (r"(?m)^    enabled: false$", "    enabled: true"),
    (r"(?m)^      # server: .*$",
     "      server: 127.0.0.1:%s         # the demo's Prosody (scripts/demo.sh)" % port),
    (r"(?m)^      # secret: .*$", "      secret: {file: %s}    # written by scripts/demo.sh" % secret),
]:
    block, n = re.subn(pattern, replacement, block, count=1)
    if n != 1:
        sys.exit("the xmpp section does not have the line %s" % pattern)
text = text[:xmpp.start()] + block + text[xmpp.end():]
open(path, "w").write(text)
PY
    log "$trestle_config: the XMPP bridge is on, for the demo's Prosody (127.0.0.1:$xmpp_component_port)"
}

# In a trestle.yaml the user keeps: sets $xmpp_on when the XMPP bridge is on and names the demo's
# Prosody; otherwise says what to add (the file is theirs: it is not edited).
check_xmpp_in_kept_config() {
    xmpp_on=""
    if python3 - "$trestle_config" "$xmpp_component_port" <<'PY'; then
import re, sys
path, port = sys.argv[1:3]
text = open(path).read()
xmpp = re.search(r"(?m)^  xmpp:\n(?:(?:    .*)?\n)*", text)
block = xmpp.group(0) if xmpp else ""
on = re.search(r"(?m)^    enabled: true\s*(#.*)?$", block)
server = re.search(r"(?m)^      server: [\"']?127\.0\.0\.1:%s[\"']?\s*(#.*)?$" % re.escape(port), block)
sys.exit(0 if on and server else 1)
PY
        xmpp_on=1
        return
    fi
    log "the XMPP bridge in $trestle_config is off or not on the demo's Prosody (127.0.0.1:$xmpp_component_port):"
    log "the demo MUC $xmpp_room is not bridged. To bridge it, make the xmpp section under plugins read:"
    xmpp_settings_yaml | sed 's/^/demo:     /' >&2
    log "(the rest of its settings may stay), then stop the demo (Ctrl-C) and run $self again."
}

# Starts the demo's XMPP server: Prosody in the foreground with its configuration, data directory
# and log under <demo dir>/prosody (the configuration rewritten on every run, like ngircd's), on
# 127.0.0.1 only: clients on $xmpp_port, the bridge's component on $xmpp_component_port.
start_prosody() {
    local prosody
    prosody="$(bash "$repo_root/scripts/install-prosody.sh")" || die "Prosody is needed: see scripts/install-prosody.sh"
    local port
    for port in "$xmpp_port" "$xmpp_component_port"; do
        if port_open "$port"; then
            die "something already listens on 127.0.0.1:$port (not started by this script); set DEMO_XMPP_PORT and DEMO_XMPP_COMPONENT_PORT"
        fi
    done
    mkdir -p "$prosody_dir/data"
    ensure_xmpp_secret
    # No TLS, no server-to-server, no HTTP: a server for this machine only. Clients log in with
    # plain passwords (allowed without TLS on loopback). `run_as_root`: prosodyctl would otherwise
    # switch to a `prosody` user that cannot write the demo directory.
    cat >"$prosody_dir/prosody.cfg.lua" <<EOF
-- Written by scripts/demo.sh on every run.
run_as_root = true
daemonize = false
pidfile = "$prosody_dir/prosody.pid"
data_path = "$prosody_dir/data"
certificates = "$prosody_dir"
admins = { }
modules_enabled = { "roster"; "saslauth"; "disco"; "ping"; "mam"; }
modules_disabled = { "s2s"; "tls"; "posix"; }
c2s_ports = { $xmpp_port }
c2s_interfaces = { "127.0.0.1" }
c2s_direct_tls_ports = { }
legacy_ssl_ports = { }
component_ports = { $xmpp_component_port }
component_interfaces = { "127.0.0.1" }
s2s_ports = { }
http_ports = { }
https_ports = { }
c2s_require_encryption = false
s2s_require_encryption = false
allow_unencrypted_plain_auth = true
authentication = "internal_hashed"
storage = "internal"
log = { { levels = { min = "info" }, to = "console" } }
VirtualHost "$xmpp_domain"
Component "$xmpp_muc_service" "muc"
    modules_enabled = { "muc_mam" }
    muc_room_locking = false
Component "$xmpp_component"
    component_secret = "$(cat "$xmpp_secret_file")"
EOF
    # The account --say speaks as, and one for the user's own XMPP client (the same passwords on
    # every run).
    local user
    for user in "$say_nick" "$xmpp_guest"; do
        "$(dirname "$prosody")/prosodyctl" --config "$prosody_dir/prosody.cfg.lua" \
            register "$user" "$xmpp_domain" "$user-password" </dev/null >>"$prosody_log" 2>&1 \
            || die "prosodyctl could not make the XMPP account $user@$xmpp_domain (see $prosody_log)"
    done
    log "starting Prosody on 127.0.0.1:$xmpp_port, component port $xmpp_component_port (log: $prosody_log)"
    echo "==== $(date -Is) demo.sh starts Prosody ====" >>"$prosody_log"
    "$prosody" --config "$prosody_dir/prosody.cfg.lua" </dev/null >>"$prosody_log" 2>&1 &
    prosody_pid=$!
    record_pid "$prosody_pid" "$prosody_pid_file"
    wait_listening Prosody "$prosody_pid" "$prosody_log" "$xmpp_port" "$xmpp_component_port"
}

# Puts the demo user in the portal of $xmpp_room: the bridge's occupant joins the MUC (creating
# it, an instant room, which the bridge then owns) and the portal is made.
ensure_xmpp_room() {
    join_portal "$xmpp_alias"
    xmpp_room_id="$portal_room_id"
    log "$demo_user is in $xmpp_alias ($xmpp_room_id), bridged to $xmpp_room on 127.0.0.1:$xmpp_port"
}

# --say xmpp TEXT: a tiny XMPP client (scripts/demo-xmpp-say.py) logs in as $say_nick, joins the
# demo MUC, says TEXT, waits for the room to send it back (so the room has sent it to everyone),
# and leaves.
say_xmpp() {
    local port room
    [[ -f "$demo_dir/demo.json" ]] || die "no $demo_dir/demo.json: is the demo running? (start it with scripts/demo.sh)"
    port="$(json_get "$demo_dir/demo.json" xmpp port)"
    room="$(json_get "$demo_dir/demo.json" xmpp room)"
    [[ -n "$port" && -n "$room" ]] \
        || die "$demo_dir/demo.json has no XMPP server: the XMPP bridge is off in the demo (see its start-up output), or the demo is older than this script"
    python3 "$repo_root/scripts/demo-xmpp-say.py" "$port" "$say_nick@$xmpp_domain" "$say_nick-password" \
        "$room" "$say_nick" "$1" || die "could not say it on XMPP (is the demo running?)"
    log "said on XMPP as $say_nick in $room; it arrives in the room $xmpp_alias from $xmpp_say_ghost"
}
