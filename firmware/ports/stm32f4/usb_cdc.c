/* USB CDC ACM on OTG_FS: written from RM0090 chapter 34 (device mode, slave/FIFO operation, no
 * DMA), USB 2.0 chapter 9 and CDC 1.2 / PSTN 1.2. Endpoints: 0 control (64 B), 0x81 bulk IN and
 * 0x01 bulk OUT (64 B, data interface 1), 0x82 interrupt IN (notifications, never sent; the
 * communications interface 0 must declare it). */
#include "usb_cdc.h"

#include <string.h>

#include "clock.h"
#include "regs.h"

#define EP0_MPS 64u
#define BULK_MPS 64u
#define NOTIFY_MPS 16u
/* OTG_FS FIFO RAM: 320 words. RX 128 + EP0 TX 32 + EP1 TX 128 + EP2 TX 16 = 304. */
#define RXFIFO_WORDS 128u
#define TX0_WORDS 32u
#define TX1_WORDS 128u
#define TX2_WORDS 16u
#define EP0_MAX_TRANSFER 127u               /* DIEPTSIZ0.XFRSIZ is 7 bits (and fits TX0_WORDS) */
#define TX1_BYTES (4u * TX1_WORDS)          /* the most one bulk IN transfer carries */
#define OUT_MAX_PACKETS 8u                  /* the most one bulk OUT transfer takes */
#define RX_RING 1024u
_Static_assert((RX_RING & (RX_RING - 1u)) == 0, "RX_RING must be a power of two");
_Static_assert(RXFIFO_WORDS + TX0_WORDS + TX1_WORDS + TX2_WORDS <= 320u, "OTG_FS FIFO RAM is 1.25 KB");

#define USB_PRIO 0x40u                      /* NVIC priority of OTG_FS (the sample timer has 0x00) */
#define POLL_LIMIT 100000u                  /* bound on waits for the core's own state changes */

/* ---- descriptors (USB 2.0 section 9.6, CDC 1.2 section 5) ---- */
enum { DESC_DEVICE = 1, DESC_CONFIG = 2, DESC_STRING = 3 };
enum { CDC_SET_LINE_CODING = 0x20, CDC_GET_LINE_CODING = 0x21, CDC_SET_CONTROL_LINE_STATE = 0x22,
       CDC_SEND_BREAK = 0x23 };
enum { REQ_GET_STATUS = 0, REQ_CLEAR_FEATURE = 1, REQ_SET_FEATURE = 3, REQ_SET_ADDRESS = 5,
       REQ_GET_DESCRIPTOR = 6, REQ_GET_CONFIGURATION = 8, REQ_SET_CONFIGURATION = 9,
       REQ_GET_INTERFACE = 10, REQ_SET_INTERFACE = 11 };

static const uint8_t device_desc[18] = {
    18, DESC_DEVICE, 0x00, 0x02,            /* bcdUSB 2.00 */
    0x02, 0x00, 0x00, EP0_MPS,              /* class CDC (per interface below), EP0 64 B */
    USB_VID & 0xFFu, USB_VID >> 8, USB_PID & 0xFFu, USB_PID >> 8,
    0x00, 0x01,                             /* bcdDevice 1.00 */
    1, 2, 3, 1,                             /* iManufacturer, iProduct, iSerialNumber; 1 config */
};

#define CONFIG_LEN 67u
static const uint8_t config_desc[CONFIG_LEN] = {
    9, DESC_CONFIG, CONFIG_LEN, 0, 2, 1, 0, 0x80, 50,          /* 2 interfaces, bus powered, 100 mA */
    /* interface 0: communications, ACM, no AT protocol (keeps modem managers from probing) */
    9, 4, 0, 0, 1, 0x02, 0x02, 0x00, 0,
    5, 0x24, 0x00, 0x20, 0x01,                                 /* header, bcdCDC 1.20 */
    5, 0x24, 0x01, 0x00, 1,                                    /* call management: data on interface 1 */
    4, 0x24, 0x02, 0x02,                                       /* ACM: line coding + control line state */
    5, 0x24, 0x06, 0, 1,                                       /* union: master 0, slave 1 */
    7, 5, 0x82, 0x03, NOTIFY_MPS, 0, 255,                      /* EP2 IN interrupt */
    /* interface 1: data */
    9, 4, 1, 0, 2, 0x0A, 0x00, 0x00, 0,
    7, 5, 0x01, 0x02, BULK_MPS, 0, 0,                          /* EP1 OUT bulk */
    7, 5, 0x81, 0x02, BULK_MPS, 0, 0,                          /* EP1 IN bulk */
};
static const uint8_t lang_desc[4] = {4, DESC_STRING, 0x09, 0x04};   /* US English */
static const char *const strings[3] = {"DNPU bench", "DNPU bench (Nucleo-F429ZI)", NULL};

