// Declarations written for shira-ort (not taken from the ORT header): opaque
// ORT handle types and the shim's own C entry points. Every ORT function is
// reached through the OrtApi table by the slot numbers in api_index.h.

#ifndef SHIRA_ORTSHIM_H
#define SHIRA_ORTSHIM_H

#include <stddef.h>
#include <stdint.h>

typedef struct OrtStatus OrtStatus;
typedef struct OrtEnv OrtEnv;
typedef struct OrtSession OrtSession;
typedef struct OrtSessionOptions OrtSessionOptions;
typedef struct OrtRunOptions OrtRunOptions;
typedef struct OrtValue OrtValue;
typedef struct OrtTypeInfo OrtTypeInfo;
typedef struct OrtTensorTypeAndShapeInfo OrtTensorTypeAndShapeInfo;
typedef struct OrtMemoryInfo OrtMemoryInfo;
typedef struct OrtAllocator OrtAllocator;
typedef struct OrtLoraAdapter OrtLoraAdapter;

// Which list of a session's values an index refers to.
enum { SHIM_INPUT = 0, SHIM_OUTPUT = 1, SHIM_OVERRIDABLE = 2 };

// shim_init finds the already loaded library at path (RTLD_NOLOAD), asks it
// for API version api_version, creates the shim's CPU memory info and takes
// a reference to the process's OrtEnv (CreateEnv returns the existing
// singleton and counts a reference; a second CreateEnv must return the same
// pointer), held until the process exits.
// Returns NULL or a strdup'ed message the caller frees with free().
char *shim_init(const char *path, uint32_t api_version);
// shim_env_check calls CreateEnv once more and releases that reference:
// 1 when it returned the env shim_init holds (ORT's singleton), else 0.
int shim_env_check(void);

const char *shim_status_message(OrtStatus *st);
void shim_release_status(OrtStatus *st);
void shim_free_string(char *s);

OrtStatus *shim_create_session_options(OrtSessionOptions **out);
void shim_release_session_options(OrtSessionOptions *o);
OrtStatus *shim_set_intra_op_threads(OrtSessionOptions *o, int n);
OrtStatus *shim_set_inter_op_threads(OrtSessionOptions *o, int n);
OrtStatus *shim_set_graph_optimization_level(OrtSessionOptions *o, int level);
OrtStatus *shim_enable_profiling(OrtSessionOptions *o, const char *prefix);
OrtStatus *shim_add_session_config_entry(OrtSessionOptions *o, const char *key, const char *value);
// shim_append_execution_provider is OrtApi::SessionOptionsAppendExecutionProvider
// (provider name as ORT registers it: "XNNPACK", "QNN", "CoreML", ...).
OrtStatus *shim_append_execution_provider(OrtSessionOptions *o, const char *name, const char *const *keys,
                                          const char *const *values, size_t n);

// Sessions, created in the env shim_init holds. o may be NULL (default
// options, made and released here).
OrtStatus *shim_create_session(const char *path, const OrtSessionOptions *o, OrtSession **out);
OrtStatus *shim_create_session_from_array(const void *data, size_t n, const OrtSessionOptions *o, OrtSession **out);
void shim_release_session(OrtSession *s);

OrtStatus *shim_add_initializer(OrtSessionOptions *o, const char *name, const OrtValue *v);
// shim_add_external_initializers replaces the n external-data initializers
// names[i] of the model with copies of vs[i] before graph optimization.
OrtStatus *shim_add_external_initializers(OrtSessionOptions *o, const char *const *names, const OrtValue *const *vs,
                                          size_t n);
OrtStatus *shim_has_session_config_entry(const OrtSessionOptions *o, const char *key, int *out);
OrtStatus *shim_create_run_options(OrtRunOptions **out);
void shim_release_run_options(OrtRunOptions *ro);
OrtStatus *shim_add_run_config_entry(OrtRunOptions *ro, const char *key, const char *value);
// shim_run_options_set_terminate makes every Run using ro stop as soon as
// possible with an error; unset lets ro be used again.
OrtStatus *shim_run_options_set_terminate(OrtRunOptions *ro);
OrtStatus *shim_run_options_unset_terminate(OrtRunOptions *ro);

OrtStatus *shim_session_count(const OrtSession *s, int kind, size_t *out);
OrtStatus *shim_session_name(const OrtSession *s, int kind, size_t i, char **out);
OrtStatus *shim_session_type_info(const OrtSession *s, int kind, size_t i, OrtTypeInfo **out);
void shim_release_type_info(OrtTypeInfo *ti);
// shim_type_info_tensor reports whether ti is a tensor (*is_tensor), and if
// so its element type and rank; dims and syms (both of length cap) receive
// up to cap dimensions and symbolic names (owned by ti).
OrtStatus *shim_type_info_tensor(const OrtTypeInfo *ti, int *is_tensor, int32_t *elem, size_t *rank,
                                 int64_t *dims, const char **syms, size_t cap);

