/* The native port: the firmware core as a Linux process serving a pseudo-terminal (like
 * Klipper's src/linux/). `dnpu-board --pty [--exit-on-stdin-eof] [options]` prints the slave's
 * path on its first line, then serves. The analog side's parameters come on the command line
 * (python -m firmware_sim --options 'firmware=native&...' computes them from the same seed). A
 * board of K devices (--devices K) takes 7K DAC errors, limits and weights, K biases, and one
 * --device-json and --dnpu-params per device, in device order. */
#define _DEFAULT_SOURCE
#include <errno.h>
#include <math.h>
#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "analog.h"
#include "board.h"
#include "dnpu_device.h"

#define EXIT_BAD_OPTIONS 2

/* ---- the link: a pty master; a peer is there from its first bytes until EIO ---------------- */

typedef struct pty_link {
    int master;
    bool peer;
    uint8_t first[4096];                  /* bytes read while probing for a peer */
    size_t first_len;
} pty_link;

static pty_link link_;
static analog analog_;
static dnpu_board board;                  /* every buffer of the firmware: static storage */

static size_t link_read(void *ctx, uint8_t *buf, size_t max)
{
    pty_link *l = &link_;
    (void)ctx;
    if (l->first_len > 0) {
        size_t n = l->first_len < max ? l->first_len : max;
        memcpy(buf, l->first, n);
        memmove(l->first, l->first + n, l->first_len - n);
        l->first_len -= n;
        return n;
    }
    ssize_t n = read(l->master, buf, max);
    if (n > 0)
        return (size_t)n;
    if (n < 0 && errno == EIO)
        l->peer = false;                  /* nobody holds the slave open any more */
    return 0;
}

static size_t link_write(void *ctx, const uint8_t *buf, size_t n)
{
    pty_link *l = &link_;
    (void)ctx;
    ssize_t w = write(l->master, buf, n);
    if (w >= 0)
        return (size_t)w;
    if (errno == EIO) {
        l->peer = false;
        return n;                         /* nobody listening: lost, as on a UART */
    }
    return 0;
}

static bool link_is_open(void *ctx)
{
    (void)ctx;
    return link_.peer;
}

/* While no peer is attached: a read answers EIO (no slave open) or brings the first bytes. */
static void link_probe(pty_link *l)
{
    ssize_t n = read(l->master, l->first, sizeof l->first);
    if (n > 0) {
        l->first_len = (size_t)n;
        l->peer = true;
    }
}

static int link_open(pty_link *l, char *path, size_t cap)
{
    int slave;
    if (openpty(&l->master, &slave, NULL, NULL, NULL) < 0)
        return -1;
    struct termios tio;
    if (tcgetattr(slave, &tio) == 0) {
        cfmakeraw(&tio);
        tcsetattr(slave, TCSANOW, &tio);
    }
    const char *name = ttyname(slave);
    if (name == NULL)
        return -1;
    snprintf(path, cap, "%s", name);
    close(slave);                         /* so that the host closing its end shows up as EIO */
    fcntl(l->master, F_SETFL, fcntl(l->master, F_GETFL) | O_NONBLOCK);
    return 0;
}

/* ---- clock and watchdog ----------------------------------------------------------------- */

