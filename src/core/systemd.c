/* systemd integration (systemd.h): sd_notify messages and socket activation,
 * through libsystemd's sd-daemon calls. */
#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "pool.h"
#include "server.h"
#include "systemd.h"

#ifdef ZF_WITH_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

struct zf_systemd_config zf_systemd_cfg;

static const struct zf_cfg_key systemd_keys[] = {
    {"systemd.watchdog_stuck", ZF_CFG_BOOL, &zf_systemd_cfg.watchdog_stuck, "false", NULL,
     "With WatchdogSec= in the unit: also stop the WATCHDOG=1 pings while every worker is "
     "stuck (busy on one request past server.stuck_after), so systemd restarts an instance "
     "whose application answers nothing. Off: the pings only prove that the event loop turns."},
    {"systemd.status_interval", ZF_CFG_MSEC, &zf_systemd_cfg.status_interval_ms, "10s", NULL,
     "How often the STATUS= line `systemctl status` shows (connections, busy workers, queued "
     "requests) is refreshed when started by systemd (NOTIFY_SOCKET set); 0: only at start, "
     "reload and stop."},
    {NULL, 0, NULL, NULL, NULL, NULL},
};

void zf_systemd_config_register(void)
{
    zf_config_register(systemd_keys);
}

#ifdef ZF_WITH_SYSTEMD

/* What systemd passed, from zf__systemd_init until zf__systemd_free. */
static struct {
    int n;            /* inherited descriptors: SD_LISTEN_FDS_START .. + n - 1 */
    int err;          /* sd_listen_fds_with_names failed with this (negative errno) */
    char **names;     /* LISTEN_FDNAMES ("unknown" without it) */
    int *taken;       /* 1: a listener owns it, -1: closed (no listener wanted it) */
    uint64_t wd_usec; /* WATCHDOG_USEC for this process, 0: no watchdog */
    char *notify;     /* NOTIFY_SOCKET, or NULL: nothing is sent */
    struct event *watchdog, *status;
    int wd_held; /* watchdog_stuck: pings withheld */
    int ready;
    int failing; /* the last sd_notify failed */
} sd;

/* ---- the notifier thread
 * sd_notify() sends on a blocking datagram socket: when the service
 * manager does not read (busy, or the queue of the socket full), it
 * waits. The loop must never wait, so it only queues messages here and a
 * thread of its own sends them. While one waits, newer STATUS= lines
 * replace the queued one and a queued WATCHDOG=1 is not doubled; state
 * changes (READY, RELOADING, STOPPING) are all kept, in order. */

enum note_kind { NOTE_STATE, NOTE_STATUS, NOTE_WATCHDOG };

struct note {
    struct note *next;
    enum note_kind kind;
    char text[];
};

static struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct note *head;
    int quit, running;
    pthread_t thread;
} nq = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};

/* A failure is logged once, and once more when notifying works again,
 * not on every STATUS= refresh and watchdog ping. Notifier thread. */
static void send_note(const char *msg)
{
    int rc = sd_notify(0, msg);
    if (rc < 0 && !sd.failing) {
        sd.failing = 1;
        zf_log(ZF_LOG_WARN, NULL,
               "systemd: cannot notify the service manager through %s: %s "
               "(further failures are not logged)",
               sd.notify, strerror(-rc));
    } else if (rc > 0 && sd.failing) {
        sd.failing = 0;
        zf_log(ZF_LOG_INFO, NULL, "systemd: notifying the service manager works again");
    }
}

static void *notifier(void *arg)
{
    (void)arg;
    pthread_setname_np(pthread_self(), "zf-notify");
    pthread_mutex_lock(&nq.lock);
    for (;;) {
        while (!nq.head && !nq.quit)
            pthread_cond_wait(&nq.cond, &nq.lock);
        struct note *n = nq.head;
        if (!n)
            break; /* quit, and everything sent */
        nq.head = n->next;
        pthread_mutex_unlock(&nq.lock);
        send_note(n->text);
        free(n);
        pthread_mutex_lock(&nq.lock);
    }
    pthread_mutex_unlock(&nq.lock);
    return NULL;
}

/* Queues msg for the notifier thread. Any thread; never blocks on the
 * service manager. */
