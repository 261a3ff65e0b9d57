# Shared by bench/demo-time.sh and bench/host-idle.sh (sourced, not run).

# free_port: a TCP port nothing listens on now.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_running PID OUT WHAT: waits until the demo (process PID, printing to OUT) says it is
# running; fails, with the end of OUT, if it exits first. WHAT names it in the message.
wait_running() {
    local demo="$1" out="$2" what="$3"
    until grep -q "Trestle demo is running" "$out"; do
        if ! kill -0 "$demo" 2>/dev/null; then
            tail -n 30 "$out" >&2
            echo "$what: the demo exited before it ran (output above, all of it in $out)" >&2
            return 1
        fi
        sleep 1
    done
}
