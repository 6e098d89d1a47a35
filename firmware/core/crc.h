/* CRC-16/CCITT-FALSE (frame header) and CRC-32/ISO-HDLC with a seed (frame body, zlib's crc32). */
#ifndef DNPU_CRC_H
#define DNPU_CRC_H

#include <stddef.h>
#include <stdint.h>

uint16_t dnpu_crc16(const uint8_t *p, size_t n, uint16_t init);
/* zlib's crc32(seed, p, n): continue a CRC-32 from `seed` (0 to start). */
uint32_t dnpu_crc32(uint32_t seed, const uint8_t *p, size_t n);
/* zlib's crc32_combine: the CRC-32 of A then B from crc32(0, A), crc32(0, B) and B's length
 * (also: crc32(seed, B) == dnpu_crc32_combine(seed, crc32(0, B), len(B))). */
uint32_t dnpu_crc32_combine(uint32_t crc_a, uint32_t crc_b, size_t len_b);

#endif
