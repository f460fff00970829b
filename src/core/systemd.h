/* systemd integration: service notifications (sd_notify: READY, STATUS,
 * RELOADING, STOPPING, WATCHDOG) and socket activation (LISTEN_FDS).
 *
 * Built with libsystemd when the meson option `systemd` finds it
 * (ZF_WITH_SYSTEMD); without it every function here does nothing and
 * zf_systemd_take_listener finds nothing. Without NOTIFY_SOCKET in the
 * environment nothing is sent; without LISTEN_FDS/LISTEN_PID nothing is
 * inherited: a server not started by systemd behaves exactly as before.
 *
 * Loop thread (or the main thread before the loop runs), unless it says
 * otherwise. */
#ifndef ZF_SYSTEMD_H
#define ZF_SYSTEMD_H

#include <sys/socket.h>

#include "zfront.h"

struct event_base;

struct zf_systemd_config {
    int watchdog_stuck;          /* stop WATCHDOG=1 while every worker is stuck */
    uint64_t status_interval_ms; /* STATUS= refresh period; 0: only at state changes */
};
extern struct zf_systemd_config zf_systemd_cfg;

/* Registers the systemd.* keys. */
void zf_systemd_config_register(void);

/* main.c, first thing after the command line, before Python starts: takes
 * the sockets systemd passed (LISTEN_FDS, checked against LISTEN_PID, named
 * by LISTEN_FDNAMES) and the watchdog period (WATCHDOG_USEC/WATCHDOG_PID),
 * and removes those variables from the environment, so neither the
 * application's os.environ nor its child processes see them. Problems are
 * logged later (the logs are not open yet), by zf__systemd_start. */
void zf__systemd_init(void);

/* For whoever creates a listening socket for a configured address (zf_listen
 * does it for every listener): an inherited listening stream socket bound
 * to exactly sa (same family, address and port: systemd's ListenStream=8080
 * is "[::]:8080", not "0.0.0.0:8080"). A configured port 0 never matches. Returns the descriptor,
 * now owned by the caller (non-blocking, close-on-exec), with *name set to its FileDescriptorName
 * (static until zf__systemd_free), or -1 when there is none. */
int zf_systemd_take_listener(const struct sockaddr *sa, socklen_t len, const char **name);

/* main.c, after the loop exists and before the modules start: logs what
 * zf__systemd_init found and arms the WATCHDOG=1 and STATUS= timers.
 * Returns ZF_OK or ZF_ERROR (cannot create a timer). */
int zf__systemd_start(struct event_base *base);

/* main.c, once every module started: logs and closes every inherited socket
 * no listener took, then sends READY=1 with a STATUS= line naming the
 * listeners. */
void zf__systemd_ready(void);

/* STATUS=<text> (also logged at debug). */
void zf_systemd_status(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* SIGHUP: RELOADING=1 (with MONOTONIC_USEC, which Type=notify-reload needs)
 * before the reload, READY=1 after it. */
void zf_systemd_reloading(void);
void zf_systemd_reloaded(void);

/* The server begins to stop: STOPPING=1 (zf_server_shutdown). */
void zf_systemd_stopping(void);

/* main.c at exit: frees the timers, closes inherited sockets nobody took. */
void zf__systemd_free(void);

#endif
