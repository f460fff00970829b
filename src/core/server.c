/* The reactor: listeners, connection ids, cross-thread calls and the
 * graceful shutdown sequence. */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "exchange.h"
#include "pool.h"
#include "server.h"
#include "systemd.h"

struct zf_server *zf_srv;

static struct event *shutdown_timer;
static struct event *drain_timer; /* graceful stop: queued requests get 503 */
static struct event *queue_timer; /* server.queue_timeout: expires queued requests */
static uint64_t stop_deadline;    /* zf_server_stop_deadline */

/* ------------------------------------------------------------ connections */

uint64_t zf_conn_init(struct zf_conn *c, const char *proto, const struct sockaddr *sa,
                      socklen_t salen)
{
    (void)salen;
    memset(c, 0, sizeof *c);
    c->id = ++zf_srv->next_conn_id;
    c->proto = proto;
    c->action = NULL;
    if (sa && sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const void *)sa;
        inet_ntop(AF_INET, &in->sin_addr, c->peer_addr, sizeof c->peer_addr);
        c->peer_port = ntohs(in->sin_port);
        snprintf(c->peer, sizeof c->peer, "%s:%d", c->peer_addr, c->peer_port);
    } else if (sa && sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const void *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, c->peer_addr, sizeof c->peer_addr);
        c->peer_port = ntohs(in6->sin6_port);
        snprintf(c->peer, sizeof c->peer, "[%s]:%d", c->peer_addr, c->peer_port);
    } else {
        snprintf(c->peer_addr, sizeof c->peer_addr, "unix");
        snprintf(c->peer, sizeof c->peer, "unix");
    }
    return c->id;
}

/* -------------------------------------------------------------- admission */

/* Every listener (for pausing the admitting ones), the connection count
 * and the two overload episodes that are logged once each, with a count
 * at their end: the connection limit, and accept() failing for want of
 * descriptors. An episode ends after a second without a new event. */
static struct zf_listener *listeners;

struct episode {
    int on;
    uint64_t events, seen;  /* events so far; events at the last tick */
    uint64_t shed, refused; /* the connection limit's */
    time_t started;
};

static struct {
    size_t open, max;
    int paused;
    struct episode limit, emfile;
    char emfile_addr[80];
    int emfile_errno;
    struct event *tick;
    size_t burst;            /* connections shed in this accept burst */
    int burst_held;          /* listeners held until the burst ends */
    struct event *burst_end; /* runs once the listener callbacks of this loop pass are done */
} adm;

size_t zf_conn_open_count(void)
{
    return adm.open;
}

size_t zf_conn_limit(void)
{
    return adm.max;
}

static void set_paused(int paused)
{
    adm.paused = paused;
    for (struct zf_listener *l = listeners; l; l = l->next) {
        if (!l->admit || !l->el || l->paused == paused)
            continue;
        l->paused = paused;
        if (paused)
            evconnlistener_disable(l->el);
        else
            evconnlistener_enable(l->el);
    }
}

void zf_conn_opened(void)
{
    adm.open++;
}

void zf_conn_closed(void)
{
    if (adm.open)
        adm.open--;
    if (adm.paused && adm.open < adm.max && zf_srv && zf_srv->state == ZF_RUNNING)
        set_paused(0);
}

/* Once a second while an episode lasts: an episode without new events
 * is over (logged with its count); a paused accept is retried (busy
 * connections may have become idle, hence sheddable). */
static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    time_t now = time(NULL);
    if (adm.limit.on && adm.limit.events == adm.limit.seen) {
        zf_log(ZF_LOG_WARN, NULL,
               "connection limit episode over after %lds: %llu connection(s) shed, %llu "
               "refused (server.max_connections = %zu)",
               (long)(now - adm.limit.started), (unsigned long long)adm.limit.shed,
               (unsigned long long)adm.limit.refused, adm.max);
        adm.limit = (struct episode){0};
    }
    adm.limit.seen = adm.limit.events;
    if (adm.emfile.on && adm.emfile.events == adm.emfile.seen) {
        zf_log(ZF_LOG_WARN, NULL, "accept() on %s works again: it failed %llu time(s) in %lds (%s)",
               adm.emfile_addr, (unsigned long long)adm.emfile.events,
               (long)(now - adm.emfile.started), evutil_socket_error_to_string(adm.emfile_errno));
        adm.emfile = (struct episode){0};
    }
    adm.emfile.seen = adm.emfile.events;
    if (adm.paused && zf_srv->state == ZF_RUNNING)
        set_paused(0);
    if (adm.limit.on || adm.emfile.on) {
        struct timeval tv = {1, 0};
        evtimer_add(adm.tick, &tv);
    }
}

