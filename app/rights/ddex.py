"""Reading DDEX ERN 4.x NewReleaseMessages: the SoundRecording resources a label delivers.

Only what a catalogue needs is read: each SoundRecording's ResourceReference, ISRC, display
title, display artist, duration and the reference to its audio file (relative to the message).
Parsing goes through `defusedxml` with DTDs refused outright: an ERN message never needs one,
and refusing them stops entity expansion (billion laughs) and external entities before any
expansion happens. A message with a problem is refused whole, every problem named by resource
and field, so a label fixes its delivery once instead of finding errors one run at a time.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET  # types only; parsing goes through defusedxml
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from urllib.parse import unquote, urlsplit

import defusedxml
import defusedxml.ElementTree as SafeET

from app.catalogues.schemas import normalise_isrc
from app.errors import Unprocessable

ERN_NAMESPACE = re.compile(r"^http://ddex\.net/xml/ern/4\d+$")
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
MAX_RECORDINGS = 10_000
HASH_ALGORITHMS = {"MD5": "md5", "SHA1": "sha1", "SHA256": "sha256", "SHA512": "sha512"}
_DURATION = re.compile(
    r"^P(?:(?P<d>\d+)D)?(?:T(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?$"
)


@dataclass(frozen=True, slots=True)
class Recording:
    """One SoundRecording of a message, validated."""

    reference: str
    isrc: str
    title: str
    artist: str
    duration_s: float
    uri: str  # relative to the message, normalised, never leaving its folder
    hash_algorithm: str | None = None  # a hashlib name
    hash_value: str | None = None  # lower-case hex


@dataclass(frozen=True, slots=True)
class Message:
    message_id: str | None
    namespace: str
    recordings: list[Recording]


@dataclass(frozen=True, slots=True)
class Problem:
    resource: str
    field: str
    message: str

    def as_detail(self) -> dict[str, str]:
        return {"resource": self.resource, "field": self.field, "message": self.message}


class MessageRefused(Unprocessable):
    """The message cannot be imported; `details` names each resource and field at fault."""

    def __init__(self, problems: list[Problem]) -> None:
        first = problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(
            f"DDEX message refused: {first.resource}: {first.field}: {first.message}{more}",
            details=[p.as_detail() for p in problems],
        )


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _children(element: ET.Element, name: str) -> Iterator[ET.Element]:
    """Children by local name: ERN 4 children are unqualified, but some senders put the
    whole message in the ERN namespace."""
    return (child for child in element if _local(child.tag) == name)


def _child(element: ET.Element | None, *path: str) -> ET.Element | None:
    for name in path:
        if element is None:
            return None
        element = next(_children(element, name), None)
    return element


def _text(element: ET.Element | None, *path: str) -> str | None:
    found = _child(element, *path)
    if found is None or found.text is None:
        return None
    return " ".join(found.text.split()) or None


def _preferred(element: ET.Element, name: str) -> ET.Element | None:
    """The first `name` child marked IsDefault, else the first."""
    candidates = list(_children(element, name))
    for candidate in candidates:
        if candidate.get("IsDefault", "").lower() == "true":
            return candidate
    return candidates[0] if candidates else None


def parse_duration(value: str) -> float:
    """Seconds in an xs:duration such as `PT3M20S` or `PT0H1M32.5S`."""
    match = _DURATION.match(value.strip())
    if match is None or not any(match.groupdict().values()):
        raise ValueError(f"not an ISO 8601 duration: {value!r}")
    parts = {k: float(v) if v else 0.0 for k, v in match.groupdict().items()}
    return parts["d"] * 86400 + parts["h"] * 3600 + parts["m"] * 60 + parts["s"]


def relative_uri(value: str) -> str:
    """A file reference as a normalised path relative to the message; ValueError for absolute
    references, other schemes, or paths that leave the message's folder."""
    parts = urlsplit(value.strip())
    if parts.scheme not in ("", "file") or parts.netloc:
        raise ValueError("must be a path relative to the message")
    raw = unquote(parts.path).replace("\\", "/")
    path = PurePosixPath(raw)
    if not raw or path.is_absolute():
        raise ValueError("must be a path relative to the message")
    normalised: list[str] = []
    for part in path.parts:
        if part == "..":
            if not normalised:
                raise ValueError("must not leave the message's folder")
            normalised.pop()
        elif part != ".":
            normalised.append(part)
    if not normalised:
        raise ValueError("names no file")
    return "/".join(normalised)


