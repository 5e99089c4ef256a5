"""Process-wide FAISS tuning: OpenMP threads per search and the BLAS threshold.

Threads
-------
FAISS parallelises one ``search`` call with OpenMP (over the query rows, or inside the
BLAS matrix product for exhaustive distances), and the faiss-cpu wheel's OpenBLAS is built
on the same libgomp. Two facts matter for a 2-core service:

* ``faiss.omp_set_num_threads(n)`` sets the limit for the *calling* OS thread only (libgomp
  keeps the limit per thread). A call at import time in the main thread does not reach the
  worker threads a web server searches from; those keep the default of one OpenMP thread
  per core. The process-wide switch is the ``OMP_NUM_THREADS`` environment variable, read
  once when the OpenMP runtime loads.
* Each Python thread that searches brings its own OpenMP team, so ``w`` concurrent
  searches run ``w * n`` busy threads on 2 cores. See ``bench/index.py --concurrency``.

This module therefore does not change the thread count as a side effect of import or of
``create_index``. ``set_search_threads`` sets it for the calling thread (call it at the top
of a worker thread, or pass ``threads=`` to ``search``); ``SEARCH_THREADS_DEFAULT`` is the
recommended value, 1. Measured with bench/index.py on the 2-core host while other jobs ran
(1M vectors, dim 128, 60-row queries):

* IVF4096,Flat nprobe=16: a lone query took 9.9 ms with 1 thread and 9.3 ms with 2; with
  2 or 4 concurrent searches, 1 thread each gave 85 / 82 queries/s against 75 / 72 with 2
  threads each, and a lower p95.
* Flat (BLAS): 2 threads per search were slower in every case, up to 12-13 s per query
  instead of ~1 s when the box was busy: each BLAS block is a fork/join, and a partner
  thread that is not scheduled stalls it for a whole time slice.

Index building and training are batch jobs that can use every core (the benchmark builds
with 2 threads).

A search that runs alone is another matter: with no other search in flight the second core
is mostly idle, and an inverted-file search of a check's 270 rows parallelises over the rows.
Measured on recombined real music (``bench/index.py --data music --sizes 1000000
--search-threads 1,2``, idle host, 2026-12-06): ``IVF4096,SQ8`` nprobe 16 took 20.9 / 22.2
ms p50 / p95 with 1 thread and 11.1 / 15.1 ms with 2; the re-ranked fast scan
(``IVF4096,PQ64x4fs,Refine(SQ8)``) at nprobe 64 27.4 / 32.0 and 18.0 / 20.9 ms (its re-ranking
runs in one thread). ``search_threads`` therefore gives a lone search on an inverted file
every CPU the process may use, and one thread otherwise (exhaustive ``Flat`` search stays at
one: its BLAS blocks stall on a busy partner core, above).

BLAS
----
Call ``prefer_blas(dim)`` once at start-up: faiss 1.15 computes exhaustive distances for a
60-row query row by row, several times slower than BLAS here (see its docstring).
"""

from __future__ import annotations

import os
from typing import Any, Final

import faiss

# The type stubs in recent faiss-cpu wheels leave out cvar; older wheels have no stubs at all.
_faiss: Any = faiss

SEARCH_THREADS_DEFAULT: Final = 1
"""Recommended OpenMP threads per ``search`` call on the 2-core service host."""

BLAS_MIN_QUERY_ROWS: Final = 8
"""Query batches at least this large should use BLAS for exhaustive distances."""

# Recent faiss (1.15, facebookresearch/faiss#5022) compares query rows * dim with this
# threshold (default 128000); earlier releases compared the query rows alone (default 20).
# Read at import, before anything changes it.
_BLAS_THRESHOLD_AT_IMPORT: Final = int(_faiss.cvar.distance_compute_blas_threshold)
_BLAS_THRESHOLD_COUNTS_ELEMENTS: Final = _BLAS_THRESHOLD_AT_IMPORT > 64


def prefer_blas(dim: int, min_rows: int = BLAS_MIN_QUERY_ROWS) -> int:
    """Let exhaustive distance computations use BLAS for batches of ``min_rows`` or more.

    Flat search and the coarse quantizer of an IVF compare every query row with every
    stored vector (or centroid). faiss does that either row by row (streaming the whole
    matrix from memory once per query row) or as one blocked matrix product (BLAS). faiss
    1.15 picks BLAS only when rows * dim >= 128000, i.e. for batches of 500+ rows at dim
    256, so a 30-s query (~60 rows) takes the row-by-row path. With one OpenMP thread per
    search that path is ~7x slower for flat search over 100k vectors and makes the coarse
    step of IVF4096 ~1.5-2x slower on the 2-core host (faiss#5109 reports the same
    regression at one thread). The threshold is process-wide.

    dim : the smallest vector dimension searched in this process
    Returns the previous threshold value.
    """
    if isinstance(dim, bool) or not isinstance(dim, int) or dim <= 0:
        raise ValueError(f"dimension must be a positive int, got {dim!r}")
    if isinstance(min_rows, bool) or not isinstance(min_rows, int) or min_rows <= 0:
        raise ValueError(f"min_rows must be a positive int, got {min_rows!r}")
    previous = int(_faiss.cvar.distance_compute_blas_threshold)
    value = min_rows * dim if _BLAS_THRESHOLD_COUNTS_ELEMENTS else min_rows
    _faiss.cvar.distance_compute_blas_threshold = value
    return previous


def reset_blas_threshold() -> None:
    """Restore faiss' own BLAS threshold (as found when this module was imported)."""
    _faiss.cvar.distance_compute_blas_threshold = _BLAS_THRESHOLD_AT_IMPORT


def set_search_threads(n: int) -> None:
    """Limit OpenMP threads for FAISS calls made from the *calling* thread to ``n``.

    libgomp keeps this per OS thread: each worker thread that searches must call it (or
    the process must start with OMP_NUM_THREADS set).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"thread count must be a positive int, got {n!r}")
    faiss.omp_set_num_threads(n)


def search_threads(factory: str, in_flight: int) -> int:
    """OpenMP threads for one search: every CPU this process may run on when it is the only
    search in flight (``in_flight`` counts it) on an index other than exhaustive ``Flat``,
    else ``SEARCH_THREADS_DEFAULT``."""
    if in_flight > 1 or factory.split(",")[0].strip() == "Flat":
        return SEARCH_THREADS_DEFAULT
    return max(SEARCH_THREADS_DEFAULT, len(os.sched_getaffinity(0)))


def get_search_threads() -> int:
    """OpenMP thread limit for FAISS calls made from the calling thread."""
    return int(faiss.omp_get_max_threads())
