"""Reproducible random arrays: chunked draws from seeded SFC64 streams, filled by a few threads.

This is the seed contract of :mod:`bilstm_cli.strategies` in code: chunk ``k`` of the flattened
(C-order) array draws from the stream of the child sequence whose ``spawn_key`` is the seed's
``spawn_key + (k,)``, so the values depend on the seed, the shape and :data:`CHUNK_SIZE`, never
on :data:`WORKERS`.
"""

from __future__ import annotations

import math

import numpy as np

from bilstm_cli.concurrency import each

#: Elements per independently seeded chunk of the flattened array (part of the seed contract).
CHUNK_SIZE: int = 1 << 18
#: Threads that fill chunks; the output does not depend on it.
WORKERS: int = 2
#: Truncated normals are cut at this many standard deviations from the mean, as Keras cuts them.
TRUNCATION: float = 2.0

Affine = float | np.ndarray


def _child(seed: np.random.SeedSequence, k: int) -> np.random.SeedSequence:
    # Built by hand rather than with seed.spawn(), which counts children inside the parent and
    # would make a second generate() call with the same seed give different numbers.
    return np.random.SeedSequence(
        entropy=seed.entropy, spawn_key=tuple(seed.spawn_key) + (k,), pool_size=seed.pool_size
    )


def stream(seed: np.random.SeedSequence, k: int) -> np.random.Generator:
    """The generator of child ``k`` of ``seed``, the same for every call with equal arguments."""
    return np.random.Generator(np.random.SFC64(_child(seed, k)))


def _affine(buf: np.ndarray, start: int, scale: Affine, shift: Affine, cols: int) -> None:
    """``buf = buf * scale + shift`` in place, scale/shift per last-axis column if arrays.

    ``buf`` is the slice ``[start, start + len)`` of a flattened C-order array whose rows have
    ``cols`` entries, so a chunk may begin and end in the middle of a row.
    """
    if np.ndim(scale) == 0 and np.ndim(shift) == 0:
        # Skipping the identity steps saves whole passes over large chunks.
        if scale != 1.0:
            buf *= buf.dtype.type(scale)
        if shift != 0.0:
            buf += buf.dtype.type(shift)
        return
    sc = np.broadcast_to(np.asarray(scale, dtype=buf.dtype), (cols,))
    sh = np.broadcast_to(np.asarray(shift, dtype=buf.dtype), (cols,))
    n = buf.size
    c0 = start % cols
    head = min((cols - c0) % cols, n)
    if head:
        buf[:head] *= sc[c0 : c0 + head]
        buf[:head] += sh[c0 : c0 + head]
    rows = (n - head) // cols
    if rows:
        body = buf[head : head + rows * cols].reshape(rows, cols)
        body *= sc
        body += sh
    tail = buf[head + rows * cols :]
    if tail.size:
        tail *= sc[: tail.size]
        tail += sh[: tail.size]


