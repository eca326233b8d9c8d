#!/usr/bin/env python3
"""make_wal_corpus.py - writes the seed corpus of fuzz-wal-recovery.

Each seed is a short input in the target's language (see the comment atop
fuzz_wal_recovery.c): a workload seed, then per epoch the batches to write,
how the epoch ends and a list of damage operations. The seeds cover a clean
close, crashes with batches in flight, torn tails, flipped bits and
overwritten or zeroed bytes in the newest and in older segments, segment
headers, and several epochs in a row, so mutations start from each recovery
path instead of having to find them.

    python3 fuzz/make_wal_corpus.py    # rewrites fuzz/corpus/fuzz-wal-recovery/seed-*
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
TARGET = "fuzz-wal-recovery"

END, FLIP, SET_BYTE, SET_RUN, ZERO_RUN, TEAR = range(6)
CLEAN, CRASH, CRASH_QUEUED = range(3)
NEWEST, OLDER = 0, 1
RECORDS = 4096  # where records start in a segment


def start(offset):
    """An offset from the start of the segment."""
    return list(struct.pack("<H", offset))


def from_end(delta):
    """An offset `delta` bytes from the end of the segment's written part."""
    return list(struct.pack("<H", 0x8000 | (delta + 16384)))


def epoch(batches, ending, *damage):
    """Bytes of one epoch: batches, ending, damage ops, END."""
    out = [batches, ending]
    for op in damage:
        out += op
    return out + [END]


def flip(segment, offset, bit):
    return [FLIP, segment] + offset + [bit]


def set_byte(segment, offset, value):
    return [SET_BYTE, segment] + offset + [value]


def set_run(segment, offset, data):
    return [SET_RUN, segment] + offset + [len(data) - 1] + list(data)


def zero_run(segment, offset, length):
    return [ZERO_RUN, segment] + offset + [length - 1]


def tear(segment, keep):
    return [TEAR, segment] + start(keep)


def seeds():
    return {
        "clean-close": [1] + epoch(20, CLEAN) + epoch(3, CLEAN),
        "crash-in-flight": [2] + epoch(24, CRASH) + epoch(5, CRASH_QUEUED) + epoch(2, CRASH),
        "torn-tail": [3] + epoch(18, CRASH, tear(NEWEST, 100)) + epoch(4, CLEAN),
        "torn-tail-nothing-kept": [4] + epoch(22, CLEAN, tear(NEWEST, 0)),
        "flip-near-tail": [5] + epoch(20, CRASH, flip(NEWEST, from_end(-40), 3)) + epoch(6, CLEAN),
        "flip-older-record": [6] + epoch(26, CLEAN, flip(OLDER, start(RECORDS + 200), 5)),
        "older-segment-header": [7] + epoch(26, CLEAN, set_byte(OLDER, start(9), 0x7f)),
        "newest-segment-header": [8] + epoch(12, CRASH, flip(NEWEST, start(17), 0)),
        "zero-run-older": [9] + epoch(27, CLEAN, zero_run(OLDER, start(RECORDS + 96), 32)),
        "overwrite-newest": [10] + epoch(15, CRASH_QUEUED,
                                         set_run(NEWEST, from_end(-300), b"\x40\x00\x00\x00\x01")),
        "damage-every-epoch": [11] + epoch(16, CRASH, tear(NEWEST, 64))
        + epoch(5, CRASH, flip(NEWEST, from_end(-8), 1))
        + epoch(3, CLEAN, zero_run(NEWEST, from_end(-16), 16)),
        # Fails only with FLOTILLA_WAL_FUZZ_STRICT=1: a zeroed record header in
        # an older segment is taken for its end (see fuzz/README.md).
        "older-zeroed-header": [13] + epoch(10, CLEAN, zero_run(OLDER, start(RECORDS), 32)),
        "zeros-past-the-end": [12] + epoch(20, CLEAN, set_byte(NEWEST, from_end(3000), 0xff))
        + epoch(8, CLEAN),
    }


def main():
    directory = os.path.join(HERE, "corpus", TARGET)
    os.makedirs(directory, exist_ok=True)
    for name in os.listdir(directory):
        if name.startswith("seed-"):
            os.remove(os.path.join(directory, name))
    for name, data in seeds().items():
        with open(os.path.join(directory, "seed-" + name), "wb") as out:
            out.write(bytes(data))


if __name__ == "__main__":
    main()
