// float16 <-> float32 conversion of whole slices with the CPU's F16C
// instructions (x86-64), used around the GEMM of the fp16 LoRA path; see
// half.go. Elsewhere the functions report that they cannot, and Go
// converts.
#include <stddef.h>
#include <stdint.h>
#include "blas.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

__attribute__((target("avx,f16c"))) static void widen_f16c(float *dst, const uint16_t *src, size_t n) {
	size_t i = 0;
	for (; i + 8 <= n; i += 8)
		_mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
	for (; i < n; i++)
		dst[i] = _cvtsh_ss(src[i]);
}

__attribute__((target("avx,f16c"))) static void narrow_f16c(uint16_t *dst, const float *src, size_t n) {
	size_t i = 0;
	for (; i + 8 <= n; i += 8)
		_mm_storeu_si128((__m128i *)(dst + i),
		                 _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
	for (; i < n; i++)
		dst[i] = _cvtss_sh(src[i], _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}

int shira_half_supported(void) {
	__builtin_cpu_init();
	return __builtin_cpu_supports("avx") && __builtin_cpu_supports("f16c");
}

void shira_half_widen(float *dst, const uint16_t *src, size_t n) { widen_f16c(dst, src, n); }
void shira_half_narrow(uint16_t *dst, const float *src, size_t n) { narrow_f16c(dst, src, n); }
#else
int shira_half_supported(void) { return 0; }
void shira_half_widen(float *dst, const uint16_t *src, size_t n) { (void)dst, (void)src, (void)n; }
void shira_half_narrow(uint16_t *dst, const float *src, size_t n) { (void)dst, (void)src, (void)n; }
#endif
