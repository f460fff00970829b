/* TLS server context: policy, certificate loading, the self-signed
 * certificate for demos and tests, ALPN and the SIGHUP swap. */
#include <errno.h>
#include <event2/bufferevent_ssl.h>
#include <fcntl.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../core/config.h"
#include "../../core/log.h"
#include "tls.h"

struct zf_tls_config zf_tls_cfg;

#define SELF_CERT "selfsigned-cert.pem"
#define SELF_KEY "selfsigned-key.pem"

static SSL_CTX *current;
static int offer_h2;
/* The self-signed pair when it could not be kept on disk (no state dir). */
static X509 *mem_cert;
static EVP_PKEY *mem_key;

/* Logs msg followed by OpenSSL's queued errors and clears the queue. */
static void log_ssl_error(const char *fmt, const char *arg)
{
    char reason[256] = "";
    unsigned long e, last = 0;
    while ((e = ERR_get_error()) != 0)
        last = e;
    if (last)
        ERR_error_string_n(last, reason, sizeof reason);
    char msg[512];
    snprintf(msg, sizeof msg, fmt, arg);
    zf_log(ZF_LOG_ERROR, NULL, "tls: %s%s%s", msg, last ? ": " : "", reason);
}

/* ALPN: the server picks, h2 first when enabled, then http/1.1. A client
 * offering neither goes on without ALPN (and gets HTTP/1.1). */
static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg)
{
    (void)ssl;
    (void)arg;
    const unsigned char *h1 = NULL;
    for (unsigned int i = 0; i < inlen;) {
        unsigned int n = in[i];
        if (i + 1 + n > inlen)
            break;
        const unsigned char *p = in + i + 1;
        if (offer_h2 && n == 2 && memcmp(p, "h2", 2) == 0) {
            *out = p;
            *outlen = (unsigned char)n;
            return SSL_TLSEXT_ERR_OK;
        }
        if (n == 8 && memcmp(p, "http/1.1", 8) == 0)
            h1 = p;
        i += 1 + n;
    }
    if (h1) {
        *out = h1;
        *outlen = 8;
        return SSL_TLSEXT_ERR_OK;
    }
    return SSL_TLSEXT_ERR_NOACK;
}

/* ------------------------------------------------------ self-signed pair */

/* Makes a P-256 key and a self-signed certificate for localhost, 127.0.0.1
 * and ::1, valid for two years. Returns ZF_OK (caller owns *cert, *key) or
 * ZF_ERROR (logged). */
static int make_self_signed(X509 **cert, EVP_PKEY **key)
{
    EVP_PKEY *pk = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    BIGNUM *bn = BN_new();
    int ok = pk && x && bn;
    ok = ok && X509_set_version(x, 2);
    ok = ok && BN_rand(bn, 63, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY);
    ok = ok && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x));
    ok = ok && X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    ok = ok && X509_gmtime_adj(X509_getm_notAfter(x), 2L * 365 * 24 * 3600);
    ok = ok && X509_set_pubkey(x, pk);
    X509_NAME *name = ok ? X509_get_subject_name(x) : NULL;
    ok = ok && X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC,
                                          (const unsigned char *)"zfront self-signed", -1, -1, 0);
    ok = ok && X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                          (const unsigned char *)"localhost", -1, -1, 0);
    ok = ok && X509_set_issuer_name(x, name);
    static const struct {
        int nid;
        const char *value;
    } exts[] = {
        /* a leaf, not a CA: browsers refuse a CA certificate as a server's */
        {NID_basic_constraints, "critical,CA:FALSE"},
        {NID_key_usage, "critical,digitalSignature"},
        {NID_ext_key_usage, "serverAuth"},
        {NID_subject_key_identifier, "hash"},
        {NID_subject_alt_name, "DNS:localhost,IP:127.0.0.1,IP:::1"},
    };
    X509V3_CTX v3;
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
    for (size_t i = 0; ok && i < ZF_ARRAY_LEN(exts); i++) {
        X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &v3, exts[i].nid, exts[i].value);
        ok = e && X509_add_ext(x, e, -1);
        X509_EXTENSION_free(e);
    }
    ok = ok && X509_sign(x, pk, EVP_sha256());
    BN_free(bn);
    if (!ok) {
        log_ssl_error("cannot generate a self-signed certificate%s", "");
        X509_free(x);
        EVP_PKEY_free(pk);
        return ZF_ERROR;
    }
    *cert = x;
    *key = pk;
    return ZF_OK;
}

