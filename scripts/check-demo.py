#!/usr/bin/env python3
"""The demo, end to end: runs scripts/demo.sh as a newcomer would, and checks that it bridges IRC
and XMPP.

    python3 scripts/check-demo.py TRESTLE_BINARY

demo.sh runs with DEMO_TRESTLE_BIN=TRESTLE_BINARY (CI passes its debug build, so nothing is built
in release), in a temporary DEMO_DIR (a developer's .demo is untouched) and on free ports. Once it
prints that it runs, `trestle check` passes on it (the IRC network and the XMPP component reached), and:

1. a plain IRC client (written here) joins the demo channel and says a line; the demo user reads it
   in the channel's portal room, sent by that IRC user's ghost;
2. the demo user answers in the portal; the IRC client hears it from the demo user's own nick;
3. `demo.sh --say irc TEXT` says a line; the demo user reads it from the ghost of its IRC user;
4. the demo user is in the portal of the demo's XMPP room; `demo.sh --say xmpp TEXT` says a line
   there and the demo user reads it from the ghost of the XMPP user;
5. a user's edit of trestle.yaml, then `demo.sh restart-trestle`: a new Trestle, the same Synapse,
   ngircd and Prosody, the edit kept, and `--say` lines bridged again (IRC and XMPP);
6. Prosody killed: the demo starts it again alone, and XMPP is bridged again;
7. SIGTERM stops the demo: demo.sh exits, and Synapse, ngircd, Prosody and Trestle with it;
8. run again on the same directory, the demo keeps the edited trestle.yaml; with the XMPP bridge
   turned off there by the user, it says what to add and leaves the file alone.

Exits non-zero, with the reason and the demo's output, on the first check that fails.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
START_TIMEOUT = 300  # a first run generates Synapse's keys and registers everything
TIMEOUT = 60
# The ghost of visitor@localhost, who speaks with `--say xmpp`: the bridge made the room, and sees
# its occupants' real JIDs.
XMPP_GHOST = "@xmpp_visitor=40localhost:localhost"


class Failed(Exception):
    pass


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def matrix(hs, method, path, token=None, body=None):
    req = urllib.request.Request(hs + path, method=method,
                                 data=None if body is None else json.dumps(body).encode())
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", "Bearer " + token)
    # Local servers only: a proxy in the environment must not be used.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(req, timeout=30) as resp:
        return json.load(resp)


def command(line):
    """The command (or numeric) of an IRC line with a prefix."""
    words = line.split(" ")
    return words[1] if len(words) > 1 else ""


def privmsg(line, channel):
    """The text of a PRIVMSG to `channel`, or None."""
    words = line.split(" ", 3)
    if len(words) == 4 and words[1] == "PRIVMSG" and words[2] == channel:
        return words[3][1:] if words[3].startswith(":") else words[3]
    return None


class Irc:
    """A plain IRC client: registers, joins, says lines, reads what others say."""

    def __init__(self, port, nick):
        self.nick = nick
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.buf = b""
        self.send("NICK " + nick)
        self.send("USER %s 0 * :check-demo.py" % nick)
        self.until(lambda line: command(line) == "001", "registration")

    def send(self, line):
        self.sock.sendall(line.encode() + b"\r\n")

    def line(self):
        while b"\r\n" not in self.buf:
            data = self.sock.recv(4096)
            if not data:
                raise Failed("the IRC server closed %s's connection" % self.nick)
            self.buf += data
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line.decode("utf-8", "replace")

    def until(self, pred, what, timeout=TIMEOUT):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                line = self.line()
            except socket.timeout:
                break
            if line.startswith("PING "):
                self.send("PONG " + line[5:])
                continue
            if pred(line):
                return line
        raise Failed("IRC: no %s within %d s" % (what, timeout))

    def close(self):
        try:
            self.send("QUIT :done")
        except OSError:
            pass
        self.sock.close()


def wait_for_message(hs, token, room, sender, body, timeout=TIMEOUT):
    """Waits until `body` is in `room`'s timeline; it must come from `sender`."""
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        path = "/_matrix/client/v3/rooms/%s/messages?dir=b&limit=50" % urllib.parse.quote(room, safe="")
        events = matrix(hs, "GET", path, token)["chunk"]
        seen = [(e["sender"], e["content"].get("body")) for e in events if e["type"] == "m.room.message"]
        for s, b in seen:
            if b == body:
                if s != sender:
                    raise Failed("%r arrived from %s, not from %s" % (body, s, sender))
                return
        time.sleep(0.5)
    raise Failed("%r did not arrive in %s within %d s (messages there: %r)" % (body, room, timeout, seen))


