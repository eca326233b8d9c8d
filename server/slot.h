/*
 * slot.h - which of the 16384 hash slots a key belongs to, computed exactly
 * as Redis Cluster does, so cluster-aware clients (which compute slots
 * themselves) and flotillad agree on where every key lives.
 *
 *   slot = CRC16(key or its hash tag) mod 16384
 *
 * CRC16 is the XMODEM variant (polynomial 0x1021, initial value 0, no
 * reflection, no final xor). The hash tag: if the key holds a '{' and,
 * after the first '{', a '}' with at least one byte between them, only the
 * bytes between that first '{' and the first '}' after it are hashed;
 * otherwise the whole key is. So "{user1000}.following" and
 * "{user1000}.followers" share a slot, "foo{}{bar}" hashes whole, and
 * "foo{{bar}}zap" hashes "{bar".
 */
#ifndef FLOTILLA_SERVER_SLOT_H
#define FLOTILLA_SERVER_SLOT_H

#include <stddef.h>
#include <stdint.h>

/* Redis Cluster's slot count: clients hard-code it. */
#define SLOT_COUNT 16384u

/* CRC16/XMODEM of `length` bytes at `data` (any bytes; NULL if length is 0). */
uint16_t slot_crc16(const void *data, size_t length);

/* The slot of a key of `length` bytes (binary-safe), in [0, SLOT_COUNT). */
uint16_t slot_for_key(const void *key, size_t length);

#endif
