/* edgeseq driver I/O on a hosted C library (Linux: x86-64 natively, aarch64 under qemu-user). */
#define _POSIX_C_SOURCE 199309L
#include "esq_io.h"

#include <stdio.h>
#include <time.h>

#define ESQ_MAX_FILES 8
static FILE *files[ESQ_MAX_FILES];

void esq_io_args(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
}

int esq_io_open(const char *path, int write)
{
    for (int h = 0; h < ESQ_MAX_FILES; ++h) {
        if (!files[h]) {
            files[h] = fopen(path, write ? "wb" : "rb");
            return files[h] ? h : -1;
        }
    }
    return -1;
}

int esq_io_read(int h, void *buf, uint32_t n)
{
    if (h < 0 || h >= ESQ_MAX_FILES || !files[h])
        return -1;
    return n == 0 || fread(buf, 1, n, files[h]) == n ? 0 : -1;
}

int esq_io_write(int h, const void *buf, uint32_t n)
{
    if (h < 0 || h >= ESQ_MAX_FILES || !files[h])
        return -1;
    return n == 0 || fwrite(buf, 1, n, files[h]) == n ? 0 : -1;
}

int esq_io_close(int h)
{
    if (h < 0 || h >= ESQ_MAX_FILES || !files[h])
        return -1;
    int rc = fclose(files[h]);
    files[h] = 0;
    return rc == 0 ? 0 : -1;
}

void esq_io_message(const char *msg)
{
    fputs(msg, stderr);
    fputc('\n', stderr);
}

uint64_t esq_io_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}