def wait_demo_running(demo, out_path):
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        with open(out_path, errors="replace") as f:
            if "Trestle demo is running" in f.read():
                return
        if demo.poll() is not None:
            raise Failed("demo.sh exited with %d before it ran" % demo.returncode)
        time.sleep(0.5)
    raise Failed("demo.sh did not say it runs within %d s" % START_TIMEOUT)


def count_in(path, text):
    with open(path, errors="replace") as f:
        return f.read().count(text)


def recorded_pids(demo_dir):
    pids = {}
    for name in ("synapse", "ngircd", "prosody", "trestle", "demo"):
        with open(os.path.join(demo_dir, name + ".pid")) as f:
            pids[name] = int(f.read().split()[0])
    return pids


def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(") ", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def say_xmpp_until_bridged(env, hs, token, room, what):
    """Says lines with `--say xmpp` until one arrives from the visitor's ghost: after a restart the
    bridge's component connects again on its own time, and a line said before its occupant is back
    in the room is not heard."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        said = "%s %d" % (what, time.time_ns())
        subprocess.run(["bash", os.path.join(REPO, "scripts/demo.sh"), "--say", "xmpp", said], env=env,
                       cwd=REPO, check=True, timeout=TIMEOUT)
        try:
            wait_for_message(hs, token, room, XMPP_GHOST, said, timeout=5)
            return
        except Failed:
            if time.monotonic() > deadline:
                raise


def check(trestle, demo_dir, out_path):
    ports = {"DEMO_SYNAPSE_PORT": free_port(), "DEMO_APPSERVICE_PORT": free_port(),
             "DEMO_IRC_PORT": free_port(), "DEMO_XMPP_PORT": free_port(),
             "DEMO_XMPP_COMPONENT_PORT": free_port()}
    env = dict(os.environ, DEMO_DIR=demo_dir, DEMO_TRESTLE_BIN=trestle,
               **{k: str(v) for k, v in ports.items()})
    out = open(out_path, "w")
    demo = subprocess.Popen(["bash", os.path.join(REPO, "scripts/demo.sh")], env=env, cwd=REPO,
                            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        started = time.monotonic()
        wait_demo_running(demo, out_path)
        print("check-demo: the demo runs after %.0f s" % (time.monotonic() - started))
        with open(os.path.join(demo_dir, "demo.json")) as f:
            details = json.load(f)
        hs = details["homeserver_url"]
        irc = details["irc"]
        if irc["port"] != ports["DEMO_IRC_PORT"]:
            raise Failed("demo.json names IRC port %s, not %s" % (irc["port"], ports["DEMO_IRC_PORT"]))
        login = matrix(hs, "POST", "/_matrix/client/v3/login", body={
            "type": "m.login.password", "identifier": {"type": "m.id.user", "user": details["user_id"]},
            "password": details["password"]})
        token = login["access_token"]
        room = irc["room_id"]
        resolved = matrix(hs, "GET", "/_matrix/client/v3/directory/room/" + urllib.parse.quote(irc["alias"], safe=""))
        if resolved["room_id"] != room:
            raise Failed("%s is %s, not the demo's IRC room %s" % (irc["alias"], resolved["room_id"], room))
        joined = matrix(hs, "GET", "/_matrix/client/v3/joined_rooms", token)["joined_rooms"]
        if room not in joined:
            raise Failed("the demo user is not in the IRC room %s" % room)

        # `trestle check` on the running demo: everything passes, the bridges' networks included.
        checked = subprocess.run([trestle, "--config", os.path.join(demo_dir, "trestle.yaml"), "check"],
                                 capture_output=True, text=True, timeout=TIMEOUT, env=dict(env, RUST_LOG="warn"))
        for wanted in ("ok    irc: network `demo` (127.0.0.1:%d)" % irc["port"],
                       "ok    xmpp: component port 127.0.0.1:%d answers" % ports["DEMO_XMPP_COMPONENT_PORT"],
                       "ok    echo: encryption on", "ok    xmpp: the homeserver reached the plugin"):
            if wanted not in checked.stdout:
                raise Failed("trestle check does not say %r:\n%s%s" % (wanted, checked.stdout, checked.stderr))
        if checked.returncode != 0:
            raise Failed("trestle check failed on the running demo:\n%s%s" % (checked.stdout, checked.stderr))
        print("check-demo: trestle check passes on the demo, its IRC network and XMPP component reached")

        # 1. IRC -> Matrix, from an IRC client of our own.
        tester = Irc(irc["port"], "tester")
        tester.send("JOIN " + irc["channel"])
        tester.until(lambda l: command(l) == "366", "end of NAMES for " + irc["channel"])
        line = "hello from IRC %d" % time.time_ns()
        tester.send("PRIVMSG %s :%s" % (irc["channel"], line))
        wait_for_message(hs, token, room, "@irc_demo_tester:localhost", line)
        print("check-demo: the IRC client's line arrived from @irc_demo_tester:localhost")

        # 2. Matrix -> IRC: the demo user's own connection (auto_connect), nick demo[m].
        answer = "hello from Matrix %d" % time.time_ns()
        matrix(hs, "PUT", "/_matrix/client/v3/rooms/%s/send/m.room.message/check-%d"
               % (urllib.parse.quote(room, safe=""), time.time_ns()), token, {"msgtype": "m.text", "body": answer})
        heard = tester.until(lambda l: privmsg(l, irc["channel"]) == answer, "PRIVMSG %r" % answer)
        if not heard.startswith(":demo[m]!"):
            raise Failed("the demo user's line came from %s, not demo[m]" % heard.split(" ")[0])
        print("check-demo: the demo user's line reached IRC from demo[m]")
        tester.close()

        # 3. --say
        said = "said with --say %d" % time.time_ns()
        subprocess.run(["bash", os.path.join(REPO, "scripts/demo.sh"), "--say", "irc", said], env=env,
                       cwd=REPO, check=True, timeout=TIMEOUT)
        wait_for_message(hs, token, room, "@irc_demo_visitor:localhost", said)
        print("check-demo: --say's line arrived from @irc_demo_visitor:localhost")

        # 4. XMPP: the demo user is in the MUC's portal; --say xmpp.
        xmpp = details["xmpp"]
        if xmpp["port"] != ports["DEMO_XMPP_PORT"] or xmpp["room"] != "demo@conference.localhost":
            raise Failed("demo.json names the XMPP room %s on port %s" % (xmpp["room"], xmpp["port"]))
        xmpp_room = xmpp["room_id"]
        resolved = matrix(hs, "GET", "/_matrix/client/v3/directory/room/" + urllib.parse.quote(xmpp["alias"], safe=""))
        if resolved["room_id"] != xmpp_room:
            raise Failed("%s is %s, not the demo's XMPP room %s" % (xmpp["alias"], resolved["room_id"], xmpp_room))
        if xmpp_room not in joined:
            raise Failed("the demo user is not in the XMPP room %s" % xmpp_room)
        said = "said with --say xmpp %d" % time.time_ns()
        subprocess.run(["bash", os.path.join(REPO, "scripts/demo.sh"), "--say", "xmpp", said], env=env,
                       cwd=REPO, check=True, timeout=TIMEOUT)
        wait_for_message(hs, token, xmpp_room, XMPP_GHOST, said)
        print("check-demo: --say xmpp's line arrived from %s" % XMPP_GHOST)

        # 5. The user edits trestle.yaml and restarts Trestle alone: the edit stays, Synapse and
        # ngircd are the same processes, Trestle a new one that bridges again.
        config = os.path.join(demo_dir, "trestle.yaml")
        edit = "\n# check-demo.py: a user's edit %d\n" % time.time_ns()
        with open(config, "a") as f:
            f.write(edit)
        before = recorded_pids(demo_dir)
        backs = count_in(out_path, "demo: Trestle is back")
        subprocess.run(["bash", os.path.join(REPO, "scripts/demo.sh"), "restart-trestle"], env=env,
                       cwd=REPO, check=True, timeout=TIMEOUT)
        deadline = time.monotonic() + TIMEOUT
        while count_in(out_path, "demo: Trestle is back") == backs:
            if time.monotonic() > deadline or demo.poll() is not None:
                raise Failed("Trestle was not back within %d s of restart-trestle" % TIMEOUT)
            time.sleep(0.5)
        after = recorded_pids(demo_dir)
        if after["trestle"] == before["trestle"] or alive(before["trestle"]):
            raise Failed("restart-trestle did not replace Trestle (pid %d)" % before["trestle"])
        for name in ("synapse", "ngircd", "prosody", "demo"):
            if after[name] != before[name] or not alive(after[name]):
                raise Failed("restart-trestle restarted %s too" % name)
        with open(config) as f:
            if edit not in f.read():
                raise Failed("the user's edit of trestle.yaml is gone after restart-trestle")
        said = "said after the restart %d" % time.time_ns()
        subprocess.run(["bash", os.path.join(REPO, "scripts/demo.sh"), "--say", "irc", said], env=env,
                       cwd=REPO, check=True, timeout=TIMEOUT)
        wait_for_message(hs, token, room, "@irc_demo_visitor:localhost", said)
        say_xmpp_until_bridged(env, hs, token, xmpp_room, "said on XMPP after the restart")
        print("check-demo: restart-trestle restarted Trestle alone, the edit kept, and it bridges again")

        # 6. Prosody dies: the demo starts it again, alone.
        before = recorded_pids(demo_dir)
        os.kill(before["prosody"], signal.SIGKILL)
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                after = recorded_pids(demo_dir)
            except (OSError, ValueError, IndexError):
                after = before
            if after["prosody"] != before["prosody"] and alive(after["prosody"]):
                break
            if time.monotonic() > deadline or demo.poll() is not None:
                raise Failed("the demo did not start Prosody again within %d s of its death" % TIMEOUT)
            time.sleep(0.5)
        for name in ("synapse", "ngircd", "trestle", "demo"):
            if after[name] != before[name] or not alive(after[name]):
                raise Failed("Prosody's death restarted %s too" % name)
        say_xmpp_until_bridged(env, hs, token, xmpp_room, "said on XMPP after Prosody's restart")
        print("check-demo: Prosody killed, the demo started it again alone, and XMPP bridges again")

        # 7. A clean stop.
        pids = recorded_pids(demo_dir)
        if pids["demo"] != demo.pid:
            raise Failed("demo.pid names %d, not demo.sh's %d" % (pids["demo"], demo.pid))
        demo.send_signal(signal.SIGTERM)
        try:
            demo.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            raise Failed("demo.sh did not stop within %d s of SIGTERM" % TIMEOUT)
        left = [name for name, pid in pids.items() if alive(pid)]
        if left:
            raise Failed("still running after the demo stopped: %s" % ", ".join(left))
        print("check-demo: SIGTERM stopped the demo, Synapse, ngircd, Prosody and Trestle")

        # 8. Run again on the same directory: trestle.yaml is not written again. The user turned
        # the XMPP bridge off: the demo says what to add, and does not edit the file.
        with open(config) as f:
            text = f.read()
        start = text.index("\n  xmpp:\n    enabled: true\n")
        text = text[:start] + text[start:].replace("enabled: true", "enabled: false", 1)
        with open(config, "w") as f:
            f.write(text)
        out.close()
        out = open(out_path, "w")
        demo = subprocess.Popen(["bash", os.path.join(REPO, "scripts/demo.sh")], env=env, cwd=REPO,
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wait_demo_running(demo, out_path)
        with open(config) as f:
            if f.read() != text:
                raise Failed("the demo changed the user's trestle.yaml when it ran again")
        with open(out_path, errors="replace") as f:
            output = f.read()
        wanted = "server: 127.0.0.1:%d" % ports["DEMO_XMPP_COMPONENT_PORT"]
        if "the XMPP bridge in %s is off" % config not in output or wanted not in output:
            raise Failed("the demo did not say how to turn the XMPP bridge on (%r)" % wanted)
        demo.send_signal(signal.SIGTERM)
        demo.wait(timeout=TIMEOUT)
        print("check-demo: run again, the demo kept the user's trestle.yaml and said how to turn XMPP on")
    finally:
        if demo.poll() is None:
            demo.send_signal(signal.SIGTERM)
            try:
                demo.wait(timeout=TIMEOUT)
            except subprocess.TimeoutExpired:
                demo.kill()
        out.close()


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: check-demo.py TRESTLE_BINARY")
    trestle = os.path.abspath(sys.argv[1])
    if not os.access(trestle, os.X_OK):
        sys.exit("check-demo: %s is not an executable" % trestle)
    with tempfile.TemporaryDirectory(prefix="trestle-demo-") as demo_dir:
        out_path = os.path.join(demo_dir, "demo.out")
        try:
            check(trestle, demo_dir, out_path)
        except (Failed, OSError, subprocess.SubprocessError, ValueError, KeyError) as e:
            with open(out_path, errors="replace") as f:
                sys.stderr.write(f.read()[-6000:])
            for log in ("trestle.log", "ngircd.log", "prosody.log"):
                path = os.path.join(demo_dir, log)
                if os.path.exists(path):
                    with open(path, errors="replace") as f:
                        sys.stderr.write("---- %s (end)\n%s" % (log, f.read()[-3000:]))
            sys.exit("check-demo: FAILED: %s" % e)
    print("check-demo: OK")


if __name__ == "__main__":
    main()
