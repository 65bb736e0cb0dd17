// A real SMTP server (tests/support/smtp_server.py on aiosmtpd) for the tests that deliver
// e-mail, with the temporary directory and self-signed certificate it needs (the certificate
// also serves other TLS peers of the tests).
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "channels/email/email.h"
#include "tests/support/test_env.h"

namespace herald::test {

using nlohmann::json;

inline const std::string kUser = "herald";
inline const std::string kPassword = "s3cret pass";
inline const std::string kFrom = "noreply@herald.example.org";

inline std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream buf;
  buf << in.rdbuf();
  return buf.str();
}

// A self-signed certificate for CN=localhost, fresh per server.
struct Cert {
  std::string cert, key;
  explicit Cert(const std::string& dir) : cert(dir + "/c.pem"), key(dir + "/k.pem") {
    std::string out;
    int rc = Run({"/usr/bin/openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
                  "-days", "1", "-keyout", key, "-out", cert},
                 {}, &out);
    INFO(out);
    REQUIRE(rc == 0);
  }
};

enum class Mode { kStartTls, kSmtps, kPlain };

// smtp_server.py on 127.0.0.1 and a free port, ended by PID with this object.
class SmtpServer {
 public:
  explicit SmtpServer(Mode mode = Mode::kStartTls) : cert_(dir_.path) {
    maildir_ = dir_.path + "/Maildir";
    log_ = dir_.path + "/events.jsonl";
    std::string failure;
    // Another test may take the port between FreePort and the server's bind: then try another.
    for (int attempt = 0; attempt < 3 && !process_; ++attempt) {
      port_ = FreePort();
      std::vector<std::string> argv = {"/usr/bin/python3",
                                       SourceDir() + "/tests/support/smtp_server.py",
                                       "--port",
                                       std::to_string(port_),
                                       "--maildir",
                                       maildir_,
                                       "--log",
                                       log_,
                                       "--cert",
                                       cert_.cert,
                                       "--key",
                                       cert_.key,
                                       "--user",
                                       kUser,
                                       "--password",
                                       kPassword};
      if (mode == Mode::kSmtps) argv.push_back("--smtps");
      if (mode == Mode::kPlain) argv.push_back("--plain");
      auto p = std::make_unique<Process>(argv, std::vector<std::string>{}, "smtp-server");
      WaitFor([&] { return p->OutputContains("listening on") || p->Wait(0ms).has_value(); }, 15s);
      if (!p->Wait(0ms) && Accepting(port_))
        process_ = std::move(p);
      else
        failure = p->Output();
    }
    INFO("smtp_server.py did not start: " << failure);
    REQUIRE(process_);
  }

  int port() const { return port_; }
  const std::string& ca_file() const { return cert_.cert; }
  std::string Log() const { return process_->Output(); }

  // The configuration a production deployment would use against this server.
  EmailConfig Config() const {
    EmailConfig c;
    c.host = "localhost";  // the certificate's name
    c.port = port_;
    c.tls = "required";
    c.username = kUser;
    c.password = kPassword;
    c.from_address = kFrom;
    c.from_name = "Herald Benachrichtigungen";
    c.ca_file = cert_.cert;
    c.timeout = 15s;
    return c;
  }

  std::vector<std::string> Messages() const {
    std::vector<std::string> out;
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(maildir_ + "/new", ec)) out.push_back(e.path().string());
    std::sort(out.begin(), out.end());
    return out;
  }

  // The stored message with this delivery id, or "" if there is none.
  std::string MessageFor(const std::string& delivery_id) const {
    for (const std::string& path : Messages()) {
      if (ReadFile(path).find("X-Herald-Delivery-Id: " + delivery_id + "\r\n") != std::string::npos) return path;
    }
    return "";
  }

  // The server's event log: auth, mail, rcpt, data.
  std::vector<json> Events(const std::string& kind = "") const {
    std::vector<json> out;
    std::ifstream in(log_);
    std::string line;
    while (std::getline(in, line)) {
      json e = json::parse(line, nullptr, false);
      if (!e.is_discarded() && (kind.empty() || e["event"] == kind)) out.push_back(e);
    }
    return out;
  }

 private:
  TempDir dir_;
  Cert cert_;
  std::string maildir_, log_;
  int port_ = 0;
  std::unique_ptr<Process> process_;
};

}  // namespace herald::test
