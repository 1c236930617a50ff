/* Minimal Cortex-M start-up for edgeseq firmware: vector table, a reset handler that enables the
 * FPU (CPACR CP10/CP11 full access, also MVE on Armv8.1-M), copies .data from flash to RAM, zeroes
 * .bss and calls main(); main's status ends the run through semihosting. Faults report and exit. */
#include <stdint.h>
#include <string.h>

extern uint32_t _estack, _sidata, _sdata, _edata, _sbss, _ebss;
extern int main(int argc, char **argv);
extern void esq_semihost_exit(int status);
extern void esq_io_message(const char *msg);

void Reset_Handler(void);
void esq_reset_c(void);
void esq_fault_handler(void);
void esq_default_handler(void);

__attribute__((section(".isr_vector"), used)) void (*const esq_vectors[16])(void) = {
    (void (*)(void))(uintptr_t)&_estack, /* initial stack pointer */
    Reset_Handler,
    esq_fault_handler, /* NMI */
    esq_fault_handler, /* HardFault */
    esq_fault_handler, /* MemManage */
    esq_fault_handler, /* BusFault */
    esq_fault_handler, /* UsageFault */
    esq_fault_handler, /* SecureFault (Armv8-M) */
    0, 0, 0,
    esq_default_handler, /* SVCall */
    esq_default_handler, /* DebugMonitor */
    0,
    esq_default_handler, /* PendSV */
    esq_default_handler, /* SysTick */
};

/* Naked, so no floating-point instruction can run before the FPU is switched on. */
__attribute__((naked, noreturn)) void Reset_Handler(void)
{
    __asm__ volatile(
        "ldr r0, =0xE000ED88\n" /* CPACR */
        "ldr r1, [r0]\n"
        "orr r1, r1, #(0xF << 20)\n"
        "str r1, [r0]\n"
        "dsb\n"
        "isb\n"
        "b esq_reset_c\n");
}

__attribute__((noreturn)) void esq_reset_c(void)
{
    uint32_t *src = &_sidata, *dst = &_sdata;
    if (src != dst)
        while (dst < &_edata)
            *dst++ = *src++;
    for (dst = &_sbss; dst < &_ebss; ++dst)
        *dst = 0;
    esq_semihost_exit(main(0, 0));
    for (;;) {
    }
}

void esq_fault_handler(void)
{
    esq_io_message("edgeseq firmware: fault exception (HardFault/MemManage/BusFault/UsageFault)");
    esq_semihost_exit(1);
}

void esq_default_handler(void)
{
    esq_io_message("edgeseq firmware: unexpected exception");
    esq_semihost_exit(1);
}
