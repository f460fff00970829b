/* The reactor: one libevent loop shared by every protocol module, the
 * static module registry, listeners, connection ids and graceful shutdown.
 *
 * Everything here runs on the loop thread unless it says otherwise. */
#ifndef ZF_SERVER_H
#define ZF_SERVER_H

#include <event2/event.h>
#include <event2/listener.h>
#include <sys/socket.h>

#include "config.h"
#include "log.h"
#include "zfront.h"

struct evbuffer;

/* A protocol module: a name, its config keys and a few lifecycle hooks.
 * Hooks may be NULL. Modules are compiled in (one meson feature option each)
 * and listed in one static array (modules.c). */
struct zf_module {
    const char *name;
    const struct zf_cfg_key *keys;
    /* After the configuration is read, before the app is loaded: validate
     * the module's settings. Returns ZF_OK, ZF_ERROR (start-up fails), or
     * ZF_DECLINED (module not used in this run: no listener configured). */
    int (*configure)(struct zf_server *srv);
    /* Adds listeners/events to srv->base. Returns ZF_OK or ZF_ERROR. */
    int (*start)(struct zf_server *srv);
    /* Stops accepting. graceful: let in-flight requests finish and close
     * idle connections; otherwise close everything now. */
    void (*stop)(struct zf_server *srv, int graceful);
    /* Number of connections/sessions still open (shutdown waits for 0). */
    size_t (*active)(struct zf_server *srv);
    /* Appends "name: value" lines describing the module's state. */
    void (*stats)(struct zf_server *srv, struct evbuffer *out);
    /* SIGHUP: re-read what can change without dropping connections
     * (certificates, authorized keys). */
    void (*reload)(struct zf_server *srv);
    /* The connection limit (server.max_connections) is reached and a new
     * connection waits: close at most n connections that lose nothing
     * (idle keep-alive, still sending a request header section), least
     * recently active first, releasing their descriptors now (each through
     * zf_conn_closed). Returns how many were closed. */
    size_t (*shed)(struct zf_server *srv, size_t n);
};

extern const struct zf_module *const zf_modules[];
extern const size_t zf_nmodules;

enum zf_server_state { ZF_RUNNING = 0, ZF_STOPPING = 1, ZF_STOPPED = 2 };

struct zf_server {
    struct event_base *base;
    enum zf_server_state state;
    uint64_t next_conn_id;
    /* modules whose configure() returned ZF_OK, i.e. in use this run */
    const struct zf_module *active[16];
    size_t nactive;
};

extern struct zf_server *zf_srv;

/* ---- connection admission (server.max_connections) ----
 * Counts the client connections of every protocol that serves requests.
 * The module that owns a connection calls zf_conn_opened() once when it
 * takes it and zf_conn_closed() once when its socket is closed; a
 * connection handed from one module to another is counted by one owner at a
 * time. A listener with `admit` set takes a new connection only below the
 * limit, after asking the modules to shed one (struct zf_module.shed);
 * when none can be shed, the connection is closed at once and accepting
 * pauses until a slot frees. Loop thread only. */
void zf_conn_opened(void);
void zf_conn_closed(void);
/* Connections counted now, and the limit in force. */
size_t zf_conn_open_count(void);
size_t zf_conn_limit(void);

/* Gives a connection its id and peer strings. Returns the id. */
uint64_t zf_conn_init(struct zf_conn *c, const char *proto, const struct sockaddr *sa,
                      socklen_t salen);

/* A listening socket. The accept callback owns fd (non-blocking, CLOEXEC). */
struct zf_listener;
typedef void (*zf_accept_cb)(struct zf_listener *l, evutil_socket_t fd, struct sockaddr *sa,
                             int salen, void *arg);
struct zf_listener {
    struct evconnlistener *el;
    char addr[80];     /* as bound, "127.0.0.1:8080" / "[::1]:8080" */
    char host[64];     /* numeric host of the bound address */
    int port;          /* bound port (resolved when 0 was asked) */
    const char *proto; /* for log lines */
    zf_accept_cb cb;
    void *arg;
    struct event *retry;  /* re-enables accepting after EMFILE */
    int admit;            /* counted against server.max_connections (set by the module) */
    int paused;           /* accepting paused by the connection limit */
    /* server.c's list of every listener */
    struct zf_listener *next;
};