static void episode_event(struct episode *e)
{
    e->events++;
    if (e->on)
        return;
    e->on = 1;
    e->started = time(NULL);
    e->seen = 0;
    if (adm.tick && !evtimer_pending(adm.tick, NULL)) {
        struct timeval tv = {1, 0};
        evtimer_add(adm.tick, &tv);
    }
}

/* A burst at the limit: a listener callback takes the whole backlog in
 * one go, while a newcomer's request is read only in a later loop pass. A
 * burst of more newcomers than the limit (thousands of attackers
 * reconnecting at once) would shed its own first newcomers, a normal
 * client among them, before reading them. So one burst sheds at most a
 * quarter of the limit; then the admitting listeners wait for the next
 * loop pass (burst_end, activated by the burst's first shed, runs after
 * the listener callbacks of this pass and lets them go on). */
static void on_burst_end(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    adm.burst = 0;
    if (!adm.burst_held)
        return;
    adm.burst_held = 0;
    if (!zf_srv || zf_srv->state != ZF_RUNNING)
        return;
    for (struct zf_listener *l = listeners; l; l = l->next)
        if (l->admit && l->el && !l->paused)
            evconnlistener_enable(l->el);
}

static void burst_shed(void)
{
    if (adm.burst++ == 0 && adm.burst_end)
        event_active(adm.burst_end, EV_TIMEOUT, 0);
    size_t cap = adm.max / 4 ? adm.max / 4 : 1;
    if (adm.burst < cap || adm.burst_held || !adm.burst_end)
        return;
    adm.burst_held = 1;
    for (struct zf_listener *l = listeners; l; l = l->next)
        if (l->admit && l->el && !l->paused)
            evconnlistener_disable(l->el);
}

/* At the limit: asks the modules to shed one connection. Returns ZF_OK
 * when a slot was freed, ZF_ERROR when none could be. */
static int make_room(void)
{
    int first = !adm.limit.on;
    episode_event(&adm.limit);
    if (first)
        zf_log(ZF_LOG_WARN, NULL,
               "connection limit reached (server.max_connections = %zu): closing idle and "
               "header-phase connections, least recently active first, to make room",
               adm.max);
    for (size_t i = 0; i < zf_srv->nactive; i++) {
        const struct zf_module *m = zf_srv->active[i];
        if (m->shed && m->shed(zf_srv, 1) > 0) {
            adm.limit.shed++;
            burst_shed();
            return ZF_OK;
        }
    }
    adm.limit.refused++;
    return ZF_ERROR;
}

/* Descriptors open now (the interpreter, logs, the loop's own). */
static size_t fds_in_use(void)
{
    size_t n = 0;
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return 16;
    for (struct dirent *e; (e = readdir(d));)
        n += e->d_name[0] != '.';
    closedir(d);
    return n > 0 ? n - 1 : 0; /* not the directory's own */
}

/* Raises the soft descriptor limit to the hard one and derives the
 * default connection limit from it: what is left after the descriptors
 * already open and a reserve (spool files, file responses, pipes, the
 * worker threads' own) of an eighth of the limit, at least 32. */
static void setup_limits(void)
{
    struct rlimit rl;
    size_t nofile = 1024;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rlim_t want = rl.rlim_max;
        if (want == RLIM_INFINITY || want > (1u << 20))
            want = 1u << 20;
        if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < want) {
            rlim_t was = rl.rlim_cur;
            rl.rlim_cur = want;
            if (setrlimit(RLIMIT_NOFILE, &rl) == 0)
                zf_log(ZF_LOG_INFO, NULL,
                       "descriptor limit (RLIMIT_NOFILE) raised from %llu to %llu",
                       (unsigned long long)was, (unsigned long long)want);
            else
                getrlimit(RLIMIT_NOFILE, &rl);
        }
        nofile = rl.rlim_cur == RLIM_INFINITY ? (1u << 20) : (size_t)rl.rlim_cur;
    }
    if (zf_cfg.max_connections > 0) {
        adm.max = (size_t)zf_cfg.max_connections;
        if (adm.max >= nofile)
            zf_log(ZF_LOG_WARN, NULL,
                   "server.max_connections = %zu is not below the descriptor limit (%zu): "
                   "accept() will fail first",
                   adm.max, nofile);
    } else {
        size_t reserve = (nofile / 8 < 32 ? 32 : nofile / 8) + fds_in_use();
        adm.max = nofile > reserve + 1 ? nofile - reserve : 1;
        if (adm.max > 10000)
            adm.max = 10000;
    }
    zf_log(ZF_LOG_INFO, NULL, "connection limit %zu (descriptor limit %zu)", adm.max, nofile);
}

