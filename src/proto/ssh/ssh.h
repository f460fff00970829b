/* The SSH module: an admin's Python console inside the running instance,
 * served by libssh in server mode on the shared libevent loop.
 *
 * Files:
 *   module.c   config keys, configure/start/stop, the listener
 *   keys.c     host key (generate, persist 0600, permission checks),
 *              authorized_keys parsing, password hash check
 *   conn.c     one SSH connection: non-blocking key exchange, auth
 *              callbacks, login timer, channels and their requests
 *   console.c  console sessions: the thread that runs Python for one
 *              channel, the byte queues between it and the loop, the
 *              Python object the console code reads and writes through,
 *              and the interrupter thread (Ctrl-C -> KeyboardInterrupt)
 *
 * Threads: every libssh call is made on the loop thread. A console thread
 * holds the GIL while it runs Python and never calls libssh; it talks to
 * the loop through a locked queue (input) and zf_loop_call (output). */
#ifndef ZF_SSH_H
#define ZF_SSH_H

#include <libssh/callbacks.h>
#include <libssh/libssh.h>
#include <libssh/server.h>
#include <pthread.h>

#include "../../core/config.h"
#include "../../core/log.h"
#include "../../core/server.h"

extern const struct zf_module zf_ssh_module;

/* The [ssh] section. */
struct zf_ssh_config {
    char *listen;          /* "127.0.0.1:8022"; empty: module not used */
    char *authorized_keys; /* path; keys allowed to log in */
    char *host_key;        /* path; default <state_dir>/ssh_host_ed25519_key */
    char *password_hash;   /* crypt(3) hash; empty: password auth off */
    char *namespace_hook;  /* "module:function" building a session's namespace */
    uint64_t login_timeout_ms;
    uint64_t kex_timeout_ms;          /* client banner + key exchange deadline */
    uint64_t console_stop_timeout_ms; /* hard stop: wait for consoles to leave Python */
    long max_auth_tries;
    long max_sessions;        /* console sessions at once (all connections) */
    char *max_startups;       /* "start:rate:full" or "N" (OpenSSH MaxStartups) */
    long per_source_startups; /* unauthenticated connections per source; 0: no limit */
    /* max_startups parsed by configure: from `startups_begin` unauthenticated
     * connections on, a new one is dropped with probability `startups_rate`
     * percent, rising linearly to 100 % at `startups_full`. */
    long startups_begin, startups_rate, startups_full;
    char *kex;     /* key exchange algorithms, comma-separated */
    char *ciphers; /* ciphers, both directions */
    char *macs;    /* MACs, both directions */
    char *hostkey_algorithms;
};
extern struct zf_ssh_config zf_ssh_cfg;

/* ---- keys.c ---- */

/* Loads the private key from `path`, or generates an ed25519 key there
 * (0600) when the file does not exist. Refuses (ZF_ERROR, logged) a key file
 * that is readable or writable by group/others or not owned by us. `what`
 * names the key in log lines ("host key", "demo client key"). On ZF_OK
 * *key is a private key owned by the caller. */
int zf__ssh_host_key(const char *path, const char *what, ssh_key *key);

struct zf_ssh_authkeys;
/* Reads an authorized_keys file. Lines with options, unsupported key types
 * or RSA keys under 2048 bits are refused and logged. Returns NULL (logged)
 * when the file cannot be read or is writable by others. */
struct zf_ssh_authkeys *zf__ssh_authkeys_load(const char *path);
void zf__ssh_authkeys_free(struct zf_ssh_authkeys *ak);
/* Re-reads the file when it changed since it was loaded (so keys can be
 * added or removed without a restart). Keeps the old list if reading
 * fails. */
void zf__ssh_authkeys_refresh(struct zf_ssh_authkeys **ak);
/* True when `key` (public part) is listed. */
int zf__ssh_authkeys_match(const struct zf_ssh_authkeys *ak, ssh_key key);
/* Number of usable keys. */
size_t zf__ssh_authkeys_count(const struct zf_ssh_authkeys *ak);

/* Checks `password` against a crypt(3) hash in constant time. Returns 1 on
 * a match, 0 otherwise. */
int zf__ssh_password_ok(const char *hash, const char *password);
/* True when hash is a crypt(3) hash this system can check. */
int zf__ssh_hash_valid(const char *hash);
/* The authorized keys in use (module.c loads them, conn.c refreshes and
 * matches them; loop thread). */
extern struct zf_ssh_authkeys *zf__ssh_authkeys;
/* "SHA256:..." fingerprint of a key, malloc'd (free()), or NULL. */
char *zf__ssh_fingerprint(ssh_key key);

/* ---- conn.c ---- */

