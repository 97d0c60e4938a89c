// The C half of internal/ortshim: typed calls through the OrtApi function
// table. The signatures below are written for shira-ort from the ORT C API
// documentation; the slots come from api_index.h (generated, see gen/main.go).

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api_index.h"
#include "shim.h"

typedef struct {
  const void *(*GetApi)(uint32_t version);
  const char *(*GetVersionString)(void);
} shim_api_base;

static void *const *api;         // the OrtApi table, viewed as slots
static OrtMemoryInfo *cpu_info;  // for tensors over caller memory
static OrtAllocator *default_alloc;
static void *lib_handle;  // the dlopen handle of the library (kept open)
static const char *version_string;  // GetVersionString of the library
// env is the process's OrtEnv. ORT keeps one reference-counted instance
// per process: CreateEnv while it exists returns it (ignoring its
// arguments) and counts a reference, ReleaseEnv drops one. shim_init takes
// a reference and never drops it, so the env outlives every session the
// shim creates, whatever the application does with onnxruntime_go.
static OrtEnv *env;

// FN casts slot `name` of the OrtApi table to the function type `type`.
#define FN(name, type) ((type)api[SHIM_IDX_##name])

typedef OrtStatus *(*st_create_env)(int, const char *, OrtEnv **);
typedef OrtStatus *(*st_create_cpu_info)(int, int, OrtMemoryInfo **);
typedef OrtStatus *(*st_get_alloc)(OrtAllocator **);
typedef const char *(*st_error_message)(const OrtStatus *);
typedef void (*st_release)(void *);
typedef OrtStatus *(*st_alloc_free)(OrtAllocator *, void *);
typedef OrtStatus *(*st_add_init)(OrtSessionOptions *, const char *, const OrtValue *);
typedef OrtStatus *(*st_add_ext)(OrtSessionOptions *, const char *const *, const OrtValue *const *, size_t);
typedef OrtStatus *(*st_has_cfg)(const OrtSessionOptions *, const char *, int *);
typedef OrtStatus *(*st_create_ro)(OrtRunOptions **);
typedef OrtStatus *(*st_add_ro)(OrtRunOptions *, const char *, const char *);
typedef OrtStatus *(*st_count)(const OrtSession *, size_t *);
typedef OrtStatus *(*st_name)(const OrtSession *, size_t, OrtAllocator *, char **);
typedef OrtStatus *(*st_type_info)(const OrtSession *, size_t, OrtTypeInfo **);
typedef OrtStatus *(*st_onnx_type)(const OrtTypeInfo *, int *);
typedef OrtStatus *(*st_cast_tensor)(const OrtTypeInfo *, const OrtTensorTypeAndShapeInfo **);
typedef OrtStatus *(*st_elem_type)(const OrtTensorTypeAndShapeInfo *, int *);
typedef OrtStatus *(*st_dims_count)(const OrtTensorTypeAndShapeInfo *, size_t *);
typedef OrtStatus *(*st_dims)(const OrtTensorTypeAndShapeInfo *, int64_t *, size_t);
typedef OrtStatus *(*st_sym_dims)(const OrtTensorTypeAndShapeInfo *, const char **, size_t);
typedef OrtStatus *(*st_elem_count)(const OrtTensorTypeAndShapeInfo *, size_t *);
typedef OrtStatus *(*st_type_shape)(const OrtValue *, OrtTensorTypeAndShapeInfo **);
typedef OrtStatus *(*st_value_type)(const OrtValue *, int *);
typedef OrtStatus *(*st_mutable_data)(OrtValue *, void **);
typedef OrtStatus *(*st_create_tensor)(const OrtMemoryInfo *, void *, size_t, const int64_t *, size_t, int,
                                       OrtValue **);
typedef OrtStatus *(*st_run)(OrtSession *, const OrtRunOptions *, const char *const *, const OrtValue *const *, size_t,
                             const char *const *, size_t, OrtValue **);

static char *fmt_error(const char *prefix, OrtStatus *st) {
  char buf[1024];
  snprintf(buf, sizeof buf, "%s: %s", prefix, FN(GetErrorMessage, st_error_message)(st));
  FN(ReleaseStatus, st_release)(st);
  return strdup(buf);
}

