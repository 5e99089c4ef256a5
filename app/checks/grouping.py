"""One passage, one payment: matches on two registrations of the same recording count as one use.

When a recording is registered twice (`app.catalogues.overlaps`), a piece that reuses it
matches both tracks over the same stretch of the piece, or (attribution explains the weaker
of two identical sources away) only one of them, whichever won the tie. Paid as two uses, the
re-upload would halve the first registrant's share of the piece; paid to whichever won, it
would hand the money to the copy. So, after attribution and before pricing, matches on a
known pair of registrations that cover the same query span at the same alignment are merged
into one group, and a match on one side of a pair whose other side did not match takes that
side in (the passage lies in the stretch both share): one use, of the earliest registration,
at the group's strongest resemblance. A group that spans an open ownership conflict is paid
into escrow until the conflict is resolved.

Pure: known pairs and matches in, groups out.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace

from app.checks.attribution import Evidence, TrackMatch

# How far apart two runs' alignments may be (in seconds of reference time) and still be one
# alignment: a window hop and a half of the spectral embedder, against its 8 s windows.
ALIGNMENT_TOLERANCE_S = 1.5
# The share of the shorter of two runs' query spans they must have in common.
MIN_SPAN_OVERLAP = 0.5


@dataclass(frozen=True, slots=True)
class Pair:
    """Two registrations of one recording, as detection recorded them."""

    conflict_id: uuid.UUID
    track_id: uuid.UUID  # the newer registration
    original_track_id: uuid.UUID  # the earlier one
    tempo_ratio: float  # original time = tempo_ratio * track time + offset_s
    offset_s: float
    holds_money: bool  # an open ownership conflict (not a same-label duplicate)
    # The stretches both share, in the newer track's time.
    spans: tuple[tuple[float, float], ...] = ()

    def to_original(self, t: float) -> float:
        return self.tempo_ratio * t + self.offset_s

    def to_newer(self, t: float) -> float:
        return (t - self.offset_s) / self.tempo_ratio


@dataclass(frozen=True, slots=True)
class Group:
    """Matches counted as one use: paid to `representative` (with `match`, its own or the one
    implied through a pair) at the group's strongest resemblance, or into escrow while
    `held_by` (an open conflict) is set."""

    representative: uuid.UUID
    match: TrackMatch
    members: tuple[uuid.UUID, ...]
    held_by: uuid.UUID | None


def same_passage(newer: Sequence[Evidence], original: Sequence[Evidence], pair: Pair) -> bool:
    """Whether some run on the newer track and some run on the original cover the same query
    span at the alignment the pair was registered with."""
    for a in newer:
        for b in original:
            common = min(a.query_end, b.query_end) - max(a.query_start, b.query_start)
            shorter = min(a.query_end - a.query_start, b.query_end - b.query_start)
            if shorter <= 0 or common < MIN_SPAN_OVERLAP * shorter:
                continue
            middle = (max(a.query_start, b.query_start) + min(a.query_end, b.query_end)) / 2
            expected = pair.to_original(a.reference_start + (middle - a.query_start))
            at_original = b.reference_start + (middle - b.query_start)
            if abs(at_original - expected) <= ALIGNMENT_TOLERANCE_S:
                return True
    return False


def in_shared_stretch(evidence: Sequence[Evidence], pair: Pair, *, on_newer: bool) -> bool:
    """Whether a run of one side's match lies (mostly) in the stretch the pair shares."""
    for e in evidence:
        start, end = e.reference_start, e.reference_end
        if not on_newer:
            start, end = pair.to_newer(start), pair.to_newer(end)
        length = end - start
        for s, t in pair.spans:
            if length > 0 and min(end, t) - max(start, s) >= MIN_SPAN_OVERLAP * length:
                return True
    return False


def _through(match: TrackMatch, pair: Pair, *, to_original: bool) -> TrackMatch:
    """The match a track implies on its pair's other side: the same runs, in its time."""
    move = pair.to_original if to_original else pair.to_newer
    return replace(
        match,
        evidence=tuple(
            replace(e, reference_start=move(e.reference_start), reference_end=move(e.reference_end))
            for e in match.evidence
        ),
        hits=(),
    )


def group_matches(
    matches: Sequence[tuple[uuid.UUID, TrackMatch]],
    pairs: Sequence[Pair],
    *,
    partners: Collection[uuid.UUID] = (),
) -> list[Group]:
    """Every match in exactly one group, in the order of each group's first member.

    partners : tracks that did not match but may take part (live and licensed), joined
        through a pair with a matched track whose runs lie in the stretch the pair shares
    """
    by_track = dict(matches)
    known = set(by_track) | set(partners)
    parent = {track: track for track in known}

    def root(track: uuid.UUID) -> uuid.UUID:
        while parent[track] != track:
            parent[track] = parent[parent[track]]
            track = parent[track]
        return track

    joined: list[Pair] = []
    for pair in pairs:
        if pair.track_id not in known or pair.original_track_id not in known:
            continue
        newer, original = by_track.get(pair.track_id), by_track.get(pair.original_track_id)
        if newer is not None and original is not None:
            together = same_passage(newer.evidence, original.evidence, pair)
        elif newer is not None:
            together = in_shared_stretch(newer.evidence, pair, on_newer=True)
        elif original is not None:
            together = in_shared_stretch(original.evidence, pair, on_newer=False)
        else:
            together = False
        if together:
            parent[root(pair.track_id)] = root(pair.original_track_id)
            joined.append(pair)

    members: dict[uuid.UUID, list[uuid.UUID]] = {}
    for track in [t for t, _ in matches] + [t for t in partners if t not in by_track]:
        members.setdefault(root(track), []).append(track)
    groups = []
    for tracks in members.values():
        matched = [t for t in tracks if t in by_track]
        if not matched:
            continue  # partners that joined no match
        inside = [p for p in joined if p.track_id in tracks]
        newer_ones = {p.track_id for p in inside}
        # The earliest registration: never the newer side of a pair in the group.
        earliest = sorted((t for t in tracks if t not in newer_ones), key=str) or sorted(
            tracks, key=str
        )
        rep = earliest[0]
        strongest = max(by_track[t].resemblance for t in matched)
        if rep in by_track:
            match = by_track[rep]
        else:
            match = _implied(rep, {t: by_track[t] for t in matched}, inside)
        held = sorted((p.conflict_id for p in inside if p.holds_money), key=str)
        groups.append(
            Group(
                representative=rep,
                match=replace(match, resemblance=strongest),
                members=tuple(tracks),
                held_by=held[0] if held else None,
            )
        )
    return groups


def _implied(
    rep: uuid.UUID, by_track: dict[uuid.UUID, TrackMatch], inside: Sequence[Pair]
) -> TrackMatch:
    """The match the representative (which did not match) takes from the strongest match
    paired with it directly, moved into its time."""
    direct = [
        (by_track[p.track_id], p)
        for p in inside
        if p.original_track_id == rep and p.track_id in by_track
    ] + [
        (by_track[p.original_track_id], p)
        for p in inside
        if p.track_id == rep and p.original_track_id in by_track
    ]
    if not direct:  # joined through another partner: the strongest match, as it is
        return max(by_track.values(), key=lambda m: m.resemblance)
    match, pair = max(direct, key=lambda mp: mp[0].resemblance)
    return _through(match, pair, to_original=pair.original_track_id == rep)
