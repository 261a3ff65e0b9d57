#!/usr/bin/env python3
"""A tiny XMPP client for `scripts/demo.sh --say xmpp TEXT` (standard library only).

    demo-xmpp-say.py PORT JID PASSWORD ROOM NICK TEXT

Connects to 127.0.0.1:PORT (the demo's Prosody: no TLS, plain passwords on loopback), logs in as
JID with SASL PLAIN, joins the multi-user chat ROOM as NICK, says each line of TEXT, waits until the
room sends the last line back (the room has then sent it to every occupant, the bridge's among
them), leaves and closes the stream. Exits non-zero with the reason when the server refuses.
"""

import base64
import socket
import sys
import time
import xml.etree.ElementTree as ET
from xml.sax.saxutils import escape, quoteattr

STREAM = "http://etherx.jabber.org/streams"
CLIENT = "jabber:client"
SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
BIND = "urn:ietf:params:xml:ns:xmpp-bind"
SESSION = "urn:ietf:params:xml:ns:xmpp-session"
MUC = "http://jabber.org/protocol/muc"
MUC_USER = "http://jabber.org/protocol/muc#user"
TIMEOUT = 30


class Stream:
    """One XML stream on a socket: sends text, reads the stream's top-level elements."""

    def __init__(self, port, domain):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.domain = domain
        self.open()

    def send(self, text):
        self.sock.sendall(text.encode())

    def open(self):
        """Opens a stream (again, after authentication: a fresh parser for the new stream)."""
        self.parser = ET.XMLPullParser(events=("start", "end"))
        self.depth = 0
        self.send("<?xml version='1.0'?><stream:stream xmlns='%s' xmlns:stream='%s' to=%s version='1.0'>"
                  % (CLIENT, STREAM, quoteattr(self.domain)))

    def element(self):
        """The next top-level element (a child of the stream's root)."""
        while True:
            for event, elem in self.parser.read_events():
                if event == "start":
                    self.depth += 1
                    continue
                self.depth -= 1
                if self.depth == 1:
                    if elem.tag == "{%s}error" % STREAM:
                        raise SystemExit("the XMPP server ended the stream: %s"
                                         % ", ".join(child.tag.split("}")[-1] for child in elem))
                    return elem
            data = self.sock.recv(4096)
            if not data:
                raise SystemExit("the XMPP server closed the connection")
            self.parser.feed(data)

    def until(self, pred, what):
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            elem = self.element()
            if pred(elem):
                return elem
        raise SystemExit("XMPP: no %s within %d s" % (what, TIMEOUT))


def tag(ns, name):
    return "{%s}%s" % (ns, name)


def main():
    if len(sys.argv) != 7:
        sys.exit("usage: demo-xmpp-say.py PORT JID PASSWORD ROOM NICK TEXT")
    port, jid, password, room, nick, text = sys.argv[1:7]
    user, _, domain = jid.partition("@")
    stream = Stream(int(port), domain)
    stream.until(lambda e: e.tag == tag(STREAM, "features"), "stream features")

    plain = base64.b64encode(b"\0" + user.encode() + b"\0" + password.encode()).decode()
    stream.send("<auth xmlns='%s' mechanism='PLAIN'>%s</auth>" % (SASL, plain))
    answer = stream.until(lambda e: e.tag in (tag(SASL, "success"), tag(SASL, "failure")), "SASL answer")
    if answer.tag == tag(SASL, "failure"):
        sys.exit("the XMPP server refused the login of %s" % jid)

    stream.open()
    features = stream.until(lambda e: e.tag == tag(STREAM, "features"), "stream features")
    stream.send("<iq type='set' id='bind'><bind xmlns='%s'><resource>demo-say</resource></bind></iq>" % BIND)
    bound = stream.until(lambda e: e.tag == tag(CLIENT, "iq") and e.get("id") == "bind", "bind answer")
    if bound.get("type") != "result":
        sys.exit("the XMPP server refused to bind a resource")
    session = features.find(tag(SESSION, "session"))
    if session is not None and session.find(tag(SESSION, "optional")) is None:
        stream.send("<iq type='set' id='session'><session xmlns='%s'/></iq>" % SESSION)
        stream.until(lambda e: e.tag == tag(CLIENT, "iq") and e.get("id") == "session", "session answer")

    occupant = "%s/%s" % (room, nick)
    stream.send("<presence to=%s><x xmlns='%s'><history maxstanzas='0'/></x></presence>"
                % (quoteattr(occupant), MUC))

    def joined(e):
        if e.tag != tag(CLIENT, "presence") or e.get("from") != occupant:
            return False
        if e.get("type") == "error":
            sys.exit("the room %s refused %s: %s" % (room, nick, ET.tostring(e, encoding="unicode")))
        # Status 110: this presence is our own, the last of the room's join presences.
        return any(s.get("code") == "110" for s in e.iter(tag(MUC_USER, "status")))

    stream.until(joined, "join of %s" % occupant)

    last = None
    for n, line in enumerate(text.splitlines() or [""]):
        last = "demo-say-%d-%d" % (time.time_ns(), n)
        stream.send("<message to=%s type='groupchat' id=%s><body>%s</body></message>"
                    % (quoteattr(room), quoteattr(last), escape(line)))

    def reflected(e):
        if e.tag != tag(CLIENT, "message") or e.get("id") != last:
            return False
        if e.get("type") == "error":
            sys.exit("the room %s refused the message: %s" % (room, ET.tostring(e, encoding="unicode")))
        return True

    stream.until(reflected, "echo of the message from %s" % room)
    stream.send("<presence to=%s type='unavailable'/>" % quoteattr(occupant))
    stream.send("</stream:stream>")
    stream.sock.close()


if __name__ == "__main__":
    main()
