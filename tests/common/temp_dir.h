// A temporary directory for a test, removed with everything in it when the
// object goes away. Created under gtest's TempDir() ($TEST_TMPDIR or $TMPDIR,
// else /tmp) as PREFIX.XXXXXX.
#pragma once

#include <stdlib.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "gtest/gtest.h"

namespace ds::testing {

class TempDir {
 public:
  explicit TempDir(const std::string& prefix = "test") {
    std::string tmpl = ::testing::TempDir() + "/" + prefix + ".XXXXXX";
    if (mkdtemp(tmpl.data()) == nullptr) std::abort();
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace ds::testing
