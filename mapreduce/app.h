// Writing a MapReduce app in C++: derive from ds::mr::App, implement Map and
// Reduce, and put DS_MR_APP(MyApp, "name") in one .cc file built as a shared
// library. Header-only; the plugin links nothing from this project.
//
//   class WordCount : public ds::mr::App {
//    public:
//     void Map(std::string_view file, std::string_view text, ds::mr::Emitter& out) override {
//       for (std::string_view w : SplitWords(text)) out.Emit(w, "1");
//     }
//     std::string Reduce(std::string_view key, std::vector<std::string_view>& values,
//                        ds::mr::Emitter& out) override {
//       return std::to_string(values.size());
//     }
//   };
//   DS_MR_APP(WordCount, "wc")
//
// Optionally also a combiner, run on the map side over some of a key's values
// (declare it in the class named in DS_MR_APP):
//     std::string Combine(std::string_view key, std::vector<std::string_view>& values,
//                         ds::mr::Emitter& out) override {
//       int64_t n = 0;
//       for (std::string_view v : values) n += std::stoll(std::string(v));
//       return std::to_string(n);
//     }
#pragma once

#include <cstdint>
#include <exception>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "mapreduce/abi.h"

namespace ds::mr {

class Emitter {
 public:
  explicit Emitter(const ds_mr_sink* sink) : sink_(sink) {}
  // Map: emits an intermediate (key, value) pair.
  void Emit(std::string_view key, std::string_view value) {
    sink_->emit(sink_->ctx, key.data(), key.size(), value.data(), value.size());
  }
  // Adds `delta` to the user counter `name`.
  void Count(std::string_view name, int64_t delta = 1) {
    sink_->count(sink_->ctx, name.data(), name.size(), delta);
  }

 private:
  const ds_mr_sink* sink_;
};

class App {
 public:
  virtual ~App() = default;
  // Called once per input file with its whole contents.
  virtual void Map(std::string_view filename, std::string_view contents, Emitter& out) = 0;
  // Called once per distinct key with all its values, in no particular order
  // (sort them if the result depends on order). Returns the output value.
  virtual std::string Reduce(std::string_view key, std::vector<std::string_view>& values,
                             Emitter& out) = 0;
  // Optional combiner: folds some of a key's values (two or more, from one map
  // task, possibly earlier Combine results) into one value of the same kind
  // that Reduce accepts. May run any number of times, or not at all: Reduce's
  // result must be the same either way. Apps that do not override it have no
  // combiner (the host never calls this default).
  virtual std::string Combine(std::string_view key, std::vector<std::string_view>& values,
                              Emitter& out) {
    (void)key;
    (void)out;
    return values.empty() ? std::string() : std::string(values.front());
  }
};

// Calls fn(word) for every maximal run of ASCII letters of `text`, in order,
// without building a vector (the map hot loop of wc-like apps).
template <typename F>
inline void ForEachWord(std::string_view text, F&& fn) {
  const char* p = text.data();
  const char* end = p + text.size();
  auto is_letter = [](char c) {
    return static_cast<unsigned char>((c | 0x20) - 'a') < 26;  // A-Z or a-z
  };
  while (p < end) {
    while (p < end && !is_letter(*p)) ++p;
    const char* start = p;
    while (p < end && is_letter(*p)) ++p;
    if (p > start) fn(std::string_view(start, static_cast<size_t>(p - start)));
  }
}

// Words as the 6.824 apps define them: maximal runs of ASCII letters.
inline std::vector<std::string_view> SplitWords(std::string_view text) {
  std::vector<std::string_view> words;
  size_t i = 0;
  auto is_letter = [](char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); };
  while (i < text.size()) {
    while (i < text.size() && !is_letter(text[i])) ++i;
    size_t start = i;
    while (i < text.size() && is_letter(text[i])) ++i;
    if (i > start) words.push_back(text.substr(start, i - start));
  }
  return words;
}

namespace internal {

template <typename AppT>
AppT& Instance() {
  static AppT app;
  return app;
}

// Exceptions must not cross the C boundary: they become a failed call.
template <typename F>
void Guard(const ds_mr_sink* sink, F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    std::string_view what = e.what();
    sink->fail(sink->ctx, what.data(), what.size());
  } catch (...) {
    sink->fail(sink->ctx, "unknown exception", 17);
  }
}

template <typename AppT>
void MapThunk(const char* filename, size_t filename_len, const char* contents, size_t contents_len,
              const ds_mr_sink* sink) {
  Guard(sink, [&] {
    Emitter out(sink);
    Instance<AppT>().Map(std::string_view(filename, filename_len),
                         std::string_view(contents, contents_len), out);
  });
}

template <typename AppT>
void ReduceThunk(const char* key, size_t key_len, const ds_mr_slice* values, size_t num_values,
                 const ds_mr_sink* sink) {
  Guard(sink, [&] {
    Emitter out(sink);
    std::vector<std::string_view> v;
    v.reserve(num_values);
    for (size_t i = 0; i < num_values; ++i) v.emplace_back(values[i].data, values[i].len);
    std::string result = Instance<AppT>().Reduce(std::string_view(key, key_len), v, out);
    sink->emit(sink->ctx, key, key_len, result.data(), result.size());
  });
}

template <typename AppT>
void CombineThunk(const char* key, size_t key_len, const ds_mr_slice* values, size_t num_values,
                  const ds_mr_sink* sink) {
  Guard(sink, [&] {
    Emitter out(sink);
    std::vector<std::string_view> v;
    v.reserve(num_values);
    for (size_t i = 0; i < num_values; ++i) v.emplace_back(values[i].data, values[i].len);
    std::string result = Instance<AppT>().Combine(std::string_view(key, key_len), v, out);
    sink->emit(sink->ctx, key, key_len, result.data(), result.size());
  });
}

// The combine entry point if AppT declares Combine itself, else NULL. (A
// member pointer to an inherited function has the base's class type.)
template <typename AppT>
constexpr auto CombineEntry() {
  using Fn = void (*)(const char*, size_t, const ds_mr_slice*, size_t, const ds_mr_sink*);
  if constexpr (std::is_same_v<decltype(&AppT::Combine), decltype(&App::Combine)>) {
    return static_cast<Fn>(nullptr);
  } else {
    return static_cast<Fn>(&CombineThunk<AppT>);
  }
}

}  // namespace internal
}  // namespace ds::mr

// Serves hosts of ABI version 1 and 2 (fields are only ever appended).
#define DS_MR_APP(AppClass, app_name)                                                              \
  extern "C" __attribute__((visibility("default"))) const ds_mr_app* ds_mr_get_app(                \
      uint32_t host_abi_version) {                                                                 \
    static const ds_mr_app app = {                                                                 \
        DS_MR_ABI_VERSION, app_name, &::ds::mr::internal::MapThunk<AppClass>,                      \
        &::ds::mr::internal::ReduceThunk<AppClass>, ::ds::mr::internal::CombineEntry<AppClass>()}; \
    return host_abi_version >= DS_MR_ABI_MIN_VERSION ? &app : nullptr;                             \
  }
