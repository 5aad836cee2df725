#include "mapreduce/runner.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "mapreduce/records.h"
#include "mapreduce/shuffle.h"

extern char** environ;

namespace ds::mr {
namespace {

// The sink context of one plugin call.
struct CallContext {
  const EmitFn* emit;
  Counters* counters;
  std::string error;
  bool failed = false;
};

const ds_mr_sink MakeSink(CallContext* ctx) {
  return ds_mr_sink{
      ctx,
      [](void* c, const char* k, size_t kl, const char* v, size_t vl) {
        (*static_cast<CallContext*>(c)->emit)(std::string_view(k, kl), std::string_view(v, vl));
      },
      [](void* c, const char* name, size_t len, int64_t delta) {
        (*static_cast<CallContext*>(c)->counters)["user." + std::string(name, len)] += delta;
      },
      [](void* c, const char* msg, size_t len) {
        auto* ctx = static_cast<CallContext*>(c);
        ctx->failed = true;
        ctx->error.assign(msg, len);
      }};
}

class PluginRunner : public AppRunner {
 public:
  explicit PluginRunner(const ds_mr_app* app)
      : app_(app), combine_(app->abi_version >= 2 ? app->combine : nullptr) {}

  absl::Status Map(const MapInput& input, const EmitFn& emit, Counters* counters,
                   uint64_t* bytes_in) override {
    // A whole file is mapped rather than copied into memory.
    std::unique_ptr<MappedFile> mapped;
    std::string split;
    std::string_view contents;
    if (input.length == 0) {
      auto f = MappedFile::Open(input.path);
      if (!f.ok()) {
        return absl::NotFoundError(
            absl::StrCat("read input ", input.path, ": ", f.status().message()));
      }
      mapped = std::move(*f);
      contents = mapped->data();
    } else {
      auto s = ReadSplit(input.path, input.offset, input.length);
      if (!s.ok()) return s.status();
      split = std::move(*s);
      contents = split;
    }
    *bytes_in = contents.size();
    CallContext ctx{&emit, counters};
    ds_mr_sink sink = MakeSink(&ctx);
    const std::string& filename = input.path;
    app_->map(filename.data(), filename.size(), contents.data(), contents.size(), &sink);
    if (ctx.failed) return absl::AbortedError("map failed: " + ctx.error);
    return absl::OkStatus();
  }

  CombineKeyFn KeyCombiner(Counters* counters) override {
    if (combine_ == nullptr) return nullptr;
    return [this, counters](std::string_view key, std::vector<std::string_view>& values,
                            const std::function<void(std::string_view)>& emit) {
      slices_.clear();
      for (std::string_view v : values) slices_.push_back({v.data(), v.size()});
      EmitFn capture = [&](std::string_view, std::string_view v) { emit(v); };
      CallContext ctx{&capture, counters};
      ds_mr_sink sink = MakeSink(&ctx);
      combine_(key.data(), key.size(), slices_.data(), slices_.size(), &sink);
      if (ctx.failed) {
        return absl::AbortedError(
            absl::StrCat("combine failed on key ", std::string(key), ": ", ctx.error));
      }
      return absl::OkStatus();
    };
  }

  absl::Status Reduce(const ForEachRecordFn& records, const EmitFn& output,
                      Counters* counters) override {
    std::string key;
    // The current key's values, back to back in one buffer (reused from key
    // to key: no allocation per value), and where each one ends.
    std::string values;
    std::vector<size_t> ends;
    std::vector<ds_mr_slice> slices;
    bool have_key = false;
    absl::Status user_error;
    auto flush = [&] {
      slices.clear();
      size_t begin = 0;
      for (size_t end : ends) {
        slices.push_back({values.data() + begin, end - begin});
        begin = end;
      }
      std::string result;
      EmitFn capture = [&](std::string_view, std::string_view v) { result.assign(v); };
      CallContext ctx{&capture, counters};
      ds_mr_sink sink = MakeSink(&ctx);
      app_->reduce(key.data(), key.size(), slices.data(), slices.size(), &sink);
      if (ctx.failed) {
        user_error = absl::AbortedError("reduce failed on key " + key + ": " + ctx.error);
        return;
      }
      output(key, result);
    };
    absl::Status st = records([&](std::string_view k, std::string_view v) {
      if (!user_error.ok()) return;
      if (!have_key || k != key) {
        if (have_key) flush();
        key.assign(k);
        values.clear();
        ends.clear();
        have_key = true;
      }
      values.append(v);
      ends.push_back(values.size());
    });
    if (!st.ok()) return st;
    if (have_key && user_error.ok()) flush();
    return user_error;
  }

