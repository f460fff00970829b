/* Console sessions, loop side and thread.
 *
 * A shell or exec request starts one console thread. It has its own Python
 * thread state (never a worker of the app's pool) and runs
 * zfront.console.run() (console_py.c). Bytes from the client are appended
 * on the loop to the console's input queue, which the console thread waits
 * on with the GIL released; bytes from Python are appended to the output
 * queue and a zf_loop_call makes the loop write them to the channel as its
 * window allows. When the console thread ends, the loop sends what is
 * left, the exit status, EOF and close. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../core/python.h"
#include "console.h"

static atomic_size_t nthreads;  /* counted down on the loop (done_cb) */
static atomic_size_t in_python; /* counted down by the thread once out of Python */
static atomic_int hard_stopped;

/* zf_loop_call, unless the server stopped without waiting for us: then the
 * loop may be gone and nothing may be posted to it any more. */
int zf__ssh_loop_call(zf_loop_fn fn, void *arg)
{
    if (atomic_load(&hard_stopped))
        return ZF_ERROR;
    return zf_loop_call(fn, arg);
}

void zf__ssh_console_hard_stop(void)
{
    atomic_store(&hard_stopped, 1);
    zf__ssh_interrupter_wake(); /* it interrupts faster from now on */
}

int zf__ssh_console_hard_stopped(void)
{
    return atomic_load(&hard_stopped);
}

size_t zf__ssh_console_in_python(void)
{
    return atomic_load(&in_python);
}

int zf__ssh_console_join(uint64_t timeout_ms)
{
    uint64_t deadline = zf_now_ms() + timeout_ms;
    while ((atomic_load(&in_python) > 0 || zf__ssh_interrupter_running()) && zf_now_ms() < deadline)
        usleep(10 * 1000);
    return atomic_load(&in_python) == 0 && !zf__ssh_interrupter_running() ? ZF_OK : ZF_AGAIN;
}

size_t zf__ssh_console_threads(void)
{
    return atomic_load(&nthreads);
}

void zf__ssh_console_ref(struct zf_ssh_console *cs)
{
    atomic_fetch_add(&cs->refs, 1);
}

void zf__ssh_console_unref(struct zf_ssh_console *cs)
{
    if (atomic_fetch_sub(&cs->refs, 1) != 1)
        return;
    struct zf_ssh_chunk *c = cs->out_head;
    while (c) {
        struct zf_ssh_chunk *next = c->next;
        free(c);
        c = next;
    }
    pthread_mutex_destroy(&cs->mu);
    pthread_cond_destroy(&cs->cond);
    free(cs->in);
    free(cs->command);
    free(cs);
}

/* ---- loop calls posted by the console thread ---- */

static void flush_cb(void *arg)
{
    struct zf_ssh_console *cs = arg;
    pthread_mutex_lock(&cs->mu);
    cs->flush_posted = 0;
    pthread_mutex_unlock(&cs->mu);
    zf__ssh_console_flush(cs);
    zf__ssh_console_unref(cs);
}

static void pull_cb(void *arg)
{
    struct zf_ssh_console *cs = arg;
    pthread_mutex_lock(&cs->mu);
    cs->pull_posted = 0;
    pthread_mutex_unlock(&cs->mu);
    if (cs->ch)
        zf__ssh_channel_pull(cs->ch);
    zf__ssh_console_unref(cs);
}

static void done_cb(void *arg)
{
    struct zf_ssh_console *cs = arg;
    cs->done_seen = 1;
    zf__ssh_console_flush(cs);
    zf__ssh_console_unref(cs);
    /* Counted down here, on the loop: once the count is 0 the loop may
     * end, and the thread posts nothing after this call. */
    atomic_fetch_sub(&nthreads, 1);
    zf__ssh_interrupter_wake();
    zf_server_check_idle();
}

void zf__ssh_console_post_flush_locked(struct zf_ssh_console *cs)
{
    if (cs->flush_posted || cs->closed)
        return;
    zf__ssh_console_ref(cs);
    if (zf__ssh_loop_call(flush_cb, cs) == ZF_OK)
        cs->flush_posted = 1;
    else
        atomic_fetch_sub(&cs->refs, 1); /* never the last: the caller holds one */
}

