"""Moat wire protocol v1 — second reference implementation, Python standard library only
(X25519 for install keys, §5.4, from the ``cryptography`` package).

Written from SPEC.md alone; the TypeScript implementation is not consulted. Every function
raises ProtocolError (with a stable ``code``) on malformed input and nothing else.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import struct
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional
from urllib.parse import urlsplit

SPEC_VERSION = "1.2.1"
PROTOCOL_VERSION = 1


class ProtocolError(Exception):
    """A malformed input: ``code`` is the SPEC.md §13 error code."""

    def __init__(self, code: str, expected: str, received: str) -> None:
        super().__init__(f"{code}: expected {expected}, got {received}")
        self.code = code
        self.expected = expected
        self.received = received


def _describe(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value[:40] + ("…" if len(value) > 40 else ""), ensure_ascii=False)
    if value is None:
        return "null"
    if isinstance(value, list):
        return f"array({len(value)})"
    if isinstance(value, dict):
        return "object"
    return f"{type(value).__name__} {value!r}"


# One deliberate bug per rule of SPEC.md, switched on by naming the rule (``3.2-1``) in
# MOAT_CONFORMANCE_MUTANT, so the build can show that the conformance kit fails an
# implementation that breaks it (vectors/rules.ts). Empty: the reference itself.
MUTANT = os.environ.get("MOAT_CONFORMANCE_MUTANT", "")

# ---------------------------------------------------------------------------------------
# §2 conventions


def well_formed(text: str) -> str:
    """Replaces every unpaired surrogate with U+FFFD (SPEC.md §2)."""
    if MUTANT == "2-1" or not any(0xD800 <= ord(c) <= 0xDFFF for c in text):
        return text
    return "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in text)


def utf8(text: str) -> bytes:
    return well_formed(text).encode("utf-8", errors="surrogatepass" if MUTANT == "2-1" else "strict")


def lp(items: Iterable[str]) -> bytes:
    out = bytearray()
    for item in items:
        encoded = utf8(item)
        out += struct.pack(">I", len(encoded)) + encoded
    return bytes(out)


def _is_int(value: Any, minimum: int = 0) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, float):
        if not value.is_integer():
            return False
        value = int(value)
    return isinstance(value, int) and minimum <= value <= 2**53 - 1


def _full(pattern: str, text: str) -> bool:
    return re.fullmatch(pattern, text, flags=re.ASCII) is not None


# ---------------------------------------------------------------------------------------
# §3 attribution block

ATTRIBUTION_PREFIX = "x-moat:"
KNOWN_ORDER = {"v": 0, "cv": 1, "fp": 2, "ep": 3}


@dataclass
class Attribution:
    cv: str
    fp: Optional[str] = None
    ep: Optional[str] = None
    extensions: list = field(default_factory=list)

    def as_dict(self) -> dict:
        out: dict = {"v": 1, "cv": self.cv}
        if self.fp is not None:
            out["fp"] = self.fp
        if self.ep is not None:
            out["ep"] = self.ep
        out["extensions"] = [[k, v] for k, v in self.extensions]
        return out


def parse_attribution(text: Any) -> Attribution:
    def err(code: str, expected: str, got: str) -> ProtocolError:
        return ProtocolError(code, expected, got)

    if not isinstance(text, str):
        if MUTANT == "3.4-3":
            raise TypeError("not a string")
        raise err("ERR_ATTRIBUTION_TYPE", "a string", _describe(text))
    if MUTANT == "2-5" and not text.startswith(ATTRIBUTION_PREFIX):
        raise err("ERR_ATTRIBUTION_PREFIX", '"x-moat:" at offset 0', _describe(text[:7]))
    size = len(text) if MUTANT == "3.2-1" else len(utf8(text))
    if size > 512:
        raise err("ERR_ATTRIBUTION_TOO_LONG", "at most 512 UTF-8 bytes", f"{size} bytes")
    if not text.startswith(ATTRIBUTION_PREFIX):
        raise err("ERR_ATTRIBUTION_PREFIX", '"x-moat:" at offset 0', _describe(text[:7]))
    pos = len(ATTRIBUTION_PREFIX)
    if pos == len(text):
        raise err("ERR_ATTRIBUTION_SYNTAX", "a field", "end of text")
    seen: set = set()
    known: dict = {}
    extensions: list = []
    last_rank = -1
    saw_extension = False
    while pos < len(text):
        if text[pos] != " ":
            raise err("ERR_ATTRIBUTION_SYNTAX", f'" " at offset {pos}', _describe(text[pos : pos + 8]))
        end = text.find(";", pos + 1)
        if end == -1:
            raise err("ERR_ATTRIBUTION_SYNTAX", '";" after the field', "end of text")
        fld = text[pos + 1 : end]
        if "=" not in fld:
            raise err("ERR_ATTRIBUTION_SYNTAX", "key=value", _describe(fld))
        key, value = fld.split("=", 1)
        if not _full(r"[a-z][a-z0-9_]{0,31}", key):
            raise err("ERR_ATTRIBUTION_SYNTAX", "a key [a-z][a-z0-9_]{0,31}", _describe(key))
        if not _full(r"[A-Za-z0-9._+\-]{1,64}", value):
            raise err("ERR_ATTRIBUTION_SYNTAX", "a value [A-Za-z0-9._+-]{1,64}", _describe(value))
        if key in seen:
            raise err("ERR_ATTRIBUTION_DUPLICATE_FIELD", f'"{key}" at most once', f'a second "{key}"')
        if not seen and key != "v":
            raise err("ERR_ATTRIBUTION_FIELD_ORDER", '"v" first', _describe(key))
        seen.add(key)
        rank = KNOWN_ORDER.get(key)
        if rank is None:
            saw_extension = True
            extensions.append((key, value))
        else:
            if (saw_extension or rank < last_rank) and MUTANT != "3.3-2":
                raise err("ERR_ATTRIBUTION_FIELD_ORDER", "v, cv, fp, ep before extensions", _describe(key))
            last_rank = rank
            if key == "v":
                if not _full(r"0|[1-9][0-9]{0,8}", value):
                    raise err("ERR_ATTRIBUTION_FIELD_VALUE", "v as a decimal integer", _describe(value))
                if int(value) != PROTOCOL_VERSION and MUTANT != "3.3-1":
                    raise err("ERR_UNSUPPORTED_VERSION", "v=1", f"v={value}")
            if key == "fp" and not _full(r"[0-9a-f]{3}", value):
                raise err("ERR_ATTRIBUTION_FIELD_VALUE", "fp of 3 lowercase hex digits", _describe(value))
            if key == "ep" and not _full(r"[a-z0-9_\-]{1,32}", value):
                raise err("ERR_ATTRIBUTION_FIELD_VALUE", "ep of [a-z0-9_-]{1,32}", _describe(value))
            known[key] = value
        pos = end + 1
    if "cv" not in known:
        raise err("ERR_ATTRIBUTION_MISSING_FIELD", 'a "cv" field', "none")
    if MUTANT == "3.3-3":
        extensions.sort()
    return Attribution(cv=known["cv"], fp=known.get("fp"), ep=known.get("ep"), extensions=extensions)


def serialize_attribution(cv: Optional[str], fp: Optional[str] = None, ep: Optional[str] = None, extensions: Any = ()) -> str:
    # §3.4: a value is checked before it is joined, so "1; x=y" cannot inject a field.
    if cv is None and MUTANT != "3.4-2":
        raise ProtocolError("ERR_ATTRIBUTION_MISSING_FIELD", 'a "cv" field', "none")
    parts = ["v=1"]

    def add(key: str, value: Any) -> None:
        if MUTANT in ("3.4-1", "3.4-2"):
            value = str(value)
        elif not isinstance(value, str) or not _full(r"[A-Za-z0-9._+\-]{1,64}", value):
            raise ProtocolError("ERR_ATTRIBUTION_SYNTAX", "a value [A-Za-z0-9._+-]{1,64}", _describe(value))
        parts.append(f"{key}={value}")

    add("cv", cv)
    if fp is not None:
        add("fp", fp)
    if ep is not None:
        add("ep", ep)
    if extensions is None:
        extensions = ()
    if not isinstance(extensions, (list, tuple)):
        raise ProtocolError("ERR_ATTRIBUTION_SYNTAX", "extensions as an array of [key, value] pairs", _describe(extensions))
    for entry in extensions:
        # §3.4: an entry that is not a pair is refused, never read as far as it goes.
        if not isinstance(entry, (list, tuple)) or len(entry) != 2:
            raise ProtocolError("ERR_ATTRIBUTION_SYNTAX", "an extension as a [key, value] pair", _describe(entry))
        key, value = entry
        if isinstance(key, str) and key in KNOWN_ORDER:
            raise ProtocolError("ERR_ATTRIBUTION_DUPLICATE_FIELD", "extension keys other than v, cv, fp, ep", _describe(key))
        if not isinstance(key, str) or not _full(r"[a-z][a-z0-9_]{0,31}", key):
            raise ProtocolError("ERR_ATTRIBUTION_SYNTAX", "a key [a-z][a-z0-9_]{0,31}", _describe(key))
        add(key, value)
    text = f"{ATTRIBUTION_PREFIX} {'; '.join(parts)};"
    parse_attribution(text)
    return text


# ---------------------------------------------------------------------------------------
# §4 envelope

ENVELOPE_MEMBER = "moat_att"
ANCHOR = b'"moat_att":"'


def parse_envelope(value: Any) -> dict:
    if not isinstance(value, str):
        raise ProtocolError("ERR_ENVELOPE_TYPE", "a string", _describe(value))
    size = len(value) if MUTANT == "4.1-1" else len(utf8(value))
    if size > 128:
        raise ProtocolError("ERR_ENVELOPE_SYNTAX", "at most 128 UTF-8 bytes", f"{size} bytes")
    parts = value.split(".")
    if len(parts) != 5:
        raise ProtocolError("ERR_ENVELOPE_SYNTAX", "5 dot-separated parts", f"{len(parts)} parts")
    scheme, kid, ts, nonce, stamp = parts
    if MUTANT == "4.1-2":
        scheme = scheme.lower()
    schemes = ("v1", "r1") if MUTANT == "4.1-3" else ("v1", "r1", "i1")
    if scheme not in schemes:
        if _full(r"v[0-9]+", scheme):
            raise ProtocolError("ERR_UNSUPPORTED_VERSION", "v1, r1 or i1", _describe(scheme))
        raise ProtocolError("ERR_ENVELOPE_SYNTAX", '"v1", "r1" or "i1" first', _describe(scheme))
    if not _full(r"[A-Za-z0-9_\-]{1,32}", kid):
        raise ProtocolError("ERR_ENVELOPE_KID", "a key id", _describe(kid))
    if not _full(r"[0-9]{10}", ts):
        raise ProtocolError("ERR_ENVELOPE_TIMESTAMP", "10 decimal digits", _describe(ts))
    if not _full(r"[0-9a-f]{16}", nonce):
        raise ProtocolError("ERR_ENVELOPE_NONCE", "16 lowercase hex digits", _describe(nonce))
    if not _full(r"[0-9a-f]{32,64}", stamp) or len(stamp) % 2:
        raise ProtocolError("ERR_ENVELOPE_STAMP", "32-64 lowercase hex digits, even", _describe(stamp))
    envelope = {"kid": kid, "ts": int(ts), "nonce": nonce, "stamp": stamp}
    if scheme == "r1":
        envelope["binding"] = "request"
    elif scheme == "i1":
        envelope["binding"] = "install"
    return envelope


def _top_level_keys(body: bytes) -> list:
    """(decoded name, byte offset of its opening quote) of each top-level member."""
    decoded = json.loads(body.decode("utf-8"), object_pairs_hook=lambda pairs: pairs)
    # json gives names but not offsets: walk the bytes for offsets at depth 1.
    offsets = []
    depth = 0
    i = 0
    n = len(body)
    expect_key = False
    while i < n:
        b = body[i]
        if b == 0x22:
            start = i
            i += 1
            while body[i] != 0x22:
                i += 2 if body[i] == 0x5C else 1
            i += 1
            if depth == 1 and expect_key:
                offsets.append(start)
                expect_key = False
            continue
        if b in (0x7B, 0x5B):
            depth += 1
            if depth == 1 and b == 0x7B:
                expect_key = True
        elif b in (0x7D, 0x5D):
            depth -= 1
        elif b == 0x2C and depth == 1:
            expect_key = True
        i += 1
    names = [name for name, _ in decoded]
    return list(zip(names, offsets))


def locate_envelope(body: bytes) -> dict:
    """SPEC.md §4.3. ``body`` must be valid UTF-8 JSON."""
    stripped = body.lstrip(b" \t\r\n")
    if not stripped.startswith(b"{"):
        return {"status": "malformed", "error": "ERR_BODY_NOT_OBJECT"}
    if MUTANT == "4.3-1":  # names compared as written, escapes not decoded
        members = [off for _, off in _top_level_keys(body) if body[off : off + 10] == b'"moat_att"']
    else:
        members = [off for name, off in _top_level_keys(body) if name == ENVELOPE_MEMBER]
    if MUTANT == "4.3-2":  # whitespace after the member tolerated
        body = body.rstrip(b" \t\r\n")
        body = body[:-1].rstrip(b" \t\r\n") + b"}"
    if not members:
        return {"status": "missing"}
    if len(members) > 1:
        return {"status": "not_last", "error": "ERR_ENVELOPE_NOT_LAST"}
    n = len(body)
    anchored = False
    if n >= 2 and body[n - 2 :] == b'"}':
        value_end = n - 2
        value_start = value_end
        while value_start > 0 and body[value_start - 1] not in (0x22, 0x5C):
            value_start -= 1
        anchor_start = value_start - len(ANCHOR)
        anchored = (
            value_start > 0
            and body[value_start - 1] == 0x22
            and anchor_start >= 1
            and body[anchor_start:value_start] == ANCHOR
            and body[anchor_start - 1] in (0x2C, 0x7B)
            and members[0] == anchor_start
        )
    if not anchored:
        return {"status": "not_last", "error": "ERR_ENVELOPE_NOT_LAST"}
    try:
        envelope = parse_envelope(body[value_start:value_end].decode("ascii"))
    except ProtocolError as e:
        return {"status": "malformed", "error": e.code}
    return {
        "status": "found",
        "envelope": envelope,
        "memberStart": anchor_start - 1 if body[anchor_start - 1] == 0x2C else anchor_start,
        "valueStart": value_start,
        "valueEnd": value_end,
        "stampStart": value_end - len(envelope["stamp"]),
        "stampEnd": value_end,
    }


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def append_envelope(body: str, envelope: str) -> str:
    if MUTANT != "4.2-2":
        parse_envelope(envelope)
    if len(body) < 2 or body[0] != "{" or body[-1] != "}":
        raise ProtocolError("ERR_BODY_NOT_OBJECT", "a JSON object text from { to }", _describe(body))
    try:
        parsed = json.loads(body, object_pairs_hook=lambda pairs: pairs, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise ProtocolError("ERR_BODY_NOT_OBJECT", "a well-formed JSON object text", _describe(body)) from None
    if any(name == ENVELOPE_MEMBER for name, _ in parsed):
        raise ProtocolError("ERR_BODY_HAS_ENVELOPE", "no moat_att member", "one present")
    if MUTANT == "4.2-2":
        parse_envelope(envelope)
    member = f'"{ENVELOPE_MEMBER}":"{envelope}"'
    # No members: exactly {member}, so whitespace inside "{ }" cannot unanchor it (§4.3).
    if MUTANT == "4.2-1" and parsed:  # written first instead of last
        return f"{{{member},{body[1:]}"
    return f"{{{member}}}" if not parsed else f"{body[:-1]},{member}}}"


# ---------------------------------------------------------------------------------------
# §5 stamp


_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z\-]{1,32}"


def request_base(request: dict) -> bytes:
    """SPEC.md §5.3: lp(["moat-req/1", method, authority, path, hex(SHA-256(credential))])."""
    method, authority, path, credential = (request.get(k) for k in ("method", "authority", "path", "credential"))
    if MUTANT == "5.3-1" and isinstance(method, str):
        method = method.upper()
    if not isinstance(method, str) or not _full(_TOKEN, method):
        raise ProtocolError("ERR_STAMP_REQUEST", "a method token", _describe(method))
    forbidden = r"[\x00-\x20\x7f/?#@]" if MUTANT == "5.3-6" else r"[A-Z\x00-\x20\x7f/?#@]"
    if not isinstance(authority, str) or authority == "" or re.search(forbidden, authority):
        raise ProtocolError("ERR_STAMP_REQUEST", "a lowercase authority", _describe(authority))
    if not isinstance(path, str) or not path.startswith("/") or re.search(r"[\x00-\x20\x7f?#]", path):
        raise ProtocolError("ERR_STAMP_REQUEST", "a path without query", _describe(path))
    if not isinstance(credential, str):
        raise ProtocolError("ERR_STAMP_REQUEST", "a credential string", _describe(credential))
    digest = hashlib.sha256(utf8(credential)).hexdigest()
    return lp(["moat-req/1", method, authority, path, digest])


# ---------------------------------------------------------------------------------------
# The WHATWG URL Standard's parsing of http(s) URLs, as far as §5.3 and §9 use it: the
# scheme, the authority after any run of slashes and backslashes, user info dropped, the
# port, and the host parser (IPv6, IPv4 in all its numeric spellings, domains through
# UTS #46 for letters whose mapping is their lowercase form, then punycode).

_FORBIDDEN_HOST = set("\x00\t\n\r #/:<>?@[\\]^|")
_FORBIDDEN_DOMAIN = _FORBIDDEN_HOST | {chr(c) for c in range(0x20)} | {"%", "\x7f"}
_DEFAULT_PORTS = {"http": 80, "https": 443}


class _UrlFailure(Exception):
    pass


def ascii_lower(text: str) -> str:
    """Lowercases A-Z only (the SPEC never lowercases beyond ASCII)."""
    if MUTANT == "2-2":
        return text.lower()
    return text.translate({c: c + 32 for c in range(0x41, 0x5B)})


def _ipv4_number(part: str) -> int:
    radix = 10
    if part[:2] in ("0x", "0X"):
        part, radix = part[2:], 16
    elif len(part) > 1 and part[0] == "0":
        part, radix = part[1:], 8
    if part == "":
        return 0
    digits = "0123456789abcdefABCDEF"[: 10 if radix == 10 else 8 if radix == 8 else 22]
    if any(c not in digits for c in part):
        raise _UrlFailure("ipv4 number")
    return int(part, radix)


def _ends_in_number(domain: str) -> bool:
    parts = domain.split(".")
    if parts[-1] == "":
        if len(parts) == 1:
            return False
        parts.pop()
    last = parts[-1]
    if last != "" and all(c in "0123456789" for c in last):
        return True
    try:
        _ipv4_number(last)
    except _UrlFailure:
        return False
    return last != ""


def _ipv4(domain: str) -> str:
    parts = domain.split(".")
    if parts[-1] == "" and len(parts) > 1:
        parts.pop()
    if len(parts) > 4 or any(p == "" for p in parts):
        raise _UrlFailure("ipv4 parts")
    numbers = [_ipv4_number(p) for p in parts]
    if any(n > 255 for n in numbers[:-1]) or numbers[-1] >= 256 ** (5 - len(numbers)):
        raise _UrlFailure("ipv4 range")
    value = numbers[-1]
    for i, n in enumerate(numbers[:-1]):
        value += n * 256 ** (3 - i)
    return ".".join(str((value >> shift) & 255) for shift in (24, 16, 8, 0))


def _ipv6(text: str) -> str:
    pieces = [0] * 8
    i, n, index, compress = 0, len(text), 0, None
    if text.startswith(":"):
        if not text.startswith("::"):
            raise _UrlFailure("ipv6")
        i, index, compress = 2, 1, 1
    while i < n:
        if index == 8:
            raise _UrlFailure("ipv6")
        if text[i] == ":":
            if compress is not None:
                raise _UrlFailure("ipv6")
            i += 1
            index += 1
            compress = index
            continue
        value = length = 0
        while length < 4 and i < n and text[i] in "0123456789abcdefABCDEF":
            value = value * 16 + int(text[i], 16)
            i += 1
            length += 1
        if i < n and text[i] == ".":
            if length == 0 or index > 6:
                raise _UrlFailure("ipv6")
            i -= length
            seen = 0
            while i < n:
                piece = None
                if seen > 0:
                    if text[i] == "." and seen < 4:
                        i += 1
                    else:
                        raise _UrlFailure("ipv6")
                if i >= n or text[i] not in "0123456789":
                    raise _UrlFailure("ipv6")
                while i < n and text[i] in "0123456789":
                    number = int(text[i])
                    if piece is None:
                        piece = number
                    elif piece == 0:
                        raise _UrlFailure("ipv6")
                    else:
                        piece = piece * 10 + number
                    if piece > 255:
                        raise _UrlFailure("ipv6")
                    i += 1
                pieces[index] = pieces[index] * 256 + piece
                seen += 1
                if seen in (2, 4):
                    index += 1
            if seen != 4:
                raise _UrlFailure("ipv6")
            break
        if i < n and text[i] == ":":
            i += 1
            if i >= n:
                raise _UrlFailure("ipv6")
        elif i < n:
            raise _UrlFailure("ipv6")
        pieces[index] = value
        index += 1
    if compress is not None:
        swaps = index - compress
        index = 7
        while index != 0 and swaps > 0:
            pieces[index], pieces[compress + swaps - 1] = pieces[compress + swaps - 1], pieces[index]
            index -= 1
            swaps -= 1
    elif index != 8:
        raise _UrlFailure("ipv6")
    # Serialize: the first longest run of two or more zero pieces becomes "::".
    best_start, best_len, run_start = None, 1, None
    for k in range(9):
        if k < 8 and pieces[k] == 0:
            run_start = k if run_start is None else run_start
        else:
            if run_start is not None and k - run_start > best_len:
                best_start, best_len = run_start, k - run_start
            run_start = None
    out, k = "", 0
    while k < 8:
        if k == best_start:
            out += "::" if k == 0 else ":"
            k += best_len
            continue
        out += format(pieces[k], "x") + (":" if k < 7 else "")
        k += 1
    return out


# §5.3: besides ASCII a host may hold only the lowercase letters of Latin-1, which UTS #46
# leaves unchanged; any other international name is refused (the caller's WHATWG URL parser
# maps it to punycode first), so no mapping table decides an answer.
_HOST_CODE_POINTS = re.compile("[\x00-\x7f\u00df-\u00f6\u00f8-\u00ff]*")


def _domain_to_ascii(domain: str) -> str:
    if MUTANT == "5.3-3" and not domain.isascii():  # IDNA 2003 from the standard library
        try:
            return domain.encode("idna").decode("ascii").lower()
        except UnicodeError:
            raise _UrlFailure("idna") from None
    if not _HOST_CODE_POINTS.fullmatch(domain):
        raise _UrlFailure("a host outside ASCII and the lowercase Latin-1 letters")
    if not domain.isascii() and any(ascii_lower(label).startswith("xn--") for label in domain.split(".")):
        raise _UrlFailure("an xn-- label beside a Latin-1 letter")
    labels = []
    for label in ascii_lower(domain).split("."):
        if label.isascii():
            labels.append(label)
        else:
            labels.append("xn--" + label.encode("punycode").decode("ascii"))
    result = ".".join(labels)
    if result == "":
        raise _UrlFailure("empty host")
    return result


def _host(text: str) -> str:
    from urllib.parse import unquote_to_bytes

    if text.startswith("["):
        if not text.endswith("]"):
            raise _UrlFailure("ipv6 brackets")
        return "[" + _ipv6(text[1:-1]) + "]"
    domain = unquote_to_bytes(well_formed(text)).decode("utf-8", errors="replace")
    ascii_domain = _domain_to_ascii(domain)
    if any(c in _FORBIDDEN_DOMAIN for c in ascii_domain) or "\ufffd" in ascii_domain:
        raise _UrlFailure("forbidden code point")
    return _ipv4(ascii_domain) if _ends_in_number(ascii_domain) else ascii_domain


def parse_http_url(url: str) -> tuple:
    """(scheme, host, port or None) of an http(s) URL per the WHATWG URL Standard; raises _UrlFailure."""
    text = url.strip("".join(chr(c) for c in range(0x21)))
    text = text.replace("\t", "").replace("\n", "").replace("\r", "")
    colon = text.find(":")
    scheme = ascii_lower(text[:colon]) if colon > 0 else ""
    if scheme not in _DEFAULT_PORTS or not text[0].isascii() or not text[0].isalpha():
        raise _UrlFailure("not an http(s) URL")
    rest = text[colon + 1 :].lstrip("/\\")
    end = min([k for k in (rest.find(c) for c in "/\\?#") if k != -1] or [len(rest)])
    authority = rest[:end]
    if "@" in authority:
        authority = authority[authority.rfind("@") + 1 :]
        if authority == "":
            raise _UrlFailure("credentials without a host")
    depth, split = 0, None
    for k, c in enumerate(authority):
        if c == "[":
            depth = 1
        elif c == "]":
            depth = 0
        elif c == ":" and depth == 0:
            split = k
            break
    host_text, port_text = (authority, "") if split is None else (authority[:split], authority[split + 1 :])
    if host_text == "":
        raise _UrlFailure("empty host")
    port = None
    if port_text != "":
        if any(c not in "0123456789" for c in port_text) or int(port_text) > 65535:
            raise _UrlFailure("port")
        port = int(port_text)
        if port == _DEFAULT_PORTS[scheme] and MUTANT != "5.3-2":
            port = None
    return scheme, _host(host_text), port


def authority_of(url: str) -> str:
    """SPEC.md §5.3: the WHATWG URL host, then ":port" only when it is not the scheme's default."""
    try:
        _, host, port = parse_http_url(url)
    except _UrlFailure:
        raise ProtocolError("ERR_STAMP_REQUEST", "an http(s) URL with a host", _describe(url)) from None
    return host if port is None else f"{host}:{port}"


