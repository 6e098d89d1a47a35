/* Bounded text building: JSON for the identity, ASCII for ERROR replies. Never writes past cap;
 * an overflow is remembered and truncates. */
#ifndef DNPU_TEXT_H
#define DNPU_TEXT_H

#include <stdbool.h>
#include <stddef.h>

typedef struct dnpu_text {
    char *buf;
    size_t cap, len;
    bool overflow;
} dnpu_text;

void dnpu_text_init(dnpu_text *t, char *buf, size_t cap);
void dnpu_text_add(dnpu_text *t, const char *s);
void dnpu_text_addf(dnpu_text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A double as Python's repr() writes it (the shortest text that reads back as the same value). */
void dnpu_text_double(dnpu_text *t, double x);

#endif
