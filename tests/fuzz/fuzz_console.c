/* libFuzzer target: the SSH console's input path in C (src/proto/ssh/
 * console.c): what the loop does with the client's bytes (queueing with
 * its 1 MiB bound and libssh hold-back, Ctrl-C turned into an interrupt
 * while code runs on a pty, EOF, window changes, interrupts, detaching)
 * and what the console thread takes from the queue (the cores of the
 * session's read() and set_busy(), whose typed-ahead Ctrl-C drops the
 * input before it). No thread, no Python, no libssh session: the console
 * is made by hand, loop calls run between operations, the interrupter is
 * a counter. (The line editor that turns keys into lines is Python,
 * python/zfront/lineedit.py: fuzz_lineedit.c.)
 *
 * Input layout: byte 0 bit 0: the client asked for a pty. Then operations,
 * each an opcode byte (low 3 bits: what, the rest: an argument):
 *   0 input: the next (arg & 15) + 1 bytes, or (arg & 16) those bytes
 *     repeated to 30% of ZF_SSH_IN_MAX (so the bound and the pull are
 *     reached; build.sh sets the bound to 4 KiB for this target)
 *   1 read up to arg * 64 + 1 bytes   2 set_busy(arg & 1)   3 EOF
 *   4 resize   5 interrupt   6 detach (channel gone)   7 room
 *
 * Every result is compared with a plain model of the queue:
 *   read       the bytes read are the bytes queued, in order; EOF only when
 *              nothing is left and the input ended or the channel went
 *   ctrl-c     on a pty while busy, byte 3 is taken out and interrupts
 *   typed-ahead set_busy(1) on a pty with a Ctrl-C queued drops through
 *              the last one and reports it
 *   room       input/room accept exactly what the 1 MiB bound leaves
 *   pull       once libssh was held back, a read that leaves less than
 *              half queued posts exactly one pull */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/proto/ssh/console.h"

struct zf_ssh_config zf_ssh_cfg;
struct zf_server *zf_srv;

static size_t cur_len;

static void fail(const char *id, const char *what)
{
    fprintf(stderr, "\n==== zfront fuzz_console: invariant [%s] violated: %s\ninput: %zu bytes\n",
            id, what, cur_len);
    abort();
}

/* ---------------------------------------------------------------- stubs */

static unsigned long interrupts_posted, pulls_run;

void zf__ssh_interrupter_post(struct zf_ssh_console *cs)
{
    (void)cs;
    interrupts_posted++;
}

void zf__ssh_interrupter_wake(void)
{
}

int zf__ssh_interrupter_running(void)
{
    return 0;
}

int zf__ssh_console_run_python(struct zf_ssh_console *cs)
{
    (void)cs;
    abort(); /* no console thread here */
}

void zf__ssh_channel_pull(struct zf_ssh_channel *ch)
{
    (void)ch;
    pulls_run++;
}

void zf__ssh_conn_update_io(struct zf_ssh_conn *c)
{
    (void)c;
}

void zf__ssh_channel_finished(struct zf_ssh_channel *ch)
{
    (void)ch;
}

void zf_server_check_idle(void)
{
}

struct zf_py_thread *zf_py_thread_new(void)
{
    return NULL;
}

void zf_py_thread_free(struct zf_py_thread *t)
{
    (void)t;
}

void zf_py_enter(struct zf_py_thread *t)
{
    (void)t;
}

void zf_py_leave(struct zf_py_thread *t)
{
    (void)t;
}

/* loop calls: run after each operation, as the loop would */
struct call {
    zf_loop_fn fn;
    void *arg;
    struct call *next;
};
static struct call *calls, **calls_tail = &calls;
static unsigned long calls_posted;

int zf_loop_call(zf_loop_fn fn, void *arg)
{
    struct call *c = malloc(sizeof *c);
    if (!c)
        return ZF_ERROR;
    c->fn = fn;
    c->arg = arg;
    c->next = NULL;
    *calls_tail = c;
    calls_tail = &c->next;
    calls_posted++;
    return ZF_OK;
}

static void run_calls(void)
{
    while (calls) {
        struct call *c = calls;
        calls = c->next;
        if (!calls)
            calls_tail = &calls;
        c->fn(c->arg);
        free(c);
    }
}

/* ---------------------------------------------------------------- model */

static struct {
    uint8_t *q;
    size_t off, len, cap;
    int eof, closed, busy, want_pull;
} m;

static void model_reserve(size_t n)
{
    if (m.len + n <= m.cap)
        return;
    while (m.len + n > m.cap)
        m.cap = m.cap ? m.cap * 2 : 4096;
    m.q = realloc(m.q, m.cap);
    if (!m.q)
        abort();
}

static void model_push(uint8_t b)
{
    model_reserve(1);
    m.q[m.len++] = b;
}

static size_t model_room(void)
{
    size_t queued = m.len - m.off;
    return queued < ZF_SSH_IN_MAX ? ZF_SSH_IN_MAX - queued : 0;
}

