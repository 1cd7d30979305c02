/* SHA-256 (FIPS 180-4), incremental interface. Portable C11, no dependencies. */
#ifndef KEEL_SHA256_H
#define KEEL_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define SHA256_BLOCK_SIZE 64
#define SHA256_DIGEST_SIZE 32

struct sha256 {
    uint32_t state[8];
    uint64_t length;                       /* bytes hashed so far */
    unsigned char block[SHA256_BLOCK_SIZE]; /* pending partial block */
    size_t used;                           /* bytes in block */
};

void sha256_init(struct sha256 *ctx);
void sha256_update(struct sha256 *ctx, const void *data, size_t len);
void sha256_final(struct sha256 *ctx, unsigned char digest[SHA256_DIGEST_SIZE]);

/* Writes the digest as 64 lower-case hex digits plus a terminating NUL. */
void sha256_hex(const unsigned char digest[SHA256_DIGEST_SIZE], char hex[2 * SHA256_DIGEST_SIZE + 1]);

#endif
