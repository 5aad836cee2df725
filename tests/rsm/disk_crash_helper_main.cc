// Helper of rsm_disk_state_test's crash cases: runs one DiskState operation
// and kills itself with SIGKILL at the named fail point (disk_state.h,
// kFailPoints), which leaves on disk exactly what kill -9 at that step would.
//
//   rsm_disk_crash_helper checkpoint DIR STEP
//       commits batch 2 (keys 0..999 = "v2" x 1000, meta applied = 2), then
//       checkpoints at index 2;
//   rsm_disk_crash_helper restore DIR MANIFEST_FILE STEP
//       restores the checkpoint MANIFEST_FILE describes (EncodeManifest form),
//       already copied into DIR/snapshots.
//
// Exit status: killed by SIGKILL at STEP; 0 if the operation finished without
// reaching it; 2 on an error (printed).
#include <signal.h>

#include <cstdio>
#include <string>
#include <string_view>

#include "absl/strings/str_format.h"
#include "common/files.h"
#include "raft/rsm/disk_state.h"

namespace {

int Fail(const std::string& what) {
  std::fprintf(stderr, "rsm_disk_crash_helper: %s\n", what.c_str());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  using ds::rsm::DiskState;
  const std::string mode = argc > 1 ? argv[1] : "";
  if (!((mode == "checkpoint" && argc == 4) || (mode == "restore" && argc == 5))) {
    return Fail("usage: checkpoint DIR STEP | restore DIR MANIFEST_FILE STEP");
  }
  const std::string step = argv[argc - 1];
  auto state = DiskState::Open({.dir = argv[2],
                                .block_cache_bytes = 8 << 20,
                                .memtable_bytes = 1 << 20,
                                .fail_point = [step](std::string_view at) {
                                  if (at == step) raise(SIGKILL);
                                }});
  if (!state.ok()) return Fail(state.status().ToString());
  if (mode == "checkpoint") {
    const std::string value(1000, '2');
    for (int i = 0; i < 1000; ++i) (*state)->app()->Put(absl::StrFormat("k%06d", i), value);
    (*state)->PutMeta("applied", "2");
    auto manifest = (*state)->Checkpoint(2);
    if (!manifest.ok()) return Fail(manifest.status().ToString());
    return 0;
  }
  auto data = ds::common::ReadWholeFile(argv[3]);
  if (!data.ok()) return Fail(data.status().ToString());
  auto manifest = ds::rsm::DecodeManifest(*data);
  if (!manifest.ok() || !manifest->has_value()) return Fail("not a manifest");
  if (absl::Status s = (*state)->Restore(**manifest); !s.ok()) return Fail(s.ToString());
  return 0;
}
