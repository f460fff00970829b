/* Configuration key tables: defaults, typed parsing, sources and the
 * reference printed by `zfront --config-reference`. */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config.h"
#include "log.h"

struct zf_core_config zf_cfg;

#define MAX_TABLES 32
static const struct zf_cfg_key *tables[MAX_TABLES];
static size_t ntables;
/* Source generation of each list's values, to know when a new source must
 * replace them: index parallel to a flat list of list keys. */
static struct {
    const struct zf_cfg_key *key;
    unsigned gen;
} list_gens[128];
static size_t nlist_gens;
static unsigned source_gen;

static const struct zf_cfg_key core_keys[] = {
    {"server.threads", ZF_CFG_INT, &zf_cfg.threads, "4", "--threads",
     "Worker threads running the application."},
    {"server.max_connections", ZF_CFG_INT, &zf_cfg.max_connections, "0", "--max-connections",
     "Most client connections open at once (HTTP/1.1, HTTPS, HTTP/2; TLS handshakes "
     "included). At the limit, connections that lose nothing are closed to make room, least "
     "recently active first: idle keep-alive ones, those still sending their header section, "
     "TLS handshakes not finished, HTTP/2 connections with no open stream (after a GOAWAY); "
     "when none can be, new ones are closed at once and "
     "accepting pauses. 0: min(10000, the descriptor limit minus those open at start and a "
     "reserve of 1/8 (at least 32)); the soft descriptor limit is raised to the hard one at "
     "start."},
    {"server.shutdown_timeout", ZF_CFG_MSEC, &zf_cfg.shutdown_timeout_ms, "10s",
     "--shutdown-timeout",
     "On SIGTERM/SIGINT, how long the whole stop may take: in-flight requests finish within it, "
     "requests still waiting for a worker half-way through get 503, and at the end the server "
     "exits even if a worker is stuck."},
    {"server.state_dir", ZF_CFG_STR, &zf_cfg.state_dir, NULL, "--state-dir",
     "Directory for persistent state (generated keys and certificates, demo content)."},
    {"server.tmp_dir", ZF_CFG_STR, &zf_cfg.tmp_dir, "/tmp", "--tmp-dir",
     "Directory for spool files (unlinked at once; request and response bodies)."},
    {"server.pid_file", ZF_CFG_STR, &zf_cfg.pid_file, NULL, "--pid-file",
     "Write the process id to this file."},
    {"server.name", ZF_CFG_STR, &zf_cfg.server_name, NULL, "--server-name",
     "SERVER_NAME in the environ (default: the local address the request came in on)."},
    {"server.trusted_proxies", ZF_CFG_LIST, &zf_cfg.trusted_proxies, NULL, "--trusted-proxy",
     "Addresses (or CIDR ranges) whose X-Forwarded-For/-Proto/-Host/-Port headers are "
     "honoured."},
    {"server.clear_untrusted_proxy_headers", ZF_CFG_BOOL, &zf_cfg.clear_untrusted_proxy_headers,
     "false", NULL,
     "With trusted proxies listed: remove the X-Forwarded-* and Forwarded headers of requests "
     "from any other peer before the app sees them (waitress's option of the same name)."},
    {"server.url_scheme", ZF_CFG_STR, &zf_cfg.url_scheme, NULL, NULL,
     "wsgi.url_scheme of every request, unless a trusted proxy's X-Forwarded-Proto says "
     "otherwise (default: the listener's, http or https)."},
    {"server.max_buffered", ZF_CFG_SIZE, &zf_cfg.max_buffered, "256m", "--max-buffered",
     "Response bytes held in memory for slow readers, all requests together. Beyond it the "
     "connections whose responses hold the most are closed (logged); 0 means no limit."},
    {"server.max_spool", ZF_CFG_SIZE, &zf_cfg.max_spool, "1g", "--max-spool",
     "Response bytes spooled to disk (write() bodies of slow readers), all requests together. "
     "Beyond it the connections whose responses hold the most are closed (logged); 0 means "
     "no limit."},
    {"log.error", ZF_CFG_STR, &zf_cfg.error_log, "-", "--error-log",
     "Error log file; \"-\" is stderr."},
    {"log.level", ZF_CFG_STR, &zf_cfg.log_level, "info", "--log-level",
     "Error log level: error, warn, info or debug."},
    {"log.access", ZF_CFG_STR, &zf_cfg.access_log, "", "--access-log",
     "Access log file in combined format; \"-\" is stderr, empty is off."},
    {"app.module", ZF_CFG_STR, &zf_cfg.app, NULL, "--app",
     "WSGI application as module:callable (callable defaults to `application`)."},
    {"app.paste", ZF_CFG_STR, &zf_cfg.paste, NULL, "--paste",
     "PasteDeploy ini file to load the application from (Plone's wsgi.ini)."},
    {"app.paste_name", ZF_CFG_STR, &zf_cfg.paste_name, "main", "--paste-name",
     "Application name inside the PasteDeploy ini."},
    {"app.zope_conf", ZF_CFG_STR, &zf_cfg.zope_conf, NULL, "--zope-conf",
     "Zope's zope.conf: load Zope through its own WSGI application factory."},
    {"app.demo", ZF_CFG_BOOL, &zf_cfg.demo, "false", "--demo",
     "Serve the bundled demo site (zfront.demo) with every built module on its default port."},
    {"app.python_path", ZF_CFG_LIST, &zf_cfg.python_path, NULL, "--python-path",
     "Directories put in front of sys.path (the current directory always is)."},
    {"wsgi.input_spool", ZF_CFG_SIZE, &zf_cfg.input_spool, "1m", "--input-spool",
     "Request bodies larger than this are spooled to an unlinked temp file."},
    {"wsgi.output_buffer", ZF_CFG_SIZE, &zf_cfg.output_buffer, "1m", "--output-buffer",
     "Response bytes held in memory per request while the client is slow. Beyond it an "
     "iterator body is suspended after the chunk that crossed it (the worker serves others; it "
     "resumes when the client took half) and a body sent with write() spools to a temp file: "
     "no worker waits on a client."},
    {"wsgi.ranges", ZF_CFG_BOOL, &zf_cfg.ranges, "true", NULL,
     "Answer a single byte Range on file responses the app marked `Accept-Ranges: bytes` "
     "(206/416); false always sends the whole file."},
    {NULL},
};

