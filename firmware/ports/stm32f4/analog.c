#include "analog.h"

#include "clock.h"
#include "regs.h"

/* Pins (docs/board.md has the wiring). */
#define DAC_CS_PORT   GPIOA_BASE          /* PA4: DAC81408 CS, GPIO */
#define DAC_CS_PIN    4u
#define DAC_CLR_PORT  GPIOC_BASE          /* PC8: DAC81408 CLR (active low; 10 k pull-down) */
#define DAC_CLR_PIN   8u
#define DAC_RST_PORT  GPIOC_BASE          /* PC9: DAC81408 RESET (active low; 10 k pull-up) */
#define DAC_RST_PIN   9u
#define LDAC_PIN      6u                  /* PC6: TIM3_CH1 (AF2) -> DAC81408 LDAC (10 k pull-up) */
#define CONVST_PIN    7u                  /* PC7: TIM3_CH2 (AF2) -> ADS8681 CONVST/CS */
#define AF_SPI        5u
#define AF_TIM3       2u

/* DAC81408 registers (24-bit frames: R/W, 7-bit address, 16-bit data) */
#define DAC_READ 0x80u
enum { DAC_DEVICEID = 0x01, DAC_SPICONFIG = 0x03, DAC_GENCONFIG = 0x04, DAC_SYNCCONFIG = 0x06,
       DAC_DACPWDWN = 0x09, DAC_DACRANGE0 = 0x0B, DAC_DACRANGE1 = 0x0C, DAC_DATA0 = 0x14 };
#define DAC_SPICONFIG_ON 0x0A84u          /* the reset value 0x0AA4 with DEV-PWDWN cleared */
#define DAC_GENCONFIG_INTREF 0x0000u      /* REF-PWDWN cleared: the internal 2.5 V reference */
#define DAC_RANGE_PM2V5 0xEEEEu           /* +-2.5 V (1110) on all four channels of each register */
/* SYNCCONFIG and DACPWDWN hold DACn at bit 4 + n: channels 0..6 */
#define DAC_CHANNELS_USED (((1u << ANALOG_CHANNELS) - 1u) << 4)
#define DAC_CODE_0V 0x8000u               /* mid-scale: 0 V in a bipolar range */

/* ADS8681 commands (32 bits: 7-bit opcode, 9-bit address, 16-bit data) */
#define ADC_WRITE 0xD000u
#define ADC_READ_HWORD 0xC800u
#define ADC_RANGE_SEL_REG 0x14u
#define ADC_RANGE_PM0625VREF 0x0004u      /* +-0.625 x 4.096 V = +-2.56 V, internal reference */

#define CYCLE_WAIT_TICKS (CLOCK_TICKS_PER_S / 500u)   /* 2 ms: far beyond the longest cycle */

static int32_t gain_q14[ANALOG_CHANNELS], offset_q14[ANALOG_CHANNELS], adc_offset;
static uint16_t settle_ticks;
static bool clr_asserted;
static uint32_t issued, consumed;          /* timer cycles started / results handed to the core */
static volatile uint32_t completed;        /* results read by the sample interrupt */
static volatile uint16_t adc_raw;

/* ---- SPI ---- */
static uint16_t dac_frame(uint8_t head, uint16_t data)
{
    const uint8_t out[3] = {head, (uint8_t)(data >> 8), (uint8_t)data};
    uint32_t in = 0;
    gpio_clear(DAC_CS_PORT, DAC_CS_PIN);
    for (unsigned i = 0; i < 3; i++) {
        SPI1->DR = out[i];
        while (!(SPI1->SR & SPI_SR_RXNE)) {   /* 8 SCLK at 42 MHz */
        }
        in = in << 8 | (SPI1->DR & 0xFFu);
    }
    while (SPI1->SR & SPI_SR_BSY) {
    }
    gpio_set(DAC_CS_PORT, DAC_CS_PIN);
    return (uint16_t)in;
}

static uint16_t dac_read(uint8_t reg)
{
    dac_frame(DAC_READ | reg, 0);
    return dac_frame(0x00u, 0);            /* the register comes out during the next frame */
}

static uint16_t adc_word(uint16_t w)
{
    SPI2->DR = w;
    while (!(SPI2->SR & SPI_SR_RXNE)) {
    }
    return (uint16_t)SPI2->DR;
}

/* One 32-bit command frame with CONVST/CS as a GPIO (start-up only); returns the first half-word. */
static uint16_t adc_command(uint16_t hi, uint16_t lo)
{
    gpio_clear(GPIOC_BASE, CONVST_PIN);
    clock_delay_us(1);
    uint16_t r = adc_word(hi);
    adc_word(lo);
    gpio_set(GPIOC_BASE, CONVST_PIN);      /* ends the frame, starts a conversion */
    clock_delay_us(2);
    return r;
}

/* ---- the timer ---- */
static void cycle_wait(void)
{
    uint64_t t0 = clock_now();
    while ((TIM3->CR1 & TIM_CR1_CEN) && clock_now() - t0 < CYCLE_WAIT_TICKS) {
    }
}

