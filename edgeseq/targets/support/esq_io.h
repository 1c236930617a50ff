/* edgeseq driver I/O: files, arguments, messages and a clock, for hosted (stdio) and bare-metal
 * (ARM semihosting) builds. Handles are small non-negative integers; -1 means failure. */
#ifndef ESQ_IO_H
#define ESQ_IO_H

#include <stdint.h>

/* Replace argc/argv with the program's arguments (semihosting: SYS_GET_CMDLINE). */
void esq_io_args(int *argc, char ***argv);
/* Open a file for binary reading (write == 0) or writing (write != 0). */
int esq_io_open(const char *path, int write);
/* Read / write exactly n bytes; 0 on success, -1 on failure or short transfer. */
int esq_io_read(int h, void *buf, uint32_t n);
int esq_io_write(int h, const void *buf, uint32_t n);
int esq_io_close(int h);
/* One line to the console (stderr on a host). */
void esq_io_message(const char *msg);
/* Monotonic nanoseconds (0 where there is no clock). */
uint64_t esq_io_now_ns(void);

#endif
