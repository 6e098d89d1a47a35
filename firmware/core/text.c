#include "text.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void dnpu_text_init(dnpu_text *t, char *buf, size_t cap)
{
    t->buf = buf;
    t->cap = cap;
    t->len = 0;
    t->overflow = false;
    if (cap > 0)
        buf[0] = '\0';
}

static void add_n(dnpu_text *t, const char *s, size_t n)
{
    if (t->cap == 0)
        return;
    size_t room = t->cap - 1 - t->len;
    if (n > room) {
        n = room;
        t->overflow = true;
    }
    memcpy(t->buf + t->len, s, n);
    t->len += n;
    t->buf[t->len] = '\0';
}

void dnpu_text_add(dnpu_text *t, const char *s)
{
    add_n(t, s, strlen(s));
}

void dnpu_text_addf(dnpu_text *t, const char *fmt, ...)
{
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n >= sizeof tmp) {
        n = (int)sizeof tmp - 1;
        t->overflow = true;
    }
    add_n(t, tmp, (size_t)n);
}

/* Shortest decimal digits of |x| and its decimal exponent: x = d.ddd x 10^exp. */
static int shortest_digits(double x, char digits[20], int *exp10)
{
    char e[40];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(e, sizeof e, "%.*e", prec - 1, x);
        if (strtod(e, NULL) == x || prec == 17)
            break;
    }
    int n = 0;
    const char *p = e;
    for (; *p && *p != 'e'; p++)
        if (*p >= '0' && *p <= '9' && n < 19)
            digits[n++] = *p;
    while (n > 1 && digits[n - 1] == '0')
        n--;
    digits[n] = '\0';
    *exp10 = (*p == 'e') ? atoi(p + 1) : 0;
    return n;
}

void dnpu_text_double(dnpu_text *t, double x)
{
    if (isnan(x) || isinf(x)) {
        dnpu_text_add(t, isnan(x) ? "NaN" : (x > 0 ? "Infinity" : "-Infinity"));
        return;
    }
    if (signbit(x)) {
        dnpu_text_add(t, "-");
        x = -x;
    }
    if (x == 0.0) {
        dnpu_text_add(t, "0.0");
        return;
    }
    char d[20];
    int e;
    int n = shortest_digits(x, d, &e);
    if (e < -4 || e >= 16) {                  /* 1.5e-05, 1e+16 */
        add_n(t, d, 1);
        if (n > 1) {
            dnpu_text_add(t, ".");
            add_n(t, d + 1, (size_t)(n - 1));
        }
        dnpu_text_addf(t, "e%c%02d", e < 0 ? '-' : '+', e < 0 ? -e : e);
    } else if (e < 0) {                       /* 0.00012 */
        dnpu_text_add(t, "0.");
        for (int i = 0; i < -e - 1; i++)
            dnpu_text_add(t, "0");
        add_n(t, d, (size_t)n);
    } else {                                  /* 123.45, 100.0 */
        int whole = e + 1;
        add_n(t, d, (size_t)(n < whole ? n : whole));
        for (int i = n; i < whole; i++)
            dnpu_text_add(t, "0");
        dnpu_text_add(t, ".");
        if (n > whole)
            add_n(t, d + whole, (size_t)(n - whole));
        else
            dnpu_text_add(t, "0");
    }
}
