"""The segment index: rebuild, snapshot + tail, corruption, withdrawals, embedder tags.

The contract tests run against both backends (FAISS in the process, Milvus through pymilvus on
embedded Milvus Lite); the rest look inside FAISS."""

from __future__ import annotations

import importlib.util
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import faiss
import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from app.catalogues import tracks as track_service
from app.catalogues.ingest import store_segments
from app.catalogues.models import Catalogue, Track
from app.catalogues.segments import SegmentStore
from app.db import make_sessionmaker, transaction
from app.embedding.base import Embedding, l2_normalise
from app.index import factory as index_factory
from app.index.backend import SegmentIndex
from app.index.manager import IndexManager, IndexMismatch, IndexSpec
from app.orgs.models import Organisation

DIM = 16
SPEC = IndexSpec(embedder="test", embedder_version="1", dim=DIM)


class SyntheticCatalogue:
    """Tracks with random unit vectors, written through the ingestion code path."""

    def __init__(self, engine: Engine) -> None:
        self.sessions = make_sessionmaker(engine)
        self.rng = np.random.default_rng(7)
        self.vectors: dict[uuid.UUID, np.ndarray] = {}
        with transaction(self.sessions) as session:
            label = Organisation(kind="label", name="l")
            session.add(label)
            session.flush()
            catalogue = Catalogue(label_id=label.id, name="c")
            session.add(catalogue)
            session.flush()
            self.catalogue_id = catalogue.id

    def add_track(self, n: int = 10, *, spec: IndexSpec = SPEC) -> uuid.UUID:
        track_id = self.new_track(n)
        self.store(track_id, n, spec=spec)
        return track_id

    def new_track(self, n: int) -> uuid.UUID:
        """A pending track of `n` seconds, without segments yet."""
        with transaction(self.sessions) as session:
            track = Track(
                catalogue_id=self.catalogue_id,
                title="t",
                artist="a",
                audio_sha256=uuid.uuid4().hex * 2,
                audio_format="wav",
                size_bytes=1,
                duration_s=float(n),
                sample_rate=22050,
                channels=1,
            )
            session.add(track)
            session.flush()
            return track.id

    def store(self, track_id: uuid.UUID, n: int, *, spec: IndexSpec = SPEC) -> None:
        """Write `n` segments of random unit vectors for a pending track."""
        vectors = l2_normalise(self.rng.standard_normal((n, spec.dim)).astype(np.float32))
        with transaction(self.sessions) as session:
            store_segments(
                session,
                track_id,
                Embedding(vectors, np.arange(n, dtype=np.float32), window_s=4.0),
                embedder_name=spec.embedder,
                embedder_version=spec.embedder_version,
                duration_s=float(n),
            )
        self.vectors[track_id] = vectors

    def withdraw(self, track_id: uuid.UUID) -> None:
        with transaction(self.sessions) as session:
            track_service.withdraw(session, session.get(Track, track_id))  # type: ignore[arg-type]


@pytest.fixture
def catalogue(engine: Engine) -> SyntheticCatalogue:
    return SyntheticCatalogue(engine)


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return make_sessionmaker(engine)


MakeIndex = Callable[..., SegmentIndex]
BACKENDS = [
    "faiss",
    pytest.param(
        "milvus",
        marks=pytest.mark.skipif(
            importlib.util.find_spec("milvus_lite") is None,
            reason="the milvus extra (pymilvus, milvus-lite) is not installed",
        ),
    ),
]


@pytest.fixture(params=BACKENDS)
def make_index(
    request: pytest.FixtureRequest, sessions: sessionmaker[Session]
) -> Iterator[MakeIndex]:
    """Makes an index of either backend (the contract both must keep), not started yet.

    Milvus runs embedded (Milvus Lite, in this process) with exact (FLAT) search, as FAISS's
    default here is exact."""

    def make(path: Path, spec: IndexSpec = SPEC) -> SegmentIndex:
        source = SegmentStore(
            sessions, embedder=spec.embedder, version=spec.embedder_version, dim=spec.dim
        )
        if request.param == "faiss":
            return IndexManager(spec, source=source, snapshot_dir=path)
        from app.index.milvus import MilvusIndex

        path.mkdir(parents=True, exist_ok=True)
        uris.append(str(path / "milvus.db"))
        return MilvusIndex(spec, source=source, uri=uris[-1], index_type="FLAT")

    uris: list[str] = []
    yield make
    if uris:
        from milvus_lite.server_manager import server_manager_instance

        for uri in uris:  # now, not at exit (when pytest has closed the log streams)
            server_manager_instance.release_server(uri)


