"""Which scores become catalogue pieces, negatives and fillers: seeded, without duplicates."""

from __future__ import annotations

import logging
import re
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.corpus.midi import Voicing, to_seconds
from bench.corpus.render import Runner
from bench.corpus.scores import ScoreInfo, ScoreRef, discover, extract_job, music21_corpus_root
from bench.corpus.spec import COLLECTIONS, MIN_PIECE_S, PALETTES, TAIL_S, CollectionSpec

log = logging.getLogger("bench.corpus")


@dataclass(frozen=True)
class Piece:
    """A selected score with its instrumentation and tempo."""

    id: str
    info: ScoreInfo
    spec: CollectionSpec
    palette: str
    voicing: Voicing
    end_s: float  # end of the last note at the base tempo

    @property
    def programs(self) -> list[int]:
        """Program per part."""
        return list(self.voicing.programs)


def spread_programs(palette: tuple[int, ...], n_parts: int) -> tuple[int, ...]:
    """Spread a top-to-bottom palette over `n_parts` parts."""
    if len(palette) == 1 or n_parts <= 1:
        return tuple(palette[0] for _ in range(max(n_parts, 1)))
    step = (len(palette) - 1) / (n_parts - 1)
    return tuple(palette[round(i * step)] for i in range(n_parts))


def _title_key(title: str) -> str | None:
    """Normalised title used to spot the same tune under two entries."""
    text = re.sub(r"[^a-z0-9äöüß]+", " ", title.lower())
    noise = r"\b(the|a|an|reel|jig|hornpipe|strathspey|waltz|march|polka|air|slide|no|\d+)\b"
    text = "".join(re.sub(noise, " ", text).split())
    return text if len(text) >= 4 else None


def stable_rng(*parts: int | str) -> np.random.Generator:
    """Generator seeded from integers and strings, independent of process and hash seed."""
    return np.random.default_rng(
        [p if isinstance(p, int) else zlib.crc32(p.encode()) for p in parts]
    )


class Selector:
    """Draws scores per collection in a seeded order, skipping duplicates and unusable scores."""

    def __init__(self, runner: Runner, cache_dir: Path, seed: int, cap_s: float) -> None:
        self.runner = runner
        self.cap_s = cap_s
        self.cache_dir = cache_dir
        self.seed = seed
        root = music21_corpus_root()
        self.streams: dict[str, list[ScoreRef]] = {}
        self.pos: dict[str, int] = {}
        for spec in COLLECTIONS:
            refs = discover(spec, root)
            order = stable_rng(seed, spec.name).permutation(len(refs))
            self.streams[spec.name] = [refs[i] for i in order]
            self.pos[spec.name] = 0
        self.used_keys: set[str] = set()
        self.used_titles: set[str] = set()
        self.used_melodies: set[tuple[int, ...]] = set()
        self.used_ids: set[str] = set()
        self.rejected: Counter[str] = Counter()
        self.failures: list[dict[str, str]] = []

    def available(self, spec: CollectionSpec) -> int:
        """Candidates not examined yet."""
        return len(self.streams[spec.name]) - self.pos[spec.name]

    def take(self, spec: CollectionSpec, n: int) -> list[Piece]:
        """Next `n` acceptable pieces of a collection (fewer if it runs out)."""
        out: list[Piece] = []
        stream = self.streams[spec.name]
        while len(out) < n and self.pos[spec.name] < len(stream):
            start = self.pos[spec.name]
            batch = stream[start : start + max(n - len(out), self.runner.workers)]
            infos = self.runner.map(
                extract_job, [(r, str(self.cache_dir)) for r in batch], desc=f"scores {spec.name}"
            )
            log.info("extracted %d %s scores", len(batch), spec.name)
            for info in infos:
                if len(out) == n:
                    break
                self.pos[spec.name] += 1
                piece = self._accept(spec, info)
                if piece is not None:
                    out.append(piece)
        return out

    def _accept(self, spec: CollectionSpec, info: ScoreInfo) -> Piece | None:
        """Turn extraction results into a piece, or None with the reason counted."""
        ref = info.ref
        if info.error:
            log.warning("skipping %s: %s", ref.key, info.error)
            self.failures.append({"score": ref.key, "reason": info.error})
            self.rejected[f"{spec.name}: parse failed"] += 1
            return None
        rng = stable_rng(ref.key)
        qpm = float(round(rng.uniform(*spec.qpm)))
        end_s = float(to_seconds(np.array([info.end_ql]), info.tempo, qpm)[0])
        title_key = (
            _title_key(info.tune or info.title) if spec.ensemble in ("chorale", "folk") else None
        )
        reason = None
        if min(end_s, self.cap_s) + TAIL_S < MIN_PIECE_S:
            reason = "too short"
        elif ref.key in self.used_keys:
            reason = "already used"
        elif title_key is not None and title_key in self.used_titles:
            reason = "same title as a chosen piece"
        elif info.melody is not None and info.melody in self.used_melodies:
            reason = "same melody as a chosen piece"
        if reason:
            self.rejected[f"{spec.name}: {reason}"] += 1
            return None
        self.used_keys.add(ref.key)
        if title_key:
            self.used_titles.add(title_key)
        if info.melody is not None:
            self.used_melodies.add(info.melody)
        palettes = PALETTES[spec.ensemble]
        names = sorted(palettes)
        palette = names[int(stable_rng(self.seed, ref.key, "palette").integers(len(names)))]
        piece_id = ref.slug
        while piece_id in self.used_ids:
            piece_id += "-b"
        self.used_ids.add(piece_id)
        voicing = Voicing(
            ref.key,
            info.notes_file,
            info.tempo,
            qpm,
            spread_programs(palettes[palette], info.n_parts),
            self.cap_s,
        )
        return Piece(piece_id, info, spec, palette, voicing, min(end_s, self.cap_s))


