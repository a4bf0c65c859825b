#!/usr/bin/env python3
"""The stdio conformance interface (SPEC.md section 15) over the Python reference.

One JSON request per line on stdin, one JSON answer per line on stdout, every operation of
the kit. Ed25519 verification and X25519 use the ``cryptography`` package (Debian: python3-cryptography);
everything else is moat_protocol.py, standard library only.

MOAT_CONFORMANCE_MUTANT names one rule of SPEC.md (see MUTANTS below) whose deliberate bug is
switched on, so the build can show that the kit fails an implementation that breaks it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import sys
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).parent))
import moat_protocol as mp  # noqa: E402

MUTANT = mp.MUTANT

# One deliberate bug per rule of SPEC.md that the kit can observe, named by the rule it
# breaks; the bugs live where the rule does (most in moat_protocol.py, the rest below).
# vectors/rules.ts switches each on and records the cases the kit then fails.
MUTANTS = {
    "2-1": "unpaired surrogates kept, and encoded as such, instead of U+FFFD",
    "2-2": "Unicode lowercasing (str.lower) for header names and hosts",
    "2-3": "version header parts trimmed of any Unicode whitespace",
    "2-4": "gateway evidence sorted by UTF-16 code units instead of bytes",
    "2-5": "the attribution prefix checked before the length",
    "3.2-1": "the attribution block's 512-byte limit counted in characters",
    "3.3-1": "a version other than v=1 accepted",
    "3.3-2": "known fields accepted in any order",
    "3.3-3": "extension fields sorted by key instead of kept in wire order",
    "3.4-1": "serializer joins values without checking them (a value can inject a field)",
    "3.4-2": "serializer writes a missing cv as cv=None",
    "3.4-3": "the attribution parser raises on a non-string input",
    "4.1-1": "the envelope's 128-byte limit counted in characters",
    "4.1-2": "the envelope scheme compared case-insensitively",
    "4.1-3": "i1 refused as an unknown scheme (a 1.1 parser)",
    "4.2-1": "the envelope appended as the first member",
    "4.2-2": "the body checked before the envelope value when appending",
    "4.3-1": "member names compared as written, escapes not decoded",
    "4.3-2": "whitespace after the envelope member tolerated",
    "5.1-1": "keys shorter than 32 bytes accepted",
    "5.1-2": "an unkeyed SHA-256 instead of HMAC",
    "5.1-3": "the stamp computed over re-serialized JSON instead of the raw bytes",
    "5.2-1": "stamps compared ignoring case",
    "5.3-1": "the method uppercased",
    "5.3-2": "the scheme's default port kept in the authority",
    "5.3-3": "international hosts mapped by the standard library's IDNA 2003 codec",
    "5.3-4": "the Bearer scheme name matched case-sensitively",
    "5.3-5": "repeated headers joined with a comma and no space",
    "5.3-6": "an authority with capitals accepted by the request base",
    "5.3-8": "an r1 stamp without request components verified as a v1 stamp",
    "5.4-1": "the install key's HKDF info with the ekid before the install id",
    "5.4-2": "an all-zero X25519 shared secret (a low-order point) accepted",
    "5.4-3": "an i1 stamp computed over the body only, as v1",
    "5.4-4": "an i1 stamp without request components verified as a v1 stamp",
    "6.1-1": "a later user message's text used when the first user message has none",
    "6.2-1": "fingerprint characters indexed by UTF-16 code units",
    "6.2-2": 'a fingerprint index past the end gives "" instead of "0"',
    "8.1-1": "the redacted_thinking split point counted in characters",
    "8.2-1": "an empty sig part reported as an encoding error",
    "8.2-2": "non-zero trailing bits of base64url accepted",
    "8.3-1": "the empty context item left out of the signing input for scope k",
    "8.3-2": "a signing context's alg and kid not checked",
    "8.3-3": 'a context of "" taken as scope k',
    "8.4-1": "tool_result content left out of the conversation digest",
    "8.5-1": "the signature's own kid and scope not compared",
    "8.5-2": "signatures reported valid without checking them",
    "9-1": "repeated rule ids accepted",
    "9-2": "a header name matched when it contains a prefix anywhere",
    "9-3": "a final ':' removed from a bare host even without digits",
    "9-4": "a leading-dot suffix matched as a plain string suffix",
    "10-1": "a discovery document with no versions accepted",
    "10-2": "the valid parts of a version header kept when another part is invalid",
    "10-3": "the lowest common version chosen",
    "10.1-1": "install_keys accepted without an enrollment member",
    "10.1-2": "enrollment parsed (and refused when broken) without install_keys",
    "10.2-1": "a challenge lifetime over 300 seconds accepted",
    "10.2-2": "a used challenge, or one issued to another credential, accepted",
    "10.3-1": "padded and non-canonical base64url keys and challenges accepted",
    "10.3-2": "the challenge checked (and spent) before the release stamp",
    "10.3-3": "a revoked release key enrolls",
    "10.3-4": "a valid v1 or i1 stamp enrolls",
    "10.3-5": "a low-order install key enrolled",
    "10.3-6": "an enrollment over a limit created under policy block",
    "10.3-7": "install_id accepted in any case",
    "10.4-1": "an enrolled install stamps r1 when discovery stops listing install_keys",
    "11-1": "the telemetry body's byte length not checked",
    "11-2": "known telemetry events keep their unknown members",
    "11-3": "telemetry strings counted in characters",
    "13-1": "a valid release-key stamp from a release that speaks install_keys scored none",
    "13-2": "a correct MAC under a revoked install scored none",
}


class RequestError(Exception):
    """A request member of the wrong type: answered {"error": ...}."""


def valid_or_error(fn: Callable[[], dict]) -> dict:
    try:
        return {"valid": True, **fn()}
    except mp.ProtocolError as e:
        return {"valid": False, "error": e.code}


def text(req: dict, member: str) -> str:
    value = req.get(member)
    if not isinstance(value, str):
        raise RequestError(f"{member}: expected a string")
    return value


def hex_bytes(req: dict, member: str) -> bytes:
    value = req.get(member)
    if not isinstance(value, str) or len(value) % 2 or any(c not in "0123456789abcdef" for c in value):
        raise RequestError(f"{member}: expected lowercase hex")
    return bytes.fromhex(value)


def fingerprint_chars(t: str) -> str:
    if MUTANT == "6.2-1":
        units = mp.well_formed(t).encode("utf-16-le")
        return "".join(units[2 * i : 2 * i + 2].decode("utf-16-le", errors="replace") if 2 * i + 2 <= len(units) else "0" for i in (4, 7, 20))
    if MUTANT == "6.2-2":
        cps = list(mp.well_formed(t))
        return "".join(cps[i] if i < len(cps) else "" for i in (4, 7, 20))
    return mp.fingerprint_chars(t)


def found_envelope(body: bytes) -> dict:
    loc = mp.locate_envelope(body)
    if loc["status"] == "found":
        return loc
    if loc["status"] == "missing":
        raise mp.ProtocolError("ERR_ENVELOPE_MISSING", "a body with an envelope", "none")
    raise mp.ProtocolError(loc["error"], "an anchored envelope", loc["status"])


def reserialized(body: bytes) -> bytes:
    """The 5.1-3 mutant's view of a body: JSON.parse then a compact dump."""
    return mp.utf8(json.dumps(json.loads(body.decode("utf-8")), separators=(",", ":"), ensure_ascii=False))


