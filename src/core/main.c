/* zfront: start-up, the loop, and the shutdown sequence.
 *
 * Order matters: command line → embedded Python (needed to read TOML) →
 * TOML file → command line again (flags override the file) → logs →
 * modules configure → app load → the main thread gives up the GIL → loop,
 * workers, modules start → dispatch. */
#include <errno.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "dump.h"
#include "exchange.h"
#include "hub.h"
#include "log.h"
#include "pool.h"
#include "python.h"
#include "server.h"
#ifdef ZF_WITH_BUS
#include "../bus/bus.h"
#endif

static const char *config_path;

/* Listen addresses `--demo` gives each built module, unless set otherwise. */
static const struct {
    const char *key;
    const char *value;
} demo_defaults[] = {
    {"http.listen", "127.0.0.1:8080"},
    {"http.https", "127.0.0.1:8443"},
    {"ssh.listen", "127.0.0.1:8022"},
    {"log.access", "-"},
    {"server.state_dir", "var/zfront-demo"}, /* relative to the working directory */
};

static void usage(FILE *out)
{
    fprintf(out,
            "usage: zfront [--config FILE] [--app MODULE:CALLABLE | --paste INI | "
            "--zope-conf FILE | --demo] [options]\n\n"
            "zfront %s: a multi-protocol front-end server for Zope and any WSGI app.\n\n"
            "  --config FILE                TOML configuration (flags override it)\n"
            "  --set KEY=VALUE              set any configuration key\n"
            "  --config-reference           print every configuration key (markdown)\n"
            "  --version, --help\n",
            ZF_VERSION);
    zf_config_print_flags();
}

/* Applies the command line to the config. pass 0 only looks for --config,
 * --help and friends. Returns ZF_OK, ZF_ERROR, or ZF_DECLINED (exit 0). */
static int apply_args(int argc, char **argv, int pass)
{
    zf_config_begin_source();
    for (int i = 1; i < argc; i++) {
        char *arg = argv[i];
        char flag[128];
        const char *value = NULL;
        char *eq = strchr(arg, '=');
        if (strncmp(arg, "--", 2) == 0 && eq && (size_t)(eq - arg) < sizeof flag) {
            memcpy(flag, arg, (size_t)(eq - arg));
            flag[eq - arg] = 0;
            value = eq + 1;
        } else {
            snprintf(flag, sizeof flag, "%s", arg);
        }
        if (strcmp(flag, "--help") == 0 || strcmp(flag, "-h") == 0) {
            if (pass == 0)
                usage(stdout);
            return ZF_DECLINED;
        }
        if (strcmp(flag, "--version") == 0) {
            if (pass == 0)
                printf("zfront %s\n", ZF_VERSION);
            return ZF_DECLINED;
        }
        if (strcmp(flag, "--config-reference") == 0) {
            if (pass == 0)
                zf_config_print_reference();
            return ZF_DECLINED;
        }
        int takes_value = 1;
        const struct zf_cfg_key *k = NULL;
        if (strcmp(flag, "--config") != 0 && strcmp(flag, "--set") != 0) {
            k = zf_config_find_flag(flag);
            if (!k) {
                fprintf(stderr, "zfront: unknown option %s (see --help)\n", arg);
                return ZF_ERROR;
            }
            takes_value = k->type != ZF_CFG_BOOL;
        }
        if (!value && takes_value) {
            if (i + 1 >= argc) {
                fprintf(stderr, "zfront: %s needs a value\n", flag);
                return ZF_ERROR;
            }
            value = argv[++i];
        }
        if (strcmp(flag, "--config") == 0) {
            config_path = value;
            continue;
        }
        if (pass == 0)
            continue;
        if (strcmp(flag, "--set") == 0) {
            char key[128];
            const char *e = strchr(value, '=');
            if (!e || (size_t)(e - value) >= sizeof key) {
                fprintf(stderr, "zfront: --set needs KEY=VALUE\n");
                return ZF_ERROR;
            }
            memcpy(key, value, (size_t)(e - value));
            key[e - value] = 0;
            if (zf_config_set(key, e + 1, "command line") != ZF_OK)
                return ZF_ERROR;
            continue;
        }
        if (zf_config_set(k->name, value ? value : "true", "command line") != ZF_OK)
            return ZF_ERROR;
    }
    return ZF_OK;
}

/* --demo's values are defaults: any source that sets a key, even to empty
 * (`--ssh ''` means no SSH), wins. To tell "set to empty" from "not set",
 * each demo key is put in an unset state no source leaves behind (string:
 * NULL; list: an empty array of our own, which any set replaces) before
 * the file and the flags are read. */