static void notify_kind(enum note_kind kind, const char *msg)
{
    size_t len = strlen(msg);
    struct note *n = malloc(sizeof *n + len + 1);
    if (!n)
        return; /* a status line is not worth more than the request it would cost */
    n->next = NULL;
    n->kind = kind;
    memcpy(n->text, msg, len + 1);
    pthread_mutex_lock(&nq.lock);
    struct note **pp = &nq.head;
    while (*pp) {
        if (kind != NOTE_STATE && (*pp)->kind == kind) {
            struct note *old = *pp; /* superseded: the newest goes at the end */
            *pp = old->next;
            free(old);
            continue;
        }
        pp = &(*pp)->next;
    }
    *pp = n;
    pthread_cond_signal(&nq.cond);
    pthread_mutex_unlock(&nq.lock);
}

static void notify(const char *msg)
{
    notify_kind(strncmp(msg, "STATUS=", 7) == 0 ? NOTE_STATUS : NOTE_STATE, msg);
}

/* Lets the notifier send what is queued, for at most a second (a manager
 * that does not read must not hold the exit). */
static void notifier_stop(void)
{
    if (!nq.running)
        return;
    pthread_mutex_lock(&nq.lock);
    nq.quit = 1;
    pthread_cond_signal(&nq.cond);
    pthread_mutex_unlock(&nq.lock);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 1;
    if (pthread_timedjoin_np(nq.thread, NULL, &until) != 0) {
        zf_log(ZF_LOG_WARN, NULL,
               "systemd: the service manager does not read %s: "
               "exiting without sending the last notifications",
               sd.notify);
        pthread_detach(nq.thread);
        return; /* it may still use sd.notify: left allocated */
    }
    nq.running = 0;
    free(sd.notify);
    sd.notify = NULL;
}

void zf__systemd_init(void)
{
    char **names = NULL;
    int n = sd_listen_fds_with_names(1, &names);
    if (n < 0) {
        sd.err = n;
        n = 0;
    }
    sd.n = n;
    sd.names = names;
    sd.taken = n > 0 ? zf_xcalloc((size_t)n, sizeof *sd.taken) : NULL;
    uint64_t usec = 0;
    if (sd_watchdog_enabled(1, &usec) > 0)
        sd.wd_usec = usec;
    /* kept in the environment: sd_notify reads it at each call (libsystemd
     * has no call that takes the address) */
    const char *ns = getenv("NOTIFY_SOCKET");
    sd.notify = ns && *ns ? zf_xstrdup(ns) : NULL;
    if (sd.notify) {
        if (pthread_create(&nq.thread, NULL, notifier, NULL) == 0)
            nq.running = 1;
        else {
            free(sd.notify); /* cannot send: behave as without systemd */
            sd.notify = NULL;
        }
    }
}

static const char *fd_name(int i)
{
    return sd.names && sd.names[i] ? sd.names[i] : "unknown";
}

/* Makes an inherited socket fit for the loop. systemd passes blocking
 * sockets unless NonBlocking=yes; sd_listen_fds already set close-on-exec. */
static int adopt(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return ZF_ERROR;
    return ZF_OK;
}

int zf_systemd_take_listener(const struct sockaddr *sa, socklen_t len, const char **name)
{
    uint16_t port = 0;
    if (sa->sa_family == AF_INET)
        port = ntohs(((const struct sockaddr_in *)(const void *)sa)->sin_port);
    else if (sa->sa_family == AF_INET6)
        port = ntohs(((const struct sockaddr_in6 *)(const void *)sa)->sin6_port);
    if (port == 0)
        return -1; /* an ephemeral port was asked: nothing inherited can be it */
    for (int i = 0; i < sd.n; i++) {
        int fd = SD_LISTEN_FDS_START + i;
        if (sd.taken[i] || sd_is_socket_sockaddr(fd, SOCK_STREAM, sa, len, 1) <= 0)
            continue;
        if (adopt(fd) != ZF_OK) {
            zf_log(ZF_LOG_ERROR, NULL, "systemd: cannot make fd %d (%s) non-blocking: %s", fd,
                   fd_name(i), strerror(errno));
            return -1;
        }
        sd.taken[i] = 1;
        if (name)
            *name = fd_name(i);
        return fd;
    }
    return -1;
}

