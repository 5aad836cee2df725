// Who a replica is, and which peers may speak Raft to it.
//
// DATA_DIR/MEMBER records, when the data directory is first used:
//   member ID             this replica's id (a restart under another --id is
//                         refused)
//   incarnation HEX       random, new with every new data directory
//   cluster HEX           the group's id: a hash of the voters it was
//                         bootstrapped with; 0 for a member that joined an
//                         existing group, until it hears from a peer
//   bootstrap new|existing
//   peers ID=H:P,...      (new) the voters it was bootstrapped with
//
// Every Raft call carries the sender's member id, incarnation and cluster id,
// and the callee's incarnation as the sender knows it (gRPC metadata). A
// replica refuses calls from another cluster, calls addressed to another
// incarnation of itself (it is the one that lost its data), and calls from a
// member whose incarnation differs from the one it first heard from that id:
// that member lost its data directory (a replica restarted empty under its
// old id forgets its votes and log, which breaks Raft's safety). The
// incarnations heard so far are in DATA_DIR/PEERS, written durably before the
// first call from a new member is accepted. Ids are never reused, so a new
// incarnation under a known id is always such a replica.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "spdlog/logger.h"

namespace ds::rsm {

struct MemberRecord {
  uint64_t member = 0;
  uint64_t incarnation = 0;
  uint64_t cluster = 0;
  bool existing = false;                  // joined an existing group
  std::map<uint64_t, std::string> peers;  // bootstrap voters (new)
};

// The value of line "name ..." in `text` (DATA_DIR/FORMAT, MEMBER), or "" if
// absent.
std::string RecordField(const std::string& text, const std::string& name);

// The id of a group bootstrapped with `voters` (FNV-1a of "id=address,...").
uint64_t ClusterId(const std::map<uint64_t, std::string>& voters);

// Reads DATA_DIR/MEMBER, or creates it for replica `id`: bootstrapped from
// `peers` unless `join_existing` (ignored when `has_state`: a directory written
// before this file existed, bootstrapped from `peers`). kFailedPrecondition if
// the directory belongs to another member.
absl::StatusOr<MemberRecord> LoadOrCreateMember(const std::string& data_dir, uint64_t id,
                                                const std::map<uint64_t, std::string>& peers,
                                                bool join_existing, bool has_state);

class PeerIdentity {
 public:
  // Reads DATA_DIR/PEERS (the incarnations heard so far).
  static absl::StatusOr<std::unique_ptr<PeerIdentity>> Open(std::string data_dir, MemberRecord self,
                                                            std::shared_ptr<spdlog::logger> log);

  // Our identity and the incarnation we know for `peer`, for
  // GrpcTransportOptions::call_metadata.
  std::vector<std::pair<std::string, std::string>> CallMetadata(uint64_t peer) const;
  // Whether an incoming Raft call may proceed (GrpcTransportOptions::authorize).
  // Calls without our metadata (other tools, older builds) pass.
  grpc::Status Check(const grpc::ServerContextBase& ctx);
  // A peer refused our call (GrpcTransportOptions::on_refused): logged, at
  // most every 10 s per peer.
  void OnRefused(uint64_t peer, const grpc::Status& status);

  uint64_t cluster() const;

 private:
  PeerIdentity(std::string data_dir, MemberRecord self, std::shared_ptr<spdlog::logger> log)
      : data_dir_(std::move(data_dir)), self_(std::move(self)), log_(std::move(log)) {}
  grpc::Status Refuse(uint64_t from, std::string why);

  const std::string data_dir_;
  const MemberRecord self_;
  const std::shared_ptr<spdlog::logger> log_;

  mutable absl::Mutex mu_;
  uint64_t cluster_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<uint64_t, uint64_t> known_ ABSL_GUARDED_BY(mu_);  // member -> incarnation
  // When we last logged a refusal of / by each member (rate limit).
  std::map<uint64_t, absl::Time> last_refused_ ABSL_GUARDED_BY(mu_);
  std::map<uint64_t, absl::Time> last_refused_by_ ABSL_GUARDED_BY(mu_);
  // Serializes the rare rewrites of PEERS and MEMBER (once per new member or
  // cluster id learned in the directory's life); off every other path.
  absl::Mutex file_mu_;
};

}  // namespace ds::rsm
