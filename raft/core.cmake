# The pure Raft core: consensus state machine, log, progress tracking, quorum
# math, in-memory storage and the invariant checker. No I/O, no threads.
add_library(dstack_raft_core
  ${CMAKE_CURRENT_LIST_DIR}/core.cc
  ${CMAKE_CURRENT_LIST_DIR}/invariants.cc
  ${CMAKE_CURRENT_LIST_DIR}/log.cc
  ${CMAKE_CURRENT_LIST_DIR}/memory_storage.cc
  ${CMAKE_CURRENT_LIST_DIR}/progress.cc
  ${CMAKE_CURRENT_LIST_DIR}/quorum.cc)
target_link_libraries(dstack_raft_core
  PUBLIC dstack_proto absl::status absl::statusor absl::strings absl::synchronization
         absl::flat_hash_map
  PRIVATE dstack_warnings)