/* mkdir -p with mode 0700 for the last component. Returns ZF_OK or ZF_ERROR. */
static int make_dirs(const char *path)
{
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
        return ZF_ERROR;
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = 0;
        if (mkdir(buf, 0755) != 0 && errno != EEXIST)
            return ZF_ERROR;
        *p = '/';
    }
    if (mkdir(buf, 0700) != 0 && errno != EEXIST)
        return ZF_ERROR;
    return ZF_OK;
}

/* Writes a PEM file atomically (temp file + rename). which: 0 cert, 1 key.
 * Returns ZF_OK or ZF_ERROR (logged). */
static int write_pem(const char *path, X509 *cert, EVP_PKEY *key)
{
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.%ld.tmp", path, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, key ? 0600 : 0644);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!f) {
        if (fd >= 0)
            close(fd);
        zf_log(ZF_LOG_ERROR, NULL, "tls: cannot write %s: %s", tmp, strerror(errno));
        return ZF_ERROR;
    }
    int ok =
        key ? PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL) : PEM_write_X509(f, cert);
    ok = (fclose(f) == 0) && ok;
    if (!ok || rename(tmp, path) != 0) {
        zf_log(ZF_LOG_ERROR, NULL, "tls: cannot write %s: %s", path, strerror(errno));
        unlink(tmp);
        return ZF_ERROR;
    }
    return ZF_OK;
}

/* True when the PEM certificate in path is marked as a CA (older zfront
 * versions generated such a self-signed certificate). */
static int is_ca_file(const char *path)
{
    FILE *f = fopen(path, "r");
    X509 *x = f ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;
    if (f)
        fclose(f);
    int ca = x && X509_check_ca(x) != 0;
    X509_free(x);
    ERR_clear_error();
    return ca;
}

/* Finds or creates the self-signed pair. Sets *cert_path and *key_path to the
 * files (static buffers) when kept on disk, or fills mem_cert/mem_key.
 * Returns ZF_OK or ZF_ERROR (logged). */
static int self_signed(const char **cert_path, const char **key_path)
{
    static char cpath[4096], kpath[4096];
    /* --demo always has a state dir (main.c gives it one) */
    const char *state = zf_cfg.state_dir && *zf_cfg.state_dir ? zf_cfg.state_dir : NULL;
    *cert_path = *key_path = NULL;
    if (state) {
        char dir[3900];
        if (snprintf(dir, sizeof dir, "%s/tls", state) >= (int)sizeof dir) {
            zf_log(ZF_LOG_ERROR, NULL, "tls: server.state_dir is too long");
            return ZF_ERROR;
        }
        snprintf(cpath, sizeof cpath, "%s/" SELF_CERT, dir);
        snprintf(kpath, sizeof kpath, "%s/" SELF_KEY, dir);
        if (access(cpath, R_OK) == 0 && access(kpath, R_OK) == 0) {
            if (!is_ca_file(cpath)) {
                *cert_path = cpath;
                *key_path = kpath;
                return ZF_OK;
            }
            zf_log(ZF_LOG_INFO, NULL,
                   "tls: %s is a CA certificate (made by an older zfront): "
                   "browsers refuse it, replacing it",
                   cpath);
        }
        if (make_dirs(dir) != ZF_OK) {
            zf_log(ZF_LOG_ERROR, NULL, "tls: cannot create %s: %s", dir, strerror(errno));
            return ZF_ERROR;
        }
    }
    if (mem_cert)
        return ZF_OK;
    X509 *x;
    EVP_PKEY *k;
    if (make_self_signed(&x, &k) != ZF_OK)
        return ZF_ERROR;
    if (!state) {
        zf_log(ZF_LOG_WARN, NULL,
               "tls: no tls.cert and no server.state_dir: using a "
               "self-signed certificate that is not kept");
        mem_cert = x;
        mem_key = k;
        return ZF_OK;
    }
    int rc = write_pem(kpath, NULL, k);
    if (rc == ZF_OK)
        rc = write_pem(cpath, x, NULL);
    X509_free(x);
    EVP_PKEY_free(k);
    if (rc != ZF_OK)
        return ZF_ERROR;
    zf_log(ZF_LOG_INFO, NULL,
           "tls: generated a self-signed certificate for localhost in %s "
           "(set tls.cert and tls.key for a real one)",
           cpath);
    *cert_path = cpath;
    *key_path = kpath;
    return ZF_OK;
}