/* ---- state ---- */
typedef struct setup_pkt {
    uint8_t type, request;
    uint16_t value, index, length;
} setup_pkt;

static char serial_[25];
static uint8_t line_coding[7] = {0x00, 0x10, 0x0E, 0x00, 0, 0, 8};   /* 921600 8N1 (ignored) */
static uint32_t setup_words[2];
static uint8_t ctrl_buf[64];                /* EP0 OUT data stage, and built string descriptors */
static size_t ctrl_len;
static uint8_t ctrl_out_request;            /* the class request whose data stage is due */
static bool ep0_zlp;                        /* a zero-length packet ends the IN data stage */
static volatile bool configured, dtr, dtr_suspended;   /* DTR before a suspend */

static uint8_t rx_ring[RX_RING];
static volatile uint32_t rx_head, rx_tail;  /* head: the interrupt; tail: usb_cdc_read */
static volatile bool out_paused;            /* EP1 OUT NAKs until the ring has room */
static volatile bool tx_busy, tx_zlp;       /* an EP1 IN transfer (or its ZLP) is under way */

/* ---- FIFO access ---- */
static void fifo_write(unsigned ep, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i += 4) {
        uint32_t w = 0;
        for (size_t k = 0; k < 4 && i + k < n; k++)
            w |= (uint32_t)p[i + k] << (8u * k);
        OTG_FIFO(ep) = w;
    }
}

/* Pop a received packet of `n` bytes: into `dst` (up to `cap`, the rest dropped), or the ring. */
static void fifo_read(uint8_t *dst, size_t cap, size_t n, bool to_ring)
{
    uint32_t head = rx_head;
    for (size_t i = 0; i < n; i += 4) {
        uint32_t w = OTG_FIFO(0);
        for (size_t k = 0; k < 4 && i + k < n; k++, w >>= 8) {
            if (to_ring) {
                if (head - rx_tail < RX_RING)
                    rx_ring[head++ % RX_RING] = (uint8_t)w;
            } else if (i + k < cap) {
                dst[i + k] = (uint8_t)w;
            }
        }
    }
    rx_head = head;
}

static void wait_clear(volatile uint32_t *reg, uint32_t bits)
{
    for (uint32_t i = 0; i < POLL_LIMIT && (*reg & bits); i++) {
    }
}

static void fifos_flush(void)
{
    OTG_GRSTCTL = OTG_GRSTCTL_TXFFLSH | OTG_GRSTCTL_TXFNUM_ALL;
    wait_clear(&OTG_GRSTCTL, OTG_GRSTCTL_TXFFLSH);
    OTG_GRSTCTL = OTG_GRSTCTL_RXFFLSH;
    wait_clear(&OTG_GRSTCTL, OTG_GRSTCTL_RXFFLSH);
}

/* ---- endpoint 0 ---- */
static void ep0_out_arm(void)
{
    OTG_DOEPTSIZ(0) = OTG_DOEPTSIZ0_STUPCNT3 | OTG_TSIZ_PKTCNT(1) | EP0_MPS;
    OTG_DOEPCTL(0) |= OTG_EPCTL_EPENA | OTG_EPCTL_CNAK;
}

/* The IN data stage (len <= 127, one transfer of up to 2 packets), or the status stage (len 0). */
static void ep0_send(const uint8_t *data, size_t len, uint16_t wlength)
{
    if (len > wlength)
        len = wlength;
    if (len > EP0_MAX_TRANSFER)
        len = EP0_MAX_TRANSFER;
    ep0_zlp = len > 0 && len < wlength && len % EP0_MPS == 0;
    uint32_t packets = len == 0 ? 1u : (uint32_t)((len + EP0_MPS - 1u) / EP0_MPS);
    OTG_DIEPTSIZ(0) = OTG_TSIZ_PKTCNT(packets) | (uint32_t)len;
    OTG_DIEPCTL(0) |= OTG_EPCTL_EPENA | OTG_EPCTL_CNAK;
    fifo_write(0, data, len);
}

