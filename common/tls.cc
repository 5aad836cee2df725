#include "common/tls.h"

#include <openssl/bio.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "common/files.h"

ABSL_FLAG(std::string, tls_cert, "",
          "PEM certificate file. Daemons: served on the client port (TLS on when set). "
          "Clients: presented to the server (needed when the server requires client "
          "certificates). Default: none (plaintext).");
ABSL_FLAG(std::string, tls_key, "", "PEM private key file of --tls-cert.");
ABSL_FLAG(std::string, tls_ca, "",
          "PEM CA certificate file. Daemons: clients must present a certificate signed by it "
          "(mutual TLS). Clients: the server's certificate must be signed by it (default: the "
          "system's roots when TLS is on).");

namespace ds::common {
namespace {

absl::StatusOr<std::string> ReadPem(const std::string& path, const std::string& flag) {
  auto text = ReadWholeFile(path);
  if (!text.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, ": cannot read ", path, ": ", text.status().message()));
  }
  if (text->find("-----BEGIN ") == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(flag, ": ", path, " is not a PEM file"));
  }
  return *text;
}

struct Pems {
  std::string cert, key, roots;
};

absl::StatusOr<Pems> LoadPems(const TlsFiles& files, const std::string& prefix,
                              const std::string& extra_ca, bool need_cert) {
  Pems p;
  if (files.cert.empty() != files.key.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(prefix, "-cert and ", prefix, "-key go together: give both or neither"));
  }
  if (need_cert && files.cert.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(prefix, "-ca needs ", prefix, "-cert and ", prefix, "-key on a server"));
  }
  if (!files.cert.empty()) {
    auto cert = ReadPem(files.cert, prefix + "-cert");
    if (!cert.ok()) return cert.status();
    auto key = ReadPem(files.key, prefix + "-key");
    if (!key.ok()) return key.status();
    p.cert = std::move(*cert);
    p.key = std::move(*key);
  }
  for (const std::string& ca : {files.ca, extra_ca}) {
    if (ca.empty()) continue;
    auto roots = ReadPem(ca, prefix + "-ca");
    if (!roots.ok()) return roots.status();
    absl::StrAppend(&p.roots, *roots, "\n");
  }
  return p;
}

}  // namespace

TlsFiles TlsFlags() {
  return {absl::GetFlag(FLAGS_tls_cert), absl::GetFlag(FLAGS_tls_key), absl::GetFlag(FLAGS_tls_ca)};
}

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> ClientCredentialsFromFlags() {
  return MakeChannelCredentials(TlsFlags(), "--tls");
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const TlsFiles& files, const std::string& prefix, const std::string& extra_ca) {
  if (!files.enabled()) return grpc::InsecureServerCredentials();
  auto p = LoadPems(files, prefix, extra_ca, /*need_cert=*/true);
  if (!p.ok()) return p.status();
  grpc::SslServerCredentialsOptions o(
      p->roots.empty() ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                       : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  o.pem_root_certs = p->roots;
  o.pem_key_cert_pairs.push_back({p->key, p->cert});
  return grpc::SslServerCredentials(o);
}

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> MakeChannelCredentials(
    const TlsFiles& files, const std::string& prefix, const std::string& extra_ca) {
  if (!files.enabled()) return grpc::InsecureChannelCredentials();
  auto p = LoadPems(files, prefix, extra_ca, /*need_cert=*/false);
  if (!p.ok()) return p.status();
  grpc::SslCredentialsOptions o;
  o.pem_root_certs = p->roots;
  o.pem_private_key = p->key;
  o.pem_cert_chain = p->cert;
  return grpc::SslCredentials(o);
}

struct PeerCertificateCheck::Store {
  X509_STORE* store = nullptr;
  ~Store() { X509_STORE_free(store); }
};

PeerCertificateCheck::~PeerCertificateCheck() = default;

absl::StatusOr<std::shared_ptr<PeerCertificateCheck>> PeerCertificateCheck::Create(
    const std::string& ca_file, std::shared_ptr<spdlog::logger> log) {
  auto pem = ReadPem(ca_file, "--peer-tls-ca");
  if (!pem.ok()) return pem.status();
  std::shared_ptr<PeerCertificateCheck> check(new PeerCertificateCheck());
  check->log_ = std::move(log);
  check->store_ = std::make_unique<Store>();
  check->store_->store = X509_STORE_new();
  BIO* bio = BIO_new_mem_buf(pem->data(), static_cast<int>(pem->size()));
  int added = 0;
  while (X509* cert = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr)) {
    if (X509_STORE_add_cert(check->store_->store, cert) == 1) ++added;
    X509_free(cert);
  }
  BIO_free(bio);
  if (added == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--peer-tls-ca: no certificate could be read from ", ca_file));
  }
  return check;
}

grpc::Status PeerCertificateCheck::Check(const grpc::ServerContextBase& ctx,
                                         const char* what) const {
  auto refuse = [&](const std::string& why) {
    log_->warn("refused {} from {}: {}", what, ctx.peer(), why);
    return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                        absl::StrCat(what, " needs a peer certificate: ", why));
  };
  std::shared_ptr<const grpc::AuthContext> auth = ctx.auth_context();
  std::vector<grpc::string_ref> pems =
      auth == nullptr ? std::vector<grpc::string_ref>()
                      : auth->FindPropertyValues(GRPC_X509_PEM_CERT_PROPERTY_NAME);
  if (pems.empty()) return refuse("no client certificate presented");
  BIO* bio = BIO_new_mem_buf(pems[0].data(), static_cast<int>(pems[0].size()));
  X509* cert = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  if (cert == nullptr) return refuse("unreadable client certificate");
  X509_STORE_CTX* vctx = X509_STORE_CTX_new();
  bool ok =
      X509_STORE_CTX_init(vctx, store_->store, cert, nullptr) == 1 && X509_verify_cert(vctx) == 1;
  std::string error = ok ? "" : X509_verify_cert_error_string(X509_STORE_CTX_get_error(vctx));
  X509_STORE_CTX_free(vctx);
  X509_free(cert);
  if (!ok) return refuse("client certificate not signed by the peers' CA (" + error + ")");
  return grpc::Status::OK;
}

}  // namespace ds::common