static void unset_demo_keys(void)
{
    for (size_t i = 0; i < ZF_ARRAY_LEN(demo_defaults); i++) {
        const struct zf_cfg_key *k = zf_config_find(demo_defaults[i].key);
        if (k && k->type == ZF_CFG_STR) {
            free(*(char **)k->ptr);
            *(char **)k->ptr = NULL;
        } else if (k && k->type == ZF_CFG_LIST) {
            struct zf_strlist *l = k->ptr;
            zf_strlist_clear(l);
            l->v = zf_xmalloc(sizeof *l->v);
        }
    }
}

/* After every source: a demo key no source set gets the demo's value with
 * --demo, else its ordinary default back. */
static void apply_demo_defaults(void)
{
    zf_config_begin_source();
    for (size_t i = 0; i < ZF_ARRAY_LEN(demo_defaults); i++) {
        const struct zf_cfg_key *k = zf_config_find(demo_defaults[i].key);
        if (!k)
            continue;
        if (k->type == ZF_CFG_STR && *(char **)k->ptr)
            continue;
        if (k->type == ZF_CFG_LIST) {
            struct zf_strlist *l = k->ptr;
            if (!l->v || l->n > 0)
                continue; /* a source set it (emptied: v is NULL) */
            free(l->v);
            l->v = NULL;
        }
        if (zf_cfg.demo)
            zf_config_set(k->name, demo_defaults[i].value, "--demo");
        else if (k->def)
            zf_config_set(k->name, k->def, "default");
    }
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    (void)arg;
    if (sig == SIGUSR1) {
        zf_dump_state();
        return;
    }
    if (sig == SIGHUP) {
        zf_log(ZF_LOG_INFO, NULL, "SIGHUP: re-opening logs and reloading");
        zf_log_reopen();
        for (size_t i = 0; i < zf_srv->nactive; i++)
            if (zf_srv->active[i]->reload)
                zf_srv->active[i]->reload(zf_srv);
        return;
    }
    const char *name = sig == SIGTERM ? "SIGTERM" : "SIGINT";
    if (zf_srv->state != ZF_RUNNING) {
        zf_log(ZF_LOG_WARN, NULL, "%s received again: stopping now", name);
        zf_server_shutdown(0);
        return;
    }
    zf_log(ZF_LOG_INFO, NULL, "%s received", name);
    zf_server_shutdown(1);
}

static int configure_modules(void)
{
    for (size_t i = 0; i < zf_nmodules; i++) {
        const struct zf_module *m = zf_modules[i];
        int rc = m->configure ? m->configure(zf_srv) : ZF_OK;
        if (rc == ZF_ERROR) {
            zf_log(ZF_LOG_ERROR, NULL, "%s: bad configuration", m->name);
            return ZF_ERROR;
        }
        if (rc == ZF_OK && zf_srv->nactive < ZF_ARRAY_LEN(zf_srv->active))
            zf_srv->active[zf_srv->nactive++] = m;
    }
    zf__services_activate(zf_srv);
    if (zf_srv->nactive == 0) {
        zf_log(ZF_LOG_ERROR, NULL, "nothing to serve: give at least one listener "
               "(for example --http 127.0.0.1:8080)");
        return ZF_ERROR;
    }
    return ZF_OK;
}

static int write_pid_file(void)
{
    if (!zf_cfg.pid_file || !*zf_cfg.pid_file)
        return ZF_OK;
    FILE *f = fopen(zf_cfg.pid_file, "w");
    if (!f) {
        zf_log(ZF_LOG_ERROR, NULL, "cannot write pid file %s: %s", zf_cfg.pid_file,
               strerror(errno));
        return ZF_ERROR;
    }
    fprintf(f, "%ld\n", (long)getpid());
    fclose(f);
    return ZF_OK;
}

/* Waits for the workers to finish what they run, up to the stop deadline
 * (zf_server_stop_deadline: the one shutdown_timeout counted from the
 * signal, not a second one from here). The loop keeps turning meanwhile,
 * so a second signal, the queue drain and worker output are still seen.
 * Returns ZF_OK when the workers are idle. */
static int wait_workers(struct event_base *base)
{
    while (zf_pool_busy() > 0) {
        if (zf_now_ms() >= zf_server_stop_deadline())
            return ZF_ERROR;
        event_base_loop(base, EVLOOP_NONBLOCK);
        usleep(20000);
    }
    return ZF_OK;
}

/* One line with what the pool refused, dropped or saw stuck since start. */
static void log_pool_stats(void)
{
    struct zf_pool_stats st;
    zf_pool_get_stats(&st);
    zf_log(ZF_LOG_INFO, NULL,
           "worker pool: %llu request(s) refused (queue full), %llu expired in the queue, "
           "%llu answered 503 at shutdown, %llu stuck worker(s) reported",
           (unsigned long long)st.refused, (unsigned long long)st.expired,
           (unsigned long long)st.cancelled, (unsigned long long)st.stuck_total);
}