static void ep0_status(void)
{
    ep0_send(NULL, 0, 0);
}

static void ep0_stall(void)
{
    OTG_DIEPCTL(0) |= OTG_EPCTL_STALL;      /* the core clears it on the next SETUP */
    OTG_DOEPCTL(0) |= OTG_EPCTL_STALL;
}

/* ---- the data endpoints ---- */
static void ep1_out_arm(void)
{
    uint32_t room = RX_RING - (rx_head - rx_tail);
    uint32_t packets = room / BULK_MPS;
    if (packets == 0) {
        out_paused = true;                  /* the endpoint NAKs: the host holds its data */
        return;
    }
    packets = packets < OUT_MAX_PACKETS ? packets : OUT_MAX_PACKETS;
    out_paused = false;
    OTG_DOEPTSIZ(1) = OTG_TSIZ_PKTCNT(packets) | packets * BULK_MPS;
    OTG_DOEPCTL(1) |= OTG_EPCTL_EPENA | OTG_EPCTL_CNAK;
}

static void in_ep_disable(unsigned ep)
{
    if (OTG_DIEPCTL(ep) & OTG_EPCTL_EPENA) {
        OTG_DIEPCTL(ep) |= OTG_EPCTL_SNAK | OTG_EPCTL_EPDIS;
        for (uint32_t i = 0; i < POLL_LIMIT && !(OTG_DIEPINT(ep) & 2u); i++) {   /* EPDISD */
        }
    }
    OTG_DIEPINT(ep) = 0xFFu;
}

static void endpoints_configure(void)
{
    OTG_DIEPCTL(1) = OTG_EPCTL_USBAEP | OTG_EPCTL_EPTYP_BULK | OTG_EPCTL_TXFNUM(1) | BULK_MPS
                     | OTG_EPCTL_SD0PID | OTG_EPCTL_SNAK;
    OTG_DIEPCTL(2) = OTG_EPCTL_USBAEP | OTG_EPCTL_EPTYP_INTR | OTG_EPCTL_TXFNUM(2) | NOTIFY_MPS
                     | OTG_EPCTL_SD0PID | OTG_EPCTL_SNAK;
    uint32_t out = OTG_DOEPCTL(1) & OTG_EPCTL_EPENA;   /* still armed from before a bus reset */
    OTG_DOEPCTL(1) = OTG_EPCTL_USBAEP | OTG_EPCTL_EPTYP_BULK | BULK_MPS | OTG_EPCTL_SD0PID;
    OTG_DAINTMSK |= (1u << 1) | (1u << 17);             /* IN 1, OUT 1 */
    tx_busy = tx_zlp = false;
    if (!out)
        ep1_out_arm();
    configured = true;
}

static void endpoints_deconfigure(void)
{
    configured = false;
    dtr = dtr_suspended = false;
    in_ep_disable(1);
    in_ep_disable(2);
    OTG_DIEPCTL(1) &= ~OTG_EPCTL_USBAEP;
    OTG_DIEPCTL(2) &= ~OTG_EPCTL_USBAEP;
    tx_busy = tx_zlp = false;
}

/* ---- control requests ---- */
static size_t string_desc(unsigned index, uint8_t *out)
{
    const char *s = index == 3 ? serial_ : strings[index - 1];
    size_t n = strlen(s);
    n = n > 30 ? 30 : n;                    /* 2 + 60 bytes: one packet */
    out[0] = (uint8_t)(2 + 2 * n);
    out[1] = DESC_STRING;
    for (size_t i = 0; i < n; i++) {
        out[2 + 2 * i] = (uint8_t)s[i];     /* UTF-16LE of ASCII */
        out[3 + 2 * i] = 0;
    }
    return 2 + 2 * n;
}

static void get_descriptor(const setup_pkt *s)
{
    unsigned type = s->value >> 8, index = s->value & 0xFFu;
    if (type == DESC_DEVICE)
        ep0_send(device_desc, sizeof device_desc, s->length);
    else if (type == DESC_CONFIG)
        ep0_send(config_desc, sizeof config_desc, s->length);
    else if (type == DESC_STRING && index == 0)
        ep0_send(lang_desc, sizeof lang_desc, s->length);
    else if (type == DESC_STRING && index <= 3)
        ep0_send(ctrl_buf, string_desc(index, ctrl_buf), s->length);
    else
        ep0_stall();                        /* device qualifier etc.: a full-speed-only device */
}