/* ---------------------------------------------------------------- context */

/* Checks that path can be read, with a message that names the key. */
static int readable(const char *what, const char *path)
{
    if (access(path, R_OK) == 0)
        return ZF_OK;
    zf_log(ZF_LOG_ERROR, NULL, "tls: cannot read %s %s: %s", what, path, strerror(errno));
    return ZF_ERROR;
}

/* Loads extra intermediates from a PEM file into ctx. Returns ZF_OK or
 * ZF_ERROR (logged). */
static int load_chain(SSL_CTX *ctx, const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        zf_log(ZF_LOG_ERROR, NULL, "tls: cannot read tls.chain %s: %s", path, strerror(errno));
        return ZF_ERROR;
    }
    int n = 0;
    X509 *x;
    while ((x = PEM_read_X509(f, NULL, NULL, NULL)) != NULL) {
        if (!SSL_CTX_add0_chain_cert(ctx, x)) {
            X509_free(x);
            fclose(f);
            log_ssl_error("cannot use the chain in %s", path);
            return ZF_ERROR;
        }
        n++;
    }
    fclose(f);
    ERR_clear_error(); /* the end-of-file "no start line" */
    if (n == 0) {
        zf_log(ZF_LOG_ERROR, NULL, "tls: tls.chain %s holds no PEM certificate", path);
        return ZF_ERROR;
    }
    return ZF_OK;
}

/* Loads the certificate, chain and key into ctx. Returns ZF_OK or ZF_ERROR
 * (logged, naming the file and what is wrong with it). */
static int load_identity(SSL_CTX *ctx)
{
    const char *cert = zf_tls_cfg.cert && *zf_tls_cfg.cert ? zf_tls_cfg.cert : NULL;
    const char *key = zf_tls_cfg.key && *zf_tls_cfg.key ? zf_tls_cfg.key : cert;
    if (!cert && zf_tls_cfg.key && *zf_tls_cfg.key) {
        zf_log(ZF_LOG_ERROR, NULL, "tls: tls.key is set but tls.cert is not");
        return ZF_ERROR;
    }
    if (!cert) {
        if (self_signed(&cert, &key) != ZF_OK)
            return ZF_ERROR;
        if (!cert) {
            if (!SSL_CTX_use_certificate(ctx, mem_cert) || !SSL_CTX_use_PrivateKey(ctx, mem_key)) {
                log_ssl_error("cannot use the self-signed certificate%s", "");
                return ZF_ERROR;
            }
            return ZF_OK;
        }
    }
    if (readable("tls.cert", cert) != ZF_OK || readable("tls.key", key) != ZF_OK)
        return ZF_ERROR;
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
        log_ssl_error("tls.cert %s is not a usable PEM certificate", cert);
        return ZF_ERROR;
    }
    if (zf_tls_cfg.chain && *zf_tls_cfg.chain && load_chain(ctx, zf_tls_cfg.chain) != ZF_OK)
        return ZF_ERROR;
    FILE *f = fopen(key, "r");
    EVP_PKEY *pk = f ? PEM_read_PrivateKey(f, NULL, NULL, NULL) : NULL;
    if (f)
        fclose(f);
    if (!pk) {
        log_ssl_error("tls.key %s holds no usable PEM private key", key);
        return ZF_ERROR;
    }
    X509 *x = SSL_CTX_get0_certificate(ctx);
    if (!x || X509_check_private_key(x, pk) != 1) {
        EVP_PKEY_free(pk);
        ERR_clear_error();
        zf_log(ZF_LOG_ERROR, NULL, "tls: tls.key %s does not match the certificate in %s", key,
               cert);
        return ZF_ERROR;
    }
    int ok = SSL_CTX_use_PrivateKey(ctx, pk) == 1 && SSL_CTX_check_private_key(ctx) == 1;
    EVP_PKEY_free(pk);
    if (!ok) {
        log_ssl_error("cannot use the private key in %s", key);
        return ZF_ERROR;
    }
    return ZF_OK;
}

