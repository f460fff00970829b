/* A strict reference reading of one HTTP/1.1 request's framing (RFC 9112),
 * written for the fuzz targets only: it decides where a request ends and
 * what its header fields and de-chunked body are, so that fuzz_http1 can
 * check that every request zfront accepts is read the same way by a strict
 * parser. A difference in where a request ends is how requests get smuggled
 * past a front-end, so the reference is deliberately strict; it knows no
 * limits (zfront's are checked separately) and keeps nothing but pointers
 * into the input, except the body, which it copies.
 *
 * Deliberate leniences, each matching a documented zfront choice:
 *  - any number of empty lines (CRLF) before the request line;
 *  - obs-text (bytes >= 0x80) in the request-target and in field values;
 *  - a fragment ('#') in the request-target (http-parser hands it over);
 *  - several SP between the parts of the request line (RFC 9112 3 allows it).
 * Everything else is RFC 9112 as written:
 * CRLF only, no obs-fold, one Content-Length of 1*DIGIT, a Transfer-Encoding
 * whose last coding is "chunked", no Content-Length with Transfer-Encoding,
 * chunk-size [ BWS ";" chunk-ext ] CRLF, trailer field lines like header
 * field lines. */
#ifndef ZF_FUZZ_H1REF_H
#define ZF_FUZZ_H1REF_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum { REF_OK, REF_INCOMPLETE, REF_INVALID };

#define REF_MAX_FIELDS 512

struct ref_field {
    const char *name, *value; /* into the input; value without leading/trailing OWS */
    size_t nlen, vlen;
};

struct ref_req {
    size_t consumed; /* bytes of the input this request takes, leading empty lines included */
    const char *method, *target;
    size_t mlen, tlen;
    int minor; /* HTTP/1.<minor> */
    struct ref_field f[REF_MAX_FIELDS];
    size_t nf; /* header fields (trailer fields are counted in ntrailers) */
    size_t ntrailers;
    int chunked;
    int must_close; /* RFC 9112 6.1: HTTP/1.0 with Transfer-Encoding */
    char *body;     /* malloc'd (NULL when empty) */
    size_t blen;
    const char *why; /* for REF_INVALID: "id: what was wrong" */
};

