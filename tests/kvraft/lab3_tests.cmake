# The 6.824 lab 3A/3B scenarios, in-process over the production Rsm + KV state
# machine with a fault-injecting in-memory network (lab3_harness.h). Four
# binaries so that ctest runs them in parallel.
add_library(dstack_lab3_harness STATIC ${CMAKE_CURRENT_LIST_DIR}/lab3_harness.cc)
target_link_libraries(dstack_lab3_harness
  PUBLIC dstack_kv_service dstack_lincheck dstack_common GTest::gtest
  PRIVATE dstack_warnings)

foreach(t basic persist snapshot snapshot_unreliable)
  dstack_test(kvraft_lab3_${t}_test
    SOURCES ${CMAKE_CURRENT_LIST_DIR}/lab3_${t}_test.cc
    LIBS dstack_lab3_harness
    TIMEOUT 180)
endforeach()