/* Builds a server context with the policy above. old (may be NULL) gives
 * its ticket keys so tickets issued before a reload still resume. Returns
 * the context or NULL (logged). */
static SSL_CTX *build_ctx(SSL_CTX *old)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        log_ssl_error("cannot create a TLS context%s", "");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
    uint64_t opts = SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
                    SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_IGNORE_UNEXPECTED_EOF;
    if (!zf_tls_cfg.session_tickets)
        opts |= SSL_OP_NO_TICKET;
    SSL_CTX_set_options(ctx, opts);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    if (SSL_CTX_set_cipher_list(ctx, zf_tls_cfg.ciphers) != 1) {
        log_ssl_error("tls.ciphers \"%s\" selects no usable cipher", zf_tls_cfg.ciphers);
        goto fail;
    }
    SSL_CTX_set1_groups_list(ctx, "X25519:P-256:P-384");
    /* session resumption: server cache plus tickets */
    static const unsigned char sid_ctx[] = "zfront";
    SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof sid_ctx - 1);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
    SSL_CTX_sess_set_cache_size(ctx, 20000);
    long secs = (long)(zf_tls_cfg.session_timeout_ms / 1000);
    SSL_CTX_set_timeout(ctx, secs > 0 ? secs : 1);
    if (old) {
        unsigned char keys[80];
        if (SSL_CTX_get_tlsext_ticket_keys(old, keys, sizeof keys) == 1)
            SSL_CTX_set_tlsext_ticket_keys(ctx, keys, sizeof keys);
        OPENSSL_cleanse(keys, sizeof keys);
    }
    SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
    if (load_identity(ctx) != ZF_OK)
        goto fail;
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

int zf_tls_init(int h2)
{
    offer_h2 = h2;
    if (!zf_tls_cfg.ciphers || !*zf_tls_cfg.ciphers) {
        zf_log(ZF_LOG_ERROR, NULL, "tls: tls.ciphers is empty");
        return ZF_ERROR;
    }
    SSL_CTX *ctx = build_ctx(NULL);
    if (!ctx)
        return ZF_ERROR;
    SSL_CTX_free(current);
    current = ctx;
    return ZF_OK;
}

int zf_tls_reload(void)
{
    if (!current)
        return ZF_OK;
    SSL_CTX *ctx = build_ctx(current);
    if (!ctx) {
        zf_log(ZF_LOG_ERROR, NULL, "tls: reload failed: keeping the previous certificate");
        return ZF_ERROR;
    }
    SSL_CTX_free(current); /* live connections hold their own reference */
    current = ctx;
    zf_log(ZF_LOG_INFO, NULL, "tls: certificate reloaded for new connections");
    return ZF_OK;
}

SSL *zf_tls_new_ssl(void)
{
    return current ? SSL_new(current) : NULL;
}

int zf_tls_alpn_h2(SSL *ssl)
{
    const unsigned char *p = NULL;
    unsigned int n = 0;
    SSL_get0_alpn_selected(ssl, &p, &n);
    return n == 2 && memcmp(p, "h2", 2) == 0;
}

void zf_tls_describe(SSL *ssl, char *buf, size_t size)
{
    const unsigned char *p = NULL;
    unsigned int n = 0;
    SSL_get0_alpn_selected(ssl, &p, &n);
    snprintf(buf, size, "%s %s %.*s%s", SSL_get_version(ssl), SSL_get_cipher_name(ssl), (int)n,
             n ? (const char *)p : "no-alpn", SSL_session_reused(ssl) ? " resumed" : "");
}

void zf_tls_close_notify(struct bufferevent *bev)
{
    SSL *ssl = bev ? bufferevent_openssl_get_ssl(bev) : NULL;
    if (!ssl || !SSL_is_init_finished(ssl) || (SSL_get_shutdown(ssl) & SSL_SENT_SHUTDOWN))
        return;
    SSL_shutdown(ssl); /* sets SSL_SENT_SHUTDOWN even when the write would block */
    ERR_clear_error();
}

void zf_tls_free(void)
{
    SSL_CTX_free(current);
    current = NULL;
    X509_free(mem_cert);
    EVP_PKEY_free(mem_key);
    mem_cert = NULL;
    mem_key = NULL;
}