def check_key(key: bytes) -> bytes:
    if len(key) < 32 and MUTANT != "5.1-1":
        raise mp.ProtocolError("ERR_STAMP_KEY", "a key of at least 32 bytes", f"{len(key)} bytes")
    return key


def compute(req: dict) -> dict:
    body = mp.utf8(text(req, "body"))
    loc = found_envelope(body)
    # §15 order: location, then the key, then (r1) the request base.
    key = check_key(hex_bytes(req, "key"))
    bound = mp.is_bound(loc["envelope"])
    request = req.get("request") if bound else None
    if bound and not isinstance(request, dict):
        raise mp.ProtocolError("ERR_STAMP_REQUEST", "the request components", "none")
    stamp = mp.compute_stamp(key, body, loc["stampStart"], loc["stampEnd"], request)
    stamped = body[: loc["stampStart"]] + stamp.encode() + body[loc["stampEnd"] :]
    return {"stamp": stamp, "stamped": stamped.decode("utf-8")}


def verify(req: dict) -> dict:
    body = mp.utf8(text(req, "body"))
    if MUTANT == "5.2-1":
        # Reads the envelope with its stamp lowercased: an uppercase stamp then verifies.
        at = body.rfind(b'"moat_att":"')
        if at != -1:
            body = body[:at] + body[at:].lower()
    if MUTANT == "5.1-3":
        try:
            body = reserialized(body)
        except ValueError:
            pass
    loc = mp.locate_envelope(body)
    if loc["status"] != "found":
        return {"result": loc["status"]}
    key = check_key(hex_bytes(req, "key"))
    bound = mp.is_bound(loc["envelope"])
    request = req.get("request")
    if bound and not isinstance(request, dict):
        mutant = {"request": "5.3-8", "install": "5.4-4"}[loc["envelope"]["binding"]]
        if MUTANT != mutant:
            return {"result": "invalid"}
        bound = False
    try:
        expected = mp.compute_stamp(key, body, loc["stampStart"], loc["stampEnd"], request if bound else None)
    except mp.ProtocolError as e:
        if e.code == "ERR_STAMP_REQUEST":
            return {"result": "invalid"}
        raise
    return {"result": "valid" if hmac.compare_digest(expected, loc["envelope"]["stamp"]) else "invalid"}


