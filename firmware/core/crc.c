#include "crc.h"

/* CRC-32 table (reflected 0xEDB88320), built on first use: 1 KiB of RAM, no code to maintain. */
static uint32_t crc32_table[256];
static int crc32_ready;

static void crc32_build(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c & 1u) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc32_table[i] = c;
    }
    crc32_ready = 1;
}

uint32_t dnpu_crc32(uint32_t seed, const uint8_t *p, size_t n)
{
    if (!crc32_ready)
        crc32_build();
    uint32_t c = ~seed;
    for (size_t i = 0; i < n; i++)
        c = crc32_table[(c ^ p[i]) & 0xFFu] ^ (c >> 8);
    return ~c;
}

uint16_t dnpu_crc16(const uint8_t *p, size_t n, uint16_t init)
{
    uint16_t c = init;
    for (size_t i = 0; i < n; i++) {
        c ^= (uint16_t)(p[i] << 8);
        for (int k = 0; k < 8; k++)
            c = (c & 0x8000u) ? (uint16_t)((c << 1) ^ 0x1021u) : (uint16_t)(c << 1);
    }
    return c;
}
