#include "engine/templates.h"

#include <mstch/mstch.hpp>

#include <mutex>
#include <vector>

namespace herald {
namespace {

std::string EscapeHtml(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

mstch::node ToNode(const nlohmann::json& j, bool html) {
  switch (j.type()) {
    case nlohmann::json::value_t::string:
      return html ? EscapeHtml(j.get_ref<const std::string&>()) : j.get<std::string>();
    case nlohmann::json::value_t::boolean:
      return j.get<bool>();
    case nlohmann::json::value_t::number_integer:
    case nlohmann::json::value_t::number_unsigned:
    case nlohmann::json::value_t::number_float:
      return j.dump();  // exactly as the publisher wrote it; no float reformatting
    case nlohmann::json::value_t::array: {
      mstch::array a;
      for (const auto& e : j) a.push_back(ToNode(e, html));
      return a;
    }
    case nlohmann::json::value_t::object: {
      mstch::map m;
      for (auto it = j.begin(); it != j.end(); ++it) m.emplace(it.key(), ToNode(it.value(), html));
      return m;
    }
    default:
      return nullptr;
  }
}

// Header-like fields (a subject, a push title) become one line.
std::string OneLine(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  bool space = false;
  for (unsigned char c : s) {
    if (c < 0x20 || c == 0x7F) {
      space = !out.empty();
      continue;
    }
    if (space) out += ' ';
    space = false;
    out += static_cast<char>(c);
  }
  return out;
}

void UseRawEscaping() {
  static std::once_flag once;
  // Escaping is done on the values (ToNode), so mstch itself must not escape again; set once,
  // before any render, so concurrent renders never race on it.
  std::call_once(once, [] { mstch::config::escape = [](const std::string& s) { return s; }; });
}

}  // namespace

std::string CheckTemplateSyntax(const std::string& src) {
  std::vector<std::string> sections;
  size_t pos = 0;
  while ((pos = src.find("{{", pos)) != std::string::npos) {
    bool triple = src.compare(pos, 3, "{{{") == 0;
    size_t close = src.find(triple ? "}}}" : "}}", pos);
    if (close == std::string::npos) return "tag opened at offset " + std::to_string(pos) + " is never closed";
    std::string tag = src.substr(pos + (triple ? 3 : 2), close - pos - (triple ? 3 : 2));
    pos = close + (triple ? 3 : 2);
    size_t b = tag.find_first_not_of(' '), e = tag.find_last_not_of(' ');
    tag = b == std::string::npos ? "" : tag.substr(b, e - b + 1);
    if (tag.empty()) return "empty tag {{}}";
    char kind = tag[0];
    std::string name = tag.substr(1);
    size_t nb = name.find_first_not_of(' ');
    name = nb == std::string::npos ? "" : name.substr(nb);
    if (kind == '!') continue;
    if (kind == '>') return "partials ({{>" + name + "}}) are not supported";
    if (kind == '=') return "delimiter changes ({{=...=}}) are not supported";
    if (kind == '#' || kind == '^') {
      if (name.empty()) return "section without a name";
      sections.push_back(name);
    } else if (kind == '/') {
      if (sections.empty()) return "{{/" + name + "}} closes a section that was never opened";
      if (sections.back() != name) return "{{/" + name + "}} closes section \"" + sections.back() + "\"";
      sections.pop_back();
    }
  }
  if (!sections.empty()) return "section \"" + sections.back() + "\" is never closed";
  return "";
}

void CheckTemplates(const Config& config) {
  std::string errors;
  for (const auto& [type, et] : config.event_types) {
    for (const auto& [channel, locales] : et.templates) {
      for (const auto& [locale, fields] : locales) {
        for (const auto& [field, source] : fields) {
          if (std::string problem = CheckTemplateSyntax(source); !problem.empty()) {
            errors += "event_types." + type + ".templates." + channel + "." + locale + "." + field + ": " + problem + "\n";
          }
        }
      }
    }
  }
  if (!errors.empty()) {
    errors.pop_back();
    throw ConfigError(errors);
  }
}

Status Render(const EventTypeConfig& type, const std::string& channel, const std::string& locale,
              const std::string& default_locale, const nlohmann::json& vars, RenderedContent& out) {
  UseRawEscaping();
  auto ch = type.templates.find(channel);
  if (ch == type.templates.end()) return Status::NotFound("no template for channel " + channel);
  const TemplateFields* fields = nullptr;
  std::string used;
  std::string language = locale.substr(0, locale.find_first_of("-_"));
  for (const std::string& candidate : {locale, language, default_locale}) {
    auto it = ch->second.find(candidate);
    if (!candidate.empty() && it != ch->second.end()) {
      fields = &it->second;
      used = candidate;
      break;
    }
  }
  if (!fields) return Status::NotFound("no template for channel " + channel + " in locale " + locale);
  out.locale = used;
  out.fields.clear();
  const nlohmann::json& v = vars.is_object() ? vars : nlohmann::json::object();
  mstch::node plain, html;
  bool have_plain = false, have_html = false;
  for (const auto& [field, source] : *fields) {
    const bool is_html = field == "html";
    mstch::node& ctx = is_html ? html : plain;
    bool& have = is_html ? have_html : have_plain;
    if (!have) {
      ctx = ToNode(v, is_html);
      have = true;
    }
    std::string text = mstch::render(source, ctx);
    out.fields[field] = (field == "title" || field == "subject" || field == "collapse_key") ? OneLine(text) : text;
  }
  return Status::Ok();
}

}  // namespace herald
