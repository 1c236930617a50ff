/* edgeseq driver I/O over ARM semihosting (bkpt 0xAB on M-profile): host files are opened, read and
 * written through the debugger / emulator, so one firmware image streams any number of inputs.
 * Under QEMU: -semihosting-config enable=on,target=native,arg=prog,arg=MODE,arg=IN,arg=OUT */
#include "esq_io.h"

#include <string.h>

enum {
    SYS_OPEN = 0x01, SYS_CLOSE = 0x02, SYS_WRITE0 = 0x04, SYS_WRITE = 0x05, SYS_READ = 0x06,
    SYS_GET_CMDLINE = 0x15, SYS_EXIT = 0x18
};

static int semihost(int op, void *arg)
{
    register int r0 __asm__("r0") = op;
    register void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

void esq_semihost_exit(int status)
{
    /* ADP_Stopped_ApplicationExit ends QEMU with status 0; RunTimeErrorUnknown with status 1. */
    const uint32_t reason = status == 0 ? 0x20026u : 0x20023u;
    register int r0 __asm__("r0") = SYS_EXIT;
    register uint32_t r1 __asm__("r1") = reason;
    __asm__ volatile("bkpt 0xAB" : : "r"(r0), "r"(r1) : "memory");
    for (;;) {
    }
}

#define ESQ_MAX_ARGS 16
static char cmdline[512];
static char *args[ESQ_MAX_ARGS + 1];

void esq_io_args(int *argc, char ***argv)
{
    uint32_t block[2] = {(uint32_t)(uintptr_t)cmdline, sizeof cmdline - 1};
    int n = 0;
    if (semihost(SYS_GET_CMDLINE, block) == 0) {
        cmdline[block[1] < sizeof cmdline ? block[1] : sizeof cmdline - 1] = 0;
        char *p = cmdline;
        while (*p && n < ESQ_MAX_ARGS) {
            while (*p == ' ')
                *p++ = 0;
            if (!*p)
                break;
            args[n++] = p;
            while (*p && *p != ' ')
                ++p;
        }
    }
    args[n] = 0;
    *argc = n;
    *argv = args;
}

int esq_io_open(const char *path, int write)
{
    uint32_t block[3] = {(uint32_t)(uintptr_t)path, write ? 5u : 1u /* "wb" : "rb" */, (uint32_t)strlen(path)};
    return semihost(SYS_OPEN, block);
}

int esq_io_read(int h, void *buf, uint32_t n)
{
    if (n == 0)
        return 0;
    uint32_t block[3] = {(uint32_t)h, (uint32_t)(uintptr_t)buf, n};
    return semihost(SYS_READ, block) == 0 ? 0 : -1; /* returns the number of bytes NOT read */
}

int esq_io_write(int h, const void *buf, uint32_t n)
{
    if (n == 0)
        return 0;
    uint32_t block[3] = {(uint32_t)h, (uint32_t)(uintptr_t)buf, n};
    return semihost(SYS_WRITE, block) == 0 ? 0 : -1;
}

int esq_io_close(int h)
{
    uint32_t block[1] = {(uint32_t)h};
    return semihost(SYS_CLOSE, block) == 0 ? 0 : -1;
}

void esq_io_message(const char *msg)
{
    semihost(SYS_WRITE0, (void *)msg);
    semihost(SYS_WRITE0, (void *)"\n");
}

uint64_t esq_io_now_ns(void)
{
    return 0;
}