 private:
  const ds_mr_app* app_;
  // Null for version-1 plugins (they have no such field) and apps without one.
  decltype(ds_mr_app::combine) combine_;
  std::vector<ds_mr_slice> slices_;
};

std::atomic<uint64_t> temp_counter{0};

std::string TempPath(const std::string& dir, const char* what) {
  return absl::StrCat(dir, "/stream-", getpid(), "-", temp_counter++, "-", what);
}

// Runs `/bin/sh -c command` with stdin from `in_path` and stdout into
// `out_path`; a non-zero exit is an error that quotes the end of stderr.
absl::Status RunShell(const std::string& command, const std::string& in_path,
                      const std::string& out_path, const std::string& err_path,
                      const std::vector<std::string>& extra_env) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, in_path.c_str(), O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                   0600);
  posix_spawn_file_actions_addopen(&actions, 2, err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                   0600);
  std::vector<std::string> env_strings = extra_env;
  for (char** e = environ; *e != nullptr; ++e) env_strings.emplace_back(*e);
  std::vector<char*> envp;
  for (std::string& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::string sh = "/bin/sh", dash_c = "-c", cmd = command;
  char* argv[] = {sh.data(), dash_c.data(), cmd.data(), nullptr};
  pid_t pid;
  int rc = posix_spawn(&pid, "/bin/sh", &actions, nullptr, argv, envp.data());
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) return absl::InternalError(ErrnoMessage("spawn " + command, rc));
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return absl::OkStatus();
  std::string why = WIFEXITED(status) ? absl::StrCat("exited with status ", WEXITSTATUS(status))
                                      : absl::StrCat("killed by signal ", WTERMSIG(status));
  auto err = ReadFile(err_path);
  std::string tail = err.ok() ? *err : "";
  if (tail.size() > 400) tail = "..." + tail.substr(tail.size() - 400);
  while (!tail.empty() && tail.back() == '\n') tail.pop_back();
  return absl::AbortedError(
      absl::StrCat("command '", command, "' ", why, tail.empty() ? "" : "; stderr: ", tail));
}

}  // namespace

absl::Status ForEachKeyValueLine(const std::string& path, const EmitFn& fn, uint64_t* count) {
  FILE* f = fopen(path.c_str(), "rb");
  if (f == nullptr) return absl::InternalError(ErrnoMessage("open " + path, errno));
  char* line = nullptr;
  size_t cap = 0;
  ssize_t n;
  while ((n = getline(&line, &cap, f)) >= 0) {
    std::string_view l(line, static_cast<size_t>(n));
    if (!l.empty() && l.back() == '\n') l.remove_suffix(1);
    if (l.empty()) continue;
    size_t tab = l.find('\t');
    if (tab == std::string_view::npos) {
      fn(l, "");
    } else {
      fn(l.substr(0, tab), l.substr(tab + 1));
    }
    ++*count;
  }
  free(line);
  fclose(f);
  return absl::OkStatus();
}

namespace {

class StreamingRunner : public AppRunner {
 public:
  StreamingRunner(std::string mapper, std::string reducer, std::string combiner,
                  std::string temp_dir)
      : mapper_(std::move(mapper)),
        reducer_(std::move(reducer)),
        combiner_(std::move(combiner)),
        temp_dir_(std::move(temp_dir)) {}

  CombineBatchFn BatchCombiner() override {
    if (combiner_.empty()) return nullptr;
    return [this](const std::string& in, const std::string& out) {
      std::string err = TempPath(temp_dir_, "combine-err");
      absl::Status st = RunShell(combiner_, in, out, err, {});
      unlink(err.c_str());
      return st;
    };
  }

  absl::Status Map(const MapInput& input, const EmitFn& emit, Counters* counters,
                   uint64_t* bytes_in) override {
    const std::string& filename = input.path;
    std::string stdin_path = filename, split_path;
    if (input.length == 0) {
      std::error_code ec;
      auto size = std::filesystem::file_size(filename, ec);
      if (ec) {
        return absl::NotFoundError(absl::StrCat("read input ", filename, ": ", ec.message()));
      }
      *bytes_in = size;
    } else {
      // The command reads stdin to the end: give it exactly the split's lines.
      auto contents = ReadSplit(filename, input.offset, input.length);
      if (!contents.ok()) return contents.status();
      *bytes_in = contents->size();
      split_path = stdin_path = TempPath(temp_dir_, "map-in");
      if (auto st = WriteFileAtomically(split_path, *contents); !st.ok()) return st;
    }
    std::string out = TempPath(temp_dir_, "map-out"), err = TempPath(temp_dir_, "map-err");
    absl::Status st =
        RunShell(mapper_, stdin_path, out, err, {"mapreduce_map_input_file=" + filename});
    uint64_t lines = 0;
    if (st.ok()) st = ForEachKeyValueLine(out, emit, &lines);
    unlink(out.c_str());
    unlink(err.c_str());
    if (!split_path.empty()) unlink(split_path.c_str());
    return st;
  }

