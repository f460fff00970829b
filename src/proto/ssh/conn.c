/* One SSH connection on the shared loop.
 *
 * The socket comes from the core's listener and is handed to libssh with
 * ssh_bind_accept_fd. The session is non-blocking: on each readiness the
 * key exchange is advanced (ssh_handle_key_exchange until SSH_OK), then
 * the session is put in its own ssh_event and ssh_event_dopoll(ev, 0) runs
 * the protocol and fires our callbacks (auth, channel open, channel
 * requests, data). EV_WRITE is watched only while libssh has output
 * pending. Nothing is freed inside a libssh callback: callbacks set flags
 * and drive() acts on them after dopoll returns.
 *
 * Phases (conn->c.action): "key exchange" -> "authenticating" -> "console".
 * One timer closes a connection that has not finished the key exchange
 * within ssh.kex_timeout, or not authenticated within ssh.login_timeout;
 * no channel is opened before authentication succeeded.
 *
 * Pre-authentication admission, as OpenSSH's MaxStartups and
 * PerSourceMaxStartups: a new connection is closed at accept when its
 * source already has per_source_max_startups connections not logged in,
 * or, with random early drop, when many are not logged in overall. So a
 * few hostile addresses cannot take every slot and lock the admin out. */
#include <arpa/inet.h>
#include <ctype.h>
#include <event2/event.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ssh.h"

#define MAX_CHANNELS 4

struct zf_ssh_conn {
    struct zf_conn c; /* first: logging */
    ssh_session session;
    ssh_event sev; /* after key exchange */
    struct event *rev, *wev, *timer;
    evutil_socket_t evfd; /* our dup of the socket: libssh may close its own fd */
    int kex_done;
    int authenticated;
    uint64_t login_deadline;  /* zf_now_ms() value: authenticate by then */
    unsigned char source[17]; /* family, then IPv4 address or IPv6 /64 */
    int auth_fails;
    int in_poll;     /* inside libssh: do not free */
    int closing;     /* free at the next chance */
    int writing;     /* wev is added */
    const char *why; /* static: the disconnect reason when closing */
    char user[64];
    struct ssh_server_callbacks_struct scb; /* libssh keeps it by pointer */
    struct zf_ssh_channel *channels;
    int nchannels;
    struct zf_ssh_conn *prev, *next;
};

static struct zf_ssh_conn *conns;
static size_t nconns, nunauth;

size_t zf__ssh_conn_count(void)
{
    return nconns;
}

size_t zf__ssh_conn_unauthenticated(void)
{
    return nunauth;
}

/* Copies a client-supplied string for a log line: printable ASCII only. */
static void clean_copy(char *dst, size_t n, const char *src)
{
    size_t i = 0;
    for (; src && src[i] && i + 1 < n; i++)
        dst[i] = isprint((unsigned char)src[i]) && src[i] != '"' ? src[i] : '?';
    dst[i] = '\0';
}

static void drive(struct zf_ssh_conn *conn);

/* Frees a connection now: consoles are told, libssh sends a disconnect
 * (best effort, non-blocking) and closes the socket. Never called from
 * inside a libssh callback. */
static void conn_free(struct zf_ssh_conn *conn, const char *reason)
{
    if (conn->prev)
        conn->prev->next = conn->next;
    else
        conns = conn->next;
    if (conn->next)
        conn->next->prev = conn->prev;
    nconns--;
    if (!conn->authenticated)
        nunauth--;
    for (struct zf_ssh_channel *ch = conn->channels; ch; ch = ch->next) {
        if (ch->console)
            zf__ssh_console_detach(ch->console, reason);
        ch->console = NULL;
    }
    event_free(conn->rev);
    event_free(conn->wev);
    event_free(conn->timer);
    evutil_closesocket(conn->evfd);
    if (conn->sev) {
        ssh_event_remove_session(conn->sev, conn->session);
        ssh_event_free(conn->sev);
    }
    if (conn->why)
        reason = conn->why;
    if (ssh_is_connected(conn->session)) {
        if (reason)
            ssh_session_set_disconnect_message(conn->session, reason);
        ssh_disconnect(conn->session);
    }
    ssh_free(conn->session); /* frees the channels, closes the socket */
    struct zf_ssh_channel *ch = conn->channels;
    while (ch) {
        struct zf_ssh_channel *next = ch->next;
        free(ch);
        ch = next;
    }
    zf_log(ZF_LOG_DEBUG, &conn->c, "ssh: connection closed (%s)", reason ? reason : "done");
    free(conn);
    zf_server_check_idle();
}

