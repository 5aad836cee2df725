# Raft I/O tests: storage conformance (RocksDB and, with the core, memory),
# crash recovery under kill -9, and a 3-node cluster over gRPC on loopback.
dstack_test(raft_storage_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/storage_test.cc
  LIBS dstack_raft
  TIMEOUT 60)

add_executable(raft_crash_writer ${CMAKE_CURRENT_LIST_DIR}/crash_writer_main.cc)
target_link_libraries(raft_crash_writer PRIVATE dstack_raft dstack_warnings)
dstack_test(raft_crash_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/crash_test.cc
  LIBS dstack_raft
  TIMEOUT 120)
add_dependencies(raft_crash_test raft_crash_writer)

dstack_test(raft_cluster_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/cluster_test.cc
  LIBS dstack_raft
  TIMEOUT 120)

dstack_test(raft_transport_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/transport_test.cc
  LIBS dstack_raft
  TIMEOUT 60)

dstack_test(raft_node_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/node_test.cc
  LIBS dstack_raft
  TIMEOUT 60)

dstack_test(raft_rsm_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/rsm_test.cc
  LIBS dstack_rsm
  TIMEOUT 60)
