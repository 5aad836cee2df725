# mrrun: submit MapReduce jobs to mr-coordinator and watch them.
add_executable(mrrun mrrun_main.cc mrrun_format.cc)
target_link_libraries(mrrun PRIVATE dstack_proto dstack_common absl::strings absl::time
  absl::str_format dstack_warnings)
