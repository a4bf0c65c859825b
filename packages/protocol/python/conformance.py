#!/usr/bin/env python3
"""The stdio conformance interface (SPEC.md section 15) over the Python reference.

One JSON request per line on stdin, one JSON answer per line on stdout. Set
MOAT_CONFORMANCE_BREAK=utf16 to count fingerprint indices in UTF-16 code units instead of
code points (the classic cross-language bug) and watch the kit catch it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import moat_protocol as mp  # noqa: E402

BROKEN = os.environ.get("MOAT_CONFORMANCE_BREAK") == "utf16"


def chars_utf16(text: str) -> str:
    units = mp.well_formed(text).encode("utf-16-le")
    out = ""
    for i in (4, 7, 20):
        if 2 * i + 2 <= len(units):
            out += units[2 * i : 2 * i + 2].decode("utf-16-le", errors="replace")
        else:
            out += "0"
    return out


def answer(req: dict) -> dict:
    op = req.get("op")
    try:
        if op == "fingerprint":
            text = mp.first_user_text(req["request"])
            chars = chars_utf16(text) if BROKEN else mp.fingerprint_chars(text)
            fp = hashlib.sha256(mp.utf8(req["salt"] + chars + req["version"])).hexdigest()[:3]
            return {"chars": chars, "fp": fp}
        if op == "parse_attribution":
            try:
                block = mp.parse_attribution(req["input"])
            except mp.ProtocolError as e:
                return {"valid": False, "error": e.code}
            return {"valid": True, "fields": block.as_dict(), "serialized": mp.serialize_attribution(block.cv, block.fp, block.ep, block.extensions)}
        if op == "verify_signature":
            signing_input = mp.signing_input(req["block"], req["context"])
            out: dict = {"input": signing_input.hex()}
            if req.get("alg") == "hs256":
                try:
                    sig = mp.parse_block_signature(req["signature"])
                    mac = hmac.new(bytes.fromhex(req["key"]), signing_input, hashlib.sha256).digest()
                    ctx = req["context"]
                    scope = "k" if ctx.get("context") is None else "c"
                    # The signature's own kid, algorithm and scope must be those the input was built with.
                    bound = sig["kid"] == ctx.get("kid") and sig["alg"] == ctx.get("alg") and sig["scope"] == scope
                    out["valid"] = bound and sig["alg"] == "hs256" and hmac.compare_digest(mac, sig["sig"])
                except mp.ProtocolError:
                    out["valid"] = False
            # Ed25519: the standard library cannot verify it; "valid" is left out.
            return out
        return {"error": f"unknown op {op!r}"}
    except mp.ProtocolError as e:
        return {"error": e.code}


def main() -> int:
    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        out = {"id": req.get("id"), **answer(req)}
        sys.stdout.write(json.dumps(out, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
