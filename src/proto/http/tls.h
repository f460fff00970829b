/* TLS for the https listeners: one server SSL_CTX (OpenSSL 3) shared by every
 * new handshake, swapped as a whole on SIGHUP.
 *
 * Policy: TLS 1.2 and 1.3 only, ECDHE + AEAD ciphers for 1.2 (the TLS 1.3
 * defaults), no renegotiation, no compression, ALPN "h2" (when HTTP/2 is on)
 * and "http/1.1", session resumption through the server-side session cache
 * and session tickets (ticket keys survive a reload).
 *
 * The certificate comes from tls.cert (leaf first, optionally followed by
 * its chain), tls.key, and optionally tls.chain. Without tls.cert a
 * self-signed certificate for localhost is generated with the OpenSSL API on
 * first start and kept in <server.state_dir>/tls/ (in memory only when no
 * state dir is set).
 *
 * Everything here runs on the loop thread (start-up, accept, SIGHUP). */
#ifndef ZF_TLS_H
#define ZF_TLS_H

#include <openssl/ssl.h>
#include <stdint.h>

struct zf_tls_config {
    char *cert;    /* PEM: leaf certificate, optionally followed by intermediates */
    char *key;     /* PEM private key; defaults to cert when NULL */
    char *chain;   /* PEM: extra intermediates */
    char *ciphers; /* TLS 1.2 cipher list (OpenSSL syntax) */
    uint64_t session_timeout_ms;
    int session_tickets;
    uint64_t handshake_timeout_ms;
};
extern struct zf_tls_config zf_tls_cfg;

/* Builds the server context from the config (or the self-signed
 * certificate). h2: offer "h2" by ALPN. Returns ZF_OK, or ZF_ERROR with a
 * clear message logged (unreadable file, bad PEM, key not matching the
 * certificate). Start-up only. */
int zf_tls_init(int h2);

/* Builds a new context from the same files and swaps it in for new
 * handshakes; connections already up keep the old one until they close
 * (OpenSSL counts the references). On failure the old context stays and the
 * error is logged. Returns ZF_OK or ZF_ERROR. */
int zf_tls_reload(void);

/* A new server SSL for one accepted connection (caller owns it), or NULL
 * when out of memory. */
SSL *zf_tls_new_ssl(void);

/* True when the handshake chose "h2" by ALPN. */
int zf_tls_alpn_h2(SSL *ssl);

/* Writes "TLSv1.3 TLS_AES_128_GCM_SHA256 h2" into buf (for log lines). */
void zf_tls_describe(SSL *ssl, char *buf, size_t size);

/* Sends close_notify (best effort, written straight to the non-blocking
 * socket) on a TLS bufferevent whose connection is about to be closed, once
 * per connection. OpenSSL removes from the server-side session cache the
 * session of a connection freed without it, so TLS 1.2 session-ID
 * resumption needs it on every clean close. Does nothing on a plain
 * bufferevent, before the handshake finished, or when already sent. */
struct bufferevent;
void zf_tls_close_notify(struct bufferevent *bev);

/* Frees the context (at exit). */
void zf_tls_free(void);

#endif
