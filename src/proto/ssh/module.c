/* The SSH module descriptor: [ssh] config keys, configure (keys are read
 * and checked before anything listens), start (listener), stop, stats. */
#include <errno.h>
#include <event2/buffer.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../core/metrics.h"
#include "ssh.h"

struct zf_ssh_config zf_ssh_cfg;

/* The modern set (what ssh-audit passes without a warning). libssh 0.10.6
 * has no post-quantum hybrid (sntrup761x25519 came with 0.11). */
#define DEFAULT_KEX                                                                                \
    "curve25519-sha256,curve25519-sha256@libssh.org,diffie-hellman-group18-sha512,"                \
    "diffie-hellman-group16-sha512"
#define DEFAULT_CIPHERS                                                                            \
    "chacha20-poly1305@openssh.com,aes256-gcm@openssh.com,aes128-gcm@openssh.com,aes256-ctr,"      \
    "aes192-ctr,aes128-ctr"
#define DEFAULT_MACS "hmac-sha2-256-etm@openssh.com,hmac-sha2-512-etm@openssh.com"
#define DEFAULT_HOSTKEY_ALGOS "ssh-ed25519,rsa-sha2-512,rsa-sha2-256"

static const struct zf_cfg_key ssh_keys[] = {
    {"ssh.listen", ZF_CFG_STR, &zf_ssh_cfg.listen, "", "--ssh",
     "SSH console listen address; a bare port (\"8022\") means 127.0.0.1 only. "
     "Empty: no SSH."},
    {"ssh.authorized_keys", ZF_CFG_STR, &zf_ssh_cfg.authorized_keys, "", "--ssh-authorized-keys",
     "OpenSSH authorized_keys file of the keys that may log in (ed25519, ecdsa, rsa >= 2048); "
     "lines with options are refused. Re-read when it changes."},
    {"ssh.host_key", ZF_CFG_STR, &zf_ssh_cfg.host_key, "", "--ssh-host-key",
     "Host key file; generated (ed25519, mode 0600) when missing, refused when group/others "
     "can read it. Default: <state_dir>/ssh_host_ed25519_key."},
    {"ssh.password_hash", ZF_CFG_STR, &zf_ssh_cfg.password_hash, "", NULL,
     "crypt(3) hash (e.g. from `mkpasswd` or `openssl passwd -6`) that enables password "
     "login. Empty: public keys only."},
    {"ssh.namespace", ZF_CFG_STR, &zf_ssh_cfg.namespace_hook, "", NULL,
     "\"module:function\" called per session to build the console namespace "
     "(zfront.zopeconsole:namespace for Zope). Empty: app and zfront."},
    {"ssh.login_timeout", ZF_CFG_MSEC, &zf_ssh_cfg.login_timeout_ms, "30s", NULL,
     "Time a client has to finish key exchange and authentication."},
    {"ssh.kex_timeout", ZF_CFG_MSEC, &zf_ssh_cfg.kex_timeout_ms, "10s", NULL,
     "Time a client has to send its version banner and finish the key exchange (a silent "
     "connection holds a pre-authentication slot this long, not the whole login_timeout)."},
    {"ssh.console_stop_timeout", ZF_CFG_MSEC, &zf_ssh_cfg.console_stop_timeout_ms, "3s", NULL,
     "When the shutdown timeout passes (or a second signal comes), time console threads get to "
     "leave Python (interrupted every 100 ms) before the interpreter is finalized."},
    {"ssh.max_auth_tries", ZF_CFG_INT, &zf_ssh_cfg.max_auth_tries, "6", NULL,
     "Failed authentication attempts on one connection before it is closed."},
    {"ssh.max_sessions", ZF_CFG_INT, &zf_ssh_cfg.max_sessions, "8", NULL,
     "Console sessions (each one a thread) at once, over all connections."},
    {"ssh.max_startups", ZF_CFG_STR, &zf_ssh_cfg.max_startups, "10:30:100", NULL,
     "Connections not yet logged in at once, as OpenSSH's MaxStartups \"start:rate:full\": "
     "from `start` on a new one is closed with probability `rate` %, rising to 100 % at "
     "`full`. A single number N is a hard limit."},
    {"ssh.per_source_max_startups", ZF_CFG_INT, &zf_ssh_cfg.per_source_startups, "4", NULL,
     "Connections not yet logged in at once from one source (IPv4 address, IPv6 /64); "
     "more are closed when accepted. 0: no limit."},
    {"ssh.kex", ZF_CFG_STR, &zf_ssh_cfg.kex, DEFAULT_KEX, NULL,
     "Key exchange algorithms offered, in order (libssh names). The default is the modern "
     "set: no NIST-curve ECDH, no 2048-bit groups."},
    {"ssh.ciphers", ZF_CFG_STR, &zf_ssh_cfg.ciphers, DEFAULT_CIPHERS, NULL,
     "Ciphers offered (both directions): AEAD and CTR modes only by default."},
    {"ssh.macs", ZF_CFG_STR, &zf_ssh_cfg.macs, DEFAULT_MACS, NULL,
     "MACs offered (both directions): encrypt-then-MAC SHA-2 only by default (the AEAD "
     "ciphers need none)."},
    {"ssh.hostkey_algorithms", ZF_CFG_STR, &zf_ssh_cfg.hostkey_algorithms, DEFAULT_HOSTKEY_ALGOS,
     NULL,
     "Host key signature algorithms offered; must allow the host key's type (ssh-rsa with "
     "SHA-1 and ECDSA are off by default)."},
    {NULL, 0, NULL, NULL, NULL, NULL},
};

