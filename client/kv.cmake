# The KV clerk (client library) and the kvctl command line.
add_library(dstack_kv_client STATIC clerk.cc kv_stream.cc)
target_link_libraries(dstack_kv_client
  PUBLIC dstack_proto dstack_common absl::status absl::statusor absl::time absl::random_random
  PRIVATE dstack_warnings)

add_executable(kvctl kvctl_main.cc)
target_link_libraries(kvctl PRIVATE dstack_kv_client dstack_warnings)

add_executable(kvbench kvbench_main.cc)
target_link_libraries(kvbench PRIVATE dstack_kv_client absl::random_random dstack_warnings)
