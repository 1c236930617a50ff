/* edgeseq QEMU plugin: executed guest instructions.
 *
 * Without arguments it counts every executed instruction (each translation block adds its
 * instruction count inline each time it runs) and prints "edgeseq-insns: N" at exit.
 *
 * With ranges=FILE it also profiles by code region: FILE holds lines "START END ID" (hexadecimal
 * guest addresses [START, END), decimal region ID >= 0), sorted by START, not overlapping. Every
 * executed instruction whose address lies in a region counts for that region and makes it the
 * current one; any other instruction (library code, helpers without a region) counts for the
 * current region, so a function called from inside a region is charged to its caller. At exit it
 * also prints one line per region that ran, "edgeseq-prof: ID COUNT" (ID -1: before any region).
 *
 * Debian's QEMU 7.2 ships no plugin headers, so the few API declarations used are written out
 * here, matching QEMU 7.2's include/qemu/qemu-plugin.h (plugin API version 1). Build:
 *     gcc -shared -fPIC -O2 -o libesq_insn_count.so insn_count_plugin.c
 * Use: qemu-aarch64 -plugin ./libesq_insn_count.so[,ranges=FILE] -d plugin -D log.txt prog ...
 *      qemu-system-arm ... -plugin ./libesq_insn_count.so[,ranges=FILE] -d plugin -D log.txt */
#include <inttypes.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define QEMU_PLUGIN_EXPORT __attribute__((visibility("default")))
#define QEMU_PLUGIN_VERSION 1

typedef uint64_t qemu_plugin_id_t;

typedef struct qemu_info_t {
    const char *target_name;
    struct {
        int min;
        int cur;
    } version;
    bool system_emulation;
    union {
        struct {
            int smp_vcpus;
            int max_vcpus;
        } system;
    };
} qemu_info_t;

struct qemu_plugin_tb;
struct qemu_plugin_insn;
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 };
enum qemu_plugin_cb_flags { QEMU_PLUGIN_CB_NO_REGS, QEMU_PLUGIN_CB_R_REGS, QEMU_PLUGIN_CB_RW_REGS };
typedef void (*qemu_plugin_vcpu_tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
typedef void (*qemu_plugin_udata_cb_t)(qemu_plugin_id_t id, void *userdata);
typedef void (*qemu_plugin_vcpu_udata_cb_t)(unsigned int vcpu_index, void *userdata);

void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_tb_trans_cb_t cb);
void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *tb, enum qemu_plugin_op op, void *ptr,
                                              uint64_t imm);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *tb, size_t idx);
uint64_t qemu_plugin_insn_vaddr(const struct qemu_plugin_insn *insn);
void qemu_plugin_register_vcpu_insn_exec_cb(struct qemu_plugin_insn *insn, qemu_plugin_vcpu_udata_cb_t cb,
                                            enum qemu_plugin_cb_flags flags, void *userdata);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, qemu_plugin_udata_cb_t cb, void *userdata);
void qemu_plugin_outs(const char *string);

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

#define MAX_REGIONS 65536

static uint64_t *starts, *ends;
static int *ids;
static size_t n_ranges;
static uint64_t counts[MAX_REGIONS + 1]; /* [MAX_REGIONS]: before any region ran */
static long current = MAX_REGIONS;
static uint64_t total;

static long lookup(uint64_t pc)
{
    size_t lo = 0, hi = n_ranges;
    while (lo < hi) {
        const size_t mid = (lo + hi) / 2;
        if (pc < starts[mid])
            hi = mid;
        else if (pc >= ends[mid])
            lo = mid + 1;
        else
            return ids[mid];
    }
    return -1;
}

/* userdata: region id + 1, or 0 for "the current region" */
static void exec_in_region(unsigned int vcpu, void *userdata)
{
    (void)vcpu;
    current = (long)(uintptr_t)userdata - 1;
    counts[current]++;
    total++;
}

static void exec_elsewhere(unsigned int vcpu, void *userdata)
{
    (void)vcpu;
    (void)userdata;
    counts[current]++;
    total++;
}

static void tb_count(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    (void)id;
    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &total, qemu_plugin_tb_n_insns(tb));
}

static void tb_profile(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    (void)id;
    const size_t n = qemu_plugin_tb_n_insns(tb);
    for (size_t i = 0; i < n; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        const long r = lookup(qemu_plugin_insn_vaddr(insn));
        if (r >= 0)
            qemu_plugin_register_vcpu_insn_exec_cb(insn, exec_in_region, QEMU_PLUGIN_CB_NO_REGS,
                                                   (void *)(uintptr_t)(r + 1));
        else
            qemu_plugin_register_vcpu_insn_exec_cb(insn, exec_elsewhere, QEMU_PLUGIN_CB_NO_REGS, NULL);
    }
}

static void at_exit(qemu_plugin_id_t id, void *userdata)
{
    char line[96];
    (void)id;
    (void)userdata;
    for (long r = 0; n_ranges && r <= MAX_REGIONS; r++) {
        if (counts[r]) {
            snprintf(line, sizeof line, "edgeseq-prof: %ld %" PRIu64 "\n", r == MAX_REGIONS ? -1L : r, counts[r]);
            qemu_plugin_outs(line);
        }
    }
    snprintf(line, sizeof line, "edgeseq-insns: %" PRIu64 "\n", total);
    qemu_plugin_outs(line);
}

static int load_ranges(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t cap = 1024;
    starts = malloc(cap * sizeof *starts);
    ends = malloc(cap * sizeof *ends);
    ids = malloc(cap * sizeof *ids);
    if (!starts || !ends || !ids) {
        fclose(f);
        return -1;
    }
    uint64_t s, e;
    int r;
    while (fscanf(f, "%" SCNx64 " %" SCNx64 " %d", &s, &e, &r) == 3) {
        if (r < 0 || r >= MAX_REGIONS || e <= s)
            continue;
        if (n_ranges == cap) {
            cap *= 2;
            starts = realloc(starts, cap * sizeof *starts);
            ends = realloc(ends, cap * sizeof *ends);
            ids = realloc(ids, cap * sizeof *ids);
            if (!starts || !ends || !ids) {
                fclose(f);
                return -1;
            }
        }
        starts[n_ranges] = s;
        ends[n_ranges] = e;
        ids[n_ranges] = r;
        n_ranges++;
    }
    fclose(f);
    return 0;
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv)
{
    (void)info;
    for (int i = 0; i < argc; i++) {
        if (strncmp(argv[i], "ranges=", 7) == 0 && load_ranges(argv[i] + 7) != 0) {
            fprintf(stderr, "edgeseq insn plugin: cannot read %s\n", argv[i] + 7);
            return -1;
        }
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, n_ranges ? tb_profile : tb_count);
    qemu_plugin_register_atexit_cb(id, at_exit, NULL);
    return 0;
}