static void standard_request(const setup_pkt *s)
{
    static const uint8_t zero2[2] = {0, 0};
    uint8_t config = configured ? 1u : 0u;
    switch (s->request) {
    case REQ_GET_DESCRIPTOR:
        get_descriptor(s);
        break;
    case REQ_SET_ADDRESS:                   /* the core answers the status stage from address 0 */
        OTG_DCFG = (OTG_DCFG & ~OTG_DCFG_DAD_MASK) | OTG_DCFG_DAD(s->value & 0x7Fu);
        ep0_status();
        break;
    case REQ_SET_CONFIGURATION:
        if (s->value == 1)
            endpoints_configure();
        else if (s->value == 0)
            endpoints_deconfigure();
        else {
            ep0_stall();
            break;
        }
        ep0_status();
        break;
    case REQ_GET_CONFIGURATION:
        ep0_send(&config, 1, s->length);
        break;
    case REQ_GET_STATUS:
        ep0_send(zero2, 2, s->length);
        break;
    case REQ_GET_INTERFACE:
        ep0_send(zero2, 1, s->length);
        break;
    case REQ_CLEAR_FEATURE:                 /* endpoint halt: back to DATA0 */
        if ((s->type & 0x1Fu) == 2u && (s->index & 0x7Fu) == 1u)
            *((s->index & 0x80u) ? &OTG_DIEPCTL(1) : &OTG_DOEPCTL(1)) |= OTG_EPCTL_SD0PID;
        ep0_status();
        break;
    case REQ_SET_FEATURE:
    case REQ_SET_INTERFACE:
        ep0_status();
        break;
    default:
        ep0_stall();
    }
}

static void class_request(const setup_pkt *s)
{
    switch (s->request) {
    case CDC_SET_LINE_CODING:               /* the 7 bytes come in the OUT data stage */
        ctrl_out_request = CDC_SET_LINE_CODING;
        ctrl_len = 0;
        break;
    case CDC_GET_LINE_CODING:
        ep0_send(line_coding, sizeof line_coding, s->length);
        break;
    case CDC_SET_CONTROL_LINE_STATE:        /* bit 0: DTR (the host holds the port open) */
        dtr = configured && (s->value & 1u);
        ep0_status();
        break;
    case CDC_SEND_BREAK:
        ep0_status();
        break;
    default:
        ep0_stall();
    }
}

static void setup_received(void)
{
    setup_pkt s;
    const uint8_t *b = (const uint8_t *)setup_words;
    s.type = b[0];
    s.request = b[1];
    s.value = (uint16_t)(b[2] | b[3] << 8);
    s.index = (uint16_t)(b[4] | b[5] << 8);
    s.length = (uint16_t)(b[6] | b[7] << 8);
    ctrl_out_request = 0;
    if ((s.type & 0x60u) == 0x00u)
        standard_request(&s);
    else if ((s.type & 0x60u) == 0x20u && (s.index & 0xFFu) == 0u)
        class_request(&s);
    else
        ep0_stall();
}

/* ---- interrupt ---- */
static void bus_reset(void)
{
    endpoints_deconfigure();
    for (unsigned ep = 0; ep < 4; ep++)
        OTG_DOEPCTL(ep) |= OTG_EPCTL_SNAK;
    OTG_DCFG &= ~OTG_DCFG_DAD_MASK;
    fifos_flush();
    OTG_DAINTMSK = (1u << 0) | (1u << 16);  /* IN 0, OUT 0 */
    OTG_DIEPMSK = OTG_EPINT_XFRC;
    OTG_DOEPMSK = OTG_EPINT_XFRC | OTG_DOEPINT_STUP;
    ep0_zlp = false;
    ctrl_out_request = 0;
    ep0_out_arm();
}

