// Helpers shared by the 6.824 fault and timing test apps.
#pragma once

#include <dirent.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <thread>

namespace ds::mr::apps {

inline void SleepMs(long ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }

inline long RandomBelow(long n) {
  static thread_local std::random_device rd;  // /dev/urandom: like Go's crypto/rand
  return static_cast<long>(rd() % static_cast<unsigned long>(n));
}

// Names of files in the current directory starting with `prefix`.
template <typename F>
void ForEachFileWithPrefix(const std::string& prefix, F&& f) {
  DIR* dir = opendir(".");
  if (dir == nullptr) return;
  while (dirent* e = readdir(dir)) {
    std::string name = e->d_name;
    if (name.rfind(prefix, 0) == 0) f(name);
  }
  closedir(dir);
}

// 6.824's nparallel: announce ourselves with a marker file, count the marker
// files of processes that are alive, linger 1 s so others can see us, clean up.
inline int CountParallel(const std::string& phase) {
  std::string prefix = "mr-worker-" + phase + "-";
  std::string mine = prefix + std::to_string(getpid());
  if (FILE* f = fopen(mine.c_str(), "w")) fclose(f);
  int count = 0;
  ForEachFileWithPrefix(prefix, [&](const std::string& name) {
    long pid = std::atol(name.c_str() + prefix.size());
    if (pid > 0 && (kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM)) ++count;
  });
  SleepMs(1000);
  unlink(mine.c_str());
  return count;
}

}  // namespace ds::mr::apps
