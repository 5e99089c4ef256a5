"""DDEX ERN 4.3 NewReleaseMessages written by the tests, with synthesised audio beside them."""

from __future__ import annotations

import hashlib
import io
import xml.etree.ElementTree as ET
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from tests.audio_synth import melody_track, write_audio

ERN_43 = "http://ddex.net/xml/ern/43"
SR = 8000


@dataclass
class Sound:
    """One SoundRecording; a field set to None is left out of the message."""

    reference: str | None
    isrc: str | None
    title: str | None
    artist: str | None
    duration: str | None
    uri: str | None
    hash_sha256: str | None = None
    artist_party: str | None = None  # a DisplayArtist/ArtistPartyReference instead of a name
    extra: dict[str, str] = field(default_factory=dict)


def write_sounds(folder: Path, n: int, *, first_seed: int = 0, seconds: float = 2.5) -> list[Sound]:
    """`n` recordings with audio files under `folder/resources`, 2.5 s each by default."""
    (folder / "resources").mkdir(parents=True, exist_ok=True)
    sounds = []
    for i in range(n):
        seed = first_seed + i
        uri = f"resources/A{i + 1}.wav"
        write_audio(folder / uri, melody_track(seed, seconds=seconds, sr=SR), SR, "WAV")
        sounds.append(
            Sound(
                reference=f"A{i + 1}",
                isrc=f"NOB1C26{seed:05d}",
                title=f"Recording {seed}",
                artist=f"Artist {seed % 7}",
                duration=f"PT0H0M{seconds:g}S",
                uri=uri,
                hash_sha256=hashlib.sha256((folder / uri).read_bytes()).hexdigest(),
            )
        )
    return sounds


def _sub(parent: ET.Element, tag: str, text: str | None = None) -> ET.Element:
    element = ET.SubElement(parent, tag)
    if text is not None:
        element.text = text
    return element


def ern_message(
    sounds: list[Sound],
    *,
    message_id: str = "MSG-1",
    namespace: str = ERN_43,
    qualified: bool = False,
    parties: dict[str, str] | None = None,
) -> bytes:
    """An ERN 4.3 NewReleaseMessage holding `sounds`. `qualified` puts every element in the
    ERN namespace (some senders do), else only the root is, as the schema has it."""
    ET.register_namespace("ern", namespace)
    q = (lambda tag: f"{{{namespace}}}{tag}") if qualified else (lambda tag: tag)
    root = ET.Element(f"{{{namespace}}}NewReleaseMessage", {"LanguageAndScriptCode": "en"})
    header = _sub(root, q("MessageHeader"))
    _sub(header, q("MessageId"), message_id)
    _sub(header, q("MessageCreatedDateTime"), "2026-11-30T10:00:00Z")
    party_list = _sub(root, q("PartyList"))
    for reference, name in (parties or {}).items():
        party = _sub(party_list, q("Party"))
        _sub(party, q("PartyReference"), reference)
        _sub(_sub(party, q("PartyName")), q("FullName"), name)
    resources = _sub(root, q("ResourceList"))
    for sound in sounds:
        element = _sub(resources, q("SoundRecording"))
        if sound.reference is not None:
            _sub(element, q("ResourceReference"), sound.reference)
        _sub(element, q("Type"), "MusicalWorkSoundRecording")
        edition = _sub(element, q("SoundRecordingEdition"))
        _sub(edition, q("Type"), "NonImmersiveEdition")
        if sound.isrc is not None:
            _sub(_sub(edition, q("ResourceId")), q("ISRC"), sound.isrc)
        details = _sub(edition, q("TechnicalDetails"))
        _sub(details, q("TechnicalResourceDetailsReference"), f"T{sound.reference}")
        delivery = _sub(details, q("DeliveryFile"))
        _sub(delivery, q("Type"), "AudioFile")
        _sub(delivery, q("AudioCodecType"), "PCM")
        file = _sub(delivery, q("File"))
        if sound.uri is not None:
            _sub(file, q("URI"), sound.uri)
        if sound.hash_sha256 is not None:
            hash_sum = _sub(file, q("HashSum"))
            _sub(_sub(hash_sum, q("Algorithm")), q("HashSumAlgorithmType"), "SHA256")
            _sub(hash_sum, q("HashSumValue"), sound.hash_sha256)
        if sound.title is not None:
            _sub(element, q("DisplayTitleText"), sound.title)
            _sub(_sub(element, q("DisplayTitle")), q("TitleText"), sound.title)
        if sound.artist is not None:
            _sub(element, q("DisplayArtistName"), sound.artist)
        if sound.artist_party is not None:
            display = _sub(element, q("DisplayArtist"))
            _sub(display, q("ArtistPartyReference"), sound.artist_party)
            _sub(display, q("DisplayArtistRole"), "MainArtist")
        if sound.duration is not None:
            _sub(element, q("Duration"), sound.duration)
        for tag, text in sound.extra.items():
            _sub(element, q(tag), text)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root)


def package(folder: Path, message: bytes, *, name: str = "delivery/MSG-1.xml") -> bytes:
    """A zip of the message (at `name`) and every file under `folder`, beside it."""
    base = name.rpartition("/")[0]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(name, message)
        for path in sorted(folder.rglob("*")):
            if path.is_file() and path.suffix != ".xml":
                relative = path.relative_to(folder).as_posix()
                archive.write(path, f"{base}/{relative}" if base else relative)
    return buffer.getvalue()


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
  <!ENTITY lol "lol">
  <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
  <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
  <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
  <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
  <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
  <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
  <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
  <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<ern:NewReleaseMessage xmlns:ern="http://ddex.net/xml/ern/43">
  <ResourceList><SoundRecording><ResourceReference>&lol9;</ResourceReference></SoundRecording>
  </ResourceList>
</ern:NewReleaseMessage>
"""

EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE m [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<ern:NewReleaseMessage xmlns:ern="http://ddex.net/xml/ern/43">
  <ResourceList><SoundRecording><ResourceReference>&secret;</ResourceReference>
  </SoundRecording></ResourceList>
</ern:NewReleaseMessage>
"""
