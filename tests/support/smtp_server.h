// tests/support/smtp_server.py, a real SMTP server (aiosmtpd), as a test's own process: STARTTLS
// (or implicit TLS, or neither) with AUTH, a Maildir of what it accepted and an event log. It can
// be restarted on the same port with other behaviour, as a provider that goes down and comes back.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "channels/email/email.h"
#include "tests/support/test_env.h"

namespace herald::test {

class SmtpServer {
 public:
  enum class Mode { kStartTls, kSmtps, kPlain };
  static inline const std::string kUser = "herald";
  static inline const std::string kPassword = "s3cret pass";
  static inline const std::string kFrom = "noreply@herald.example.org";

  // Starts on a free loopback port. `extra_args` go to smtp_server.py, e.g. {"--refuse", "554 ..."}.
  explicit SmtpServer(Mode mode = Mode::kStartTls, std::vector<std::string> extra_args = {});

  // Ends the server (SIGTERM to its PID) and waits for it.
  void Stop();
  // Stops it if running, then starts it again on the same port, certificate, Maildir and log, with
  // `extra_args` instead of the earlier ones.
  void Restart(std::vector<std::string> extra_args = {});

  int port() const { return port_; }
  const std::string& ca_file() const { return cert_; }
  std::string Log() const;

  // The configuration a production deployment would use against this server.
  EmailConfig Config() const;

  // Paths of the stored messages, sorted.
  std::vector<std::string> Messages() const;
  // The stored message with this delivery id, or "" if there is none.
  std::string MessageFor(const std::string& delivery_id) const;
  // The server's event log: auth, mail, rcpt, data.
  std::vector<nlohmann::json> Events(const std::string& kind = "") const;

 private:
  void Start(const std::vector<std::string>& extra_args);

  Mode mode_;
  TempDir dir_{"herald-smtp"};
  std::string cert_, key_, maildir_, log_;
  int port_ = 0;
  std::unique_ptr<Process> process_;
  std::string old_output_;  // of the runs before a restart
};

}  // namespace herald::test