/* -------------------------------------------------------------- listeners */

int zf_parse_addr(const char *text, struct sockaddr_storage *ss, socklen_t *len)
{
    char host[128];
    const char *port;
    memset(ss, 0, sizeof *ss);
    if (text[0] == '[') {
        const char *end = strchr(text, ']');
        if (!end || end[1] != ':' || (size_t)(end - text - 1) >= sizeof host)
            return ZF_ERROR;
        memcpy(host, text + 1, (size_t)(end - text - 1));
        host[end - text - 1] = 0;
        port = end + 2;
    } else {
        const char *colon = strrchr(text, ':');
        if (!colon) {
            snprintf(host, sizeof host, "0.0.0.0");
            port = text;
        } else {
            if ((size_t)(colon - text) >= sizeof host)
                return ZF_ERROR;
            memcpy(host, text, (size_t)(colon - text));
            host[colon - text] = 0;
            if (!host[0])
                snprintf(host, sizeof host, "0.0.0.0");
            else if (strcmp(host, "localhost") == 0)
                snprintf(host, sizeof host, "127.0.0.1");
            port = colon + 1;
        }
    }
    char *end;
    long p = strtol(port, &end, 10);
    if (!*port || *end || p < 0 || p > 65535)
        return ZF_ERROR;
    struct sockaddr_in *in = (void *)ss;
    struct sockaddr_in6 *in6 = (void *)ss;
    if (inet_pton(AF_INET, host, &in->sin_addr) == 1) {
        in->sin_family = AF_INET;
        in->sin_port = htons((uint16_t)p);
        *len = sizeof *in;
        return ZF_OK;
    }
    if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)p);
        *len = sizeof *in6;
        return ZF_OK;
    }
    return ZF_ERROR;
}

static void on_accept(struct evconnlistener *el, evutil_socket_t fd, struct sockaddr *sa,
                      int salen, void *arg)
{
    (void)el;
    struct zf_listener *l = arg;
    if (zf_srv->state != ZF_RUNNING) {
        evutil_closesocket(fd);
        return;
    }
    if (l->admit && adm.open >= adm.max && make_room() != ZF_OK) {
        /* nothing can go: the client learns at once, and the listeners
         * wait until a slot frees (or the next tick retries) */
        evutil_closesocket(fd);
        set_paused(1);
        return;
    }
    l->cb(l, fd, sa, salen, l->arg);
}

static void reenable(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct zf_listener *l = arg;
    if (!l->paused)
        evconnlistener_enable(l->el);
}

static void on_accept_error(struct evconnlistener *el, void *arg)
{
    struct zf_listener *l = arg;
    int err = EVUTIL_SOCKET_ERROR();
    if (err != EMFILE && err != ENFILE) {
        zf_log(ZF_LOG_ERROR, NULL, "%s: accept() on %s failed: %s", l->proto, l->addr,
               evutil_socket_error_to_string(err));
        return;
    }
    /* Out of descriptors: logged once per episode (the end is logged with
     * the count), and accepting pauses for a moment instead of spinning. */
    if (!adm.emfile.on) {
        snprintf(adm.emfile_addr, sizeof adm.emfile_addr, "%s", l->addr);
        adm.emfile_errno = err;
        zf_log(ZF_LOG_ERROR, NULL,
               "%s: accept() on %s failed: %s; retrying every 200 ms, further failures are "
               "counted and logged when it works again",
               l->proto, l->addr, evutil_socket_error_to_string(err));
    }
    episode_event(&adm.emfile);
    {
        evconnlistener_disable(el);
        struct timeval tv = {0, 200000};
        if (!l->retry)
            l->retry = evtimer_new(zf_srv->base, reenable, l);
        if (l->retry)
            evtimer_add(l->retry, &tv);
    }
}