/* Parses "host:port", "[v6]:port", ":port" or "port" into a socket
 * address. Returns ZF_OK or ZF_ERROR. */
int zf_parse_addr(const char *text, struct sockaddr_storage *ss, socklen_t *len);

/* Binds and listens on addr (backlog 511, SO_REUSEADDR) and logs
 * "<proto>: listening on ADDR". Returns the listener (owned by the caller,
 * freed with zf_listener_free) or NULL with an error logged. */
struct zf_listener *zf_listen(struct zf_server *srv, const char *addr, const char *proto,
                              zf_accept_cb cb, void *arg);
void zf_listener_free(struct zf_listener *l);
/* Socket activation: zf_listen first asks zf_systemd_take_listener
 * (systemd.h) for a socket systemd passed bound to that very address, and
 * uses it instead of binding (logged "... (socket from systemd: fd N,
 * NAME)"), so every module's listeners can be socket-activated. */

/* Writes "http 127.0.0.1:8080, ssh 127.0.0.1:8022" (every open listener,
 * in the order opened) into buf, truncated to size. Returns its length. */
size_t zf__listeners_describe(char *buf, size_t size);

/* Asks the server to stop (from a signal or a module). graceful=1 waits for
 * in-flight work up to server.shutdown_timeout; half-way through, requests
 * still queued for a worker are answered 503 (zf_pool_cancel_queued).
 * graceful=0 (also during or after a graceful stop: a second signal) closes
 * everything now and tells main not to wait for the workers. */
void zf_server_shutdown(int graceful);
/* The zf_now_ms time by which the process must be gone: the start of a
 * graceful stop plus server.shutdown_timeout, or the moment of an
 * immediate stop; 0 before any stop. main.c waits for the workers up to it
 * and no longer. */
uint64_t zf_server_stop_deadline(void);
/* Called by modules when a connection closed during a graceful stop, so the
 * server can notice that everything is done. */
void zf_server_check_idle(void);

/* Loop-thread wake-up from worker threads: see exchange.h (zf_exchange
 * posting) and these generic notifications used by other subsystems. */
typedef void (*zf_loop_fn)(void *arg);
/* Runs fn(arg) on the loop thread soon. Safe from any thread. Returns ZF_OK
 * or ZF_ERROR (out of memory). */
int zf_loop_call(zf_loop_fn fn, void *arg);

/* Services: a module that can serve a protocol on an address registers it
 * under a name ("http"), so another module can open a listener of that
 * protocol for requests of its own channel without knowing the module
 * (the WebDAV source port is HTTP with zfront.channel "webdav-source").
 * The provider owns the listeners it opens and closes them in its own
 * stop(). */
struct zf_service {
    const char *name;
    const struct zf_module *module; /* the provider: kept active when needed */
    /* Loop thread, from a module's start(): opens a listener on addr whose
     * requests carry `channel` (static string). *port gets the bound port.
     * Returns ZF_OK or ZF_ERROR (logged). NULL for a module that only
     * serves on such listeners once they exist (h2c on plain HTTP
     * endpoints): it registers under the same name to be kept active too. */
    int (*listen)(struct zf_server *srv, const char *addr, const char *channel, int *port);
};
/* From the provider's configure() (called even when it declines: it may
 * serve another module's listeners only). Kept by pointer. */
void zf_service_register(const struct zf_service *s);
/* From a user module's configure(): it will ask for listeners of `name` in
 * its start(), so the provider must run even if it has no listener of its
 * own. Returns ZF_OK, or ZF_ERROR when no module provides `name` (logged). */
int zf_service_need(const char *name, const char *who);
/* From a module's start(): opens a listener of service `name`. Returns
 * ZF_OK or ZF_ERROR (logged). */
int zf_service_listen(struct zf_server *srv, const char *name, const char *addr,
                      const char *channel, int *port);
/* main.c, after every module's configure(): adds the providers of needed
 * services to srv->active. */
