#include "tests/support/smtp_server.h"

#include <catch2/catch.hpp>
#include <csignal>
#include <filesystem>
#include <fstream>

namespace herald::test {

SmtpServer::SmtpServer(Mode mode, std::vector<std::string> extra_args)
    : mode_(mode), cert_(dir_.path + "/c.pem"), key_(dir_.path + "/k.pem"), maildir_(dir_.path + "/Maildir"),
      log_(dir_.path + "/events.jsonl") {
  // A self-signed certificate for CN=localhost, fresh per server.
  std::string out;
  int rc = Run({"/usr/bin/openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-days",
                "1", "-keyout", key_, "-out", cert_},
               {}, &out);
  INFO(out);
  REQUIRE(rc == 0);
  Start(extra_args);
}

void SmtpServer::Start(const std::vector<std::string>& extra_args) {
  process_ = StartServer(
      [&](int port) {
        std::vector<std::string> argv = {"/usr/bin/python3", SourceDir() + "/tests/support/smtp_server.py",
                                         "--port", std::to_string(port), "--maildir", maildir_, "--log", log_,
                                         "--cert", cert_, "--key", key_, "--user", kUser, "--password", kPassword};
        if (mode_ == Mode::kSmtps) argv.push_back("--smtps");
        if (mode_ == Mode::kPlain) argv.push_back("--plain");
        argv.insert(argv.end(), extra_args.begin(), extra_args.end());
        return argv;
      },
      "smtp-server", port_);
}

void SmtpServer::Stop() {
  if (!process_) return;
  process_->Signal(SIGTERM);
  REQUIRE(process_->Wait(15s).has_value());
  old_output_ += process_->Output();
  process_.reset();
}

void SmtpServer::Restart(std::vector<std::string> extra_args) {
  Stop();
  Start(extra_args);
}

std::string SmtpServer::Log() const { return old_output_ + (process_ ? process_->Output() : ""); }

EmailConfig SmtpServer::Config() const {
  EmailConfig c;
  c.host = "localhost";  // the certificate's name
  c.port = port_;
  c.tls = "required";
  c.username = kUser;
  c.password = kPassword;
  c.from_address = kFrom;
  c.from_name = "Herald Benachrichtigungen";
  c.ca_file = cert_;
  c.timeout = 15s;
  return c;
}

std::vector<std::string> SmtpServer::Messages() const {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(maildir_ + "/new", ec)) out.push_back(e.path().string());
  std::sort(out.begin(), out.end());
  return out;
}

std::string SmtpServer::MessageFor(const std::string& delivery_id) const {
  for (const std::string& path : Messages()) {
    if (ReadFile(path).value_or("").find("X-Herald-Delivery-Id: " + delivery_id + "\r\n") != std::string::npos) {
      return path;
    }
  }
  return "";
}

std::vector<nlohmann::json> SmtpServer::Events(const std::string& kind) const {
  std::vector<nlohmann::json> out;
  std::ifstream in(log_);
  std::string line;
  while (std::getline(in, line)) {
    auto e = nlohmann::json::parse(line, nullptr, false);
    if (!e.is_discarded() && (kind.empty() || e["event"] == kind)) out.push_back(e);
  }
  return out;
}

}  // namespace herald::test