static void rx_level(void)
{
    for (unsigned guard = 0; guard < RXFIFO_WORDS && (OTG_GINTSTS & OTG_GINT_RXFLVL); guard++) {
        uint32_t st = OTG_GRXSTSP;
        unsigned ep = OTG_RXSTS_EPNUM(st), n = OTG_RXSTS_BCNT(st);
        if (OTG_RXSTS_PKTSTS(st) == OTG_PKTSTS_SETUP_DATA) {
            fifo_read((uint8_t *)setup_words, sizeof setup_words, n, false);
        } else if (OTG_RXSTS_PKTSTS(st) == OTG_PKTSTS_OUT_DATA && n > 0) {
            if (ep == 1)
                fifo_read(NULL, 0, n, true);
            else {
                fifo_read(ctrl_buf + ctrl_len, sizeof ctrl_buf - ctrl_len, n, false);
                ctrl_len = ctrl_len + n < sizeof ctrl_buf ? ctrl_len + n : sizeof ctrl_buf;
            }
        }
    }
}

static void out_endpoints(void)
{
    uint32_t daint = OTG_DAINT;
    if (daint & (1u << 16)) {
        uint32_t st = OTG_DOEPINT(0) & OTG_DOEPMSK;
        OTG_DOEPINT(0) = st;
        if ((st & OTG_EPINT_XFRC) && ctrl_out_request == CDC_SET_LINE_CODING) {
            memcpy(line_coding, ctrl_buf, ctrl_len < sizeof line_coding ? ctrl_len : sizeof line_coding);
            ctrl_out_request = 0;
            ep0_status();
        }
        if (st & OTG_DOEPINT_STUP)
            setup_received();
        ep0_out_arm();
    }
    if (daint & (1u << 17)) {
        uint32_t st = OTG_DOEPINT(1) & OTG_DOEPMSK;
        OTG_DOEPINT(1) = st;
        if (st & OTG_EPINT_XFRC)
            ep1_out_arm();
    }
}

static void in_endpoints(void)
{
    uint32_t daint = OTG_DAINT;
    if (daint & (1u << 0)) {
        uint32_t st = OTG_DIEPINT(0) & OTG_DIEPMSK;
        OTG_DIEPINT(0) = st;
        if ((st & OTG_EPINT_XFRC) && ep0_zlp)
            ep0_status();                   /* clears ep0_zlp */
    }
    if (daint & (1u << 1)) {
        uint32_t st = OTG_DIEPINT(1) & OTG_DIEPMSK;
        OTG_DIEPINT(1) = st;
        if (st & OTG_EPINT_XFRC) {
            if (tx_zlp) {                   /* the transfer ended on a packet boundary */
                tx_zlp = false;
                OTG_DIEPTSIZ(1) = OTG_TSIZ_PKTCNT(1);
                OTG_DIEPCTL(1) |= OTG_EPCTL_EPENA | OTG_EPCTL_CNAK;
            } else {
                tx_busy = false;
            }
        }
    }
}

void otg_fs_irq_handler(void);
void otg_fs_irq_handler(void)
{
    uint32_t st = OTG_GINTSTS & OTG_GINTMSK;
    if (st & OTG_GINT_USBRST) {
        OTG_GINTSTS = OTG_GINT_USBRST;
        bus_reset();
    }
    if (st & OTG_GINT_ENUMDNE) {
        OTG_GINTSTS = OTG_GINT_ENUMDNE;
        OTG_DIEPCTL(0) &= ~3u;              /* MPSIZ 0: 64 bytes */
        OTG_DCTL |= OTG_DCTL_CGINAK;
    }
    if (st & OTG_GINT_RXFLVL)
        rx_level();
    if (st & OTG_GINT_OEPINT)
        out_endpoints();
    if (st & OTG_GINT_IEPINT)
        in_endpoints();
    if (st & OTG_GINT_USBSUSP) {            /* bus idle 3 ms: cable pulled or host asleep */
        OTG_GINTSTS = OTG_GINT_USBSUSP;
        dtr_suspended = dtr;
        dtr = false;                        /* counts as a port close: the core ramps to 0 V */
    }
    if (st & OTG_GINT_WKUPINT) {            /* resumed without a reset: the port is open again */
        OTG_GINTSTS = OTG_GINT_WKUPINT;
        dtr = configured && dtr_suspended;
    }
}

/* ---- main-context API ---- */
/* Mask the OTG_FS interrupt (and everything below it) but not the sample timer. */
static inline uint32_t usb_lock(void)
{
    uint32_t old, v = USB_PRIO;
    __asm volatile("mrs %0, basepri" : "=r"(old));
    __asm volatile("msr basepri_max, %0" ::"r"(v) : "memory");
    return old;
}

static inline void usb_unlock(uint32_t old)
{
    __asm volatile("msr basepri, %0" ::"r"(old) : "memory");
}