/* Takes an accepted socket: makes a libssh session of it and starts the
 * key exchange. Owns fd (closed on failure). */
void zf__ssh_conn_accept(ssh_bind bind, evutil_socket_t fd, const struct sockaddr *sa,
                         socklen_t salen);
/* Closes every connection (stop). */
void zf__ssh_conn_close_all(const char *reason);
size_t zf__ssh_conn_count(void);
size_t zf__ssh_conn_unauthenticated(void);

/* ---- console.c ---- */

enum zf_ssh_mode {
    ZF_SSH_SHELL_PTY,    /* interactive console */
    ZF_SSH_SHELL_SCRIPT, /* shell without pty: stdin is a script */
    ZF_SSH_EXEC,         /* exec request: run the command text */
};

struct zf_ssh_console;

/* What conn.c keeps per session channel. Loop thread only. */
struct zf_ssh_channel {
    struct zf_ssh_conn *conn;
    ssh_channel chan;
    struct ssh_channel_callbacks_struct cb; /* libssh keeps it by pointer */
    struct zf_ssh_console *console;         /* one reference, or NULL */
    int pty;
    char term[32];
    int cols, rows;
    int remote_eof; /* client sent EOF */
    int held_back;  /* unconsumed input left in libssh's buffer */
    int closed;     /* we sent close (or the peer did); freed after dopoll */
    int dead;       /* free after the current dopoll */
    struct zf_ssh_channel *next;
};

/* Starts a console thread for a channel. `command` is the exec text (NULL
 * otherwise). Returns ZF_OK (ch->console set, one reference held by the
 * channel) or ZF_ERROR (logged). */
int zf__ssh_console_start(struct zf_ssh_channel *ch, enum zf_ssh_mode mode, const char *command,
                          const char *user);
/* Loop thread: bytes from the client. Returns how many were taken (less
 * than len when the console's input queue is full: the rest stays in
 * libssh and is pulled later). Handles Ctrl-C while code runs. */
size_t zf__ssh_console_input(struct zf_ssh_console *cs, const char *data, size_t len);
/* Bytes the input queue can still take before it counts as full. */
size_t zf__ssh_console_room(struct zf_ssh_console *cs);
void zf__ssh_console_eof(struct zf_ssh_console *cs);
void zf__ssh_console_resize(struct zf_ssh_console *cs, int cols, int rows);
/* Loop thread: the client asked to interrupt (Ctrl-C or signal INT). */
void zf__ssh_console_interrupt(struct zf_ssh_console *cs);
/* Loop thread: sends queued output as the channel window allows, and ends
 * the channel (exit-status, EOF, close) once the console finished and all
 * output went out. */
void zf__ssh_console_flush(struct zf_ssh_console *cs);
/* Loop thread: the channel is going away. The console is told (its code
 * is interrupted, its reads return EOF, its writes fail) and the channel's
 * reference dropped. */
void zf__ssh_console_detach(struct zf_ssh_console *cs, const char *why);
/* Loop thread: pulls input that libssh kept back because the queue was
 * full. Called by console.c through zf_loop_call. */
void zf__ssh_channel_pull(struct zf_ssh_channel *ch);
/* Loop thread: after a write, the connection may need EV_WRITE. */
void zf__ssh_conn_update_io(struct zf_ssh_conn *conn);
/* Loop thread: a channel finished (we sent close); conn.c frees it. */
void zf__ssh_channel_finished(struct zf_ssh_channel *ch);

/* Console threads alive (shutdown waits for them) and sessions open. */
size_t zf__ssh_console_threads(void);
/* The server stops without waiting for the consoles: from now on they
 * post nothing to the loop (it may be freed), and the interrupter
 * re-interrupts consoles still running every 100 ms instead of 500 ms. */
void zf__ssh_console_hard_stop(void);
int zf__ssh_console_hard_stopped(void);
/* Console threads that have not left Python for good yet. */
size_t zf__ssh_console_in_python(void);
/* Loop thread, after zf__ssh_console_hard_stop and the consoles were
 * detached (interrupted): waits up to timeout_ms until every console
 * thread and the interrupter left Python, so that the interpreter is not
 * finalized under them. Returns ZF_OK, or ZF_AGAIN when some are still in
 * Python (stuck in a C call, or catching every KeyboardInterrupt). */
int zf__ssh_console_join(uint64_t timeout_ms);
/* Starts/stops the interrupter thread. Start returns ZF_OK or ZF_ERROR. */
int zf__ssh_interrupter_start(void);
void zf__ssh_interrupter_stop(void);
/* True until the interrupter thread left (shutdown waits for it). */
int zf__ssh_interrupter_running(void);

#endif