static ssh_bind bind_;
static struct zf_listener *listener;
static char *listen_addr;
struct zf_ssh_authkeys *zf__ssh_authkeys;

/* Returns the listen address to bind: a bare port means loopback only. */
static char *listen_address(const char *text)
{
    const char *p = text[0] == ':' ? text + 1 : text;
    if (*p && strspn(p, "0123456789") == strlen(p)) {
        char *out = NULL;
        if (asprintf(&out, "127.0.0.1:%s", p) < 0)
            abort();
        return out;
    }
    return zf_xstrdup(text);
}

/* --demo without keys: makes (once) a client key pair in
 * <state_dir>/ssh/, authorizes it, and says how to log in with it. Returns
 * ZF_OK or ZF_ERROR (logged). */
static char *demo_key_path;

static int demo_client_key(void)
{
    const char *dir = zf_cfg.state_dir && *zf_cfg.state_dir ? zf_cfg.state_dir : ".";
    char *key_path = NULL, *auth_path = NULL, *b64 = NULL;
    ssh_key key = NULL;
    int rc = ZF_ERROR;
    if (asprintf(&key_path, "%s/ssh/demo_client_key", dir) < 0 ||
        asprintf(&auth_path, "%s/ssh/authorized_keys", dir) < 0)
        abort();
    /* the same safe load-or-generate as the host key (0600, refused when
     * others can read it) */
    if (zf__ssh_host_key(key_path, "demo client key", &key) != ZF_OK)
        goto out;
    if (ssh_pki_export_pubkey_base64(key, &b64) != SSH_OK) {
        zf_log(ZF_LOG_ERROR, NULL, "ssh: demo: cannot encode the demo public key");
        goto out;
    }
    FILE *f = fopen(auth_path, "w");
    if (!f || fprintf(f, "ssh-ed25519 %s zfront-demo\n", b64) < 0 || fclose(f) != 0) {
        zf_log(ZF_LOG_ERROR, NULL, "ssh: demo: cannot write %s: %s", auth_path, strerror(errno));
        goto out;
    }
    zf_config_set("ssh.authorized_keys", auth_path, "--demo");
    demo_key_path = key_path; /* logged with the bound port by ssh_start */
    key_path = NULL;
    rc = ZF_OK;
out:
    ssh_string_free_char(b64);
    ssh_key_free(key);
    free(key_path);
    free(auth_path);
    return rc;
}

/* Parses ssh.max_startups ("N" or "start:rate:full") into zf_ssh_cfg.
 * Returns ZF_OK or ZF_ERROR. */
static int parse_startups(const char *text)
{
    long v[3];
    int n = 0;
    const char *p = text;
    while (p && n < 3) {
        char *end;
        errno = 0;
        v[n++] = strtol(p, &end, 10);
        if (errno || end == p || (*end && *end != ':'))
            return ZF_ERROR;
        p = *end == ':' ? end + 1 : NULL;
    }
    if (p || (n != 1 && n != 3))
        return ZF_ERROR;
    if (n == 1) {
        v[2] = v[0];
        v[1] = 100;
    }
    if (v[0] < 1 || v[2] < v[0] || v[1] < 0 || v[1] > 100)
        return ZF_ERROR;
    zf_ssh_cfg.startups_begin = v[0];
    zf_ssh_cfg.startups_rate = v[1];
    zf_ssh_cfg.startups_full = v[2];
    return ZF_OK;
}

/* True when the comma-separated list has an entry starting with prefix
 * (the whole entry unless prefix ends with '-'). */