/* ------------------------------------------------------------- driving */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    zf_log_level = getenv("ZF_FUZZ_VERBOSE") ? ZF_LOG_DEBUG : -1;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n)
{
    if (n < 1)
        return 0;
    cur_len = n;
    struct zf_ssh_console *cs = calloc(1, sizeof *cs);
    atomic_init(&cs->refs, 1); /* the channel's */
    pthread_mutex_init(&cs->mu, NULL);
    pthread_cond_init(&cs->cond, NULL);
    cs->pty = data[0] & 1;
    cs->cols = 80;
    cs->rows = 24;
    int detached = 0;
    memset(&m, 0, sizeof m);
    interrupts_posted = pulls_run = 0;
    static uint8_t big[ZF_SSH_IN_MAX * 3 / 10];
    static char buf[16384 + 64];

    size_t i = 1;
    while (i < n) {
        int op = data[i] & 7, arg = data[i] >> 3;
        i++;
        unsigned long intr_before = interrupts_posted;
        switch (op) {
        case 0: { /* input */
            size_t k = (size_t)(arg & 15) + 1;
            if (k > n - i)
                k = n - i;
            const uint8_t *p = data + i;
            size_t len = k;
            i += k;
            if ((arg & 16) && k > 0) {
                memcpy(big, p, k);
                for (size_t have = k; have < sizeof big; have *= 2)
                    memcpy(big + have, big, have < sizeof big - have ? have : sizeof big - have);
                p = big;
                len = sizeof big;
            }
            if (detached)
                break; /* conn.c no longer passes input to a detached console */
            size_t room = model_room();
            size_t want = len < room ? len : room;
            size_t took = zf__ssh_console_input(cs, (const char *)p, len);
            if (took != want)
                fail("room", "input took other than what the bound leaves");
            if (took < len)
                m.want_pull = 1;
            unsigned long ctrl_c = 0;
            if (!(cs->pty && m.busy) && took > 0) { /* every byte is queued */
                model_reserve(took);
                memcpy(m.q + m.len, p, took);
                m.len += took;
                took = 0;
            }
            for (size_t j = 0; j < took; j++) {
                if (p[j] == 3 && cs->pty && m.busy)
                    ctrl_c++;
                else
                    model_push(p[j]);
            }
            if (ctrl_c && interrupts_posted != intr_before + 1)
                fail("ctrl-c", "Ctrl-C while busy on a pty did not interrupt (once)");
            if (!ctrl_c && interrupts_posted != intr_before)
                fail("ctrl-c", "input interrupted without a Ctrl-C while busy");
            break;
        }
        case 1: { /* read */
            size_t max = (size_t)arg * 64 + 1;
            int eof = 0;
            unsigned long posted = calls_posted;
            pthread_mutex_lock(&cs->mu);
            size_t got = zf__ssh_console_take_locked(cs, buf, max, &eof);
            pthread_mutex_unlock(&cs->mu);
            size_t queued = m.len - m.off;
            size_t want = queued < max ? queued : max;
            if (got != want || (got && memcmp(buf, m.q + m.off, got) != 0))
                fail("read", "read gave other bytes than were queued");
            m.off += got;
            if (eof != (got == 0 && (m.eof || m.closed)))
                fail("read", "EOF when input remains, or no EOF at the end");
            int pull = m.want_pull && !m.closed && m.len - m.off < ZF_SSH_IN_MAX / 2;
            if (pull != (calls_posted == posted + 1) || calls_posted > posted + 1)
                fail("pull", "the pull was not posted exactly when due");
            if (pull)
                m.want_pull = 0;
            break;
        }
        case 2: { /* set_busy */
            int flag = arg & 1;
            pthread_mutex_lock(&cs->mu);
            int typed = zf__ssh_console_set_busy_locked(cs, flag);
            pthread_mutex_unlock(&cs->mu);
            int want = 0;
            if (flag && cs->pty) {
                for (size_t j = m.len; j > m.off; j--) {
                    if (m.q[j - 1] == 3) {
                        m.off = j;
                        want = 1;
                        break;
                    }
                }
            }
            if (typed != want)
                fail("typed-ahead", "a queued Ctrl-C was missed or invented");
            m.busy = want ? 0 : flag;
            break;
        }
        case 3:
            if (!detached)
                zf__ssh_console_eof(cs);
            m.eof = !detached || m.eof;
            break;
        case 4:
            if (!detached)
                zf__ssh_console_resize(cs, arg * 7, arg * 3);
            break;
        case 5:
            zf__ssh_console_interrupt(cs);
            if (interrupts_posted != intr_before + (m.busy ? 1 : 0))
                fail("ctrl-c", "an interrupt request was lost or invented");
            break;
        case 6:
            if (detached)
                break;
            zf__ssh_console_ref(cs); /* the harness keeps it, as the thread would */
            zf__ssh_console_detach(cs, "fuzz");
            detached = 1;
            m.closed = 1;
            break;
        case 7:
            if (detached)
                break;
            if (zf__ssh_console_room(cs) != model_room())
                fail("room", "room differs from what the bound leaves");
            if (model_room() == 0)
                m.want_pull = 1;
            break;
        }
        run_calls();
    }
    run_calls();
    if (!detached)
        zf__ssh_console_unref(cs); /* the channel's */
    else
        zf__ssh_console_unref(cs); /* the harness's */
    free(m.q);
    return 0;
}
