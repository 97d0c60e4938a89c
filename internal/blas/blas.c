// Loads a CBLAS library at run time (dlopen), so building the project
// needs no BLAS headers or link step; see blas.go.
#include <dlfcn.h>
#include <stddef.h>
#include "blas.h"

typedef void (*sgemm_fn)(int, int, int, int, int, int, float, const float *, int, const float *, int, float, float *,
                         int);
typedef void (*set_threads_fn)(int);
typedef int (*get_threads_fn)(void);
typedef char *(*corename_fn)(void);

static sgemm_fn sgemm;
static set_threads_fn set_threads;
static get_threads_fn get_threads;
static corename_fn corename;

int shira_blas_load(const char *path, const char **err) {
	void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (!h) {
		*err = dlerror();
		return -1;
	}
	sgemm = (sgemm_fn)dlsym(h, "cblas_sgemm");
	if (!sgemm) {
		*err = "no cblas_sgemm";
		dlclose(h);
		return -1;
	}
	set_threads = (set_threads_fn)dlsym(h, "openblas_set_num_threads");
	get_threads = (get_threads_fn)dlsym(h, "openblas_get_num_threads");
	corename = (corename_fn)dlsym(h, "openblas_get_corename");
	return 0;
}

void shira_blas_sgemm(int transA, int transB, int m, int n, int k, float alpha, const float *a, int lda,
                      const float *b, int ldb, float beta, float *c, int ldc) {
	// CBLAS enums: CblasRowMajor 101, CblasNoTrans 111, CblasTrans 112.
	sgemm(101, transA ? 112 : 111, transB ? 112 : 111, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

int shira_blas_set_threads(int n) {
	if (!set_threads) return -1;
	set_threads(n);
	return 0;
}

int shira_blas_threads(void) { return get_threads ? get_threads() : 0; }

const char *shira_blas_corename(void) { return corename ? corename() : NULL; }