static void cycle_start(bool latch)
{
    cycle_wait();
    uint32_t convst = latch ? settle_ticks : 1u;
    TIM3->CCR1 = latch ? 1u : 0xFFFFu;     /* LDAC falls at tick 1, or never */
    TIM3->CCR2 = convst;
    TIM3->ARR = convst + ANALOG_CONV_TICKS;
    TIM3->CNT = 0;
    issued++;
    TIM3->CR1 = TIM_CR1_OPM | TIM_CR1_URS | TIM_CR1_CEN;
}

/* The sample interrupt (TIM3 update, priority 0: the DAC-update interrupt of the timing budget):
 * CONVST/CS has just gone low, opening the ADS8681's output frame; clock out the 16-bit result.
 * Straight-line except the RXNE wait, which is bounded by one 16-bit frame at 21 MHz (762 ns). */
void tim3_irq_handler(void);
void tim3_irq_handler(void)
{
    TIM3->SR = ~TIM_SR_UIF;
    SPI2->DR = 0;                          /* NOP: 16 clocks */
    while (!(SPI2->SR & SPI_SR_RXNE)) {
    }
    adc_raw = (uint16_t)SPI2->DR;
    completed = completed + 1u;
}

/* ---- set-up ---- */
static void pins_init(void)
{
    rcc_enable(&RCC_AHB1ENR, RCC_AHB1ENR_GPIOAEN | RCC_AHB1ENR_GPIOBEN | RCC_AHB1ENR_GPIOCEN);
    gpio_clear(DAC_CLR_PORT, DAC_CLR_PIN);  /* clear first: the pull-down already holds it */
    gpio_pin(DAC_CLR_PORT, DAC_CLR_PIN, GPIO_OUT, 0);
    gpio_set(DAC_CS_PORT, DAC_CS_PIN);
    gpio_pin(DAC_CS_PORT, DAC_CS_PIN, GPIO_OUT, 0);
    gpio_set(DAC_RST_PORT, DAC_RST_PIN);
    gpio_pin(DAC_RST_PORT, DAC_RST_PIN, GPIO_OUT, 0);
    gpio_set(GPIOC_BASE, LDAC_PIN);
    gpio_pin(GPIOC_BASE, LDAC_PIN, GPIO_OUT, 0);
    gpio_set(GPIOC_BASE, CONVST_PIN);
    gpio_pin(GPIOC_BASE, CONVST_PIN, GPIO_OUT, 0);
    gpio_pin(GPIOA_BASE, 5, GPIO_AF, AF_SPI);   /* SPI1_SCK */
    gpio_pin(GPIOA_BASE, 6, GPIO_AF, AF_SPI);   /* SPI1_MISO <- DAC SDO */
    gpio_pin(GPIOB_BASE, 5, GPIO_AF, AF_SPI);   /* SPI1_MOSI -> DAC SDI */
    gpio_pin(GPIOB_BASE, 10, GPIO_AF, AF_SPI);  /* SPI2_SCK */
    gpio_pin(GPIOC_BASE, 2, GPIO_AF, AF_SPI);   /* SPI2_MISO <- ADC SDO-0 */
    gpio_pin(GPIOC_BASE, 3, GPIO_AF, AF_SPI);   /* SPI2_MOSI -> ADC SDI */
}

static void spi_init(void)
{
    rcc_enable(&RCC_APB2ENR, RCC_APB2ENR_SPI1EN);
    rcc_enable(&RCC_APB1ENR, RCC_APB1ENR_SPI2EN);
    /* DAC81408: SDI latched on SCLK falling edges (mode 1), 8-bit frames x 3, 42 MHz (max 50) */
    SPI1->CR1 = SPI_CR1_MSTR | SPI_CR1_BR_DIV2 | SPI_CR1_CPHA | SPI_CR1_SSM | SPI_CR1_SSI;
    SPI1->CR1 |= SPI_CR1_SPE;
    /* ADS8681: SPI-00 (mode 0), 16-bit frames, 21 MHz (max 66.7) */
    SPI2->CR1 = SPI_CR1_MSTR | SPI_CR1_BR_DIV2 | SPI_CR1_DFF | SPI_CR1_SSM | SPI_CR1_SSI;
    SPI2->CR1 |= SPI_CR1_SPE;
}

static void dac_init(analog_info *info)
{
    gpio_clear(DAC_RST_PORT, DAC_RST_PIN);
    clock_delay_us(10);
    gpio_set(DAC_RST_PORT, DAC_RST_PIN);
    clock_delay_us(1000);                  /* power-on/reset time */
    dac_frame(DAC_SPICONFIG, DAC_SPICONFIG_ON);
    dac_frame(DAC_GENCONFIG, DAC_GENCONFIG_INTREF);
    clock_delay_us(1000);                  /* the reference settles */
    dac_frame(DAC_DACRANGE0, DAC_RANGE_PM2V5);
    dac_frame(DAC_DACRANGE1, DAC_RANGE_PM2V5);
    dac_frame(DAC_SYNCCONFIG, DAC_CHANNELS_USED);   /* channels 0..6 update on LDAC only */
    for (unsigned ch = 0; ch < 8u; ch++)
        dac_frame((uint8_t)(DAC_DATA0 + ch), DAC_CODE_0V);
    dac_frame(DAC_DACPWDWN, (uint16_t)(0xFFFFu & ~DAC_CHANNELS_USED));   /* 0..6 on, 7 stays off */
    info->dac_deviceid = dac_read(DAC_DEVICEID);
}