char *shim_init(const char *path, uint32_t api_version) {
  char buf[1024];
  if (api != NULL) return NULL;
  void *h = dlopen(path, RTLD_NOW | RTLD_NOLOAD);
  if (h == NULL) {
    const char *e = dlerror();
    snprintf(buf, sizeof buf, "library %s is not loaded by onnxruntime_go: %s", path, e ? e : "not loaded");
    return strdup(buf);
  }
  // h stays open: the library must outlive every pointer taken from it.
  const shim_api_base *(*get_base)(void) = (const shim_api_base *(*)(void))dlsym(h, "OrtGetApiBase");
  if (get_base == NULL) {
    snprintf(buf, sizeof buf, "OrtGetApiBase not found in %s", path);
    return strdup(buf);
  }
  const shim_api_base *base = get_base();
  version_string = base->GetVersionString();
  const void *table = base->GetApi(api_version);
  if (table == NULL) {
    snprintf(buf, sizeof buf, "ONNX Runtime %s at %s does not provide C API version %u", base->GetVersionString(),
             path, api_version);
    return strdup(buf);
  }
  void *const *slots = (void *const *)table;
  OrtMemoryInfo *info = NULL;
  OrtStatus *st = ((st_create_cpu_info)slots[SHIM_IDX_CreateCpuMemoryInfo])(SHIM_OrtArenaAllocator,
                                                                          SHIM_OrtMemTypeDefault, &info);
  api = slots;
  if (st != NULL) {
    api = NULL;
    return fmt_error("CreateCpuMemoryInfo", st);
  }
  OrtAllocator *alloc = NULL;
  st = FN(GetAllocatorWithDefaultOptions, st_get_alloc)(&alloc);
  if (st != NULL) {
    char *e = fmt_error("GetAllocatorWithDefaultOptions", st);
    FN(ReleaseMemoryInfo, st_release)(info);
    api = NULL;
    return e;
  }
  OrtEnv *e = NULL;
  st = FN(CreateEnv, st_create_env)(SHIM_ORT_LOGGING_LEVEL_ERROR, "shira-ort", &e);
  if (st != NULL) {
    char *msg = fmt_error("CreateEnv", st);
    FN(ReleaseMemoryInfo, st_release)(info);
    api = NULL;
    return msg;
  }
  env = e;
  if (!shim_env_check()) {  // a second CreateEnv must return the same instance
    FN(ReleaseEnv, st_release)(e);
    FN(ReleaseMemoryInfo, st_release)(info);
    env = NULL;
    api = NULL;
    return strdup("CreateEnv did not return the process's single environment");
  }
  cpu_info = info;
  default_alloc = alloc;
  lib_handle = h;
  return NULL;
}

const char *shim_version_string(void) { return version_string ? version_string : ""; }

char *shim_tracking_enable(void) {
  if (api == NULL || env == NULL) return strdup("the shim is not initialized");
  return track_register(api, env);
}

int shim_env_check(void) {
  OrtEnv *e = NULL;
  OrtStatus *st = FN(CreateEnv, st_create_env)(SHIM_ORT_LOGGING_LEVEL_ERROR, "shira-ort-check", &e);
  if (st != NULL) {
    FN(ReleaseStatus, st_release)(st);
    return 0;
  }
  int same = e == env;
  FN(ReleaseEnv, st_release)(e);
  return same;
}

typedef OrtStatus *(*st_create_so)(OrtSessionOptions **);
typedef OrtStatus *(*st_so_int)(OrtSessionOptions *, int);
typedef OrtStatus *(*st_so_str)(OrtSessionOptions *, const char *);
typedef OrtStatus *(*st_so_kv)(OrtSessionOptions *, const char *, const char *);
typedef OrtStatus *(*st_append_ep)(OrtSessionOptions *, const char *, const char *const *, const char *const *,
                                   size_t);
typedef OrtStatus *(*st_create_session)(const OrtEnv *, const char *, const OrtSessionOptions *, OrtSession **);
typedef OrtStatus *(*st_create_session_arr)(const OrtEnv *, const void *, size_t, const OrtSessionOptions *,
                                            OrtSession **);