  absl::Status Reduce(const ForEachRecordFn& records, const EmitFn& output,
                      Counters* counters) override {
    std::string in = TempPath(temp_dir_, "reduce-in"), out = TempPath(temp_dir_, "reduce-out"),
                err = TempPath(temp_dir_, "reduce-err");
    FILE* f = fopen(in.c_str(), "wb");
    if (f == nullptr) return absl::InternalError(ErrnoMessage("create " + in, errno));
    absl::Status st = records([&](std::string_view k, std::string_view v) {
      fwrite(k.data(), 1, k.size(), f);
      fputc('\t', f);
      fwrite(v.data(), 1, v.size(), f);
      fputc('\n', f);
    });
    if (fclose(f) != 0 && st.ok()) st = absl::DataLossError(ErrnoMessage("write " + in, errno));
    if (st.ok()) st = RunShell(reducer_, in, out, err, {});
    uint64_t lines = 0;
    if (st.ok()) st = ForEachKeyValueLine(out, output, &lines);
    unlink(in.c_str());
    unlink(out.c_str());
    unlink(err.c_str());
    return st;
  }

 private:
  std::string mapper_, reducer_, combiner_, temp_dir_;
};

absl::Mutex plugins_mu;
std::map<std::string, const ds_mr_app*>& Plugins() ABSL_EXCLUSIVE_LOCKS_REQUIRED(plugins_mu) {
  static auto* plugins = new std::map<std::string, const ds_mr_app*>;
  return *plugins;
}

}  // namespace

std::string DefaultAppDir() {
  std::error_code ec;
  auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) return "lib";
  return (exe.parent_path().parent_path() / "lib").string();
}

absl::StatusOr<const ds_mr_app*> LoadPlugin(const std::string& app, const std::string& app_dir) {
  bool is_path = app.find('/') != std::string::npos ||
                 (app.size() > 3 && app.compare(app.size() - 3, 3, ".so") == 0);
  std::string path =
      is_path ? app
              : absl::StrCat(app_dir.empty() ? DefaultAppDir() : app_dir, "/mr-app-", app, ".so");
  absl::MutexLock lock(&plugins_mu);
  auto it = Plugins().find(path);
  if (it != Plugins().end()) return it->second;
  if (!is_path && !std::filesystem::exists(path)) {
    return absl::NotFoundError(absl::StrCat("unknown app '", app, "' (no ", path, ")"));
  }
  // Never dlclose'd: a plugin may leave threads or atexit handlers behind.
  void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat("cannot load app ", path, ": ", dlerror()));
  }
  auto get = reinterpret_cast<ds_mr_get_app_fn>(dlsym(handle, DS_MR_ENTRY_POINT));
  if (get == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("app ", path, " does not export ", DS_MR_ENTRY_POINT));
  }
  // A version-1 plugin answers only a version-1 host; it has no combiner.
  const ds_mr_app* loaded = get(DS_MR_ABI_VERSION);
  if (loaded == nullptr) loaded = get(DS_MR_ABI_MIN_VERSION);
  if (loaded == nullptr || loaded->abi_version < DS_MR_ABI_MIN_VERSION ||
      loaded->abi_version > DS_MR_ABI_VERSION || loaded->map == nullptr ||
      loaded->reduce == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("app ", path, " does not support ABI version ", DS_MR_ABI_VERSION));
  }
  Plugins()[path] = loaded;
  return loaded;
}

std::vector<std::string> BundledApps(const std::string& app_dir) {
  std::vector<std::string> apps;
  std::error_code ec;
  for (std::filesystem::directory_iterator it(app_dir.empty() ? DefaultAppDir() : app_dir, ec), end;
       !ec && it != end; it.increment(ec)) {
    std::string name = it->path().filename().string();
    if (name.size() > 10 && name.rfind("mr-app-", 0) == 0 &&
        name.compare(name.size() - 3, 3, ".so") == 0) {
      apps.push_back(name.substr(7, name.size() - 10));
    }
  }
  std::sort(apps.begin(), apps.end());
  return apps;
}

absl::StatusOr<std::unique_ptr<AppRunner>> MakeRunner(const RunnerSpec& spec) {
  if (!spec.mapper.empty() || !spec.reducer.empty()) {
    if (spec.mapper.empty() || spec.reducer.empty()) {
      return absl::InvalidArgumentError("streaming mode needs both a mapper and a reducer");
    }
    return std::make_unique<StreamingRunner>(spec.mapper, spec.reducer, spec.combiner,
                                             spec.temp_dir);
  }
  auto app = LoadPlugin(spec.app, spec.app_dir);
  if (!app.ok()) return app.status();
  return std::make_unique<PluginRunner>(*app);
}

}  // namespace ds::mr