void zf__ssh_conn_close_all(const char *reason)
{
    while (conns)
        conn_free(conns, reason);
}

void zf__ssh_conn_update_io(struct zf_ssh_conn *conn)
{
    int want = (ssh_get_poll_flags(conn->session) & SSH_WRITE_PENDING) != 0;
    if (want && !conn->writing)
        event_add(conn->wev, NULL);
    else if (!want && conn->writing)
        event_del(conn->wev);
    conn->writing = want;
}

/* Asks drive() to close the connection soon (safe inside callbacks). */
static void conn_close_soon(struct zf_ssh_conn *conn, const char *why)
{
    conn->closing = 1;
    conn->why = why;
    if (!conn->in_poll)
        event_active(conn->rev, EV_READ, 0);
}

/* ---- authentication ---- */

static void auth_failed(struct zf_ssh_conn *conn, const char *user, const char *method, ssh_key key)
{
    char u[64];
    char *fp = key ? zf__ssh_fingerprint(key) : NULL;
    clean_copy(u, sizeof u, user);
    conn->auth_fails++;
    zf_log(ZF_LOG_WARN, &conn->c,
           "ssh: authentication failed for user \"%s\" from %s: %s%s%s%s%s (attempt %d of %ld)", u,
           conn->c.peer_addr, method, key ? " " : "",
           key ? ssh_key_type_to_char(ssh_key_type(key)) : "", fp ? " " : "", fp ? fp : "",
           conn->auth_fails, zf_ssh_cfg.max_auth_tries);
    free(fp);
    if (conn->auth_fails >= zf_ssh_cfg.max_auth_tries) {
        zf_log(ZF_LOG_WARN, &conn->c,
               "ssh: too many authentication failures from %s, disconnecting", conn->c.peer_addr);
        conn_close_soon(conn, "too many authentication failures");
    }
}

static void auth_succeeded(struct zf_ssh_conn *conn, const char *user, const char *method,
                           ssh_key key)
{
    char *fp = key ? zf__ssh_fingerprint(key) : NULL;
    clean_copy(conn->user, sizeof conn->user, user);
    conn->authenticated = 1;
    nunauth--;
    evtimer_del(conn->timer);
    conn->c.action = "console";
    zf_log(ZF_LOG_INFO, &conn->c, "ssh: user \"%s\" logged in from %s with %s%s%s", conn->user,
           conn->c.peer_addr, method, fp ? " " : "", fp ? fp : "");
    free(fp);
}

/* libssh calls this twice for a key that is accepted: first with state
 * NONE (the client asks whether the key would do; we answer without a
 * signature), then with state VALID once the signature was checked: only
 * that second call logs the user in. */
static int on_auth_pubkey(ssh_session s, const char *user, struct ssh_key_struct *key, char state,
                          void *ud)
{
    struct zf_ssh_conn *conn = ud;
    if (conn->closing || conn->authenticated)
        return SSH_AUTH_DENIED;
    if (state != SSH_PUBLICKEY_STATE_NONE && state != SSH_PUBLICKEY_STATE_VALID) {
        auth_failed(conn, user, "publickey with a bad signature", key);
        return SSH_AUTH_DENIED;
    }
    zf__ssh_authkeys_refresh(&zf__ssh_authkeys);
    if (!zf__ssh_authkeys_match(zf__ssh_authkeys, key)) {
        auth_failed(conn, user, "publickey not in authorized_keys", key);
        return SSH_AUTH_DENIED;
    }
    if (state == SSH_PUBLICKEY_STATE_VALID)
        auth_succeeded(conn, user, "publickey", key);
    return SSH_AUTH_SUCCESS;
}

/* Password login, only when ssh.password_hash is set. The crypt(3) check
 * runs on the loop thread: a few milliseconds, at most max_auth_tries per
 * connection and max_startups connections at once. */
