#include "tests/lincheck/linearizability.h"

#include <algorithm>
#include <chrono>
#include <string_view>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/container/node_hash_map.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace ds::lincheck {
namespace {

// How many operations of a linearization / pending set an explanation shows.
constexpr size_t kExplainTail = 10;

// Long values (append-heavy keys) are shown by their length, head and tail: the
// tail is where two competing states usually differ.
std::string Quote(std::string_view s) {
  constexpr size_t kHead = 16, kTail = 24;
  if (s.size() <= kHead + kTail + 8) {
    return absl::StrCat("\"", absl::CHexEscape(absl::string_view(s.data(), s.size())), "\"");
  }
  std::string_view head = s.substr(0, kHead), tail = s.substr(s.size() - kTail);
  return absl::StrCat("\"", absl::CHexEscape(absl::string_view(head.data(), head.size())), "...",
                      absl::CHexEscape(absl::string_view(tail.data(), tail.size())), "\" (",
                      s.size(), " bytes)");
}

// One operation as the search sees it. Outputs of an operation with unknown
// outcome are never checked.
struct SearchOp {
  int source = 0;  // index in the caller's history
  OpKind kind = OpKind::kGet;
  const std::string* value = nullptr;
  const std::string* output = nullptr;
  std::optional<bool> found;
  bool known = true;
  int64_t call = 0;
  int64_t ret = kNeverReturned;
};

// Register states of one key, interned so the search and its memo table handle
// small integers. Id 0 is "missing". The map's keys ('N' or 'V' + value) are the
// only copy of each state; node_hash_map keeps them at stable addresses.
class StateInterner {
 public:
  StateInterner() { Intern(false, ""); }

  int Intern(bool present, std::string_view value) {
    std::string key;
    key.reserve(value.size() + 1);
    key.push_back(present ? 'V' : 'N');
    key.append(value);
    auto [it, inserted] = ids_.try_emplace(std::move(key), static_cast<int>(keys_.size()));
    if (inserted) keys_.push_back(&it->first);
    return it->second;
  }
  bool present(int id) const { return (*keys_[id])[0] == 'V'; }
  std::string_view value(int id) const { return std::string_view(*keys_[id]).substr(1); }

 private:
  absl::node_hash_map<std::string, int> ids_;
  std::vector<const std::string*> keys_;
};

std::string DescribeState(const StateInterner& states, int id) {
  return states.present(id) ? Quote(states.value(id)) : std::string("(missing)");
}

enum class Outcome { kOk, kIllegal, kTimeout };

struct SearchResult {
  Outcome outcome = Outcome::kOk;
  // With tracing on: the longest sequence of operations (indexes into the
  // search's ops) that was linearized at some point, and the state after it.
  std::vector<int> deepest;
  std::string deepest_state;
};

// The key of the memo table: the set of linearized operations (a bitset, with
// its Zobrist hash maintained incrementally) and the register state.
struct Configuration {
  uint64_t hash;
  int state;
  std::vector<uint64_t> bits;