/* "127.0.0.1:8080", "[::]:8080", "unix /run/x.sock" or "not a socket". */
static void describe_fd(int fd, char *buf, size_t size)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    char host[64];
    if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0) {
        snprintf(buf, size, "not a socket");
        return;
    }
    if (ss.ss_family == AF_INET) {
        const struct sockaddr_in *in = (const void *)&ss;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
        snprintf(buf, size, "%s:%d", host, ntohs(in->sin_port));
    } else if (ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const void *)&ss;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
        snprintf(buf, size, "[%s]:%d", host, ntohs(in6->sin6_port));
    } else if (ss.ss_family == AF_UNIX) {
        const struct sockaddr_un *un = (const void *)&ss;
        snprintf(buf, size, "unix %s", len > sizeof(sa_family_t) ? un->sun_path : "(unnamed)");
    } else {
        snprintf(buf, size, "address family %d", ss.ss_family);
    }
}

/* Sends `state` (e.g. "READY=1\n", or "") followed by STATUS=<text>, in
 * one message: systemd shows the new state with its status line. */
static void vstatus(const char *state, const char *fmt, va_list ap)
{
    char msg[512];
    int k = snprintf(msg, sizeof msg, "%sSTATUS=", state);
    vsnprintf(msg + k, sizeof msg - (size_t)k, fmt, ap);
    zf_log(ZF_LOG_DEBUG, NULL, "systemd: %s", msg);
    notify(msg);
}

