"""The holdout split, decided row by row: a row's side depends only on its station, date and seed.

Each row gets a 64-bit key, a hash of (station, date, seed); the row is held out when its key,
read as a fraction of 2**64, is below the test size. Nothing depends on the other rows, their
order, or which files they came in: the same rows give the same split on every run, and adding a
year leaves every earlier row on its side. The key is defined here, not taken from a library
whose hash may change between versions:

    station_hash = first 8 bytes, little-endian, of BLAKE2b(station as UTF-8, digest_size=8)
    key = mix(station_hash XOR mix(days since 1970-01-01 + (seed + 1) * 0x9E3779B97F4A7C15))

`mix` is the 64-bit finaliser of SplitMix64 (Steele, Lea and Flood, "Fast splittable pseudorandom
number generators", OOPSLA 2014), all arithmetic modulo 2**64.
"""

from __future__ import annotations

import functools
import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

KEY_VERSION = 1  # bump when the definition above changes: old splits then differ
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX_1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX_2 = np.uint64(0x94D049BB133111EB)


def mix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser on a uint64 array (wrapping arithmetic)."""
    z = np.asarray(z, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * _MIX_1
        z = (z ^ (z >> np.uint64(27))) * _MIX_2
    return z ^ (z >> np.uint64(31))


@functools.lru_cache(maxsize=1 << 17)  # GSOD has about 13,000 stations a year
def station_hash(station: str) -> int:
    """The 64-bit hash of one station id (first 8 bytes of BLAKE2b, little-endian)."""
    return int.from_bytes(hashlib.blake2b(station.encode(), digest_size=8).digest(), "little")


def row_keys(
    station: pa.Array | pa.ChunkedArray, date: pa.Array | pa.ChunkedArray, seed: int
) -> np.ndarray:
    """The split key of each row: uint64, one per row of the `station` (string) and `date`
    (date32) columns, neither with nulls.

    Stations are hashed once per distinct id (a year of GSOD has about 12,000), then looked up;
    a dictionary-encoded `station` column (as Parquet readers can give it) is used as it is.
    """
    if len(station) != len(date):
        raise ValueError(f"station and date differ in length: {len(station)} != {len(date)}")
    if len(station) == 0:
        return np.empty(0, dtype=np.uint64)
    encoded = station if pa.types.is_dictionary(station.type) else pc.dictionary_encode(station)
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.unify_dictionaries().combine_chunks()
    distinct = np.array([station_hash(s) for s in encoded.dictionary.to_pylist()], dtype=np.uint64)
    per_row = distinct[encoded.indices.to_numpy(zero_copy_only=False)]
    days = pc.cast(date, pa.int32()).to_numpy(zero_copy_only=False).astype(np.int64)
    with np.errstate(over="ignore"):
        day_term = days.astype(np.uint64) + np.uint64(seed + 1) * _GOLDEN
    return mix64(per_row ^ mix64(day_term))


def holdout_threshold(test_size: float) -> np.uint64:
    """Keys below this are held out: test_size * 2**64, for 0 < test_size < 1."""
    if not 0.0 < test_size < 1.0:
        raise ValueError(f"test size must be between 0 and 1 (exclusive), got {test_size}")
    return np.uint64(min(int(test_size * 2.0**64), 2**64 - 1))


def in_holdout(keys: np.ndarray, test_size: float) -> np.ndarray:
    """Boolean mask: which rows (by their keys from `row_keys`) are held out."""
    return np.asarray(keys, dtype=np.uint64) < holdout_threshold(test_size)