def _manager(sessions: sessionmaker[Session], path: Path, spec: IndexSpec = SPEC) -> IndexManager:
    source = SegmentStore(
        sessions, embedder=spec.embedder, version=spec.embedder_version, dim=spec.dim
    )
    return IndexManager(spec, source=source, snapshot_dir=path)


def _top_tracks(manager: SegmentIndex, vectors: np.ndarray) -> list[uuid.UUID | None]:
    result = manager.search(vectors, k=1)
    return [result.track_ids[t] if t >= 0 else None for t in result.tracks[:, 0]]


def test_search_finds_the_track_and_time_of_each_stored_vector(
    catalogue: SyntheticCatalogue, make_index: MakeIndex, tmp_path: Path
) -> None:
    a, b = catalogue.add_track(8), catalogue.add_track(5)
    manager = make_index(tmp_path)
    manager.start()
    assert manager.size == 13
    result = manager.search(catalogue.vectors[b], k=3)
    assert [result.track_ids[t] for t in result.tracks[:, 0]] == [b] * 5
    np.testing.assert_allclose(result.reference_starts[:, 0], np.arange(5))
    np.testing.assert_allclose(result.similarities[:, 0], 1.0, atol=1e-5)
    assert _top_tracks(manager, catalogue.vectors[a]) == [a] * 8
    assert result.watermark == manager.watermark > 0


def test_snapshot_plus_tail_equals_a_fresh_rebuild(
    catalogue: SyntheticCatalogue, make_index: MakeIndex, tmp_path: Path
) -> None:
    first = [catalogue.add_track(6) for _ in range(3)]
    original = make_index(tmp_path)
    original.start()
    assert original.save_snapshot()

    later = [catalogue.add_track(4) for _ in range(2)]  # written after the snapshot
    catalogue.withdraw(first[1])  # withdrawn after the snapshot

    resumed = make_index(tmp_path)
    resumed.start()
    fresh = make_index(tmp_path / "elsewhere")
    fresh.start()

    assert resumed.size == fresh.size == 3 * 6 + 2 * 4 - 6
    assert resumed.watermark == fresh.watermark
    everything = np.concatenate([catalogue.vectors[t] for t in first + later])
    a, b = resumed.search(everything, k=5), fresh.search(everything, k=5)
    assert [[a.track_ids[t] if t >= 0 else None for t in row] for row in a.tracks] == [
        [b.track_ids[t] if t >= 0 else None for t in row] for row in b.tracks
    ]
    np.testing.assert_allclose(a.similarities, b.similarities, atol=1e-6)
    np.testing.assert_array_equal(a.reference_starts, b.reference_starts)