OrtStatus *shim_create_session_options(OrtSessionOptions **out) {
  return FN(CreateSessionOptions, st_create_so)(out);
}

void shim_release_session_options(OrtSessionOptions *o) {
  if (o != NULL) FN(ReleaseSessionOptions, st_release)(o);
}

OrtStatus *shim_set_intra_op_threads(OrtSessionOptions *o, int n) { return FN(SetIntraOpNumThreads, st_so_int)(o, n); }

OrtStatus *shim_set_inter_op_threads(OrtSessionOptions *o, int n) { return FN(SetInterOpNumThreads, st_so_int)(o, n); }

OrtStatus *shim_set_graph_optimization_level(OrtSessionOptions *o, int level) {
  return FN(SetSessionGraphOptimizationLevel, st_so_int)(o, level);
}

// ORTCHAR_T is char everywhere the shim builds (it uses dlopen).
OrtStatus *shim_enable_profiling(OrtSessionOptions *o, const char *prefix) {
  return FN(EnableProfiling, st_so_str)(o, prefix);
}

OrtStatus *shim_add_session_config_entry(OrtSessionOptions *o, const char *key, const char *value) {
  return FN(AddSessionConfigEntry, st_so_kv)(o, key, value);
}

OrtStatus *shim_append_execution_provider(OrtSessionOptions *o, const char *name, const char *const *keys,
                                          const char *const *values, size_t n) {
  return FN(SessionOptionsAppendExecutionProvider, st_append_ep)(o, name, keys, values, n);
}

OrtStatus *shim_create_session(const char *path, const OrtSessionOptions *o, OrtSession **out) {
  OrtSessionOptions *def = NULL;
  if (o == NULL) {
    OrtStatus *st = shim_create_session_options(&def);
    if (st != NULL) return st;
    o = def;
  }
  OrtStatus *st = FN(CreateSession, st_create_session)(env, path, o, out);
  shim_release_session_options(def);
  return st;
}

OrtStatus *shim_create_session_from_array(const void *data, size_t n, const OrtSessionOptions *o, OrtSession **out) {
  OrtSessionOptions *def = NULL;
  if (o == NULL) {
    OrtStatus *st = shim_create_session_options(&def);
    if (st != NULL) return st;
    o = def;
  }
  OrtStatus *st = FN(CreateSessionFromArray, st_create_session_arr)(env, data, n, o, out);
  shim_release_session_options(def);
  return st;
}

void shim_release_session(OrtSession *s) {
  if (s != NULL) FN(ReleaseSession, st_release)(s);
}

const char *shim_status_message(OrtStatus *st) { return FN(GetErrorMessage, st_error_message)(st); }

void shim_release_status(OrtStatus *st) { FN(ReleaseStatus, st_release)(st); }

void shim_free_string(char *s) {
  if (s == NULL) return;
  OrtStatus *st = FN(AllocatorFree, st_alloc_free)(default_alloc, s);
  if (st != NULL) FN(ReleaseStatus, st_release)(st);
}

OrtStatus *shim_add_initializer(OrtSessionOptions *o, const char *name, const OrtValue *v) {
  return FN(AddInitializer, st_add_init)(o, name, v);
}

OrtStatus *shim_add_external_initializers(OrtSessionOptions *o, const char *const *names, const OrtValue *const *vs,
                                          size_t n) {
  return FN(AddExternalInitializers, st_add_ext)(o, names, vs, n);
}

OrtStatus *shim_has_session_config_entry(const OrtSessionOptions *o, const char *key, int *out) {
  return FN(HasSessionConfigEntry, st_has_cfg)(o, key, out);
}

OrtStatus *shim_create_run_options(OrtRunOptions **out) { return FN(CreateRunOptions, st_create_ro)(out); }

void shim_release_run_options(OrtRunOptions *ro) { FN(ReleaseRunOptions, st_release)(ro); }

OrtStatus *shim_add_run_config_entry(OrtRunOptions *ro, const char *key, const char *value) {
  return FN(AddRunConfigEntry, st_add_ro)(ro, key, value);
}

typedef OrtStatus *(*st_ro_flag)(OrtRunOptions *);

