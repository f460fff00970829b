/* What OpenSSL itself keeps per idle TLS server connection: the floor under
 * any server's wss:// idle memory that holds one SSL object per connection.
 *
 *   gcc -O2 -o tls_floor bench/tls_floor.c -lssl -lcrypto
 *   tls_floor CERT KEY [N]          (N connections, default 1,000)
 *
 * N client/server pairs over socketpairs (a socket BIO on each side, as in
 * zfront) complete a handshake with zfront's server settings (TLS 1.2-1.3,
 * X25519/P-256/P-384, session cache and tickets, SSL_MODE_RELEASE_BUFFERS,
 * read ahead), exchange one record each way, and the clients are freed.
 * Every allocation OpenSSL makes through CRYPTO_malloc is recorded with its
 * source file and line (CRYPTO_set_mem_functions), so what stays allocated
 * for the N idle server connections is reported per connection and per
 * allocation site, with glibc's own per-chunk size (malloc_usable_size).
 * Output: a table, then one JSON line. Loopback only: no network at all. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <malloc.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* ------------------------------------------------ allocation records */

struct rec {
    void *p;          /* NULL: empty slot; (void *)1: removed */
    size_t n;         /* requested size */
    const char *file; /* OpenSSL's source file and line */
    int line;
};

#define SLOTS (1u << 22)
static struct rec *slots;
static int recording;
static size_t live;

static size_t slot_of(void *p)
{
    return (size_t)(((uintptr_t)p >> 4) * 0x9E3779B97F4A7C15ull >> 42) & (SLOTS - 1);
}

static void remember(void *p, size_t n, const char *file, int line)
{
    if (!recording || !p || live >= SLOTS / 2)
        return;
    for (size_t i = slot_of(p);; i = (i + 1) & (SLOTS - 1))
        if (slots[i].p == NULL || slots[i].p == (void *)1) {
            slots[i] = (struct rec){p, n, file ? file : "?", line};
            live++;
            return;
        }
}

static void forget(void *p)
{
    if (!p)
        return;
    for (size_t i = slot_of(p); slots[i].p; i = (i + 1) & (SLOTS - 1))
        if (slots[i].p == p) {
            slots[i].p = (void *)1;
            live--;
            return;
        }
}

static void *rec_malloc(size_t n, const char *file, int line)
{
    void *p = malloc(n);
    remember(p, n, file, line);
    return p;
}

static void *rec_realloc(void *old, size_t n, const char *file, int line)
{
    forget(old);
    void *p = realloc(old, n);
    remember(p, n, file, line);
    return p;
}

static void rec_free(void *p, const char *file, int line)
{
    (void)file;
    (void)line;
    forget(p);
    free(p);
}

/* ------------------------------------------------ connections */

static SSL_CTX *server_ctx(const char *cert, const char *key)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx)
        return NULL;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
                                 SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_IGNORE_UNEXPECTED_EOF);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set1_groups_list(ctx, "X25519:P-256:P-384");
    static const unsigned char sid_ctx[] = "zfront";
    SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof sid_ctx - 1);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

/* Drives both ends until both finished the handshake; 0 or -1. */
static int handshake(SSL *c, SSL *s)
{
    for (int i = 0; i < 1000; i++) {
        int a = SSL_do_handshake(c), b = SSL_do_handshake(s);
        if (a == 1 && b == 1)
            return 0;
        if ((a != 1 && SSL_get_error(c, a) != SSL_ERROR_WANT_READ) ||
            (b != 1 && SSL_get_error(s, b) != SSL_ERROR_WANT_READ))
            return -1;
    }
    return -1;
}

/* One record each way (the client's reads the server's tickets too). */
static int exchange(SSL *c, SSL *s)
{
    char buf[64];
    if (SSL_write(c, "ping", 4) != 4 || SSL_read(s, buf, sizeof buf) != 4)
        return -1;
    if (SSL_write(s, "pong", 4) != 4)
        return -1;
    for (int i = 0; i < 100; i++)
        if (SSL_read(c, buf, sizeof buf) == 4)
            return 0;
    return -1;
}