void zf__services_activate(struct zf_server *srv);

/* Protocol upgrades of an HTTP/1.1 connection (RFC 9110 7.8), keyed by the
 * Upgrade token ("websocket"). A module registers its handler when it
 * configures; HTTP/1.1 looks the token up for a complete request carrying
 * "Connection: upgrade", so a protocol module never knows another one. */
struct bufferevent;
struct evbuffer;

/* A byte pipe that is not a socket: an HTTP/2 stream carrying another
 * protocol (RFC 8441). The transport owns the pipe and both buffers. */
struct zf_pipe;
struct zf_pipe_ops {
    /* The protocol added bytes to `out`. Never sends from inside this call. */
    void (*wrote)(struct zf_pipe *p);
    /* The protocol is done: the transport sends what `out` holds, ends the
     * stream and frees the pipe later; it calls no protocol callback after. */
    void (*close)(struct zf_pipe *p);
};
struct zf_pipe {
    struct evbuffer *in;  /* from the peer: the protocol drains it */
    struct evbuffer *out; /* to the peer: the transport drains it */
    const struct zf_pipe_ops *ops;
    /* the protocol side, set by start_pipe. on_read and on_drain are
     * called from the loop, never inside the transport's library callbacks;
     * on_closed may be: the protocol only forgets the pipe there (and
     * defers the rest) */
    void (*on_read)(struct zf_pipe *p);   /* `in` has new bytes */
    void (*on_drain)(struct zf_pipe *p);  /* `out` was taken from */
    void (*on_closed)(struct zf_pipe *p); /* the stream is gone: forget the pipe */
    void *proto;
    /* one header field (lowercase name) the protocol wants in the 2xx that
     * opens the pipe (the chosen subprotocol), or NULL; set by start_pipe */
    const char *reply_name, *reply_value;
};

struct zf_upgrade {
    const char *token; /* case-insensitive Upgrade token */
    /* Loop thread, the request complete and not dispatched. Returns
     * ZF_DECLINED (not for this handler: serve it as a normal request),
     * ZF_OK (a valid handshake the app must authorise: it is dispatched as
     * usual, the handler may have set ex->channel), ZF_AGAIN (valid, switch
     * without asking the app), or an HTTP status >= 400 for a bad handshake
     * with *why set to a static text. */
    int (*check)(struct zf_exchange *ex, const char **why);
    /* Loop thread: takes the connection over, after the app answered 2xx
     * (ex then holds its response headers) or at once after ZF_AGAIN. bev:
     * ownership passes (callbacks replaced; its input holds what the client
     * sent after the request), and so does the socket's count against
     * server.max_connections: whoever frees bev then calls zf_conn_closed().
     * conn is copied. ex is borrowed for this call only. Returns ZF_OK, or
     * ZF_ERROR (bev freed, count released). */
    int (*start)(struct bufferevent *bev, const struct zf_conn *conn, struct zf_exchange *ex);
    /* The same over an HTTP/2 stream (RFC 8441 extended CONNECT with
     * :protocol = token), or NULL when the protocol only runs on HTTP/1.1.
     * check() then sees method "CONNECT". Takes the pipe over (sets its
     * protocol side). Returns ZF_OK, or ZF_ERROR (the caller resets the
     * stream). */
    int (*start_pipe)(struct zf_pipe *p, const struct zf_conn *conn, struct zf_exchange *ex);
};
/* Registers u (kept by pointer). Returns ZF_OK or ZF_ERROR (table full). */
int zf_upgrade_register(const struct zf_upgrade *u);
/* The handler for a token (len bytes, case-insensitive), or NULL. */
const struct zf_upgrade *zf_upgrade_find(const char *token, size_t len);
/* True when a registered handler also runs over HTTP/2 (start_pipe): HTTP/2
 * then announces SETTINGS_ENABLE_CONNECT_PROTOCOL. */
int zf_upgrade_pipes(void);

/* main.c only: set up and tear down the reactor's own loop events. */
int zf__server_init_loop(struct zf_server *srv);
void zf__server_free_loop(void);

#endif