static void describe(struct zf_listener *l, const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const void *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, l->host, sizeof l->host);
        l->port = ntohs(in6->sin6_port);
        snprintf(l->addr, sizeof l->addr, "[%s]:%d", l->host, l->port);
    } else {
        const struct sockaddr_in *in = (const void *)sa;
        inet_ntop(AF_INET, &in->sin_addr, l->host, sizeof l->host);
        l->port = ntohs(in->sin_port);
        snprintf(l->addr, sizeof l->addr, "%s:%d", l->host, l->port);
    }
}

struct zf_listener *zf_listen(struct zf_server *srv, const char *addr, const char *proto,
                              zf_accept_cb cb, void *arg)
{
    struct sockaddr_storage ss;
    socklen_t len;
    if (zf_parse_addr(addr, &ss, &len) != ZF_OK) {
        zf_log(ZF_LOG_ERROR, NULL, "%s: bad listen address \"%s\" (expected host:port, "
               "[v6]:port or port)", proto, addr);
        return NULL;
    }
    struct zf_listener *l = zf_xcalloc(1, sizeof *l);
    l->cb = cb;
    l->arg = arg;
    l->proto = proto;
    const char *sd_name = NULL;
    int fd = zf_systemd_take_listener((struct sockaddr *)&ss, len, &sd_name);
    if (fd >= 0) {
        /* socket activation: systemd bound and listens already (backlog 0:
         * no listen() call, its Backlog= stays) */
        l->el = evconnlistener_new(srv->base, on_accept, l,
                                   LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 0, fd);
        if (!l->el) {
            int err = errno;
            close(fd);
            errno = err;
        }
    } else {
        l->el = evconnlistener_new_bind(srv->base, on_accept, l,
                                        LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE |
                                            LEV_OPT_CLOSE_ON_EXEC,
                                        511, (struct sockaddr *)&ss, (int)len);
    }
    if (!l->el) {
        zf_log(ZF_LOG_ERROR, NULL, "%s: cannot listen on %s: %s", proto, addr,
               strerror(errno));
        free(l);
        return NULL;
    }
    evconnlistener_set_error_cb(l->el, on_accept_error);
    l->next = listeners;
    listeners = l;
    struct sockaddr_storage bound;
    socklen_t blen = sizeof bound;
    getsockname(evconnlistener_get_fd(l->el), (struct sockaddr *)&bound, &blen);
    describe(l, (struct sockaddr *)&bound);
    if (fd >= 0)
        zf_log(ZF_LOG_INFO, NULL, "%s: listening on %s (socket from systemd: fd %d, %s)", proto,
               l->addr, fd, sd_name);
    else
        zf_log(ZF_LOG_INFO, NULL, "%s: listening on %s", proto, l->addr);
    return l;
}

size_t zf__listeners_describe(char *buf, size_t size)
{
    /* the list is newest first: name them in the order they were opened */
    const struct zf_listener *v[32];
    size_t n = 0, len = 0;
    for (const struct zf_listener *l = listeners; l && n < ZF_ARRAY_LEN(v); l = l->next)
        v[n++] = l;
    if (size)
        buf[0] = 0;
    while (n-- > 0 && len < size) {
        int k =
            snprintf(buf + len, size - len, "%s%s %s", len ? ", " : "", v[n]->proto, v[n]->addr);
        if (k < 0)
            break;
        len += (size_t)k;
    }
    return len < size ? len : size ? size - 1 : 0;
}

void zf_listener_free(struct zf_listener *l)
{
    if (!l)
        return;
    for (struct zf_listener **pp = &listeners; *pp; pp = &(*pp)->next)
        if (*pp == l) {
            *pp = l->next;
            break;
        }
    if (l->el)
        evconnlistener_free(l->el);
    if (l->retry)
        event_free(l->retry);
    free(l);
}

/* ------------------------------------------------------ cross-thread calls */

struct loop_call {
    struct loop_call *next;
    zf_loop_fn fn;
    void *arg;
};

static struct {
    pthread_mutex_t lock;
    struct loop_call *head, *tail;
    struct event *ev;
} calls = {.lock = PTHREAD_MUTEX_INITIALIZER};

static void on_calls(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    pthread_mutex_lock(&calls.lock);
    struct loop_call *c = calls.head;
    calls.head = calls.tail = NULL;
    pthread_mutex_unlock(&calls.lock);
    while (c) {
        struct loop_call *next = c->next;
        c->fn(c->arg);
        free(c);
        c = next;
    }
}