void usb_cdc_init(const char *serial)
{
    size_t n = strlen(serial);
    n = n < sizeof serial_ - 1 ? n : sizeof serial_ - 1;
    memcpy(serial_, serial, n);
    serial_[n] = 0;

    rcc_enable(&RCC_AHB1ENR, RCC_AHB1ENR_GPIOAEN);
    gpio_pin(GPIOA_BASE, 11, GPIO_AF, 10);  /* OTG_FS_DM */
    gpio_pin(GPIOA_BASE, 12, GPIO_AF, 10);  /* OTG_FS_DP */
    rcc_enable(&RCC_AHB2ENR, RCC_AHB2ENR_OTGFSEN);

    OTG_GUSBCFG |= OTG_GUSBCFG_PHYSEL;
    for (uint32_t i = 0; i < POLL_LIMIT && !(OTG_GRSTCTL & OTG_GRSTCTL_AHBIDL); i++) {
    }
    OTG_GRSTCTL = OTG_GRSTCTL_CSRST;
    wait_clear(&OTG_GRSTCTL, OTG_GRSTCTL_CSRST);
    clock_delay_us(10);
    OTG_GCCFG = OTG_GCCFG_PWRDWN | OTG_GCCFG_NOVBUSSENS;   /* PHY on; no VBUS sensing (PA9 free) */
    OTG_GUSBCFG = OTG_GUSBCFG_PHYSEL | OTG_GUSBCFG_TRDT(6) | OTG_GUSBCFG_FDMOD;
    clock_delay_us(25000);                  /* the forced device mode takes effect after 25 ms */
    OTG_PCGCCTL = 0;
    OTG_DCFG = OTG_DCFG_DSPD_FS;
    OTG_GRXFSIZ = RXFIFO_WORDS;
    OTG_DIEPTXF0 = (TX0_WORDS << 16) | RXFIFO_WORDS;
    OTG_DIEPTXF(1) = (TX1_WORDS << 16) | (RXFIFO_WORDS + TX0_WORDS);
    OTG_DIEPTXF(2) = (TX2_WORDS << 16) | (RXFIFO_WORDS + TX0_WORDS + TX1_WORDS);
    fifos_flush();
    OTG_GINTSTS = 0xFFFFFFFFu;
    OTG_GINTMSK = OTG_GINT_RXFLVL | OTG_GINT_USBSUSP | OTG_GINT_USBRST | OTG_GINT_ENUMDNE
                  | OTG_GINT_IEPINT | OTG_GINT_OEPINT | OTG_GINT_WKUPINT;
    OTG_GAHBCFG = OTG_GAHBCFG_GINTMSK;
    nvic_enable(OTG_FS_IRQN, USB_PRIO);
    OTG_DCTL &= ~OTG_DCTL_SDIS;             /* D+ pull-up on: the host sees us */
}

size_t usb_cdc_read(uint8_t *buf, size_t max)
{
    uint32_t tail = rx_tail, head = rx_head;
    size_t n = 0;
    while (n < max && tail != head)
        buf[n++] = rx_ring[tail++ % RX_RING];
    rx_tail = tail;
    if (out_paused && RX_RING - (head - tail) >= BULK_MPS) {
        uint32_t k = usb_lock();
        if (out_paused)
            ep1_out_arm();
        usb_unlock(k);
    }
    return n;
}

size_t usb_cdc_write(const uint8_t *buf, size_t n)
{
    if (!configured || n == 0)
        return 0;
    uint32_t k = usb_lock();
    size_t len = 0;
    if (!tx_busy && OTG_DTXFSTS(1) >= TX1_WORDS) {
        len = n < TX1_BYTES ? n : TX1_BYTES;
        tx_busy = true;
        tx_zlp = len % BULK_MPS == 0;
        OTG_DIEPTSIZ(1) = OTG_TSIZ_PKTCNT((len + BULK_MPS - 1u) / BULK_MPS) | (uint32_t)len;
        OTG_DIEPCTL(1) |= OTG_EPCTL_EPENA | OTG_EPCTL_CNAK;
        fifo_write(1, buf, len);
    }
    usb_unlock(k);
    return len;
}

bool usb_cdc_is_open(void)
{
    return configured && dtr;
}

bool usb_cdc_rx_pending(void)
{
    return rx_head != rx_tail;
}
