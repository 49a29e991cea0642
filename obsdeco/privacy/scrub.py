"""PII and secret scrubbing: each match replaced by a typed placeholder such as `<EMAIL>`.

Patterns are checked where a regular expression alone would be wrong: card numbers must pass
the Luhn check and IBANs the ISO 13616 mod-97 check, so that order numbers and reference codes
survive. Secrets are matched first, so a key is never half-replaced by a looser pattern; then
email and IPv6 addresses, then everything made of digits (cards, SSNs, IPv4 addresses, phone
numbers, IBANs) in one pass.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass


def _luhn_ok(match: re.Match[str]) -> bool:
    digits = [int(char) for char in match.group() if char.isdigit()]
    if not 13 <= len(digits) <= 19:
        return False
    total = 0
    for index, digit in enumerate(reversed(digits)):
        if index % 2:
            digit *= 2
            digit -= 9 if digit > 9 else 0
        total += digit
    return total % 10 == 0


def _iban_ok(match: re.Match[str]) -> bool:
    compact = re.sub(r"\s", "", match.group()).upper()
    rearranged = compact[4:] + compact[:4]
    number = "".join(str(int(char, 36)) for char in rearranged)
    return int(number) % 97 == 1


def _ipv6_ok(match: re.Match[str]) -> bool:
    try:
        ipaddress.IPv6Address(match.group())
    except ValueError:
        return False
    return True


def _aws_secret_like(match: re.Match[str]) -> bool:
    """40 characters of the base64 alphabet that read like a random key (mixed case, a digit),
    not like a path or a word."""
    text = match.group()
    return (
        sum(char.isupper() for char in text) >= 3
        and sum(char.islower() for char in text) >= 3
        and any(char.isdigit() for char in text)
        and text.count("/") + text.count("+") <= 4
        and "//" not in text
    )


@dataclass(frozen=True, slots=True)
class Rule:
    """A pattern, the placeholder its matches become, an optional check of each match, and
    the substrings one of which a text must hold for the rule to run at all (a scan of the
    text by `in` costs a fraction of a regular expression's)."""

    placeholder: str
    pattern: re.Pattern[str]
    check: Callable[[re.Match[str]], bool] | None = None
    triggers: tuple[str, ...] = ()
    anchor: str | None = None
    """A character every match contains: the pattern is then tried only near each one."""
    reach: int = 0
    """How far from its anchor a match may start."""


def _alone(match: re.Match[str], before: str = "", after: str = "") -> bool:
    """Not glued to a word (or to the extra characters given) on either side."""
    text, start, end = match.string, match.start(), match.end()
    if start and (text[start - 1].isalnum() or text[start - 1] in before):
        return False
    return not (end < len(text) and (text[end].isalnum() or text[end] in after))


def _card_ok(match: re.Match[str]) -> bool:
    return _alone(match, "-", "-") and _luhn_ok(match)


def _ssn_ok(match: re.Match[str]) -> bool:
    area, group, serial = match.group().split("-")
    return (
        _alone(match, "-", "-")
        and area not in ("000", "666")
        and not area.startswith("9")
        and group != "00"
        and serial != "0000"
    )


def _ipv4_ok(match: re.Match[str]) -> bool:
    return _alone(match, ".", "") and all(int(octet) <= 255 for octet in match.group().split("."))


_NUMBER_CHECKS: dict[str, tuple[str, Callable[[re.Match[str]], bool]]] = {
    "card": ("<CREDIT_CARD>", _card_ok),
    "ssn": ("<SSN>", _ssn_ok),
    "ipv4": ("<IP_ADDRESS>", _ipv4_ok),
    "phone": ("<PHONE>", lambda match: _alone(match, "+", "")),
    "iban": ("<IBAN>", lambda match: _alone(match) and _iban_ok(match)),
}

# Everything made of digits is looked for only inside runs of the characters it is written
# with: finding those runs is one fast scan (the pattern starts with a character class).
_CANDIDATE_RUN = re.compile(r"[\d+(A-Z][\dA-Z ().+-]{6,}")
_NUMBER_PATTERNS = {
    "card": r"\d(?:[ -]?\d){12,18}",
    "ssn": r"\d{3}-\d{2}-\d{4}",
    "ipv4": r"\d{1,3}(?:\.\d{1,3}){3}",
    "phone": r"(?:\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]?\d{2,4}){2,4}"
    r"|\(\d{3}\)[ .-]?\d{3}[ .-]\d{4}|\d{3}[.-]\d{3}[.-]\d{4})(?!\d)",
    "iban": r"[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?",
}
_NUMBERS = re.compile(
    "|".join(f"(?P<{name}>{pattern})" for name, pattern in _NUMBER_PATTERNS.items())
)
_ALTERNATIVES = [(name, re.compile(pattern)) for name, pattern in _NUMBER_PATTERNS.items()]


def _number_at(text: str, match: re.Match[str], end: int) -> tuple[int, str] | None:
    """Where a number starting at `match` ends and its placeholder, trying each kind in turn
    and, when a longer run of digits fails its check, the shorter runs within it."""
    start = match.start()
    for name, pattern in _ALTERNATIVES:
        found = pattern.match(text, start, end)
        if found is None:
            continue
        placeholder, check = _NUMBER_CHECKS[name]
        ends = [found.end()]
        if name == "card":
            ends += [
                index
                for index in range(found.end() - 1, start, -1)
                if text[index] in " -" and text[index - 1].isdigit()
            ]
        for stop in ends:
            candidate = pattern.fullmatch(text, start, stop)
            if candidate is not None and check(candidate):
                return candidate.end(), placeholder
    return None


def _replace_numbers(text: str) -> str:
    pieces: list[str] = []
    cursor = 0
    for run in _CANDIDATE_RUN.finditer(text):
        for match in _NUMBERS.finditer(text, run.start(), run.end()):
            if match.start() < cursor:
                continue
            placeholder, check = _NUMBER_CHECKS[match.lastgroup or ""]
            if check(match):
                pieces += [text[cursor : match.start()], placeholder]
                cursor = match.end()
                continue
            found = _number_at(text, match, run.end())
            if found is not None:
                pieces += [text[cursor : match.start()], found[1]]
                cursor = found[0]
    return "".join(pieces) + text[cursor:] if pieces else text


BUILT_IN_RULES: tuple[Rule, ...] = (
    Rule(
        "<PRIVATE_KEY>",
        re.compile(
            r"-----BEGIN (?:[A-Z]+ )*PRIVATE KEY-----.*?-----END (?:[A-Z]+ )*PRIVATE KEY-----",
            re.DOTALL,
        ),
        triggers=("PRIVATE KEY-----",),
    ),
    Rule(
        "<JWT>",
        re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]+"),
        triggers=("eyJ",),
    ),
    Rule("<API_KEY>", re.compile(r"\bsk-ant-[A-Za-z0-9_-]{20,}"), anchor="sk-ant-", reach=512),
    Rule(
        "<API_KEY>",
        re.compile(r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}"),
        anchor="sk-",
        reach=512,
    ),
    Rule("<AWS_KEY>", re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"), triggers=("AKIA", "ASIA")),
    Rule(
        "<AWS_SECRET>",
        re.compile(r"(?i)\baws_secret_access_key\s*[=:]\s*[\"']?[A-Za-z0-9/+=]{40}\b[\"']?"),
        triggers=("_access_key", "_ACCESS_KEY"),
    ),
    Rule(
        "<AWS_SECRET>",
        re.compile(r"(?<![A-Za-z0-9/+=])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])"),
        _aws_secret_like,
    ),
    Rule(
        "<GITHUB_TOKEN>",
        re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_\w{60,})"),
        triggers=("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
    ),
    Rule("<SLACK_TOKEN>", re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}"), triggers=("xox",)),
    Rule(
        "<BEARER_TOKEN>",
        re.compile(r"(?<=Bearer )[A-Za-z0-9._~+/-]{16,}=*"),
        triggers=("Bearer ",),
    ),
    Rule(
        "<EMAIL>",
        re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b"),
        anchor="@",
        reach=254,
    ),
    Rule(
        "<IP_ADDRESS>",
        re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])"),
        _ipv6_ok,
        anchor=":",
        reach=40,
    ),
)


