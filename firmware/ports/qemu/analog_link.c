#include "analog_link.h"

#include <string.h>

#include "clock.h"
#include "stm32f4.h"
#include "wire.h"

/* ---- USART2: polled, only ever waiting for the reply it asked for -------------------------- */

static void uart_init(uint32_t pclk_hz)
{
    RCC_AHB1ENR |= RCC_AHB1ENR_GPIOAEN;
    RCC_APB1ENR |= RCC_APB1ENR_USART2EN;
    /* PA2 (TX) and PA3 (RX): alternate function 7 */
    GPIO_MODER(GPIOA_BASE) = (GPIO_MODER(GPIOA_BASE) & ~(0xFu << 4)) | (0xAu << 4);
    GPIO_AFRL(GPIOA_BASE) = (GPIO_AFRL(GPIOA_BASE) & ~(0xFFu << 8)) | (0x77u << 8);
    USART2->CR1 = 0;
    USART2->BRR = (pclk_hz + ANALOG_BAUD / 2u) / ANALOG_BAUD;
    USART2->CR2 = 0;
    USART2->CR3 = 0;
    USART2->CR1 = USART_CR1_UE | USART_CR1_TE | USART_CR1_RE;
    while (USART2->SR & USART_SR_RXNE)  /* nothing stale */
        (void)USART2->DR;
}

static void uart_send(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        while (!(USART2->SR & USART_SR_TXE))
            ;
        USART2->DR = p[i];
    }
}

/* Receive exactly n bytes before `deadline` (board clock ticks); false on timeout. The hardware
 * watchdog is kicked while waiting: the emulator may take a while over a large block. */
static bool uart_recv(uint8_t *p, size_t n, uint64_t deadline)
{
    for (size_t i = 0; i < n;) {
        if (USART2->SR & (USART_SR_RXNE | USART_SR_ORE)) {
            p[i++] = (uint8_t)USART2->DR;
            continue;
        }
        if (clock_now() > deadline)
            return false;
        IWDG_KR = 0xAAAAu;
    }
    return true;
}

/* ---- the exchange ---------------------------------------------------------------------------- */

static void put64(uint8_t *p, uint64_t v)
{
    dnpu_put32(p, (uint32_t)v);
    dnpu_put32(p + 4, (uint32_t)(v >> 32));
}

/* Convert n rows of b->channels codes (the latched row alone, or the sweep's block from row
 * `first`); the n x K codes land in a->codes. false: no reply in time, a malformed one, or the
 * device failed. */
static bool request(analog_link *a, const uint16_t *rows, uint32_t n,
                    uint32_t period_ns, unsigned oversample, uint32_t block, uint64_t due)
{
    const dnpu_board *b = a->board;
    const unsigned channels = b->channels;
    uint8_t head[ANALOG_REQUEST_HEAD];
    head[0] = ANALOG_REQUEST;
    head[1] = (uint8_t)oversample;
    dnpu_put16(head + 2, (uint16_t)n);
    dnpu_put32(head + 4, period_ns);
    dnpu_put32(head + 8, block);
    put64(head + 12, dnpu_board_ticks(b));
    put64(head + 20, due);
    uart_send(head, sizeof head);
    for (uint32_t r = 0; r < n; r++) {
        uint8_t row[2 * DNPU_MAX_CHANNELS];
        for (unsigned c = 0; c < channels; c++)
            dnpu_put16(row + 2 * c, rows[(size_t)r * channels + c]);
        uart_send(row, 2u * channels);
    }
    a->requests++;

    uint64_t deadline = clock_now() + (uint64_t)ANALOG_REPLY_TIMEOUT_S * CLOCK_TICKS_PER_S;
    uint8_t reply[ANALOG_REPLY_HEAD];
    if (!uart_recv(reply, sizeof reply, deadline)) {
        a->timeouts++;
        return false;
    }
    if (reply[0] != ANALOG_REPLY || dnpu_get16(reply + 2) != n)
        return false;                     /* out of step: the emulator is gone or confused */
    if (!reply[1])
        return false;                     /* the device failed on this block */
    for (uint32_t i = 0; i < n * b->n_devices; i++) {
        uint8_t c4[4];
        if (!uart_recv(c4, sizeof c4, deadline)) {
            a->timeouts++;
            return false;
        }
        a->codes[i] = (int32_t)dnpu_get32(c4);
    }
    return true;
}

