/* CRC-32 (zlib's reflected polynomial) by carry-less multiplication: the folding of
 * Gopal et al., "Fast CRC Computation for Generic Polynomials Using PCLMULQDQ Instruction"
 * (Intel, 2009). Written for feedengine from the paper, not copied from zlib-ng, Chromium
 * or Linux; the fold constants are derived below and agree with theirs.
 *
 * Only the folding is here. It turns n bytes into one 16-byte block with the same CRC
 * register, and the caller's table code reduces that block and the tail, so there is no
 * Barrett step and no SSE4.1: PCLMULQDQ and SSE2 are all it needs.
 */
#ifndef FEEDENGINE_CRC32_PCLMUL_H
#define FEEDENGINE_CRC32_PCLMUL_H

#include <stddef.h>
#include <stdint.h>

/* Fewest bytes crc32_fold_pclmul takes: its four 16-byte lanes. */
#define CRC32_PCLMUL_MIN 64

#if (defined(__x86_64__) || defined(_M_X64)) && defined(__GNUC__)

#include <immintrin.h>

/* A 128-bit lane holds a bit-reflected polynomial: bit i of the little-endian value is the
 * coefficient of x^(127-i). Moving it d bits further down the message multiplies its low
 * qword (degrees 127..64) by x^(d+64) and its high qword (63..0) by x^d. PCLMULQDQ of two
 * reflected qwords gives their product times x, so the constants are x^(d+63) and x^(d-1)
 * mod P, each stored as reflect32(x^(e-32) mod P): a qword whose bit j is the coefficient
 * of x^(63-j) holding x^32 * (x^(e-32) mod P), which is congruent to x^e. */
#define CRC32_X575 0x8f352d95u /* d = 512, four lanes ahead: low qword */
#define CRC32_X511 0x1d9513d7u /* d = 512: high qword */
#define CRC32_X191 0xae689191u /* d = 128, one lane ahead: low qword */
#define CRC32_X127 0xccaa009eu /* d = 128: high qword */

static int crc32_pclmul_supported(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("pclmul");
}

__attribute__((target("pclmul")))
static inline __m128i crc32_fold(__m128i x, __m128i k, __m128i next)
{
    return _mm_xor_si128(_mm_xor_si128(_mm_clmulepi64_si128(x, k, 0x00),
                                       _mm_clmulepi64_si128(x, k, 0x11)), next);
}

/* Fold n bytes at p (n a multiple of 16, at least CRC32_PCLMUL_MIN, any alignment) from
 * CRC register c (the inverted CRC) into out: the table code run over out from register 0
 * reaches the register that it would reach over p from c. */
__attribute__((target("pclmul")))
static void crc32_fold_pclmul(uint32_t c, const uint8_t *p, size_t n, uint8_t *out)
{
    const __m128i k512 = _mm_set_epi64x(CRC32_X511, CRC32_X575);
    const __m128i k128 = _mm_set_epi64x(CRC32_X127, CRC32_X191);
    __m128i x0 = _mm_xor_si128(_mm_loadu_si128((const __m128i *)p),
                               _mm_cvtsi32_si128((int)c));
    __m128i x1 = _mm_loadu_si128((const __m128i *)(p + 16));
    __m128i x2 = _mm_loadu_si128((const __m128i *)(p + 32));
    __m128i x3 = _mm_loadu_si128((const __m128i *)(p + 48));
    p += 64;
    n -= 64;
    while (n >= 64) {
        x0 = crc32_fold(x0, k512, _mm_loadu_si128((const __m128i *)p));
        x1 = crc32_fold(x1, k512, _mm_loadu_si128((const __m128i *)(p + 16)));
        x2 = crc32_fold(x2, k512, _mm_loadu_si128((const __m128i *)(p + 32)));
        x3 = crc32_fold(x3, k512, _mm_loadu_si128((const __m128i *)(p + 48)));
        p += 64;
        n -= 64;
    }
    x0 = crc32_fold(x0, k128, x1);
    x0 = crc32_fold(x0, k128, x2);
    x0 = crc32_fold(x0, k128, x3);
    while (n >= 16) {
        x0 = crc32_fold(x0, k128, _mm_loadu_si128((const __m128i *)p));
        p += 16;
        n -= 16;
    }
    _mm_storeu_si128((__m128i *)out, x0);
}

#else

/* Other architectures and compilers: the table code does all of it. */
static int crc32_pclmul_supported(void) { return 0; }
static void crc32_fold_pclmul(uint32_t c, const uint8_t *p, size_t n, uint8_t *out)
{
    (void)c; (void)p; (void)n; (void)out;
}

#endif
#endif