class Scrubber:
    """Replaces PII and secrets in text: the built-in rules, then the user's patterns (name ->
    regular expression, replaced by `<NAME>`), then the user's callback."""

    def __init__(
        self,
        patterns: Mapping[str, str] | None = None,
        callback: Callable[[str], str] | None = None,
    ) -> None:
        extra = []
        for name, pattern in (patterns or {}).items():
            try:
                compiled = re.compile(pattern)
            except re.error as error:
                raise ValueError(
                    f"pii_patterns[{name!r}] is not a valid regular expression: {error}"
                ) from None
            extra.append(Rule(f"<{name.upper()}>", compiled))
        self._rules = (*BUILT_IN_RULES, *extra)
        self._callback = callback

    def __call__(self, text: str) -> str:
        for rule in self._rules[: len(BUILT_IN_RULES)]:
            text = _replace(rule, text)
        text = _replace_numbers(text)
        for rule in self._rules[len(BUILT_IN_RULES) :]:
            text = _replace(rule, text)
        if self._callback is not None:
            text = self._callback(text)
        return text


def _replace(rule: Rule, text: str) -> str:
    if rule.triggers and not any(trigger in text for trigger in rule.triggers):
        return text
    if rule.anchor is not None:
        return _replace_near_anchors(rule, text)
    check = rule.check
    if check is None:
        return rule.pattern.sub(rule.placeholder, text)
    return rule.pattern.sub(lambda match: rule.placeholder if check(match) else match.group(), text)


def _replace_near_anchors(rule: Rule, text: str) -> str:
    """`_replace` for a rule whose matches all contain its anchor: the pattern is tried only
    within `reach` characters of each anchor, so the rest of the text is never scanned."""
    anchor, check, reach = rule.anchor or "", rule.check, rule.reach
    pieces: list[str] = []
    cursor = 0
    found = text.find(anchor)
    while found != -1:
        for match in rule.pattern.finditer(text, max(cursor, found - reach), found + reach):
            if match.start() > found:
                break
            if found < match.end() and (check is None or check(match)):
                pieces += [text[cursor : match.start()], rule.placeholder]
                cursor = match.end()
                break
        found = text.find(anchor, max(cursor, found + 1))
    return "".join(pieces) + text[cursor:] if pieces else text
