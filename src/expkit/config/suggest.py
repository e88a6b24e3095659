"""Did-you-mean: the closest known name to a misspelt one (imports nothing heavy)."""

from __future__ import annotations

from collections.abc import Iterable


def edit_distance(a: str, b: str) -> int:
    """Optimal-string-alignment distance: insertions, deletions, substitutions and swaps of
    two neighbouring characters each cost 1 (``edit_distance("max_epoch", "max_epochs") == 1``)."""
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                current[j] = min(current[j], previous2[j - 2] + 1)
        previous2, previous = previous, current
    return previous[-1]


def closest(word: str, candidates: Iterable[str]) -> str | None:
    """The candidate nearest to ``word`` when it is near enough to be a typo, else ``None``.

    Near enough: at most a third of the word's characters differ (at least one may), or one is
    the other with a prefix or suffix missing (``epochs`` -> ``max_epochs``). Ties go to the
    candidate listed first.

    >>> closest("cnnn", ["cnn", "mlp", "transformer"])
    'cnn'
    """
    best: tuple[int, str] | None = None
    lowered = word.lower()
    for candidate in dict.fromkeys(candidates):
        if candidate == word:
            return candidate
        distance = edit_distance(lowered, candidate.lower())
        if best is None or distance < best[0]:
            best = (distance, candidate)
    if best is None:
        return None
    distance, candidate = best
    if distance <= max(1, len(word) // 3):
        return candidate
    contained = [c for c in candidates if len(word) >= 4 and (word.lower() in c.lower() or c.lower() in word.lower())]
    return contained[0] if len(contained) == 1 else None


def did_you_mean(word: str, candidates: Iterable[str], template: str = "{}") -> str:
    """`` Did you mean 'x'?`` (with a leading space) or an empty string; ``template`` formats the
    suggestion, e.g. ``"model={}"``."""
    match = closest(word, list(candidates))
    return f" Did you mean '{template.format(match)}'?" if match else ""
