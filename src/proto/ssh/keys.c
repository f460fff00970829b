/* SSH keys: the server's host key, the authorized_keys file and the
 * optional password hash.
 *
 * The host key is generated on first start (ed25519) and written 0600;
 * an existing key file that group or others can read is refused, as
 * OpenSSH refuses it. authorized_keys lines that carry options (from="",
 * command="", no-pty, ...) are refused rather than silently ignored:
 * an admin who wrote a restriction must not believe it is enforced. */
#include <crypt.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ssh.h"

#define KEYFILE_MAX (256 * 1024)

struct zf_ssh_authkeys {
    char *path;
    struct stat st; /* of the file as loaded, to notice changes */
    ssh_key *keys;
    size_t n, cap;
};

/* Reads a whole small file from an open fd into a NUL-terminated malloc'd
 * buffer. Returns it (caller frees) or NULL with errno set. */
static char *read_all(int fd, size_t max)
{
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    if (!buf)
        return NULL;
    for (;;) {
        if (len + 1 >= cap) {
            if (cap >= max) {
                free(buf);
                errno = EFBIG;
                return NULL;
            }
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                return NULL;
            }
            buf = nb;
            cap *= 2;
        }
        ssize_t r = read(fd, buf + len, cap - len - 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int e = errno;
            free(buf);
            errno = e;
            return NULL;
        }
        if (r == 0)
            break;
        len += (size_t)r;
    }
    buf[len] = '\0';
    return buf;
}

char *zf__ssh_fingerprint(ssh_key key)
{
    unsigned char *hash = NULL;
    size_t hlen = 0;
    if (ssh_get_publickey_hash(key, SSH_PUBLICKEY_HASH_SHA256, &hash, &hlen) != SSH_OK)
        return NULL;
    char *fp = ssh_get_fingerprint_hash(SSH_PUBLICKEY_HASH_SHA256, hash, hlen);
    ssh_clean_pubkey_hash(&hash);
    if (!fp)
        return NULL;
    char *out = strdup(fp);
    ssh_string_free_char(fp);
    return out;
}

/* Creates the directory holding `path` (and its parents) with mode 0700
 * when missing. Returns ZF_OK or ZF_ERROR (errno set). */
static int make_parent_dir(const char *path)
{
    char *copy = strdup(path);
    if (!copy)
        return ZF_ERROR;
    char *dir = dirname(copy);
    struct stat st;
    int rc = ZF_OK;
    if (stat(dir, &st) != 0) {
        if (errno != ENOENT || make_parent_dir(dir) != ZF_OK ||
            (mkdir(dir, 0700) != 0 && errno != EEXIST))
            rc = ZF_ERROR;
    }
    free(copy);
    return rc;
}

/* Generates an ed25519 key and writes it to path with mode 0600 (through a
 * temp file and rename, so a crash never leaves half a key). Returns ZF_OK
 * with *key owned by the caller, or ZF_ERROR (logged). */
