/* Reset and vector table for the STM32F429 (91 interrupts, RM0090 table 62): enable the FPU
 * (the image is built for hard float), copy .data, zero .bss (.tdata/.tbss with them), point
 * picolibc's TLS at it, run main. Unused vectors park the core; the IWDG then resets it. */
#include <stdint.h>

extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _estack;
extern char __tls_base[];
void _set_tls(void *tls);                  /* picolibc (picotls.h) */
extern int main(void);
void reset_handler(void);
void systick_handler(void);
void tim3_irq_handler(void);
void otg_fs_irq_handler(void);

__attribute__((noreturn)) static void fault_handler(void)
{
    for (;;)
        __asm volatile("wfi");
}

void reset_handler(void)
{
    *(volatile uint32_t *)0xE000ED88u |= 0xFu << 20;   /* CPACR: CP10, CP11 full access */
    __asm volatile("dsb\n\tisb" ::: "memory");
    const uint32_t *src = &_sidata;
    for (uint32_t *dst = &_sdata; dst < &_edata;)
        *dst++ = *src++;
    for (uint32_t *dst = &_sbss; dst < &_ebss;)
        *dst++ = 0;
    _set_tls(__tls_base);
    main();
    fault_handler();
}

typedef void (*vector)(void);
#define N_IRQS 91u

__attribute__((section(".isr_vector"), used)) static const vector vectors[16 + N_IRQS] = {
    [0] = (vector)(uintptr_t)&_estack,
    [1] = reset_handler,
    [2] = fault_handler,                   /* NMI */
    [3] = fault_handler,                   /* HardFault */
    [4] = fault_handler,                   /* MemManage */
    [5] = fault_handler,                   /* BusFault */
    [6] = fault_handler,                   /* UsageFault */
    [11] = fault_handler,                  /* SVCall */
    [12] = fault_handler,                  /* DebugMonitor */
    [14] = fault_handler,                  /* PendSV */
    [15] = systick_handler,
    [16 + 29] = tim3_irq_handler,          /* the sample interrupt */
    [16 + 67] = otg_fs_irq_handler,
};
