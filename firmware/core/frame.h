/* Framing (docs/protocol.md section 1): encoding frames, and a decoder that finds them in a byte
 * stream and resynchronises after anything bad by discarding one byte after the sync. */
#ifndef DNPU_FRAME_H
#define DNPU_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dnpu_protocol.h"

/* The largest payload this board receives (its decoder, reply cache and transmit room are sized
 * by it): the protocol's maximum unless a port caps it to its RAM. A longer frame counts as a
 * header error; the host never sends one, as it sizes its frames by the board's declared
 * max_payload (DNPU_BOARD_MAX_PAYLOAD, which must fit here). */
#ifndef DNPU_RX_MAX_PAYLOAD
#define DNPU_RX_MAX_PAYLOAD DNPU_MAX_PAYLOAD
#endif
_Static_assert(DNPU_RX_MAX_PAYLOAD <= DNPU_MAX_PAYLOAD, "DNPU_RX_MAX_PAYLOAD exceeds the protocol's maximum");
#define DNPU_FRAME_MAX (DNPU_HEADER_SIZE + DNPU_RX_MAX_PAYLOAD + DNPU_CRC_SIZE)
#define DNPU_RX_CAP (2 * DNPU_FRAME_MAX)

/* The declaration of message `id`, or NULL for an id the schema does not know. */
const dnpu_msg_info *dnpu_msg_find(uint8_t id);

/* Write the header and CRC around a payload already placed at out + DNPU_HEADER_SIZE; returns the
 * frame's size. `out` must hold DNPU_HEADER_SIZE + len + DNPU_CRC_SIZE bytes, len <= MAX_PAYLOAD. */
size_t dnpu_frame_seal(uint8_t *out, uint8_t msg, uint8_t flags, uint16_t seq, size_t len);

typedef struct dnpu_frame {
    uint8_t msg, flags;
    uint16_t seq;
    uint16_t len;
    const uint8_t *payload;   /* valid until the decoder is next fed or asked */
    uint32_t payload_crc;     /* crc32(0, payload, len): the frame's CRC is checked from it */
} dnpu_frame;

typedef struct dnpu_decoder {
    uint8_t buf[DNPU_RX_CAP];
    size_t pos, len;          /* unread bytes are buf[pos..len) */
    uint32_t garbage_bytes, header_errors, crc_errors;
} dnpu_decoder;

typedef enum { DNPU_DEC_NONE, DNPU_DEC_FRAME, DNPU_DEC_BAD_CRC } dnpu_dec_result;

void dnpu_decoder_reset(dnpu_decoder *d);
/* Where the next received bytes go, and how many fit there (compacts the buffer first). */
uint8_t *dnpu_decoder_space(dnpu_decoder *d, size_t *room);
void dnpu_decoder_commit(dnpu_decoder *d, size_t n);
/* The next frame (DNPU_DEC_FRAME), a frame with a sound header and a bad CRC (DNPU_DEC_BAD_CRC:
 * only msg and seq are set), or DNPU_DEC_NONE when more bytes are needed. */
dnpu_dec_result dnpu_decoder_next(dnpu_decoder *d, dnpu_frame *f);

/* After DNPU_DEC_NONE: drop the incomplete frame (or partial header) the decoder waits on, as after
 * any fault (one byte after its sync). Returns false when nothing was waiting; *seq_valid says
 * whether its header was complete and sound, and then *seq is its SEQ (to NAK it). */
bool dnpu_decoder_expire(dnpu_decoder *d, bool *seq_valid, uint16_t *seq);

#endif