static int generate_host_key(const char *path, const char *what, ssh_key *key)
{
    char *b64 = NULL;
    char tmp[4096];
    if (ssh_pki_generate(SSH_KEYTYPE_ED25519, 0, key) != SSH_OK) {
        zf_log(ZF_LOG_ERROR, NULL, "ssh: cannot generate an ed25519 %s", what);
        return ZF_ERROR;
    }
    if (ssh_pki_export_privkey_base64(*key, NULL, NULL, NULL, &b64) != SSH_OK || !b64) {
        zf_log(ZF_LOG_ERROR, NULL, "ssh: cannot encode the generated %s", what);
        goto fail;
    }
    if (make_parent_dir(path) != ZF_OK) {
        zf_log(ZF_LOG_ERROR, NULL, "ssh: cannot create the directory for %s %s: %s", what, path,
               strerror(errno));
        goto fail;
    }
    if (snprintf(tmp, sizeof tmp, "%s.tmp%ld", path, (long)getpid()) >= (int)sizeof tmp) {
        zf_log(ZF_LOG_ERROR, NULL, "ssh: %s path too long: %s", what, path);
        goto fail;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        zf_log(ZF_LOG_ERROR, NULL, "ssh: cannot create %s %s: %s", what, tmp, strerror(errno));
        goto fail;
    }
    size_t len = strlen(b64), off = 0;
    int ok = fchmod(fd, 0600) == 0;
    while (ok && off < len) {
        ssize_t w = write(fd, b64 + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        ok = w > 0;
        if (ok)
            off += (size_t)w;
    }
    ok = ok && write(fd, "\n", 1) == 1 && fsync(fd) == 0;
    ok = (close(fd) == 0) && ok;
    if (!ok || rename(tmp, path) != 0) {
        zf_log(ZF_LOG_ERROR, NULL, "ssh: cannot write %s %s: %s", what, path, strerror(errno));
        unlink(tmp);
        goto fail;
    }
    ssh_string_free_char(b64);
    char *fp = zf__ssh_fingerprint(*key);
    zf_log(ZF_LOG_INFO, NULL, "ssh: generated %s %s (ED25519 %s)", what, path, fp ? fp : "?");
    free(fp);
    return ZF_OK;
fail:
    if (b64)
        ssh_string_free_char(b64);
    ssh_key_free(*key);
    *key = NULL;
    return ZF_ERROR;
}

int zf__ssh_host_key(const char *path, const char *what, ssh_key *key)
{
    *key = NULL;
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT)
        return generate_host_key(path, what, key);
    if (fd < 0) {
        zf_log(ZF_LOG_ERROR, NULL, "ssh: cannot open %s %s: %s", what, path, strerror(errno));
        return ZF_ERROR;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        zf_log(ZF_LOG_ERROR, NULL, "ssh: %s %s is not a regular file", what, path);
        close(fd);
        return ZF_ERROR;
    }
    if ((st.st_mode & 077) != 0) {
        zf_log(ZF_LOG_ERROR, NULL,
               "ssh: refusing %s %s: it is accessible by group/others (mode %04o); "
               "chmod 600 it",
               what, path, (unsigned)(st.st_mode & 07777));
        close(fd);
        return ZF_ERROR;
    }
    if (st.st_uid != geteuid()) {
        zf_log(ZF_LOG_ERROR, NULL, "ssh: refusing %s %s: owned by uid %u, not by us", what, path,
               (unsigned)st.st_uid);
        close(fd);
        return ZF_ERROR;
    }
    char *text = read_all(fd, KEYFILE_MAX);
    close(fd);
    if (!text) {
        zf_log(ZF_LOG_ERROR, NULL, "ssh: cannot read %s %s: %s", what, path, strerror(errno));
        return ZF_ERROR;
    }
    int rc = ssh_pki_import_privkey_base64(text, NULL, NULL, NULL, key);
    OPENSSL_cleanse(text, strlen(text));
    free(text);
    if (rc != SSH_OK || !*key) {
        zf_log(ZF_LOG_ERROR, NULL,
               "ssh: %s %s is not a private key libssh can read (or has a passphrase)", what, path);
        return ZF_ERROR;
    }
    char *fp = zf__ssh_fingerprint(*key);
    zf_log(ZF_LOG_INFO, NULL, "ssh: %s %s (%s %s)", what, path,
           ssh_key_type_to_char(ssh_key_type(*key)), fp ? fp : "?");
    free(fp);
    return ZF_OK;
}

/* ---- authorized_keys ---- */

/* Bits of the RSA modulus in an "ssh-rsa" public key blob (base64), or 0
 * when the blob cannot be parsed. The blob is: string type, mpint e,
 * mpint n (RFC 4253 6.6). */
static unsigned rsa_bits(const char *b64)
{
    size_t blen = strlen(b64);
    if (blen == 0 || blen % 4 != 0 || blen > 16384)
        return 0;
    unsigned char *raw = malloc(blen);
    if (!raw)
        return 0;
    int n = EVP_DecodeBlock(raw, (const unsigned char *)b64, (int)blen);
    unsigned bits = 0;
    if (n > 0) {
        size_t len = (size_t)n, off = 0;
        if (blen >= 1 && b64[blen - 1] == '=')
            len--;
        if (blen >= 2 && b64[blen - 2] == '=')
            len--;
        for (int field = 0; field < 3; field++) {
            if (off + 4 > len)
                break;
            uint32_t fl = (uint32_t)raw[off] << 24 | (uint32_t)raw[off + 1] << 16 |
                          (uint32_t)raw[off + 2] << 8 | raw[off + 3];
            off += 4;
            if (fl > len - off)
                break;
            if (field == 2) {
                const unsigned char *p = raw + off;
                while (fl > 0 && *p == 0) {
                    p++;
                    fl--;
                }
                if (fl > 0) {
                    bits = (fl - 1) * 8;
                    for (unsigned char top = *p; top; top >>= 1)
                        bits++;
                }
            }
            off += fl;
        }
    }
    free(raw);
    return bits;
}