static int on_auth_password(ssh_session s, const char *user, const char *password, void *ud)
{
    struct zf_ssh_conn *conn = ud;
    if (conn->closing || conn->authenticated)
        return SSH_AUTH_DENIED;
    const char *hash = zf_ssh_cfg.password_hash;
    if (!hash || !*hash || !zf__ssh_password_ok(hash, password)) {
        auth_failed(conn, user, "password", NULL);
        return SSH_AUTH_DENIED;
    }
    auth_succeeded(conn, user, "password", NULL);
    return SSH_AUTH_SUCCESS;
}

static void login_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct zf_ssh_conn *conn = arg;
    if (!conn->kex_done && zf_ssh_cfg.kex_timeout_ms < zf_ssh_cfg.login_timeout_ms) {
        zf_log(ZF_LOG_INFO, &conn->c,
               "ssh: no key exchange from %s within %llu ms (ssh.kex_timeout), closing",
               conn->c.peer_addr, (unsigned long long)zf_ssh_cfg.kex_timeout_ms);
        conn_free(conn, "key exchange timeout");
        return;
    }
    zf_log(ZF_LOG_WARN, &conn->c, "ssh: login timeout for %s, closing (while %s)",
           conn->c.peer_addr, conn->c.action);
    conn_free(conn, "login timeout");
}

static void arm_timer(struct zf_ssh_conn *conn, uint64_t ms)
{
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
    evtimer_add(conn->timer, &tv);
}

/* ---- channels ---- */

static int on_data(ssh_session s, ssh_channel chan, void *data, uint32_t len, int is_stderr,
                   void *ud)
{
    struct zf_ssh_channel *ch = ud;
    if (!ch->console || ch->dead)
        return 0; /* kept by libssh until a console exists to take it */
    size_t n = zf__ssh_console_input(ch->console, data, len);
    if (n < len && !ch->held_back) {
        ch->held_back = 1;
        zf_log(ZF_LOG_DEBUG, &ch->conn->c, "ssh: console input queue full, holding back");
    }
    return (int)n;
}

static void on_eof(ssh_session s, ssh_channel chan, void *ud)
{
    struct zf_ssh_channel *ch = ud;
    ch->remote_eof = 1;
    if (ch->console && !ch->held_back)
        zf__ssh_console_eof(ch->console);
}

static void on_close(ssh_session s, ssh_channel chan, void *ud)
{
    struct zf_ssh_channel *ch = ud;
    ch->dead = 1;
    if (ch->console) {
        zf__ssh_console_detach(ch->console, "client closed the channel");
        ch->console = NULL;
    }
}

static void on_signal(ssh_session s, ssh_channel chan, const char *sig, void *ud)
{
    struct zf_ssh_channel *ch = ud;
    if (ch->console && sig && strcmp(sig, "INT") == 0)
        zf__ssh_console_interrupt(ch->console);
}

static int on_pty(ssh_session s, ssh_channel chan, const char *term, int w, int h, int pw, int ph,
                  void *ud)
{
    struct zf_ssh_channel *ch = ud;
    if (ch->console)
        return -1;
    ch->pty = 1;
    clean_copy(ch->term, sizeof ch->term, term);
    ch->cols = w > 0 && w < 10000 ? w : 80;
    ch->rows = h > 0 && h < 10000 ? h : 24;
    return 0;
}

static int on_window_change(ssh_session s, ssh_channel chan, int w, int h, int pw, int ph, void *ud)
{
    struct zf_ssh_channel *ch = ud;
    ch->cols = w > 0 && w < 10000 ? w : ch->cols;
    ch->rows = h > 0 && h < 10000 ? h : ch->rows;
    if (ch->console)
        zf__ssh_console_resize(ch->console, ch->cols, ch->rows);
    return 0;
}

/* Starts the console for a shell or exec request. Returns 0 (accepted) or
 * 1 (denied: libssh answers failure). */
static int start_console(struct zf_ssh_channel *ch, enum zf_ssh_mode mode, const char *command)
{
    struct zf_ssh_conn *conn = ch->conn;
    if (!conn->authenticated || ch->console || ch->dead || conn->closing)
        return 1;
    if (zf__ssh_console_start(ch, mode, command, conn->user) != ZF_OK)
        return 1;
    zf_log(ZF_LOG_INFO, &conn->c, "ssh: %s for user \"%s\"",
           mode == ZF_SSH_EXEC        ? "exec"
           : mode == ZF_SSH_SHELL_PTY ? "console session"
                                      : "script session",
           conn->user);
    zf__ssh_channel_pull(ch); /* input that arrived before the request */
    return 0;
}

