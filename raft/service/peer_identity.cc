#include "raft/service/peer_identity.h"

#include "absl/random/random.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/files.h"
#include "common/net.h"

namespace ds::rsm {
namespace {

constexpr char kMemberKey[] = "ds-raft-member";
constexpr char kIncarnationKey[] = "ds-raft-incarnation";
constexpr char kClusterKey[] = "ds-raft-cluster";
// The incarnation the caller knows for the callee (absent if it knows none).
constexpr char kYourIncarnationKey[] = "ds-raft-your-incarnation";

std::string Hex(uint64_t v) { return absl::StrFormat("%016x", v); }

bool ParseHex(absl::string_view s, uint64_t* v) { return absl::SimpleHexAtoi(s, v); }

std::string MemberText(const MemberRecord& r) {
  std::string peers;
  for (const auto& [id, addr] : r.peers)
    absl::StrAppend(&peers, peers.empty() ? "" : ",", id, "=", addr);
  return absl::StrCat("member ", r.member, "\nincarnation ", Hex(r.incarnation), "\ncluster ",
                      Hex(r.cluster), "\nbootstrap ", r.existing ? "existing" : "new", "\npeers ",
                      peers, "\n");
}

std::string PeersText(const std::map<uint64_t, uint64_t>& known) {
  std::string text;
  for (const auto& [id, inc] : known) absl::StrAppend(&text, id, " ", Hex(inc), "\n");
  return text;
}

std::string Metadata(const grpc::ServerContextBase& ctx, const char* key) {
  auto it = ctx.client_metadata().find(key);
  if (it == ctx.client_metadata().end()) return "";
  return std::string(it->second.data(), it->second.size());
}

}  // namespace

std::string RecordField(const std::string& text, const std::string& name) {
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (absl::StartsWith(line, name + " ")) return std::string(line.substr(name.size() + 1));
  }
  return "";
}

uint64_t ClusterId(const std::map<uint64_t, std::string>& voters) {
  uint64_t h = 1469598103934665603ull;
  for (const auto& [id, addr] : voters) {
    for (char c : absl::StrCat(id, "=", addr, ",")) {
      h ^= static_cast<unsigned char>(c);
      h *= 1099511628211ull;
    }
  }
  return h == 0 ? 1 : h;
}

absl::StatusOr<MemberRecord> LoadOrCreateMember(const std::string& data_dir, uint64_t id,
                                                const std::map<uint64_t, std::string>& peers,
                                                bool join_existing, bool has_state) {
  const std::string path = data_dir + "/MEMBER";
  absl::StatusOr<std::string> text = common::ReadWholeFile(path);
  if (text.ok()) {
    MemberRecord r;
    if (!absl::SimpleAtoi(RecordField(*text, "member"), &r.member) || r.member == 0 ||
        !ParseHex(RecordField(*text, "incarnation"), &r.incarnation) ||
        !ParseHex(RecordField(*text, "cluster"), &r.cluster)) {
      return absl::DataLossError(absl::StrCat(path, " is damaged"));
    }
    if (r.member != id) {
      return absl::FailedPreconditionError(absl::StrCat(
          "data directory ", data_dir, " belongs to member ", r.member, ", not to --id=", id,
          ": refusing to start (wrong --data-dir or --id? a replica's id never changes)"));
    }
    r.existing = RecordField(*text, "bootstrap") == "existing";
    if (const std::string list = RecordField(*text, "peers"); !list.empty()) {
      auto parsed = common::ParsePeerList(list);
      if (!parsed.ok()) return absl::DataLossError(absl::StrCat(path, " is damaged: peers"));
      r.peers = *parsed;
    }
    return r;
  }
  if (text.status().code() != absl::StatusCode::kNotFound) return text.status();
  MemberRecord r;
  r.member = id;
  absl::BitGen gen;
  while (r.incarnation == 0) r.incarnation = absl::Uniform<uint64_t>(gen);
  if (join_existing && !has_state) {
    r.existing = true;
  } else {
    r.peers = peers;
    r.cluster = ClusterId(peers);
  }
  if (absl::Status st = common::WriteFileDurably(path, MemberText(r)); !st.ok()) return st;
  return r;
}

absl::StatusOr<std::unique_ptr<PeerIdentity>> PeerIdentity::Open(
    std::string data_dir, MemberRecord self, std::shared_ptr<spdlog::logger> log) {
  std::unique_ptr<PeerIdentity> p(new PeerIdentity(std::move(data_dir), self, std::move(log)));
  absl::StatusOr<std::string> text = common::ReadWholeFile(p->data_dir_ + "/PEERS");
  if (!text.ok() && text.status().code() != absl::StatusCode::kNotFound) return text.status();
  absl::MutexLock lock(&p->mu_);
  p->cluster_ = self.cluster;
  if (text.ok()) {
    for (absl::string_view line : absl::StrSplit(*text, '\n', absl::SkipEmpty())) {
      std::vector<absl::string_view> f = absl::StrSplit(line, ' ');
      uint64_t id = 0, inc = 0;
      if (f.size() != 2 || !absl::SimpleAtoi(f[0], &id) || !ParseHex(f[1], &inc)) {
        return absl::DataLossError(absl::StrCat(p->data_dir_, "/PEERS is damaged: \"", line, "\""));
      }
      p->known_[id] = inc;
    }
  }
  return p;
}

