// Process-wide logging setup on spdlog: human-readable text or one JSON object per line.
#pragma once

#include <spdlog/spdlog.h>

#include <string>

namespace herald {

// level: trace|debug|info|warn|error; format: text|json. Logs go to stderr.
void SetupLogging(const std::string& level, const std::string& format);

}  // namespace herald