def credential_of(headers: Iterable) -> str:
    """SPEC.md §5.3: x-api-key (non-empty), else the Bearer token of Authorization, else ""."""
    values = {ascii_lower(name): value for name, value in headers}
    key = values.get("x-api-key", "").strip(" \t")
    if key:
        return key
    flags = re.DOTALL if MUTANT == "5.3-4" else re.IGNORECASE | re.DOTALL
    match = re.fullmatch(r"[ \t]*[Bb]earer +(.*?)[ \t]*" if MUTANT == "5.3-4" else r"[ \t]*bearer +(.*?)[ \t]*", values.get("authorization", ""), flags)
    return match.group(1) if match else ""


def compute_stamp(key: bytes, body: bytes, stamp_start: int, stamp_end: int, request: Optional[dict] = None) -> str:
    if len(key) < 32 and MUTANT != "5.1-1":
        raise ProtocolError("ERR_STAMP_KEY", "a key of at least 32 bytes", f"{len(key)} bytes")
    length = stamp_end - stamp_start
    if stamp_start < 0 or stamp_end > len(body) or length % 2 or not 32 <= length <= 64:
        raise ProtocolError("ERR_ENVELOPE_STAMP", "a 32-64 digit stamp region", f"[{stamp_start}, {stamp_end})")
    prefix = request_base(request) if request is not None else b""
    message = prefix + body[:stamp_start] + b"0" * length + body[stamp_end:]
    if MUTANT == "5.1-2":
        return hashlib.sha256(message).hexdigest()[:length]
    return hmac.new(key, message, hashlib.sha256).hexdigest()[:length]


