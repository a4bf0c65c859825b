#!/usr/bin/env python3
"""Runs the Python reference implementation against every vector file.

Prints one line per failing case and a summary, writes test-results/python.json, and exits
non-zero on any failure or on a case count that differs from the expected one.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import moat_protocol as mp  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
VECTORS = ROOT / "vectors"

# Case counts per file: a vector that silently vanishes fails here.
EXPECTED_COUNTS = {
    "attribution": 51,
    "envelope": 66,
    "stamp": 74,
    "fingerprint": 36,
    "signature": 47,
    "gateway": 45,
    "negotiation": 25,
    "telemetry": 14,
}


def code_of(fn) -> str | None:
    try:
        fn()
    except mp.ProtocolError as e:
        return e.code
    return None


def check(cond: bool, what: str) -> None:
    if not cond:
        raise AssertionError(what)


def expect_equal(got, want, what: str) -> None:
    if got != want:
        raise AssertionError(f"{what}: expected {want!r}, got {got!r}")


def run_attribution(c: dict) -> None:
    if c["op"] == "parse":
        if c["valid"]:
            block = mp.parse_attribution(c["input"])
            expect_equal(block.as_dict(), c["fields"], "fields")
            expect_equal(mp.serialize_attribution(block.cv, block.fp, block.ep, block.extensions), c["serialized"], "serialized")
        else:
            expect_equal(code_of(lambda: mp.parse_attribution(c["input"])), c["error"], "error")
    else:
        f = c["fields"]
        call = lambda: mp.serialize_attribution(f["cv"], f.get("fp"), f.get("ep"), [tuple(x) for x in f.get("extensions", [])])  # noqa: E731
        if c["valid"]:
            expect_equal(call(), c["serialized"], "serialized")
        else:
            expect_equal(code_of(call), c["error"], "error")


def run_envelope(c: dict) -> None:
    if c["op"] == "parse":
        if c["valid"]:
            expect_equal(mp.parse_envelope(c["input"]), c["envelope"], "envelope")
        else:
            expect_equal(code_of(lambda: mp.parse_envelope(c["input"])), c["error"], "error")
    elif c["op"] == "locate":
        want = {k: v for k, v in c.items() if k not in ("name", "op", "body")}
        expect_equal(mp.locate_envelope(mp.utf8(c["body"])), want, "location")
    else:
        if c["valid"]:
            expect_equal(mp.append_envelope(c["body"], c["envelope"]), c["result"], "result")
        else:
            expect_equal(code_of(lambda: mp.append_envelope(c["body"], c["envelope"])), c["error"], "error")


def run_stamp(c: dict) -> None:
    if c["op"] == "authority":
        if "error" in c:
            expect_equal(code_of(lambda: mp.authority_of(c["url"])), c["error"], "error")
        else:
            expect_equal(mp.authority_of(c["url"]), c["authority"], "authority")
        return
    if c["op"] == "credential":
        expect_equal(mp.credential_of(c["headers"]), c["credential"], "credential")
        return
    if c["op"] == "request_base":
        if c["valid"]:
            expect_equal(mp.request_base(c["request"]).hex(), c["base"], "base")
        else:
            expect_equal(code_of(lambda: mp.request_base(c["request"])), c["error"], "error")
        return
    key = bytes.fromhex(c["key"])
    body = mp.utf8(c["body"])
    request = c.get("request")
    if c["op"] == "compute":
        loc = mp.locate_envelope(body)
        check(loc["status"] == "found", "envelope found")
        call = lambda: mp.compute_stamp(key, body, loc["stampStart"], loc["stampEnd"], request)  # noqa: E731
        if not c["valid"]:
            expect_equal(code_of(call), c["error"], "error")
            return
        stamp = call()
        expect_equal(stamp, c["stamp"], "stamp")
        stamped = body[: loc["stampStart"]] + stamp.encode() + body[loc["stampEnd"] :]
        expect_equal(stamped, mp.utf8(c["stamped"]), "stamped body")
        expect_equal(mp.verify_stamp(key, stamped, request), "valid", "stamped body verifies")
    else:
        expect_equal(mp.verify_stamp(key, body, request), c["result"], "result")


def run_fingerprint(c: dict) -> None:
    text = mp.first_user_text(c["request"])
    expect_equal(text, c["text"], "text")
    expect_equal(mp.fingerprint_chars(text), c["chars"], "chars")
    expect_equal(mp.fingerprint(text, c["salt"], c["version"]), c["fp"], "fp")


def run_signature(c: dict) -> None:
    op = c["op"]
    if op == "parse":
        if c["valid"]:
            sig = mp.parse_block_signature(c["input"])
            expect_equal({**sig, "sig": sig["sig"].hex()}, c["signature"], "signature")
        else:
            expect_equal(code_of(lambda: mp.parse_block_signature(c["input"])), c["error"], "error")
    elif op == "conversation_digest":
        expect_equal(mp.conversation_digest(c["messages"]), c["digest"], "digest")
    elif op == "signing_input":
        if c["valid"]:
            expect_equal(mp.signing_input(c["block"], c["context"]).hex(), c["input"], "input")
        else:
            expect_equal(code_of(lambda: mp.signing_input(c["block"], c["context"])), c["error"], "error")
    elif op == "sign_hs256":
        expect_equal(mp.signing_input(c["block"], c["context"]).hex(), c["input"], "input")
        expect_equal(mp.sign_hs256(bytes.fromhex(c["key"]), c["block"], c["context"]), c["signature"], "signature")
    elif op == "verify_ed25519":
        # The standard library has no Ed25519: check the exact signed bytes and the envelope.
        expect_equal(mp.signing_input(c["block"], c["context"]).hex(), c["input"], "input")
        sig = mp.parse_block_signature(c["signature"])
        expect_equal((sig["alg"], len(sig["sig"])), ("ed25519", 64), "ed25519 signature")
    else:
        raise AssertionError(f"unknown op {op}")


def run_gateway(c: dict) -> None:
    if c["op"] == "detect":
        table = mp.parse_gateway_rule_table(BUILTIN_TABLE)
        got = mp.detect_gateways(table, c["headers"], c.get("baseUrl"))
        expect_equal(got, c["detections"], "detections")
    elif c["valid"]:
        expect_equal(mp.parse_gateway_rule_table(c["table"]), c["table"], "table")
    else:
        expect_equal(code_of(lambda: mp.parse_gateway_rule_table(c["table"])), c["error"], "error")


def run_negotiation(c: dict) -> None:
    if c["op"] == "discovery":
        if c["valid"]:
            expect_equal(mp.parse_discovery(c["input"]), c["discovery"], "discovery")
        else:
            expect_equal(code_of(lambda: mp.parse_discovery(c["input"])), c["error"], "error")
    elif c["op"] == "version_header":
        expect_equal(mp.parse_version_header(c["input"]), c["versions"], "versions")
    else:
        expect_equal(mp.negotiate_version(c["server"], c["client"]), c["version"], "version")


def run_telemetry(c: dict) -> None:
    call = lambda: mp.parse_telemetry_batch(c["input"], c.get("byteLength"))  # noqa: E731
    if c["valid"]:
        expect_equal(call(), c["batch"], "batch")
    else:
        expect_equal(code_of(call), c["error"], "error")


RUNNERS = {
    "attribution": run_attribution,
    "envelope": run_envelope,
    "stamp": run_stamp,
    "fingerprint": run_fingerprint,
    "signature": run_signature,
    "gateway": run_gateway,
    "negotiation": run_negotiation,
    "telemetry": run_telemetry,
}

BUILTIN_TABLE: dict = {}


def main() -> int:
    global BUILTIN_TABLE
    passed = failed = 0
    gateway = json.loads((VECTORS / "gateway.json").read_text("utf-8"))
    BUILTIN_TABLE = next(c["table"] for c in gateway["cases"] if c["name"] == "the built-in table is valid")
    for name, expected in EXPECTED_COUNTS.items():
        doc = json.loads((VECTORS / f"{name}.json").read_text("utf-8"))
        problems = []
        if doc.get("specVersion") != mp.SPEC_VERSION:
            problems.append(f"specVersion {doc.get('specVersion')!r}, expected {mp.SPEC_VERSION!r}")
        if len(doc["cases"]) != expected or doc.get("count") != expected:
            problems.append(f"{len(doc['cases'])} cases (count {doc.get('count')}), expected {expected}")
        for problem in problems:
            failed += 1
            print(f"FAIL {name}.json: {problem}")
        file_passed = 0
        for case in doc["cases"]:
            try:
                RUNNERS[name](case)
                passed += 1
                file_passed += 1
            except Exception as e:  # noqa: BLE001 - report every failing case, keep going
                failed += 1
                detail = str(e) if isinstance(e, AssertionError) else traceback.format_exc(limit=2)
                print(f"FAIL {name}.json [{case['op']}] {case['name']}: {detail}")
        print(f"  {name}.json: {file_passed}/{len(doc['cases'])} cases")
    print(f"python vectors: {passed} passed, {failed} failed")
    out = ROOT / "test-results"
    os.makedirs(out, exist_ok=True)
    (out / "python.json").write_text(json.dumps({"runner": "python vectors", "passed": passed, "failed": failed}) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