static void adc_init(analog_info *info)
{
    clock_delay_us(20000);                 /* ADS8681 power-up with its internal reference */
    adc_command(ADC_WRITE | ADC_RANGE_SEL_REG, ADC_RANGE_PM0625VREF);
    adc_command(ADC_READ_HWORD | ADC_RANGE_SEL_REG, 0);
    info->adc_range_reg = adc_command(0, 0);   /* the read-back comes in the next frame */
}

static void timer_init(void)
{
    rcc_enable(&RCC_APB1ENR, RCC_APB1ENR_TIM3EN);
    TIM3->CR1 = 0;
    TIM3->PSC = 0;
    TIM3->CCMR1 = TIM_CCMR1_OC1M_PWM2 | TIM_CCMR1_OC2M_PWM2;   /* active from CCRx to the update */
    TIM3->CCER = TIM_CCER_CC1E | TIM_CCER_CC1P | TIM_CCER_CC2E; /* LDAC active low, CONVST high */
    TIM3->CCR1 = 0xFFFFu;
    TIM3->CCR2 = 0xFFFFu;
    TIM3->ARR = 0xFFFFu;
    TIM3->EGR = TIM_EGR_UG;
    TIM3->SR = 0;
    TIM3->DIER = TIM_DIER_UIE;
    gpio_clear(GPIOC_BASE, CONVST_PIN);    /* the timer idles CONVST/CS low: hand over low */
    gpio_pin(GPIOC_BASE, LDAC_PIN, GPIO_AF, AF_TIM3);
    gpio_pin(GPIOC_BASE, CONVST_PIN, GPIO_AF, AF_TIM3);
    nvic_enable(TIM3_IRQN, 0x00u);         /* the highest priority: nothing delays a readout */
}

void analog_init(const analog_cal *c, analog_info *info)
{
    for (unsigned ch = 0; ch < ANALOG_CHANNELS; ch++) {
        gain_q14[ch] = c->dac_gain_q14[ch];
        offset_q14[ch] = c->dac_offset_q14[ch];
    }
    adc_offset = c->adc_offset;
    uint32_t ns = c->settle_ns < ANALOG_SETTLE_MAX_NS ? c->settle_ns : ANALOG_SETTLE_MAX_NS;
    uint64_t ticks = (uint64_t)ns * (ANALOG_TIM_HZ / 1000000u) / 1000u;
    settle_ticks = (uint16_t)(ticks > 2u ? ticks : 2u);
    clr_asserted = true;
    pins_init();
    spi_init();
    dac_init(info);
    adc_init(info);
    timer_init();
    cycle_start(true);                     /* latch the 0 V codes (outputs still held by CLR) */
}

/* ---- HAL ---- */
void analog_stage(unsigned channel, uint16_t code)
{
    if (channel >= ANALOG_CHANNELS)
        return;
    int32_t d = (int32_t)code - (int32_t)DAC_CODE_0V;
    int32_t raw = (int32_t)DAC_CODE_0V + ((d * gain_q14[channel] + offset_q14[channel] + (1 << 13)) >> 14);
    raw = raw < 0 ? 0 : (raw > 0xFFFF ? 0xFFFF : raw);
    cycle_wait();                          /* never write while a cycle holds LDAC low */
    dac_frame((uint8_t)(DAC_DATA0 + channel), (uint16_t)raw);
}

void analog_latch(void)
{
    cycle_start(true);
    if (clr_asserted) {                    /* leave the hardware clear after the LDAC edge */
        while (TIM3->CNT < 2u && (TIM3->CR1 & TIM_CR1_CEN)) {
        }
        gpio_set(DAC_CLR_PORT, DAC_CLR_PIN);
        clr_asserted = false;
    }
}

void analog_force_zero(void)
{
    gpio_clear(DAC_CLR_PORT, DAC_CLR_PIN); /* all outputs to the clear code, mid-scale: 0 V */
    clr_asserted = true;
}

bool analog_adc_read(int32_t *code)
{
    if (consumed == issued)
        cycle_start(false);                /* every read is a fresh conversion */
    uint64_t t0 = clock_now();
    while (completed != issued) {
        if (clock_now() - t0 > CYCLE_WAIT_TICKS)
            return false;                  /* no update interrupt: the sweep ends with DEVICE */
    }
    consumed = issued;
    /* straight binary, 0x8000 at 0 V; the TIA inverts (V = -I R), so negate */
    int32_t v = (int32_t)DAC_CODE_0V - (int32_t)adc_raw - adc_offset;
    *code = v < -32768 ? -32768 : (v > 32767 ? 32767 : v);
    return true;
}