def is_bound(envelope: dict) -> bool:
    """Whether the envelope's stamp covers the request (r1, and i1 since 1.2)."""
    binding = envelope.get("binding")
    return binding == "request" or (binding == "install" and MUTANT != "5.4-3")


def verify_stamp(key: bytes, body: bytes, request: Optional[dict] = None) -> str:
    """valid | invalid | missing | not_last | malformed (MAC only; window and replay are policy).

    An r1 or i1 envelope's stamp covers ``request`` too (§5.3, §5.4); a v1 envelope's never does.
    """
    loc = locate_envelope(body)
    if loc["status"] != "found":
        return loc["status"]
    bound = is_bound(loc["envelope"])
    if bound and request is None:
        return "invalid"
    expected = compute_stamp(key, body, loc["stampStart"], loc["stampEnd"], request if bound else None)
    return "valid" if hmac.compare_digest(expected, loc["envelope"]["stamp"]) else "invalid"


# ---------------------------------------------------------------------------------------
# §6 fingerprint


def first_user_text(request: Any) -> str:
    if not isinstance(request, dict) or not isinstance(request.get("messages"), list):
        return ""
    for message in request["messages"]:
        if not isinstance(message, dict) or message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            for block in content:
                if isinstance(block, dict) and block.get("type") == "text":
                    text = block.get("text")
                    return text if isinstance(text, str) else ""
        if MUTANT == "6.1-1":  # goes on to a later user message
            continue
        return ""
    return ""


