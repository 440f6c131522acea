"""The builtin router: lexical TF-IDF similarity between the latest turn and each preference.

Offline, deterministic and well under a millisecond: each preference's name, description and
examples become a normalised term vector once, at start; a request costs one tokenisation of its
latest turn and a sparse dot product per preference. Below `threshold` there is no route.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence

from gateway.config import RoutingPreference
from gateway.routing.base import RouteChoice, Turn, latest_turn_text

_WORD = re.compile(r"[a-z][a-z0-9]+")
_STOPWORDS = frozenset(
    """a an and are as at be been but by can could did do does for from had has have how i if in
    into is it its me my of on or our should so than that the their them then there these they
    this to too us was we were what when where which who why will with would you your please""".split()
)
_SUFFIXES = ("ations", "ation", "ings", "ing", "ies", "ied", "ers", "er", "ed", "es", "ly", "s")


def stem(word: str) -> str:
    """A crude suffix stripper: enough to let 'functions'/'function' and 'writing'/'write' meet."""
    for suffix in _SUFFIXES:
        if len(word) - len(suffix) >= 3 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def terms(text: str) -> list[str]:
    return [stem(w) for w in _WORD.findall(text.lower()) if w not in _STOPWORDS]


def _normalise(weights: dict[str, float]) -> dict[str, float]:
    norm = math.sqrt(sum(w * w for w in weights.values())) or 1.0
    return {term: w / norm for term, w in weights.items()}


def _sublinear(counts: Counter[str]) -> dict[str, float]:
    return {term: 1.0 + math.log(n) for term, n in counts.items()}


class BuiltinRouter:
    name = "builtin"

    def __init__(self, preferences: Sequence[RoutingPreference], threshold: float = 0.2) -> None:
        self.threshold = threshold
        documents = [self._document(p) for p in preferences]
        frequency: Counter[str] = Counter()
        for document in documents:
            frequency.update(set(document))
        count = len(documents)
        # Smoothed IDF: a word every preference shares still counts a little.
        self.idf = {t: 1.0 + math.log((1 + count) / (1 + df)) for t, df in frequency.items()}
        self.vectors = [
            (p.name, _normalise({t: w * self.idf[t] for t, w in _sublinear(d).items()}))
            for p, d in zip(preferences, documents, strict=True)
        ]

    @staticmethod
    def _document(preference: RoutingPreference) -> Counter[str]:
        name_terms = terms(preference.name.replace("_", " "))
        text: Iterable[str] = [preference.description, *preference.examples]
        document = Counter(t for part in text for t in terms(part))
        document.update(name_terms * 2)  # the name is the user's own summary: weigh it up
        return document

    def scores(self, text: str) -> list[tuple[str, float]]:
        query_counts = Counter(t for t in terms(text) if t in self.idf)
        if not query_counts:
            return [(name, 0.0) for name, _ in self.vectors]
        query = _normalise({t: w * self.idf[t] for t, w in _sublinear(query_counts).items()})
        return [
            (name, sum(weight * vector.get(term, 0.0) for term, weight in query.items()))
            for name, vector in self.vectors
        ]

    def decide(self, turns: list[Turn]) -> str | None:
        best_name, best_score = None, self.threshold
        for name, score in self.scores(latest_turn_text(turns)):
            if score > best_score:  # strict: ties keep the earlier preference
                best_name, best_score = name, score
        return best_name

    async def choose(self, turns: list[Turn]) -> RouteChoice:
        return RouteChoice(self.decide(turns))

    async def close(self) -> None:
        return None