void zf__ssh_console_post_pull_locked(struct zf_ssh_console *cs)
{
    if (cs->pull_posted || cs->closed)
        return;
    zf__ssh_console_ref(cs);
    if (zf__ssh_loop_call(pull_cb, cs) == ZF_OK) {
        cs->pull_posted = 1;
        cs->want_pull = 0;
    } else {
        atomic_fetch_sub(&cs->refs, 1);
    }
}

/* ---- the console thread ---- */

static void *console_main(void *arg)
{
    struct zf_ssh_console *cs = arg;
    int status = 1;
    pthread_setname_np(pthread_self(), "zf-ssh-console");
    struct zf_py_thread *t = zf_py_thread_new();
    if (t) {
        zf_py_enter(t);
        status = zf__ssh_console_run_python(cs);
        zf_py_leave(t);
        zf_py_thread_free(t);
    } else {
        zf_log(ZF_LOG_ERROR, NULL, "ssh: cannot create a Python thread state for a console");
    }
    /* Out of Python for good: shutdown may finalize the interpreter. */
    atomic_fetch_sub(&in_python, 1);
    zf__ssh_interrupter_wake();
    pthread_mutex_lock(&cs->mu);
    cs->finished = 1;
    cs->busy = 0;
    cs->exit_status = status;
    pthread_mutex_unlock(&cs->mu);
    /* The thread's reference goes to done_cb; nothing after this call
     * may touch the loop or cs. */
    if (zf__ssh_loop_call(done_cb, cs) != ZF_OK) {
        zf__ssh_console_unref(cs);
        atomic_fetch_sub(&nthreads, 1);
        zf__ssh_interrupter_wake();
    }
    return NULL;
}

int zf__ssh_console_start(struct zf_ssh_channel *ch, enum zf_ssh_mode mode, const char *command,
                          const char *user)
{
    const struct zf_conn *conn = (const struct zf_conn *)ch->conn;
    if (atomic_load(&nthreads) >= (size_t)zf_ssh_cfg.max_sessions) {
        zf_log(ZF_LOG_WARN, conn, "ssh: %ld console sessions are open (max_sessions), refused",
               zf_ssh_cfg.max_sessions);
        return ZF_ERROR;
    }
    struct zf_ssh_console *cs = calloc(1, sizeof *cs);
    if (!cs)
        return ZF_ERROR;
    atomic_init(&cs->refs, 2); /* the channel's and the thread's */
    pthread_mutex_init(&cs->mu, NULL);
    pthread_cond_init(&cs->cond, NULL);
    cs->mode = mode;
    cs->pty = ch->pty;
    cs->command = command ? strdup(command) : NULL;
    snprintf(cs->user, sizeof cs->user, "%s", user);
    snprintf(cs->term, sizeof cs->term, "%s", ch->term);
    snprintf(cs->peer, sizeof cs->peer, "%s", conn->peer);
    cs->conn_id = conn->id;
    cs->cols = ch->cols;
    cs->rows = ch->rows;
    cs->ch = ch;
    if (command && !cs->command) {
        zf__ssh_console_unref(cs);
        zf__ssh_console_unref(cs);
        return ZF_ERROR;
    }

    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 8 * 1024 * 1024);
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old); /* the thread takes no process signals */
    atomic_fetch_add(&nthreads, 1);
    atomic_fetch_add(&in_python, 1);
    pthread_t tid;
    int rc = pthread_create(&tid, &attr, console_main, cs);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        atomic_fetch_sub(&nthreads, 1);
        atomic_fetch_sub(&in_python, 1);
        zf_log(ZF_LOG_ERROR, conn, "ssh: cannot start a console thread: %s", strerror(rc));
        zf__ssh_console_unref(cs);
        zf__ssh_console_unref(cs);
        return ZF_ERROR;
    }
    ch->console = cs;
    return ZF_OK;
}

/* ---- loop side: input ---- */

size_t zf__ssh_console_room(struct zf_ssh_console *cs)
{
    pthread_mutex_lock(&cs->mu);
    size_t queued = cs->in_len - cs->in_off;
    size_t room = queued < ZF_SSH_IN_MAX ? ZF_SSH_IN_MAX - queued : 0;
    if (room == 0)
        cs->want_pull = 1;
    pthread_mutex_unlock(&cs->mu);
    return room;
}