static int list_has(const char *list, const char *prefix)
{
    size_t n = strlen(prefix);
    int whole = n == 0 || prefix[n - 1] != '-';
    for (const char *p = list; p && *p;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len >= n && strncmp(p, prefix, n) == 0 && (!whole || len == n))
            return 1;
        p = end ? end + 1 : NULL;
    }
    return 0;
}

/* libssh silently drops the names it does not know from a list: a typo
 * would go unnoticed. Tries each name of `list` alone (on the bind, whose
 * value is set for real afterwards). Returns ZF_OK or ZF_ERROR (logged,
 * naming the first unknown one). */
static int check_names(const char *key, const char *list, enum ssh_bind_options_e opt)
{
    char name[128];
    for (const char *p = list; *p;) {
        size_t len = strcspn(p, ",");
        if (len == 0 || len >= sizeof name) {
            zf_log(ZF_LOG_ERROR, NULL, "ssh: %s = \"%s\": empty or overlong name", key, list);
            return ZF_ERROR;
        }
        memcpy(name, p, len);
        name[len] = '\0';
        if (ssh_bind_options_set(bind_, opt, name) != SSH_OK) {
            zf_log(ZF_LOG_ERROR, NULL, "ssh: %s: \"%s\" is not an algorithm libssh %s supports",
                   key, name, ssh_version(0));
            return ZF_ERROR;
        }
        p += len;
        if (*p == ',')
            p++;
    }
    return ZF_OK;
}

/* Sets the algorithm lists on the bind (each session copies them); every
 * name must be one libssh supports.
 * key_type: the host key's algorithm name ("rsa-sha2-" for RSA), which
 * ssh.hostkey_algorithms must allow. Returns ZF_OK or ZF_ERROR (logged). */
static int set_algorithms(const char *key_type)
{
    const struct {
        const char *key;
        const char *value;
        enum ssh_bind_options_e opt[2];
    } sets[] = {
        {"ssh.kex", zf_ssh_cfg.kex, {SSH_BIND_OPTIONS_KEY_EXCHANGE, SSH_BIND_OPTIONS_KEY_EXCHANGE}},
        {"ssh.ciphers",
         zf_ssh_cfg.ciphers,
         {SSH_BIND_OPTIONS_CIPHERS_C_S, SSH_BIND_OPTIONS_CIPHERS_S_C}},
        {"ssh.macs", zf_ssh_cfg.macs, {SSH_BIND_OPTIONS_HMAC_C_S, SSH_BIND_OPTIONS_HMAC_S_C}},
        {"ssh.hostkey_algorithms",
         zf_ssh_cfg.hostkey_algorithms,
         {SSH_BIND_OPTIONS_HOSTKEY_ALGORITHMS, SSH_BIND_OPTIONS_HOSTKEY_ALGORITHMS}},
    };
    for (size_t i = 0; i < ZF_ARRAY_LEN(sets); i++) {
        const char *v = sets[i].value;
        if (v && check_names(sets[i].key, v, sets[i].opt[0]) != ZF_OK)
            return ZF_ERROR;
        if (!v || !*v || ssh_bind_options_set(bind_, sets[i].opt[0], v) != SSH_OK ||
            ssh_bind_options_set(bind_, sets[i].opt[1], v) != SSH_OK) {
            zf_log(ZF_LOG_ERROR, NULL, "ssh: %s = \"%s\": no algorithm libssh %s supports",
                   sets[i].key, v ? v : "", ssh_version(0));
            return ZF_ERROR;
        }
    }
    if (!list_has(zf_ssh_cfg.hostkey_algorithms, key_type)) {
        zf_log(ZF_LOG_ERROR, NULL,
               "ssh: the host key is %s%s but ssh.hostkey_algorithms (\"%s\") does not allow it",
               key_type, strcmp(key_type, "rsa-sha2-") == 0 ? "256/512" : "",
               zf_ssh_cfg.hostkey_algorithms);
        return ZF_ERROR;
    }
    /* the software version names zfront, not the library */
    if (ssh_bind_options_set(bind_, SSH_BIND_OPTIONS_BANNER, "zfront_" ZF_VERSION) != SSH_OK)
        return ZF_ERROR;
    return ZF_OK;
}

/* Checks the settings, reads authorized_keys and the host key, and makes
 * the libssh bind. Returns ZF_DECLINED when no listen address is set,
 * ZF_ERROR (logged) when anything is unsafe or unreadable. */
