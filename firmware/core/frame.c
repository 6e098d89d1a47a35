#include "frame.h"

#include <string.h>

#include "crc.h"
#include "wire.h"

const dnpu_msg_info *dnpu_msg_find(uint8_t id)
{
    size_t lo = 0, hi = DNPU_N_MESSAGES;
    while (lo < hi) {                       /* DNPU_MESSAGES is in ascending id order */
        size_t mid = (lo + hi) / 2;
        if (DNPU_MESSAGES[mid].id == id)
            return &DNPU_MESSAGES[mid];
        if (DNPU_MESSAGES[mid].id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

static uint32_t crc_seed(uint8_t msg)
{
    const dnpu_msg_info *m = dnpu_msg_find(msg);
    return (m != NULL && m->boot) ? 0u : (uint32_t)DNPU_SCHEMA_HASH;
}

size_t dnpu_frame_seal(uint8_t *out, uint8_t msg, uint8_t flags, uint16_t seq, size_t len)
{
    out[0] = DNPU_SYNC0;
    out[1] = DNPU_SYNC1;
    dnpu_put16(out + DNPU_OFF_LEN, (uint16_t)len);
    out[DNPU_OFF_MSG] = msg;
    out[DNPU_OFF_FLAGS] = flags;
    dnpu_put16(out + DNPU_OFF_SEQ, seq);
    dnpu_put16(out + DNPU_OFF_HCRC, dnpu_crc16(out, DNPU_OFF_HCRC, DNPU_HCRC_INIT));
    size_t body = DNPU_HEADER_SIZE + len;
    uint32_t crc = dnpu_crc32(crc_seed(msg), out + DNPU_OFF_LEN, body - DNPU_OFF_LEN);
    dnpu_put32(out + body, crc);
    return body + DNPU_CRC_SIZE;
}

void dnpu_decoder_reset(dnpu_decoder *d)
{
    d->pos = d->len = 0;
}

uint8_t *dnpu_decoder_space(dnpu_decoder *d, size_t *room)
{
    if (d->pos > 0) {
        memmove(d->buf, d->buf + d->pos, d->len - d->pos);
        d->len -= d->pos;
        d->pos = 0;
    }
    *room = DNPU_RX_CAP - d->len;
    return d->buf + d->len;
}

void dnpu_decoder_commit(dnpu_decoder *d, size_t n)
{
    size_t room = DNPU_RX_CAP - d->len;
    d->len += n < room ? n : room;
}

/* Index of the next SYNC at or after d->pos, or d->len if none. */
static size_t find_sync(const dnpu_decoder *d)
{
    for (size_t i = d->pos; i + 1 < d->len; i++)
        if (d->buf[i] == DNPU_SYNC0 && d->buf[i + 1] == DNPU_SYNC1)
            return i;
    return d->len;
}

dnpu_dec_result dnpu_decoder_next(dnpu_decoder *d, dnpu_frame *f)
{
    for (;;) {
        size_t i = find_sync(d);
        if (i == d->len) {
            /* keep a trailing first sync byte: its partner may come in the next read */
            size_t keep = (d->len > d->pos && d->buf[d->len - 1] == DNPU_SYNC0) ? 1 : 0;
            d->garbage_bytes += (uint32_t)(d->len - d->pos - keep);
            d->pos = d->len - keep;
            return DNPU_DEC_NONE;
        }
        d->garbage_bytes += (uint32_t)(i - d->pos);
        d->pos = i;
        if (d->len - i < DNPU_HEADER_SIZE)
            return DNPU_DEC_NONE;
        const uint8_t *h = d->buf + i;
        uint16_t length = dnpu_get16(h + DNPU_OFF_LEN);
        if (dnpu_get16(h + DNPU_OFF_HCRC) != dnpu_crc16(h, DNPU_OFF_HCRC, DNPU_HCRC_INIT)
            || length > DNPU_RX_MAX_PAYLOAD) {
            d->header_errors++;
            d->pos = i + 1;
            continue;
        }
        size_t end = i + DNPU_HEADER_SIZE + length;
        if (d->len < end + DNPU_CRC_SIZE)
            return DNPU_DEC_NONE;
        f->msg = h[DNPU_OFF_MSG];
        f->flags = h[DNPU_OFF_FLAGS];
        f->seq = dnpu_get16(h + DNPU_OFF_SEQ);
        f->len = length;
        f->payload = h + DNPU_HEADER_SIZE;
        /* one pass over the payload: its own CRC (the board keys its reply cache by it), the
         * frame's from the header's and that */
        f->payload_crc = dnpu_crc32(0, f->payload, length);
        uint32_t crc = dnpu_crc32_combine(dnpu_crc32(crc_seed(f->msg), h + DNPU_OFF_LEN,
                                                     DNPU_HEADER_SIZE - DNPU_OFF_LEN),
                                          f->payload_crc, length);
        if (crc != dnpu_get32(d->buf + end)) {
            d->crc_errors++;
            d->pos = i + 1;
            return DNPU_DEC_BAD_CRC;
        }
        d->pos = end + DNPU_CRC_SIZE;
        return DNPU_DEC_FRAME;
    }
}

bool dnpu_decoder_expire(dnpu_decoder *d, bool *seq_valid, uint16_t *seq)
{
    if (d->len <= d->pos)
        return false;
    const uint8_t *h = d->buf + d->pos;
    /* after DNPU_DEC_NONE, a whole header at pos has passed its check (else pos moved past it) */
    *seq_valid = d->len - d->pos >= DNPU_HEADER_SIZE && h[0] == DNPU_SYNC0 && h[1] == DNPU_SYNC1;
    *seq = *seq_valid ? dnpu_get16(h + DNPU_OFF_SEQ) : 0;
    d->pos++;
    return true;
}