int zf_loop_call(zf_loop_fn fn, void *arg)
{
    struct loop_call *c = malloc(sizeof *c);
    if (!c)
        return ZF_ERROR;
    c->next = NULL;
    c->fn = fn;
    c->arg = arg;
    pthread_mutex_lock(&calls.lock);
    if (!calls.ev) { /* the loop is gone (shutdown): nobody would run it */
        pthread_mutex_unlock(&calls.lock);
        free(c);
        return ZF_ERROR;
    }
    if (calls.tail)
        calls.tail->next = c;
    else
        calls.head = c;
    calls.tail = c;
    event_active(calls.ev, EV_READ, 0);
    pthread_mutex_unlock(&calls.lock);
    return ZF_OK;
}

/* The queue timer: requests that waited past server.queue_timeout are
 * answered 503 while every worker is still busy, not only when one frees
 * up and finds them too old (pool.c checks then too). */
static void on_queue_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    zf_pool_expire();
}

static struct timeval tv_ms(uint64_t ms)
{
    return (struct timeval){(time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000)};
}

static const struct zf_upgrade *upgrades[4];
static size_t nupgrades;

int zf_upgrade_register(const struct zf_upgrade *u)
{
    for (size_t i = 0; i < nupgrades; i++)
        if (upgrades[i] == u)
            return ZF_OK;
    if (nupgrades == ZF_ARRAY_LEN(upgrades))
        return ZF_ERROR;
    upgrades[nupgrades++] = u;
    return ZF_OK;
}

const struct zf_upgrade *zf_upgrade_find(const char *token, size_t len)
{
    for (size_t i = 0; i < nupgrades; i++)
        if (strlen(upgrades[i]->token) == len && strncasecmp(upgrades[i]->token, token, len) == 0)
            return upgrades[i];
    return NULL;
}

int zf_upgrade_pipes(void)
{
    for (size_t i = 0; i < nupgrades; i++)
        if (upgrades[i]->start_pipe)
            return 1;
    return 0;
}

int zf__server_init_loop(struct zf_server *srv)
{
    setup_limits();
    adm.tick = evtimer_new(srv->base, on_tick, NULL);
    adm.burst_end = event_new(srv->base, -1, 0, on_burst_end, NULL);
    calls.ev = event_new(srv->base, -1, 0, on_calls, NULL);
    if (!calls.ev || !adm.tick || !adm.burst_end)
        return ZF_ERROR;
    uint64_t limit = zf_pool_cfg.queue_timeout_ms;
    if (limit > 0) {
        /* checked 8 times per timeout: a request is answered at most 1/8
         * of the limit late (at least every 10 ms, at most every 0.5 s) */
        uint64_t period = limit / 8 < 10 ? 10 : limit / 8 > 500 ? 500 : limit / 8;
        struct timeval tv = tv_ms(period);
        queue_timer = event_new(srv->base, -1, EV_PERSIST, on_queue_timer, NULL);
        if (!queue_timer || event_add(queue_timer, &tv) != 0)
            return ZF_ERROR;
    }
    return ZF_OK;
}

void zf__server_free_loop(void)
{
    pthread_mutex_lock(&calls.lock);
    struct event *ev = calls.ev;
    calls.ev = NULL;
    pthread_mutex_unlock(&calls.lock);
    if (ev) {
        on_calls(-1, 0, NULL); /* run what is left so nothing leaks */
        event_free(ev);
    }
    if (adm.tick)
        event_free(adm.tick);
    adm.tick = NULL;
    if (adm.burst_end)
        event_free(adm.burst_end);
    adm.burst_end = NULL;
    adm.burst = 0;
    adm.burst_held = 0;
    if (shutdown_timer)
        event_free(shutdown_timer);
    shutdown_timer = NULL;
    if (drain_timer)
        event_free(drain_timer);
    drain_timer = NULL;
    if (queue_timer)
        event_free(queue_timer);
    queue_timer = NULL;
}

/* --------------------------------------------------------------- shutdown */

static size_t active_total(void)
{
    size_t n = 0;
    for (size_t i = 0; i < zf_srv->nactive; i++)
        if (zf_srv->active[i]->active)
            n += zf_srv->active[i]->active(zf_srv);
    return n;
}

static void stop_modules(int graceful)
{
    for (size_t i = 0; i < zf_srv->nactive; i++)
        if (zf_srv->active[i]->stop)
            zf_srv->active[i]->stop(zf_srv, graceful);
}

static void on_shutdown_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    zf_log(ZF_LOG_WARN, NULL, "shutdown timeout: closing %zu connection(s) still open",
           active_total());
    stop_modules(0);
    zf_srv->state = ZF_STOPPED;
    event_base_loopexit(zf_srv->base, NULL);
}

