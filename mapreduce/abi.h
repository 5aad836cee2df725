/* The versioned C ABI between mr-worker (or mr-sequential) and an app plugin.
 * Only C types cross the boundary, so a plugin built with another compiler or
 * standard library still loads. Most apps do not use this header directly:
 * they include mapreduce/app.h and write DS_MR_APP(MyApp).
 *
 * A plugin exports one symbol:
 *   const ds_mr_app* ds_mr_get_app(uint32_t host_abi_version);
 * returning NULL if it cannot serve that host version. The host checks the
 * returned abi_version before calling anything else, and reads only the fields
 * of that version. A later version may append fields, never reorder them.
 *   Version 1: name, map, reduce.
 *   Version 2: + combine (may be NULL: no combiner). A version-2 host asks for
 *   version 2 and accepts a plugin answering with version 1 (no combiner). */
#ifndef DS_MAPREDUCE_ABI_H_
#define DS_MAPREDUCE_ABI_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DS_MR_ABI_VERSION 2u
#define DS_MR_ABI_MIN_VERSION 1u
#define DS_MR_ENTRY_POINT "ds_mr_get_app"

/* Callbacks the host gives to every map and reduce call; valid only during it. */
typedef struct ds_mr_sink {
  void* ctx;
  /* Map: one intermediate pair. Reduce and combine: the result value for the
   * key (the key argument is ignored; reduce calls it exactly once, combine
   * once per value it keeps). Bytes are copied before returning. */
  void (*emit)(void* ctx, const char* key, size_t key_len, const char* value, size_t value_len);
  /* Adds delta to the user counter `name` (shown by `mrrun status`). */
  void (*count)(void* ctx, const char* name, size_t name_len, int64_t delta);
  /* Marks the call failed with a message: the task attempt fails. */
  void (*fail)(void* ctx, const char* message, size_t message_len);
} ds_mr_sink;

typedef struct ds_mr_slice {
  const char* data;
  size_t len;
} ds_mr_slice;

typedef struct ds_mr_app {
  uint32_t abi_version; /* DS_MR_ABI_VERSION the plugin was built against */
  const char* name;
  void (*map)(const char* filename, size_t filename_len, const char* contents, size_t contents_len,
              const ds_mr_sink* sink);
  void (*reduce)(const char* key, size_t key_len, const ds_mr_slice* values, size_t num_values,
                 const ds_mr_sink* sink);
  /* Version 2. Folds some of a key's intermediate values into fewer on the map
   * side (word count: many "1"s into their sum), so less is written and
   * fetched. Called zero or more times per key and map task, on any subset of
   * its values (including values it produced before); the reduce result must
   * not depend on whether or how often it ran. NULL: no combiner. */
  void (*combine)(const char* key, size_t key_len, const ds_mr_slice* values, size_t num_values,
                  const ds_mr_sink* sink);
} ds_mr_app;

typedef const ds_mr_app* (*ds_mr_get_app_fn)(uint32_t host_abi_version);

#ifdef __cplusplus
}
#endif

#endif /* DS_MAPREDUCE_ABI_H_ */