def header_value(headers: list, name: str) -> str | None:
    values = [str(v) for n, v in headers if isinstance(n, str) and mp.ascii_lower(n) == name]
    return ("," if MUTANT == "5.3-5" else ", ").join(values) if values else None


def credential(req: dict) -> dict:
    headers = req.get("headers")
    if not isinstance(headers, list):
        raise RequestError("headers: expected an array of [name, value] pairs")
    joined = [(name, header_value(headers, name)) for name in ("x-api-key", "authorization")]
    return {"credential": mp.credential_of([(n, v) for n, v in joined if v is not None])}


def signing_context(req: dict) -> dict:
    ctx = req.get("context")
    if not isinstance(ctx, dict) or any(not isinstance(ctx.get(m), str) for m in ("alg", "kid", "apiKeyId", "model")):
        raise RequestError("context: expected a signing context {alg, kid, apiKeyId, model, context?}")
    if "context" in ctx and not isinstance(ctx["context"], str):
        raise RequestError("context.context: expected a string")
    return ctx


def signature_verifies(req: dict, ctx: dict, signing_input: bytes) -> bool:
    if MUTANT == "8.5-2":
        return True
    try:
        sig = mp.parse_block_signature(req.get("signature"))
    except mp.ProtocolError:
        return False
    scope = "c" if "context" in ctx else "k"
    if MUTANT != "8.5-1" and (sig["alg"] != ctx["alg"] or sig["kid"] != ctx["kid"] or sig["scope"] != scope):
        return False
    if sig["alg"] == "hs256":
        return hmac.compare_digest(hmac.new(hex_bytes(req, "key"), signing_input, hashlib.sha256).digest(), sig["sig"])
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        Ed25519PublicKey.from_public_bytes(hex_bytes(req, "publicKey")).verify(sig["sig"], signing_input)
        return True
    except (InvalidSignature, ValueError):
        return False


def sign_hs256(req: dict) -> dict:
    ctx = signing_context(req)
    out = valid_or_error(lambda: {"input": mp.signing_input(req.get("block"), ctx).hex(), "signature": mp.sign_hs256(hex_bytes(req, "key"), req.get("block"), ctx)})
    return {k: v for k, v in out.items() if k != "valid"} if out["valid"] else out


def signature_verify(req: dict) -> dict:
    ctx = signing_context(req)
    try:
        signing_input = mp.signing_input(req.get("block"), ctx)
    except mp.ProtocolError as e:
        return {"valid": False, "error": e.code}
    return {"input": signing_input.hex(), "valid": signature_verifies(req, ctx, signing_input)}


def detect(req: dict) -> dict:
    headers = req.get("headers")
    if not isinstance(headers, list):
        raise RequestError("headers: expected an array of [name, value] pairs")

    def run() -> dict:
        table = mp.parse_gateway_rule_table(req.get("table"))
        base_url = text(req, "baseUrl") if "baseUrl" in req else None
        detections = mp.detect_gateways(table, headers, base_url)
        if MUTANT == "2-4":
            for d in detections:
                d["evidence"].sort(key=lambda e: e.encode("utf-16-be"))
        return {"detections": detections}

    out = valid_or_error(run)
    return {"detections": out["detections"]} if out["valid"] else out


def version_header(req: dict) -> dict:
    value = req.get("input")
    if value is not None and not isinstance(value, str):
        raise RequestError("input: expected a string or null")
    if MUTANT == "2-3" and value is not None:
        parts = [p.strip() for p in value.split(",")]
        ok = all(p.isascii() and mp._full(r"[1-9][0-9]{0,3}", p) for p in parts)
        return {"versions": [int(p) for p in parts] if ok else []}
    return {"versions": mp.parse_version_header(value)}