OrtStatus *shim_run_options_set_terminate(OrtRunOptions *ro) { return FN(RunOptionsSetTerminate, st_ro_flag)(ro); }

OrtStatus *shim_run_options_unset_terminate(OrtRunOptions *ro) {
  return FN(RunOptionsUnsetTerminate, st_ro_flag)(ro);
}

OrtStatus *shim_session_count(const OrtSession *s, int kind, size_t *out) {
  switch (kind) {
    case SHIM_INPUT:
      return FN(SessionGetInputCount, st_count)(s, out);
    case SHIM_OUTPUT:
      return FN(SessionGetOutputCount, st_count)(s, out);
    default:
      return FN(SessionGetOverridableInitializerCount, st_count)(s, out);
  }
}

OrtStatus *shim_session_name(const OrtSession *s, int kind, size_t i, char **out) {
  switch (kind) {
    case SHIM_INPUT:
      return FN(SessionGetInputName, st_name)(s, i, default_alloc, out);
    case SHIM_OUTPUT:
      return FN(SessionGetOutputName, st_name)(s, i, default_alloc, out);
    default:
      return FN(SessionGetOverridableInitializerName, st_name)(s, i, default_alloc, out);
  }
}

OrtStatus *shim_session_type_info(const OrtSession *s, int kind, size_t i, OrtTypeInfo **out) {
  switch (kind) {
    case SHIM_INPUT:
      return FN(SessionGetInputTypeInfo, st_type_info)(s, i, out);
    case SHIM_OUTPUT:
      return FN(SessionGetOutputTypeInfo, st_type_info)(s, i, out);
    default:
      return FN(SessionGetOverridableInitializerTypeInfo, st_type_info)(s, i, out);
  }
}

void shim_release_type_info(OrtTypeInfo *ti) { FN(ReleaseTypeInfo, st_release)(ti); }

// shape_of fills elem, rank, dims and (when syms != NULL) symbolic names.
static OrtStatus *shape_of(const OrtTensorTypeAndShapeInfo *t, int32_t *elem, size_t *rank, int64_t *dims,
                           const char **syms, size_t cap) {
  int e = 0;
  OrtStatus *st = FN(GetTensorElementType, st_elem_type)(t, &e);
  if (st != NULL) return st;
  *elem = (int32_t)e;
  st = FN(GetDimensionsCount, st_dims_count)(t, rank);
  if (st != NULL) return st;
  if (*rank > cap || *rank == 0) return NULL;  // caller retries with a larger buffer
  st = FN(GetDimensions, st_dims)(t, dims, *rank);
  if (st != NULL || syms == NULL) return st;
  return FN(GetSymbolicDimensions, st_sym_dims)(t, syms, *rank);
}

OrtStatus *shim_type_info_tensor(const OrtTypeInfo *ti, int *is_tensor, int32_t *elem, size_t *rank, int64_t *dims,
                                 const char **syms, size_t cap) {
  int kind = 0;
  OrtStatus *st = FN(GetOnnxTypeFromTypeInfo, st_onnx_type)(ti, &kind);
  if (st != NULL) return st;
  *is_tensor = kind == SHIM_ONNX_TYPE_TENSOR;
  *elem = 0;
  *rank = 0;
  if (!*is_tensor) return NULL;
  const OrtTensorTypeAndShapeInfo *t = NULL;
  st = FN(CastTypeInfoToTensorInfo, st_cast_tensor)(ti, &t);  // owned by ti
  if (st != NULL || t == NULL) return st;
  return shape_of(t, elem, rank, dims, syms, cap);
}

OrtStatus *shim_create_tensor(void *data, size_t len, const int64_t *shape, size_t rank, int32_t elem,
                              OrtValue **out) {
  return FN(CreateTensorWithDataAsOrtValue, st_create_tensor)(cpu_info, data, len, shape, rank, (int)elem, out);
}

void shim_release_value(OrtValue *v) {
  if (v != NULL) FN(ReleaseValue, st_release)(v);
}