/* Makes room for n more input bytes (mu held). Returns ZF_OK or ZF_ERROR. */
static int in_reserve(struct zf_ssh_console *cs, size_t n)
{
    if (cs->in_off > 0 && cs->in_off == cs->in_len) {
        cs->in_off = cs->in_len = 0;
    } else if (cs->in_off > cs->in_cap / 2) {
        memmove(cs->in, cs->in + cs->in_off, cs->in_len - cs->in_off);
        cs->in_len -= cs->in_off;
        cs->in_off = 0;
    }
    if (cs->in_len + n <= cs->in_cap)
        return ZF_OK;
    size_t cap = cs->in_cap ? cs->in_cap : 4096;
    while (cap < cs->in_len + n)
        cap *= 2;
    char *p = realloc(cs->in, cap);
    if (!p)
        return ZF_ERROR;
    cs->in = p;
    cs->in_cap = cap;
    return ZF_OK;
}

size_t zf__ssh_console_input(struct zf_ssh_console *cs, const char *data, size_t len)
{
    int interrupt = 0;
    pthread_mutex_lock(&cs->mu);
    size_t queued = cs->in_len - cs->in_off;
    size_t take = queued < ZF_SSH_IN_MAX ? ZF_SSH_IN_MAX - queued : 0;
    if (take > len)
        take = len;
    if (take < len)
        cs->want_pull = 1;
    if (take > 0 && in_reserve(cs, take) != ZF_OK)
        take = 0;
    for (size_t i = 0; i < take; i++) {
        /* Ctrl-C while code runs interrupts it; at the prompt the line
         * editor gets it (it clears the line). */
        if (data[i] == 3 && cs->pty && cs->busy) {
            interrupt = 1;
            continue;
        }
        cs->in[cs->in_len++] = data[i];
    }
    pthread_cond_broadcast(&cs->cond);
    pthread_mutex_unlock(&cs->mu);
    if (interrupt)
        zf__ssh_console_interrupt(cs);
    return take;
}

size_t zf__ssh_console_take_locked(struct zf_ssh_console *cs, char *buf, size_t max, int *eof)
{
    size_t n = cs->in_len - cs->in_off;
    if (n > max)
        n = max;
    if (n > 0) /* cs->in is NULL until the first input: NULL + 0 is undefined */
        memcpy(buf, cs->in + cs->in_off, n);
    cs->in_off += n;
    *eof = n == 0 && (cs->in_eof || cs->closed);
    if (cs->want_pull && cs->in_len - cs->in_off < ZF_SSH_IN_MAX / 2)
        zf__ssh_console_post_pull_locked(cs);
    return n;
}

int zf__ssh_console_set_busy_locked(struct zf_ssh_console *cs, int flag)
{
    int typed_ahead = 0;
    if (flag && cs->pty) {
        /* A Ctrl-C typed before the code started (still in the queue)
         * interrupts it now; like a tty, input typed before it is dropped. */
        for (size_t i = cs->in_len; i > cs->in_off; i--) {
            if (cs->in[i - 1] == 3) {
                cs->in_off = i;
                typed_ahead = 1;
                break;
            }
        }
    }
    cs->busy = typed_ahead ? 0 : flag;
    return typed_ahead;
}

void zf__ssh_console_eof(struct zf_ssh_console *cs)
{
    pthread_mutex_lock(&cs->mu);
    cs->in_eof = 1;
    pthread_cond_broadcast(&cs->cond);
    pthread_mutex_unlock(&cs->mu);
}

void zf__ssh_console_resize(struct zf_ssh_console *cs, int cols, int rows)
{
    pthread_mutex_lock(&cs->mu);
    cs->cols = cols;
    cs->rows = rows;
    pthread_mutex_unlock(&cs->mu);
}

void zf__ssh_console_interrupt(struct zf_ssh_console *cs)
{
    pthread_mutex_lock(&cs->mu);
    int busy = cs->busy && !cs->finished;
    cs->intr_gen++;
    pthread_cond_broadcast(&cs->cond);
    pthread_mutex_unlock(&cs->mu);
    if (busy)
        zf__ssh_interrupter_post(cs);
}