def _allocate(total: int, specs: Sequence[CollectionSpec]) -> dict[str, int]:
    """Split `total` over collections by weight (largest remainder)."""
    weights = np.array([s.weight for s in specs], dtype=np.float64)
    exact = weights / weights.sum() * total
    counts = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - counts), kind="stable")[: total - counts.sum()]:
        counts[i] += 1
    return {s.name: int(c) for s, c in zip(specs, counts, strict=True)}


def take_quota(selector: Selector, specs: Sequence[CollectionSpec], total: int) -> list[Piece]:
    """Take `total` pieces over collections by weight, topping up from others when one runs out."""
    quota = _allocate(total, specs)
    chosen: list[Piece] = []
    for spec in specs:
        chosen += selector.take(spec, quota[spec.name])
    for spec in specs:
        if len(chosen) >= total:
            break
        if selector.available(spec):
            chosen += selector.take(spec, total - len(chosen))
    if len(chosen) < total:
        log.warning("only %d of %d pieces available", len(chosen), total)
    return chosen


def _clean_text(text: str) -> str | None:
    """Metadata text, or None when it is empty, a file name or scanning debris."""
    text = " ".join(text.split())
    if not text or '"' in text or "\\" in text:
        return None
    if re.search(r"\.(mxl|xml|musicxml|krn|abc)$", text, re.IGNORECASE):
        return None
    return text if sum(ch.isalpha() for ch in text) >= 0.6 * len(text) else None


def piece_title(piece: Piece) -> str:
    """Display title: chorale title, else usable score metadata, else the corpus path."""
    info = piece.info
    title = _clean_text(info.title) if piece.spec.trust_titles else None
    return info.tune or title or " ".join(Path(info.ref.path).with_suffix("").parts[1:])


_COMPOSER_DIRS = {
    "beethoven": "Ludwig van Beethoven",
    "haydn": "Joseph Haydn",
    "mozart": "Wolfgang Amadeus Mozart",
    "schumann_robert": "Robert Schumann",
    "schumann_clara": "Clara Schumann",
    "chopin": "Frederic Chopin",
    "joplin": "Scott Joplin",
    "schubert": "Franz Schubert",
    "verdi": "Giuseppe Verdi",
    "weber": "Carl Maria von Weber",
    "handel": "George Frideric Handel",
    "corelli": "Arcangelo Corelli",
    "cpebach": "Carl Philipp Emanuel Bach",
    "beach": "Amy Beach",
    "josquin": "Josquin des Prez",
    "ciconia": "Johannes Ciconia",
}


def piece_composer(piece: Piece) -> str:
    """The collection's composer; for mixed collections the corpus folder's, else the score's."""
    if not piece.spec.composer.startswith("various"):
        return piece.spec.composer
    top = piece.info.ref.path.split("/")[0]
    return _COMPOSER_DIRS.get(top) or _clean_text(piece.info.composer) or piece.spec.composer
