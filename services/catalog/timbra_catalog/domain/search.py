"""The autocomplete over SAT catalogs, fast for the keystrokes people actually type.

Same answers as ``timbra_shared.cfdi.catalogs.search`` (code prefix first, then rows whose
description has a word starting with every query word, accents and case ignored, shorter
descriptions first), but a one- or two-letter query over c_ClaveProdServ (52,000 rows) or
c_CodigoPostal (95,000) no longer collects and sorts tens of thousands of hits: when the most
selective word is common, the rows are scanned in rank order and the scan stops at ``limit``;
when it is rare, only its hits are looked at. Answers are cached (autocomplete repeats itself).
"""

import bisect
import heapq
import unicodedata
from collections import OrderedDict

from timbra_shared.cfdi import catalogs

DENSE = 20_000  # above this many hits for the most selective word, scan in rank order first
SCAN = 20_000  # rows scanned in rank order before falling back to collecting the hits
CACHE = 20_000


def norm(text: str) -> str:
    text = unicodedata.normalize("NFKD", text.casefold())
    return "".join(ch if ch.isalnum() else " " for ch in text if not unicodedata.combining(ch))


class Index:
    def __init__(self, catalog: str) -> None:
        rows = catalogs.search(catalog, "", 10**7)  # every (code, description), sorted by code
        self.codes = [c for c, _ in rows]
        self.descs = [d for _, d in rows]
        self.folded_codes = [c.casefold() for c in self.codes]
        self.row_words = [tuple(set(norm(d).split())) for d in self.descs]
        order = sorted(range(len(rows)), key=lambda i: (len(self.descs[i]), self.codes[i]))
        self.rank = [0] * len(rows)
        for position, i in enumerate(order):
            self.rank[i] = position
        self.order = order
        postings: dict[str, list[int]] = {}
        for i, words in enumerate(self.row_words):
            for w in words:
                postings.setdefault(w, []).append(i)
        self.words = sorted(postings)
        self.postings = [postings[w] for w in self.words]

    def _word_range(self, token: str) -> tuple[int, int]:
        lo = bisect.bisect_left(self.words, token)
        hi = bisect.bisect_left(self.words, token + "\U0010ffff", lo)
        return lo, hi

    def _hits(self, lo: int, hi: int, cap: int) -> int:
        total = 0
        for k in range(lo, hi):
            total += len(self.postings[k])
            if total > cap:
                break
        return total

    def _matches(self, i: int, tokens: list[str]) -> bool:
        words = self.row_words[i]
        return all(any(w.startswith(t) for w in words) for t in tokens)

    def search(self, q: str, limit: int) -> list[tuple[str, str]]:
        q = (q or "").strip()
        if limit <= 0:
            return []
        if not q:
            return list(zip(self.codes[:limit], self.descs[:limit], strict=True))
        results: list[int] = []
        cq = q.casefold()
        lo = bisect.bisect_left(self.folded_codes, cq)
        while lo < len(self.codes) and self.folded_codes[lo].startswith(cq) and len(results) < limit:
            results.append(lo)
            lo += 1
        tokens = norm(q).split()
        if len(results) < limit and tokens:
            seen = set(results)
            need = limit - len(results)
            ranges = [self._word_range(t) for t in tokens]
            sizes = [self._hits(a, b, DENSE) for a, b in ranges]
            best = min(range(len(tokens)), key=lambda k: sizes[k])
            found: list[int] | None = None
            if sizes[best] > DENSE:  # common word: the best-ranked rows very likely match
                found = []
                for i in self.order[:SCAN]:
                    if i not in seen and self._matches(i, tokens):
                        found.append(i)
                        if len(found) >= need:
                            break
                if len(found) < need:
                    found = None  # the scan was not enough: look at every hit
            if found is None and sizes[best]:
                a, b = ranges[best]
                candidates = {i for k in range(a, b) for i in self.postings[k]}
                others = [t for k, t in enumerate(tokens) if k != best]
                hits = [i for i in candidates if i not in seen and (not others or self._matches(i, others))]
                found = heapq.nsmallest(need, hits, key=self.rank.__getitem__)
            results.extend(found or [])
        return [(self.codes[i], self.descs[i]) for i in results]


class CatalogSearch:
    """One index per catalog (built on first use or by ``warm``) and an LRU of answers."""

    def __init__(self) -> None:
        self.indexes: dict[str, Index] = {}
        self.cache: OrderedDict[tuple[str, str, int], list[tuple[str, str]]] = OrderedDict()

    def warm(self, catalog: str) -> None:
        if catalog not in self.indexes:
            self.indexes[catalog] = Index(catalog)

    def search(self, catalog: str, q: str, limit: int) -> list[tuple[str, str]]:
        key = (catalog, (q or "").strip().casefold(), limit)
        hit = self.cache.get(key)
        if hit is not None:
            self.cache.move_to_end(key)
            return hit
        self.warm(catalog)
        answer = self.indexes[catalog].search(q, limit)
        self.cache[key] = answer
        if len(self.cache) > CACHE:
            self.cache.popitem(last=False)
        return answer