static int on_shell(ssh_session s, ssh_channel chan, void *ud)
{
    struct zf_ssh_channel *ch = ud;
    return start_console(ch, ch->pty ? ZF_SSH_SHELL_PTY : ZF_SSH_SHELL_SCRIPT, NULL);
}

static int on_exec(ssh_session s, ssh_channel chan, const char *command, void *ud)
{
    struct zf_ssh_channel *ch = ud;
    return start_console(ch, ZF_SSH_EXEC, command ? command : "");
}

static int on_env(ssh_session s, ssh_channel chan, const char *name, const char *value, void *ud)
{
    return 1; /* refused: the console has no environment to set */
}

static int on_subsystem(ssh_session s, ssh_channel chan, const char *name, void *ud)
{
    struct zf_ssh_channel *ch = ud;
    char n[32];
    clean_copy(n, sizeof n, name);
    zf_log(ZF_LOG_INFO, &ch->conn->c, "ssh: subsystem \"%s\" refused", n);
    return 1;
}

static int on_wontblock(ssh_session s, ssh_channel chan, uint32_t bytes, void *ud)
{
    struct zf_ssh_channel *ch = ud;
    if (ch->console)
        zf__ssh_console_flush(ch->console);
    return 0;
}

static ssh_channel on_channel_open(ssh_session s, void *ud)
{
    struct zf_ssh_conn *conn = ud;
    if (!conn->authenticated || conn->closing) {
        zf_log(ZF_LOG_WARN, &conn->c, "ssh: channel open before authentication refused");
        return NULL;
    }
    if (conn->nchannels >= MAX_CHANNELS) {
        zf_log(ZF_LOG_WARN, &conn->c, "ssh: more than %d channels on one connection refused",
               MAX_CHANNELS);
        return NULL;
    }
    struct zf_ssh_channel *ch = calloc(1, sizeof *ch);
    if (!ch)
        return NULL;
    ch->chan = ssh_channel_new(s);
    if (!ch->chan) {
        free(ch);
        return NULL;
    }
    ch->conn = conn;
    ch->cols = 80;
    ch->rows = 24;
    ch->cb.userdata = ch;
    ch->cb.channel_data_function = on_data;
    ch->cb.channel_eof_function = on_eof;
    ch->cb.channel_close_function = on_close;
    ch->cb.channel_signal_function = on_signal;
    ch->cb.channel_pty_request_function = on_pty;
    ch->cb.channel_shell_request_function = on_shell;
    ch->cb.channel_pty_window_change_function = on_window_change;
    ch->cb.channel_exec_request_function = on_exec;
    ch->cb.channel_env_request_function = on_env;
    ch->cb.channel_subsystem_request_function = on_subsystem;
    ch->cb.channel_write_wontblock_function = on_wontblock;
    ssh_callbacks_init(&ch->cb);
    ssh_set_channel_callbacks(ch->chan, &ch->cb);
    ch->next = conn->channels;
    conn->channels = ch;
    conn->nchannels++;
    return ch->chan;
}

void zf__ssh_channel_pull(struct zf_ssh_channel *ch)
{
    char buf[16384];
    if (!ch->console || ch->dead)
        return;
    for (int i = 0; i < 64 && ch->console && !ch->dead; i++) {
        size_t room = zf__ssh_console_room(ch->console);
        if (room == 0)
            break; /* still full: the console asks again when it drained */
        int n = ssh_channel_read_nonblocking(ch->chan, buf,
                                             (uint32_t)(room < sizeof buf ? room : sizeof buf), 0);
        if (n <= 0) {
            ch->held_back = 0;
            break;
        }
        zf__ssh_console_input(ch->console, buf, (size_t)n);
    }
    if (ch->remote_eof && !ch->held_back && ch->console)
        zf__ssh_console_eof(ch->console);
    zf__ssh_conn_update_io(ch->conn);
}

void zf__ssh_channel_finished(struct zf_ssh_channel *ch)
{
    ch->closed = 1;
    zf__ssh_conn_update_io(ch->conn);
}

