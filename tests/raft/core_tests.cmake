# Raft core tests: the virtual-time simulation harness (sim/), the 6.824 lab 2
# scenarios, the randomized simulator and unit tests of the core's modules.
add_library(dstack_raft_sim STATIC ${CMAKE_CURRENT_LIST_DIR}/sim/cluster.cc)
target_link_libraries(dstack_raft_sim PUBLIC dstack_raft_core PRIVATE dstack_warnings)

dstack_test(raft_2ab_test SOURCES ${CMAKE_CURRENT_LIST_DIR}/raft_2ab_test.cc
            LIBS dstack_raft_sim TIMEOUT 120)

add_library(dstack_raft_random_sim STATIC ${CMAKE_CURRENT_LIST_DIR}/sim/random_sim.cc)
target_link_libraries(dstack_raft_random_sim PUBLIC dstack_raft_sim PRIVATE dstack_warnings)

# raft-sim --seed=N --verbose replays one seed of the randomized simulation.
add_executable(raft-sim ${CMAKE_CURRENT_LIST_DIR}/sim/raft_sim_main.cc)
target_link_libraries(raft-sim PRIVATE dstack_raft_random_sim dstack_common absl::flags dstack_warnings)

# 2,000 seeds, as two ctest tests (one per gtest case) that run in parallel.
dstack_test(raft_random_sim_test SOURCES ${CMAKE_CURRENT_LIST_DIR}/random_sim_test.cc
            LIBS dstack_raft_random_sim TIMEOUT 300
            ARGS --gtest_filter=RaftRandomSim.SameSeedReplaysExactly:RaftRandomSim.Seeds1To1000)
add_test(NAME raft_random_sim_test_2 COMMAND raft_random_sim_test
         --gtest_filter=RaftRandomSim.Seeds1001To2000)
set_tests_properties(raft_random_sim_test_2 PROPERTIES TIMEOUT 300)

dstack_test(raft_2c_test SOURCES ${CMAKE_CURRENT_LIST_DIR}/raft_2c_test.cc
            LIBS dstack_raft_sim TIMEOUT 120)
dstack_test(raft_2d_test SOURCES ${CMAKE_CURRENT_LIST_DIR}/raft_2d_test.cc
            LIBS dstack_raft_sim TIMEOUT 120)

dstack_test(raft_core_unit_test
            SOURCES ${CMAKE_CURRENT_LIST_DIR}/core_test.cc ${CMAKE_CURRENT_LIST_DIR}/modules_test.cc
            LIBS dstack_raft_core TIMEOUT 60)