/* The sweep block the core is converting, if the latched row is its first row. */
static bool block_starts_here(const analog_link *a, uint32_t *first, uint32_t *n)
{
    uint32_t last;
    if (!dnpu_board_next_block(a->board, first, &last))
        return false;
    *n = last - *first;
    return *n * a->board->n_devices <= DNPU_MAX_BLOCK_SAMPLES
        && memcmp(dnpu_board_row(a->board, *first), a->latched, 2u * a->board->channels) == 0;
}

static bool next_row_was_sent_ahead(const analog_link *a)
{
    const dnpu_board *b = a->board;
    return a->ahead_pos < a->ahead_n && b->sweep.exists && b->sweep.id == a->ahead_sweep
        && memcmp(dnpu_board_row(b, a->ahead_first + a->ahead_pos), a->latched, 2u * b->channels) == 0;
}

/* The row's codes: row i of the last reply. */
static void take_row(analog_link *a, uint32_t i)
{
    const unsigned k = a->board->n_devices;
    memcpy(a->row_codes, a->codes + (size_t)i * k, k * sizeof a->row_codes[0]);
}

static void convert_row(analog_link *a)
{
    const dnpu_board *b = a->board;
    const dnpu_sweep *s = &b->sweep;
    if (next_row_was_sent_ahead(a)) {
        take_row(a, a->ahead_pos++);
        a->row_ok = true;
        return;
    }
    a->ahead_n = a->ahead_pos = 0;
    uint32_t first, n;
    if (block_starts_here(a, &first, &n)) {
        uint64_t due = b->cfg.realtime ? dnpu_board_next_block_due(b) : 0;
        a->row_ok = request(a, dnpu_board_row(b, first), n, s->period_ns,
                            s->oversample, s->produced, due);
        if (a->row_ok) {
            a->ahead_first = first;
            a->ahead_n = n;
            a->ahead_pos = 1;
            a->ahead_sweep = s->id;
            take_row(a, 0);
        }
        return;
    }
    uint32_t period_ns = s->exists ? s->period_ns : (uint32_t)(b->cfg.sample_period_s * 1e9);
    a->row_ok = request(a, a->latched, 1, period_ns, s->exists ? s->oversample : 1u, UINT32_MAX, 0);
    take_row(a, 0);
}

/* ---- the HAL's analog entries ---------------------------------------------------------------- */

void analog_link_init(analog_link *a, const dnpu_board *board, uint32_t pclk_hz)
{
    memset(a, 0, sizeof *a);
    a->board = board;
    uart_init(pclk_hz);
}

void analog_link_stage(analog_link *a, unsigned channel, uint16_t code)
{
    if (channel < DNPU_MAX_CHANNELS)
        a->staged[channel] = code;
}

void analog_link_latch(analog_link *a)
{
    memcpy(a->latched, a->staged, sizeof a->latched);
    a->fresh = true;
}

/* 0 V on every pin: the emulator's device sees only converted rows, so nothing to forward. */
void analog_link_force_zero(analog_link *a)
{
    for (unsigned c = 0; c < DNPU_MAX_CHANNELS; c++)
        a->staged[c] = a->latched[c] = a->board->zero_code;
    a->fresh = true;
}

/* Every conversion of a row returns the row's code (the emulator averages the oversample
 * sub-samples in nA before its ADC, as the Python firmware does). */
bool analog_link_adc_read(analog_link *a, int32_t *codes)
{
    if (a->fresh) {
        a->fresh = false;
        convert_row(a);
    }
    memcpy(codes, a->row_codes, a->board->n_devices * sizeof codes[0]);
    return a->row_ok;
}

void analog_link_announce(analog_link *a, unsigned config, uint32_t config_size)
{
    uint8_t rec[ANALOG_BOOT_SIZE];
    rec[0] = (uint8_t)ANALOG_BOOT;
    rec[1] = (uint8_t)config;
    rec[2] = (uint8_t)(a->board->n_devices & 0xFFu);
    rec[3] = (uint8_t)(a->board->n_devices >> 8);
    dnpu_put32(rec + 4, config_size);
    uart_send(rec, sizeof rec);
}
