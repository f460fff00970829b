/* Configuration: typed key tables, one per subsystem (like nginx's directive
 * tables).
 *
 * Every key is "section.name" (the TOML table and key). Values come, in
 * order, from the key's default, the TOML file (read with Python's tomllib,
 * see python.c), then command-line flags. The tables are also the source of
 * `zfront --config-reference`, from which docs/configuration.md is made. */
#ifndef ZF_CONFIG_H
#define ZF_CONFIG_H

#include <stdint.h>

#include "log.h"
#include "zfront.h"

enum zf_cfg_type {
    ZF_CFG_STR,  /* char **, owned by the config */
    ZF_CFG_INT,  /* long * */
    ZF_CFG_SIZE, /* uint64_t *, accepts "64k", "1m", "2g" */
    ZF_CFG_BOOL, /* int *, accepts true/false/yes/no/on/off/1/0 */
    ZF_CFG_MSEC, /* uint64_t * milliseconds, accepts "30s", "500ms", "2m", or a number of seconds */
    ZF_CFG_LIST, /* struct zf_strlist *, repeated flag or TOML array */
};

struct zf_strlist {
    char **v;
    size_t n;
};

struct zf_cfg_key {
    const char *name; /* "http.listen"; NULL ends a table */
    enum zf_cfg_type type;
    void *ptr;        /* storage, typed as above */
    const char *def;  /* default as text, NULL for none */
    const char *flag; /* long command-line flag ("--http"), NULL for none */
    const char *help; /* one line for the reference */
};

/* Registers a key table (static storage; kept by pointer) and applies its
 * defaults. Aborts on an invalid default: that is a programming error. */
void zf_config_register(const struct zf_cfg_key *keys);

/* Sets one key from text. For ZF_CFG_LIST the first set from a new source
 * replaces the values from earlier sources; later sets append. `source`
 * names where the value came from for error messages. Returns ZF_OK, or
 * ZF_ERROR (unknown key or bad value, logged). */
int zf_config_set(const char *name, const char *value, const char *source);

/* Marks the start of a new source (file, command line): lists are replaced
 * again by the first value from the new source. */
void zf_config_begin_source(void);

/* Finds the key whose flag is `flag` ("--http"). NULL when unknown. */
const struct zf_cfg_key *zf_config_find_flag(const char *flag);
const struct zf_cfg_key *zf_config_find(const char *name);

/* Parsers shared with the command line. Return ZF_OK or ZF_ERROR. */
int zf_parse_size(const char *s, uint64_t *out);
int zf_parse_msec(const char *s, uint64_t *out);
int zf_parse_bool(const char *s, int *out);

void zf_strlist_add(struct zf_strlist *l, const char *s);
void zf_strlist_clear(struct zf_strlist *l);

/* Prints "  --flag VALUE   help" for every key that has a flag. */
void zf_config_print_flags(void);
/* Prints the reference (markdown) of every registered key to stdout. */
void zf_config_print_reference(void);
/* Frees every string the config owns (at exit, for leak checkers). */
void zf_config_free(void);

/* The core's own settings. Module settings live in each module. */
struct zf_core_config {
    long threads;
    long max_connections; /* 0: from the descriptor limit (server.c) */
    uint64_t shutdown_timeout_ms;
    char *state_dir;
    char *tmp_dir;
    char *pid_file;
    char *error_log;
    char *log_level;
    char *access_log;
    char *app;       /* module:callable */
    char *paste;     /* PasteDeploy ini */
    char *paste_name; /* app name inside the ini ("main") */
    char *zope_conf; /* Zope's zope.conf */
    int demo;
    struct zf_strlist python_path;
    uint64_t input_spool;    /* request bodies above this spool to a temp file */
    uint64_t output_buffer;  /* response bytes held in memory per exchange */
    uint64_t max_buffered;   /* response bytes in memory, server-wide (0: no limit) */
    uint64_t max_spool;      /* response bytes spooled to disk, server-wide (0: no limit) */
    int ranges;              /* answer Range on file responses */
    struct zf_strlist trusted_proxies;
    int clear_untrusted_proxy_headers; /* drop X-Forwarded-* / Forwarded from other peers */
    char *url_scheme;                  /* wsgi.url_scheme when no trusted proxy says */
    char *server_name;
};

extern struct zf_core_config zf_cfg;

/* Registers the core's key table. */
void zf_core_config_register(void);

#endif