/* Frees channels whose close was seen (after dopoll returned). */
static void reap_channels(struct zf_ssh_conn *conn)
{
    struct zf_ssh_channel **pp = &conn->channels;
    while (*pp) {
        struct zf_ssh_channel *ch = *pp;
        if (!ch->dead) {
            if (ch->console)
                zf__ssh_console_flush(ch->console);
            pp = &ch->next;
            continue;
        }
        *pp = ch->next;
        conn->nchannels--;
        if (ch->console)
            zf__ssh_console_detach(ch->console, "channel closed");
        ssh_remove_channel_callbacks(ch->chan, &ch->cb);
        ssh_channel_free(ch->chan);
        free(ch);
    }
}

/* Advances the connection after readiness: key exchange first, then the
 * event poll. Frees the connection when it ended. */
static void drive(struct zf_ssh_conn *conn)
{
    if (!conn->closing && !conn->kex_done) {
        conn->in_poll = 1;
        int rc = ssh_handle_key_exchange(conn->session);
        conn->in_poll = 0;
        if (rc == SSH_OK) {
            conn->kex_done = 1;
            conn->c.action = "authenticating";
            uint64_t now = zf_now_ms();
            arm_timer(conn, conn->login_deadline > now ? conn->login_deadline - now : 0);
            conn->sev = ssh_event_new();
            if (!conn->sev || ssh_event_add_session(conn->sev, conn->session) != SSH_OK) {
                zf_log(ZF_LOG_ERROR, &conn->c, "ssh: out of memory");
                conn->closing = 1;
            }
        } else if (rc != SSH_AGAIN) {
            zf_log(ZF_LOG_INFO, &conn->c, "ssh: key exchange with %s failed: %s", conn->c.peer_addr,
                   ssh_get_error(conn->session));
            conn->closing = 1;
        }
    }
    if (!conn->closing && conn->kex_done) {
        conn->in_poll = 1;
        int rc = ssh_event_dopoll(conn->sev, 0);
        conn->in_poll = 0;
        if (rc == SSH_ERROR || (ssh_get_status(conn->session) & (SSH_CLOSED | SSH_CLOSED_ERROR)))
            conn->closing = 1;
    }
    if (!conn->closing)
        reap_channels(conn);
    if (conn->closing) {
        conn_free(conn, conn->authenticated ? "connection closed" : "not logged in");
        return;
    }
    zf__ssh_conn_update_io(conn);
}

static void on_io(evutil_socket_t fd, short what, void *arg)
{
    drive(arg);
}

/* The source a connection is counted under: the IPv4 address (also when
 * IPv4-mapped), or the IPv6 /64. */
static void source_of(const struct sockaddr *sa, unsigned char out[17])
{
    memset(out, 0, 17);
    if (sa->sa_family == AF_INET) {
        out[0] = 4;
        memcpy(out + 1, &((const struct sockaddr_in *)sa)->sin_addr, 4);
    } else if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        if (IN6_IS_ADDR_V4MAPPED(a)) {
            out[0] = 4;
            memcpy(out + 1, a->s6_addr + 12, 4);
        } else {
            out[0] = 6;
            memcpy(out + 1, a->s6_addr, 8);
        }
    }
}

/* Connections not logged in from this source. */
static long unauth_from(const unsigned char source[17])
{
    long n = 0;
    for (struct zf_ssh_conn *c = conns; c; c = c->next)
        n += !c->authenticated && memcmp(c->source, source, 17) == 0;
    return n;
}

/* OpenSSH's random early drop: never below startups_begin connections not
 * logged in, always at startups_full, in between with a probability rising
 * linearly from startups_rate %. */
static int early_drop(void)
{
    long n = (long)nunauth, begin = zf_ssh_cfg.startups_begin, full = zf_ssh_cfg.startups_full;
    if (n >= full)
        return 1;
    if (n < begin)
        return 0;
    long p =
        (100 - zf_ssh_cfg.startups_rate) * (n - begin) / (full - begin) + zf_ssh_cfg.startups_rate;
    return (long)arc4random_uniform(100) < p;
}

/* Logs refusals at most every 10 s (an attacker must not flood the log),
 * with how many were refused since the last line. */
