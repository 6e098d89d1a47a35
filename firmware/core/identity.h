/* The identity JSON (docs/protocol.md section 4), built once at start-up. */
#ifndef DNPU_IDENTITY_H
#define DNPU_IDENTITY_H

#include <stddef.h>

struct dnpu_board;

/* Writes the identity into buf; returns its length, 0 if it did not fit. */
size_t dnpu_identity_build(const struct dnpu_board *b, char *buf, size_t cap);

#endif
