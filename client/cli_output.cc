#include "client/cli_output.h"

#include "absl/strings/str_format.h"

namespace ds::client::cli {

std::string JsonString(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20) {
          out += absl::StrFormat("\\u%04x", c);
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out + "\"";
}

void Print(const std::string& line) {
  std::cout << line << "\n";
  std::cout.flush();
}

ExitCode Usage(const std::string& why) {
  std::cerr << "kvctl: " << why << " (see kvctl --help)\n";
  return kUsage;
}

ExitCode Fail(const absl::Status& st) {
  std::cerr << "kvctl: " << st.message() << "\n";
  return st.code() == absl::StatusCode::kInvalidArgument ? kUsage : kFailed;
}

}  // namespace ds::client::cli