static void log_refused(const struct sockaddr *sa, socklen_t salen, const char *why)
{
    static uint64_t last;
    static unsigned long since;
    uint64_t now = zf_now_ms();
    since++;
    if (last && now - last < 10000)
        return;
    struct zf_conn tmp;
    zf_conn_init(&tmp, "ssh", sa, salen);
    zf_log(ZF_LOG_WARN, &tmp,
           "ssh: closing a new connection from %s: %s (%lu refused since the "
           "last such line; %zu connections not logged in)",
           tmp.peer_addr, why, since, nunauth);
    last = now;
    since = 0;
}

void zf__ssh_conn_accept(ssh_bind bind, evutil_socket_t fd, const struct sockaddr *sa,
                         socklen_t salen)
{
    unsigned char source[17];
    source_of(sa, source);
    const char *refuse = NULL;
    if (zf_ssh_cfg.per_source_startups > 0 && unauth_from(source) >= zf_ssh_cfg.per_source_startups)
        refuse = "too many connections not logged in from this source "
                 "(ssh.per_source_max_startups)";
    else if (early_drop())
        refuse = "too many connections not logged in (ssh.max_startups)";
    if (refuse) {
        log_refused(sa, salen, refuse);
        evutil_closesocket(fd);
        return;
    }
    struct zf_ssh_conn *conn = calloc(1, sizeof *conn);
    if (!conn) {
        evutil_closesocket(fd);
        return;
    }
    zf_conn_init(&conn->c, "ssh", sa, salen);
    memcpy(conn->source, source, sizeof source);
    conn->c.action = "key exchange";
    conn->session = ssh_new();
    if (!conn->session) {
        free(conn);
        evutil_closesocket(fd);
        return;
    }
    if (ssh_bind_accept_fd(bind, conn->session, fd) != SSH_OK) {
        zf_log(ZF_LOG_ERROR, &conn->c, "ssh: cannot start a session: %s", ssh_get_error(bind));
        int owned = ssh_get_fd(conn->session) == fd;
        ssh_free(conn->session);
        if (!owned)
            evutil_closesocket(fd);
        free(conn);
        return;
    }
    ssh_set_blocking(conn->session, 0);
    conn->scb.userdata = conn;
    conn->scb.auth_pubkey_function = on_auth_pubkey;
    conn->scb.auth_password_function = on_auth_password;
    conn->scb.channel_open_request_session_function = on_channel_open;
    ssh_callbacks_init(&conn->scb);
    ssh_set_server_callbacks(conn->session, &conn->scb);
    int methods = 0;
    if (zf__ssh_authkeys)
        methods |= SSH_AUTH_METHOD_PUBLICKEY;
    if (zf_ssh_cfg.password_hash && *zf_ssh_cfg.password_hash)
        methods |= SSH_AUTH_METHOD_PASSWORD;
    ssh_set_auth_methods(conn->session, methods);

    /* libevent watches a dup of the socket: libssh closes its fd by itself
     * when the peer goes away, and an event on a closed (maybe reused) fd
     * number would be wrong. */
    conn->evfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    conn->rev = event_new(zf_srv->base, conn->evfd, EV_READ | EV_PERSIST, on_io, conn);
    conn->wev = event_new(zf_srv->base, conn->evfd, EV_WRITE | EV_PERSIST, on_io, conn);
    conn->timer = evtimer_new(zf_srv->base, login_timeout, conn);
    if (conn->evfd < 0 || !conn->rev || !conn->wev || !conn->timer) {
        zf_log(ZF_LOG_ERROR, &conn->c, "ssh: out of memory or file descriptors");
        if (conn->evfd >= 0)
            evutil_closesocket(conn->evfd);
        if (conn->rev)
            event_free(conn->rev);
        if (conn->wev)
            event_free(conn->wev);
        if (conn->timer)
            event_free(conn->timer);
        ssh_free(conn->session);
        free(conn);
        return;
    }
    conn->login_deadline = zf_now_ms() + zf_ssh_cfg.login_timeout_ms;
    event_add(conn->rev, NULL);
    arm_timer(conn, zf_ssh_cfg.kex_timeout_ms < zf_ssh_cfg.login_timeout_ms
                        ? zf_ssh_cfg.kex_timeout_ms
                        : zf_ssh_cfg.login_timeout_ms);
    conn->next = conns;
    if (conns)
        conns->prev = conn;
    conns = conn;
    nconns++;
    nunauth++;
    zf_log(ZF_LOG_DEBUG, &conn->c, "ssh: connection from %s", conn->c.peer);
    drive(conn); /* sends our banner */
}
