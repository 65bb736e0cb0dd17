#include "engine/templates.h"

#include <mstch/mstch.hpp>

#include <mutex>
#include <optional>
#include <string_view>
#include <unordered_map>
#include <utility>
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

// A template whose tags are all plain variables ({{name}}, {{{name}}} or {{&name}}, a name of
// letters, digits, '_', '-' and '.', padded with spaces), the common kind, is split once into text
// and names and rendered here; libmstch tokenised the source again and converted all of the
// event's vars to its own nodes on every render, a quarter of the engine thread's time for an
// event of one recipient (bench/README.md, twelfth round). Any other template (sections,
// inverted sections, comments, anything unusual in a tag) goes to libmstch as before. Both give
// the same text: names resolve as libmstch resolves them, and values render as ToNode and
// libmstch's renderer make them (tests compare the two on random templates).
struct PlainTemplate {
  std::vector<std::pair<std::string, std::string>> parts;  // (text, then the variable named)
  std::string tail;                                       // text after the last variable
};

bool IsNameChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' ||
         c == '.';
}

// The name in a tag's inside, if it is a plain variable; empty otherwise.
std::string PlainName(std::string_view inside, bool triple) {
  if (!triple && !inside.empty() && inside.front() == '&') inside.remove_prefix(1);
  size_t b = inside.find_first_not_of(' '), e = inside.find_last_not_of(' ');
  if (b == std::string_view::npos) return "";
  inside = inside.substr(b, e - b + 1);
  for (char c : inside) {
    if (!IsNameChar(c)) return "";
  }
  return std::string(inside);
}

// Finds tags as libmstch's tokenizer does: "{{", then the first "}}" after its first brace, one
// more brace on both sides making a triple tag.
std::optional<PlainTemplate> CompilePlain(const std::string& src) {
  PlainTemplate t;
  size_t pos = 0;
  for (;;) {
    const size_t open = src.find("{{", pos);
    if (open == std::string::npos) {
      t.tail = src.substr(pos);
      return t;
    }
    size_t close = src.find("}}", open + 1);
    if (close == std::string::npos) return std::nullopt;
    const bool triple = open + 2 < src.size() && src[open + 2] == '{' && close + 2 < src.size() && src[close + 2] == '}';
    const size_t inner = open + (triple ? 3 : 2);
    if (close < inner) return std::nullopt;
    std::string name = PlainName(std::string_view(src).substr(inner, close - inner), triple);
    if (name.empty()) return std::nullopt;
    t.parts.emplace_back(src.substr(pos, open - pos), std::move(name));
    pos = close + (triple ? 3 : 2);
  }
}

// libmstch's lookup with one context: "a.b.c" is "c" within "a.b"; "." is the node itself; a name
// is found only in an object.
const nlohmann::json* FindName(std::string_view name, const nlohmann::json* node) {
  if (name != "." && name.find('.') != std::string_view::npos) {
    const size_t dot = name.rfind('.');
    return FindName(name.substr(dot + 1), FindName(name.substr(0, dot), node));
  }
  if (!node) return nullptr;
  if (name == ".") return node;
  if (!node->is_object()) return nullptr;
  auto it = node->find(name);
  return it == node->end() ? nullptr : &*it;
}

// A value as ToNode converts it and libmstch renders the node: strings (escaped in HTML), numbers
// as written, booleans as true/false, anything else as nothing.
void AppendValue(std::string& out, const nlohmann::json* v, bool html) {
  if (!v) return;
  switch (v->type()) {
    case nlohmann::json::value_t::string:
      out += html ? EscapeHtml(v->get_ref<const std::string&>()) : v->get_ref<const std::string&>();
      break;
    case nlohmann::json::value_t::boolean: out += v->get<bool>() ? "true" : "false"; break;
    case nlohmann::json::value_t::number_integer:
    case nlohmann::json::value_t::number_unsigned:
    case nlohmann::json::value_t::number_float: out += v->dump(); break;
    default: break;
  }
}

std::string RenderPlain(const PlainTemplate& t, const nlohmann::json& vars, bool html) {
  std::string out;
  for (const auto& [text, name] : t.parts) {
    out += text;
    AppendValue(out, FindName(name, &vars), html);
  }
  out += t.tail;
  return out;
}

// Compiled templates by source, per thread (no lock on the engine's path). Bounded: a
// configuration has a few templates per event type.
const std::optional<PlainTemplate>& Compiled(const std::string& source) {
  thread_local std::unordered_map<std::string, std::optional<PlainTemplate>> cache;
  auto it = cache.find(source);
  if (it != cache.end()) return it->second;
  if (cache.size() >= 4096) cache.clear();
  return cache.emplace(source, CompilePlain(source)).first->second;
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
  static const nlohmann::json kNoVars = nlohmann::json::object();
  const nlohmann::json& v = vars.is_object() ? vars : kNoVars;
  mstch::node plain, html;
  bool have_plain = false, have_html = false;
  for (const auto& [field, source] : *fields) {
    const bool is_html = field == "html";
    std::string text;
    if (const std::optional<PlainTemplate>& compiled = Compiled(source)) {
      text = RenderPlain(*compiled, v, is_html);
    } else {
      mstch::node& ctx = is_html ? html : plain;
      bool& have = is_html ? have_html : have_plain;
      if (!have) {
        ctx = ToNode(v, is_html);
        have = true;
      }
      text = mstch::render(source, ctx);
    }
    out.fields[field] = (field == "title" || field == "subject" || field == "collapse_key") ? OneLine(text) : text;
  }
  return Status::Ok();
}

std::string RenderTemplate(const std::string& source, const nlohmann::json& vars, bool html) {
  if (const std::optional<PlainTemplate>& compiled = Compiled(source)) return RenderPlain(*compiled, vars, html);
  return RenderTemplateWithMstch(source, vars, html);
}

std::string RenderTemplateWithMstch(const std::string& source, const nlohmann::json& vars, bool html) {
  UseRawEscaping();
  return mstch::render(source, ToNode(vars, html));
}

bool IsPlainTemplate(const std::string& source) { return Compiled(source).has_value(); }

}  // namespace herald