def fingerprint_chars(text: str) -> str:
    points = well_formed(text)  # a Python str indexes by code point
    return "".join(points[i] if i < len(points) else "0" for i in (4, 7, 20))


def fingerprint(text: str, salt: str, version: str) -> str:
    return hashlib.sha256(utf8(salt + fingerprint_chars(text) + version)).hexdigest()[:3]


# ---------------------------------------------------------------------------------------
# §8 signed blocks

SIGNED_CONTENT = {"thinking": "thinking", "redacted_thinking": "data", "connector_text": "text"}
SIGNATURE_BYTES = {"hs256": 32, "ed25519": 64}


def _b64url_encode(data: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def parse_block_signature(value: Any) -> dict:
    import base64

    if not isinstance(value, str):
        raise ProtocolError("ERR_SIGNATURE_TYPE", "a string", _describe(value))
    if len(utf8(value)) > 256:
        raise ProtocolError("ERR_SIGNATURE_SYNTAX", "at most 256 bytes", "more")
    parts = value.split(".")
    if len(parts) != 5 or parts[0] != "ms1":
        raise ProtocolError("ERR_SIGNATURE_SYNTAX", "ms1.<alg>.<kid>.<scope>.<sig>", _describe(value))
    _, alg, kid, scope, sig = parts
    if alg not in SIGNATURE_BYTES:
        raise ProtocolError("ERR_SIGNATURE_ALGORITHM", "hs256 or ed25519", _describe(alg))
    if not _full(r"[A-Za-z0-9_\-]{1,32}", kid):
        raise ProtocolError("ERR_SIGNATURE_KID", "a key id", _describe(kid))
    if scope not in ("k", "c"):
        raise ProtocolError("ERR_SIGNATURE_SCOPE", "k or c", _describe(scope))
    if not _full(r"[A-Za-z0-9_\-]*" if MUTANT != "8.2-1" else r"[A-Za-z0-9_\-]+", sig):
        raise ProtocolError("ERR_SIGNATURE_ENCODING", "base64url without padding", _describe(sig))
    n = SIGNATURE_BYTES[alg]
    chars = -(-n * 4 // 3)
    if len(sig) != chars:
        raise ProtocolError("ERR_SIGNATURE_LENGTH", f"{chars} characters", f"{len(sig)} characters")
    raw = base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4))
    if _b64url_encode(raw) != sig and MUTANT != "8.2-2":
        raise ProtocolError("ERR_SIGNATURE_ENCODING", "canonical base64url", _describe(sig))
    return {"alg": alg, "kid": kid, "scope": scope, "sig": raw}