static int run(int argc, char **argv)
{
    static struct zf_server srv;
    zf_srv = &srv;

    /* the pool's server.* keys first: the reference then shows one [server] table */
    zf_config_register(zf_pool_keys);
    zf_core_config_register();
    zf_hub_config_register();
    for (size_t i = 0; i < zf_nmodules; i++)
        if (zf_modules[i]->keys)
            zf_config_register(zf_modules[i]->keys);

    int rc = apply_args(argc, argv, 0);
    if (rc != ZF_OK)
        return rc == ZF_DECLINED ? 0 : 2;
    unset_demo_keys();
    if (apply_args(argc, argv, 1) != ZF_OK)
        return 2;
    if (zf_py_init(argv[0]) != ZF_OK)
        return 1;
    if (config_path && zf_py_read_config(config_path) != ZF_OK)
        return 2;
    if (config_path && apply_args(argc, argv, 1) != ZF_OK) /* flags override the file */
        return 2;
    if (zf_cfg.paste && *zf_cfg.paste) {
        /* the ini's [server:main] (Plone's wsgi.ini), then the TOML file and
         * the flags again: both override the ini */
        if (zf_py_read_paste_server(zf_cfg.paste) != ZF_OK)
            return 2;
        if (config_path && zf_py_read_config(config_path) != ZF_OK)
            return 2;
        if (apply_args(argc, argv, 1) != ZF_OK)
            return 2;
    }
    apply_demo_defaults();
    if (zf_log_open(zf_cfg.error_log, zf_cfg.log_level) != ZF_OK)
        return 2;
    if (zf_access_log_open(zf_cfg.access_log) != ZF_OK)
        return 2;
#ifdef ZF_WITH_BUS
    if (zf_bus_forwarder_wanted()) { /* a forwarder process serves nothing else */
        rc = zf_bus_forwarder_run();
        zf_py_finalize();
        zf_log_close();
        zf_config_free();
        return rc;
    }
#endif

    evthread_use_pthreads();
    srv.base = event_base_new();
    if (!srv.base) {
        zf_log(ZF_LOG_ERROR, NULL, "cannot create the event loop");
        return 1;
    }
    if (configure_modules() != ZF_OK)
        return 2;
    if (zf_py_load_app() != ZF_OK)
        return 1;
    zf_py_release_main();

    if (zf__server_init_loop(&srv) != ZF_OK || zf_exchange_init_loop(srv.base) != ZF_OK ||
        zf_hub_init() != ZF_OK)
        return 1;
    zf__py_hub_attach();
    struct event *sigs[4];
    const int signos[4] = {SIGTERM, SIGINT, SIGHUP, SIGUSR1};
    for (int i = 0; i < 4; i++) {
        sigs[i] = evsignal_new(srv.base, signos[i], on_signal, NULL);
        evsignal_add(sigs[i], NULL);
    }
    if (zf_pool_start((int)zf_cfg.threads) != ZF_OK)
        return 1;
    int start_failed = 0;
    for (size_t i = 0; i < srv.nactive && !start_failed; i++) {
        if (srv.active[i]->start && srv.active[i]->start(&srv) != ZF_OK) {
            zf_log(ZF_LOG_ERROR, NULL, "%s: cannot start", srv.active[i]->name);
            start_failed = 1;
        }
    }
    if (!start_failed && write_pid_file() != ZF_OK)
        start_failed = 1;
    if (start_failed) {
        zf_server_shutdown(0);
    } else {
        zf_log(ZF_LOG_INFO, NULL, "zfront %s ready (pid %ld)", ZF_VERSION, (long)getpid());
    }
    event_base_dispatch(srv.base);

    int exit_code = srv.state == ZF_STOPPED && !start_failed ? 0 : 1;
    if (wait_workers(srv.base) != ZF_OK) {
        /* A worker stuck in the app cannot be joined, and Python cannot be
         * finalized under it: leave without either. Every log line is
         * already written (one write(2) each). */
        struct zf_pool_stats st;
        zf_pool_get_stats(&st);
        log_pool_stats();
        zf_log(ZF_LOG_WARN, NULL,
               "%zu worker(s) still busy at the stop deadline: exiting without waiting for "
               "them",
               st.running);
        if (zf_cfg.pid_file && *zf_cfg.pid_file)
            unlink(zf_cfg.pid_file);
        _exit(exit_code);
    }
    log_pool_stats();
    zf_pool_stop();
    zf_hub_free();
    for (int i = 0; i < 4; i++)
        event_free(sigs[i]);
    zf_exchange_free_loop();
    zf__server_free_loop();
    event_base_free(srv.base);
    zf_py_finalize();
    if (zf_cfg.pid_file && *zf_cfg.pid_file)
        unlink(zf_cfg.pid_file);
    zf_log(ZF_LOG_INFO, NULL, "stopped");
    zf_log_close();
    zf_config_free();
    return exit_code;
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    /* a spool file past RLIMIT_FSIZE fails that write (EFBIG), reported as
     * such; it must not kill the server */
    signal(SIGXFSZ, SIG_IGN);
    return run(argc, argv);
}