def parse(data: bytes) -> Message:
    """Parse and validate a NewReleaseMessage; MessageRefused names every problem."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise MessageRefused([Problem("message", "size", f"larger than {MAX_MESSAGE_BYTES} bytes")])
    try:
        root = SafeET.fromstring(data, forbid_dtd=True)
    except defusedxml.DefusedXmlException as exc:
        raise MessageRefused(
            [Problem("message", "DOCTYPE", f"refused: {type(exc).__name__} (DTDs are not allowed)")]
        ) from None
    except ET.ParseError as exc:
        raise MessageRefused([Problem("message", "XML", f"not well-formed: {exc}")]) from None
    namespace = root.tag[1:].partition("}")[0] if root.tag.startswith("{") else ""
    if _local(root.tag) != "NewReleaseMessage" or not ERN_NAMESPACE.match(namespace):
        raise MessageRefused(
            [
                Problem(
                    "message",
                    "NewReleaseMessage",
                    f"expected an ERN 4.x NewReleaseMessage, got <{_local(root.tag)}> in "
                    f"namespace {namespace or '(none)'!r}",
                )
            ]
        )
    resources = _child(root, "ResourceList")
    elements = list(_children(resources, "SoundRecording")) if resources is not None else []
    problems: list[Problem] = []
    if not elements:
        problems.append(Problem("message", "ResourceList/SoundRecording", "no SoundRecording"))
    if len(elements) > MAX_RECORDINGS:
        problems.append(
            Problem("message", "ResourceList", f"more than {MAX_RECORDINGS} SoundRecordings")
        )
        raise MessageRefused(problems)
    parties = _party_names(root)
    recordings = []
    for number, element in enumerate(elements, start=1):
        recording = _recording(element, number, parties, problems)
        if recording is not None:
            recordings.append(recording)
    _no_duplicates(recordings, problems)
    if problems:
        raise MessageRefused(problems)
    return Message(
        message_id=_text(root, "MessageHeader", "MessageId"),
        namespace=namespace,
        recordings=recordings,
    )


def _party_names(root: ET.Element) -> dict[str, str]:
    names = {}
    party_list = _child(root, "PartyList")
    for party in _children(party_list, "Party") if party_list is not None else ():
        reference = _text(party, "PartyReference")
        name_element = _preferred(party, "PartyName")
        name = _text(name_element, "FullName") if name_element is not None else None
        if reference and name:
            names[reference] = name
    return names


def _edition(element: ET.Element) -> ET.Element | None:
    """The stereo edition (a recording may also carry an immersive one)."""
    editions = list(_children(element, "SoundRecordingEdition"))
    for edition in editions:
        if _text(edition, "Type") in (None, "NonImmersiveEdition"):
            return edition
    return editions[0] if editions else None


def _delivery_file(edition: ET.Element | None) -> ET.Element | None:
    """The full audio file: the first delivered file that is not a clip."""
    if edition is None:
        return None
    for details in _children(edition, "TechnicalDetails"):
        if (_text(details, "IsClip") or "").lower() == "true":
            continue
        file = _child(details, "DeliveryFile", "File")
        if file is not None:
            return file
    return None


def _recording(
    element: ET.Element, number: int, parties: dict[str, str], problems: list[Problem]
) -> Recording | None:
    reference = _text(element, "ResourceReference")
    name = f"SoundRecording {reference}" if reference else f"SoundRecording #{number}"
    found = len(problems)

    def problem(field: str, message: str) -> None:
        problems.append(Problem(name, field, message))

    if reference is None:
        problem("ResourceReference", "missing")
    edition = _edition(element)
    raw_isrc = _text(edition, "ResourceId", "ISRC") or _text(element, "ResourceId", "ISRC")
    isrc = ""
    if raw_isrc is None:
        problem("SoundRecordingEdition/ResourceId/ISRC", "missing")
    else:
        try:
            isrc = normalise_isrc(raw_isrc)
        except ValueError as exc:
            problem("SoundRecordingEdition/ResourceId/ISRC", f"{raw_isrc!r}: {exc}")
    title = _text(element, "DisplayTitleText") or _text(
        _preferred(element, "DisplayTitle") or element, "TitleText"
    )
    if title is None:
        problem("DisplayTitleText", "missing")
    artist = _text(element, "DisplayArtistName")
    if artist is None:
        display = _preferred(element, "DisplayArtist")
        artist = parties.get(_text(display, "ArtistPartyReference") or "")
    if artist is None:
        problem("DisplayArtistName", "missing (nor a DisplayArtist with a named party)")
    raw_duration = _text(element, "Duration")
    duration_s = 0.0
    if raw_duration is None:
        problem("Duration", "missing")
    else:
        try:
            duration_s = parse_duration(raw_duration)
        except ValueError as exc:
            problem("Duration", str(exc))
    file = _delivery_file(edition)
    raw_uri = _text(file, "URI") or _file_path(file)
    uri = ""
    if raw_uri is None:
        problem("SoundRecordingEdition/TechnicalDetails/DeliveryFile/File/URI", "missing")
    else:
        try:
            uri = relative_uri(raw_uri)
        except ValueError as exc:
            problem("SoundRecordingEdition/TechnicalDetails/DeliveryFile/File/URI", f"{exc}")
    algorithm, value = _hash_sum(file, problem)
    if len(problems) > found:
        return None
    if reference is None or title is None or artist is None:  # reported above
        return None
    return Recording(
        reference=reference,
        isrc=isrc,
        title=title[:500],
        artist=artist[:500],
        duration_s=duration_s,
        uri=uri,
        hash_algorithm=algorithm,
        hash_value=value,
    )


def _file_path(file: ET.Element | None) -> str | None:
    """ERN 4.1 named files by FileName and FilePath instead of a URI."""
    name = _text(file, "FileName")
    if name is None:
        return None
    folder = _text(file, "FilePath") or ""
    return f"{folder.rstrip('/')}/{name}" if folder else name


def _hash_sum(
    file: ET.Element | None, problem: Callable[[str, str], None]
) -> tuple[str | None, str | None]:
    hash_sum = _child(file, "HashSum")
    if hash_sum is None:
        return None, None
    algorithm = _text(hash_sum, "Algorithm", "HashSumAlgorithmType") or _text(
        hash_sum, "HashSumAlgorithmType"
    )
    value = _text(hash_sum, "HashSumValue") or _text(hash_sum, "HashSum")
    field = "SoundRecordingEdition/TechnicalDetails/DeliveryFile/File/HashSum"
    if algorithm is None or value is None:
        problem(field, "needs an algorithm and a value")
        return None, None
    name = HASH_ALGORITHMS.get(algorithm.upper().replace("-", ""))
    if name is None:
        # An algorithm we cannot compute is not a reason to refuse the delivery.
        return None, None
    if not re.fullmatch(r"[0-9a-fA-F]+", value):
        problem(field, f"{value!r} is not hexadecimal")
        return None, None
    return name, value.lower()


def _no_duplicates(recordings: list[Recording], problems: list[Problem]) -> None:
    seen_references: set[str] = set()
    seen_isrcs: dict[str, str] = {}
    for recording in recordings:
        name = f"SoundRecording {recording.reference}"
        if recording.reference in seen_references:
            problems.append(Problem(name, "ResourceReference", "used twice"))
        seen_references.add(recording.reference)
        if recording.isrc in seen_isrcs:
            problems.append(
                Problem(
                    name,
                    "SoundRecordingEdition/ResourceId/ISRC",
                    f"{recording.isrc} is also SoundRecording {seen_isrcs[recording.isrc]}",
                )
            )
        seen_isrcs.setdefault(recording.isrc, recording.reference)