void zf_server_check_idle(void)
{
    if (zf_srv->state == ZF_STOPPING && active_total() == 0) {
        zf_log(ZF_LOG_INFO, NULL, "all connections closed");
        zf_srv->state = ZF_STOPPED;
        event_base_loopexit(zf_srv->base, NULL);
    }
}

/* Half-way through a graceful stop: requests still waiting for a worker
 * will not get one in time (the workers are busy with requests that have
 * not finished in half the timeout), so they are answered 503 now, leaving
 * the other half for those answers to reach the clients. */
static void on_drain(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    size_t n = zf_pool_cancel_queued();
    if (n > 0)
        zf_log(ZF_LOG_INFO, NULL, "shutdown: %zu queued request(s) answered 503", n);
}

uint64_t zf_server_stop_deadline(void)
{
    return stop_deadline;
}

void zf_server_shutdown(int graceful)
{
    if (!graceful)
        stop_deadline = zf_now_ms(); /* even when already stopped: do not wait */
    if (zf_srv->state == ZF_STOPPED)
        return;
    if (zf_srv->state == ZF_STOPPING) {
        if (!graceful) {
            stop_modules(0);
            zf_srv->state = ZF_STOPPED;
            event_base_loopexit(zf_srv->base, NULL);
        }
        return;
    }
    zf_srv->state = ZF_STOPPING;
    zf_log(ZF_LOG_INFO, NULL, "shutting down%s", graceful ? " gracefully" : "");
    zf_systemd_stopping();
    uint64_t ms = zf_cfg.shutdown_timeout_ms;
    if (graceful)
        stop_deadline = zf_now_ms() + ms;
    stop_modules(graceful);
    if (!graceful) {
        zf_srv->state = ZF_STOPPED;
        event_base_loopexit(zf_srv->base, NULL);
        return;
    }
    struct timeval tv = tv_ms(ms);
    shutdown_timer = evtimer_new(zf_srv->base, on_shutdown_timeout, NULL);
    if (shutdown_timer)
        evtimer_add(shutdown_timer, &tv);
    tv = tv_ms(ms / 2);
    drain_timer = evtimer_new(zf_srv->base, on_drain, NULL);
    if (drain_timer)
        evtimer_add(drain_timer, &tv);
    zf_server_check_idle();
}

/* --------------------------------------------------------------- services */

#define MAX_SERVICES 8

static struct {
    const struct zf_service *s;
    int needed;
} services[MAX_SERVICES];
static size_t nservices;

void zf_service_register(const struct zf_service *s)
{
    for (size_t i = 0; i < nservices; i++)
        if (services[i].s == s)
            return;
    if (nservices == MAX_SERVICES) {
        fprintf(stderr, "zfront: too many services (at most %d)\n", MAX_SERVICES);
        abort(); /* a build with more providers than slots: a programming error */
    }
    services[nservices++].s = s;
}

/* The first provider of `name` that opens listeners, or nservices. */
static size_t find_service(const char *name)
{
    for (size_t i = 0; i < nservices; i++)
        if (strcmp(services[i].s->name, name) == 0 && services[i].s->listen)
            return i;
    return nservices;
}

int zf_service_need(const char *name, const char *who)
{
    if (find_service(name) == nservices) {
        zf_log(ZF_LOG_ERROR, NULL, "%s: needs the %s service, which this build does not have", who,
               name);
        return ZF_ERROR;
    }
    for (size_t i = 0; i < nservices; i++)
        if (strcmp(services[i].s->name, name) == 0)
            services[i].needed = 1;
    return ZF_OK;
}

int zf_service_listen(struct zf_server *srv, const char *name, const char *addr,
                      const char *channel, int *port)
{
    size_t i = find_service(name);
    if (i == nservices) {
        zf_log(ZF_LOG_ERROR, NULL, "no %s service to listen on %s", name, addr);
        return ZF_ERROR;
    }
    return services[i].s->listen(srv, addr, channel, port);
}

void zf__services_activate(struct zf_server *srv)
{
    for (size_t i = 0; i < nservices; i++) {
        const struct zf_module *m = services[i].s->module;
        if (!services[i].needed || !m)
            continue;
        int found = 0;
        for (size_t k = 0; k < srv->nactive; k++)
            found |= srv->active[k] == m;
        if (!found && srv->nactive < ZF_ARRAY_LEN(srv->active))
            srv->active[srv->nactive++] = m;
    }
}
