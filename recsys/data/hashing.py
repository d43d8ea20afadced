"""Stable 64-bit hashes of raw ids: the randomness behind every split decision.

Why not `hash()` or polars' `Series.hash`: Python salts string hashes per process and polars does
not promise the same hash across versions, and a split that moved when a library was upgraded would
put yesterday's training pairs into today's test set. These functions are defined here, in numpy,
byte for byte (pinned by tests/data/test_hashing.py), so the same id gets the same hash on every
machine, in every process and in every version of this package.

Vectorised: one pass over the ids' UTF-8 bytes (taken from an Arrow string buffer, no Python loop
over ids); a string's hash is the splitmix64 finaliser of the wrapping sum of its bytes' mixed
(position, byte) words plus its length, so any change of a byte, its position or the length changes
the hash.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

_BYTE_KEY = np.uint64(0x243F6A8885A308D3)  # digits of pi: an arbitrary, fixed key
_LENGTH_KEY = np.uint64(0x13198A2E03707344)
_U64 = 0xFFFFFFFFFFFFFFFF


def splitmix64(x: np.ndarray) -> np.ndarray:
    """Vectorised splitmix64 finaliser (Steele et al.): a fast, well-mixed 64-bit hash of uint64s."""
    with np.errstate(over="ignore"):
        z = np.asarray(x).astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def seed_word(seed: int, salt: int) -> np.uint64:
    """One uint64 per (seed, salt): salts keep the different random decisions of one seed apart."""
    mixed = splitmix64(np.array([(seed * 0x1000193 + salt) & _U64], dtype=np.uint64))
    return mixed[0]


def id_hashes(ids: Sequence | np.ndarray) -> np.ndarray:
    """uint64 hash of each id's text (ids that are not strings hash as their `str`)."""
    values = np.asarray(ids)
    if values.size == 0:
        return np.zeros(0, dtype=np.uint64)
    try:
        array = pa.array(values, type=pa.large_string())
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # numbers or mixed types: hash their text
        array = pa.array(values.astype(str), type=pa.large_string())
    if array.null_count:
        raise ValueError("ids must not be null")
    offsets = np.frombuffer(array.buffers()[1], dtype=np.int64)[array.offset : array.offset + len(array) + 1]
    data = np.frombuffer(array.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]]
    lengths = np.diff(offsets)
    starts = offsets[:-1] - offsets[0]
    position = np.arange(data.size, dtype=np.int64) - np.repeat(starts, lengths)
    with np.errstate(over="ignore"):
        words = splitmix64((position.astype(np.uint64) << np.uint64(8)) ^ data.astype(np.uint64) ^ _BYTE_KEY)
        running = np.concatenate([np.zeros(1, dtype=np.uint64), np.cumsum(words, dtype=np.uint64)])
        sums = running[starts + lengths] - running[starts]  # wrapping: a sum mod 2**64 per id
        return splitmix64(sums ^ splitmix64(lengths.astype(np.uint64) ^ _LENGTH_KEY))


def pair_hashes(user_hash: np.ndarray, item_hash: np.ndarray, seed: int, salt: int) -> np.ndarray:
    """uint64 per (user, item), from the two ids' hashes, the seed and a salt. Not symmetric:
    (a, b) and (b, a) hash apart."""
    return splitmix64(splitmix64(user_hash ^ seed_word(seed, salt)) ^ item_hash)


def user_draws(user_hash: np.ndarray, seed: int, salt: int) -> np.ndarray:
    """uint64 per user from the id's hash, the seed and a salt."""
    return splitmix64(user_hash ^ seed_word(seed, salt))


def unit_interval(words: np.ndarray) -> np.ndarray:
    """uint64 -> float64 uniform in [0, 1) (the top 53 bits), for comparing with a fraction."""
    return (np.asarray(words, dtype=np.uint64) >> np.uint64(11)).astype(np.float64) * (2.0**-53)