static void status(const char *state, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void status(const char *state, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vstatus(state, fmt, ap);
    va_end(ap);
}

void zf_systemd_status(const char *fmt, ...)
{
    if (!sd.notify)
        return;
    va_list ap;
    va_start(ap, fmt);
    vstatus("", fmt, ap);
    va_end(ap);
}

/* "serving http 127.0.0.1:8080, ssh 127.0.0.1:8022: 3 connection(s), 2/4
 * worker(s) busy, 0 queued[, 1 stuck]" */
static void send_serving_status(const char *state)
{
    char where[300];
    struct zf_pool_stats st;
    zf__listeners_describe(where, sizeof where);
    zf_pool_get_stats(&st);
    char stuck[32] = "";
    if (st.stuck)
        snprintf(stuck, sizeof stuck, ", %zu stuck", st.stuck);
    status(state, "serving %s: %zu connection(s), %zu/%ld worker(s) busy, %zu queued%s",
           where[0] ? where : "(no listener)", zf_conn_open_count(), st.running, zf_cfg.threads,
           st.queued, stuck);
}

static void send_stopping_status(const char *state)
{
    struct zf_pool_stats st;
    zf_pool_get_stats(&st);
    status(state, "stopping: %zu connection(s) open, %zu request(s) running, %zu queued",
           zf_conn_open_count(), st.running, st.queued);
}

static void on_status(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    if (!sd.ready)
        return;
    if (zf_srv->state == ZF_RUNNING)
        send_serving_status("");
    else
        send_stopping_status("");
}

/* The loop turns (this timer fired), so it pings, unless watchdog_stuck
 * asks to hold the pings while every worker is stuck in the application. */
static void on_watchdog(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    if (zf_systemd_cfg.watchdog_stuck) {
        struct zf_pool_stats st;
        zf_pool_get_stats(&st);
        int all_stuck = zf_cfg.threads > 0 && st.stuck >= (size_t)zf_cfg.threads;
        if (all_stuck != sd.wd_held) {
            sd.wd_held = all_stuck;
            if (all_stuck)
                zf_log(ZF_LOG_ERROR, NULL,
                       "systemd: every worker (%zu) is stuck: WATCHDOG=1 pings stop, so "
                       "systemd restarts the service after WatchdogSec (systemd.watchdog_stuck)",
                       st.stuck);
            else
                zf_log(ZF_LOG_WARN, NULL,
                       "systemd: a worker is free again: WATCHDOG=1 pings "
                       "resume");
        }
        if (all_stuck)
            return;
    }
    notify_kind(NOTE_WATCHDOG, "WATCHDOG=1");
}

static struct timeval tv_usec(uint64_t usec)
{
    return (struct timeval){(time_t)(usec / 1000000), (suseconds_t)(usec % 1000000)};
}

int zf__systemd_start(struct event_base *base)
{
    if (sd.err < 0)
        zf_log(ZF_LOG_ERROR, NULL,
               "systemd: cannot take the sockets passed in LISTEN_FDS: %s; opening every "
               "listener itself",
               strerror(-sd.err));
    for (int i = 0; i < sd.n; i++) {
        char addr[160];
        describe_fd(SD_LISTEN_FDS_START + i, addr, sizeof addr);
        zf_log(ZF_LOG_INFO, NULL, "systemd: passed fd %d (%s): %s", SD_LISTEN_FDS_START + i,
               fd_name(i), addr);
    }
    if (sd.wd_usec > 0) {
        /* half the period, as sd_watchdog_enabled(3) advises: one late
         * turn of the loop does not get the service killed */
        struct timeval tv = tv_usec(sd.wd_usec / 2);
        sd.watchdog = event_new(base, -1, EV_PERSIST, on_watchdog, NULL);
        if (!sd.watchdog || event_add(sd.watchdog, &tv) != 0)
            return ZF_ERROR;
        zf_log(ZF_LOG_INFO, NULL, "systemd: watchdog every %llu ms (WatchdogSec %llu ms)%s",
               (unsigned long long)(sd.wd_usec / 2000), (unsigned long long)(sd.wd_usec / 1000),
               zf_systemd_cfg.watchdog_stuck ? ", held while every worker is stuck" : "");
        if (zf_systemd_cfg.watchdog_stuck && zf_pool_cfg.stuck_after_ms == 0)
            zf_log(ZF_LOG_WARN, NULL,
                   "systemd.watchdog_stuck does nothing with "
                   "server.stuck_after = 0 (no worker is ever stuck)");
    }
    if (sd.notify && zf_systemd_cfg.status_interval_ms > 0) {
        struct timeval tv = tv_usec(zf_systemd_cfg.status_interval_ms * 1000);
        sd.status = event_new(base, -1, EV_PERSIST, on_status, NULL);
        if (!sd.status || event_add(sd.status, &tv) != 0)
            return ZF_ERROR;
    }
    return ZF_OK;
}

/* Closes and logs the inherited sockets that match no configured
 * listener: serving them under a guessed protocol could expose a port the
 * configuration does not name. */
static void close_untaken(void)
{
    for (int i = 0; i < sd.n; i++) {
        if (sd.taken[i])
            continue;
        int fd = SD_LISTEN_FDS_START + i;
        char addr[160];
        describe_fd(fd, addr, sizeof addr);
        zf_log(ZF_LOG_WARN, NULL,
               "systemd: passed fd %d (%s, %s) matches no configured listener: closed (give "
               "its address in the configuration to serve it)",
               fd, fd_name(i), addr);
        close(fd);
        sd.taken[i] = -1; /* closed */
    }
}

void zf__systemd_ready(void)
{
    close_untaken();
    sd.ready = 1;
    if (sd.notify)
        send_serving_status("READY=1\n");
}

void zf_systemd_reloading(void)
{
    if (!sd.notify)
        return;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    char msg[128];
    snprintf(msg, sizeof msg, "RELOADING=1\nSTATUS=reloading\nMONOTONIC_USEC=%llu",
             (unsigned long long)ts.tv_sec * 1000000ull + (unsigned long long)ts.tv_nsec / 1000);
    notify(msg);
}

void zf_systemd_reloaded(void)
{
    if (sd.notify && sd.ready)
        send_serving_status("READY=1\n");
}

void zf_systemd_stopping(void)
{
    if (sd.notify)
        send_stopping_status("STOPPING=1\n");
}

void zf__systemd_free(void)
{
    if (sd.watchdog)
        event_free(sd.watchdog);
    if (sd.status)
        event_free(sd.status);
    sd.watchdog = sd.status = NULL;
    for (int i = 0; i < sd.n; i++)
        if (!sd.taken[i])
            close(SD_LISTEN_FDS_START + i);
    if (sd.names) {
        for (int i = 0; sd.names[i]; i++)
            free(sd.names[i]);
        free(sd.names);
    }
    free(sd.taken);
    sd.names = NULL;
    sd.taken = NULL;
    sd.n = 0;
    sd.ready = 0;
    notifier_stop(); /* frees sd.notify once the thread is gone */
}

#else /* !ZF_WITH_SYSTEMD: nothing to talk to, nothing inherited */

void zf__systemd_init(void)
{
}

int zf_systemd_take_listener(const struct sockaddr *sa, socklen_t len, const char **name)
{
    (void)sa;
    (void)len;
    (void)name;
    return -1;
}

int zf__systemd_start(struct event_base *base)
{
    (void)base;
    return ZF_OK;
}

void zf__systemd_ready(void)
{
}

void zf_systemd_status(const char *fmt, ...)
{
    (void)fmt;
}

void zf_systemd_reloading(void)
{
}

void zf_systemd_reloaded(void)
{
}

void zf_systemd_stopping(void)
{
}

void zf__systemd_free(void)
{
}

#endif