static uint64_t clock_ticks(void *ctx)
{
    (void)ctx;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void watchdog_kick(void *ctx)
{
    (void)ctx;
}

/* The analog side's HAL entries (one context: the native board's analog model). */
static void dac_stage(void *ctx, unsigned ch, uint16_t code) { (void)ctx; analog_stage(&analog_, ch, code); }
static void dac_latch(void *ctx) { (void)ctx; analog_latch(&analog_); }
static void dac_force_zero(void *ctx) { (void)ctx; analog_force_zero(&analog_); }
static bool adc_read(void *ctx, int32_t *codes) { (void)ctx; return analog_adc_read(&analog_, codes); }

/* ---- the virtual DNPUs (--dnpu-params): dnpu_device.c behind the same DACs and ADC ----------- */

static dnpu_device dnpu_[DNPU_MAX_DEVICES];   /* one chip per device */
static int32_t dnpu_codes[DNPU_MAX_DEVICES];
static bool dnpu_ok;

/* The DAC volts device k will see for the block the core is converting (what dac_write_row will
 * latch row by row); ctx is the device's index. */
static size_t block_ahead(void *ctx, double *out, size_t cap)
{
    uint32_t first, last;
    unsigned k = (unsigned)(uintptr_t)ctx;
    if (!dnpu_board_next_block(&board, &first, &last))
        return 0;
    size_t n = last - first < cap ? last - first : cap;
    for (size_t r = 0; r < n; r++)
        analog_pin_volts(&analog_, dnpu_board_row(&board, first + (uint32_t)r) + k * DNPU_CHANNELS,
                         k * DNPU_CHANNELS, DNPU_CHANNELS, out + r * DNPU_CHANNELS);
    return n;
}

static bool adc_read_dnpu(void *ctx, int32_t *codes)
{
    (void)ctx;
    analog *a = &analog_;
    if (a->fresh_row) {                      /* a new row reached the devices: run each */
        a->fresh_row = false;
        a->rows++;
        dnpu_ok = true;
        for (unsigned k = 0; k < a->n_devices && dnpu_ok; k++) {
            double na = 0.0;
            dnpu_ok = dnpu_device_row(&dnpu_[k], a->volts + k * DNPU_CHANNELS, (double)board.sweep.period_ns * 1e-9,
                                      board.sweep.oversample, block_ahead, (void *)(uintptr_t)k, &na);
            if (!dnpu_ok)
                fprintf(stderr, "dnpu-board: device %u: %s\n", k, dnpu_[k].error);
            else
                dnpu_codes[k] = analog_adc_code(a, na);
        }
    }
    if (!dnpu_ok)
        return false;
    /* every conversion of the row: the oversampled mean */
    memcpy(codes, dnpu_codes, a->n_devices * sizeof codes[0]);
    return true;
}

/* ---- options --------------------------------------------------------------------------- */

/* Up to `max` numbers separated by ',' or ':' into out; *count says how many (-1: not numbers). */
static int parse_list(const char *text, double *out, int max, int *count)
{
    char *end;
    for (int i = 0; i < max; i++) {
        out[i] = strtod(text, &end);
        if (end == text)
            return -1;
        text = end;
        if (*text == '\0') {
            *count = i + 1;
            return 0;
        }
        if (*text != ',' && *text != ':')
            return -1;
        text++;
    }
    return -1;                            /* more than max */
}

/* What a list option must hold for a board of K devices: per channel (7K) or per device (K). */
typedef struct list_option {
    const char *name;
    int count;                            /* given (0: not given) */
    int per_device;                       /* numbers per device */
} list_option;

enum { L_LIMITS, L_GAIN, L_OFFSET, L_WEIGHTS, L_BIAS, N_LISTS };

typedef struct options {
    dnpu_config cfg;
    bool exit_on_stdin_eof, pty;
    char serial[64];
    const char *dnpu_params[DNPU_MAX_DEVICES];  /* each virtual DNPU's parameter file; none: affine devices */
    unsigned n_params, n_json;
    list_option lists[N_LISTS];
} options;

/* Every list sized for the board's devices, one parameter file per device (or none). */
static int check_counts(const options *o)
{
    unsigned k = o->cfg.n_devices;
    if (k < 1 || k > DNPU_MAX_DEVICES) {
        fprintf(stderr, "dnpu-board: --devices must be 1..%u, got %u\n", DNPU_MAX_DEVICES, k);
        return -1;
    }
    for (int i = 0; i < N_LISTS; i++) {
        const list_option *l = &o->lists[i];
        if (l->count != 0 && l->count != (int)k * l->per_device) {
            fprintf(stderr, "dnpu-board: %s needs %u numbers for %u device(s), got %d\n", l->name,
                    k * (unsigned)l->per_device, k, l->count);
            return -1;
        }
    }
    if (o->n_params != 0 && o->n_params != k) {
        fprintf(stderr, "dnpu-board: %u --dnpu-params for %u devices\n", o->n_params, k);
        return -1;
    }
    if (o->n_json > 1 && o->n_json != k) {
        fprintf(stderr, "dnpu-board: %u --device-json for %u devices\n", o->n_json, k);
        return -1;
    }
    return 0;
}

static int parse_options(int argc, char **argv, options *o)
{
    dnpu_config *c = &o->cfg;
    double pair[2];
    int two;
    list_option *l = o->lists;
    for (int i = 1; i < argc; i++) {
        const char *k = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        int bad = 0;
        if (!strcmp(k, "--pty")) { o->pty = true; continue; }
        if (!strcmp(k, "--exit-on-stdin-eof")) { o->exit_on_stdin_eof = true; continue; }
        if (v == NULL) {
            fprintf(stderr, "dnpu-board: %s needs a value\n", k);
            return -1;
        }
        i++;
        if (!strcmp(k, "--seed")) c->seed = (uint32_t)strtoul(v, NULL, 10);
        else if (!strcmp(k, "--dac-bits")) c->dac_bits = (unsigned)atoi(v);
        else if (!strcmp(k, "--adc-bits")) c->adc_bits = (unsigned)atoi(v);
        else if (!strcmp(k, "--devices")) c->n_devices = (unsigned)strtoul(v, NULL, 10);
        else if (!strcmp(k, "--dac-span")) bad = parse_list(v, c->dac_span_v, 2, &two) || two != 2;
        else if (!strcmp(k, "--adc-span")) bad = parse_list(v, c->adc_span_na, 2, &two) || two != 2;
        else if (!strcmp(k, "--limits")) bad = parse_list(v, &c->limits_v[0][0], 2 * DNPU_MAX_CHANNELS, &l[L_LIMITS].count);
        else if (!strcmp(k, "--max-slew")) c->max_slew_v_per_s = strtod(v, NULL);
        else if (!strcmp(k, "--watchdog-s")) c->watchdog_s = strtod(v, NULL);
        else if (!strcmp(k, "--sample-period-s")) c->sample_period_s = strtod(v, NULL);
        else if (!strcmp(k, "--fifo-blocks")) c->fifo_blocks = (uint32_t)strtoul(v, NULL, 10);
        else if (!strcmp(k, "--realtime")) c->realtime = atoi(v) != 0;
        else if (!strcmp(k, "--dac-gain")) bad = parse_list(v, analog_.gain, ANALOG_CHANNELS, &l[L_GAIN].count);
        else if (!strcmp(k, "--dac-offset")) bad = parse_list(v, analog_.offset, ANALOG_CHANNELS, &l[L_OFFSET].count);
        else if (!strcmp(k, "--weights")) bad = parse_list(v, analog_.w, ANALOG_CHANNELS, &l[L_WEIGHTS].count);
        else if (!strcmp(k, "--bias")) bad = parse_list(v, analog_.bias, DNPU_MAX_DEVICES, &l[L_BIAS].count);
        else if (!strcmp(k, "--clip")) {
            bad = parse_list(v, pair, 2, &two) || two != 2;
            analog_.clip_lo = pair[0];
            analog_.clip_hi = pair[1];
        }
        else if (!strcmp(k, "--fail-after-rows")) analog_.fail_after_rows = strtoll(v, NULL, 10);
        else if (!strcmp(k, "--device-json")) {
            bad = o->n_json >= DNPU_MAX_DEVICES;
            if (!bad)
                c->device_json[o->n_json++] = v;
        }
        else if (!strcmp(k, "--dnpu-params")) {
            bad = o->n_params >= DNPU_MAX_DEVICES;
            if (!bad)
                o->dnpu_params[o->n_params++] = v;
        }
        else if (!strcmp(k, "--serial")) snprintf(o->serial, sizeof o->serial, "%s", v);
        else {
            fprintf(stderr, "dnpu-board: unknown option %s\n", k);
            return -1;
        }
        if (bad) {
            fprintf(stderr, "dnpu-board: bad value for %s: %s\n", k, v);
            return -1;
        }
    }
    return check_counts(o);
}

static void defaults(options *o)
{
    dnpu_config_defaults(&o->cfg);
    o->cfg.firmware = "dnpu-bench-native 0.1.0";
    o->cfg.model = "DNPU-BENCH-NATIVE";
    analog_defaults(&analog_);
    static const list_option lists[N_LISTS] = {
        [L_LIMITS] = {"--limits", 0, 2 * DNPU_CHANNELS}, [L_GAIN] = {"--dac-gain", 0, DNPU_CHANNELS},
        [L_OFFSET] = {"--dac-offset", 0, DNPU_CHANNELS}, [L_WEIGHTS] = {"--weights", 0, DNPU_CHANNELS},
        [L_BIAS] = {"--bias", 0, 1}};
    memcpy(o->lists, lists, sizeof lists);
}

/* ---- main loop ---------------------------------------------------------------------------- */

int main(int argc, char **argv)
{
    static options o;
    defaults(&o);
    if (parse_options(argc, argv, &o) < 0 || !o.pty) {
        fprintf(stderr, "usage: dnpu-board --pty [--exit-on-stdin-eof] [--seed N] ... "
                        "(normally started by python -m firmware_sim --options 'firmware=native&...')\n");
        return EXIT_BAD_OPTIONS;
    }
    if (o.serial[0] == '\0')
        snprintf(o.serial, sizeof o.serial, "NATIVE-%08u", (unsigned)o.cfg.seed);
    o.cfg.serial = o.serial;
    analog_configure(&analog_, &o.cfg);

    for (unsigned k = 0; k < o.n_params; k++) {
        char err[256];
        if (dnpu_device_load(&dnpu_[k], o.dnpu_params[k], DNPU_MAX_BLOCK_SAMPLES, err, sizeof err) < 0) {
            fprintf(stderr, "dnpu-board: bad --dnpu-params for device %u: %s\n", k, err);
            return EXIT_BAD_OPTIONS;
        }
    }

    char path[256];
    if (link_open(&link_, path, sizeof path) < 0) {
        perror("dnpu-board: openpty");
        return 1;
    }
    dnpu_hal hal = {
        .ctx = NULL, .link_read = link_read, .link_write = link_write, .link_is_open = link_is_open,
        .clock_ticks = clock_ticks, .ticks_per_s = 1000000000u, .dac_stage = dac_stage,
        .dac_latch = dac_latch, .dac_force_zero = dac_force_zero,
        .adc_read = o.n_params > 0 ? adc_read_dnpu : adc_read,
        .watchdog_kick = watchdog_kick,
    };
    if (dnpu_board_init(&board, &o.cfg, &hal) < 0) {
        fprintf(stderr, "dnpu-board: configuration does not fit the firmware's buffers\n");
        return EXIT_BAD_OPTIONS;
    }
    printf("%s\n", path);
    fflush(stdout);

    for (;;) {
        if (!link_.peer)
            link_probe(&link_);
        int busy = dnpu_board_step(&board);
        struct pollfd fds[2];
        int n = 0;
        if (o.exit_on_stdin_eof)
            fds[n++] = (struct pollfd){.fd = 0, .events = POLLIN};
        int timeout = busy & DNPU_BUSY_CONVERT ? 0 : 2;
        if (link_.peer)
            fds[n++] = (struct pollfd){.fd = link_.master,
                                       .events = (short)(POLLIN | (busy & DNPU_BUSY_TX ? POLLOUT : 0))};
        else
            timeout = busy & DNPU_BUSY_CONVERT ? 0 : 5;
        if (poll(fds, (nfds_t)n, timeout) > 0 && o.exit_on_stdin_eof && (fds[0].revents & (POLLIN | POLLHUP))) {
            char tmp[256];
            if (read(0, tmp, sizeof tmp) <= 0)
                break;
        }
    }
    return 0;
}
