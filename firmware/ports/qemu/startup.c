/* Reset and vector table for the STM32F405 (QEMU netduinoplus2): copy .data from flash, zero
 * .bss (.tdata and .tbss with them), point picolibc's TLS at it, run main. Unused vectors go to a handler that parks the core (the IWDG then resets it
 * on silicon). */
#include <stdint.h>

extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _estack;
extern char __tls_base[];
void _set_tls(void *tls);             /* picolibc (picotls.h) */
extern int main(void);
void reset_handler(void);
void usart1_irq_handler(void);
void systick_handler(void);

__attribute__((noreturn)) static void fault_handler(void)
{
    for (;;)
        __asm volatile("wfi");
}

void reset_handler(void)
{
    const uint32_t *src = &_sidata;
    for (uint32_t *dst = &_sdata; dst < &_edata;)
        *dst++ = *src++;
    for (uint32_t *dst = &_sbss; dst < &_ebss;)
        *dst++ = 0;
    _set_tls(__tls_base);             /* picolibc's errno is thread-local */
    main();
    fault_handler();
}

typedef void (*vector)(void);
#define N_IRQS 82u                      /* STM32F405: position 0..81 */

/* Entry 0 is the initial stack pointer, then the 15 system exceptions, then the IRQs. */
__attribute__((section(".isr_vector"), used)) static const vector vectors[16 + N_IRQS] = {
    [0] = (vector)(uintptr_t)&_estack,
    [1] = reset_handler,
    [2] = fault_handler,                /* NMI */
    [3] = fault_handler,                /* HardFault */
    [4] = fault_handler,                /* MemManage */
    [5] = fault_handler,                /* BusFault */
    [6] = fault_handler,                /* UsageFault */
    [11] = fault_handler,               /* SVCall */
    [12] = fault_handler,               /* DebugMonitor */
    [14] = fault_handler,               /* PendSV */
    [15] = systick_handler,
    [16 + 37] = usart1_irq_handler,
};
