/* The protocol header as this port compiles the core with it: the generated one
 * (protocol/generate.py c-header, built as dnpu_protocol_gen.h), with the largest frame the
 * board takes capped at the payload it declares (DNPU_PORT_MAX_PAYLOAD). The core sizes its
 * receive buffer (2 frames), reply cache and transmit room from DNPU_MAX_PAYLOAD; at the
 * protocol's 8192 bytes those alone exceed this board's 32 KB RAM budget. A frame announcing a
 * longer payload than the board declared in HELLO_REPLY/identity counts as a header error (the
 * host sizes its frames by that declaration). */
#ifndef DNPU_STM32F4_PROTOCOL_H
#define DNPU_STM32F4_PROTOCOL_H

#include "dnpu_protocol_gen.h"

#ifdef DNPU_PORT_MAX_PAYLOAD
#if DNPU_PORT_MAX_PAYLOAD > DNPU_MAX_PAYLOAD
#error "DNPU_PORT_MAX_PAYLOAD exceeds the protocol's maximum payload"
#endif
#undef DNPU_MAX_PAYLOAD
#define DNPU_MAX_PAYLOAD DNPU_PORT_MAX_PAYLOAD
#endif

#endif