void zf_core_config_register(void)
{
    zf_config_register(core_keys);
}

int zf_parse_size(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    while (isspace((unsigned char)*s))
        s++;
    if (!isdigit((unsigned char)*s))
        return ZF_ERROR;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno)
        return ZF_ERROR;
    uint64_t mul = 1;
    switch (tolower((unsigned char)*end)) {
    case 'k': mul = 1ULL << 10; end++; break;
    case 'm': mul = 1ULL << 20; end++; break;
    case 'g': mul = 1ULL << 30; end++; break;
    case 't': mul = 1ULL << 40; end++; break;
    default: break;
    }
    if (mul > 1 && (*end == 'b' || *end == 'B'))
        end++;
    else if (mul > 1 && (*end == 'i') && (end[1] == 'b' || end[1] == 'B'))
        end += 2;
    else if (mul == 1 && (*end == 'b' || *end == 'B'))
        end++;
    if (*end)
        return ZF_ERROR;
    if (v > UINT64_MAX / mul)
        return ZF_ERROR;
    *out = v * mul;
    return ZF_OK;
}

int zf_parse_msec(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    while (isspace((unsigned char)*s))
        s++;
    if (!isdigit((unsigned char)*s))
        return ZF_ERROR;
    double v = strtod(s, &end);
    if (errno || v < 0)
        return ZF_ERROR;
    double mul = 1000;
    if (strcmp(end, "ms") == 0)
        mul = 1;
    else if (strcmp(end, "s") == 0 || *end == 0)
        mul = 1000;
    else if (strcmp(end, "m") == 0 || strcmp(end, "min") == 0)
        mul = 60000;
    else if (strcmp(end, "h") == 0)
        mul = 3600000;
    else
        return ZF_ERROR;
    double ms = v * mul + 0.5;
    if (!(ms < 18446744073709551616.0)) /* 2^64; also false for NaN */
        return ZF_ERROR;
    *out = (uint64_t)ms;
    return ZF_OK;
}

int zf_parse_bool(const char *s, int *out)
{
    static const char *const yes[] = {"1", "true", "yes", "on"};
    static const char *const no[] = {"0", "false", "no", "off"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = 1;
            return ZF_OK;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = 0;
            return ZF_OK;
        }
    }
    return ZF_ERROR;
}

void zf_strlist_add(struct zf_strlist *l, const char *s)
{
    char **v = realloc(l->v, (l->n + 1) * sizeof *v);
    if (!v) {
        fprintf(stderr, "zfront: out of memory\n");
        abort();
    }
    l->v = v;
    l->v[l->n++] = zf_xstrdup(s);
}

void zf_strlist_clear(struct zf_strlist *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
    l->v = NULL;
    l->n = 0;
}

/* Parses value into the key's storage. Returns ZF_OK or ZF_ERROR. */
static int store(const struct zf_cfg_key *k, const char *value)
{
    switch (k->type) {
    case ZF_CFG_STR: {
        char **p = k->ptr;
        free(*p);
        *p = value ? zf_xstrdup(value) : NULL;
        return ZF_OK;
    }
    case ZF_CFG_INT: {
        char *end;
        errno = 0;
        long v = strtol(value, &end, 10);
        if (errno || end == value || *end)
            return ZF_ERROR;
        *(long *)k->ptr = v;
        return ZF_OK;
    }
    case ZF_CFG_SIZE:
        return zf_parse_size(value, k->ptr);
    case ZF_CFG_MSEC:
        return zf_parse_msec(value, k->ptr);
    case ZF_CFG_BOOL:
        return zf_parse_bool(value, k->ptr);
    case ZF_CFG_LIST:
        if (*value)
            zf_strlist_add(k->ptr, value);
        return ZF_OK;
    }
    return ZF_ERROR;
}

