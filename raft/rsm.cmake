# The replicated state machine layer (target dstack_rsm) over the Node.
add_library(dstack_rsm STATIC ${CMAKE_CURRENT_LIST_DIR}/rsm.cc)
target_link_libraries(dstack_rsm PUBLIC dstack_raft PRIVATE dstack_warnings)
