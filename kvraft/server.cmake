# kvraft-server: the KV state machine over the RSM layer, with its gRPC service.
add_library(dstack_kv_service STATIC ${CMAKE_CURRENT_LIST_DIR}/kv_service.cc)
target_link_libraries(dstack_kv_service PUBLIC dstack_kv dstack_rsm PRIVATE dstack_warnings)

add_executable(kvraft-server ${CMAKE_CURRENT_LIST_DIR}/server_main.cc)
target_link_libraries(kvraft-server PRIVATE dstack_kv_service dstack_common dstack_warnings)