void zf_config_register(const struct zf_cfg_key *keys)
{
    if (ntables == MAX_TABLES) {
        fprintf(stderr, "zfront: too many config tables\n");
        abort();
    }
    tables[ntables++] = keys;
    for (const struct zf_cfg_key *k = keys; k->name; k++) {
        if (k->def && store(k, k->def) != ZF_OK) {
            fprintf(stderr, "zfront: bad default for %s: %s\n", k->name, k->def);
            abort();
        }
    }
}

const struct zf_cfg_key *zf_config_find(const char *name)
{
    for (size_t t = 0; t < ntables; t++)
        for (const struct zf_cfg_key *k = tables[t]; k->name; k++)
            if (strcmp(k->name, name) == 0)
                return k;
    return NULL;
}

const struct zf_cfg_key *zf_config_find_flag(const char *flag)
{
    for (size_t t = 0; t < ntables; t++)
        for (const struct zf_cfg_key *k = tables[t]; k->name; k++)
            if (k->flag && strcmp(k->flag, flag) == 0)
                return k;
    return NULL;
}

void zf_config_begin_source(void)
{
    source_gen++;
}

/* A list's first value from a new source replaces the values it had. */
static void list_source(const struct zf_cfg_key *k)
{
    for (size_t i = 0; i < nlist_gens; i++) {
        if (list_gens[i].key == k) {
            if (list_gens[i].gen != source_gen) {
                zf_strlist_clear(k->ptr);
                list_gens[i].gen = source_gen;
            }
            return;
        }
    }
    if (nlist_gens < ZF_ARRAY_LEN(list_gens)) {
        zf_strlist_clear(k->ptr);
        list_gens[nlist_gens].key = k;
        list_gens[nlist_gens++].gen = source_gen;
    }
}

static const char *type_hint(enum zf_cfg_type t)
{
    switch (t) {
    case ZF_CFG_INT: return "an integer";
    case ZF_CFG_SIZE: return "a size such as 512k, 1m, 2g";
    case ZF_CFG_MSEC: return "a duration such as 500ms, 30s, 2m";
    case ZF_CFG_BOOL: return "true or false";
    default: return "a string";
    }
}

int zf_config_set(const char *name, const char *value, const char *source)
{
    const struct zf_cfg_key *k = zf_config_find(name);
    if (!k) {
        zf_log(ZF_LOG_ERROR, NULL, "%s: unknown setting \"%s\"", source, name);
        return ZF_ERROR;
    }
    if (k->type == ZF_CFG_LIST)
        list_source(k);
    if (store(k, value) != ZF_OK) {
        zf_log(ZF_LOG_ERROR, NULL, "%s: %s = \"%s\": expected %s", source, name, value,
               type_hint(k->type));
        return ZF_ERROR;
    }
    return ZF_OK;
}

static const char *type_name(enum zf_cfg_type t)
{
    switch (t) {
    case ZF_CFG_INT: return "integer";
    case ZF_CFG_SIZE: return "size";
    case ZF_CFG_MSEC: return "duration";
    case ZF_CFG_BOOL: return "boolean";
    case ZF_CFG_LIST: return "list of strings";
    default: return "string";
    }
}

void zf_config_print_flags(void)
{
    for (size_t t = 0; t < ntables; t++) {
        for (const struct zf_cfg_key *k = tables[t]; k->name; k++) {
            if (!k->flag)
                continue;
            char left[64];
            snprintf(left, sizeof left, "%s%s", k->flag, k->type == ZF_CFG_BOOL ? "" : " VALUE");
            printf("  %-28s %s [%s]\n", left, k->help, k->name);
        }
    }
}

void zf_config_print_reference(void)
{
    const char *section = NULL;
    size_t slen = 0;
    for (size_t t = 0; t < ntables; t++) {
        for (const struct zf_cfg_key *k = tables[t]; k->name; k++) {
            const char *dot = strchr(k->name, '.');
            size_t len = dot ? (size_t)(dot - k->name) : 0;
            if (!section || len != slen || strncmp(section, k->name, len) != 0) {
                printf("\n### [%.*s]\n\n| key | type | default | flag | meaning |\n"
                       "|---|---|---|---|---|\n",
                       (int)len, k->name);
                section = k->name;
                slen = len;
            }
            printf("| `%s` | %s | %s%s%s | %s%s%s | %s |\n", dot ? dot + 1 : k->name,
                   type_name(k->type), k->def && *k->def ? "`" : "",
                   k->def && *k->def ? k->def : "(none)", k->def && *k->def ? "`" : "",
                   k->flag ? "`" : "", k->flag ? k->flag : "", k->flag ? "`" : "", k->help);
        }
    }
}

void zf_config_free(void)
{
    for (size_t t = 0; t < ntables; t++) {
        for (const struct zf_cfg_key *k = tables[t]; k->name; k++) {
            if (k->type == ZF_CFG_STR) {
                free(*(char **)k->ptr);
                *(char **)k->ptr = NULL;
            } else if (k->type == ZF_CFG_LIST) {
                zf_strlist_clear(k->ptr);
            }
        }
    }
    ntables = 0;
    nlist_gens = 0;
}