def test_corrupt_snapshot_is_rebuilt_and_logged(
    catalogue: SyntheticCatalogue,
    sessions: sessionmaker[Session],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    track = catalogue.add_track(6)
    manager = _manager(sessions, tmp_path)
    manager.start()
    manager.save_snapshot()
    data = bytearray(manager.snapshot_path.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 512] = bytes(512)
    manager.snapshot_path.write_bytes(bytes(data))

    with caplog.at_level(logging.WARNING):
        again = _manager(sessions, tmp_path)
        again.start()
    assert again.size == 6
    assert _top_tracks(again, catalogue.vectors[track]) == [track] * 6
    assert any("index.snapshot_unusable" in str(r.msg) for r in caplog.records)


def test_snapshot_of_another_factory_is_rebuilt(
    catalogue: SyntheticCatalogue, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    catalogue.add_track(6)
    manager = _manager(sessions, tmp_path)
    manager.start()
    assert manager.save_snapshot()
    sq8 = IndexSpec(embedder="test", embedder_version="1", dim=DIM, factory="SQ8")
    rebuilt = _manager(sessions, tmp_path, sq8)
    rebuilt.start()  # the snapshot holds a Flat index; SQ8 was asked for: rebuilt, not reused
    assert rebuilt.size == 6
    assert rebuilt._state.effective_factory == "SQ8"
    stored = faiss.downcast_index(rebuilt._state.index.index)
    assert isinstance(stored, faiss.IndexScalarQuantizer)


def test_withdrawn_track_never_appears_in_results(
    catalogue: SyntheticCatalogue, make_index: MakeIndex, tmp_path: Path
) -> None:
    keep, drop = catalogue.add_track(6), catalogue.add_track(6)
    manager = make_index(tmp_path)
    manager.start()
    assert drop in _top_tracks(manager, catalogue.vectors[drop])

    catalogue.withdraw(drop)
    stats = manager.sync()
    assert (stats.withdrawn_tracks, stats.removed) == (1, 6)
    result = manager.search(catalogue.vectors[drop], k=12)
    found = {result.track_ids[t] for t in result.tracks.ravel() if t >= 0}
    assert found == {keep}


def test_only_vectors_of_the_indexs_embedder_are_loaded(
    catalogue: SyntheticCatalogue, make_index: MakeIndex, tmp_path: Path
) -> None:
    mine = catalogue.add_track(4)
    catalogue.add_track(4, spec=IndexSpec(embedder="test", embedder_version="0", dim=DIM))
    catalogue.add_track(3, spec=IndexSpec(embedder="other", embedder_version="1", dim=32))
    manager = make_index(tmp_path)
    manager.start()
    assert manager.size == 4
    assert _top_tracks(manager, catalogue.vectors[mine]) == [mine] * 4


def test_vectors_of_the_wrong_size_are_refused(
    catalogue: SyntheticCatalogue, make_index: MakeIndex, tmp_path: Path
) -> None:
    catalogue.add_track(4, spec=IndexSpec(embedder="test", embedder_version="1", dim=DIM * 2))
    with pytest.raises(IndexMismatch, match="has 32 values"):
        make_index(tmp_path).start()
    manager = make_index(tmp_path / "x", IndexSpec("none", "1", DIM))
    manager.start()
    with pytest.raises(IndexMismatch, match="dim 16"):
        manager.search(np.zeros((1, 8), dtype=np.float32), k=1)


def test_ivf_is_trained_from_the_database_or_falls_back_to_flat(
    catalogue: SyntheticCatalogue,
    sessions: sessionmaker[Session],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ivf = IndexSpec(
        embedder="test",
        embedder_version="1",
        dim=DIM,
        factory="IVF4,Flat",
        search_params="nprobe=4",
    )
    catalogue.add_track(2)
    with caplog.at_level(logging.WARNING):
        small = _manager(sessions, tmp_path, ivf)
        small.start()
    assert any("index.too_few_segments_to_train" in str(r.msg) for r in caplog.records)
    assert small.size == 2
    assert small._state.effective_factory == "Flat"

    tracks = [catalogue.add_track(50) for _ in range(4)]
    trained = _manager(sessions, tmp_path / "ivf", ivf)
    trained.rebuild()
    trained.sync()
    assert trained.size == 202
    assert trained._state.effective_factory == "IVF4,Flat"
    assert faiss.extract_index_ivf(trained._state.index).nprobe == 4
    assert _top_tracks(trained, catalogue.vectors[tracks[2]]) == [tracks[2]] * 50


def test_snapshot_of_the_untrained_fallback_is_rebuilt_and_trained(
    catalogue: SyntheticCatalogue, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    ivf = IndexSpec(embedder="test", embedder_version="1", dim=DIM, factory="IVF4,Flat")
    catalogue.add_track(2)
    small = _manager(sessions, tmp_path, ivf)
    small.start()
    assert small._state.effective_factory == "Flat"  # 2 segments cannot train 4 lists
    assert small.save_snapshot()

    tracks = [catalogue.add_track(20) for _ in range(3)]
    restarted = _manager(sessions, tmp_path, ivf)
    restarted.start()  # enough segments now: the Flat snapshot is not reloaded
    assert restarted._state.effective_factory == "IVF4,Flat"
    assert restarted.size == 62
    assert _top_tracks(restarted, catalogue.vectors[tracks[1]]) == [tracks[1]] * 20


def test_sync_is_cheap_when_nothing_changed(
    catalogue: SyntheticCatalogue, make_index: MakeIndex, tmp_path: Path
) -> None:
    catalogue.add_track(3)
    manager = make_index(tmp_path)
    manager.start()
    assert manager.save_snapshot()
    stats = manager.sync()
    assert (stats.added, stats.removed, stats.withdrawn_tracks) == (0, 0, 0)
    assert not manager.save_snapshot()  # unchanged: nothing written


def test_segment_ids_become_visible_in_order(
    catalogue: SyntheticCatalogue, sessions: sessionmaker[Session]
) -> None:
    """Appends hold a transaction-scoped lock: store_segments waits for an open append."""
    track_id = catalogue.new_track(3)
    stored = threading.Event()

    def second_append() -> None:
        catalogue.store(track_id, 3)
        stored.set()

    appender = threading.Thread(target=second_append, daemon=True)
    with sessions() as first:
        track_service.lock_index_appends(first)  # an append in progress, not committed yet
        appender.start()
        try:
            assert not stored.wait(0.5)
        finally:
            first.commit()
    assert stored.wait(10)
    appender.join(10)
    with sessions() as session:
        count = session.scalar(
            sa.text("SELECT count(*) FROM segments WHERE track_id = :t"), {"t": track_id}
        )
    assert count == 3


def test_the_store_reads_more_segments_than_one_statement_can_bind(
    catalogue: SyntheticCatalogue, sessions: sessionmaker[Session]
) -> None:
    # psycopg binds at most 65,535 parameters; an IN list of ids would need one each.
    track_id = catalogue.add_track(70_000)
    store = SegmentStore(sessions, embedder=SPEC.embedder, version=SPEC.embedder_version, dim=DIM)
    ids = store.segment_ids_of([track_id])
    assert ids.size == 70_000
    vectors = store.vectors(ids[::-1])
    np.testing.assert_array_equal(vectors, catalogue.vectors[track_id][::-1])
    starts, windows = store.track_windows([track_id])[track_id]
    np.testing.assert_array_equal(windows, catalogue.vectors[track_id])
    assert starts[-1] == 69_999


def test_snapshot_keeps_the_index_in_a_file_of_its_own_and_drops_the_previous_one(
    catalogue: SyntheticCatalogue, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    catalogue.add_track(6)
    manager = _manager(sessions, tmp_path)
    manager.start()
    assert manager.save_snapshot()
    first = sorted(p.name for p in tmp_path.glob("*.faiss"))
    assert len(first) == 1
    catalogue.add_track(4)
    manager.sync()
    assert manager.save_snapshot()
    second = sorted(p.name for p in tmp_path.glob("*.faiss"))
    assert len(second) == 1
    assert second != first  # a new file, the old one removed
    assert not list(tmp_path.glob(".*"))  # no temporary files left
    again = _manager(sessions, tmp_path)
    again.start()
    assert again.report().started_from == "snapshot"
    assert again.size == 10


def test_searches_go_on_while_a_snapshot_is_written_and_a_sync_waits_for_it(
    catalogue: SyntheticCatalogue,
    sessions: sessionmaker[Session],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Writing a snapshot takes a while (0.2-0.7 s for 1M segments; the file at 10M is ten
    times larger). A sync that arrives meanwhile (a check catching up with a track just
    indexed) must wait for it without making every search queue behind it; the snapshot holds
    the index as it was when the write began."""
    first = catalogue.add_track(6)
    manager = _manager(sessions, tmp_path)
    manager.start()
    written, release = threading.Event(), threading.Event()
    write_index = index_factory.write_index

    def held_write(index: faiss.Index, path: Path) -> None:
        # The real write, then held open: the disk stands in for a slow one.
        write_index(index, path)
        written.set()
        assert release.wait(30)

    monkeypatch.setattr(index_factory, "write_index", held_write)
    pool = ThreadPoolExecutor(3)
    try:
        saving = pool.submit(manager.save_snapshot)
        assert written.wait(30)
        catalogue.add_track(4)
        syncing = pool.submit(manager.sync)
        time.sleep(0.5)  # lets the sync reach its lock
        searching = pool.submit(_top_tracks, manager, catalogue.vectors[first])
        assert searching.result(timeout=10) == [first] * 6
        assert not syncing.done()
        assert manager.size == 6
    finally:
        release.set()
        pool.shutdown(wait=True)
    assert saving.result()
    assert syncing.result().added == 4
    assert manager.size == 10
    with np.load(manager.snapshot_path) as saved:
        assert json.loads(str(saved["meta"]))["ntotal"] == 6
        assert saved["segment_ids"].size == 6


def test_a_corrupt_index_file_is_rebuilt(
    catalogue: SyntheticCatalogue,
    sessions: sessionmaker[Session],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    track = catalogue.add_track(6)
    manager = _manager(sessions, tmp_path)
    manager.start()
    manager.save_snapshot()
    (index_file,) = tmp_path.glob("*.faiss")
    index_file.write_bytes(index_file.read_bytes()[:100])
    with caplog.at_level(logging.WARNING):
        again = _manager(sessions, tmp_path)
        again.start()
    assert again.report().started_from == "rebuild"
    assert _top_tracks(again, catalogue.vectors[track]) == [track] * 6
    assert any("index.snapshot_unusable" in str(r.msg) for r in caplog.records)