void zf__ssh_console_detach(struct zf_ssh_console *cs, const char *why)
{
    cs->ch = NULL;
    pthread_mutex_lock(&cs->mu);
    int was_closed = cs->closed;
    cs->closed = 1;
    pthread_mutex_unlock(&cs->mu);
    if (!was_closed)
        zf_log(ZF_LOG_DEBUG, NULL, "ssh: console of connection %llu detached: %s",
               (unsigned long long)cs->conn_id, why);
    zf__ssh_console_interrupt(cs);
    /* Also when its code is not running yet (a script still being read):
     * the interrupter keeps a closed console and interrupts it once its
     * code runs, until the thread finished. */
    pthread_mutex_lock(&cs->mu);
    int finished = cs->finished;
    pthread_mutex_unlock(&cs->mu);
    if (!finished)
        zf__ssh_interrupter_post(cs);
    zf__ssh_console_unref(cs);
}

/* ---- loop side: output ---- */

/* Sends exit-status, EOF and close once the console thread is done and
 * every byte went out. The channel's reference to the console is dropped. */
static void finish_channel(struct zf_ssh_console *cs)
{
    struct zf_ssh_channel *ch = cs->ch;
    /* Unlink first: the libssh calls below may run callbacks. */
    cs->ch = NULL;
    ch->console = NULL;
    zf_log(ZF_LOG_INFO, (const struct zf_conn *)ch->conn,
           "ssh: session of \"%s\" ended (exit status %d)", cs->user, cs->exit_status);
    ssh_channel_request_send_exit_status(ch->chan, cs->exit_status);
    ssh_channel_send_eof(ch->chan);
    ssh_channel_close(ch->chan);
    zf__ssh_channel_finished(ch);
    zf__ssh_console_unref(cs);
}

void zf__ssh_console_flush(struct zf_ssh_console *cs)
{
    if (!cs->ch)
        return;
    zf__ssh_console_ref(cs); /* callbacks inside libssh may detach it */
    struct zf_ssh_conn *conn = cs->ch->conn;
    for (int rounds = 0; rounds < 256 && cs->ch; rounds++) {
        /* The hand-off: the console thread appends to the tail chunk
         * (bytes past c->len, then c->len grows) under mu, so the loop
         * reads off, len and is_stderr under mu too; the bytes before the
         * len it saw were written before the console released mu and are
         * never written again. Only the loop consumes or frees chunks, so
         * c and those bytes stay valid after the unlock. */
        pthread_mutex_lock(&cs->mu);
        struct zf_ssh_chunk *c = cs->out_head;
        size_t off = c ? c->off : 0, avail = c ? c->len - c->off : 0;
        int is_stderr = c ? c->is_stderr : 0;
        pthread_mutex_unlock(&cs->mu);
        if (!c)
            break;
        uint32_t win = ssh_channel_window_size(cs->ch->chan);
        size_t n = avail;
        if (n > win)
            n = win;
        if (n > 32768)
            n = 32768;
        if (n == 0 && avail > 0)
            break; /* window full: the wontblock callback calls us again */
        int w = 0;
        if (n > 0) {
            w = is_stderr ? ssh_channel_write_stderr(cs->ch->chan, c->data + off, (uint32_t)n)
                          : ssh_channel_write(cs->ch->chan, c->data + off, (uint32_t)n);
            if (w < 0)
                break; /* the session failed: drive() notices and closes */
        }
        pthread_mutex_lock(&cs->mu);
        c->off += (size_t)w;
        cs->out_bytes -= (size_t)w;
        int done_chunk = 0;
        if (c->off == c->len) {
            if (c == cs->out_tail) {
                c->off = c->len = 0; /* keep the tail for the next appends */
            } else {
                cs->out_head = c->next;
                done_chunk = 1;
            }
        }
        int empty = cs->out_bytes == 0;
        pthread_cond_broadcast(&cs->cond);
        pthread_mutex_unlock(&cs->mu);
        if (done_chunk)
            free(c);
        if ((size_t)w < n || empty)
            break;
    }
    if (cs->ch && cs->done_seen) {
        pthread_mutex_lock(&cs->mu);
        int empty = cs->out_bytes == 0;
        pthread_mutex_unlock(&cs->mu);
        if (empty)
            finish_channel(cs);
    }
    zf__ssh_conn_update_io(conn);
    zf__ssh_console_unref(cs);
}