OrtStatus *shim_create_tensor(void *data, size_t len, const int64_t *shape, size_t rank, int32_t elem,
                              OrtValue **out);
void shim_release_value(OrtValue *v);
// shim_tensor_meta reports a tensor value's element type, rank, element
// count and data pointer; dims (length cap) receives up to cap dimensions.
OrtStatus *shim_tensor_meta(OrtValue *v, int *is_tensor, int32_t *elem, size_t *rank, int64_t *dims, size_t cap,
                            size_t *count, void **data);

OrtStatus *shim_run(OrtSession *s, const OrtRunOptions *ro, const char *const *in_names, const OrtValue *const *ins,
                    size_t n_in, const char *const *out_names, size_t n_out, OrtValue **outs);

// LoRA adapters (.onnx_adapter files). The allocator is NULL: parameters
// stay in host memory (memory-mapped for a file, copied for an array).
OrtStatus *shim_create_lora_adapter(const char *path, OrtLoraAdapter **out);
OrtStatus *shim_create_lora_adapter_from_array(const void *bytes, size_t n, OrtLoraAdapter **out);
void shim_release_lora_adapter(OrtLoraAdapter *a);
OrtStatus *shim_run_options_add_active_lora_adapter(OrtRunOptions *ro, const OrtLoraAdapter *a);

// shim_available_providers lists the execution providers compiled into the
// library; release the list with shim_release_available_providers.
OrtStatus *shim_available_providers(char ***out, int *n);
void shim_release_available_providers(char **list, int n);

// shim_end_profiling ends profiling on s and returns the profile file name
// (free it with shim_free_string).
OrtStatus *shim_end_profiling(OrtSession *s, char **out);

// shim_has_symbol reports whether the library exports the C symbol name.
int shim_has_symbol(const char *name);

// shim_append_nnapi calls the library's exported
// OrtSessionOptionsAppendExecutionProvider_Nnapi(o, flags), looked up at run
// time (only Android builds export it). *found is 0 when the symbol is
// missing; then nothing is called and NULL is returned.
OrtStatus *shim_append_nnapi(OrtSessionOptions *o, uint32_t flags, int *found);

// shim_trim_heap returns free heap pages to the OS (glibc malloc_trim).
void shim_trim_heap(void);

// shim_fix_mmap_threshold sets glibc's M_MMAP_THRESHOLD (which also turns
// off its dynamic adjustment); 1 on success, 0 on failure or without glibc.
int shim_fix_mmap_threshold(size_t bytes);

// shim_version_string is the library's OrtApiBase::GetVersionString ("" before shim_init).
const char *shim_version_string(void);

// The tracking allocator (track.c). shim_tracking_enable registers it on
// the environment once (OrtDeviceAllocator CPU memory info): sessions
// created with session.use_env_allocators=1 allocate through it. It stays
// registered for the life of the process. NULL or a strdup'ed message.
char *shim_tracking_enable(void);
char *track_register(void *const *api_slots, OrtEnv *env);

// A block allocated through the tracking allocator during a recording.
typedef struct {
  int64_t id;  // record index, valid while pinned
  void *data;
  size_t size;
  int reserve;  // allocated through Reserve (not Alloc)
} shim_block;

// shim_tracking_start begins a recording and returns its tag: until
// shim_tracking_stop, every allocation is recorded with it.
uint64_t shim_tracking_start(void);
// shim_tracking_stop ends the recording and pins every block of tag still
// live (ORT freeing a pinned block is deferred until it is unpinned); it
// returns their number.
size_t shim_tracking_stop(uint64_t tag);
// shim_tracking_list copies up to cap of tag's pinned blocks into out.
size_t shim_tracking_list(uint64_t tag, shim_block *out, size_t cap);
// shim_tracking_keep unpins every block of tag except the n records keep.
void shim_tracking_keep(uint64_t tag, const int64_t *keep, size_t n);
// shim_tracking_release unpins every block of tag (after the session that
// owns them was released).
void shim_tracking_release(uint64_t tag);
// shim_tracking_freed counts tag's pinned blocks ORT has freed.
size_t shim_tracking_freed(uint64_t tag);
// shim_tracking_records counts live records (for leak tests).
size_t shim_tracking_records(void);
// shim_tracking_trim returns the blocks the allocator keeps for reuse to
// the C heap; shim_tracking_cached counts their bytes.
void shim_tracking_trim(void);
size_t shim_tracking_cached(void);
// shim_tracking_huge turns huge page backed blocks (of at least 2 MiB, on
// Linux) on or off for later allocations; it returns the previous setting.
int shim_tracking_huge(int on);

#endif
