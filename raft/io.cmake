# The Raft I/O edges around the pure core (target dstack_raft): RocksDB storage,
# gRPC transport and the Node driver.
add_library(dstack_raft STATIC
  ${CMAKE_CURRENT_LIST_DIR}/rocksdb_storage.cc
  ${CMAKE_CURRENT_LIST_DIR}/grpc_transport.cc
  ${CMAKE_CURRENT_LIST_DIR}/node.cc
)
target_link_libraries(dstack_raft
  PUBLIC dstack_raft_core dstack_proto dstack_common RocksDB::rocksdb
    absl::status absl::statusor absl::strings absl::synchronization absl::time
  PRIVATE dstack_warnings)