OrtStatus *shim_tensor_meta(OrtValue *v, int *is_tensor, int32_t *elem, size_t *rank, int64_t *dims, size_t cap,
                            size_t *count, void **data) {
  int kind = 0;
  OrtStatus *st = FN(GetValueType, st_value_type)(v, &kind);
  if (st != NULL) return st;
  *is_tensor = kind == SHIM_ONNX_TYPE_TENSOR;
  if (!*is_tensor) return NULL;
  OrtTensorTypeAndShapeInfo *t = NULL;
  st = FN(GetTensorTypeAndShape, st_type_shape)(v, &t);
  if (st != NULL) return st;
  st = shape_of(t, elem, rank, dims, NULL, cap);
  if (st == NULL) st = FN(GetTensorShapeElementCount, st_elem_count)(t, count);
  FN(ReleaseTensorTypeAndShapeInfo, st_release)(t);
  if (st != NULL) return st;
  *data = NULL;
  if (*count == 0) return NULL;
  return FN(GetTensorMutableData, st_mutable_data)(v, data);
}

OrtStatus *shim_run(OrtSession *s, const OrtRunOptions *ro, const char *const *in_names, const OrtValue *const *ins,
                    size_t n_in, const char *const *out_names, size_t n_out, OrtValue **outs) {
  return FN(Run, st_run)(s, ro, in_names, ins, n_in, out_names, n_out, outs);
}

typedef OrtStatus *(*st_create_lora)(const char *, OrtAllocator *, OrtLoraAdapter **);
typedef OrtStatus *(*st_create_lora_arr)(const void *, size_t, OrtAllocator *, OrtLoraAdapter **);
typedef OrtStatus *(*st_add_lora)(OrtRunOptions *, const OrtLoraAdapter *);
typedef OrtStatus *(*st_avail)(char ***, int *);
typedef OrtStatus *(*st_release_avail)(char **, int);
typedef OrtStatus *(*st_end_prof)(OrtSession *, OrtAllocator *, char **);
typedef OrtStatus *(*st_nnapi)(OrtSessionOptions *, uint32_t);

OrtStatus *shim_create_lora_adapter(const char *path, OrtLoraAdapter **out) {
  return FN(CreateLoraAdapter, st_create_lora)(path, NULL, out);
}

OrtStatus *shim_create_lora_adapter_from_array(const void *bytes, size_t n, OrtLoraAdapter **out) {
  return FN(CreateLoraAdapterFromArray, st_create_lora_arr)(bytes, n, NULL, out);
}

void shim_release_lora_adapter(OrtLoraAdapter *a) {
  if (a != NULL) FN(ReleaseLoraAdapter, st_release)(a);
}

OrtStatus *shim_run_options_add_active_lora_adapter(OrtRunOptions *ro, const OrtLoraAdapter *a) {
  return FN(RunOptionsAddActiveLoraAdapter, st_add_lora)(ro, a);
}

OrtStatus *shim_available_providers(char ***out, int *n) { return FN(GetAvailableProviders, st_avail)(out, n); }

void shim_release_available_providers(char **list, int n) {
  OrtStatus *st = FN(ReleaseAvailableProviders, st_release_avail)(list, n);
  if (st != NULL) FN(ReleaseStatus, st_release)(st);
}

OrtStatus *shim_end_profiling(OrtSession *s, char **out) {
  return FN(SessionEndProfiling, st_end_prof)(s, default_alloc, out);
}

int shim_has_symbol(const char *name) { return lib_handle != NULL && dlsym(lib_handle, name) != NULL; }

OrtStatus *shim_append_nnapi(OrtSessionOptions *o, uint32_t flags, int *found) {
  st_nnapi f = lib_handle == NULL ? NULL : (st_nnapi)dlsym(lib_handle, "OrtSessionOptionsAppendExecutionProvider_Nnapi");
  *found = f != NULL;
  if (f == NULL) return NULL;
  return f(o, flags);
}

#ifdef __GLIBC__
#include <malloc.h>
void shim_trim_heap(void) { malloc_trim(0); }
int shim_fix_mmap_threshold(size_t bytes) { return mallopt(M_MMAP_THRESHOLD, (int)bytes); }
#else
void shim_trim_heap(void) {}
int shim_fix_mmap_threshold(size_t bytes) { (void)bytes; return 0; }
#endif