static int ref_tchar(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return 1;
    return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* field-vchar / SP / HTAB, with obs-text */
static int ref_vchar_ws(unsigned char c)
{
    return c == ' ' || c == '\t' || (c > 0x20 && c != 0x7f);
}

/* Finds the CRLF ending the line at d[pos]. Returns REF_OK with *eol at the
 * CR, REF_INCOMPLETE, or REF_INVALID for a bare CR or LF inside the line. */
static int ref_line(const char *d, size_t n, size_t pos, size_t *eol, struct ref_req *r)
{
    for (size_t i = pos; i < n; i++) {
        if (d[i] == '\n') {
            r->why = "bare-lf: bare LF";
            return REF_INVALID;
        }
        if (d[i] == '\r') {
            if (i + 1 >= n)
                return REF_INCOMPLETE;
            if (d[i + 1] != '\n') {
                r->why = "bare-cr: bare CR";
                return REF_INVALID;
            }
            *eol = i;
            return REF_OK;
        }
    }
    return REF_INCOMPLETE;
}

/* Parses one field line d[pos, eol) into *f. Returns REF_OK or REF_INVALID. */
static int ref_field_line(const char *d, size_t pos, size_t eol, struct ref_field *f,
                          struct ref_req *r)
{
    size_t i = pos;
    while (i < eol && ref_tchar((unsigned char)d[i]))
        i++;
    if (i == pos || i >= eol || d[i] != ':') {
        r->why = i == pos ? "field-name: field line without a name (or obs-fold)"
                          : "field-name: bad field name";
        return REF_INVALID;
    }
    f->name = d + pos;
    f->nlen = i - pos;
    i++;
    for (size_t k = i; k < eol; k++)
        if (!ref_vchar_ws((unsigned char)d[k])) {
            r->why = "field-value: control byte in a field value";
            return REF_INVALID;
        }
    size_t end = eol;
    while (i < end && (d[i] == ' ' || d[i] == '\t'))
        i++;
    while (end > i && (d[end - 1] == ' ' || d[end - 1] == '\t'))
        end--;
    f->value = d + i;
    f->vlen = end - i;
    return REF_OK;
}

static int ref_name_is(const struct ref_field *f, const char *name)
{
    return f->nlen == strlen(name) && strncasecmp(f->name, name, f->nlen) == 0;
}

/* Decides the body framing from the header fields: sets r->chunked or
 * *clen (UINT64_MAX for no body). Returns REF_OK or REF_INVALID. */
static int ref_framing(struct ref_req *r, uint64_t *clen)
{
    int ncl = 0, nte = 0;
    const char *last_coding = NULL;
    size_t last_len = 0;
    *clen = UINT64_MAX;
    for (size_t k = 0; k < r->nf; k++) {
        const struct ref_field *f = &r->f[k];
        if (ref_name_is(f, "Content-Length")) {
            if (ncl++) {
                r->why = "cl: several Content-Length fields";
                return REF_INVALID;
            }
            uint64_t v = 0;
            if (f->vlen == 0) {
                r->why = "cl: empty Content-Length";
                return REF_INVALID;
            }
            for (size_t i = 0; i < f->vlen; i++) {
                unsigned char c = (unsigned char)f->value[i];
                if (c < '0' || c > '9' || v > (UINT64_MAX / 2) / 10) {
                    r->why = "cl: bad Content-Length";
                    return REF_INVALID;
                }
                v = v * 10 + (c - '0');
            }
            *clen = v;
        } else if (ref_name_is(f, "Transfer-Encoding")) {
            nte++;
            /* the list elements: the last non-empty one counts */
            size_t i = 0;
            while (i < f->vlen) {
                size_t s = i;
                while (i < f->vlen && f->value[i] != ',')
                    i++;
                size_t e = i;
                while (s < e && (f->value[s] == ' ' || f->value[s] == '\t'))
                    s++;
                while (e > s && (f->value[e - 1] == ' ' || f->value[e - 1] == '\t'))
                    e--;
                if (e > s) {
                    last_coding = f->value + s;
                    last_len = e - s;
                }
                if (i < f->vlen)
                    i++;
            }
        }
    }
    if (nte) {
        if (ncl) {
            r->why = "te: Content-Length with Transfer-Encoding";
            return REF_INVALID;
        }
        if (!last_coding || last_len != 7 || strncasecmp(last_coding, "chunked", 7) != 0) {
            r->why = "te: Transfer-Encoding whose last coding is not chunked";
            return REF_INVALID;
        }
        r->chunked = 1;
        r->must_close = r->minor == 0;
        *clen = UINT64_MAX;
    }
    return REF_OK;
}

static int ref_append(struct ref_req *r, const char *p, size_t n)
{
    if (!n)
        return REF_OK;
    char *b = realloc(r->body, r->blen + n);
    if (!b)
        abort();
    memcpy(b + r->blen, p, n);
    r->body = b;
    r->blen += n;
    return REF_OK;
}

static int ref_hex(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c |= 0x20;
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Reads a chunked body from d[*pos]. Returns REF_OK (*pos after the
 * trailer section), REF_INCOMPLETE or REF_INVALID. */
static int ref_chunked(const char *d, size_t n, size_t *pos, struct ref_req *r)
{
    size_t p = *pos, eol;
    for (;;) {
        int rc = ref_line(d, n, p, &eol, r);
        if (rc != REF_OK)
            return rc;
        uint64_t size = 0;
        size_t i = p;
        while (i < eol && ref_hex((unsigned char)d[i]) >= 0) {
            if (size > (UINT64_MAX >> 5)) {
                r->why = "chunk-size: chunk size overflow";
                return REF_INVALID;
            }
            size = size * 16 + (uint64_t)ref_hex((unsigned char)d[i]);
            i++;
        }
        if (i < eol && (unsigned char)d[i] >= 0x80) {
            r->why = "chunk-size: a byte >= 0x80 in the chunk-size";
            return REF_INVALID;
        }
        if (i == p) {
            r->why = "chunk-size: chunk-size without digits";
            return REF_INVALID;
        }
        size_t ws = i;
        while (i < eol && (d[i] == ' ' || d[i] == '\t'))
            i++;
        if (i < eol) {
            if (d[i] != ';') {
                r->why = "chunk-ws: garbage after the chunk-size";
                return REF_INVALID;
            }
            for (size_t k = i + 1; k < eol; k++)
                if (!ref_vchar_ws((unsigned char)d[k])) {
                    r->why = "chunk-ext: control byte in a chunk extension";
                    return REF_INVALID;
                }
        } else if (ws < eol) {
            r->why = "chunk-ws: whitespace after the chunk-size without an extension";
            return REF_INVALID;
        }
        p = eol + 2;
        if (size == 0)
            break;
        if (n - p < size || n - p - size < 2)
            return REF_INCOMPLETE;
        if (d[p + size] != '\r' || d[p + size + 1] != '\n') {
            r->why = "chunk-data: chunk data not followed by CRLF";
            return REF_INVALID;
        }
        ref_append(r, d + p, (size_t)size);
        p += (size_t)size + 2;
    }
    /* trailer section */
    for (;;) {
        int rc = ref_line(d, n, p, &eol, r);
        if (rc != REF_OK)
            return rc;
        if (eol == p) {
            *pos = p + 2;
            return REF_OK;
        }
        struct ref_field t;
        if (ref_field_line(d, p, eol, &t, r) != REF_OK)
            return REF_INVALID;
        r->ntrailers++;
        p = eol + 2;
    }
}

/* Reads one request from d[0, n). r must be zeroed; free r->body after. */
static int ref_parse(const char *d, size_t n, struct ref_req *r)
{
    size_t p = 0, eol;
    while (n - p >= 2 && d[p] == '\r' && d[p + 1] == '\n')
        p += 2;
    int rc = ref_line(d, n, p, &eol, r);
    if (rc != REF_OK)
        return rc;
    /* request-line = method SP request-target SP HTTP-version */
    size_t i = p;
    while (i < eol && ref_tchar((unsigned char)d[i]))
        i++;
    if (i == p || i >= eol || d[i] != ' ') {
        r->why = "method: bad method";
        return REF_INVALID;
    }
    r->method = d + p;
    r->mlen = i - p;
    while (i < eol && d[i] == ' ') /* 1*SP: RFC 9112 3 allows word-boundary parsing */
        i++;
    size_t t = i;
    while (i < eol && d[i] != ' ') {
        unsigned char c = (unsigned char)d[i];
        if (c <= 0x20 || c == 0x7f) {
            r->why = "target: bad byte in the request-target";
            return REF_INVALID;
        }
        i++;
    }
    if (i == t || i >= eol) {
        r->why = "target: bad request-target";
        return REF_INVALID;
    }
    r->target = d + t;
    r->tlen = i - t;
    while (i < eol && d[i] == ' ')
        i++;
    if (eol - i != 8 || memcmp(d + i, "HTTP/1.", 7) != 0 || (d[i + 7] != '0' && d[i + 7] != '1')) {
        r->why = "version: version other than HTTP/1.0 or HTTP/1.1";
        return REF_INVALID;
    }
    r->minor = d[i + 7] - '0';
    p = eol + 2;
    /* field lines up to the empty line */
    for (;;) {
        rc = ref_line(d, n, p, &eol, r);
        if (rc != REF_OK)
            return rc;
        if (eol == p)
            break;
        if (r->nf >= REF_MAX_FIELDS) {
            r->why = "fields: too many fields for the reference";
            return REF_INVALID;
        }
        if (ref_field_line(d, p, eol, &r->f[r->nf], r) != REF_OK)
            return REF_INVALID;
        r->nf++;
        p = eol + 2;
    }
    p += 2;
    uint64_t clen;
    if (ref_framing(r, &clen) != REF_OK)
        return REF_INVALID;
    if (r->chunked) {
        rc = ref_chunked(d, n, &p, r);
        if (rc != REF_OK)
            return rc;
    } else if (clen != UINT64_MAX && clen > 0) {
        if (n - p < clen)
            return REF_INCOMPLETE;
        ref_append(r, d + p, (size_t)clen);
        p += (size_t)clen;
    }
    r->consumed = p;
    return REF_OK;
}

#endif
