"""Reads registration files with Synapse's own loader and says what Synapse makes of them.

Run by tests/corpus.rs with the Python of the Synapse virtualenv. Input (stdin, JSON):
{"hostname", "files", "users", "aliases", "rooms", "patterns", "subjects"}. Output (stdout,
JSON): {"files": {path: {"ok": false, "error"} | {"ok": true, fields..., "probes"}},
"patterns": {pattern: {"ok": false, "error"} | {"ok": true, "matches": [bool per subject]}}}.
"""

import json
import re
import sys
import warnings

import yaml

from synapse.config.appservice import _load_appservice

warnings.simplefilter("ignore")
request = json.load(sys.stdin)
hostname = request["hostname"]


def read(path):
    try:
        with open(path) as f:
            service = _load_appservice(hostname, yaml.safe_load(f), path)
    except Exception as e:  # Synapse refuses the file with whatever it raised.
        return {"ok": False, "error": f"{type(e).__name__}: {e}"}
    bot = service.sender.to_string()
    return {
        "ok": True,
        "id": service.id,
        "url": service.url,
        "as_token": service.token,
        "hs_token": service.hs_token,
        "sender": bot,
        "namespaces": {
            kind: [[ns.regex.pattern, ns.exclusive] for ns in service.namespaces[kind]]
            for kind in ("users", "aliases", "rooms")
        },
        "rate_limited": service.rate_limited,
        "protocols": sorted(service.protocols),
        "receive_ephemeral": bool(service.supports_ephemeral),
        "push_ephemeral_unstable": bool(service.supports_unstable_ephemeral),
        "msc3202": service.msc3202_transaction_extensions,
        "msc4190": service.msc4190_device_management,
        "probes": {
            "interested": [service.is_interested_in_user(u) for u in request["users"] + [bot]],
            "exclusive": [service.is_exclusive_user(u) for u in request["users"] + [bot]],
            "aliases": [service.is_room_alias_in_namespace(a) for a in request["aliases"]],
            "rooms": [service.is_room_id_in_namespace(r) for r in request["rooms"]],
        },
    }


def pattern(p):
    try:
        compiled = re.compile(p)
    except Exception as e:
        return {"ok": False, "error": f"{type(e).__name__}: {e}"}
    return {"ok": True, "matches": [bool(compiled.match(s)) for s in request["subjects"]]}


json.dump(
    {
        "files": {path: read(path) for path in request["files"]},
        "patterns": {p: pattern(p) for p in request["patterns"]},
    },
    sys.stdout,
)