static int pair(SSL_CTX *sctx, SSL_CTX *cctx, SSL **server)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
        return -1;
    fcntl(sv[0], F_SETFL, O_NONBLOCK);
    fcntl(sv[1], F_SETFL, O_NONBLOCK);
    int saved = recording;
    recording = 0; /* the client's allocations are not the server's */
    SSL *c = SSL_new(cctx);
    recording = saved;
    SSL *s = SSL_new(sctx);
    int ok = c && s;
    if (ok) {
        recording = 0;
        SSL_set_fd(c, sv[0]);
        recording = saved;
        SSL_set_fd(s, sv[1]);
        SSL_set_connect_state(c);
        SSL_set_accept_state(s);
        SSL_set_read_ahead(s, 1);
        ok = handshake(c, s) == 0 && exchange(c, s) == 0;
    }
    recording = 0;
    SSL_free(c);
    recording = saved;
    close(sv[0]);
    if (!ok) {
        SSL_free(s);
        close(sv[1]);
        return -1;
    }
    *server = s;
    return 0;
}

/* ------------------------------------------------ report */

static int by_site(const void *a, const void *b)
{
    const struct rec *x = a, *y = b;
    int c = strcmp(x->file, y->file);
    return c ? c : x->line - y->line;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s CERT KEY [N]\n", argv[0]);
        return 2;
    }
    int n = argc > 3 ? atoi(argv[3]) : 1000;
    if (n < 1 || n > 100000) {
        fprintf(stderr, "N: 1 to 100,000\n");
        return 2;
    }
    slots = calloc(SLOTS, sizeof *slots);
    if (!slots || !CRYPTO_set_mem_functions(rec_malloc, rec_realloc, rec_free)) {
        fprintf(stderr, "cannot record OpenSSL's allocations\n");
        return 1;
    }
    SSL_CTX *sctx = server_ctx(argv[1], argv[2]);
    SSL_CTX *cctx = SSL_CTX_new(TLS_client_method());
    if (!sctx || !cctx) {
        ERR_print_errors_fp(stderr);
        return 1;
    }
    SSL_CTX_set_mode(cctx, SSL_MODE_RELEASE_BUFFERS);
    SSL **servers = calloc((size_t)n, sizeof *servers);
    SSL *warm;
    for (int i = 0; i < 3; i++) /* lazily made shared state is not per connection */
        if (pair(sctx, cctx, &warm) == 0)
            SSL_free(warm);
    recording = 1;
    for (int i = 0; i < n; i++)
        if (pair(sctx, cctx, &servers[i]) != 0) {
            fprintf(stderr, "handshake %d failed\n", i);
            ERR_print_errors_fp(stderr);
            return 1;
        }
    recording = 0;

    size_t count = 0;
    for (size_t i = 0; i < SLOTS; i++)
        if (slots[i].p && slots[i].p != (void *)1)
            slots[count++] = slots[i];
    qsort(slots, count, sizeof *slots, by_site);
    printf("OpenSSL %s, %s, %s: bytes kept per idle server connection (N = %d)\n\n",
           OpenSSL_version(OPENSSL_VERSION), SSL_get_version(servers[0]),
           SSL_get_cipher(servers[0]), n);
    printf("| allocation site | blocks | requested | malloc'd |\n|---|---|---|---|\n");
    double req_total = 0, usable_total = 0;
    size_t blocks_total = 0;
    for (size_t i = 0; i < count;) {
        size_t j = i, req = 0, usable = 0;
        for (; j < count && by_site(&slots[i], &slots[j]) == 0; j++) {
            req += slots[j].n;
            usable += malloc_usable_size(slots[j].p) + sizeof(size_t); /* + glibc's header */
        }
        if (req >= (size_t)n * 16) /* sites under 16 bytes a connection are summed only */
            printf("| %s:%d | %.1f | %.0f | %.0f |\n", slots[i].file, slots[i].line,
                   (double)(j - i) / n, (double)req / n, (double)usable / n);
        req_total += (double)req;
        usable_total += (double)usable;
        blocks_total += j - i;
        i = j;
    }
    printf("| **total** | %.1f | **%.0f** | **%.0f** |\n", (double)blocks_total / n, req_total / n,
           usable_total / n);
    printf("{\"openssl\": \"%s\", \"protocol\": \"%s\", \"cipher\": \"%s\", \"n\": %d, "
           "\"blocks_per_conn\": %.1f, \"requested_per_conn\": %.0f, \"malloced_per_conn\": %.0f}\n",
           OpenSSL_version(OPENSSL_VERSION), SSL_get_version(servers[0]),
           SSL_get_cipher(servers[0]), n, (double)blocks_total / n, req_total / n,
           usable_total / n);
    for (int i = 0; i < n; i++)
        SSL_free(servers[i]);
    SSL_CTX_free(sctx);
    SSL_CTX_free(cctx);
    return 0;
}
