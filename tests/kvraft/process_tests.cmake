# Multi-process tests with the real kvraft-server binary.
dstack_test(kvraft_process_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/process_test.cc
  LIBS dstack_kv_client dstack_lincheck dstack_common
  TIMEOUT 400)
add_dependencies(kvraft_process_test kvraft-server)

# KvService.Batch streams (client/kv_stream.h) against real kvraft-server processes.
dstack_test(kvraft_stream_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/stream_test.cc
  LIBS dstack_kv_client dstack_lincheck dstack_common
  TIMEOUT 300)
add_dependencies(kvraft_stream_test kvraft-server)
