/* Internal to the SSH module: the state one console session shares between
 * the loop thread (channel side) and its console thread (Python side).
 *
 * Locking: `mu` guards every field marked (mu). The GIL may be held while
 * taking `mu` (console thread, interrupter), never the other way round;
 * the loop thread takes `mu` only, never the GIL. Fields marked (loop) are
 * touched on the loop thread only. */
#ifndef ZF_SSH_CONSOLE_H
#define ZF_SSH_CONSOLE_H

#include <stdatomic.h>

#include "ssh.h"

#ifndef ZF_SSH_IN_MAX /* tests/fuzz/build.sh makes it small, so fuzz_console reaches it */
#define ZF_SSH_IN_MAX (1024 * 1024) /* input queued before libssh holds it back */
#endif
#define ZF_SSH_OUT_MAX (256 * 1024) /* output queued before the console waits */

struct zf_ssh_chunk {
    struct zf_ssh_chunk *next;
    int is_stderr;
    size_t len, off, cap;
    char data[];
};

struct zf_ssh_console {
    atomic_int refs; /* channel, console thread, posted loop calls, Python object */
    pthread_mutex_t mu;
    pthread_cond_t cond; /* console thread: input, output room, interrupt, close */

    /* fixed at start */
    enum zf_ssh_mode mode;
    int pty;       /* the client asked for a terminal (pty-req) */
    char *command; /* exec text or NULL */
    char user[64];
    char term[32];
    char peer[64];
    uint64_t conn_id;

    /* (mu) input from the client */
    char *in;
    size_t in_off, in_len, in_cap;
    int in_eof;
    int want_pull; /* libssh holds input back: post a pull once drained */
    int pull_posted;
    /* (mu) output to the client */
    struct zf_ssh_chunk *out_head, *out_tail;
    size_t out_bytes;
    int flush_posted;
    /* (mu) state */
    int closed;        /* the channel is gone: reads give EOF, writes fail */
    int busy;          /* user code is running (changed with the GIL held) */
    unsigned intr_gen; /* bumped per interrupt request: wakes waits */
    unsigned long ident;
    int cols, rows;
    int finished; /* console thread left Python */
    int exit_status;

    /* (loop) */
    struct zf_ssh_channel *ch; /* NULL once the channel let go */
    int done_seen;

    /* (interrupter lock) */
    int intr_queued;
    struct zf_ssh_console *intr_next;
};

void zf__ssh_console_ref(struct zf_ssh_console *cs);
/* Drops a reference; frees the console at zero (any thread, no GIL
 * needed: it owns no Python object). */
void zf__ssh_console_unref(struct zf_ssh_console *cs);

/* console_py.c: runs the session's Python (GIL held). Returns the exit
 * status. */
int zf__ssh_console_run_python(struct zf_ssh_console *cs);
/* console_py.c: queues an interrupt for the console's thread. */
void zf__ssh_interrupter_post(struct zf_ssh_console *cs);
/* console_py.c: a console thread ended (the interrupter may be waiting to
 * stop). */
void zf__ssh_interrupter_wake(void);

/* console.c: zf_loop_call unless the server stopped hard (then the loop
 * may be gone). Returns ZF_OK or ZF_ERROR. */
int zf__ssh_loop_call(zf_loop_fn fn, void *arg);

/* console.c: posts the loop-side flush / pull (with mu held). */
void zf__ssh_console_post_flush_locked(struct zf_ssh_console *cs);
void zf__ssh_console_post_pull_locked(struct zf_ssh_console *cs);

/* console.c, for console_py.c (and tests/fuzz/fuzz_console.c, which drives
 * the input queue without Python): the non-waiting cores of the session's
 * read() and set_busy(), mu held.
 * take: moves up to max queued input bytes to buf and returns how many; when
 * none, *eof tells whether input ended (client EOF, channel closed); posts a
 * pull when libssh holds input back and the queue fell below half.
 * set_busy: marks whether user code runs (Ctrl-C then interrupts instead of
 * being queued); on a pty a Ctrl-C already queued when code starts drops the
 * input up to and including it and returns 1 (the caller raises
 * KeyboardInterrupt; busy stays 0), else returns 0. */
size_t zf__ssh_console_take_locked(struct zf_ssh_console *cs, char *buf, size_t max, int *eof);
int zf__ssh_console_set_busy_locked(struct zf_ssh_console *cs, int flag);

#endif