std::vector<std::pair<std::string, std::string>> PeerIdentity::CallMetadata(uint64_t peer) const {
  std::vector<std::pair<std::string, std::string>> md = {{kMemberKey, absl::StrCat(self_.member)},
                                                         {kIncarnationKey, Hex(self_.incarnation)},
                                                         {kClusterKey, Hex(cluster())}};
  absl::MutexLock lock(&mu_);
  auto it = known_.find(peer);
  if (it != known_.end()) md.emplace_back(kYourIncarnationKey, Hex(it->second));
  return md;
}

uint64_t PeerIdentity::cluster() const {
  absl::MutexLock lock(&mu_);
  return cluster_;
}

grpc::Status PeerIdentity::Refuse(uint64_t from, std::string why) {
  bool log = false;
  {
    absl::MutexLock lock(&mu_);
    absl::Time& last = last_refused_[from];
    if (absl::Now() - last > absl::Seconds(10)) {
      last = absl::Now();
      log = true;
    }
  }
  if (log) log_->error("refusing Raft traffic from member {}: {}", from, why);
  return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, why);
}

grpc::Status PeerIdentity::Check(const grpc::ServerContextBase& ctx) {
  uint64_t from = 0, inc = 0, cluster = 0;
  if (!absl::SimpleAtoi(Metadata(ctx, kMemberKey), &from) ||
      !ParseHex(Metadata(ctx, kIncarnationKey), &inc) ||
      !ParseHex(Metadata(ctx, kClusterKey), &cluster)) {
    return grpc::Status::OK;  // not a replica of this build
  }
  bool add_peer = false, adopt_cluster = false;
  std::string refusal;
  uint64_t yours = 0;
  const bool knows_us = ParseHex(Metadata(ctx, kYourIncarnationKey), &yours);
  {
    absl::MutexLock lock(&mu_);
    auto it = known_.find(from);
    if (knows_us && yours != self_.incarnation) {
      // We are the replica that lost its data: say so (and take nothing from
      // a peer whose log we no longer hold: a heartbeat's commit index would
      // stop us as a corrupt log).
      refusal = absl::StrCat(
          "this replica (member ", self_.member, ") is not the one member ", from,
          " knew: its data directory was replaced or wiped (incarnation ", Hex(self_.incarnation),
          ", member ", from, " knew ", Hex(yours),
          "). A replica that lost its data must not rejoin under its old id: stop it, remove "
          "member ",
          self_.member, " and add the machine under a new id (docs/operations.md)");
    } else if (cluster != 0 && cluster_ != 0 && cluster != cluster_) {
      refusal = absl::StrCat("member ", from, " belongs to another group (cluster ", Hex(cluster),
                             "; this replica, member ", self_.member, ", is in cluster ",
                             Hex(cluster_), "): check --peers and --data-dir");
    } else if (it != known_.end() && it->second != inc) {
      refusal = absl::StrCat(
          "member ", from, " comes back with another data directory (incarnation ", Hex(inc),
          ", this group knew ", Hex(it->second),
          "): a replica that lost its data must not rejoin under its old id, which would forget "
          "its votes and log. Remove member ",
          from, " and add the machine under a new id (docs/operations.md)");
    } else {
      if (it == known_.end()) {
        known_[from] = inc;
        add_peer = true;
      }
      if (cluster_ == 0 && cluster != 0) {
        cluster_ = cluster;
        adopt_cluster = true;
      }
    }
  }
  if (!refusal.empty()) return Refuse(from, std::move(refusal));
  if (add_peer || adopt_cluster) {
    // Durable before the call proceeds: a restart must still know this
    // incarnation. Rare (once per member, or once when joining).
    absl::MutexLock files(&file_mu_);
    if (add_peer) {
      // Rendered under file_mu_ so that concurrent additions land in order.
      std::string peers_text;
      {
        absl::MutexLock lock(&mu_);
        peers_text = PeersText(known_);
      }
      if (absl::Status st = common::WriteFileDurably(data_dir_ + "/PEERS", peers_text); !st.ok()) {
        log_->error("cannot record member {}'s incarnation: {}", from, st.ToString());
        return grpc::Status(grpc::StatusCode::UNAVAILABLE, "cannot record the peer");
      }
      log_->info("member {} (incarnation {}) recorded", from, Hex(inc));
    }
    if (adopt_cluster) {
      MemberRecord r = self_;
      r.cluster = cluster;
      if (absl::Status st = common::WriteFileDurably(data_dir_ + "/MEMBER", MemberText(r));
          !st.ok()) {
        log_->error("cannot record the cluster id: {}", st.ToString());
      } else {
        log_->info("joined cluster {}", Hex(cluster));
      }
    }
  }
  return grpc::Status::OK;
}

void PeerIdentity::OnRefused(uint64_t peer, const grpc::Status& status) {
  {
    absl::MutexLock lock(&mu_);
    absl::Time& last = last_refused_by_[peer];
    if (absl::Now() - last < absl::Seconds(10)) return;
    last = absl::Now();
  }
  log_->error("member {} refuses this replica's Raft traffic: {}", peer, status.error_message());
}

}  // namespace ds::rsm