def integers(value: Any, member: str) -> list:
    if not isinstance(value, list) or any(not mp._is_int(v) for v in value):
        raise RequestError(f"{member}: expected integers")
    return value


def telemetry(req: dict) -> dict:
    byte_length = req.get("byteLength")
    if byte_length is not None and not mp._is_int(byte_length):
        raise RequestError("byteLength: expected an integer")
    return valid_or_error(lambda: {"batch": mp.parse_telemetry_batch(req.get("input"), byte_length)})


def authority(req: dict) -> dict:
    out = valid_or_error(lambda: {"authority": mp.authority_of(text(req, "url"))})
    return {"authority": out["authority"]} if out["valid"] else out


def attribution_fields(block: mp.Attribution) -> dict:
    return {"fields": block.as_dict(), "serialized": mp.serialize_attribution(block.cv, block.fp, block.ep, block.extensions)}


def serialize(req: dict) -> dict:
    fields = req.get("fields")
    if not isinstance(fields, dict):
        raise RequestError("fields: expected an object")
    return valid_or_error(lambda: {"serialized": mp.serialize_attribution(fields.get("cv"), fields.get("fp"), fields.get("ep"), fields.get("extensions"))})


def locate(req: dict) -> dict:
    loc = mp.locate_envelope(mp.utf8(text(req, "body")))
    return loc


def conversation_digest(req: dict) -> dict:
    messages = req.get("messages")
    if not isinstance(messages, list):
        raise RequestError("messages: expected an array")
    return {"digest": mp.conversation_digest(messages)}


def fingerprint(req: dict) -> dict:
    t = mp.first_user_text(req.get("request"))
    chars = fingerprint_chars(t)
    fp = hashlib.sha256(mp.utf8(text(req, "salt") + chars + text(req, "version"))).hexdigest()[:3]
    return {"text": t, "chars": chars, "fp": fp}


def parse_signature(req: dict) -> dict:
    def run() -> dict:
        sig = mp.parse_block_signature(req.get("input"))
        return {"signature": {**sig, "sig": sig["sig"].hex()}}

    return valid_or_error(run)


def derive(req: dict) -> dict:
    key = mp.derive_install_key(
        hex_bytes(req, "privateKey"),
        hex_bytes(req, "peerPublicKey"),
        hex_bytes(req, "challenge"),
        text(req, "installId"),
        text(req, "ekid"),
        text(req, "installPublicKey"),
    )
    return {"key": key.hex()}


SCHEMES = ("v1", "r1", "i1", "none")
OUTCOME_FACTS = {
    "request": ("valid", "invalid"),
    "scheme": SCHEMES,
    "attestation": mp.ATTESTATION_SIGNALS,
    "ekid": ("active", "unknown"),
    "challenge": ("fresh", "unknown", "expired", "used", "other_credential"),
    "lowOrder": (True, False),
    "limit": ("within", "over"),
    "limitAction": ("monitor", "flag", "block"),
}
SIGNAL_FACTS = {
    "scheme": SCHEMES,
    "attestation": mp.ATTESTATION_SIGNALS,
    "install": ("known", "new", "over_limit", "revoked", "unknown"),
    "releaseSpeaksInstallKeys": (True, False),
}


def facts(req: dict, members: dict, optional: tuple = ()) -> dict:
    value = req.get("facts")
    if not isinstance(value, dict):
        raise RequestError("facts: expected an object")
    for member, allowed in members.items():
        if member not in value and member in optional:
            continue
        # bool is an int in Python: compare types too, so 1 is not True.
        if not any(value.get(member) == a and type(value.get(member)) is type(a) for a in allowed):
            raise RequestError(f"facts.{member}: expected one of {allowed}")
    return value


def strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def scheme(req: dict) -> dict:
    features = req.get("features")
    pinned = req.get("pinned", [])
    enrolled = req.get("enrolled", False)
    if not strings(features) or not strings(pinned) or not isinstance(enrolled, bool):
        raise RequestError("features, pinned: expected strings; enrolled: a boolean")
    return {"scheme": mp.envelope_scheme_for(features, pinned, enrolled)}


