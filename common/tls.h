// TLS for every gRPC connection of the stack: server and channel credentials
// from PEM files named by flags, and the check that a call on a shared port
// comes from a peer (a replica) rather than a client.
//
// Flags (common/tls.cc, in every binary): --tls-cert, --tls-key, --tls-ca.
// A daemon serves its client port with them (mutual TLS when --tls-ca is
// given); a client (kvctl, mrrun, kvbench, mr-worker) presents them and checks
// the server against --tls-ca. Replica daemons have --peer-tls-* too
// (raft/service/replica_server.cc). Plaintext when none is given.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/security/server_credentials.h"
#include "spdlog/logger.h"

namespace ds::common {

struct TlsFiles {
  std::string cert;  // PEM certificate (chain) presented to the other side
  std::string key;   // its PEM private key
  std::string ca;    // PEM CA certificate(s) the other side must be signed by
  bool enabled() const { return !cert.empty() || !key.empty() || !ca.empty(); }
};

// --tls-cert, --tls-key, --tls-ca.
TlsFiles TlsFlags();

// Channel credentials of a client from --tls-cert/--tls-key/--tls-ca.
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> ClientCredentialsFromFlags();

// Server credentials: plaintext when `files` is empty; else TLS with
// cert+key (both required), and when a CA is given (`files.ca`, plus the
// certificates in `extra_ca`, a PEM file or ""), clients must present a
// certificate signed by one of them (mutual TLS). InvalidArgument naming
// `flag_prefix` ("--tls" / "--peer-tls") and the file on a bad setting.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const TlsFiles& files, const std::string& flag_prefix, const std::string& extra_ca = "");

// Channel credentials: plaintext when `files` is empty; else TLS checking the
// server against `files.ca` (+ `extra_ca`; the system's roots when neither is
// given) and presenting cert+key when given (both or neither).
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> MakeChannelCredentials(
    const TlsFiles& files, const std::string& flag_prefix, const std::string& extra_ca = "");

// Decides whether a call's TLS client certificate was signed by the peers'
// CA: what a replica requires of Raft and shard-migration calls when they
// share the client port and TLS is on (a client's certificate, signed by the
// clients' CA, is not enough). Thread-safe.
class PeerCertificateCheck {
 public:
  // `ca_file`: the peers' CA (PEM, one or more certificates).
  static absl::StatusOr<std::shared_ptr<PeerCertificateCheck>> Create(
      const std::string& ca_file, std::shared_ptr<spdlog::logger> log);
  ~PeerCertificateCheck();

  // OK, or PERMISSION_DENIED with the reason (also logged as a warning).
  grpc::Status Check(const grpc::ServerContextBase& ctx, const char* what) const;

 private:
  PeerCertificateCheck() = default;
  struct Store;
  std::unique_ptr<Store> store_;
  std::shared_ptr<spdlog::logger> log_;
};

}  // namespace ds::common