static int ssh_configure(struct zf_server *srv)
{
    struct zf_ssh_config *c = &zf_ssh_cfg;
    if (!c->listen || !*c->listen)
        return ZF_DECLINED;
    int have_keys = c->authorized_keys && *c->authorized_keys;
    int have_pw = c->password_hash && *c->password_hash;
    if (!have_keys && !have_pw && zf_cfg.demo) {
        /* --demo turns the console on at 127.0.0.1:8022: let the user in
         * with a key made for the demo (and told how to use it). */
        if (demo_client_key() != ZF_OK)
            return ZF_ERROR;
        have_keys = 1;
    }
    if (!have_keys && !have_pw) {
        zf_log(ZF_LOG_ERROR, NULL,
               "ssh: listen is set but nobody could log in: set ssh.authorized_keys "
               "(--ssh-authorized-keys FILE)");
        return ZF_ERROR;
    }
    if (c->max_auth_tries < 1 || c->max_sessions < 1 || c->per_source_startups < 0) {
        zf_log(ZF_LOG_ERROR, NULL,
               "ssh: max_auth_tries and max_sessions must be at least 1, "
               "per_source_max_startups at least 0");
        return ZF_ERROR;
    }
    if (parse_startups(c->max_startups) != ZF_OK) {
        zf_log(ZF_LOG_ERROR, NULL,
               "ssh: max_startups = \"%s\": expected \"start:rate:full\" (1 <= start <= full, "
               "0 <= rate <= 100) or a number >= 1",
               c->max_startups ? c->max_startups : "");
        return ZF_ERROR;
    }
    if (c->kex_timeout_ms == 0 || c->login_timeout_ms == 0) {
        zf_log(ZF_LOG_ERROR, NULL, "ssh: kex_timeout and login_timeout must be more than 0");
        return ZF_ERROR;
    }
    if (have_pw && !zf__ssh_hash_valid(c->password_hash)) {
        zf_log(ZF_LOG_ERROR, NULL,
               "ssh: password_hash must be a crypt(3) hash such as \"$y$...\" or \"$6$...\"");
        return ZF_ERROR;
    }
    if (c->namespace_hook && *c->namespace_hook) {
        const char *colon = strchr(c->namespace_hook, ':');
        if (!colon || colon == c->namespace_hook || !colon[1]) {
            zf_log(ZF_LOG_ERROR, NULL, "ssh: namespace must be \"module:function\", not \"%s\"",
                   c->namespace_hook);
            return ZF_ERROR;
        }
    }
    if (have_keys) {
        zf__ssh_authkeys = zf__ssh_authkeys_load(c->authorized_keys);
        if (!zf__ssh_authkeys)
            return ZF_ERROR;
    }

    char *keypath = NULL;
    if (c->host_key && *c->host_key) {
        keypath = zf_xstrdup(c->host_key);
    } else {
        const char *dir = zf_cfg.state_dir && *zf_cfg.state_dir ? zf_cfg.state_dir : ".";
        if (asprintf(&keypath, "%s/ssh_host_ed25519_key", dir) < 0)
            abort();
    }
    ssh_key key = NULL;
    int rc = zf__ssh_host_key(keypath, "host key", &key);
    free(keypath);
    if (rc != ZF_OK)
        return ZF_ERROR;

    char key_type[64];
    snprintf(key_type, sizeof key_type, "%s",
             ssh_key_type(key) == SSH_KEYTYPE_ECDSA_P256 ||
                     ssh_key_type(key) == SSH_KEYTYPE_ECDSA_P384 ||
                     ssh_key_type(key) == SSH_KEYTYPE_ECDSA_P521
                 ? ssh_pki_key_ecdsa_name(key)
             : ssh_key_type(key) == SSH_KEYTYPE_RSA ? "rsa-sha2-"
                                                    : ssh_key_type_to_char(ssh_key_type(key)));
    bind_ = ssh_bind_new();
    if (!bind_) {
        ssh_key_free(key);
        zf_log(ZF_LOG_ERROR, NULL, "ssh: out of memory");
        return ZF_ERROR;
    }
    bool no = false;
    int verbosity = SSH_LOG_NOLOG;
    if (ssh_bind_options_set(bind_, SSH_BIND_OPTIONS_PROCESS_CONFIG, &no) != SSH_OK ||
        ssh_bind_options_set(bind_, SSH_BIND_OPTIONS_LOG_VERBOSITY, &verbosity) != SSH_OK ||
        ssh_bind_options_set(bind_, SSH_BIND_OPTIONS_IMPORT_KEY, key) != SSH_OK) {
        zf_log(ZF_LOG_ERROR, NULL, "ssh: cannot set up the server: %s", ssh_get_error(bind_));
        ssh_bind_free(bind_);
        bind_ = NULL;
        return ZF_ERROR;
    }
    if (set_algorithms(key_type) != ZF_OK) {
        ssh_bind_free(bind_);
        bind_ = NULL;
        return ZF_ERROR;
    }
    listen_addr = listen_address(c->listen);
    if (have_pw)
        zf_log(ZF_LOG_INFO, NULL, "ssh: password authentication is enabled");
    return ZF_OK;
}