OPERATIONS: dict[str, Callable[[dict], dict]] = {
    "attribution.parse": lambda r: valid_or_error(lambda: attribution_fields(mp.parse_attribution(r.get("input")))),
    "attribution.serialize": serialize,
    "envelope.parse": lambda r: valid_or_error(lambda: {"envelope": mp.parse_envelope(r.get("input"))}),
    "envelope.locate": locate,
    "envelope.append": lambda r: valid_or_error(lambda: {"result": mp.append_envelope(text(r, "body"), text(r, "envelope"))}),
    "stamp.compute": lambda r: valid_or_error(lambda: compute(r)),
    "stamp.verify": verify,
    "stamp.authority": authority,
    "stamp.credential": credential,
    "stamp.request_base": lambda r: valid_or_error(lambda: {"base": mp.request_base(r.get("request") if isinstance(r.get("request"), dict) else {}).hex()}),
    "fingerprint.fingerprint": fingerprint,
    "signature.parse": parse_signature,
    "signature.conversation_digest": conversation_digest,
    "signature.signing_input": lambda r: valid_or_error(lambda: {"input": mp.signing_input(r.get("block"), signing_context(r)).hex()}),
    "signature.sign_hs256": sign_hs256,
    "signature.verify": signature_verify,
    "gateway.detect": detect,
    "gateway.table": lambda r: valid_or_error(lambda: (mp.parse_gateway_rule_table(r.get("table")), {})[1]),
    "negotiation.discovery": lambda r: valid_or_error(lambda: {"discovery": mp.parse_discovery(r.get("input"))}),
    "negotiation.version_header": version_header,
    "negotiation.negotiate": lambda r: {"version": mp.negotiate_version(integers(r.get("server"), "server"), integers(r.get("client"), "client"))},
    "negotiation.scheme": scheme,
    "telemetry.batch": telemetry,
    "enroll.derive": lambda r: valid_or_error(lambda: derive(r)),
    "enroll.request": lambda r: valid_or_error(lambda: {"request": mp.parse_enrollment_request(r.get("input"))}),
    "enroll.answer": lambda r: valid_or_error(lambda: {"answer": mp.parse_enrollment_answer(r.get("input"))}),
    "enroll.challenge": lambda r: valid_or_error(lambda: {"answer": mp.parse_challenge_answer(r.get("input"))}),
    "enroll.outcome": lambda r: {"outcome": mp.enrollment_outcome(facts(r, OUTCOME_FACTS, ("limitAction",)))},
    "enroll.signal": lambda r: {"install": mp.install_signal(facts(r, SIGNAL_FACTS, ("install", "releaseSpeaksInstallKeys")))},
}


def answer(req: Any) -> dict:
    if not isinstance(req, dict):
        return {"error": "ERR_CONFORMANCE_REQUEST: request: expected an object"}
    op = OPERATIONS.get(req.get("op"))  # type: ignore[arg-type]
    if op is None:
        return {"error": f"ERR_CONFORMANCE_REQUEST: op: unknown operation {req.get('op')!r}"}
    try:
        return op(req)
    except RequestError as e:
        return {"error": f"ERR_CONFORMANCE_REQUEST: {e}"}
    except mp.ProtocolError as e:
        return {"valid": False, "error": e.code}


def answer_line(line: str) -> str:
    try:
        req = json.loads(line)
    except ValueError:
        return json.dumps({"error": "ERR_CONFORMANCE_REQUEST: not a JSON line"})
    try:
        out = answer(req)
    except Exception as e:  # noqa: BLE001 - one bad request must not end the session
        out = {"error": f"ERR_CONFORMANCE_REQUEST: {type(e).__name__}: {e}"}
    rid = req.get("id") if isinstance(req, dict) else None
    # ASCII escapes: a text with a lone surrogate (§2) is still one JSON line.
    return json.dumps({"id": rid, **out})


def switch_mutant(name: str) -> None:
    """Switches the deliberate bug of rule ``name`` on ("" : none), in this module and the reference."""
    global MUTANT
    MUTANT = mp.MUTANT = name


def main() -> int:
    if MUTANT and MUTANT not in MUTANTS:
        sys.stderr.write(f"unknown mutant {MUTANT!r}; known: {', '.join(MUTANTS)}\n")
        return 2
    if "--every-mutant" in sys.argv:
        # Every request answered once per mutant (and once by the reference), each answer
        # prefixed with the mutant's rule: one process for the whole rule table.
        lines = [line for line in sys.stdin if line.strip()]
        for name in ["", *MUTANTS]:
            switch_mutant(name)
            for line in lines:
                sys.stdout.write(f"{name}\t{answer_line(line)}\n")
        return 0
    for line in sys.stdin:
        if line.strip():
            sys.stdout.write(answer_line(line) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