/* Parses one authorized_keys line. Returns the key (caller owns it), or
 * NULL for an empty/comment line (*refused 0) or a refused line (*refused
 * 1, logged with the file and line number). */
static ssh_key parse_line(char *line, const char *path, int lineno, int *refused)
{
    *refused = 0;
    char *p = line;
    while (*p == ' ' || *p == '\t')
        p++;
    if (*p == '\0' || *p == '#' || *p == '\n' || *p == '\r')
        return NULL;
    char *save = NULL;
    char *type = strtok_r(p, " \t\r\n", &save);
    char *b64 = strtok_r(NULL, " \t\r\n", &save);
    *refused = 1;
    enum ssh_keytypes_e kt = ssh_key_type_from_name(type);
    if (kt == SSH_KEYTYPE_UNKNOWN) {
        zf_log(ZF_LOG_WARN, NULL,
               "ssh: %s:%d: line refused: it starts with options or an unknown key type "
               "(\"%.40s\"); key options are not supported",
               path, lineno, type);
        return NULL;
    }
    int allowed = kt == SSH_KEYTYPE_ED25519 || kt == SSH_KEYTYPE_ECDSA_P256 ||
                  kt == SSH_KEYTYPE_ECDSA_P384 || kt == SSH_KEYTYPE_ECDSA_P521 ||
                  kt == SSH_KEYTYPE_RSA;
    if (!allowed) {
        zf_log(ZF_LOG_WARN, NULL,
               "ssh: %s:%d: line refused: key type %s is not accepted (ed25519, ecdsa and "
               "rsa >= 2048 bits are)",
               path, lineno, type);
        return NULL;
    }
    if (!b64) {
        zf_log(ZF_LOG_WARN, NULL, "ssh: %s:%d: line refused: no key after the type", path, lineno);
        return NULL;
    }
    ssh_key key = NULL;
    if (ssh_pki_import_pubkey_base64(b64, kt, &key) != SSH_OK || !key) {
        zf_log(ZF_LOG_WARN, NULL, "ssh: %s:%d: line refused: the key does not parse", path, lineno);
        return NULL;
    }
    enum ssh_keytypes_e real = ssh_key_type(key);
    if (real != kt && !(kt == SSH_KEYTYPE_ECDSA_P256 || kt == SSH_KEYTYPE_ECDSA_P384 ||
                        kt == SSH_KEYTYPE_ECDSA_P521)) {
        zf_log(ZF_LOG_WARN, NULL, "ssh: %s:%d: line refused: the key is not of type %s", path,
               lineno, type);
        ssh_key_free(key);
        return NULL;
    }
    if (kt == SSH_KEYTYPE_RSA) {
        unsigned bits = rsa_bits(b64);
        if (bits < 2048) {
            zf_log(ZF_LOG_WARN, NULL,
                   "ssh: %s:%d: line refused: RSA key of %u bits (at least 2048 needed)", path,
                   lineno, bits);
            ssh_key_free(key);
            return NULL;
        }
    }
    *refused = 0;
    return key;
}

void zf__ssh_authkeys_free(struct zf_ssh_authkeys *ak)
{
    if (!ak)
        return;
    for (size_t i = 0; i < ak->n; i++)
        ssh_key_free(ak->keys[i]);
    free(ak->keys);
    free(ak->path);
    free(ak);
}

