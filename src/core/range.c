/* Single byte-range requests (RFC 9110 section 14.1.2). */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "range.h"

/* Parses decimal digits at *p into *out; returns ZF_OK if at least one digit
 * was read without overflow. */
static int digits(const char **p, uint64_t *out)
{
    const char *s = *p;
    uint64_t v = 0;
    if (!isdigit((unsigned char)*s))
        return ZF_ERROR;
    while (isdigit((unsigned char)*s)) {
        uint64_t d = (uint64_t)(*s - '0');
        if (v > (UINT64_MAX - d) / 10)
            return ZF_ERROR;
        v = v * 10 + d;
        s++;
    }
    *p = s;
    *out = v;
    return ZF_OK;
}

static const char *skip_ows(const char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    return s;
}

int zf_range_parse(const char *value, uint64_t size, uint64_t *start, uint64_t *len)
{
    const char *s = skip_ows(value);
    if (strncasecmp(s, "bytes", 5) != 0)
        return ZF_DECLINED;
    s = skip_ows(s + 5);
    if (*s != '=')
        return ZF_DECLINED;
    s = skip_ows(s + 1);
    if (strchr(s, ','))
        return ZF_DECLINED; /* several ranges: the whole representation */
    uint64_t first = 0, last = 0;
    int has_first = 0, has_last = 0;
    if (*s != '-') {
        if (digits(&s, &first) != ZF_OK)
            return ZF_DECLINED;
        has_first = 1;
    }
    if (*s != '-')
        return ZF_DECLINED;
    s++;
    if (isdigit((unsigned char)*s)) {
        if (digits(&s, &last) != ZF_OK)
            return ZF_DECLINED;
        has_last = 1;
    }
    s = skip_ows(s);
    if (*s || (!has_first && !has_last))
        return ZF_DECLINED;
    if (has_first && has_last && last < first)
        return ZF_DECLINED; /* invalid range-spec: ignore the header */
    if (!has_first) {
        /* suffix range: the last `last` bytes */
        if (last == 0 || size == 0)
            return ZF_ERROR;
        if (last > size)
            last = size;
        *start = size - last;
        *len = last;
        return ZF_OK;
    }
    if (first >= size)
        return ZF_ERROR;
    if (!has_last || last >= size)
        last = size - 1;
    *start = first;
    *len = last - first + 1;
    return ZF_OK;
}
