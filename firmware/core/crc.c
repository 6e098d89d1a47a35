#include "crc.h"

/* CRC-32 (reflected polynomial 0xEDB88320), table-driven, tables built on first use. An MCU port
 * keeps one 256-entry table (1 KiB of RAM, a byte per step); a Linux build sets
 * DNPU_CRC32_SLICES=8 and reads eight bytes per step through eight tables (8 KiB), the same
 * function of the bytes. */
#ifndef DNPU_CRC32_SLICES
#define DNPU_CRC32_SLICES 1
#endif
_Static_assert(DNPU_CRC32_SLICES == 1 || DNPU_CRC32_SLICES == 8, "DNPU_CRC32_SLICES must be 1 or 8");

#define CRC32_POLY 0xEDB88320u

static uint32_t crc32_table[DNPU_CRC32_SLICES][256];
static int crc32_ready;

static void crc32_build(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c & 1u) ? CRC32_POLY ^ (c >> 1) : c >> 1;
        crc32_table[0][i] = c;
    }
    /* table s: the CRC of byte i followed by s zero bytes */
    for (int s = 1; s < DNPU_CRC32_SLICES; s++)
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = crc32_table[s - 1][i];
            crc32_table[s][i] = crc32_table[0][c & 0xFFu] ^ (c >> 8);
        }
    crc32_ready = 1;
}

static uint32_t crc32_bytes(uint32_t c, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        c = crc32_table[0][(c ^ p[i]) & 0xFFu] ^ (c >> 8);
    return c;
}

#if DNPU_CRC32_SLICES == 8
static uint32_t crc32_slices(uint32_t c, const uint8_t *p, size_t n)
{
    const uint32_t(*t)[256] = crc32_table;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint32_t lo = c ^ ((uint32_t)p[i] | (uint32_t)p[i + 1] << 8 | (uint32_t)p[i + 2] << 16
                           | (uint32_t)p[i + 3] << 24);
        c = t[7][lo & 0xFFu] ^ t[6][(lo >> 8) & 0xFFu] ^ t[5][(lo >> 16) & 0xFFu] ^ t[4][lo >> 24]
            ^ t[3][p[i + 4]] ^ t[2][p[i + 5]] ^ t[1][p[i + 6]] ^ t[0][p[i + 7]];
    }
    return crc32_bytes(c, p + i, n - i);
}
#endif

uint32_t dnpu_crc32(uint32_t seed, const uint8_t *p, size_t n)
{
    if (!crc32_ready)
        crc32_build();
#if DNPU_CRC32_SLICES == 8
    return ~crc32_slices(~seed, p, n);
#else
    return ~crc32_bytes(~seed, p, n);
#endif
}

/* Polynomials mod P in the reflected representation (bit 31 is x^0): a * b mod P. */
static uint32_t mul_mod_p(uint32_t a, uint32_t b)
{
    uint32_t prod = 0;
    for (uint32_t m = 1u << 31; m != 0; m >>= 1) {
        if (a & m)
            prod ^= b;
        b = (b & 1u) ? (b >> 1) ^ CRC32_POLY : b >> 1;   /* b * x */
    }
    return prod;
}

/* x^(8n) mod P by squaring: appending n zero bytes to a message multiplies its CRC state by it. */
static uint32_t x_pow_8n_mod_p(size_t n)
{
    uint32_t result = 1u << 31, sq = 1u << 23;     /* x^0; x^8 */
    for (; n != 0; n >>= 1) {
        if (n & 1u)
            result = mul_mod_p(result, sq);
        sq = mul_mod_p(sq, sq);
    }
    return result;
}

uint32_t dnpu_crc32_combine(uint32_t crc_a, uint32_t crc_b, size_t len_b)
{
    return mul_mod_p(x_pow_8n_mod_p(len_b), crc_a) ^ crc_b;
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
