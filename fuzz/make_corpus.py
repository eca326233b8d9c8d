#!/usr/bin/env python3
"""make_corpus.py - writes the seed corpora of the fuzz targets.

Each seed is a short scenario spelled in the targets' input language (see
the comments atop fuzz_raft_cluster.c and fuzz_raft_messages.c): it gets a
leader elected, entries committed, snapshots taken, nodes crashed, members
changed, so libFuzzer starts its mutations from deep states instead of
having to discover an election first.

    python3 fuzz/make_corpus.py          # rewrites fuzz/corpus/<target>/seed-*
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))

# ---- fuzz-raft-cluster --------------------------------------------------

(DELIVER, DROP, DUPLICATE, DELAY, FLUSH, TICK, TICK_ALL, COMPLETE_WRITE, NOTIFY,
 STABILIZE, CRASH, RESTART, PROPOSE, SNAPSHOT, MEMBERSHIP, TRANSFER, CAMPAIGN,
 READ, UNREACHABLE) = range(19)

FIVE_NODES, PRE_VOTE, CHECK_QUORUM = 1, 2, 4
LOOSE_LIMITS = 0xFF  # 1024 entries, 256 inflight, 1 MiB per message
TIGHT_LIMITS = 0x00  # 1 entry, 1 inflight, 64 bytes per message


def node(id_):
    """Argument byte that picks node `id_` (1-based) among ids 1..highest."""
    return id_ - 1


def change(op, id_):
    """A membership change byte: op 0 add voter, 1 add learner, 2 remove."""
    for b in range(256):
        if b % 3 == op and 1 + (b // 3) % 7 == id_:
            return b
    raise ValueError((op, id_))


def elect(leader=1):
    return [CAMPAIGN, node(leader), STABILIZE, STABILIZE]


def cluster_seeds():
    seeds = {}
    seeds["elect-commit-snapshot"] = bytes(
        [PRE_VOTE | CHECK_QUORUM, LOOSE_LIMITS] + elect() +
        [PROPOSE, node(1), 0x07, STABILIZE, PROPOSE, node(1), 0x37, STABILIZE,
         SNAPSHOT, node(1), SNAPSHOT, node(2), SNAPSHOT, node(3), READ, node(2),
         STABILIZE, TICK_ALL, STABILIZE])
    seeds["crash-restart"] = bytes(
        [PRE_VOTE, TIGHT_LIMITS] + elect() +
        [PROPOSE, node(1), 0x03, COMPLETE_WRITE, node(2), 0, CRASH, node(2),
         PROPOSE, node(1), 0x05, STABILIZE, SNAPSHOT, node(1), RESTART, node(2),
         STABILIZE, STABILIZE, CRASH, node(1), TICK_ALL, TICK_ALL, TICK_ALL, TICK_ALL,
         TICK_ALL, TICK_ALL, STABILIZE, STABILIZE, RESTART, node(1), STABILIZE])
    seeds["membership-joint"] = bytes(
        [FIVE_NODES | PRE_VOTE | CHECK_QUORUM, LOOSE_LIMITS] + elect() +
        [PROPOSE, node(1), 0x11, STABILIZE, SNAPSHOT, node(1),
         MEMBERSHIP, 0x00, change(1, 6), STABILIZE, STABILIZE, STABILIZE,
         MEMBERSHIP, 0x00, change(0, 6), STABILIZE, STABILIZE,
         MEMBERSHIP, 0x05, change(2, 1), change(0, 7), STABILIZE, STABILIZE, STABILIZE,
         STABILIZE, TRANSFER, 1, STABILIZE, STABILIZE, PROPOSE, node(2), 0x22, STABILIZE])
    seeds["network-chaos"] = bytes(
        [0, 0x55] + elect() +
        [PROPOSE, node(1), 0x07, DUPLICATE, 0, DELAY, 1, DROP, 2, DELIVER, 0, DELIVER, 1,
         COMPLETE_WRITE, node(2), 0, COMPLETE_WRITE, node(2), 0, NOTIFY, node(2), 1,
         NOTIFY, node(2), 0, FLUSH, UNREACHABLE, node(1), 2, TICK, node(1), FLUSH,
         COMPLETE_WRITE, node(1), 1, DELIVER, 3, DELIVER, 0, FLUSH, STABILIZE])
    seeds["transfer-read"] = bytes(
        [FIVE_NODES | CHECK_QUORUM, LOOSE_LIMITS] + elect(3) +
        [PROPOSE, node(3), 0x0F, READ, node(3), READ, node(1), STABILIZE,
         TRANSFER, 4, STABILIZE, STABILIZE, READ, node(5), PROPOSE, node(5), 0x01,
         STABILIZE, TICK_ALL, TICK_ALL, TICK_ALL, STABILIZE])
    return seeds


# ---- fuzz-raft-messages -------------------------------------------------

(M_STEP, M_STEP_AGAIN, M_STEP_MORE, M_TICK, M_PROPOSE, M_PROPOSE_CHANGE,
 M_LEAVE_JOINT, M_TRANSFER, M_READ_INDEX, M_PERSISTED, M_COMPACT, M_REPORT,
 M_CAMPAIGN, M_RESTART, M_SHRINK) = range(15)

APPEND, APPEND_RESP, VOTE, VOTE_RESP, PRE_VOTE_RESP_TYPE = 1, 2, 3, 4, 6
HEARTBEAT, SNAPSHOT_TYPE, TIMEOUT_NOW, READ_INDEX = 7, 9, 10, 11

PEER2 = 6             # pick_node byte for peer 2
TO_SELF = 0           # `to` byte
TERM_SAME, TERM_NEXT = 7, 0
INDEX_LAST, INDEX_ZERO, INDEX_COMMIT = 9, 5, 0
LOG_TERM_MATCH = 0
COMMIT_IS_INDEX = 0   # commit byte: even = same as index


def message(type_, term=TERM_SAME, index=INDEX_LAST, flags=0, entries=b"",
            count=0, reject=False, extra=b""):
    body = [type_, PEER2, TO_SELF, term, index, LOG_TERM_MATCH, COMMIT_IS_INDEX,
            flags | (1 if reject else 0)]
    return bytes(body) + extra + bytes([count]) + entries


def entry(mode, payload=b""):
    """mode bits: 0-1 index, 2-3 term, 4-5 type, 6-7 payload kind."""
    return bytes([mode]) + payload


def bytes_payload(data):
    return bytes([len(data)]) + data


def conf_payload(voters):
    """pick_conf input for a simple configuration of small peer ids."""
    shape = len(voters)  # voters only
    ids = bytes(v + 4 if v >= 2 else 1 for v in voters)  # pick_node bytes
    return bytes([shape, 0]) + ids


def messages_seeds():
    seeds = {}
    win_election = (bytes([M_CAMPAIGN, M_PERSISTED, 0]) +
                    bytes([M_STEP]) + message(VOTE_RESP))
    seeds["leader-replicates"] = (
        bytes([0x00, 1]) + win_election +
        bytes([M_PROPOSE, 2, 16]) + b"A" * 16 + bytes([16]) + b"B" * 16 + bytes([4]) + b"CCCC" +
        bytes([M_PERSISTED, 0, M_STEP]) + message(APPEND_RESP) +
        bytes([M_TICK, 3, M_READ_INDEX]) + struct.pack("<Q", 7) +
        bytes([M_STEP]) + message(7 + 1, extra=b"") +  # heartbeat response
        bytes([M_COMPACT, 0, M_PROPOSE_CHANGE, 1, 1, PEER2 + 2, M_PERSISTED, 0,
               M_TRANSFER, PEER2, M_SHRINK]))
    append_entries = (entry(0x84, bytes_payload(b"12345678")) +
                      entry(0x64, conf_payload([1, 2, 3])) +
                      entry(0x84, bytes_payload(b"abcdefgh")))
    seeds["follower-appends"] = (
        bytes([0x06, 1, M_STEP]) +
        message(APPEND, term=TERM_NEXT, index=INDEX_ZERO, count=3, entries=append_entries) +
        bytes([M_PERSISTED, 0, M_STEP]) + message(HEARTBEAT) +
        bytes([M_COMPACT, 0, M_RESTART, M_STEP]) +
        message(APPEND, count=1, entries=entry(0x84, bytes_payload(b"zz"))) +
        bytes([M_PERSISTED, 0, M_TICK, 15]))
    # snapshot metadata: index = last + 1 + 3, term = term + 1, voters {1, 2, 3}
    snapshot_meta = bytes([2, 3, TERM_NEXT]) + conf_payload([1, 2, 3])
    seeds["follower-snapshot"] = (
        bytes([0x01, 1, M_STEP]) +
        message(SNAPSHOT_TYPE, term=TERM_NEXT, flags=0x80, extra=snapshot_meta) +
        bytes([M_PERSISTED, 0, M_STEP]) + message(VOTE, term=TERM_NEXT) +
        bytes([M_STEP]) + message(TIMEOUT_NOW) + bytes([M_RESTART, M_TICK, 9]))
    seeds["garbage"] = bytes(range(256)) + bytes(range(255, -1, -1))
    return seeds


def write(target, seeds):
    directory = os.path.join(HERE, "corpus", target)
    os.makedirs(directory, exist_ok=True)
    for name in os.listdir(directory):
        if name.startswith("seed-"):
            os.remove(os.path.join(directory, name))
    for name, data in seeds.items():
        with open(os.path.join(directory, "seed-" + name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    write("fuzz-raft-cluster", cluster_seeds())
    write("fuzz-raft-messages", messages_seeds())