struct zf_ssh_authkeys *zf__ssh_authkeys_load(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        zf_log(ZF_LOG_ERROR, NULL, "ssh: cannot open authorized_keys %s: %s", path,
               strerror(errno));
        return NULL;
    }
    struct zf_ssh_authkeys *ak = calloc(1, sizeof *ak);
    char *text = NULL;
    if (!ak || fstat(fd, &ak->st) != 0)
        goto fail;
    if ((ak->st.st_mode & 022) != 0) {
        zf_log(ZF_LOG_ERROR, NULL,
               "ssh: refusing authorized_keys %s: writable by group/others (mode %04o)", path,
               (unsigned)(ak->st.st_mode & 07777));
        goto fail;
    }
    text = read_all(fd, 4 * 1024 * 1024);
    if (!text) {
        zf_log(ZF_LOG_ERROR, NULL, "ssh: cannot read authorized_keys %s: %s", path,
               strerror(errno));
        goto fail;
    }
    ak->path = strdup(path);
    if (!ak->path)
        goto fail;
    int lineno = 0, refused_lines = 0;
    for (char *line = text, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        lineno++;
        int refused;
        ssh_key key = parse_line(line, path, lineno, &refused);
        refused_lines += refused;
        if (!key)
            continue;
        if (ak->n == ak->cap) {
            size_t ncap = ak->cap ? ak->cap * 2 : 8;
            ssh_key *nk = realloc(ak->keys, ncap * sizeof *nk);
            if (!nk) {
                ssh_key_free(key);
                goto fail;
            }
            ak->keys = nk;
            ak->cap = ncap;
        }
        ak->keys[ak->n++] = key;
    }
    free(text);
    close(fd);
    zf_log(ZF_LOG_INFO, NULL, "ssh: %zu key(s) accepted from %s (%d line(s) refused)", ak->n, path,
           refused_lines);
    return ak;
fail:
    free(text);
    close(fd);
    zf__ssh_authkeys_free(ak);
    return NULL;
}

void zf__ssh_authkeys_refresh(struct zf_ssh_authkeys **akp)
{
    struct zf_ssh_authkeys *ak = *akp;
    struct stat st;
    if (!ak || stat(ak->path, &st) != 0)
        return;
    if (st.st_ino == ak->st.st_ino && st.st_dev == ak->st.st_dev && st.st_size == ak->st.st_size &&
        st.st_mtim.tv_sec == ak->st.st_mtim.tv_sec &&
        st.st_mtim.tv_nsec == ak->st.st_mtim.tv_nsec && st.st_mode == ak->st.st_mode)
        return;
    struct zf_ssh_authkeys *fresh = zf__ssh_authkeys_load(ak->path);
    if (!fresh) {
        /* A broken or unsafe file must not keep old keys working forever
         * silently: an empty list refuses every key until it is fixed. */
        fresh = calloc(1, sizeof *fresh);
        if (!fresh)
            return;
        fresh->path = strdup(ak->path);
        fresh->st = st;
        if (!fresh->path) {
            free(fresh);
            return;
        }
    }
    zf__ssh_authkeys_free(ak);
    *akp = fresh;
}

int zf__ssh_authkeys_match(const struct zf_ssh_authkeys *ak, ssh_key key)
{
    if (!ak || !key)
        return 0;
    for (size_t i = 0; i < ak->n; i++)
        if (ssh_key_cmp(ak->keys[i], key, SSH_KEY_CMP_PUBLIC) == 0)
            return 1;
    return 0;
}

size_t zf__ssh_authkeys_count(const struct zf_ssh_authkeys *ak)
{
    return ak ? ak->n : 0;
}

int zf__ssh_password_ok(const char *hash, const char *password)
{
    if (!hash || !*hash || hash[0] == '*' || hash[0] == '!' || !password)
        return 0;
    struct crypt_data *cd = calloc(1, sizeof *cd);
    if (!cd)
        return 0;
    const char *out = crypt_rn(password, hash, cd, (int)sizeof *cd);
    int ok = 0;
    if (out && out[0] != '*') {
        size_t hl = strlen(hash);
        ok = strlen(out) == hl && CRYPTO_memcmp(out, hash, hl) == 0;
    }
    OPENSSL_cleanse(cd, sizeof *cd);
    free(cd);
    return ok;
}

int zf__ssh_hash_valid(const char *hash)
{
    if (!hash || hash[0] != '$')
        return 0;
    struct crypt_data *cd = calloc(1, sizeof *cd);
    if (!cd)
        return 0;
    const char *out = crypt_rn("", hash, cd, (int)sizeof *cd);
    int ok = out && out[0] != '*' && strncmp(out, hash, 3) == 0;
    free(cd);
    return ok;
}
