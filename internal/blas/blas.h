#ifndef SHIRA_BLAS_H
#define SHIRA_BLAS_H
int shira_blas_load(const char *path, const char **err);
void shira_blas_sgemm(int transA, int transB, int m, int n, int k, float alpha, const float *a, int lda,
                      const float *b, int ldb, float beta, float *c, int ldc);
int shira_blas_set_threads(int n);
int shira_blas_threads(void);
const char *shira_blas_corename(void);

#include <stddef.h>
#include <stdint.h>
int shira_half_supported(void);
void shira_half_widen(float *dst, const uint16_t *src, size_t n);
void shira_half_narrow(uint16_t *dst, const float *src, size_t n);
#endif