static void on_accept(struct zf_listener *l, evutil_socket_t fd, struct sockaddr *sa, int salen,
                      void *arg)
{
    zf__ssh_conn_accept(bind_, fd, sa, (socklen_t)salen);
}

static void ssh_metrics(struct zf_metrics *m, void *arg)
{
    (void)arg;
    zf_metrics_connections(m, "ssh", zf__ssh_conn_count(), UINT64_MAX);
    zf_metrics_gauge(m, "zfront_ssh_unauthenticated", "SSH connections not logged in yet.", NULL,
                     (double)zf__ssh_conn_unauthenticated());
    zf_metrics_gauge(m, "zfront_ssh_consoles", "SSH console sessions (one thread each).", NULL,
                     (double)zf__ssh_console_threads());
}

static int ssh_start(struct zf_server *srv)
{
    zf_metrics_register(ssh_metrics, NULL);
    if (zf__ssh_interrupter_start() != ZF_OK)
        return ZF_ERROR;
    listener = zf_listen(srv, listen_addr, "ssh", on_accept, NULL);
    if (listener && demo_key_path) {
        zf_log(ZF_LOG_INFO, NULL, "ssh: demo console: ssh -i %s -p %d admin@%s", demo_key_path,
               listener->port, listener->host);
        free(demo_key_path);
        demo_key_path = NULL;
    }
    return listener ? ZF_OK : ZF_ERROR;
}

/* Stops listening and closes every connection: a console is interactive
 * and would otherwise hold the shutdown until its timeout. Running code is
 * interrupted; shutdown waits (active()) until the console threads left
 * Python. */
static void ssh_stop(struct zf_server *srv, int graceful)
{
    if (listener) {
        zf_listener_free(listener);
        listener = NULL;
    }
    zf__ssh_conn_close_all("zfront is shutting down");
    zf__ssh_interrupter_stop();
    if (graceful)
        return;
    /* The shutdown timeout passed (or a second signal came): the loop ends
     * and main finalizes Python next. Console code must not run on under a
     * finalizing interpreter, so give it a bounded moment to leave. */
    zf__ssh_console_hard_stop();
    size_t n = zf__ssh_console_in_python();
    if (n == 0)
        return;
    if (zf__ssh_console_join(zf_ssh_cfg.console_stop_timeout_ms) == ZF_OK) {
        zf_log(ZF_LOG_INFO, NULL, "ssh: %zu console thread(s) left Python", n);
        return;
    }
    zf_log(ZF_LOG_WARN, NULL,
           "ssh: %zu console thread(s) still in Python %llu ms after the stop "
           "(ssh.console_stop_timeout): Python ends without them",
           zf__ssh_console_in_python(), (unsigned long long)zf_ssh_cfg.console_stop_timeout_ms);
}

static size_t ssh_active(struct zf_server *srv)
{
    return zf__ssh_conn_count() + zf__ssh_console_threads() + (size_t)zf__ssh_interrupter_running();
}

static void ssh_stats(struct zf_server *srv, struct evbuffer *out)
{
    evbuffer_add_printf(out, "ssh_connections: %zu\n", zf__ssh_conn_count());
    evbuffer_add_printf(out, "ssh_unauthenticated: %zu\n", zf__ssh_conn_unauthenticated());
    evbuffer_add_printf(out, "ssh_console_threads: %zu\n", zf__ssh_console_threads());
    evbuffer_add_printf(out, "ssh_authorized_keys: %zu\n",
                        zf__ssh_authkeys_count(zf__ssh_authkeys));
}

/* SIGHUP: re-reads authorized_keys (it is also re-read whenever it
 * changed, at the next login attempt). */
static void ssh_reload(struct zf_server *srv)
{
    if (!zf__ssh_authkeys)
        return;
    struct zf_ssh_authkeys *fresh = zf__ssh_authkeys_load(zf_ssh_cfg.authorized_keys);
    if (fresh) {
        zf__ssh_authkeys_free(zf__ssh_authkeys);
        zf__ssh_authkeys = fresh;
    }
}

const struct zf_module zf_ssh_module = {
    .name = "ssh",
    .keys = ssh_keys,
    .configure = ssh_configure,
    .start = ssh_start,
    .stop = ssh_stop,
    .active = ssh_active,
    .stats = ssh_stats,
    .reload = ssh_reload,
};
