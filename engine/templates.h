// Rendering of the per-channel, per-locale Mustache templates of the event types (libmstch).
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "core/config.h"
#include "core/status.h"

namespace herald {

// Checks the Mustache syntax of one template source: balanced tags and properly nested
// sections; partials and delimiter changes are refused. Returns "" or what is wrong.
std::string CheckTemplateSyntax(const std::string& source);

// Checks every template of every event type; throws ConfigError naming each bad key.
void CheckTemplates(const Config& config);

struct RenderedContent {
  std::string locale;  // the locale whose template was used
  TemplateFields fields;
};

// Renders `channel`'s template of `type` for `locale`, falling back from "de-AT" to "de" to
// `default_locale`. Variables come from `vars`; in the "html" field every value is HTML-escaped,
// elsewhere values are inserted as they are. Title and subject never contain CR, LF or other
// control characters. NotFound if the type has no template for the channel (webhook).
Status Render(const EventTypeConfig& type, const std::string& channel, const std::string& locale,
              const std::string& default_locale, const nlohmann::json& vars, RenderedContent& out);

// One template source rendered with `vars` (an object), values HTML-escaped if `html`: the way
// Render renders each field (a template of plain variables without libmstch, any other with it).
std::string RenderTemplate(const std::string& source, const nlohmann::json& vars, bool html);
// The same with libmstch whatever the template, and whether RenderTemplate would do without it:
// for tests that hold the two to the same output.
std::string RenderTemplateWithMstch(const std::string& source, const nlohmann::json& vars, bool html);
bool IsPlainTemplate(const std::string& source);

}  // namespace herald
