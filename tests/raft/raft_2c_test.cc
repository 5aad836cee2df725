// 6.824 lab 2C scenarios: persistence across crashes (unsynced writes are lost,
// MemoryStorage::SimulateCrash), unreliable networks, Figure 8 and churn.
#include <set>

#include "tests/raft/sim/test_util.h"

namespace ds::raft::sim {
namespace {

// 6.824's crash1: disconnect, then kill (the persister keeps synced state).
void CrashNode(Cluster& c, int i) {
  c.Disconnect(i);
  c.Crash(i);
}
// start1 + connect.
void RestartNode(Cluster& c, int i) {
  c.Restart(i);
  c.Connect(i);
}

TEST(Raft2C, Persist1) {
  Cluster c(ScenarioOptions(3, 21));
  SIM_ASSERT_OK(c.One("11", 3, true).status());
  for (int i = 0; i < 3; ++i) c.Restart(i);
  for (int i = 0; i < 3; ++i) {
    c.Disconnect(i);
    c.Connect(i);
  }
  SIM_ASSERT_OK(c.One("12", 3, true).status());
  int leader1;
  SIM_ASSIGN_OR_FAIL(leader1, c.CheckOneLeader());
  c.Disconnect(leader1);
  RestartNode(c, leader1);
  SIM_ASSERT_OK(c.One("13", 3, true).status());
  int leader2;
  SIM_ASSIGN_OR_FAIL(leader2, c.CheckOneLeader());
  c.Disconnect(leader2);
  uint64_t index14;
  SIM_ASSIGN_OR_FAIL(index14, c.One("14", 2, true));
  RestartNode(c, leader2);
  // The restarted node catches up on index14 too.
  SIM_ASSERT_OK(c.Wait(index14, 3, 0).status());
  int leader3;
  SIM_ASSIGN_OR_FAIL(leader3, c.CheckOneLeader());
  const int i3 = (leader3 + 1) % 3;
  c.Disconnect(i3);
  SIM_ASSERT_OK(c.One("15", 2, true).status());
  RestartNode(c, i3);
  SIM_ASSERT_OK(c.One("16", 3, true).status());
  SIM_ASSERT_OK(c.status());
}

TEST(Raft2C, Persist2) {
  Cluster c(ScenarioOptions(5, 22));
  int index = 1;
  for (int iters = 0; iters < 5; ++iters) {
    SIM_ASSERT_OK(c.One(std::to_string(10 + index++), 5, true).status());
    int leader1;
    SIM_ASSIGN_OR_FAIL(leader1, c.CheckOneLeader());
    c.Disconnect((leader1 + 1) % 5);
    c.Disconnect((leader1 + 2) % 5);
    SIM_ASSERT_OK(c.One(std::to_string(10 + index++), 3, true).status());
    c.Disconnect((leader1 + 0) % 5);
    c.Disconnect((leader1 + 3) % 5);
    c.Disconnect((leader1 + 4) % 5);
    RestartNode(c, (leader1 + 1) % 5);
    RestartNode(c, (leader1 + 2) % 5);
    c.RunFor(1000);
    // Only L+3 holds the latest entry: the up-to-date vote rule must elect it
    // (or let it catch the others up).
    RestartNode(c, (leader1 + 3) % 5);
    SIM_ASSERT_OK(c.One(std::to_string(10 + index++), 3, true).status());
    c.Connect((leader1 + 4) % 5);
    c.Connect((leader1 + 0) % 5);
  }
  SIM_ASSERT_OK(c.One("1000", 5, true).status());
  SIM_ASSERT_OK(c.status());
}

TEST(Raft2C, Persist3) {
  Cluster c(ScenarioOptions(3, 23));
  SIM_ASSERT_OK(c.One("101", 3, false).status());
  int leader;
  SIM_ASSIGN_OR_FAIL(leader, c.CheckOneLeader());
  c.Disconnect((leader + 2) % 3);
  SIM_ASSERT_OK(c.One("102", 2, false).status());
  CrashNode(c, (leader + 0) % 3);
  CrashNode(c, (leader + 1) % 3);
  c.Connect((leader + 2) % 3);
  RestartNode(c, (leader + 0) % 3);
  SIM_ASSERT_OK(c.One("103", 2, true).status());
  RestartNode(c, (leader + 1) % 3);
  SIM_ASSERT_OK(c.One("104", 3, true).status());
  SIM_ASSERT_OK(c.status());
}

// Raft paper Figure 8: a leader must not commit an older term's entry by
// counting replicas. Crashing every leader right after it accepts proposals
// produces the figure's histories; the applier and the invariant checker
// catch any divergence.
TEST(Raft2C, Figure8) {
  Cluster c(ScenarioOptions(5, 24));
  SIM_ASSERT_OK(c.One(RandCommand(c), 1, true).status());
  int nup = 5;
  for (int iters = 0; iters < 1000; ++iters) {
    int leader = -1;
    for (int i = 0; i < 5; ++i) {
      if (c.alive(i) && c.Start(i, RandCommand(c)).is_leader) leader = i;
    }
    c.RunFor(c.rng().Uniform(1000) < 100 ? c.rng().Uniform(500) : c.rng().Uniform(13));
    ASSERT_TRUE(c.status().ok()) << c.status();
    if (leader != -1) {
      CrashNode(c, leader);
      --nup;
    }
    if (nup < 3) {
      const int s = c.rng().Uniform(5);
      if (!c.alive(s)) {
        RestartNode(c, s);
        ++nup;
      }
    }
  }
  for (int i = 0; i < 5; ++i) {
    if (!c.alive(i)) RestartNode(c, i);
  }
  uint64_t last;
  SIM_ASSIGN_OR_FAIL(last, c.One(RandCommand(c), 5, true));
  // Many leaders came and went, and their entries did get committed.
  // (about one election per 1.5 s of the ~30 s of virtual time)
  EXPECT_GT(c.core(0)->term(), 10u);
  EXPECT_GT(last, 20u);
  SIM_ASSERT_OK(c.status());
}

TEST(Raft2C, UnreliableAgree) {
  Cluster c(ScenarioOptions(5, 25));
  c.faults().reliable = false;
  std::vector<std::string> submitted;
  for (int iters = 1; iters < 50; ++iters) {
    // The four "concurrent" one() calls: submitted now, checked below.
    for (int j = 0; j < 4; ++j) {
      const std::string cmd = std::to_string(100 * iters + j);
      for (int i = 0; i < 5; ++i) {
        if (c.Start(i, cmd).is_leader) break;
      }
      submitted.push_back(cmd);
    }
    SIM_ASSERT_OK(c.One(std::to_string(iters), 1, true).status());
  }
  c.faults().reliable = true;
  // Every submitted command that did not commit is retried, as one() would.
  for (const std::string& cmd : submitted) {
    bool found = false;
    for (uint64_t index = 1; index <= c.core(0)->last_index() + 10 && !found; ++index) {
      std::string got;
      found = c.NCommitted(index, &got) > 0 && got == cmd;
    }
    if (!found) SIM_ASSERT_OK(c.One(cmd, 1, true).status());
  }
  SIM_ASSERT_OK(c.One("100", 5, true).status());
  SIM_ASSERT_OK(c.status());
}

TEST(Raft2C, Figure8Unreliable) {
  Cluster c(ScenarioOptions(5, 26));
  c.faults().reliable = false;
  SIM_ASSERT_OK(c.One(std::to_string(c.rng().Uniform(10000)), 1, true).status());
  int nup = 5;
  for (int iters = 0; iters < 1000; ++iters) {
    if (iters == 200) c.faults().long_reordering = true;
    int leader = -1;
    for (int i = 0; i < 5; ++i) {
      if (c.Start(i, std::to_string(c.rng().Uniform(10000))).is_leader && c.connected(i)) {
        leader = i;
      }
    }
    c.RunFor(c.rng().Uniform(1000) < 100 ? c.rng().Uniform(500) : c.rng().Uniform(13));
    ASSERT_TRUE(c.status().ok()) << c.status();
    if (leader != -1 && c.rng().Uniform(1000) < 500) {
      c.Disconnect(leader);
      --nup;
    }
    if (nup < 3) {
      const int s = c.rng().Uniform(5);
      if (!c.connected(s)) {
        c.Connect(s);
        ++nup;
      }
    }
  }
  for (int i = 0; i < 5; ++i) c.Connect(i);
  SIM_ASSERT_OK(c.One(std::to_string(c.rng().Uniform(10000)), 5, true).status());
  SIM_ASSERT_OK(c.status());
}

// internalChurn: three clients keep proposing on every server while servers
// are disconnected, crashed and restarted; every value a client saw committed
// must be in the final log, which all five servers agree on.
void Churn(bool unreliable, uint64_t seed) {
  Cluster c(ScenarioOptions(5, seed));
  c.faults().reliable = !unreliable;
  struct Client {
    int me;
    uint64_t next_ms = 0;
    uint64_t index = 0;
    std::string cmd;
    int poll = 0;
  };
  static constexpr uint64_t kPollMs[] = {10, 20, 50, 100, 200};
  std::vector<Client> clients = {{0}, {1}, {2}};
  std::set<std::string> committed;
  auto run_clients = [&](uint64_t ms) {
    const uint64_t until = c.now_ms() + ms;
    while (c.now_ms() < until && c.status().ok()) {
      for (Client& cl : clients) {
        if (c.now_ms() < cl.next_ms) continue;
        if (cl.index == 0) {
          cl.cmd = std::to_string(c.rng().Next() >> 1);
          for (int i = 0; i < 5; ++i) {
            auto r = c.Start(i, cl.cmd);
            if (r.is_leader) {
              cl.index = r.index;
              break;
            }
          }
          cl.poll = 0;
          cl.next_ms = c.now_ms() + (cl.index != 0 ? kPollMs[0] : 79 + 17 * cl.me);
        } else {
          std::string got;
          if (c.NCommitted(cl.index, &got) > 0 && got == cl.cmd) {
            committed.insert(cl.cmd);
            cl.index = 0;
            cl.next_ms = c.now_ms();
          } else if (++cl.poll < 5) {
            cl.next_ms = c.now_ms() + kPollMs[cl.poll];
          } else {
            cl.index = 0;
            cl.next_ms = c.now_ms() + 79 + 17 * cl.me;
          }
        }
      }
      c.RunFor(5);
    }
  };
  for (int iters = 0; iters < 20; ++iters) {
    if (c.rng().Uniform(1000) < 200) c.Disconnect(c.rng().Uniform(5));
    if (c.rng().Uniform(1000) < 500) {
      const int i = c.rng().Uniform(5);
      if (!c.alive(i)) c.Restart(i);
      c.Connect(i);
    }
    if (c.rng().Uniform(1000) < 200) CrashNode(c, c.rng().Uniform(5));
    run_clients(700);
    ASSERT_TRUE(c.status().ok()) << c.status();
  }
  run_clients(1000);
  c.faults().reliable = true;
  for (int i = 0; i < 5; ++i) {
    if (!c.alive(i)) c.Restart(i);
    c.Connect(i);
  }
  run_clients(1000);
  uint64_t last_index;
  SIM_ASSIGN_OR_FAIL(last_index, c.One(RandCommand(c), 5, true));
  std::set<std::string> log;
  for (uint64_t index = 1; index <= last_index; ++index) {
    std::optional<std::string> v;
    SIM_ASSIGN_OR_FAIL(v, c.Wait(index, 5, 0));
    if (v && !v->empty()) log.insert(*v);
  }
  for (const std::string& v : committed) EXPECT_TRUE(log.count(v)) << "didn't find a value";
  EXPECT_GT(committed.size(), 10u) << "the clients made (almost) no progress";
  SIM_ASSERT_OK(c.status());
}

TEST(Raft2C, ReliableChurn) { Churn(false, 27); }
TEST(Raft2C, UnreliableChurn) { Churn(true, 28); }

}  // namespace
}  // namespace ds::raft::sim
