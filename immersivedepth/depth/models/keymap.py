"""Renaming state-dict keys between an official checkpoint layout and our modules (regex rule lists)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence

__all__ = ["Rule", "rename_key", "level_rule"]

# A rule is (compiled pattern, replacement); the replacement may be a string (re.sub syntax) or a callable
# taking the match. The first rule whose pattern matches at the start of the key is applied.
Rule = tuple[re.Pattern, "str | Callable[[re.Match], str]"]


def rename_key(key: str, rules: Sequence[Rule]) -> str:
    """Apply the first matching rule of ``rules`` to ``key`` (unchanged if none matches)."""
    for pattern, repl in rules:
        m = pattern.match(key)
        if m is not None:
            new = repl(m) if callable(repl) else m.expand(repl)
            return new + key[m.end():]
    return key


def level_rule(pattern: str, template: str, offset: int) -> Rule:
    """A rule whose first group is an integer level that is shifted by ``offset`` (e.g. 1-based -> 0-based).

    ``template`` is formatted with ``n`` (the shifted level) and the remaining groups ``g2, g3, ...``.
    """

    def repl(m: re.Match) -> str:
        groups = {f"g{i + 1}": g for i, g in enumerate(m.groups())}
        return template.format(n=int(m.group(1)) + offset, **groups)

    return re.compile(pattern), repl


def rules(pairs: Iterable[tuple[str, str]]) -> list[Rule]:
    """Compile (pattern, replacement) string pairs."""
    return [(re.compile(p), r) for p, r in pairs]