REDACTED_SIGNATURE_SEPARATOR = "~"


def split_redacted_data(data: str) -> tuple:
    """(signature or None, original data) of a redacted_thinking block's data (SPEC §8.1)."""
    if not data.startswith("ms1."):
        return None, data
    at = data.find(REDACTED_SIGNATURE_SEPARATOR)
    if at <= 0 or (at > 256 if MUTANT == "8.1-1" else len(utf8(data[:at])) > 256):
        return None, data
    return data[:at], data[at + 1 :]


def signed_block_content(block: Any) -> tuple:
    kind = block.get("type") if isinstance(block, dict) else None
    if kind not in SIGNED_CONTENT:
        raise ProtocolError("ERR_BLOCK_TYPE", "thinking | redacted_thinking | connector_text", _describe(kind))
    content = block.get(SIGNED_CONTENT[kind])
    if not isinstance(content, str):
        raise ProtocolError("ERR_BLOCK_CONTENT", f'a string "{SIGNED_CONTENT[kind]}"', _describe(content))
    return kind, split_redacted_data(content)[1] if kind == "redacted_thinking" else content


def _s(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _block_items(block: Any) -> list:
    if not isinstance(block, dict):
        return ["b", ""]
    kind = _s(block.get("type"))
    if kind in ("text", "connector_text"):
        return ["b", kind, _s(block.get("text"))]
    if kind == "thinking":
        return ["b", kind, _s(block.get("thinking"))]
    if kind == "redacted_thinking":
        return ["b", kind, split_redacted_data(_s(block.get("data")))[1]]
    if kind == "tool_use":
        return ["b", kind, _s(block.get("id")), _s(block.get("name"))]
    if kind == "tool_result":
        items = ["b", kind, _s(block.get("tool_use_id"))]
        content = block.get("content")
        if MUTANT == "8.4-1":
            return items
        if isinstance(content, str):
            items.append(content)
        elif isinstance(content, list):
            items += [_s(inner.get("text")) for inner in content if isinstance(inner, dict) and inner.get("type") == "text"]
        return items
    return ["b", kind]


def conversation_digest(messages: list) -> str:
    items = ["moat-ctx/1"]
    for message in messages:
        m = message if isinstance(message, dict) else {}
        items += ["m", _s(m.get("role"))]
        content = m.get("content")
        if isinstance(content, str):
            items += ["b", "text", content]
        elif isinstance(content, list):
            for block in content:
                items += _block_items(block)
    return hashlib.sha256(lp(items)).hexdigest()


def signing_input(block: Any, ctx: dict) -> bytes:
    kind, content = signed_block_content(block)
    if ctx["alg"] not in ("hs256", "ed25519") and MUTANT != "8.3-2":
        raise ProtocolError("ERR_SIGNATURE_ALGORITHM", "hs256 or ed25519", _describe(ctx["alg"]))
    if not _full(r"[A-Za-z0-9_-]{1,32}", ctx["kid"]) and MUTANT != "8.3-2":
        raise ProtocolError("ERR_SIGNATURE_KID", "a key id", _describe(ctx["kid"]))
    context = ctx.get("context")
    scope = "k" if context is None or (MUTANT == "8.3-3" and context == "") else "c"
    items = ["moat-sig/1", ctx["alg"], ctx["kid"], scope, ctx["apiKeyId"], ctx["model"], kind, content, context or ""]
    return lp(items[:-1] if MUTANT == "8.3-1" and scope == "k" else items)


def sign_hs256(key: bytes, block: Any, ctx: dict) -> str:
    data = signing_input(block, ctx)
    if ctx["alg"] != "hs256":
        raise ProtocolError("ERR_SIGNATURE_ALGORITHM", "a signing context with alg hs256", _describe(ctx["alg"]))
    mac = hmac.new(key, data, hashlib.sha256).digest()
    scope = "k" if ctx.get("context") is None or (MUTANT == "8.3-3" and ctx.get("context") == "") else "c"
    signature = f"ms1.hs256.{ctx['kid']}.{scope}.{_b64url_encode(mac)}"
    parse_block_signature(signature)  # a kid outside §8.2's grammar is refused, never emitted
    return signature


# ---------------------------------------------------------------------------------------
# §9 gateway rules


def _fail_rules(expected: str, got: str) -> ProtocolError:
    return ProtocolError("ERR_GATEWAY_RULES", expected, got)


def _patterns(value: Any, where: str, pattern: str) -> list:
    if not isinstance(value, list):
        raise _fail_rules(f"{where} as an array", _describe(value))
    if len(value) > 32:
        raise _fail_rules(f"at most 32 entries in {where}", str(len(value)))
    for i, p in enumerate(value):
        if not isinstance(p, str) or len(p) > 128 or not _full(pattern, p):
            raise _fail_rules(f"{where}[{i}] as a lowercase literal", _describe(p))
    return list(value)


def parse_gateway_rule_table(table: Any) -> dict:
    size = len(utf8(json.dumps(table, separators=(",", ":"), ensure_ascii=False)))
    if size > 65536:
        raise _fail_rules("at most 65536 bytes", f"{size} bytes")
    if not isinstance(table, dict):
        raise _fail_rules("an object", _describe(table))
    for key in table:
        if key not in ("version", "revision", "rules"):
            raise _fail_rules("members version, revision, rules", _describe(key))
    if not _is_int(table.get("version")) or table.get("version") != 1:
        raise _fail_rules("version 1", _describe(table.get("version")))
    revision = table.get("revision")
    if not isinstance(revision, str) or not _full(r"[0-9]{4}\.[0-9]{2}\.[0-9]{2}(\.[0-9]{1,4})?", revision):
        raise _fail_rules("revision YYYY.MM.DD[.N]", _describe(revision))
    rules = table.get("rules")
    if not isinstance(rules, list):
        raise _fail_rules("rules as an array", _describe(rules))
    if len(rules) > 256:
        raise _fail_rules("at most 256 rules", str(len(rules)))
    ids: set = set()
    out = []
    for i, rule in enumerate(rules):
        if not isinstance(rule, dict):
            raise _fail_rules(f"rules[{i}] as an object", _describe(rule))
        for key in rule:
            if key not in ("id", "name", "headerPrefixes", "hostSuffixes"):
                raise _fail_rules(f"rules[{i}] known members", _describe(key))
        rid = rule.get("id")
        if not isinstance(rid, str) or not _full(r"[a-z0-9][a-z0-9\-]{0,31}", rid):
            raise _fail_rules(f"rules[{i}].id", _describe(rid))
        if rid in ids and MUTANT != "9-1":
            raise _fail_rules("unique rule ids", f'"{rid}" twice')
        ids.add(rid)
        name = rule.get("name")
        if not isinstance(name, str) or not name or len(utf8(name)) > 64:
            raise _fail_rules(f"rules[{i}].name of 1-64 bytes", _describe(name))
        prefixes = _patterns(rule.get("headerPrefixes"), f"rules[{i}].headerPrefixes", r"[a-z0-9][a-z0-9._\-]{0,127}")
        label = r"[a-z0-9]([a-z0-9\-]*[a-z0-9])?"
        suffixes = _patterns(rule.get("hostSuffixes"), f"rules[{i}].hostSuffixes", rf"\.?{label}(\.{label})+")
        if not prefixes and not suffixes:
            raise _fail_rules(f"rules[{i}] with at least one pattern", "none")
        out.append({"id": rid, "name": name, "headerPrefixes": prefixes, "hostSuffixes": suffixes})
    return {"version": 1, "revision": revision, "rules": out}


def normalize_host(host_or_url: str) -> str:
    """SPEC.md §9: the host of a base URL (WHATWG, http and https only) or of a bare host[:port]."""
    if "://" in host_or_url:
        try:
            _, host, _ = parse_http_url(host_or_url)
        except _UrlFailure:
            return ""
    else:
        host = re.sub(r":[0-9]*\Z" if MUTANT == "9-3" else r":[0-9]+\Z", "", ascii_lower(host_or_url.strip(" \t")))
    return host[:-1] if host.endswith(".") else host


def _host_matches(host: str, suffix: str) -> bool:
    if suffix.startswith("."):
        if MUTANT == "9-4":
            return host.endswith(suffix[1:])
        return host.endswith(suffix) or host == suffix[1:]
    return host == suffix


def detect_gateways(table: dict, headers: Iterable = (), base_url: Optional[str] = None) -> list:
    names = [ascii_lower(name) for name, _ in headers]
    host = normalize_host(base_url) if base_url is not None else ""
    detections = []
    for rule in table["rules"]:
        evidence: list = []
        for name in names:
            item = f"header:{name}"
            matches = (p in name if MUTANT == "9-2" else name.startswith(p) for p in rule["headerPrefixes"])
            if any(matches) and item not in evidence:
                evidence.append(item)
        if host and any(_host_matches(host, s) for s in rule["hostSuffixes"]):
            evidence.append(f"host:{host}")
        if evidence:
            detections.append({"id": rule["id"], "evidence": sorted(evidence, key=lambda e: e.encode("utf-8"))})
    return detections


# ---------------------------------------------------------------------------------------
# §10 negotiation

FEATURES = ("attribution", "attestation", "fingerprint", "anti_distillation", "signed_blocks", "telemetry", "request_binding", "install_keys")
# Not "//...": resolved against the base URL, that names another host.
_PATH = r"/(?!/)[A-Za-z0-9._~/\-]{0,255}"
_KID = r"[A-Za-z0-9_\-]{1,32}"


def parse_discovery(doc: Any) -> dict:
    root = doc.get("moat") if isinstance(doc, dict) else None
    if not isinstance(root, dict):
        raise ProtocolError("ERR_DISCOVERY", 'an object with a "moat" object member', _describe(doc))
    versions = root.get("versions")
    least = 0 if MUTANT == "10-1" else 1
    if not isinstance(versions, list) or not least <= len(versions) <= 16 or not all(_is_int(v, 1) for v in versions):
        raise ProtocolError("ERR_DISCOVERY", '"versions" as positive integers', _describe(versions))
    features = root.get("features", [])
    if not isinstance(features, list) or len(features) > 64 or not all(isinstance(f, str) for f in features):
        raise ProtocolError("ERR_DISCOVERY", '"features" as strings', _describe(features))
    out: dict = {"versions": [int(v) for v in versions], "features": [f for f in features if f in FEATURES]}
    for member in ("telemetry", "flags"):
        if member not in root:
            continue
        value = root[member]
        if not isinstance(value, str) or not _full(_PATH, value):
            raise ProtocolError("ERR_DISCOVERY", f'"{member}" as an absolute path', _describe(value))
        out[member] = value
    if "install_keys" in out["features"] or (MUTANT == "10.1-2" and "enrollment" in root):
        enrollment = _parse_discovery_enrollment(root.get("enrollment"))
        if enrollment is not None:
            out["enrollment"] = enrollment
    return out


def _parse_discovery_enrollment(value: Any) -> Optional[dict]:
    if value is None and MUTANT == "10.1-1":
        return None
    if not isinstance(value, dict):
        raise ProtocolError("ERR_DISCOVERY", '"enrollment" as an object', _describe(value))
    for member in ("challenge", "enroll"):
        path = value.get(member)
        if not isinstance(path, str) or not _full(_PATH, path):
            raise ProtocolError("ERR_DISCOVERY", f'"enrollment.{member}" as an absolute path', _describe(path))
    if not isinstance(value.get("kid"), str) or not _full(_KID, value["kid"]):
        raise ProtocolError("ERR_DISCOVERY", '"enrollment.kid" as a key id', _describe(value.get("kid")))
    if b64url32(value.get("key")) is None:
        raise ProtocolError("ERR_DISCOVERY", '"enrollment.key" as base64url of 32 bytes', _describe(value.get("key")))
    return {"challenge": value["challenge"], "enroll": value["enroll"], "kid": value["kid"], "key": value["key"]}


def parse_version_header(value: Optional[str]) -> list:
    if value is None:
        return []
    versions = []
    for part in value.split(","):
        part = part.strip(" \t")
        if not _full(r"[1-9][0-9]{0,3}", part):
            if MUTANT == "10-2":
                continue
            return []
        versions.append(int(part))
    return versions


def negotiate_version(server: list, client: list) -> Optional[int]:
    common = [v for v in client if v in server]
    if MUTANT == "10-3":
        return min(common) if common else None
    return max(common) if common else None


# ---------------------------------------------------------------------------------------
# §11 telemetry

TELEMETRY_SCHEMAS = {
    "gateway_detected": [("gateways", "strings", False), ("evidence", "strings", True)],
    "harden_status": [("dumpable", "boolean", False), ("tracer", "integer", True), ("platform", "string", False), ("skipped", "strings", True)],
    "attestation_unavailable": [("reason", "string", False)],
    "layer_degraded": [("layer", "string", False), ("reason", "string", False)],
}


def _telemetry_fail(expected: str, got: str) -> ProtocolError:
    return ProtocolError("ERR_TELEMETRY", expected, got)


def _tstring(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value or (len(value) if MUTANT == "11-3" else len(utf8(value))) > 256:
        raise _telemetry_fail(f"{where} as a string of 1-256 bytes", _describe(value))
    return value


def parse_telemetry_batch(batch: Any, byte_length: Optional[int] = None) -> dict:
    if byte_length is not None and byte_length > 65536 and MUTANT != "11-1":
        raise _telemetry_fail("at most 65536 bytes", f"{byte_length} bytes")
    if not isinstance(batch, dict):
        raise _telemetry_fail("an object", _describe(batch))
    if not _is_int(batch.get("v")) or batch.get("v") != 1:
        raise _telemetry_fail('"v": 1', _describe(batch.get("v")))
    client = batch.get("client")
    if not isinstance(client, dict):
        raise _telemetry_fail('"client" as an object', _describe(client))
    cv = _tstring(client.get("cv"), "client.cv")
    ep = _tstring(client.get("ep"), "client.ep")
    events = batch.get("events")
    if not isinstance(events, list) or len(events) > 100:
        raise _telemetry_fail('"events" as an array of at most 100', _describe(events))
    out = []
    for i, event in enumerate(events):
        if not isinstance(event, dict):
            raise _telemetry_fail(f"events[{i}] as an object", _describe(event))
        kind = _tstring(event.get("type"), f"events[{i}].type")
        if not _is_int(event.get("ts")):
            raise _telemetry_fail(f"events[{i}].ts as Unix seconds", _describe(event.get("ts")))
        reduced: dict = {"type": kind, "ts": int(event["ts"])}
        if MUTANT == "11-2" and kind in TELEMETRY_SCHEMAS:  # unknown members kept
            reduced = {**event, **reduced}
        for member, kind_of, optional in TELEMETRY_SCHEMAS.get(kind, []):
            where = f"events[{i}].{member}"
            if member not in event and optional:
                continue
            value = event.get(member)
            if kind_of == "string":
                reduced[member] = _tstring(value, where)
            elif kind_of == "boolean":
                if not isinstance(value, bool):
                    raise _telemetry_fail(f"{where} as a boolean", _describe(value))
                reduced[member] = value
            elif kind_of == "integer":
                if not _is_int(value):
                    raise _telemetry_fail(f"{where} as a non-negative integer", _describe(value))
                reduced[member] = int(value)
            else:
                if not isinstance(value, list) or len(value) > 32:
                    raise _telemetry_fail(f"{where} as at most 32 strings", _describe(value))
                reduced[member] = [_tstring(v, f"{where}[{j}]") for j, v in enumerate(value)]
        out.append(reduced)
    return {"v": 1, "client": {"cv": cv, "ep": ep}, "events": out}


# ---------------------------------------------------------------------------------------
# §5.4 install keys, §10.2-§10.4 enrollment, §13 the install signal

ATTESTATION_SIGNALS = ("valid", "invalid", "missing", "replayed", "stale", "unknown_key", "unavailable", "revoked")
INSTALL_KEY_LABEL = "moat-install/1"
ENROLLMENT_CHALLENGE_PATH = "/v1/moat/enroll/challenge"
ENROLLMENT_PATH = "/v1/moat/enroll"
MAX_CHALLENGE_LIFETIME = 300
_INSTALL_ID = r"i[0-9a-f]{24}"


def b64url32(value: Any) -> Optional[bytes]:
    """The 32 bytes of canonical unpadded base64url text, else None (§2: one key, one spelling)."""
    if not isinstance(value, str):
        return None
    if MUTANT == "10.3-1":  # padding and non-zero trailing bits tolerated
        try:
            data = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        except ValueError:
            return None
        return data if len(data) == 32 else None
    if not _full(r"[A-Za-z0-9_\-]{42}[AEIMQUYcgkosw048]", value):
        return None
    return base64.urlsafe_b64decode(value + "=")


def _enroll_fail(expected: str, got: Any) -> ProtocolError:
    return ProtocolError("ERR_ENROLLMENT", expected, _describe(got))


def _x25519(private_key: bytes, public_key: bytes) -> bytes:
    """X25519 (RFC 7748) through the ``cryptography`` package; all zero when it refuses a low-order point."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

    try:
        return X25519PrivateKey.from_private_bytes(private_key).exchange(X25519PublicKey.from_public_bytes(public_key))
    except ValueError:
        return bytes(32)  # OpenSSL refuses an all-zero result itself; the caller checks for it either way


def _hkdf_sha256(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    """HKDF (RFC 5869) with SHA-256."""
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out += block
        counter += 1
    return out[:length]


def derive_install_key(private_key: bytes, peer_public_key: bytes, challenge: bytes, install_id: Any, ekid: Any, install_public_key: Any) -> bytes:
    """K_i = HKDF-SHA-256(X25519(private, peer public), salt = challenge, info = lp([label, iid, ekid, install_key]), 32)."""
    for name, value in (("private key", private_key), ("peer public key", peer_public_key), ("challenge", challenge)):
        if len(value) != 32:
            raise _enroll_fail(f"a {name} of 32 bytes", f"{len(value)} bytes")
    if not isinstance(install_id, str) or not _full(_INSTALL_ID, install_id):
        raise _enroll_fail("an install id", install_id)
    if not isinstance(ekid, str) or not _full(_KID, ekid):
        raise _enroll_fail("an ekid", ekid)
    if b64url32(install_public_key) is None:
        raise _enroll_fail("the install public key as base64url of 32 bytes", install_public_key)
    z = _x25519(private_key, peer_public_key)
    if z == bytes(32) and MUTANT != "5.4-2":
        raise _enroll_fail("a public key of full order", "a low-order point")
    items = [INSTALL_KEY_LABEL, ekid, install_id, install_public_key] if MUTANT == "5.4-1" else [INSTALL_KEY_LABEL, install_id, ekid, install_public_key]
    return _hkdf_sha256(z, challenge, lp(items), 32)


def parse_enrollment_request(body: Any) -> dict:
    if not isinstance(body, dict):
        raise _enroll_fail("an enrollment request object", body)
    if not (_is_int(body.get("v")) and body.get("v") == 1):
        raise _enroll_fail('"v" as 1', body.get("v"))
    for member in ("install_key", "challenge"):
        if b64url32(body.get(member)) is None:
            raise _enroll_fail(f'"{member}" as base64url of 32 bytes', body.get(member))
    if not isinstance(body.get("ekid"), str) or not _full(_KID, body["ekid"]):
        raise _enroll_fail('"ekid" as a key id', body.get("ekid"))
    return {"v": 1, "installKey": body["install_key"], "challenge": body["challenge"], "ekid": body["ekid"]}


def parse_enrollment_answer(body: Any) -> dict:
    if not isinstance(body, dict):
        raise _enroll_fail("an enrollment answer object", body)
    iid = body.get("install_id")
    if not isinstance(iid, str) or re.fullmatch(_INSTALL_ID, iid, flags=re.ASCII | (re.IGNORECASE if MUTANT == "10.3-7" else 0)) is None:
        raise _enroll_fail('"install_id" as i and 24 lowercase hex digits', iid)
    if not isinstance(body.get("ekid"), str) or not _full(_KID, body["ekid"]):
        raise _enroll_fail('"ekid" as a key id', body.get("ekid"))
    return {"installId": iid, "ekid": body["ekid"]}


def parse_challenge_answer(body: Any) -> dict:
    if not isinstance(body, dict):
        raise _enroll_fail("a challenge answer object", body)
    if b64url32(body.get("challenge")) is None:
        raise _enroll_fail('"challenge" as base64url of 32 bytes', body.get("challenge"))
    longest = 86400 if MUTANT == "10.2-1" else MAX_CHALLENGE_LIFETIME
    expires_in = body.get("expires_in")
    if not _is_int(expires_in, 1) or expires_in > longest:
        raise _enroll_fail(f'"expires_in" as an integer from 1 to {MAX_CHALLENGE_LIFETIME}', expires_in)
    return {"challenge": body["challenge"], "expiresIn": int(expires_in)}


def _release_stamp_refusal(facts: dict) -> Optional[dict]:
    """Step 2 of §10.3: only a valid r1 stamp under a release key enrolls."""
    scheme, attestation = facts.get("scheme"), facts.get("attestation")
    if scheme != "r1" and not (MUTANT == "10.3-4" and scheme in ("v1", "i1") and attestation == "valid"):
        return {"status": 401, "reason": "missing" if scheme == "none" else "invalid"}
    if attestation == "replayed":
        return {"status": 409, "reason": "replayed"}
    if attestation == "revoked" and MUTANT != "10.3-3":
        return {"status": 403, "reason": "revoked"}
    if attestation not in ("valid", "revoked"):
        return {"status": 401, "reason": attestation}
    return None


def enrollment_outcome(facts: dict) -> dict:
    """The verifier's answer to an enrollment attempt, its checks in the order of §10.3."""
    challenge_ok = facts.get("challenge") == "fresh" or (MUTANT == "10.2-2" and facts.get("challenge") in ("used", "other_credential"))
    if facts.get("request") != "valid":
        return {"status": 400, "reason": "ERR_ENROLLMENT"}
    if MUTANT == "10.3-2" and not challenge_ok:  # the challenge consumed before the release stamp is checked
        return {"status": 409, "reason": "ERR_ENROLL_CHALLENGE"}
    refusal = _release_stamp_refusal(facts)
    if refusal is not None:
        return refusal
    if facts.get("ekid") != "active":
        return {"status": 400, "reason": "ERR_ENROLLMENT"}
    if not challenge_ok:
        return {"status": 409, "reason": "ERR_ENROLL_CHALLENGE"}
    if facts.get("lowOrder") is True and MUTANT != "10.3-5":
        return {"status": 400, "reason": "ERR_ENROLLMENT"}
    if facts.get("limit") == "over":
        action = facts.get("limitAction", "block")
        if action == "block" and MUTANT != "10.3-6":
            return {"status": 429, "reason": "ERR_ENROLL_LIMIT"}
        if action == "flag":
            return {"status": 201, "install": "over_limit"}
    return {"status": 201, "install": "created"}


def install_signal(facts: dict) -> str:
    """The install signal of a request outside enrollment (§13)."""
    scheme, attestation, install = facts.get("scheme"), facts.get("attestation"), facts.get("install")
    if scheme == "i1":
        if (attestation == "revoked" or (attestation == "valid" and install == "revoked")) and MUTANT != "13-2":
            return "revoked"
        return install if attestation == "valid" and install in ("known", "new", "over_limit") else "none"
    speaks = facts.get("releaseSpeaksInstallKeys") is True and MUTANT != "13-1"
    return "release_only" if scheme in ("r1", "v1") and attestation == "valid" and speaks else "none"


def envelope_scheme_for(features: list, pinned: list, enrolled: bool) -> Optional[str]:
    """The envelope a client stamps for an origin (§10.4): no downgrade from i1 once enrolled."""
    if "attestation" not in features:
        return None
    if enrolled and (MUTANT != "10.4-1" or "install_keys" in features):
        return "i1"
    return "r1" if "request_binding" in features or "request_binding" in pinned else "v1"