def uniforms(rng: np.random.Generator, out: np.ndarray) -> None:
    """Fill the 1-D float32/float64 array ``out`` with the very numbers ``rng.random(out.size,
    dtype=out.dtype)`` gives for a generator of :func:`stream` (SFC64), made from the bit
    generator's raw 64-bit outputs in a few array operations rather than one call per number:
    twice as fast. NumPy makes a float64 from the top 53 bits of a raw output, and a float32
    from the top 24 bits of a 32-bit half, the low half first.

    Valid from a stream that has only been drawn from this way: NumPy keeps the unused high
    half of a float32 draw for the next one, which this leaves unused, so drawing an odd
    number of float32 values is only right as a stream's last draw.
    """
    if out.dtype == np.float64:
        raw = rng.bit_generator.random_raw(out.size)
        raw >>= np.uint64(11)
        np.multiply(raw, 2.0**-53, out=out)
        return
    halves = rng.bit_generator.random_raw((out.size + 1) // 2).astype("<u8", copy=False)
    bits = halves.view("<u4")[: out.size]
    bits >>= np.uint32(8)
    np.multiply(bits, np.float32(2.0**-24), out=out, dtype=np.float32)


def standard_normal(rng: np.random.Generator, out: np.ndarray) -> None:
    """Fill the 1-D float32/float64 array ``out`` with standard normal draws: the Box–Muller
    transform of the generator's uniforms. Each pair (u, v) gives r·cos θ and r·sin θ, with
    r = √(−2 ln(1 − u)) and θ = 2πv, two independent standard normals. Exact in distribution,
    and with NumPy's vectorized log, sqrt, cos and sin about twice as fast as its own normal
    sampler, which matters when a command draws millions of them. The radii's uniforms come
    first from the stream, then the angles': an even count in all, so the stream can go on."""
    dtype = out.dtype.type
    half = (out.size + 1) // 2
    both = np.empty(2 * half, dtype=dtype)
    uniforms(rng, both)
    radius, angle = both[:half], both[half:]
    np.subtract(dtype(1.0), radius, out=radius)  # (0, 1]: the logarithm stays finite
    np.log(radius, out=radius)
    np.multiply(radius, dtype(-2.0), out=radius)
    np.sqrt(radius, out=radius)
    np.multiply(angle, dtype(2.0 * math.pi), out=angle)
    first, second = out[:half], out[half:]
    np.cos(angle, out=first)
    np.multiply(first, radius, out=first)
    rest = second.size
    np.sin(angle[:rest], out=second)
    np.multiply(second, radius[:rest], out=second)


def largest_normal(work: np.dtype) -> float:
    """The largest magnitude :func:`standard_normal` can give in ``work``: its uniforms are
    multiples of 2**-24 (float32) or 2**-53 (float64), so 1 - u is at least that, and the
    radius √(−2 ln(1 − u)) at most √(2 · bits · ln 2)."""
    bits = 53 if np.dtype(work) == np.float64 else 24
    return math.sqrt(2.0 * bits * math.log(2.0))


def _draw_chunk(
    kind: str,
    flat: np.ndarray,
    k: int,
    seed: np.random.SeedSequence,
    scale: Affine,
    shift: Affine,
    cols: int,
) -> None:
    start = k * CHUNK_SIZE
    buf = flat[start : start + CHUNK_SIZE]
    rng = stream(seed, k)
    if kind == "uniform":
        uniforms(rng, buf)  # the chunk's stream draws nothing after this
    else:
        standard_normal(rng, buf)
        if kind == "truncated_normal":
            # Redraw out-of-range values from the same chunk's stream until none is left,
            # which is exactly sampling the normal conditioned on |z| <= 2.
            idx = np.flatnonzero(np.abs(buf) > TRUNCATION)
            while idx.size:
                fresh = np.empty(idx.size, dtype=buf.dtype)
                standard_normal(rng, fresh)
                bad = np.abs(fresh) > TRUNCATION
                buf[idx[~bad]] = fresh[~bad]
                idx = idx[bad]
    _affine(buf, start, scale, shift, cols)


def draw(
    kind: str,
    shape: tuple[int, ...],
    seed: np.random.SeedSequence,
    dtype: np.dtype,
    scale: Affine = 1.0,
    shift: Affine = 0.0,
) -> np.ndarray:
    """Fill an array of ``shape`` with ``scale * draw + shift``.

    ``kind`` is ``uniform`` (draw in [0, 1)), ``normal`` or ``truncated_normal`` (standard
    normal, the latter cut at ±2). ``scale``/``shift`` may be vectors over the last axis.
    """
    out = np.empty(shape, dtype=dtype)
    flat = out.reshape(-1)
    cols = int(shape[-1]) if shape else 1
    n_chunks = -(-flat.size // CHUNK_SIZE)
    each(lambda k: _draw_chunk(kind, flat, k, seed, scale, shift, cols), n_chunks, WORKERS)
    return out