  bool operator==(const Configuration& other) const {
    return hash == other.hash && state == other.state && bits == other.bits;
  }
  template <typename H>
  friend H AbslHashValue(H h, const Configuration& c) {
    return H::combine(std::move(h), c.hash, c.state);
  }
};

uint64_t SplitMix64(uint64_t& x) {
  uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// The Wing-Gong-Lowe search over one key, as in porcupine's checkSingle: the
// call and return events sorted by time in a doubly linked list; linearizing an
// operation lifts its two events out of the list, backtracking puts them back.
class Search {
 public:
  Search(const std::vector<SearchOp>& ops, absl::Time deadline, bool trace)
      : ops_(ops), deadline_(deadline), trace_(trace) {}

  // Operations with an unknown outcome make the search exponential: each one
  // stays a candidate until the end, so every dead end would try every subset
  // of the pending ones. In practice one either never took effect or took effect
  // about as soon after its call as the other operations did. So the search
  // first lets an unknown-outcome operation take effect only while no linearized
  // operation was called more than `window` after it, starting from the longest
  // known operation and widening 4x per round up to no limit (the complete
  // search). Any linearization found is valid, so only an illegal verdict needs
  // the complete round.
  SearchResult Run() {
    bool any_unknown = false;
    int64_t window = 1, first_call = kNeverReturned, last_call = 0;
    for (const SearchOp& op : ops_) {
      any_unknown |= !op.known;
      if (op.known) window = std::max(window, op.ret - op.call);
      first_call = std::min(first_call, op.call);
      last_call = std::max(last_call, op.call);
    }
    while (true) {
      const bool complete =
          !any_unknown || window >= last_call - first_call || window > kNeverReturned / 4;
      SearchResult result = RunWithWindow(complete ? kNeverReturned : window);
      if (complete || result.outcome != Outcome::kIllegal) return result;
      window *= 4;
    }
  }

 private:
  static constexpr int kHead = 0;

  SearchResult RunWithWindow(int64_t window) {
    const int n = static_cast<int>(ops_.size());
    BuildList();
    std::vector<uint64_t> zobrist(n);
    uint64_t seed = 0x5eed;
    for (uint64_t& z : zobrist) z = SplitMix64(seed);

    std::vector<uint64_t> bits((n + 63) / 64, 0);
    uint64_t hash = 0;
    int state = 0;
    int remaining_known = 0;
    for (const SearchOp& op : ops_) remaining_known += op.known ? 1 : 0;
    struct Frame {
      int entry;
      int state_before;
      int64_t frontier_before;
    };
    // The latest call among the linearized known operations.
    int64_t frontier = std::numeric_limits<int64_t>::min();
    std::vector<Frame> calls;
    absl::flat_hash_set<Configuration> seen;
    SearchResult result;

    auto flip = [&](int op) {
      bits[op / 64] ^= uint64_t{1} << (op % 64);
      hash ^= zobrist[op];
    };

    // Candidates at each node are the calls before the first return in the list.
    // They are tried in three passes, which all see the same candidates, so the
    // search stays complete:
    // 1. Reads with a known outcome. A read that fits the current state is taken
    //    without branching: it changes nothing and, being a candidate, nothing
    //    pending returned before its call, so if any linearization exists from
    //    here, one starting with this read does too. If that fails, this whole
    //    node fails.
    // 2. Writes with a known outcome that lead towards the value a pending read
    //    returned (the new value is a prefix of it, or both are missing), so the
    //    search follows the reads instead of trying orders of concurrent appends
    //    blindly; then
    // 3. the other writes with a known outcome.
    // 4. Writes with an unknown outcome, last: a linearizable history is usually
    //    found without guessing that one happened early, instead of first trying
    //    every subset of the pending ones at every step.
    enum Pass { kReads, kGuidedWrites, kOtherWrites, kUnknownWrites };
    std::vector<int> pending_reads;  // known reads among the current candidates
    auto collect_pending_reads = [&] {
      pending_reads.clear();
      for (int e = next_[kHead]; is_call_[e]; e = next_[e]) {
        const SearchOp& op = ops_[op_of_[e]];
        if (op.known && op.kind == OpKind::kGet) pending_reads.push_back(op_of_[e]);
      }
    };
    auto leads_to_a_read = [&](int new_state) {
      const bool present = states_.present(new_state);
      const std::string_view value = states_.value(new_state);
      for (int r : pending_reads) {
        const SearchOp& read = ops_[r];
        if (read.found.has_value() && *read.found != present) continue;
        if (present ? std::string_view(*read.output).substr(0, value.size()) == value
                    : read.output->empty()) {
          return true;
        }
      }
      return false;
    };
    auto pass_of = [&](int op) {
      if (!ops_[op].known) return kUnknownWrites;
      if (ops_[op].kind == OpKind::kGet) return kReads;
      int new_state = 0;
      return Step(state, op, &new_state) && leads_to_a_read(new_state) ? kGuidedWrites
                                                                       : kOtherWrites;
    };
    collect_pending_reads();
    if (!PendingReadsReachable(state)) {
      result.outcome = Outcome::kIllegal;
      return result;
    }
    int entry = next_[kHead];
    int pass = kReads;
    uint64_t iterations = 0;
    while (next_[kHead] != tail_) {
      // Once every operation with a known outcome is linearized, the rest (writes
      // that may or may not have happened) can all go last, or never happen.
      if (remaining_known == 0) break;
      if ((++iterations & 255) == 0 && absl::Now() > deadline_) {
        result.outcome = Outcome::kTimeout;
        return result;
      }
      bool backtrack = false;
      if (is_call_[entry]) {
        const int op = op_of_[entry];
        if (pass_of(op) != pass ||
            (pass == kUnknownWrites && window != kNeverReturned && frontier > ops_[op].call &&
             frontier - ops_[op].call > window)) {
          entry = next_[entry];
          continue;
        }
        int new_state = 0;
        if (Step(state, op, &new_state)) {
          flip(op);
          if (seen.insert(Configuration{hash, new_state, bits}).second) {
            calls.push_back({entry, state, frontier});
            state = new_state;
            if (ops_[op].known) {
              --remaining_known;
              frontier = std::max(frontier, ops_[op].call);
            }
            Lift(entry);
            if (trace_ && calls.size() > result.deepest.size()) {
              result.deepest.clear();
              for (const Frame& f : calls) result.deepest.push_back(op_of_[f.entry]);
              result.deepest_state = DescribeState(states_, state);
            }
            entry = next_[kHead];
            pass = kReads;
            collect_pending_reads();
            // A read changes neither the state nor the pending writes: the reads
            // checked when the state was reached still can be answered.
            if (ops_[op].kind == OpKind::kGet || PendingReadsReachable(state)) continue;
            backtrack = true;  // this new node is a dead end already
          } else {
            flip(op);                    // this configuration was explored before and failed
            backtrack = pass == kReads;  // ... and a fitting read decides the node
          }
        }
        if (!backtrack) {
          entry = next_[entry];
          continue;
        }
      } else if (pass != kUnknownWrites) {
        ++pass;
        entry = next_[kHead];
        continue;
      }
      // A return was reached (the operation returning there had to be linearized
      // already), or the node failed: undo linearizations until one that was a
      // choice, and try its next sibling. Undoing a read undoes its node too.
      while (true) {
        if (calls.empty()) {
          result.outcome = Outcome::kIllegal;
          return result;
        }
        const Frame frame = calls.back();
        calls.pop_back();
        const int op = op_of_[frame.entry];
        flip(op);
        state = frame.state_before;
        remaining_known += ops_[op].known ? 1 : 0;
        frontier = frame.frontier_before;
        Unlift(frame.entry);
        if (pass_of(op) == kReads) continue;
        collect_pending_reads();  // the node we are back at
        pass = pass_of(op);
        entry = next_[frame.entry];
        break;
      }
    }
    result.outcome = Outcome::kOk;
    return result;
  }

  void BuildList() {
    const int n = static_cast<int>(ops_.size());
    struct Event {
      int64_t time;
      bool is_return;
      int op;
    };
    std::vector<Event> events;
    events.reserve(2 * n);
    for (int i = 0; i < n; ++i) {
      events.push_back({ops_[i].call, false, i});
      events.push_back({ops_[i].ret, true, i});
    }
    // Calls before returns at equal times: touching operations are concurrent,
    // which can only make the checker more permissive, never wrongly reject.
    std::sort(events.begin(), events.end(), [](const Event& a, const Event& b) {
      if (a.time != b.time) return a.time < b.time;
      if (a.is_return != b.is_return) return !a.is_return;
      return a.op < b.op;
    });
    const int size = 2 * n + 2;  // entries 1..2n, sentinels kHead and tail_
    tail_ = size - 1;
    next_.assign(size, 0);
    prev_.assign(size, 0);
    is_call_.assign(size, false);
    op_of_.assign(size, -1);
    match_.assign(size, -1);
    call_entry_.assign(n, -1);
    std::vector<int>& call_entry = call_entry_;
    for (int i = 0; i < 2 * n; ++i) {
      const int e = i + 1;
      op_of_[e] = events[i].op;
      is_call_[e] = !events[i].is_return;
      if (is_call_[e]) {
        call_entry[events[i].op] = e;
      } else {
        match_[call_entry[events[i].op]] = e;
      }
    }
    for (int e = 0; e < size; ++e) {
      next_[e] = e + 1 < size ? e + 1 : e;
      prev_[e] = e > 0 ? e - 1 : e;
    }
  }

  // A necessary condition for the node to have a completion: every pending read
  // can still return what it returned. Before its return, a read can only be
  // preceded by operations not linearized yet whose calls come before that
  // return, so its value must be the current one, a pending Put's, or empty after
  // a pending Delete, followed by pending appends. Checking it fails a dead end
  // at once (say, two concurrent appends placed in the order that a read a little
  // later contradicts) instead of after trying every order of every write in
  // between. Only the reads returning within the next kLookahead events are
  // checked: checking any subset is sound, and those are the ones that matter.
  static constexpr int kLookahead = 128;
  bool PendingReadsReachable(int state) {
    writes_buffer_.clear();
    int seen_events = 0;
    for (int e = next_[kHead]; e != tail_ && seen_events < kLookahead;
         e = next_[e], ++seen_events) {
      const SearchOp& op = ops_[op_of_[e]];
      if (op.kind != OpKind::kGet) {
        if (is_call_[e]) writes_buffer_.push_back(op_of_[e]);
      } else if (!is_call_[e] && op.known && !Reachable(state, op)) {
        return false;
      }
    }
    return true;
  }

  bool Reachable(int state, const SearchOp& read) {
    const std::string_view out = *read.output;
    bool deletable = !states_.present(state);
    for (int w : writes_buffer_) deletable |= ops_[w].kind == OpKind::kDelete;
    if (read.found == std::optional<bool>(false)) return out.empty() && deletable;
    // Can out[from..] be spelled by pending appends? (An append may be counted
    // twice here; over-approximating keeps the check sound.)
    auto appends_spell = [&](size_t from) {
      // reach_buffer_[i]: out[from, from + i) is spelled by pending appends.
      const size_t length = out.size() - from;
      reach_buffer_.assign(length + 1, false);
      reach_buffer_[0] = true;
      for (size_t i = 0; i < length; ++i) {
        if (!reach_buffer_[i]) continue;
        for (int w : writes_buffer_) {
          const std::string& v = *ops_[w].value;
          if (ops_[w].kind == OpKind::kAppend && !v.empty() &&
              out.substr(from + i, v.size()) == v) {
            reach_buffer_[i + v.size()] = true;
          }
        }
      }
      return reach_buffer_[length];
    };
    auto from_base = [&](std::string_view base) {
      // "base is a prefix of out", judged on base's last bytes only: values on
      // append-heavy keys are long and differ near their ends, and treating a
      // rare false match as reachable only weakens the check, never its soundness.
      constexpr size_t kCompared = 64;
      if (base.size() > out.size()) return false;
      const size_t skip = base.size() > kCompared ? base.size() - kCompared : 0;
      return out.substr(skip, base.size() - skip) == base.substr(skip) &&
             appends_spell(base.size());
    };
    if (from_base(states_.value(state))) return true;
    if (deletable && from_base("")) return true;
    for (int w : writes_buffer_) {
      if (ops_[w].kind == OpKind::kPut && from_base(*ops_[w].value)) return true;
    }
    return false;
  }

  void Lift(int e) {
    next_[prev_[e]] = next_[e];
    prev_[next_[e]] = prev_[e];
    const int m = match_[e];
    next_[prev_[m]] = next_[m];
    prev_[next_[m]] = prev_[m];
  }

  void Unlift(int e) {
    const int m = match_[e];
    next_[prev_[m]] = m;
    prev_[next_[m]] = m;
    next_[prev_[e]] = e;
    prev_[next_[e]] = e;
  }

  // The sequential specification of one key. Returns false if `op` cannot take
  // effect in `state` with the outputs it returned.
  bool Step(int state, int op_index, int* new_state) {
    const SearchOp& op = ops_[op_index];
    switch (op.kind) {
      case OpKind::kGet:
        *new_state = state;
        return !op.known || (states_.value(state) == *op.output &&
                             (!op.found.has_value() || *op.found == states_.present(state)));
      case OpKind::kPut:
        *new_state = states_.Intern(true, *op.value);
        return true;
      case OpKind::kAppend: {
        auto [it, inserted] = append_cache_.try_emplace({state, op_index}, 0);
        if (inserted) {
          std::string appended(states_.value(state));
          appended.append(*op.value);
          it->second = states_.Intern(true, appended);
        }
        *new_state = it->second;
        return true;
      }
      case OpKind::kDelete:
        *new_state = 0;
        return !op.known || !op.found.has_value() || *op.found == states_.present(state);
    }
    return false;
  }

  const std::vector<SearchOp>& ops_;
  const absl::Time deadline_;
  const bool trace_;
  StateInterner states_;
  absl::flat_hash_map<std::pair<int, int>, int> append_cache_;
  int tail_ = 1;
  std::vector<int> next_, prev_, op_of_, match_, call_entry_;
  std::vector<int> writes_buffer_;
  std::vector<bool> reach_buffer_;
  std::vector<bool> is_call_;
};

// The history of one key as known at time `cut`: operations called later are
// left out, operations still running at `cut` get an unknown outcome. If the
// whole history is linearizable, so is every such prefix, which is what lets
// Explain() bisect for the first return that breaks linearizability.
std::vector<SearchOp> Truncate(const std::vector<SearchOp>& ops, int64_t cut) {
  std::vector<SearchOp> out;
  for (const SearchOp& op : ops) {
    if (op.call > cut) continue;
    SearchOp copy = op;
    if (copy.ret > cut) {
      if (copy.kind == OpKind::kGet) continue;  // a read with no output constrains nothing
      copy.known = false;
      copy.ret = kNeverReturned;
    }
    out.push_back(copy);
  }
  return out;
}

std::string Explain(const std::string& key, const std::vector<SearchOp>& ops,
                    const std::vector<Operation>& history, absl::Time deadline) {
  std::string text =
      absl::StrCat("key ", Quote(key), " (", ops.size(), " operations) is not linearizable.\n");
  std::vector<int64_t> returns;
  for (const SearchOp& op : ops) {
    if (op.known) returns.push_back(op.ret);
  }
  std::sort(returns.begin(), returns.end());
  returns.erase(std::unique(returns.begin(), returns.end()), returns.end());
  if (returns.empty()) return text;  // cannot happen: an illegal key has a known op

  // Smallest i such that the history up to returns[i] is already illegal.
  size_t lo = 0, hi = returns.size() - 1;
  bool bisected = true;
  while (lo < hi) {
    const size_t mid = lo + (hi - lo) / 2;
    std::vector<SearchOp> prefix = Truncate(ops, returns[mid]);
    const Outcome outcome = Search(prefix, deadline, false).Run().outcome;
    if (outcome == Outcome::kTimeout) {
      bisected = false;
      break;
    }
    if (outcome == Outcome::kIllegal) {
      hi = mid;
    } else {
      lo = mid + 1;
    }
  }
  const int64_t cut = returns[hi];
  std::vector<SearchOp> prefix = Truncate(ops, cut);
  absl::StrAppend(&text, bisected ? "It stops being linearizable when this returns:\n"
                                  : "(Search budget ran out; the culprit may be earlier.) "
                                    "It is not linearizable once this returns:\n");
  for (const SearchOp& op : prefix) {
    if (op.known && op.ret == cut) {
      absl::StrAppend(&text, "  ", DescribeOperation(history[op.source]), "\n");
    }
  }
  SearchResult trace = Search(prefix, deadline, true).Run();
  if (trace.outcome != Outcome::kIllegal) return text;  // out of budget

  auto describe = [&](int i) {
    const Operation& op = history[prefix[i].source];
    return absl::StrCat("  ", DescribeOperation(op),
                        prefix[i].known == op.outcome_known() ? "" : " (still running then)", "\n");
  };
  std::vector<bool> linearized(prefix.size(), false);
  for (int i : trace.deepest) linearized[i] = true;
  const size_t shown = std::min(trace.deepest.size(), kExplainTail);
  absl::StrAppend(&text, "Longest linearizable order of the operations up to then (last ", shown,
                  " of ", trace.deepest.size(), "):\n");
  for (size_t i = trace.deepest.size() - shown; i < trace.deepest.size(); ++i) {
    absl::StrAppend(&text, describe(trace.deepest[i]));
  }
  absl::StrAppend(
      &text, "  value after it: ", trace.deepest.empty() ? "(missing)" : trace.deepest_state, "\n");

  // The operations that could have come next: everything pending that was
  // called before the earliest remaining return.
  int64_t earliest_return = kNeverReturned;
  for (size_t i = 0; i < prefix.size(); ++i) {
    if (!linearized[i]) earliest_return = std::min(earliest_return, prefix[i].ret);
  }
  absl::StrAppend(&text, "Operations that could come next (none leads to a linearization):\n");
  size_t listed = 0;
  for (size_t i = 0; i < prefix.size() && listed < kExplainTail; ++i) {
    if (linearized[i] || prefix[i].call > earliest_return) continue;
    ++listed;
    absl::StrAppend(&text, describe(static_cast<int>(i)));
  }
  return text;
}

}  // namespace

std::string DescribeOperation(const Operation& op) {
  std::string text = absl::StrCat("client ", op.client_id, ": ");
  const bool known = op.outcome_known();
  switch (op.kind) {
    case OpKind::kGet:
      absl::StrAppend(&text, "Get(", Quote(op.key), ")");
      if (known) {
        absl::StrAppend(&text, " -> ",
                        op.found == std::optional<bool>(false) ? "(missing)" : Quote(op.output));
      }
      break;
    case OpKind::kPut:
      absl::StrAppend(&text, "Put(", Quote(op.key), ", ", Quote(op.value), ")");
      break;
    case OpKind::kAppend:
      absl::StrAppend(&text, "Append(", Quote(op.key), ", ", Quote(op.value), ")");
      break;
    case OpKind::kDelete:
      absl::StrAppend(&text, "Delete(", Quote(op.key), ")");
      if (known && op.found.has_value()) {
        absl::StrAppend(&text, *op.found ? " -> found" : " -> not found");
      }
      break;
  }
  absl::StrAppend(&text, " [", op.call_time, ", ",
                  known ? absl::StrCat(op.return_time) : std::string("?"), "]");
  if (!known) absl::StrAppend(&text, " outcome unknown");
  return text;
}

absl::StatusOr<LinearizabilityReport> CheckKvHistory(const std::vector<Operation>& history,
                                                     absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  absl::flat_hash_map<std::string, std::vector<SearchOp>> partitions;
  for (size_t i = 0; i < history.size(); ++i) {
    const Operation& op = history[i];
    if (op.return_time < op.call_time) {
      return absl::InvalidArgumentError(
          absl::StrCat("operation ", i, " returns before its call: ", DescribeOperation(op)));
    }
    // A read whose result nobody saw constrains nothing.
    if (op.kind == OpKind::kGet && !op.outcome_known()) continue;
    partitions[op.key].push_back(SearchOp{static_cast<int>(i), op.kind, &op.value, &op.output,
                                          op.found, op.outcome_known(), op.call_time,
                                          op.return_time});
  }
  std::vector<std::string> keys;
  for (const auto& [key, ops] : partitions) keys.push_back(key);
  std::sort(keys.begin(), keys.end());  // deterministic reports

  std::vector<std::string> undecided;
  for (const std::string& key : keys) {
    const std::vector<SearchOp>& ops = partitions[key];
    const Outcome outcome = Search(ops, deadline, false).Run().outcome;
    if (outcome == Outcome::kIllegal) {
      // Explaining gets its own budget: a verdict is worth a readable report.
      return LinearizabilityReport{CheckResult::kIllegal,
                                   Explain(key, ops, history, absl::Now() + timeout)};
    }
    if (outcome == Outcome::kTimeout) undecided.push_back(Quote(key));
  }
  if (!undecided.empty()) {
    return LinearizabilityReport{
        CheckResult::kUnknown,
        absl::StrCat("time budget ran out before deciding keys ", absl::StrJoin(undecided, ", "))};
  }
  return LinearizabilityReport{CheckResult::kOk, ""};
}

// ---------------------------------------------------------------------------
// HistoryRecorder
// ---------------------------------------------------------------------------

int64_t HistoryRecorder::NowNanos() const {
  // A monotonic clock: wall-clock steps must not reorder operations.
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

HistoryRecorder::Handle HistoryRecorder::Begin(int64_t client_id, OpKind kind, std::string key,
                                               std::string value) {
  Operation op;
  op.client_id = client_id;
  op.kind = kind;
  op.key = std::move(key);
  op.value = std::move(value);
  op.call_time = NowNanos();
  absl::MutexLock lock(&mu_);
  ops_.push_back(std::move(op));
  discarded_.push_back(false);
  return taken_ + static_cast<Handle>(ops_.size() - 1);
}

void HistoryRecorder::End(Handle handle, std::string output, std::optional<bool> found) {
  const int64_t now = NowNanos();
  absl::MutexLock lock(&mu_);
  if (handle < taken_) return;  // begun before Take()
  Operation& op = ops_[handle - taken_];
  op.output = std::move(output);
  op.found = found;
  op.return_time = std::max(now, op.call_time);
}

void HistoryRecorder::Discard(Handle handle) {
  absl::MutexLock lock(&mu_);
  if (handle < taken_) return;
  discarded_[handle - taken_] = true;
}

std::vector<Operation> HistoryRecorder::Snapshot() const {
  absl::MutexLock lock(&mu_);
  std::vector<Operation> out;
  for (size_t i = 0; i < ops_.size(); ++i) {
    if (!discarded_[i]) out.push_back(ops_[i]);
  }
  return out;
}

std::vector<Operation> HistoryRecorder::Take() {
  absl::MutexLock lock(&mu_);
  std::vector<Operation> out;
  for (size_t i = 0; i < ops_.size(); ++i) {
    if (!discarded_[i]) out.push_back(std::move(ops_[i]));
  }
  taken_ += static_cast<Handle>(ops_.size());
  ops_.clear();
  discarded_.clear();
  return out;
}

}  // namespace ds::lincheck
